//! Restart policy, states and the commands that change them.

use std::time::Duration;

use herder::protocol::{ExitReason, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(15);

#[test]
fn kill_9_of_an_app_is_restarted_and_shows_the_signal() {
    let h = TestHome::new();
    let tag = h.tag("victim");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "victim", "--", &tag]);
    let app = h.wait_status("victim", Status::Online, T);
    let pid = app.instances[0].pid.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let app = wait_for("a new pid", T, || {
        let a = h.app("victim");
        let i = &a.instances[0];
        (i.status == Status::Online && i.pid.is_some() && i.pid != Some(pid)).then_some(a)
    });
    let i = &app.instances[0];
    assert_eq!(i.restarts, 1);
    assert_eq!(i.last_exit.as_ref().unwrap().reason, ExitReason::Signal(9));
    let table = h.ok(&["list"]);
    assert!(table.contains("SIGKILL"), "list shows the signal:\n{table}");
    // One process of the app, not two.
    assert_eq!(pids_with_arg(&tag).len(), 1);
}

#[test]
fn an_app_that_exits_at_once_ends_errored_after_max_restarts_and_restart_revives_it() {
    let h = TestHome::new();
    let crash = fixture("crash.sh");
    h.ok(&["start", crash.to_str().unwrap(), "--name", "crashy", "--max-restarts", "3", "--", "7"]);
    let app = h.wait_status("crashy", Status::Errored, T);
    let i = &app.instances[0];
    assert_eq!(i.restarts, 3, "three restarts, then the fourth unstable run makes it errored");
    assert_eq!(i.last_exit.as_ref().unwrap().reason, ExitReason::Code(7));
    let reason = i.reason.as_deref().unwrap();
    assert!(reason.contains("unstable"), "{reason}");
    let table = h.ok(&["list"]);
    assert!(table.contains("errored") && table.contains("code 7"), "{table}");

    h.ok(&["restart", "crashy"]);
    // It runs again (and fails again): its history grows past the errored run.
    wait_for("crashy to run again", T, || {
        let i = h.app("crashy").instances[0].clone();
        (i.history.len() > app.instances[0].history.len().min(9) || i.status != Status::Errored).then_some(())
    });
}

#[test]
fn exponential_backoff_makes_the_gaps_grow() {
    let h = TestHome::new();
    h.ok(&[
        "start",
        fixture("crash.sh").to_str().unwrap(),
        "--name",
        "backoff",
        "--exp-backoff-restart-delay",
        "100",
        "--max-restarts",
        "5",
    ]);
    let app = h.wait_status("backoff", Status::Errored, T);
    let hist = &app.instances[0].history;
    assert!(hist.len() >= 5, "{hist:?}");
    let gaps: Vec<u64> = hist.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    // Delays are 100, 150, 225, 337, 506 ms: each gap is longer than the one before.
    for w in gaps.windows(2) {
        assert!(w[1] > w[0], "gaps grow: {gaps:?}");
    }
    assert!(gaps[0] >= 100, "{gaps:?}");
}

#[test]
fn stop_exit_codes_and_no_autorestart_leave_the_app_down() {
    let h = TestHome::new();
    let crash = fixture("crash.sh");
    h.ok(&["start", crash.to_str().unwrap(), "--name", "clean", "--stop-exit-codes", "0", "--", "0"]);
    let app = h.wait_status("clean", Status::Stopped, T);
    assert_eq!(app.instances[0].restarts, 0);
    // A listed non-zero code is a normal stop too: `stopped`, not `errored`.
    h.ok(&["start", crash.to_str().unwrap(), "--name", "done", "--stop-exit-codes", "0,3", "--", "3"]);
    let app = h.wait_status("done", Status::Stopped, T);
    assert_eq!(app.instances[0].restarts, 0);
    assert_eq!(app.instances[0].last_exit.as_ref().unwrap().reason, ExitReason::Code(3));
    h.ok(&["start", crash.to_str().unwrap(), "--name", "once", "--no-autorestart", "--", "3"]);
    let app = h.wait_status("once", Status::Errored, T);
    assert_eq!(app.instances[0].restarts, 0);
    assert_eq!(app.instances[0].last_exit.as_ref().unwrap().reason, ExitReason::Code(3));
}

#[test]
fn stop_start_restart_delete_reset_signal() {
    let h = TestHome::new();
    let tag = h.tag("cycle");
    h.ok(&[
        "start",
        fixture("idle.sh").to_str().unwrap(),
        "--name",
        "cycle",
        "--namespace",
        "grp",
        "--",
        &tag,
    ]);
    let first = h.wait_status("cycle", Status::Online, T).instances[0].pid.unwrap();

    h.ok(&["stop", "grp"]);
    h.wait_status("cycle", Status::Stopped, T);
    assert!(!pid_alive(first));
    assert!(pids_with_arg(&tag).is_empty());

    h.ok(&["start", "cycle"]);
    let second = h.wait_status("cycle", Status::Online, T).instances[0].pid.unwrap();
    assert_ne!(first, second);

    h.ok(&["restart", "0"]);
    let app = h.wait_status("cycle", Status::Online, T);
    assert_ne!(app.instances[0].pid.unwrap(), second);
    assert_eq!(app.instances[0].restarts, 1);
    h.ok(&["reset", "all"]);
    assert_eq!(h.app("cycle").instances[0].restarts, 0);

    // SIGTERM through `signal`: the fixture exits 0 on it and is restarted.
    let pid = h.app("cycle").instances[0].pid.unwrap();
    h.ok(&["signal", "SIGTERM", "cycle"]);
    wait_for("the signalled instance to be replaced", T, || {
        let i = h.app("cycle").instances[0].clone();
        (i.pid.is_some() && i.pid != Some(pid)).then_some(())
    });
    let err = h.fails(&["signal", "SIGNOPE", "cycle"]);
    assert!(err.contains("`SIGNOPE` is not a signal"), "{err}");

    h.ok(&["delete", "cycle"]);
    assert!(h.list().is_empty());
    let err = h.fails(&["stop", "cycle"]);
    assert!(err.contains("`cycle`"), "{err}");
}

#[test]
fn a_command_string_runs_without_a_shell_and_show_reports_it() {
    let h = TestHome::new();
    h.ok(&["start", "sleep 1000", "--name", "cmdstr"]);
    let app = h.wait_status("cmdstr", Status::Online, T);
    assert!(app.spec.program.ends_with("sleep"), "{}", app.spec.program);
    assert_eq!(app.spec.args, vec!["1000".to_string()]);
    let pid = app.instances[0].pid.unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.to_string_lossy().contains("sleep"), "runs sleep itself, not a shell: {exe:?}");
    let shown = h.ok(&["show", "cmdstr"]);
    assert!(shown.contains("sleep 1000"), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&h.ok(&["show", "cmdstr", "--json"])).unwrap();
    assert_eq!(json["spec"]["name"], "cmdstr");
}
