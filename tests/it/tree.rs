//! Stop, delete and kill leave nothing of an app alive, grandchildren in their own sessions
//! included.

use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

/// Start the tree fixture as `name` and return the pids of its main process, child and
/// grandchild (which called setsid).
fn start_tree(h: &TestHome, name: &str) -> Vec<u32> {
    let pidfile = h.dir.path().join(format!("{name}.pids"));
    h.ok(&[
        "start",
        fixture("tree.sh").to_str().unwrap(),
        "--name",
        name,
        "--kill-timeout",
        "300",
        "--",
        pidfile.to_str().unwrap(),
    ]);
    let app = h.wait_status(name, Status::Online, Duration::from_secs(10));
    let mut pids = wait_for("the tree fixture to record its pids", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&pidfile).ok()?;
        let pids: Vec<u32> = text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect();
        (pids.len() == 2).then_some(pids)
    });
    pids.push(app.instances[0].pid.unwrap());
    for p in &pids {
        assert!(pid_alive(*p), "{p} alive before the stop");
    }
    pids
}

fn assert_all_dead(pids: &[u32]) {
    // Nothing is waited for here: the command returned, so everything must already be gone.
    let alive: Vec<u32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "still alive after the command returned: {alive:?}");
}

#[test]
fn stop_leaves_no_process_of_the_app() {
    let h = TestHome::new();
    let pids = start_tree(&h, "tree-stop");
    h.ok(&["stop", "tree-stop"]);
    assert_all_dead(&pids);
    assert_eq!(h.app("tree-stop").instances[0].status, Status::Stopped);
}

#[test]
fn delete_leaves_no_process_of_the_app() {
    let h = TestHome::new();
    let pids = start_tree(&h, "tree-delete");
    h.ok(&["delete", "tree-delete"]);
    assert_all_dead(&pids);
}

#[test]
fn kill_leaves_no_process_of_any_app() {
    let h = TestHome::new();
    let mut pids = start_tree(&h, "tree-a");
    pids.extend(start_tree(&h, "tree-b"));
    h.ok(&["kill"]);
    assert_all_dead(&pids);
}

#[test]
fn stop_without_cgroups_still_finds_the_grandchild() {
    let h = TestHome::new();
    // Force the fallback: process group, process tree and the instance marker.
    let out = h.cmd(&["ping"]).env("HERDER_NO_CGROUP", "1").output().unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_str(&h.ok(&["ping", "--json"])).unwrap();
    assert!(info["cgroup_root"].is_null(), "the daemon runs without cgroups: {info}");
    let pids = start_tree(&h, "tree-nocg");
    h.ok(&["stop", "tree-nocg"]);
    assert_all_dead(&pids);
}

/// Regression: on some kernels a child cloned into a cgroup that was once `cgroup.kill`ed is
/// killed at birth, so an app stopped by `cgroup.kill` never came back up.
#[test]
fn an_app_started_again_after_a_stop_that_killed_its_cgroup_runs() {
    let h = TestHome::new();
    let pids = start_tree(&h, "tree-again");
    h.ok(&["stop", "tree-again"]);
    assert_all_dead(&pids);
    let pidfile = h.dir.path().join("tree-again.pids");
    std::fs::remove_file(&pidfile).unwrap();
    h.ok(&["start", "tree-again"]);
    // The fixture runs far enough to record its children again, and was not restarted.
    wait_for("the restarted tree to record its pids", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&pidfile).ok()?;
        (text.lines().count() == 2).then_some(())
    });
    let app = h.app("tree-again");
    assert_eq!(app.instances[0].status, Status::Online);
    assert_eq!(app.instances[0].restarts, 0, "{:?}", app.instances[0].history);
}
