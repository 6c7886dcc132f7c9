//! The ports herder's apps want (`PORT`) that a process this herder does not supervise already
//! listens on: the LISTEN sockets of `/proc/net/tcp` and `tcp6`, mapped to their processes
//! through the socket inodes of `/proc/<pid>/fd`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::found::{Own, PortHolder, Wanted};
use super::procfs::{environ, same_path, Proc};

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

/// Whether `pid` is this herder's: its daemon, a descendant of it, or a process carrying its
/// `HERDER_HOME`.
fn is_own(pid: u32, procs: &[Proc], own: &Own) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if Some(at) == own.daemon_pid {
            return true;
        }
        match procs.iter().find(|p| p.pid == at) {
            Some(p) if p.ppid > 1 && p.ppid != at => at = p.ppid,
            _ => break,
        }
    }
    environ(pid)
        .and_then(|e| e.get("HERDER_HOME").cloned())
        .is_some_and(|h| same_path(Path::new(&h), &own.home))
}

/// The processes listening on the ports of `apps` that are not this herder's.
pub fn port_holders(procs: &[Proc], own: &Own, apps: &[Wanted]) -> Vec<PortHolder> {
    let wanted: BTreeSet<u16> = apps.iter().flat_map(|a| a.ports.iter().copied()).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut listeners = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            listeners.extend(parse_net_tcp(&text).into_iter().filter(|l| wanted.contains(&l.port)));
        }
    }
    if listeners.is_empty() {
        return Vec::new();
    }
    let inodes: BTreeSet<u64> = listeners.iter().map(|l| l.inode).collect();
    let owners = socket_owners(procs, &inodes);
    let mut out = Vec::new();
    for app in apps {
        for &port in &app.ports {
            // One line per holder of the port (a socket shared by a process tree counts once).
            let mut seen: Vec<Option<u32>> = Vec::new();
            for l in listeners.iter().filter(|l| l.port == port) {
                let pid = owners.get(&l.inode).copied();
                if pid.is_some_and(|p| is_own(p, procs, own)) || seen.contains(&pid) {
                    continue;
                }
                seen.push(pid);
                let command = pid.and_then(|p| procs.iter().find(|x| x.pid == p)).map(Proc::command);
                out.push(PortHolder {
                    app: app.name.clone(),
                    port,
                    address: l.address.clone(),
                    pid,
                    command,
                });
            }
        }
    }
    out
}

/// The process holding each socket inode: the lowest pid with it open (the parent, when a
/// server shares its socket with its workers).
fn socket_owners(procs: &[Proc], inodes: &BTreeSet<u64>) -> BTreeMap<u64, u32> {
    let mut owners = BTreeMap::new();
    for p in procs {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            if let Some(inode) = link.to_str().and_then(socket_inode).filter(|i| inodes.contains(i)) {
                owners.entry(inode).or_insert(p.pid);
            }
        }
        if owners.len() == inodes.len() {
            break;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::super::procfs::processes;
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
    fn this_machine_is_scanned_and_a_listener_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let procs = processes();
        assert!(procs.iter().any(|p| p.pid == std::process::id()));
        let own = Own { home: "/nonexistent-herder-home".into(), daemon_pid: None };
        let wanted =
            [Wanted { name: "web".into(), script: "x".into(), script_path: None, ports: vec![port] }];
        let holders = port_holders(&procs, &own, &wanted);
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!((holders[0].port, holders[0].pid), (port, Some(std::process::id())));
        assert_eq!(holders[0].address, "127.0.0.1");
        // Held by this herder's own process tree: not reported.
        let own = Own { home: own.home, daemon_pid: Some(std::process::id()) };
        assert!(port_holders(&procs, &own, &wanted).is_empty());
    }
}
