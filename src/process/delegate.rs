//! Cgroup v2 delegation: passing controllers (`memory`, `cpu`) from the daemon's own group down
//! to `herder-<token>` and so to every instance group.
//!
//! A group passes a controller to its children once `+<name>` is in its
//! `cgroup.subtree_control`. For a domain controller such as `memory`, the kernel refuses that
//! (EBUSY) in a group other than the root that holds processes ("no internal processes"), and
//! the daemon's group holds the daemon. So, as systemd and container runtimes do, the daemon
//! moves itself into a leaf of its group (`herder-<token>-daemon`, beside `herder-<token>`)
//! when it is the only process there, then enables the controllers in its group and in
//! `herder-<token>`. Processes that share its group are not the daemon's to move: then nothing
//! moves, the controllers stay off, and the note says why.
//!
//! The move is one write of the pid to the leaf's `cgroup.procs`, which takes every thread
//! along: the daemon is either where it was or in its leaf, never split.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What [`delegate`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The wanted controllers that the daemon's group offers (its `cgroup.controllers`).
    pub offered: Vec<String>,
    /// Those that `herder-<token>`'s children get.
    pub enabled: Vec<String>,
    /// Whether the process moved into its leaf.
    pub moved: bool,
    /// Whether other processes share the group, so that the process could not move.
    pub shared: bool,
    /// Why an offered controller is not enabled.
    pub note: Option<String>,
}

/// Make the `wanted` controllers that `group` offers reach the children of `root` (a child of
/// `group`), moving process `pid` (alone in `group`) into `leaf` (another child) when the kernel
/// will not enable them while it is in `group`. Controllers already passed down are left as
/// they are; nothing is ever disabled.
pub fn delegate(group: &Path, root: &Path, leaf: &Path, pid: u32, wanted: &[&str]) -> Delegation {
    let offered_here = words(&group.join("cgroup.controllers"));
    let mut d = Delegation {
        offered: wanted
            .iter()
            .filter(|c| offered_here.iter().any(|o| o == *c))
            .map(|c| c.to_string())
            .collect(),
        ..Delegation::default()
    };
    if d.offered.is_empty() {
        return d;
    }
    let mut problems = Vec::new();
    // The daemon's group passes them down; EBUSY while the daemon is in it.
    let passed = words(&group.join("cgroup.subtree_control"));
    let mut busy = Vec::new();
    for c in d.offered.iter().filter(|c| !passed.contains(c)) {
        match enable(group, c) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => busy.push(c.as_str()),
            Err(e) => problems.push(format!("cannot enable `{c}` in {}: {e}", group.display())),
        }
    }
    if !busy.is_empty() {
        match move_into(group, leaf, pid) {
            Err(Refused::Shared(why)) => {
                d.shared = true;
                problems.push(why);
            }
            Err(Refused::Failed(why)) => problems.push(why),
            Ok(()) => {
                d.moved = true;
                tracing::info!(pid, leaf = %leaf.display(), "moved the daemon into its own cgroup to pass controllers down");
                for c in busy {
                    if let Err(e) = enable(group, c) {
                        problems.push(format!(
                            "the daemon moved into {} but `{c}` cannot be enabled in {}: {e}",
                            leaf.display(),
                            group.display()
                        ));
                    }
                }
            }
        }
    }
    // `herder-<token>` holds no process: it passes on whatever it gets.
    let got = words(&root.join("cgroup.controllers"));
    let passed = words(&root.join("cgroup.subtree_control"));
    for c in d.offered.iter().filter(|c| got.contains(c) && !passed.contains(c)) {
        if let Err(e) = enable(root, c) {
            problems.push(format!("cannot enable `{c}` in {}: {e}", root.display()));
        }
    }
    let passed = words(&root.join("cgroup.subtree_control"));
    d.enabled = d.offered.iter().filter(|c| passed.contains(c)).cloned().collect();
    if !problems.is_empty() {
        d.note = Some(problems.join("; "));
    }
    d
}

