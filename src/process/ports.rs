//! Listening TCP sockets as `/proc/net/tcp` and `tcp6` show them, and the process that holds
//! one: for the error of an app whose port is taken, and for `doctor`'s report of the ports
//! herder's apps want.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The inode of a `/proc/<pid>/fd/<n>` link to a socket (`socket:[12345]`).
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: String,
    pub port: u16,
    pub inode: u64,
}

/// The LISTEN sockets (state `0A`) of a `/proc/net/tcp` or `/proc/net/tcp6` text. Addresses
/// are the kernel's words in this machine's byte order.
pub fn parse_net_tcp(text: &str) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = fields[1].split_once(':') else { continue };
        let (Ok(port), Ok(inode)) = (u16::from_str_radix(port, 16), fields[9].parse::<u64>()) else {
            continue;
        };
        let address = match addr.len() {
            8 => match u32::from_str_radix(addr, 16) {
                Ok(w) => Ipv4Addr::from(w.to_ne_bytes()).to_string(),
                Err(_) => continue,
            },
            32 => {
                let mut bytes = [0u8; 16];
                let mut ok = true;
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    match u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16) {
                        Ok(w) => chunk.copy_from_slice(&w.to_ne_bytes()),
                        Err(_) => ok = false,
                    }
                }
                if !ok {
                    continue;
                }
                format!("[{}]", Ipv6Addr::from(bytes))
            }
            _ => continue,
        };
        if inode != 0 {
            out.push(Listener { address, port, inode });
        }
    }
    out
}

/// The process listening on TCP `port` (any address), as `/proc` shows it: its pid and command
/// line. `None` when no socket listens there or its holder is not visible (another user's,
/// without the rights).
pub fn holder_of(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<u64> = listeners().into_iter().filter(|l| l.port == port).map(|l| l.inode).collect();
    holder_of_inodes(&inodes)
}

/// The process listening on TCP `port` at an address that keeps a socket from being bound to
/// `host` (every address, IPv6 and IPv4, when `None`) on that port, as the kernel decides:
/// [`conflict`]. Sockets whose inode is in `own` do not count (the app's own, being replaced).
/// A `host` that is no IP address counts every listener on the port.
pub fn holder_conflicting(host: Option<&str>, port: u16, own: &[u64]) -> Option<(u32, String)> {
    let wanted = match host.map(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()) {
        None | Some(Err(_)) => None,
        Some(Ok(ip)) => Some(ip),
    };
    let mut inodes = Vec::new();
    // A v4 address against `::` whose holder may or may not take IPv4 too: the kernel says.
    let mut dual_stack_maybe = Vec::new();
    for l in listeners() {
        if l.port != port || own.contains(&l.inode) {
            continue;
        }
        let Some(held) = l.ip() else {
            inodes.push(l.inode);
            continue;
        };
        match conflict(wanted, held) {
            Conflict::Yes => inodes.push(l.inode),
            Conflict::IfDualStack => dual_stack_maybe.push(l.inode),
            Conflict::No => {}
        }
    }
    if inodes.is_empty() && !dual_stack_maybe.is_empty() {
        if let Some(IpAddr::V4(v4)) = wanted {
            // No SO_REUSEPORT: the bind fails exactly when a listener takes this address.
            let probe = std::net::TcpListener::bind((v4, port));
            if probe.is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse) {
                inodes = dual_stack_maybe;
            }
        }
    }
    holder_of_inodes(&inodes)
}

/// Whether a listener on `held` keeps a socket from binding `wanted` (`None`: every address,
/// on one socket for IPv6 and IPv4) on the same port. A wildcard (`0.0.0.0`, `::`) takes every
/// address of its family, and `::` IPv4's too unless it is IPv6-only, which `/proc` does not
/// show; an address given takes only itself. herder binds an IPv6 address given as IPv6-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Yes,
    No,
    /// When the holder on `::` also takes IPv4 (not IPv6-only).
    IfDualStack,
}

pub fn conflict(wanted: Option<IpAddr>, held: IpAddr) -> Conflict {
    let same_or_wild = |a: IpAddr, b: IpAddr| a == b || a.is_unspecified() || b.is_unspecified();
    let yes = |c: bool| if c { Conflict::Yes } else { Conflict::No };
    let held = held.to_canonical();
    match (wanted.map(|w| w.to_canonical()), held) {
        (None, _) => Conflict::Yes,
        (Some(w @ IpAddr::V4(_)), IpAddr::V4(_)) => yes(same_or_wild(w, held)),
        (Some(IpAddr::V4(_)), IpAddr::V6(h)) if h.is_unspecified() => Conflict::IfDualStack,
        (Some(IpAddr::V4(_)), IpAddr::V6(_)) => Conflict::No,
        (Some(IpAddr::V6(_)), IpAddr::V4(_)) => Conflict::No,
        (Some(w @ IpAddr::V6(_)), IpAddr::V6(_)) => yes(same_or_wild(w, held)),
    }
}

