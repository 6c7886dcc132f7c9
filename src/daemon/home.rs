//! Whether the home takes writes. A full or read-only disk must not stop an app, so what the
//! daemon could not write there is remembered and told instead: a line under `list`, a check
//! of `doctor`, a `disk` event and the daemon log; `state.json` is written again once it can.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::Daemon;
use crate::protocol::now_ms;

/// What the daemon writes in its home, besides the apps' logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    /// The home's folders (`logs/`, `run/`) and their modes.
    Folders,
    /// `daemon.pid`.
    Pid,
    /// The control socket, bound elsewhere when the home cannot hold it.
    Socket,
    /// `state.json`, which crash recovery reads.
    State,
}

/// What could not be written, and since when.
#[derive(Default)]
pub(crate) struct Health {
    failed: Mutex<BTreeMap<Part, Failure>>,
}

struct Failure {
    since_ms: u64,
    what: String,
}

impl Health {
    /// `part` could not be written: `what` says what that means. True when it could until now.
    pub fn failed(&self, part: Part, what: impl Into<String>) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let what = what.into();
        match failed.get_mut(&part) {
            Some(f) => {
                f.what = what;
                false
            }
            None => {
                failed.insert(part, Failure { since_ms: now_ms(), what });
                true
            }
        }
    }

    /// `part` was written. True when it could not be until now.
    pub fn written(&self, part: Part) -> bool {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).remove(&part).is_some()
    }

    pub fn is_failed(&self, part: Part) -> bool {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&part)
    }

    fn lines(&self) -> Vec<String> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed
            .values()
            .map(|f| format!("{} (since {})", f.what, crate::human::clock_time(f.since_ms)))
            .collect()
    }
}

/// A disk's state as `statvfs` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub read_only: bool,
    /// Bytes this process may still write (root may use the reserved blocks).
    pub free_bytes: u64,
    /// Inodes left, when the file system counts them.
    pub free_inodes: Option<u64>,
}

/// Below this, the disk counts as full: a log line or `state.json` no longer fits for long.
pub const FULL_BELOW_BYTES: u64 = 64 * 1024;

impl Disk {
    /// The disk of `path`, if `statvfs` answers.
    pub fn of(path: &Path) -> Option<Disk> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a struct statvfs(3) fills.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        // SAFETY: geteuid(2) cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let blocks = if root { st.f_bfree } else { st.f_bavail };
        Some(Disk {
            read_only: st.f_flag & libc::ST_RDONLY != 0,
            free_bytes: blocks.saturating_mul(st.f_frsize),
            free_inodes: (st.f_files > 0).then_some(if root { st.f_ffree } else { st.f_favail }),
        })
    }

    /// What is wrong with it, in words; `None` when it takes writes.
    pub fn problem(&self) -> Option<String> {
        if self.read_only {
            Some("is read-only".into())
        } else if self.free_bytes < FULL_BELOW_BYTES {
            Some(format!("is full ({} free)", crate::human::bytes(self.free_bytes)))
        } else if self.free_inodes == Some(0) {
            Some("has no free inodes".into())
        } else {
            None
        }
    }
}

/// Everything to say about the home now: its disk, then what is not written. Empty when all
/// is well.
pub(crate) fn warnings(d: &Daemon) -> Vec<String> {
    let home = &d.ctx.paths.home;
    let mut out = Vec::new();
    if let Some(problem) = Disk::of(home).and_then(|disk| disk.problem()) {
        out.push(format!("the home {} {problem}", home.display()));
    }
    out.extend(d.home.lines());
    if d.ctx.logs.any_error() {
        out.extend(unwritten_logs(d));
    }
    out
}

/// The apps whose log files cannot be written, grouped by the error.
fn unwritten_logs(d: &Daemon) -> Vec<String> {
    let mut by_error: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let reg = d.registry();
    for app in reg.apps.values() {
        let spec = app.spec();
        let mut paths = Vec::new();
        for info in app.infos() {
            let policy = crate::logs::policy_of(&d.ctx.paths, spec, info.index);
            paths.extend(policy.out.into_iter().chain(policy.err).chain(policy.combined));
        }
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        if let Some((_, e)) = d.ctx.logs.errors(&refs).into_iter().next() {
            let reason = e.message.strip_prefix("cannot open it: ").unwrap_or(&e.message).to_string();
            by_error.entry(reason).or_default().push(spec.name.clone());
        }
    }
    by_error
        .into_iter()
        .map(|(why, mut apps)| {
            apps.dedup();
            let s = if apps.len() == 1 { "" } else { "s" };
            format!("log files of app{s} {} are not written: {why}; their lines are dropped", apps.join(", "))
        })
        .collect()
}

/// How often the daemon looks at its home while something is wrong with it (and, more
/// slowly, while nothing is).
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Look at the home now and then: say when it becomes full or read-only, or writable again
/// (a `disk` event and a line in the daemon log), and write a stale `state.json` again.
pub(crate) async fn watch(d: std::sync::Arc<Daemon>) {
    let mut said: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if d.home.is_failed(Part::State) {
            d.persist().await;
        }
        let now = warnings(&d);
        // The times in the lines change nothing worth telling.
        let gist = |lines: &[String]| -> Vec<String> {
            lines.iter().map(|l| l.split(" (since ").next().unwrap_or(l).to_string()).collect()
        };
        if gist(&now) == gist(&said) {
            continue;
        }
        let detail = if now.is_empty() {
            tracing::info!("the home takes writes again");
            "the home takes writes again".to_string()
        } else {
            tracing::warn!(problems = %now.join("; "), "the home does not take every write");
            now.join("; ")
        };
        let _ = d.ctx.events.send(crate::protocol::Event {
            at_ms: now_ms(),
            kind: crate::protocol::EventKind::Disk,
            app: String::new(),
            instance: 0,
            pid: None,
            exit: None,
            detail: Some(detail),
        });
        said = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_new_once_and_gone_once_written() {
        let h = Health::default();
        assert!(h.failed(Part::State, "state.json is not written: No space left on device"));
        assert!(!h.failed(Part::State, "state.json is not written: Read-only file system"));
        assert!(h.is_failed(Part::State));
        let lines = h.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("state.json is not written: Read-only file system (since "),
            "{lines:?}"
        );
        assert!(h.written(Part::State));
        assert!(!h.written(Part::State));
        assert!(h.lines().is_empty());
    }

    #[test]
    fn a_disk_is_full_below_the_threshold_and_read_only_first() {
        let disk = Disk { read_only: false, free_bytes: 1 << 30, free_inodes: Some(10) };
        assert_eq!(disk.problem(), None);
        assert_eq!(Disk { free_bytes: 4096, ..disk }.problem().unwrap(), "is full (4.0kb free)");
        assert_eq!(Disk { free_inodes: Some(0), ..disk }.problem().unwrap(), "has no free inodes");
        assert_eq!(Disk { read_only: true, free_bytes: 0, ..disk }.problem().unwrap(), "is read-only");
        assert!(Disk::of(Path::new("/")).is_some());
    }
}
