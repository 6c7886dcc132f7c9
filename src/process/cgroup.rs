//! Cgroup v2 groups for instances: one directory per instance under
//! `<v2 mount>/<daemon's cgroup>/herder-<home token>/`, so that stopping an instance can kill
//! every process it ever started, whatever sessions or process groups they moved to.
//!
//! The v2 hierarchy is found in `/proc/self/mountinfo` (hybrid hosts mount it at
//! `/sys/fs/cgroup/unified`) and the daemon's own group in `/proc/self/cgroup`. When there is
//! no writable v2 hierarchy, [`CgroupRoot::detect`] says why and callers fall back to process
//! groups and the process tree.
//!
//! To pass controllers down on cgroup v2, the daemon may move itself into a leaf of its group,
//! `herder-<home token>-daemon` (see [`super::delegate`]). Everything that derives paths from
//! `/proc/self/cgroup` goes through [`CgroupRoot::locate`], which takes that leaf off again, so
//! a daemon that runs there (after `herder update`, or restarted from it) finds the same
//! `herder-<token>` group and nests no further.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory holding this daemon's instance groups.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    /// `herder-<token>`.
    pub path: PathBuf,
    /// The group it is in (the daemon's group, or the parent of the daemon's leaf).
    pub group: PathBuf,
    /// `herder-<token>-daemon` in `group`, where the daemon moves to pass controllers down.
    pub leaf: PathBuf,
}

/// Where the groups of a daemon started from this process would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The cgroup2 mount point.
    pub mount: PathBuf,
    /// This process's own v2 group, without the daemon's leaf if it is in that.
    pub group: PathBuf,
    /// `herder-<token>` inside it.
    pub root: PathBuf,
    /// `herder-<token>-daemon` inside it (the daemon's leaf, which may not exist).
    pub leaf: PathBuf,
}

/// The name of the leaf group the daemon of home `token` moves into (cgroup v2).
pub fn daemon_leaf_name(token: &str) -> String {
    format!("herder-{token}-daemon")
}

impl CgroupRoot {
    /// Find the cgroup v2 hierarchy and the group herder would use, creating nothing.
    pub fn locate(token: &str) -> Result<Location, String> {
        if std::env::var_os("HERDER_NO_CGROUP").is_some() {
            return Err("disabled by `HERDER_NO_CGROUP`".into());
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mount = v2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let rel = own_v2_group(&own).ok_or("the daemon is in no cgroup v2 group")?;
        let leaf_name = daemon_leaf_name(token);
        let rel = without_leaf(&rel, &leaf_name);
        let group = if rel.is_empty() { mount.clone() } else { mount.join(rel) };
        let root = group.join(format!("herder-{token}"));
        let leaf = group.join(leaf_name);
        Ok(Location { mount, group, root, leaf })
    }

    /// Find a writable cgroup v2 hierarchy and create `herder-<token>` in the daemon's group.
    pub fn detect(token: &str) -> Result<CgroupRoot, String> {
        let Location { root: path, group, leaf, .. } = Self::locate(token)?;
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        if !path.join("cgroup.procs").exists() {
            return Err(format!("{} is not a cgroup", path.display()));
        }
        Ok(CgroupRoot { path, group, leaf })
    }

    /// The group of one instance (not created yet).
    pub fn instance(&self, name: &str) -> Cgroup {
        Cgroup { path: self.path.join(name) }
    }

    /// Groups left by an earlier daemon of this home.
    pub fn leftovers(&self) -> Vec<Cgroup> {
        let Ok(rd) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| Cgroup { path: e.path() })
            .collect()
    }
}

/// The mount point of the cgroup2 file system, from mountinfo.
pub(crate) fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    find_mount(mountinfo, |fstype, _| fstype == "cgroup2")
}

/// The mount point of the first mount in mountinfo whose file system type and super options
/// `wanted` accepts.
pub(crate) fn find_mount(mountinfo: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // `36 25 0:30 / /sys/fs/cgroup rw,… - cgroup2 cgroup2 rw,…`
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let fstype = r.next()?;
        let options = r.nth(1).unwrap_or("");
        if !wanted(fstype, options) {
            return None;
        }
        let mount = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mount(mount)))
    })
}

/// Mount points in mountinfo escape spaces and a few other bytes as `\040`-style octal.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `0::/path` line of /proc/self/cgroup.
fn own_v2_group(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(|p| p.to_string())
}

