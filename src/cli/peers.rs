//! Other supervisors on this machine, found in `/proc`: PM2 God daemons and the apps under
//! them, supervisord, herder daemons of other `HERDER_HOME`s, and processes that already
//! listen on the ports herder's apps want. Two supervisors that run the same app restart it
//! against each other and fight over its port (the "two daemons" incident PM2 users know);
//! `herder doctor` lists them and `herder start` warns, without blocking the start.
//!
//! How each is recognised:
//! - a PM2 daemon by the title PM2 gives it, `PM2 v<version>: God Daemon (<PM2_HOME>)` (or a
//!   `node …/pm2/lib/Daemon.js` command line before it sets it); its apps are its children,
//!   named by the `name` and `pm_exec_path` PM2 exports into their environment (`pm2_env` in
//!   cluster mode);
//! - supervisord by its program name; its programs are its children, named by
//!   `SUPERVISOR_PROCESS_NAME`;
//! - a herder daemon by `herder daemon` / `herder run`, its home by `HERDER_HOME` in its
//!   environment (else the `daemon.lock` it holds open); its apps by `HERDER_APP`;
//! - a port holder from the LISTEN sockets of `/proc/net/tcp` and `tcp6`, mapped to a process
//!   through the socket inodes of `/proc/<pid>/fd`.
//!
//! A process is this herder's own when it is its daemon, descends from it, or carries its
//! `HERDER_HOME` (apps keep it across the daemon's crash recovery). Environments of other
//! users' processes are unreadable without root: what cannot be read is left out, never
//! guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::paths::Paths;
use crate::protocol::AppSpec;

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
    fn command(&self) -> String {
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

/// A PM2 daemon's title: `PM2 v7.0.4: God Daemon (/root/.pm2)` gives the version and the
/// `PM2_HOME`. A daemon that has not set its title yet runs `node …/pm2/lib/Daemon.js`.
pub fn pm2_daemon(argv: &[String]) -> Option<(Option<String>, Option<PathBuf>)> {
    let title = argv.join(" ");
    let title = title.trim();
    if let Some(rest) = title.strip_prefix("PM2 v") {
        let (version, rest) = rest.split_once(':')?;
        let rest = rest.trim();
        if !rest.starts_with("God Daemon") {
            return None;
        }
        let home = rest
            .strip_prefix("God Daemon")
            .map(str::trim)
            .and_then(|h| h.strip_prefix('('))
            .and_then(|h| h.strip_suffix(')'))
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        return Some((Some(version.to_string()), home));
    }
    let node = argv.first().is_some_and(|a| base(a).starts_with("node"));
    (node && argv.iter().any(|a| a.ends_with("/pm2/lib/Daemon.js"))).then_some((None, None))
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// supervisord, run directly or by a Python interpreter; its config file (`-c`) if given.
pub fn supervisord(argv: &[String]) -> Option<Option<String>> {
    let at = argv.iter().take(2).position(|a| base(a) == "supervisord")?;
    if at == 1 && !base(&argv[0]).starts_with("python") {
        return None;
    }
    let args = &argv[at + 1..];
    let config = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-c" | "--configuration" => args.get(i + 1).cloned(),
        _ => a
            .strip_prefix("--configuration=")
            .or_else(|| a.strip_prefix("-c"))
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    });
    Some(config)
}

/// A herder daemon: `herder daemon`, or `herder run` (the daemon in the foreground).
pub fn herder_daemon(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| base(a) == "herder")
        && matches!(argv.get(1).map(String::as_str), Some("daemon" | "run"))
}

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

