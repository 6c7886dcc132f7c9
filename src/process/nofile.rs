//! The open file limit (`RLIMIT_NOFILE`). Every instance costs the daemon several descriptors
//! (output pipes, its notify socket, log files, maybe a watcher), so under the usual soft limit
//! of 1024 a few hundred instances would fail to spawn with `EMFILE`. The daemon raises its
//! soft limit to the hard limit at start, and each child gets the original soft limit back
//! before `exec`: a program using `select(2)` breaks on descriptors past 1023.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit the daemon started with, once raised; `u64::MAX` while nothing was changed
/// (children then inherit the daemon's limit as it is).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit the daemon was started with (which children get).
    pub original: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

fn get() -> io::Result<libc::rlimit> {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes into a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(l)
}

/// Raise the soft limit to the hard limit. `original` is the soft limit an earlier image of
/// this process started with (`herder update`), when it raised it already.
pub fn raise(original: Option<u64>) -> io::Result<Raised> {
    let mut l = get()?;
    let original = original.unwrap_or(l.rlim_cur as u64).min(l.rlim_max as u64);
    ORIGINAL_SOFT.store(original, Ordering::SeqCst);
    if l.rlim_cur < l.rlim_max {
        l.rlim_cur = l.rlim_max;
        // SAFETY: setrlimit(2) with a local struct; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Raised { original, soft: l.rlim_cur as u64, hard: l.rlim_max as u64 })
}

/// The soft limit the daemon started with, if it raised its own (for the next image).
pub fn original() -> Option<u64> {
    Some(ORIGINAL_SOFT.load(Ordering::SeqCst)).filter(|v| *v != u64::MAX)
}

/// The limit a child sets before `exec`: the original soft limit under the current hard one.
/// `None` when the daemon's limit is the one it started with.
pub fn for_children() -> Option<libc::rlimit> {
    let original = original()?;
    let now = get().ok()?;
    (now.rlim_cur as u64 != original).then(|| libc::rlimit {
        rlim_cur: original.min(now.rlim_max as u64) as libc::rlim_t,
        rlim_max: now.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_keeps_the_original_for_children() {
        // The test process's own limit: raising soft to hard and back is harmless to other
        // tests (they only gain descriptors meanwhile).
        let before = get().unwrap();
        let r = raise(None).unwrap();
        assert_eq!(r.original, before.rlim_cur as u64);
        assert_eq!(r.soft, before.rlim_max as u64);
        assert_eq!(original(), Some(before.rlim_cur as u64));
        if before.rlim_cur != before.rlim_max {
            let child = for_children().unwrap();
            assert_eq!((child.rlim_cur, child.rlim_max), (before.rlim_cur, before.rlim_max));
        } else {
            assert!(for_children().is_none(), "nothing to restore");
        }
        // An earlier image's original wins over the (already raised) current soft limit.
        let again = raise(Some(64)).unwrap();
        assert_eq!(again.original, 64.min(before.rlim_max as u64));
        ORIGINAL_SOFT.store(before.rlim_cur as u64, Ordering::SeqCst);
    }
}
