//! herder as a server of the systemd notify protocol: each instance gets its own datagram
//! socket, passed as `NOTIFY_SOCKET`, so apps written for `Type=notify` (any `sd_notify`
//! library) work unchanged. Messages are `KEY=VALUE` lines: `READY=1`, `STATUS=…`,
//! `WATCHDOG=1`, `STOPPING=1`, `MAINPID=…`.
//!
//! Sockets live in `HERDER_HOME/run/`, which only the daemon's user can reach (the home is
//! 0700). An app that runs as another user (`user`, under a root daemon) gets its socket in a
//! directory of its own instead, `<shared run dir>/<instance>/notify`: the directory is 0700
//! and, with the socket, owned by the app's user, so that user can send to it and no other
//! (but root) can.

use std::cell::RefCell;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram as StdDatagram};
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

/// Longest socket path the kernel takes (108 bytes with the NUL).
const MAX_PATH: usize = 107;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
    Status(String),
    MainPid(u32),
}

/// Parse one datagram (newline-separated `KEY=VALUE` assignments; unknown keys are ignored).
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            Some(match (k, v) {
                ("READY", "1") => Notice::Ready,
                ("RELOADING", "1") => Notice::Reloading,
                ("STOPPING", "1") => Notice::Stopping,
                ("WATCHDOG", "1") => Notice::Watchdog,
                ("STATUS", s) => Notice::Status(s.to_string()),
                ("MAINPID", p) => Notice::MainPid(p.trim().parse().ok()?),
                _ => return None,
            })
        })
        .collect()
}

/// The file name of a socket in a directory of its own.
const PRIVATE_NAME: &str = "notify";

/// An instance's notify socket.
pub struct NotifySocket {
    sock: UnixDatagram,
    /// The file to remove when done (none for an abstract socket).
    path: Option<PathBuf>,
    /// The directory of its own it is in, removed with it (see [`NotifySocket::bind_owned`]).
    dir: Option<PathBuf>,
    /// The value of `NOTIFY_SOCKET` for the app.
    pub address: String,
}