/// An app under another supervisor.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerApp {
    pub pid: u32,
    /// Its name under that supervisor, when its environment says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The script it runs (PM2's `pm_exec_path`), when its environment says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    pub command: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pm2Daemon {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its `PM2_HOME`, from its title or environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
    pub apps: Vec<PeerApp>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Supervisord {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    pub apps: Vec<PeerApp>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HerderDaemon {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
    pub apps: Vec<PeerApp>,
}

/// A port one of herder's apps wants, held by a process this herder does not supervise.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortHolder {
    pub app: String,
    pub port: u16,
    pub address: String,
    /// The holder; `None` when its process cannot be seen (another user's, without root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// An app of another supervisor that is also one of herder's.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Clash {
    /// herder's app.
    pub app: String,
    /// Which supervisor: `the PM2 daemon pid 12 (PM2_HOME /root/.pm2)` …
    pub supervisor: String,
    /// The app's name under that supervisor, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its processes (one per instance).
    pub pids: Vec<u32>,
    /// The first one's command line.
    pub command: String,
    /// `name`, `script`, or both.
    pub by: &'static str,
    /// How to stop the other copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What `doctor` reports and `start` warns about.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Peers {
    pub pm2: Vec<Pm2Daemon>,
    pub supervisord: Vec<Supervisord>,
    /// herder daemons of other homes.
    pub herder: Vec<HerderDaemon>,
    pub ports: Vec<PortHolder>,
    pub clashes: Vec<Clash>,
    pub warnings: Vec<String>,
}

/// This herder: its home, and its daemon's pid when one runs.
#[derive(Debug, Clone)]
pub struct Own {
    pub home: PathBuf,
    pub daemon_pid: Option<u32>,
}

impl Own {
    /// From the home's `daemon.pid`, if that process is alive.
    pub fn of(paths: &Paths) -> Own {
        let daemon_pid = std::fs::read_to_string(paths.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
        Own { home: paths.home.clone(), daemon_pid }
    }
}

/// What one of herder's apps is: its name, the script file it runs (absolute) or its command
/// string, and its ports.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    pub script: String,
    pub script_path: Option<String>,
    pub ports: Vec<u16>,
}

impl Wanted {
    pub fn of(spec: &AppSpec) -> Wanted {
        let script_path = (!spec.script.contains(char::is_whitespace))
            .then(|| spec.cwd.join(&spec.script))
            .filter(|p| p.is_file())
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p).display().to_string());
        // `PORT`, and one port per instance when the instances count it up.
        let mut ports = Vec::new();
        if let Some(port) = spec.env.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()) {
            let n = if spec.increment_var.as_deref() == Some("PORT") { spec.instances.max(1) } else { 1 };
            ports.extend((0..n).filter_map(|i| port.checked_add(u16::try_from(i).ok()?)));
        }
        Wanted { name: spec.name.clone(), script: spec.script.clone(), script_path, ports }
    }

    /// Whether `app` runs this script: its recorded script or any of its arguments is the file
    /// (or, for a command string, the command PM2 passed to `bash -c`).
    fn same_script(&self, app: &PeerApp, argv: &[String]) -> bool {
        let file = self.script_path.as_deref();
        let canonical = |s: &str| {
            std::fs::canonicalize(s).map(|p| p.display().to_string()).unwrap_or_else(|_| s.to_string())
        };
        match file {
            Some(f) => {
                app.script.as_deref().is_some_and(|s| s == f || canonical(s) == f)
                    || argv
                        .iter()
                        .any(|a| a == f || (a.starts_with('/') && a.ends_with(base(f)) && canonical(a) == f))
            }
            // A command string: the whole command line, or what PM2 passed to `bash -c`.
            None => argv.join(" ") == self.script || argv.iter().skip(1).any(|a| *a == self.script),
        }
    }
}

/// Reads the machine: everything of [`Peers`] for herder's `apps`.
pub fn scan(own: &Own, apps: &[Wanted]) -> Peers {
    let procs = processes();
    let mut peers = find(&procs, &environ, own, apps);
    peers.ports = port_holders(&procs, own, apps);
    peers
}

