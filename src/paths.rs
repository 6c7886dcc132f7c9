//! Where herder keeps its files: `HERDER_HOME` (default `~/.herder`) and what lives in it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files of one `HERDER_HOME`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    /// `HERDER_HOME` from the environment, else `~/.herder`. A relative `HERDER_HOME` is made
    /// absolute so the daemon and every client agree on it.
    pub fn from_env() -> io::Result<Paths> {
        let home = match std::env::var_os("HERDER_HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => {
                let user_home = std::env::var_os("HOME").filter(|v| !v.is_empty()).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "neither `HERDER_HOME` nor `HOME` is set")
                })?;
                PathBuf::from(user_home).join(".herder")
            }
        };
        let home = if home.is_absolute() { home } else { std::env::current_dir()?.join(home) };
        Ok(Paths { home })
    }

    pub fn new(home: impl Into<PathBuf>) -> Paths {
        Paths { home: home.into() }
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("herder.sock")
    }
    /// Where the control socket is when the home cannot hold it (a read-only disk): in
    /// [`Paths::shared_run_dir`], which clients look at after the home.
    pub fn fallback_socket(&self) -> PathBuf {
        self.shared_run_dir().join("herder.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.home.join("daemon.lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.home.join("daemon.pid")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.home.join("daemon.log")
    }
    pub fn state(&self) -> PathBuf {
        self.home.join("state.json")
    }
    pub fn dump(&self) -> PathBuf {
        self.home.join("dump.json")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    /// Where a root daemon puts the notify sockets of apps that run as another user, which
    /// cannot reach `run/` in the 0700 home: `/run/herder-<token>` (the system's temporary
    /// directory where there is no `/run`). See [`Paths::ensure_shared_run_dir`].
    pub fn shared_run_dir(&self) -> PathBuf {
        let base = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
        base.join(format!("herder-{}", self.token()))
    }

    /// Create [`Paths::shared_run_dir`] (0711: every user may pass through to the directory
    /// of its own socket, none may list or create entries) and check that it is this
    /// process's: a directory someone else made there (the temporary directory is writable by
    /// all) is refused, not used.
    pub fn ensure_shared_run_dir(&self) -> io::Result<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.shared_run_dir();
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(&dir)?;
        // SAFETY: geteuid(2) cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != euid {
            return Err(io::Error::other(format!(
                "{} is not a directory of uid {euid}; remove it",
                dir.display()
            )));
        }
        if meta.mode() & 0o7777 != 0o711 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        }
        Ok(dir)
    }

    /// Create the home (0700) and its folders; tighten the home's mode if it is looser.
    pub fn ensure(&self) -> io::Result<()> {
        create_private_dir(&self.home)?;
        create_private_dir(&self.logs_dir())?;
        create_private_dir(&self.run_dir())?;
        Ok(())
    }

    /// A short stable token naming this home, used for cgroup names and process markers.
    pub fn token(&self) -> String {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.home.as_os_str().as_encoded_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{:012x}", h & 0xffff_ffff_ffff)
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_stable_and_distinct() {
        let a = Paths::new("/tmp/a");
        assert_eq!(a.token(), Paths::new("/tmp/a").token());
        assert_ne!(a.token(), Paths::new("/tmp/b").token());
        assert_eq!(a.token().len(), 12);
    }

    #[test]
    fn ensure_makes_home_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("h");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        Paths::new(&home).ensure().unwrap();
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
