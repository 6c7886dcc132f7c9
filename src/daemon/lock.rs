//! One daemon per home: an exclusive `flock` on `daemon.lock`, held for the daemon's life.
//! The kernel drops it when the daemon dies in any way, so there is no stale lock to clean.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::paths::Paths;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another herder daemon{} is running for {home}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { pid: Option<u32>, home: String },
    #[error("cannot open {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// The held lock; dropping it releases the lock.
pub struct DaemonLock {
    file: File,
}

impl DaemonLock {
    /// The lock an earlier image of this process held (`herder update`): the flock belongs to
    /// the open file, which the descriptor kept across exec.
    pub(crate) fn inherited(file: File) -> DaemonLock {
        DaemonLock { file }
    }

    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// Take the lock. On a read-only home the existing lock file is opened for reading only
/// (flock needs no write access), so a daemon still starts there.
pub fn acquire(paths: &Paths) -> Result<DaemonLock, LockError> {
    let path = paths.lock();
    let io_err = |source| LockError::Io { path: path.display().to_string(), source };
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => File::open(&path).map_err(|_| io_err(e))?,
        Err(e) => return Err(io_err(e)),
    };
    let mut wait =
        crate::wait::Backoff::new(DYING_HOLDER_WAIT, Duration::from_millis(2), Duration::from_millis(50));
    // SAFETY: flock(2) on a descriptor we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(err));
        }
        // A daemon killed a moment ago: its main thread is a zombie already, the others are
        // still closing its descriptors (the lock among them). It is gone in a moment.
        let pid = read_pid(paths);
        if pid.is_none_or(|p| crate::process::tree::alive(p as i32)) || !wait.sleep() {
            return Err(LockError::Held { pid, home: paths.home.display().to_string() });
        }
    }
    Ok(DaemonLock { file })
}

/// `daemon.pid` always holds this many bytes: it is written in place, never replaced nor
/// removed, so that recording a pid needs no new space on a full disk.
const PID_FILE_LEN: usize = 16;

/// Record `pid` in `daemon.pid` (`None`: the daemon is gone), in place.
pub fn write_pid(paths: &Paths, pid: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let text = pid.map(|p| p.to_string()).unwrap_or_default();
    let line = format!("{text:<width$}\n", width = PID_FILE_LEN - 1);
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(paths.pid_file())?;
    file.write_all_at(line.as_bytes(), 0)?;
    // An older herder wrote just the digits: a longer file keeps no stale tail.
    if file.metadata()?.len() != PID_FILE_LEN as u64 {
        file.set_len(PID_FILE_LEN as u64)?;
    }
    Ok(())
}

/// How long a new daemon waits for the lock of one that is exiting.
const DYING_HOLDER_WAIT: Duration = Duration::from_secs(10);

/// The pid in `daemon.pid`, if any.
pub fn read_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.pid_file()).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let _held = acquire(&paths).unwrap();
        // flock locks belong to the open file description, so a second open conflicts even
        // within one process.
        write_pid(&paths, Some(std::process::id())).unwrap();
        match acquire(&paths) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("second lock succeeded"),
        }
    }

    #[test]
    fn the_pid_file_is_rewritten_in_place_at_one_size() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::write(paths.pid_file(), "123456789012345678901234\n").unwrap();
        write_pid(&paths, Some(42)).unwrap();
        assert_eq!(read_pid(&paths), Some(42));
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(paths.pid_file()).unwrap());
        write_pid(&paths, None).unwrap();
        assert_eq!(read_pid(&paths), None);
        let meta = std::fs::metadata(paths.pid_file()).unwrap();
        assert_eq!((std::os::unix::fs::MetadataExt::ino(&meta), meta.len()), (ino, PID_FILE_LEN as u64));
    }
}