/// The supervisors among `procs`, with `env` to read environments, and what they share with
/// `apps`; no port lookup.
pub fn find(
    procs: &[Proc],
    env: &dyn Fn(u32) -> Option<BTreeMap<String, String>>,
    own: &Own,
    apps: &[Wanted],
) -> Peers {
    let mut peers = Peers::default();
    let children = |pid: u32| procs.iter().filter(move |p| p.ppid == pid);
    for p in procs {
        if let Some((version, title_home)) = pm2_daemon(&p.argv) {
            let home = title_home.or_else(|| {
                let e = env(p.pid)?;
                e.get("PM2_HOME")
                    .map(PathBuf::from)
                    .or_else(|| e.get("HOME").map(|h| Path::new(h).join(".pm2")))
            });
            let mut daemon = Pm2Daemon { pid: p.pid, version, home, apps: Vec::new() };
            for c in children(p.pid) {
                let e = env(c.pid).unwrap_or_default();
                // Fork mode exports the process record's fields; cluster mode passes it as JSON.
                let record = e.get("pm2_env").and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
                let field = |k: &str| {
                    e.get(k).cloned().or_else(|| record.as_ref()?.get(k)?.as_str().map(str::to_string))
                };
                let app = PeerApp {
                    pid: c.pid,
                    name: field("name"),
                    script: field("pm_exec_path"),
                    command: c.command(),
                };
                let who =
                    format!("the PM2 daemon pid {}{}", p.pid, in_home("PM2_HOME", daemon.home.as_deref()));
                let hint = app.name.as_ref().map(|n| match daemon.home.as_deref() {
                    Some(h) if !is_default_pm2_home(h, &e) => {
                        format!("PM2_HOME={} pm2 delete {n}", h.display())
                    }
                    _ => format!("pm2 delete {n}"),
                });
                clashes(&mut peers.clashes, apps, &app, &c.argv, &who, true, hint);
                daemon.apps.push(app);
            }
            peers.pm2.push(daemon);
        } else if let Some(config) = supervisord(&p.argv) {
            let mut daemon = Supervisord { pid: p.pid, config, apps: Vec::new() };
            for c in children(p.pid) {
                let e = env(c.pid).unwrap_or_default();
                let name = e.get("SUPERVISOR_PROCESS_NAME").cloned();
                let app = PeerApp { pid: c.pid, name: name.clone(), script: None, command: c.command() };
                let hint = name.map(|n| format!("supervisorctl stop {n}"));
                clashes(
                    &mut peers.clashes,
                    apps,
                    &app,
                    &c.argv,
                    &format!("supervisord pid {}", p.pid),
                    true,
                    hint,
                );
                daemon.apps.push(app);
            }
            peers.supervisord.push(daemon);
        } else if herder_daemon(&p.argv) && Some(p.pid) != own.daemon_pid {
            let home = herder_home(p.pid, env);
            if home.as_deref().is_some_and(|h| same_path(h, &own.home)) {
                continue;
            }
            let mut daemon = HerderDaemon { pid: p.pid, home, apps: Vec::new() };
            for c in children(p.pid) {
                let e = env(c.pid).unwrap_or_default();
                let app = PeerApp {
                    pid: c.pid,
                    name: e.get("HERDER_APP").cloned(),
                    script: None,
                    command: c.command(),
                };
                let who = format!(
                    "the herder daemon pid {}{}",
                    p.pid,
                    in_home("HERDER_HOME", daemon.home.as_deref())
                );
                let hint = app.name.as_ref().map(|n| match daemon.home.as_deref() {
                    Some(h) => format!("HERDER_HOME={} herder delete {n}", h.display()),
                    None => format!("herder delete {n}"),
                });
                // Other homes may well run an app of the same name (staging beside production):
                // only the same script is worth a warning.
                clashes(&mut peers.clashes, apps, &app, &c.argv, &who, false, hint);
                daemon.apps.push(app);
            }
            peers.herder.push(daemon);
        }
    }
    if peers.pm2.len() >= 2 {
        let list: Vec<String> = peers
            .pm2
            .iter()
            .map(|d| match &d.home {
                Some(h) => format!("pid {} for {}", d.pid, h.display()),
                None => format!("pid {}", d.pid),
            })
            .collect();
        let both = if peers.pm2.len() == 2 { "both" } else { "they" };
        peers.warnings.push(format!(
            "{} PM2 daemons run ({}): {both} may manage the same apps; keep one (`PM2_HOME=<home> pm2 kill` stops a daemon and its apps)",
            count_word(peers.pm2.len()),
            list.join(", ")
        ));
    }
    peers
}