/// A v2 group path relative to the mount (no leading `/`), without a last component
/// `leaf_name`: the group the daemon's leaf is in.
fn without_leaf<'a>(rel: &'a str, leaf_name: &str) -> &'a str {
    let rel = rel.trim_start_matches('/');
    match rel.rsplit_once('/') {
        Some((parent, last)) if last == leaf_name => parent,
        None if rel == leaf_name => "",
        _ => rel,
    }
}

/// One instance's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn from_path(path: impl Into<PathBuf>) -> Cgroup {
        Cgroup { path: path.into() }
    }

    /// Create the group and open the directory (for `CLONE_INTO_CGROUP`) and its
    /// `cgroup.procs` (for kernels without it).
    ///
    /// With `recreate`, an existing group is emptied and removed first: some kernels compare a
    /// group's `cgroup.kill` count with its parent's when a child is cloned into it, and kill
    /// every child cloned into a group that was ever killed. Callers recreate after any kill
    /// in the group; a group whose processes all exited on their own is reused as it is.
    pub fn prepare(&self, recreate: bool) -> io::Result<(OwnedFd, OwnedFd)> {
        if recreate && self.path.exists() {
            if self.populated() {
                self.kill_and_wait(Duration::from_secs(5));
            }
            if let Err(e) = fs::remove_dir(&self.path) {
                tracing::warn!(cgroup = %self.path.display(), error = %e, "cannot remove the old cgroup; reusing it");
            }
        }
        match fs::create_dir(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let dir = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(&self.path)?;
        let procs = fs::OpenOptions::new().write(true).open(self.path.join("cgroup.procs"))?;
        Ok((dir.into(), procs.into()))
    }

    /// Whether any process is in the group.
    pub fn populated(&self) -> bool {
        match fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(s) => s.lines().any(|l| l == "populated 1"),
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// Pids in the group.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Send `sig` to every process in the group.
    pub fn signal_all(&self, sig: i32) {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid read from the group; a vanished pid gives ESRCH.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// SIGKILL everything in the group (`cgroup.kill` where the kernel has it) and wait until it
    /// is empty or `timeout` passes. Returns whether it is empty.
    pub fn kill_and_wait(&self, timeout: Duration) -> bool {
        let has_kill = fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.kill"))
            .and_then(|mut f| f.write_all(b"1"))
            .is_ok();
        crate::wait::until(timeout, Duration::from_micros(200), Duration::from_millis(20), || {
            if !self.populated() {
                return Some(());
            }
            if !has_kill {
                self.signal_all(libc::SIGKILL);
            }
            None
        })
        .is_some()
    }

    /// Remove the (empty) group.
    pub fn remove(&self) {
        if let Err(e) = fs::remove_dir(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(cgroup = %self.path.display(), error = %e, "cgroup not removed");
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_v2_mount() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn finds_pure_v2_mount_with_escaped_path() {
        let mi = "36 25 0:30 / /sys/fs/my\\040cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(v2_mount(mi), Some(PathBuf::from("/sys/fs/my cgroup")));
    }

    #[test]
    fn no_v2_mount_on_pure_v1() {
        let mi = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        assert_eq!(v2_mount(mi), None);
    }

    #[test]
    fn own_group_from_proc_self_cgroup() {
        let c = "4:memory:/x\n0::/user.slice/session-1.scope\n";
        assert_eq!(own_v2_group(c).as_deref(), Some("/user.slice/session-1.scope"));
        assert_eq!(own_v2_group("4:memory:/x\n"), None);
    }

    #[test]
    fn the_daemons_leaf_is_taken_off_its_own_group() {
        let leaf = daemon_leaf_name("0123456789ab");
        assert_eq!(leaf, "herder-0123456789ab-daemon");
        // Under a unit, in a container's namespace root, and where it has not moved (yet).
        assert_eq!(
            without_leaf(&format!("/system.slice/herder.service/{leaf}"), &leaf),
            "system.slice/herder.service"
        );
        assert_eq!(without_leaf(&format!("/{leaf}"), &leaf), "");
        assert_eq!(without_leaf("/system.slice/herder.service", &leaf), "system.slice/herder.service");
        assert_eq!(without_leaf("/", &leaf), "");
        // Another home's leaf, or the leaf's name further up, is a group like any other.
        assert_eq!(without_leaf("/a/herder-ffffffffffff-daemon", &leaf), "a/herder-ffffffffffff-daemon");
        assert_eq!(without_leaf(&format!("/{leaf}/x"), &leaf), format!("{leaf}/x"));
    }
}