/// Why the process did not move.
enum Refused {
    /// Other processes are in the group.
    Shared(String),
    Failed(String),
}

/// Move `pid`, the only process of `group`, into its child `leaf` (created if need be; removed
/// again if this created it and the move failed).
fn move_into(group: &Path, leaf: &Path, pid: u32) -> Result<(), Refused> {
    let procs = fs::read_to_string(group.join("cgroup.procs"))
        .map_err(|e| Refused::Failed(format!("cannot read {}/cgroup.procs: {e}", group.display())))?;
    // A process outside this pid namespace reads as 0: another process all the same.
    let others: Vec<&str> = procs.split_whitespace().filter(|p| p.parse() != Ok(pid)).collect();
    if !others.is_empty() {
        let shown = others.iter().take(3).copied().collect::<Vec<_>>().join(", ");
        let more = if others.len() > 3 { ", …" } else { "" };
        return Err(Refused::Shared(format!(
            "the daemon shares its cgroup ({}) with other processes (pid {shown}{more})",
            group.display()
        )));
    }
    let created = match fs::create_dir(leaf) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Refused::Failed(format!("cannot create {}: {e}", leaf.display()))),
    };
    let moved = fs::OpenOptions::new()
        .write(true)
        .open(leaf.join("cgroup.procs"))
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
    if let Err(e) = moved {
        if created {
            let _ = fs::remove_dir(leaf);
        }
        return Err(Refused::Failed(format!("cannot move the daemon into {}: {e}", leaf.display())));
    }
    Ok(())
}

/// `+controller` to `group`'s `cgroup.subtree_control`.
fn enable(group: &Path, controller: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(group.join("cgroup.subtree_control"))?
        .write_all(format!("+{controller}").as_bytes())
}

/// The words of a cgroup list file (`cgroup.controllers`, `cgroup.subtree_control`); none if it
/// cannot be read.
fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path).map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