/// ` (PM2_HOME /x)` when the home is known.
fn in_home(var: &str, home: Option<&Path>) -> String {
    home.map_or_else(String::new, |h| format!(" ({var} {})", h.display()))
}

/// Whether `home` is what `pm2` finds without `PM2_HOME` (`~/.pm2` of the app's user).
fn is_default_pm2_home(home: &Path, env: &BTreeMap<String, String>) -> bool {
    env.get("HOME").is_some_and(|h| Path::new(h).join(".pm2") == home)
}

fn count_word(n: usize) -> String {
    const WORDS: [&str; 10] = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    WORDS.get(n).map_or_else(|| n.to_string(), |w| w.to_string())
}

/// Records where `app` (of `supervisor`) is one of `apps`: by name (when `by_name`) or by
/// script. The instances of one app make one clash; an app that another supervisor runs
/// under its own name is not also reported for that supervisor's other apps of the same script.
fn clashes(
    out: &mut Vec<Clash>,
    apps: &[Wanted],
    app: &PeerApp,
    argv: &[String],
    supervisor: &str,
    by_name: bool,
    hint: Option<String>,
) {
    for w in apps {
        let name = by_name && app.name.as_deref() == Some(w.name.as_str());
        let script = w.same_script(app, argv);
        let by = match (name, script) {
            (true, true) => "name and script",
            (true, false) => "name",
            (false, true) => "script",
            (false, false) => continue,
        };
        let same = |c: &Clash| c.app == w.name && c.supervisor == supervisor;
        if let Some(c) = out.iter_mut().find(|c| same(c) && c.name == app.name && c.by == by) {
            c.pids.push(app.pid);
            continue;
        }
        if name {
            // The app under its own name says it all.
            out.retain(|c| !(same(c) && c.by == "script"));
        } else if out.iter().any(|c| same(c) && c.by != "script") {
            continue;
        }
        out.push(Clash {
            app: w.name.clone(),
            supervisor: supervisor.to_string(),
            name: app.name.clone(),
            pids: vec![app.pid],
            command: app.command.clone(),
            by,
            hint: hint.clone(),
        });
    }
}

impl Clash {
    /// `pid 12` or `pids 12, 13`, with the name it has there when it differs.
    fn processes(&self) -> String {
        let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
        let pids =
            if pids.len() == 1 { format!("pid {}", pids[0]) } else { format!("pids {}", pids.join(", ")) };
        match &self.name {
            Some(n) if *n != self.app => format!("`{n}`, {pids}"),
            _ => pids,
        }
    }
}