impl NotifySocket {
    /// Bind `<run_dir>/<name>.notify`, or an abstract socket when that path is too long for
    /// the kernel. Must run inside the tokio runtime.
    pub fn bind(run_dir: &Path, token: &str, name: &str) -> io::Result<NotifySocket> {
        let path = run_dir.join(format!("{name}.notify"));
        let (std, path, address) = if path.as_os_str().len() <= MAX_PATH {
            let _ = std::fs::remove_file(&path);
            let sock = StdDatagram::bind(&path)?;
            let address = path.to_string_lossy().into_owned();
            (sock, Some(path), address)
        } else {
            let abstract_name = format!("herder-{token}-{name}");
            let sock = StdDatagram::bind_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes())?)?;
            (sock, None, format!("@{abstract_name}"))
        };
        std.set_nonblocking(true)?;
        Ok(NotifySocket { sock: UnixDatagram::from_std(std)?, path, dir: None, address })
    }

    /// Bind `<root>/<name>/notify` for an app that runs as `uid`:`gid`: `<name>` is a 0700
    /// directory owned, with the socket, by that account. `root` must be a directory only the
    /// daemon can write to (see [`crate::paths::Paths::ensure_shared_run_dir`]). Must run
    /// inside the tokio runtime.
    pub fn bind_owned(root: &Path, name: &str, uid: u32, gid: u32) -> io::Result<NotifySocket> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = root.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Left by an earlier daemon: only the daemon's user can create entries in `root`, but
        // check what it is before trusting it.
        let meta = std::fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", dir.display())));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(PRIVATE_NAME);
        let _ = std::fs::remove_file(&path);
        let std = StdDatagram::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std.set_nonblocking(true)?;
        let address = path.to_string_lossy().into_owned();
        let sock =
            NotifySocket { sock: UnixDatagram::from_std(std)?, path: Some(path), dir: Some(dir), address };
        sock.chown(uid, gid)?;
        Ok(sock)
    }

    /// Whether the socket is in a directory of its own, which [`NotifySocket::chown`] can hand
    /// to another account.
    pub fn is_owned(&self) -> bool {
        self.dir.is_some()
    }

    /// Give the socket and its own directory to `uid`:`gid` (the account the next process of
    /// the instance runs as). The socket first: until the directory changes hands, the old
    /// owner cannot reach either.
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        let (Some(path), Some(dir)) = (&self.path, &self.dir) else { return Ok(()) };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
    }

    /// Every notice queued on the socket now, read without waiting and whatever the runtime
    /// knows of the socket's readiness: a deadline that expired while the daemon did not run
    /// (an update, a stopped daemon) is checked against what the app sent meanwhile, which the
    /// runtime may not have seen yet.
    pub fn queued(&self) -> Vec<Notice> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < 4096 {
                buf.resize(4096, 0);
            }
            // Bounded: an app sending without pause must not keep the caller here.
            for _ in 0..256 {
                // SAFETY: recv(2) into a buffer of the given length.
                let n = unsafe {
                    libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                if n < 0 {
                    break;
                }
                out.extend(parse(&buf[..n as usize]));
            }
        });
        out
    }

    /// The socket's descriptor and the file to remove when done, for `herder update`.
    pub fn raw_parts(&self) -> (std::os::fd::RawFd, Option<&Path>) {
        use std::os::fd::AsRawFd;
        (self.sock.as_raw_fd(), self.path.as_deref())
    }

    /// A socket bound by an earlier image of this process (`herder update`). Must run inside
    /// the tokio runtime.
    pub fn from_inherited(
        fd: std::os::fd::OwnedFd,
        path: Option<PathBuf>,
        address: String,
    ) -> io::Result<NotifySocket> {
        let std = StdDatagram::from(fd);
        std.set_nonblocking(true)?;
        // A socket in a directory of its own keeps it (see [`NotifySocket::bind_owned`]).
        let dir = path
            .as_deref()
            .filter(|p| p.file_name().is_some_and(|n| n == PRIVATE_NAME))
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        Ok(NotifySocket { sock: UnixDatagram::from_std(std)?, path, dir, address })
    }

    /// Wait for the next datagram and parse it.
    pub async fn recv(&self) -> io::Result<Vec<Notice>> {
        loop {
            self.sock.readable().await?;
            let got = BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                if buf.len() < 4096 {
                    buf.resize(4096, 0);
                }
                self.sock.try_recv(&mut buf).map(|n| parse(&buf[..n]))
            });
            match got {
                Ok(notices) => return Ok(notices),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_notices_are_read_before_the_runtime_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let sock = NotifySocket::bind(dir.path(), "t", "q").unwrap();
        let app = StdDatagram::unbound().unwrap();
        app.send_to(b"WATCHDOG=1", &sock.address).unwrap();
        app.send_to(b"STATUS=two", &sock.address).unwrap();
        // No await in between: the runtime has not polled the socket.
        assert_eq!(sock.queued(), vec![Notice::Watchdog, Notice::Status("two".into())]);
        assert!(sock.queued().is_empty());
        // The async reader goes on with what comes next.
        app.send_to(b"READY=1", &sock.address).unwrap();
        assert_eq!(sock.recv().await.unwrap(), vec![Notice::Ready]);
    }

    #[test]
    fn parses_the_protocol() {
        assert_eq!(
            parse(b"READY=1\nSTATUS=Listening on 8080\nMAINPID=42\nX_CUSTOM=1\nWATCHDOG=1"),
            vec![
                Notice::Ready,
                Notice::Status("Listening on 8080".into()),
                Notice::MainPid(42),
                Notice::Watchdog
            ]
        );
        assert_eq!(parse(b"READY=0\nSTOPPING=1\n"), vec![Notice::Stopping]);
    }

    #[tokio::test]
    async fn an_owned_socket_is_alone_in_a_private_directory_and_goes_with_it() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let sock = NotifySocket::bind_owned(root.path(), "app-1-0", uid, gid).unwrap();
        let dir = root.path().join("app-1-0");
        assert_eq!(sock.address, dir.join("notify").to_str().unwrap());
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o700, uid));
        assert_eq!(std::fs::symlink_metadata(dir.join("notify")).unwrap().mode() & 0o777, 0o600);
        StdDatagram::unbound().unwrap().send_to(b"READY=1", &sock.address).unwrap();
        assert_eq!(sock.recv().await.unwrap(), vec![Notice::Ready]);
        // Bound again over what an earlier daemon left.
        std::mem::forget(sock);
        let sock = NotifySocket::bind_owned(root.path(), "app-1-0", uid, gid).unwrap();
        assert!(sock.is_owned());
        drop(sock);
        assert!(!dir.exists(), "the directory goes with the socket");
    }

    #[tokio::test]
    async fn receives_from_a_path_and_from_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let short = NotifySocket::bind(dir.path(), "tok", "app-0-0").unwrap();
        assert!(!short.address.starts_with('@'));
        StdDatagram::unbound().unwrap().send_to(b"READY=1", &short.address).unwrap();
        assert_eq!(short.recv().await.unwrap(), vec![Notice::Ready]);

        let long_dir = dir.path().join("x".repeat(120));
        let long = NotifySocket::bind(&long_dir, "tok", "app-0-1").unwrap();
        assert!(long.address.starts_with("@herder-tok-"));
        let addr = SocketAddr::from_abstract_name(&long.address.as_bytes()[1..]).unwrap();
        StdDatagram::unbound().unwrap().send_to_addr(b"STATUS=hi", &addr).unwrap();
        assert_eq!(long.recv().await.unwrap(), vec![Notice::Status("hi".into())]);
    }
}
