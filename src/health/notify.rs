//! herder as a server of the systemd notify protocol: each instance gets its own datagram
//! socket, passed as `NOTIFY_SOCKET`, so apps written for `Type=notify` (any `sd_notify`
//! library) work unchanged. Messages are `KEY=VALUE` lines: `READY=1`, `STATUS=…`,
//! `WATCHDOG=1`, `STOPPING=1`, `MAINPID=…`.

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

/// An instance's notify socket.
pub struct NotifySocket {
    sock: UnixDatagram,
    /// The file to remove when done (none for an abstract socket).
    path: Option<PathBuf>,
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
        Ok(NotifySocket { sock: UnixDatagram::from_std(std)?, path, address })
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
        Ok(NotifySocket { sock: UnixDatagram::from_std(std)?, path, address })
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
