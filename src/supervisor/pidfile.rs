//! `pid_file` (PM2's): the pid of an instance's main process, written when it starts (and
//! when `MAINPID=` hands over) and removed when it exits.
//!
//! The daemon may run as root and write where the app's user can too, so the file is written
//! the way state files are (a new file beside it, then renamed over it): a symlink planted at
//! the path is replaced, never followed. It is removed only while it still holds the pid the
//! daemon wrote.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::protocol::AppSpec;

/// Instance `index`'s pid file: `pid_file` itself, with `-<index>` before the extension when
/// the app has several instances (as log files are named).
pub fn path_for(spec: &AppSpec, index: u32) -> Option<PathBuf> {
    let path = spec.pid_file.as_deref()?;
    Some(if spec.instances > 1 { crate::logs::with_instance(path, index) } else { path.to_path_buf() })
}

/// Write `pid` (and a newline) to `path`, replacing what is there.
pub fn write(path: &Path, pid: i32) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Remove `path` if it still holds `pid`.
pub fn remove(path: &Path, pid: i32) {
    let mut text = String::new();
    let holds = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| f.take(32).read_to_string(&mut text))
        .is_ok_and(|_| text.trim().parse::<i32>().ok() == Some(pid));
    if holds {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the pid file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_replacing_a_symlink_and_removed_only_while_it_holds_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("app.pid");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write(&path, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep", "the link was not followed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42\n");
        remove(&path, 43);
        assert!(path.exists(), "another pid's file stays");
        remove(&path, 42);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn several_instances_get_a_file_each() {
        let mut spec = AppSpec::new("w", "x", PathBuf::from("/"));
        spec.pid_file = Some(PathBuf::from("/run/w.pid"));
        assert_eq!(path_for(&spec, 0), Some(PathBuf::from("/run/w.pid")));
        spec.instances = 2;
        assert_eq!(path_for(&spec, 1), Some(PathBuf::from("/run/w-1.pid")));
        spec.pid_file = None;
        assert_eq!(path_for(&spec, 1), None);
    }
}
