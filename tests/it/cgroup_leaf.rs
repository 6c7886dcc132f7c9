//! The daemon's cgroup v2 leaf (`herder-<token>-daemon`, where it moves to pass controllers
//! down): a daemon that runs there, after `herder update` or started again from there, uses
//! the `herder-<token>` group beside the leaf and nests no further; `doctor` sees the same.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herder::protocol::{DaemonInfo, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// The cgroup2 mount point, from mountinfo.
fn v2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .expect("this test needs a cgroup v2 hierarchy")
}

/// The `0::` group of a process.
fn v2_group_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string()
}

/// A home whose commands run in a scratch group's `herder-<token>-daemon` leaf, as a daemon
/// that moved there would; the daemon is killed and the groups removed at the end.
struct InLeaf {
    h: TestHome,
    group: PathBuf,
    leaf: PathBuf,
    root: PathBuf,
}

impl InLeaf {
    fn new() -> InLeaf {
        let h = TestHome::new();
        let token = herder::paths::Paths::new(&h.home).token();
        let group = v2_mount().join(format!("herder-it-{}", h.tag("leaf")));
        let leaf = group.join(format!("herder-{token}-daemon"));
        let root = group.join(format!("herder-{token}"));
        std::fs::create_dir(&group).unwrap();
        std::fs::create_dir(&leaf).unwrap();
        InLeaf { h, group, leaf, root }
    }

    /// `herder <args>` started in the leaf.
    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new("sh")
            .args(["-c", "echo $$ > \"$LEAF/cgroup.procs\" && exec \"$@\"", "sh", BIN])
            .args(args)
            .env("LEAF", &self.leaf)
            .env("HERDER_HOME", &self.h.home)
            .env_remove("HERDER_NO_CGROUP")
            .current_dir(self.h.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "herder {args:?} in {}: {}\n{}",
            self.leaf.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ping(&self) -> DaemonInfo {
        serde_json::from_str(&self.ok(&["ping", "--json"])).unwrap()
    }

    /// The leaf's path as /proc/<pid>/cgroup shows it.
    fn leaf_rel(&self) -> String {
        format!("/{}", self.leaf.strip_prefix(v2_mount()).unwrap().display())
    }

    fn kill(&self) {
        let pid = self.h.daemon_pid();
        self.h.ok(&["kill"]);
        if let Some(pid) = pid {
            wait_for("the daemon to exit", T, || (!pid_alive(pid)).then_some(()));
        }
    }
}

/// Remove a group and its descendants, deepest first, once their processes have left.
fn remove_tree(group: &Path, deadline: Instant) {
    for e in std::fs::read_dir(group).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path(), deadline);
        }
    }
    poll(deadline.saturating_duration_since(Instant::now()), || {
        (std::fs::remove_dir(group).is_ok() || !group.exists()).then_some(())
    });
}

impl Drop for InLeaf {
    fn drop(&mut self) {
        let pid = self.h.daemon_pid();
        let _ = self.h.cmd(&["kill"]).output();
        let deadline = Instant::now() + T;
        poll(T, || (!pid.is_some_and(pid_alive)).then_some(()));
        remove_tree(&self.group, deadline);
    }
}

#[test]
fn a_daemon_in_its_leaf_uses_the_group_beside_it_through_update_and_restart() {
    let l = InLeaf::new();
    let root = Some(l.root.clone());

    // Started from the leaf: the daemon runs there, its instances beside it.
    let first = l.ping();
    assert_eq!(first.cgroup_root, root, "{first:?}");
    assert_eq!(v2_group_of(first.pid), l.leaf_rel());
    let script = fixture("idle.sh");
    l.h.ok(&["start", script.to_str().unwrap(), "--name", "idle", "--", &l.h.tag("idle")]);
    let app = l.h.wait_status("idle", Status::Online, T);
    let inst = &app.instances[0];
    let cgroup = inst.cgroup.clone().expect("the instance has a cgroup");
    assert_eq!(cgroup.parent(), Some(l.root.as_path()), "{cgroup:?}");
    let app_pid = inst.pid.unwrap();
    assert_eq!(v2_group_of(app_pid), format!("/{}", cgroup.strip_prefix(v2_mount()).unwrap().display()));

    // `herder update`: the same process, still in its leaf, finds the same group and its app.
    l.h.ok(&["update"]);
    let updated = l.ping();
    assert_eq!((updated.pid, updated.exec_generation), (first.pid, 1));
    assert_eq!(updated.cgroup_root, root);
    assert_eq!(v2_group_of(updated.pid), l.leaf_rel());
    assert_eq!(l.h.app("idle").instances[0].pid, Some(app_pid));

    // A daemon started again from the leaf: the same group, nothing nested in the leaf.
    l.kill();
    assert!(!pid_alive(app_pid));
    let again = l.ping();
    assert_ne!(again.pid, first.pid);
    assert_eq!(again.cgroup_root, root);
    let nested: Vec<_> =
        std::fs::read_dir(&l.leaf).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert!(nested.is_empty(), "groups in the daemon's leaf: {nested:?}");

    // `doctor` run from the leaf, without a daemon, names that group too.
    l.kill();
    let report: serde_json::Value = serde_json::from_str(&l.ok(&["doctor", "--json"])).unwrap();
    let check = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "cgroup-v2").unwrap();
    assert_eq!(check["level"], "ok", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains(&l.root.display().to_string()) && !detail.contains("-daemon"), "{detail}");
}
