//! Listening TCP sockets that the daemon binds once for an app in cluster mode and its
//! instances inherit: bound to every address (IPv6 and IPv4 on one socket) unless a host is
//! named, with `SO_REUSEADDR` (the port is free again at once after the daemon ends) and a
//! long accept queue, in blocking mode (each app sets the mode it wants on its copy).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};

/// The accept queue asked for (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Listen on `port` of `host` (every address when `None`).
pub fn bind(host: Option<&str>, port: u16) -> io::Result<OwnedFd> {
    let listener = match host {
        None => {
            TcpListener::bind(SocketAddr::from(([0u16; 8], port))).or_else(|e| match e.raw_os_error() {
                // No IPv6 on this machine: every IPv4 address.
                Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) => {
                    TcpListener::bind(SocketAddr::from(([0u8; 4], port)))
                }
                _ => Err(e),
            })?
        }
        Some(h) => {
            let addrs: Vec<SocketAddr> = (h, port).to_socket_addrs()?.collect();
            TcpListener::bind(&addrs[..])?
        }
    };
    // SAFETY: listen(2) on our own listening socket only lengthens its queue.
    unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
    Ok(OwnedFd::from(listener))
}

/// The port a listening socket is bound to.
pub fn local_port(fd: &OwnedFd) -> Option<u16> {
    let listener = TcpListener::from(fd.try_clone().ok()?);
    listener.local_addr().ok().map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_bound_socket_accepts_on_v4_and_v6_loopback() {
        let fd = bind(None, 0).unwrap();
        let port = local_port(&fd).unwrap();
        let listener = TcpListener::from(fd);
        for addr in ["127.0.0.1", "::1"] {
            let Ok(mut c) = std::net::TcpStream::connect((addr, port)) else {
                assert_eq!(addr, "::1", "IPv4 always works");
                continue;
            };
            c.write_all(b"x").unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
        }
    }

    #[test]
    fn a_port_in_use_is_an_error_and_a_host_is_honoured() {
        let fd = bind(Some("127.0.0.1"), 0).unwrap();
        let port = local_port(&fd).unwrap();
        let e = bind(Some("127.0.0.1"), port).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
