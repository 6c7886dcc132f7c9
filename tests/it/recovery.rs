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

/// Point the (only) instance of `state.json` at `pid`, recorded as online in boot `boot_id`.
fn record_in_state(h: &TestHome, pid: u32, boot_id: &str) {
    let path = h.home.join("state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    st["boot_id"] = boot_id.into();
    let inst = &mut st["apps"][0]["instances"][0];
    inst["pid"] = pid.into();
    inst["start_ticks"] = herder::process::tree::start_ticks(pid as i32).unwrap().into();
    inst["status"] = "online".into();
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
}

fn sigkill_daemon(h: &TestHome) {
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(daemon)).then_some(()));
}

#[test]
fn state_of_an_earlier_boot_kills_no_process_by_its_recorded_pid() {
    use std::os::unix::process::CommandExt;
    let h = TestHome::new();
    let tag = h.tag("app");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "app", "--", &tag]);
    h.wait_status("app", Status::Online, T);
    h.ok(&["stop", "app"]);
    sigkill_daemon(&h);
    // An unrelated process that, after a reboot, got the pid the state file names (leading its
    // own process group, as an instance does).
    let mut bystander = std::process::Command::new("sleep").arg("100000").process_group(0).spawn().unwrap();
    let pid = bystander.id();
    // Reaped as soon as it ends; killed at the end of the test whatever happens.
    std::thread::spawn(move || bystander.wait());
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            if pid_alive(self.0) {
                // SAFETY: kill(2) on the test's own child.
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
    }
    let _kill = Kill(pid);
    record_in_state(&h, pid, "00000000-0000-4000-8000-000000000000");

    let app = h.wait_status("app", Status::Online, T);
    assert!(pid_alive(pid), "the daemon killed a process of another boot's state");
    assert_ne!(app.instances[0].pid, Some(pid));
    assert_eq!(pids_with_arg(&tag), vec![app.instances[0].pid.unwrap()], "the app runs once");
    let log = std::fs::read_to_string(h.home.join("daemon.log")).unwrap();
    assert!(log.contains("state.json is of an earlier boot"), "{log}");

    // The same record of this boot is a leftover of the crashed daemon: it is ended.
    sigkill_daemon(&h);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    record_in_state(&h, pid, boot_id.trim());
    h.wait_status("app", Status::Online, T);
    wait_for("the recorded process to be ended", T, || (!pid_alive(pid)).then_some(()));
}