/// These tests work on the machine's real cgroup v2 hierarchy: a scratch group under its root
/// holding `sleep` processes, and a domain controller that the root offers (`hugetlb` on a
/// hybrid host, where `memory` and `cpu` are in v1), which the root must pass down for the
/// scratch group to offer it. Enabling it in the root's `cgroup.subtree_control` (left on:
/// turning it off could race with another run of these tests) changes nothing for processes
/// that set no limit.
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    /// A controller to delegate: a domain one (those are refused in a group with processes).
    const DOMAIN: &[&str] = &["hugetlb", "memory", "io", "misc", "rdma"];

    struct Scratch {
        group: PathBuf,
        children: Vec<Child>,
    }

    impl Scratch {
        /// A new group under the v2 root holding `n` sleeping processes, and the domain
        /// controller it offers.
        fn new(name: &str, n: usize) -> (Scratch, &'static str) {
            let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
            let mount =
                super::super::cgroup::v2_mount(&mountinfo).expect("these tests need a cgroup v2 hierarchy");
            let offered = words(&mount.join("cgroup.controllers"));
            let controller = *DOMAIN
                .iter()
                .find(|c| offered.iter().any(|o| o == *c))
                .unwrap_or_else(|| panic!("the v2 root offers no domain controller ({offered:?})"));
            if !words(&mount.join("cgroup.subtree_control")).iter().any(|c| c == controller) {
                enable(&mount, controller)
                    .unwrap_or_else(|e| panic!("cannot enable `{controller}` in the v2 root: {e}"));
            }
            let group = mount.join(format!("herder-unit-{name}-{}", std::process::id()));
            fs::create_dir(&group).unwrap();
            let mut scratch = Scratch { group, children: Vec::new() };
            for _ in 0..n {
                let child = Command::new("sleep").arg("600").spawn().unwrap();
                fs::write(scratch.group.join("cgroup.procs"), child.id().to_string()).unwrap();
                scratch.children.push(child);
            }
            (scratch, controller)
        }

        fn pids(&self, group: &Path) -> Vec<u32> {
            fs::read_to_string(group.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            for c in &mut self.children {
                let _ = c.kill();
                let _ = c.wait();
            }
            remove_tree(&self.group, Instant::now() + Duration::from_secs(5));
        }
    }

    /// Remove a group and its descendants, deepest first; a group goes once the (reaped)
    /// processes have left it.
    fn remove_tree(group: &Path, deadline: Instant) {
        for e in fs::read_dir(group).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path(), deadline);
            }
        }
        while let Err(e) = fs::remove_dir(group) {
            if Instant::now() >= deadline {
                // Not a panic: this runs in `drop`, maybe while a failed test unwinds.
                eprintln!("cannot remove {}: {e}", group.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_process_alone_in_its_group_moves_into_its_leaf_and_the_controller_reaches_the_root() {
        let (s, controller) = Scratch::new("alone", 1);
        let pid = s.children[0].id();
        let (root, leaf) = (s.group.join("herder-x"), s.group.join("herder-x-daemon"));
        fs::create_dir(&root).unwrap();
        // Without the move the kernel refuses it: the reason for all this.
        let refused = enable(&s.group, controller).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::EBUSY), "{refused}");

        let d = delegate(&s.group, &root, &leaf, pid, &[controller, "no-such-controller"]);
        assert_eq!(
            d,
            Delegation {
                offered: vec![controller.to_string()],
                enabled: vec![controller.to_string()],
                moved: true,
                shared: false,
                note: None
            }
        );
        assert_eq!(s.pids(&leaf), [pid]);
        assert!(s.pids(&s.group).is_empty());
        assert!(words(&s.group.join("cgroup.subtree_control")).iter().any(|c| c == controller));
        assert!(words(&root.join("cgroup.subtree_control")).iter().any(|c| c == controller));
        // An instance group under the root gets the controller's files.
        let instance = root.join("app-0-0");
        fs::create_dir(&instance).unwrap();
        assert!(words(&instance.join("cgroup.controllers")).iter().any(|c| c == controller));

        // Again (a restarted or updated daemon, already in its leaf): nothing to do.
        let again = delegate(&s.group, &root, &leaf, pid, &[controller]);
        assert_eq!((again.moved, again.enabled, again.note), (false, vec![controller.to_string()], None));
        assert_eq!(s.pids(&leaf), [pid]);
    }

    #[test]
    fn a_process_that_shares_its_group_stays_and_says_why() {
        let (s, controller) = Scratch::new("shared", 2);
        let pid = s.children[0].id();
        let (root, leaf) = (s.group.join("herder-x"), s.group.join("herder-x-daemon"));
        fs::create_dir(&root).unwrap();
        let d = delegate(&s.group, &root, &leaf, pid, &[controller]);
        assert!(d.shared && !d.moved && d.enabled.is_empty(), "{d:?}");
        assert_eq!(d.offered, [controller]);
        let note = d.note.unwrap();
        assert!(
            note.contains("shares its cgroup") && note.contains(&s.children[1].id().to_string()),
            "{note}"
        );
        let mut in_group = s.pids(&s.group);
        in_group.sort();
        let mut both: Vec<u32> = s.children.iter().map(Child::id).collect();
        both.sort();
        assert_eq!(in_group, both);
        assert!(!leaf.exists(), "a leaf was made for nothing");
        assert!(!words(&s.group.join("cgroup.subtree_control")).iter().any(|c| c == controller));
    }

    #[test]
    fn controllers_the_group_does_not_offer_change_nothing() {
        let (s, _) = Scratch::new("unoffered", 1);
        let pid = s.children[0].id();
        let (root, leaf) = (s.group.join("herder-x"), s.group.join("herder-x-daemon"));
        fs::create_dir(&root).unwrap();
        let d = delegate(&s.group, &root, &leaf, pid, &["no-such-controller"]);
        assert_eq!(d, Delegation::default());
        assert_eq!(s.pids(&s.group), [pid]);
        assert!(!leaf.exists());
    }
}