/// A herder daemon's home: `HERDER_HOME` in its environment (the client sets it when it
/// spawns one), else the `daemon.lock` it holds open.
fn herder_home(pid: u32, env: &dyn Fn(u32) -> Option<BTreeMap<String, String>>) -> Option<PathBuf> {
    if let Some(h) = env(pid).and_then(|e| e.get("HERDER_HOME").cloned()).filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten().find_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?;
        (target.file_name()? == "daemon.lock").then(|| target.parent().map(Path::to_path_buf)).flatten()
    })
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
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
fn port_holders(procs: &[Proc], own: &Own, apps: &[Wanted]) -> Vec<PortHolder> {
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

impl Peers {
    /// Nothing to report.
    pub fn is_empty(&self) -> bool {
        self.pm2.is_empty() && self.supervisord.is_empty() && self.herder.is_empty() && self.ports.is_empty()
    }

    /// One line for `doctor`'s check.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let apps = |n: usize| if n == 1 { "1 app process".to_string() } else { format!("{n} app processes") };
        for d in &self.pm2 {
            parts.push(format!(
                "PM2 daemon pid {}{}, {}",
                d.pid,
                in_home("PM2_HOME", d.home.as_deref()),
                apps(d.apps.len())
            ));
        }
        for d in &self.supervisord {
            parts.push(format!("supervisord pid {}, {}", d.pid, apps(d.apps.len())));
        }
        for d in &self.herder {
            parts.push(format!(
                "herder daemon pid {}{}, {}",
                d.pid,
                in_home("HERDER_HOME", d.home.as_deref()),
                apps(d.apps.len())
            ));
        }
        for p in &self.ports {
            parts.push(format!("port {} of `{}` held by {}", p.port, p.app, holder(p)));
        }
        if parts.is_empty() {
            return "none: no PM2 daemon, supervisord or other herder daemon runs, and no port of herder's apps is held elsewhere"
                .to_string();
        }
        parts.join("; ")
    }

    /// The section of `doctor`'s text: each supervisor with its apps, then what clashes.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let app_line = |s: &mut String, a: &PeerApp| {
            let name = a.name.as_ref().map_or_else(String::new, |n| format!("`{n}` "));
            s.push_str(&format!("      pid {:<8} {name}{}\n", a.pid, a.command));
        };
        for d in &self.pm2 {
            let version = d.version.as_ref().map_or_else(String::new, |v| format!(" {v}"));
            s.push_str(&format!(
                "  PM2{version} daemon, pid {}{}\n",
                d.pid,
                in_home("PM2_HOME", d.home.as_deref())
            ));
            d.apps.iter().for_each(|a| app_line(&mut s, a));
        }
        for d in &self.supervisord {
            let config = d.config.as_ref().map_or_else(String::new, |c| format!(" (config {c})"));
            s.push_str(&format!("  supervisord, pid {}{config}\n", d.pid));
            d.apps.iter().for_each(|a| app_line(&mut s, a));
        }
        for d in &self.herder {
            s.push_str(&format!(
                "  herder daemon, pid {}{}\n",
                d.pid,
                in_home("HERDER_HOME", d.home.as_deref())
            ));
            d.apps.iter().for_each(|a| app_line(&mut s, a));
        }
        for p in &self.ports {
            s.push_str(&format!(
                "  port {} ({}) of `{}` is held by {}\n",
                p.port,
                p.address,
                p.app,
                holder(p)
            ));
        }
        for c in &self.clashes {
            s.push_str(&format!(
                "  warning: herder's `{}` also runs under {} as {} (`{}`, same {})\n",
                c.app,
                c.supervisor,
                c.processes(),
                c.command,
                c.by
            ));
        }
        for w in &self.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        s
    }

    /// The warnings `herder start` prints: clashes and held ports, one per line with a hint.
    pub fn start_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.clashes {
            let mut w = format!(
                "warning: `{}` also runs under {} as {} (`{}`, same {}): two supervisors would restart it against each other",
                c.app,
                c.supervisor,
                c.processes(),
                c.command,
                c.by
            );
            if let Some(h) = &c.hint {
                w.push_str(&format!("\n  hint: once herder runs it, stop the other copy: `{h}`"));
            }
            out.push(w);
        }
        for p in &self.ports {
            out.push(format!(
                "warning: port {} that `{}` wants is already held by {}, which this herder does not supervise\n  hint: `herder doctor` lists the other supervisors on this machine",
                p.port,
                p.app,
                holder(p)
            ));
        }
        out
    }
}

