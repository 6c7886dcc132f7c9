//! Listening TCP sockets that the daemon binds for an app in cluster mode: one per instance
//! slot, all in one `SO_REUSEPORT` group, so that the kernel spreads new connections across
//! the instances instead of waking them all on one queue (where whichever accepts first takes
//! them). A program on the group picks the socket among the live ones only: a slot that is
//! being added gets no connection until its instance is ready, one that is being removed none
//! once the program says so, and its queue drains before it closes. The program hands
//! connections to the live sockets in turn where the kernel lets the daemon load eBPF
//! ([`crate::process::round_robin`]); elsewhere a classic BPF program picks by a hash of the
//! client's port, even only on average (64 connections over 4 sockets: 8 to 30 each).
//!
//! The sockets listen on every address (IPv6 and IPv4 on one socket) unless a host is named,
//! with `SO_REUSEADDR` (the port is free again at once after the daemon ends) and a long accept
//! queue, in blocking mode (each app sets the mode it wants on its copy).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The accept queue asked for (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Listen on `port` of `host` (every address when `None`), in the port's reuseport group.
pub fn bind(host: Option<&str>, port: u16) -> io::Result<OwnedFd> {
    match host {
        None => bind_addr(SocketAddr::from(([0u16; 8], port)), true).or_else(|e| match e.raw_os_error() {
            // No IPv6 on this machine: every IPv4 address.
            Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) => {
                bind_addr(SocketAddr::from(([0u8; 4], port)), false)
            }
            _ => Err(e),
        }),
        Some(h) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("`{h}` has no address"));
            for addr in (h, port).to_socket_addrs()? {
                match bind_addr(addr, false) {
                    Ok(fd) => return Ok(fd),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

fn bind_addr(addr: SocketAddr, dual_stack: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if family == libc::AF_INET6 {
        set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, i32::from(!dual_stack))?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: bind(2) and listen(2) with an address of the length given.
    unsafe {
        if libc::bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(fd.as_raw_fd(), BACKLOG) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

pub(super) fn set_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt(2) with an int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the right variant is filled below.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin =
                unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            (storage, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            (storage, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// `SKF_NET_OFF`: classic BPF loads relative to the network header.
const NET: u32 = (-0x100000i32) as u32;

/// How a reuseport group spreads new connections over its live sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Each to the next live socket in turn (eBPF).
    RoundRobin,
    /// By a hash of the client's port (classic BPF): even on average.
    Hash,
}

impl Spread {
    pub fn describe(self) -> &'static str {
        match self {
            Spread::RoundRobin => "round-robin",
            Spread::Hash => "by a hash of the client's port",
        }
    }
}

/// Spread new connections over the sockets `live` of `group` (a reuseport group in the order
/// its sockets started listening, `live` their positions): in turn where eBPF can be loaded,
/// else by hash ([`steer_by_hash`]). A socket left out (its instance stopped) gets none.
pub fn steer(group: &[OwnedFd], live: &[u32]) -> io::Result<Spread> {
    let first = group.first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no socket"))?;
    let live = if live.is_empty() { &[0][..] } else { live };
    let sockets: Option<Vec<&OwnedFd>> = live.iter().map(|i| group.get(*i as usize)).collect();
    let round_robin = match &sockets {
        Some(sockets) => crate::process::round_robin::steer(first, sockets),
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "a position past the group")),
    };
    match round_robin {
        Ok(()) => Ok(Spread::RoundRobin),
        Err(e) => {
            tracing::debug!(error = %e, "no eBPF steering: connections are spread by a hash");
            steer_by_hash(first, live).map(|()| Spread::Hash)
        }
    }
}

/// Spread new connections over the sockets of the reuseport group of `fd` at the positions
/// `live` (in the order they started listening; at most 2,000): a Fibonacci hash of the
/// client's port, so that the consecutive ports of one client's connections spread evenly too.
pub fn steer_by_hash(fd: &OwnedFd, live: &[u32]) -> io::Result<()> {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
    };
    use libc::{BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH};
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let live = if live.is_empty() { &[0][..] } else { live };
    let identity = live.iter().enumerate().all(|(i, s)| i as u64 == u64::from(*s));
    // A classic BPF program has at most 4,096 instructions: two per socket past the first
    // 2,000 would not fit.
    let live = if identity { &live[..live.len().min(0xffff)] } else { &live[..live.len().min(2000)] };
    let mut program = vec![
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, NET), // A = the IP header's first byte
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),  // A = its version
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 4),  // IPv4? else to the IPv6 load
        op(BPF_LDX | BPF_B | BPF_MSH, 0, 0, NET), // X = the IPv4 header's length
        op(BPF_LD | BPF_H | BPF_IND, 0, 0, NET), // A = the TCP source port
        op(BPF_JMP | BPF_JA, 0, 0, 1),
        op(BPF_LD | BPF_H | BPF_ABS, 0, 0, NET + 40), // A = the TCP source port (IPv6)
        // Fibonacci hashing: the top bits of port × 2^32/φ, scaled to `live` (in 32 bits:
        // its top 16 bits times `live`, then their top 16 bits).
        op(BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0x9E37_79B1),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        op(BPF_ALU | BPF_MUL | BPF_K, 0, 0, live.len() as u32),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
    ];
    if identity {
        program.push(op(BPF_RET | BPF_A, 0, 0, 0));
    } else {
        // A is the rank among the live sockets: return the socket of that rank.
        let (last, rest) = live.split_last().unwrap_or((&0, &[]));
        for (rank, socket) in rest.iter().enumerate() {
            program.push(op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, rank as u32));
            program.push(op(BPF_RET | BPF_K, 0, 0, *socket));
        }
        program.push(op(BPF_RET | BPF_K, 0, 0, *last));
    }
    let fprog =
        libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: setsockopt(2) with a sock_fprog whose program outlives the call (the kernel copies it).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connections waiting in the accept queue of a listening socket.