/// Every listening TCP socket of the machine (IPv4 and IPv6).
fn listeners() -> Vec<Listener> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        out.extend(parse_net_tcp(&std::fs::read_to_string(table).unwrap_or_default()));
    }
    out
}

impl Listener {
    /// Its address as an IP address.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.trim_start_matches('[').trim_end_matches(']').parse().ok()
    }
}

/// The first process (by pid) that holds a socket of `inodes`: its pid and command line.
fn holder_of_inodes(inodes: &[u64]) -> Option<(u32, String)> {
    if inodes.is_empty() {
        return None;
    }
    let mut pids: Vec<u32> =
        std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            if link.to_str().and_then(socket_inode).is_some_and(|i| inodes.contains(&i)) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let words: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                return Some((pid, words.join(" ")));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_of_tcp_and_tcp6() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 51300 1 0000000000000000 20 4 30 10 -1
   3: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0
";
        let l = parse_net_tcp(tcp);
        // On a little-endian machine (as every Linux herder runs on today).
        #[cfg(target_endian = "little")]
        assert_eq!(
            l,
            [
                Listener { address: "127.0.0.1".into(), port: 8080, inode: 51234 },
                Listener { address: "0.0.0.0".into(), port: 22, inode: 999 },
            ],
            "the established socket and the one without an inode are not listeners"
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7778 1 0000000000000000 100 0 0 10 0
";
        let l = parse_net_tcp(tcp6);
        #[cfg(target_endian = "little")]
        assert_eq!(
            l,
            [
                Listener { address: "[::]".into(), port: 3000, inode: 7777 },
                Listener { address: "[::1]".into(), port: 8081, inode: 7778 },
            ]
        );
        assert!(parse_net_tcp("header only\n   0: zz:zz\n").is_empty());
        assert_eq!(socket_inode("socket:[51234]"), Some(51234));
        assert_eq!(socket_inode("pipe:[51234]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn the_holder_of_a_port_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (pid, _) = holder_of(port).expect("found");
        assert_eq!(pid, std::process::id());
        drop(listener);
        assert_eq!(holder_of(port), None);
    }

    #[test]
    fn addresses_conflict_as_the_kernel_decides() {
        use Conflict::*;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            // (wanted, held, conflict)
            (None, "127.0.0.1", Yes),
            (None, "::1", Yes),
            (Some("127.0.0.2"), "127.0.0.1", No),
            (Some("127.0.0.1"), "127.0.0.1", Yes),
            (Some("127.0.0.1"), "0.0.0.0", Yes),
            (Some("0.0.0.0"), "127.0.0.1", Yes),
            (Some("127.0.0.1"), "::1", No),
            (Some("127.0.0.1"), "::", IfDualStack),
            (Some("127.0.0.1"), "::ffff:127.0.0.1", Yes),
            (Some("127.0.0.2"), "::ffff:127.0.0.1", No),
            (Some("::1"), "127.0.0.1", No),
            (Some("::1"), "0.0.0.0", No),
            (Some("::1"), "::1", Yes),
            (Some("::1"), "::", Yes),
            (Some("::"), "::1", Yes),
            (Some("::2"), "::1", No),
        ];
        for (wanted, held, expected) in cases {
            assert_eq!(conflict(wanted.map(ip), ip(held)), expected, "{wanted:?} against {held}");
        }
    }

    #[test]
    fn the_holder_of_an_address_is_found_only_where_the_address_conflicts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        assert_eq!(holder_conflicting(Some("127.0.0.1"), port, &[]).map(|h| h.0), Some(me));
        assert_eq!(holder_conflicting(None, port, &[]).map(|h| h.0), Some(me));
        assert_eq!(holder_conflicting(Some("0.0.0.0"), port, &[]).map(|h| h.0), Some(me));
        assert_eq!(holder_conflicting(Some("127.0.0.2"), port, &[]), None);
        assert_eq!(holder_conflicting(Some("::1"), port, &[]), None);
        let inode = listeners().into_iter().find(|l| l.port == port).unwrap().inode;
        assert_eq!(holder_conflicting(Some("127.0.0.1"), port, &[inode]), None, "its own socket");
    }
}
