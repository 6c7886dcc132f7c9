//! Listening TCP sockets as `/proc/net/tcp` and `tcp6` show them, and the process that holds
//! one: for the error of an app whose port is taken, and for `doctor`'s report of the ports
//! herder's apps want.

use std::net::{Ipv4Addr, Ipv6Addr};

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
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        inodes.extend(parse_net_tcp(&text).into_iter().filter(|l| l.port == port).map(|l| l.inode));
    }
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
}
