//! This machine's processes as `/proc` shows them: pid, parent, name, command line and (when
//! this user may read it) environment.

use std::collections::BTreeMap;
use std::path::Path;

/// One process, as `/proc/<pid>/stat` and `cmdline` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

impl Proc {
    /// The command line for display, cut at 160 characters.
    pub fn command(&self) -> String {
        let line = if self.argv.is_empty() { format!("[{}]", self.comm) } else { self.argv.join(" ") };
        let line = line.trim().to_string();
        match line.char_indices().nth(160) {
            Some((i, _)) => format!("{}…", &line[..i]),
            None => line,
        }
    }
}

/// `comm` and parent pid from the text of `/proc/<pid>/stat`. The name is in parentheses and
/// may itself hold spaces and `)`, so the fields start after the last `)`.
pub fn parse_stat(text: &str) -> Option<(String, char, u32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// NUL-separated strings (`cmdline`, `environ`); empty ones (PM2 pads its title) are dropped.
pub fn parse_nul_list(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// `/proc/<pid>/environ` as a map.
pub fn parse_environ(bytes: &[u8]) -> BTreeMap<String, String> {
    parse_nul_list(bytes)
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// Every process of `/proc` (those that vanish while read are skipped).
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((comm, state, ppid)) = parse_stat(&stat) else { continue };
        if state == 'Z' {
            continue;
        }
        let argv =
            std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| parse_nul_list(&b)).unwrap_or_default();
        out.push(Proc { pid, ppid, comm, argv });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The environment of `pid`, when this user may read it.
pub fn environ(pid: u32) -> Option<BTreeMap<String, String>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok().map(|b| parse_environ(&b))
}

pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_and_parentheses_in_the_name() {
        assert_eq!(parse_stat("42 (node) S 7 42 42 0 -1"), Some(("node".into(), 'S', 7)));
        assert_eq!(
            parse_stat("6680 (PM2 v6.0.14: Go) S 1 6679 6679 0 -1 4194560"),
            Some(("PM2 v6.0.14: Go".into(), 'S', 1))
        );
        assert_eq!(parse_stat("9 (a) b)) Z 3 9"), Some(("a) b)".into(), 'Z', 3)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn nul_lists_and_environments() {
        // PM2 overwrites its argv with its title and pads the rest with NULs.
        let title = b"PM2 v7.0.4: God Daemon (/root/.pm2)\0\0\0\0\0\0";
        assert_eq!(parse_nul_list(title), ["PM2 v7.0.4: God Daemon (/root/.pm2)"]);
        let env = parse_environ(b"name=web\0pm_exec_path=/srv/a.js\0EMPTY=\0A=b=c\0junk\0");
        assert_eq!(env.get("name").map(String::as_str), Some("web"));
        assert_eq!(env.get("EMPTY").map(String::as_str), Some(""));
        assert_eq!(env.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(env.len(), 4);
    }
}
