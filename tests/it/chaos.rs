//! Crash recovery in the middle of a change of an app's instances: what the daemon recorded
//! before it was SIGKILLed runs again as it was meant to.

use std::collections::BTreeSet;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const SETTLE: Duration = Duration::from_secs(25);

/// A cluster app of `instances` sleepers (tests/fixtures/idle.sh, tagged `tag`) on a free port,
/// in a config file.
fn cluster_config(h: &TestHome, tag: &str, instances: u32, min_uptime: &str) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"cl\"\nscript = \"{}\"\nargs = [\"{tag}\"]\nexec_mode = \"cluster\"\n\
             instances = {instances}\nport = {port}\nmin_uptime = \"{min_uptime}\"\n",
            fixture("idle.sh").display()
        ),
    )
}

fn sigkill(h: &TestHome) {
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", SETTLE, || (!pid_alive(daemon)).then_some(()));
}

/// Regression: a reload of a config-file app in cluster mode took the
/// file's spec, instance count included, while the instances a scale had added went on running:
/// the list and state.json said 2 instances of the 3 that ran, and the next daemon after a crash
/// ran 2.
#[test]
fn a_reload_after_a_scale_keeps_the_count_that_runs() {
    let h = TestHome::new();
    let tag = h.tag("cl");
    h.ok(&["start", cluster_config(&h, &tag, 2, "100ms").to_str().unwrap()]);
    h.wait_status("cl", Status::Online, SETTLE);
    h.ok(&["scale", "cl", "3"]);
    h.ok(&["reload", "cl"]);
    let app = h.wait_status("cl", Status::Online, SETTLE);
    assert_eq!((app.instances.len(), app.spec.instances), (3, 3), "{:?}", app.instances);
    sigkill(&h);
    let app = h.wait_status("cl", Status::Online, SETTLE);
    assert_eq!((app.instances.len(), app.spec.instances), (3, 3), "after recovery: {:?}", app.instances);
    let pids: BTreeSet<u32> = app.instances.iter().filter_map(|i| i.pid).collect();
    wait_for("three instances and no other", SETTLE, || {
        (pids_with_arg(&tag).into_iter().collect::<BTreeSet<u32>>() == pids).then_some(())
    });
}

/// Regression: the instances a scale adds are in state.json before
/// they start; when the daemon died before it started them, the next one left them stopped.
#[test]
fn instances_a_scale_added_run_after_the_daemon_died_before_starting_them() {
    let h = TestHome::new();
    let tag = h.tag("cl");
    // Each new instance must stay up 20 s before the next starts: the scale is still waiting
    // for the second one when the daemon is killed.
    h.ok(&["start", cluster_config(&h, &tag, 1, "20s").to_str().unwrap()]);
    h.wait_status("cl", Status::Online, SETTLE);
    let mut scale = h.cmd(&["scale", "cl", "3"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for("state.json to record three instances, the second one running", SETTLE, || {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(h.home.join("state.json")).ok()?).ok()?;
        let inst = st["apps"][0]["instances"].as_array()?;
        (inst.len() == 3 && inst.iter().any(|i| i["index"] == 1 && i["status"] == "online")).then_some(())
    });
    sigkill(&h);
    assert!(!scale.wait().unwrap().success(), "the scale was cut short");
    let app = h.wait_status("cl", Status::Online, SETTLE);
    assert_eq!(app.instances.len(), 3);
    let pids: BTreeSet<u32> = app.instances.iter().filter_map(|i| i.pid).collect();
    wait_for("three instances and no other", SETTLE, || {
        (pids_with_arg(&tag).into_iter().collect::<BTreeSet<u32>>() == pids).then_some(())
    });
}