fn holder(p: &PortHolder) -> String {
    match (p.pid, &p.command) {
        (Some(pid), Some(c)) => format!("pid {pid} (`{c}`)"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process this user cannot see".to_string(),
    }
}

/// Before `herder start`: warn (on stderr) about other supervisors running the same apps and
/// about ports already held elsewhere. Never fails the start.
pub fn warn_before_start(paths: &Paths, specs: &[AppSpec]) {
    let apps: Vec<Wanted> = specs.iter().map(Wanted::of).collect();
    for w in scan(&Own::of(paths), &apps).start_warnings() {
        eprintln!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

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

    #[test]
    fn pm2_daemon_titles() {
        let title = |s: &str| vec![s.to_string()];
        assert_eq!(
            pm2_daemon(&title("PM2 v7.0.4: God Daemon (/root/.pm2)")),
            Some((Some("7.0.4".into()), Some(PathBuf::from("/root/.pm2"))))
        );
        assert_eq!(
            pm2_daemon(&title("PM2 v5.3.0: God Daemon (/home/my user/.pm2)")),
            Some((Some("5.3.0".into()), Some(PathBuf::from("/home/my user/.pm2"))))
        );
        assert_eq!(pm2_daemon(&argv("node /usr/lib/node_modules/pm2/lib/Daemon.js")), Some((None, None)));
        assert_eq!(pm2_daemon(&title("PM2 v7.0.4: some app")), None);
        assert_eq!(pm2_daemon(&argv("node /srv/app.js")), None);
        assert_eq!(pm2_daemon(&[]), None);
    }

    #[test]
    fn supervisord_and_herder_command_lines() {
        assert_eq!(
            supervisord(&argv("/usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf")),
            Some(Some("/etc/supervisor/supervisord.conf".into()))
        );
        assert_eq!(
            supervisord(&argv("/usr/bin/python3 /usr/bin/supervisord --configuration=/x.conf")),
            Some(Some("/x.conf".into()))
        );
        assert_eq!(supervisord(&argv("supervisord")), Some(None));
        assert_eq!(supervisord(&argv("/usr/bin/vim supervisord")), None);
        assert_eq!(supervisord(&argv("/usr/bin/supervisorctl status")), None);
        assert!(herder_daemon(&argv("/usr/local/bin/herder daemon")));
        assert!(herder_daemon(&argv("herder run herder.toml")));
        assert!(!herder_daemon(&argv("herder doctor")));
        assert!(!herder_daemon(&argv("/usr/bin/herdern daemon")));
    }

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

    fn proc(pid: u32, ppid: u32, cmd: &str) -> Proc {
        Proc {
            pid,
            ppid,
            comm: String::new(),
            argv: if cmd.starts_with("PM2 ") { vec![cmd.into()] } else { argv(cmd) },
        }
    }

    #[test]
    fn pm2_daemons_their_apps_and_what_they_share_with_herder() {
        let procs = vec![
            proc(1, 0, "/sbin/init"),
            proc(100, 1, "PM2 v7.0.4: God Daemon (/root/.pm2)"),
            proc(101, 100, "node /srv/shop/server.js"),
            proc(102, 100, "/usr/bin/python3 /srv/shop/worker.py one"),
            proc(103, 100, "node /srv/shop/server.js"),
            proc(104, 100, "node /srv/shop/server.js"),
            proc(200, 1, "PM2 v6.0.14: God Daemon (/tmp/other)"),
            proc(300, 1, "/usr/bin/python3 /usr/bin/supervisord -n"),
            proc(301, 300, "/srv/jobs/run --fast"),
            proc(400, 1, "/usr/local/bin/herder daemon"),
            proc(401, 400, "node /srv/shop/server.js"),
            proc(500, 1, "/usr/local/bin/herder daemon"),
        ];
        let env = |pid: u32| -> Option<BTreeMap<String, String>> {
            let pairs: &[(&str, &str)] = match pid {
                101 | 103 => &[
                    ("pm2_env", r#"{"name":"web","pm_exec_path":"/srv/shop/server.js"}"#),
                    ("HOME", "/root"),
                ],
                104 => &[("name", "api"), ("pm_exec_path", "/srv/shop/server.js")],
                102 => &[("name", "worker"), ("pm_exec_path", "/srv/shop/worker.py"), ("HOME", "/root")],
                301 => &[("SUPERVISOR_PROCESS_NAME", "jobs")],
                400 => &[("HERDER_HOME", "/srv/other-herder")],
                401 => &[("HERDER_APP", "site")],
                500 => &[("HERDER_HOME", "/home/me/.herder")],
                _ => return None,
            };
            Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let own = Own { home: "/home/me/.herder".into(), daemon_pid: None };
        let wanted = [
            Wanted {
                name: "web".into(),
                script: "x".into(),
                script_path: Some("/srv/elsewhere/web.js".into()),
                ports: vec![],
            },
            Wanted {
                name: "api".into(),
                script: "x".into(),
                script_path: Some("/srv/shop/server.js".into()),
                ports: vec![],
            },
            Wanted {
                name: "jobs".into(),
                script: "/srv/jobs/run --fast".into(),
                script_path: None,
                ports: vec![],
            },
        ];
        let peers = find(&procs, &env, &own, &wanted);

        assert_eq!(peers.pm2.len(), 2);
        let first = &peers.pm2[0];
        assert_eq!(
            (first.pid, first.version.as_deref(), first.home.as_deref()),
            (100, Some("7.0.4"), Some(Path::new("/root/.pm2")))
        );
        assert_eq!(first.apps.len(), 4);
        assert_eq!(
            first.apps[..2],
            [
                PeerApp {
                    pid: 101,
                    name: Some("web".into()),
                    script: Some("/srv/shop/server.js".into()),
                    command: "node /srv/shop/server.js".into()
                },
                PeerApp {
                    pid: 102,
                    name: Some("worker".into()),
                    script: Some("/srv/shop/worker.py".into()),
                    command: "/usr/bin/python3 /srv/shop/worker.py one".into()
                },
            ]
        );
        assert!(peers.pm2[1].apps.is_empty());
        assert_eq!(peers.supervisord[0].apps[0].name.as_deref(), Some("jobs"));
        // The daemon of this home is not another herder.
        assert_eq!(peers.herder.len(), 1);
        assert_eq!(peers.herder[0].home.as_deref(), Some(Path::new("/srv/other-herder")));

        let clashes: Vec<(&str, &[u32], &str)> =
            peers.clashes.iter().map(|c| (c.app.as_str(), c.pids.as_slice(), c.by)).collect();
        assert_eq!(
            clashes,
            [("web", &[101, 103][..], "name"), ("api", &[104], "name and script"), ("jobs", &[301], "name and script"), ("api", &[401], "script")],
            "instances are one clash; PM2's `api` says more than its `web` of the same script; another herder's `site` runs the same script as `api`"
        );
        assert_eq!(
            peers.clashes[0].hint.as_deref(),
            Some("pm2 delete web"),
            "the default PM2_HOME needs no variable"
        );
        assert_eq!(
            peers.clashes[3].hint.as_deref(),
            Some("HERDER_HOME=/srv/other-herder herder delete site")
        );
        assert_eq!(peers.warnings.len(), 1);
        let w = &peers.warnings[0];
        assert!(w.starts_with("two PM2 daemons run (pid 100 for /root/.pm2, pid 200 for /tmp/other): both may manage the same apps"), "{w}");

        let text = peers.text();
        assert!(text.contains("PM2 7.0.4 daemon, pid 100 (PM2_HOME /root/.pm2)"), "{text}");
        assert!(text.contains("pid 101      `web` node /srv/shop/server.js"), "{text}");
        let start = peers.start_warnings();
        assert!(
            start[0].contains(
                "`web` also runs under the PM2 daemon pid 100 (PM2_HOME /root/.pm2) as pids 101, 103"
            ),
            "{start:?}"
        );
        assert!(start[3].contains("`api` also runs under the herder daemon pid 400 (HERDER_HOME /srv/other-herder) as `site`, pid 401"), "{start:?}");
        assert!(
            start[0].contains("hint: once herder runs it, stop the other copy: `pm2 delete web`"),
            "{start:?}"
        );
        assert!(
            peers
                .summary()
                .starts_with("PM2 daemon pid 100 (PM2_HOME /root/.pm2), 4 app processes; PM2 daemon pid 200"),
            "{}",
            peers.summary()
        );
    }

    #[test]
    fn one_pm2_daemon_is_no_warning_and_nothing_is_an_empty_report() {
        let procs = vec![proc(100, 1, "PM2 v7.0.4: God Daemon (/root/.pm2)")];
        let own = Own { home: "/h".into(), daemon_pid: None };
        let peers = find(&procs, &|_| None, &own, &[]);
        assert!(peers.warnings.is_empty() && peers.clashes.is_empty());
        let nothing = find(&[proc(5, 1, "sleep 9")], &|_| None, &own, &[]);
        assert!(nothing.is_empty());
        assert!(nothing.summary().starts_with("none"));
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
