//! The daemon as a client of its own service manager's notify protocol: under a systemd unit
//! with `Type=notify`, it sends `READY=1` to `$NOTIFY_SOCKET` once it serves its socket (apps
//! recovered and resurrected), and `STOPPING=1` when it begins to stop. Without
//! `NOTIFY_SOCKET` (`Type=simple`, a shell) nothing is sent.
//!
//! The variable is taken out of the daemon's environment before any thread starts, so that no
//! child (an app, a hook, a probe) ever reports to systemd in herder's name; apps get herder's
//! own notify socket instead (see `health::notify`).

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The service manager's notify socket, if the daemon was given one.
#[derive(Debug, Clone, Default)]
pub struct Manager {
    address: Option<OsString>,
}

impl Manager {
    /// Take `NOTIFY_SOCKET` (and the watchdog variables, which herder does not serve) out of
    /// the environment. Must run before any other thread exists.
    pub fn take_from_env() -> Manager {
        let address = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty());
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        Manager { address }
    }

    /// The socket's address, which `herder update` hands to the next image.
    pub fn address(&self) -> Option<&std::ffi::OsStr> {
        self.address.as_deref()
    }

    /// Send `message` (`KEY=VALUE` lines); a failure is logged, never fatal.
    pub fn notify(&self, message: &str) {
        let Some(address) = &self.address else { return };
        if let Err(e) = send(address, message) {
            tracing::warn!(socket = %address.to_string_lossy(), error = %e, "cannot notify the service manager");
        }
    }
}

/// One datagram to `address`: a path, or `@name` for an abstract socket.
fn send(address: &OsString, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = address.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(address))?,
    };
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        Manager { address: Some(path.clone().into_os_string()) }.notify("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        let name = format!("herder-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Manager { address: Some(format!("@{name}").into()) }.notify("READY=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        // Without a socket nothing happens, and a dead one is not fatal.
        Manager::default().notify("READY=1");
        Manager { address: Some(dir.path().join("gone").into_os_string()) }.notify("READY=1");
    }
}
