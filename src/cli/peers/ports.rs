//! The ports herder's apps want (`PORT`) that a process this herder does not supervise already
//! listens on: the LISTEN sockets of `/proc/net/tcp` and `tcp6`, mapped to their processes
//! through the socket inodes of `/proc/<pid>/fd`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::found::{Own, PortHolder, Wanted};
use super::procfs::{environ, same_path, Proc};
use crate::process::ports::{parse_net_tcp, socket_inode};

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