pub fn queued(fd: &OwnedFd) -> usize {
    // SAFETY: getsockopt(2) into a tcp_info of the size given; for a listening socket the kernel
    // reports its accept queue's length as `tcpi_unacked`.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        ) != 0
        {
            return 0;
        }
        info.tcpi_unacked as usize
    }
}

/// The inode of a socket, as `/proc/net/tcp` names it.
pub fn inode(fd: &impl AsRawFd) -> Option<u64> {
    // SAFETY: fstat(2) into a zeroed struct of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
}

/// The port a listening socket is bound to.
pub fn local_port(fd: &OwnedFd) -> Option<u16> {
    let listener = std::net::TcpListener::from(fd.try_clone().ok()?);
    listener.local_addr().ok().map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn accept_all(fd: &OwnedFd) -> usize {
        let l = std::net::TcpListener::from(fd.try_clone().unwrap());
        l.set_nonblocking(true).unwrap();
        std::iter::from_fn(|| l.accept().ok()).count()
    }

    fn group_of(n: usize) -> (u16, Vec<OwnedFd>) {
        let first = bind(None, 0).unwrap();
        let port = local_port(&first).unwrap();
        let mut group = vec![first];
        group.extend((1..n).map(|_| bind(None, port).unwrap()));
        (port, group)
    }

    /// Open `n` connections one after another, wait until they are all queued, accept them, and
    /// count them per socket.
    fn spread(port: u16, group: &[OwnedFd], n: usize) -> Vec<usize> {
        let conns: Vec<TcpStream> =
            (0..n).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        wait_for_sum(group, n);
        let counts: Vec<usize> = group.iter().map(accept_all).collect();
        assert_eq!(counts.iter().sum::<usize>(), n);
        drop(conns);
        counts
    }

    #[test]
    fn a_hash_spreads_connections_over_the_live_sockets_on_average() {
        let (port, group) = group_of(4);
        steer_by_hash(&group[0], &[0, 1, 2, 3]).unwrap();
        let counts = spread(port, &group, 256);
        // 64 each on average; the clients' ports are random, so within 4 standard deviations.
        assert!(counts.iter().all(|n| (36..=92).contains(n)), "even spread: {counts:?}");
        // Two live sockets: the others get nothing.
        steer_by_hash(&group[0], &[0, 1]).unwrap();
        let counts = spread(port, &group, 32);
        assert_eq!((counts[2], counts[3]), (0, 0), "{counts:?}");
        // Any two: the others (the first one included) get nothing.
        steer_by_hash(&group[0], &[1, 3]).unwrap();
        let counts = spread(port, &group, 32);
        assert_eq!((counts[0], counts[2]), (0, 0), "{counts:?}");
        assert!(counts[1] > 0 && counts[3] > 0, "both get some: {counts:?}");
    }

    #[test]
    fn where_ebpf_loads_the_live_sockets_take_connections_in_turn() {
        let (port, group) = group_of(4);
        let how = steer(&group, &[0, 1, 2, 3]).unwrap();
        if how == Spread::Hash {
            // Only without CAP_BPF or before Linux 5.10: say which.
            let first: Vec<&OwnedFd> = group.iter().collect();
            let e = crate::process::round_robin::steer(&group[0], &first).unwrap_err();
            let code = e.raw_os_error();
            assert!(matches!(code, Some(libc::EPERM | libc::EINVAL | libc::ENOSYS)), "{e}");
            eprintln!("round-robin steering is not available here ({e}): the hash was used");
            return;
        }
        assert_eq!(spread(port, &group, 256), [64, 64, 64, 64]);
        // Steered again: the slots left out get nothing, the others exactly their turns.
        assert_eq!(steer(&group, &[1, 3]).unwrap(), Spread::RoundRobin);
        assert_eq!(spread(port, &group, 32), [0, 16, 0, 16]);
        assert_eq!(steer(&group, &[0, 1, 2]).unwrap(), Spread::RoundRobin);
        assert_eq!(spread(port, &group, 30), [10, 10, 10, 0]);
        // A socket that closes leaves the group and the program's map: the rest go on in turn.
        let mut group = group;
        group.pop();
        assert_eq!(spread(port, &group, 30), [10, 10, 10]);
    }

    fn wait_for_sum(group: &[OwnedFd], n: usize) {
        crate::wait::until(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(20),
            || (group.iter().map(queued).sum::<usize>() == n).then_some(()),
        )
        .expect("the connections queued");
    }

    #[test]
    fn a_port_held_without_reuseport_is_an_error_and_a_host_is_honoured() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let e = bind(Some("127.0.0.1"), port).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
