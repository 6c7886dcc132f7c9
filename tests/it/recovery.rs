//! After the daemon dies, even by SIGKILL, the next one ends what is left of the old instances
//! and runs every app again exactly once.

use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn recovers_after_sigkill(extra_env: Option<(&str, &str)>) {
    let h = TestHome::new();
    let tags: Vec<String> = (0..3).map(|i| h.tag(&format!("app{i}"))).collect();
    let mut ping = h.cmd(&["ping"]);
    if let Some((k, v)) = extra_env {
        ping.env(k, v);
    }
    assert!(ping.output().unwrap().status.success());
    for (i, tag) in tags.iter().enumerate() {
        h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", &format!("app{i}"), "--", tag]);
    }
    let stopped = h.tag("stopped");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "parked", "--", &stopped]);
    h.ok(&["stop", "parked"]);
    let before: Vec<u32> = (0..3)
        .map(|i| h.wait_status(&format!("app{i}"), Status::Online, T).instances[0].pid.unwrap())
        .collect();

    let daemon = h.daemon_pid().unwrap();
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(daemon)).then_some(()));

    // The next command starts a new daemon, which recovers before it answers.
    let apps = h.list();
    assert_ne!(h.daemon_pid().unwrap(), daemon);
    assert_eq!(apps.len(), 4);
    for (i, tag) in tags.iter().enumerate() {
        let app = h.wait_status(&format!("app{i}"), Status::Online, T);
        let pid = app.instances[0].pid.unwrap();
        assert_ne!(pid, before[i], "app{i} runs as a new process");
        assert!(!pid_alive(before[i]), "the old instance of app{i} is gone");
        assert_eq!(pids_with_arg(tag), vec![pid], "app{i} runs exactly once");
    }
    assert_eq!(h.app("parked").instances[0].status, Status::Stopped, "a stopped app stays stopped");
    assert!(pids_with_arg(&stopped).is_empty());
}

#[test]
fn sigkill_of_the_daemon_then_list_runs_every_app_exactly_once() {
    recovers_after_sigkill(None);
}

#[test]
fn recovery_without_cgroups_runs_every_app_exactly_once() {
    recovers_after_sigkill(Some(("HERDER_NO_CGROUP", "1")));
}
