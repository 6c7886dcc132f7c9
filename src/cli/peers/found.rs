//! What a scan finds: other supervisors with their apps, ports held elsewhere, and which of
//! herder's apps they also run; and how `doctor` and `start` word it. Also what is looked for:
//! this herder ([`Own`]) and its apps ([`Wanted`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::paths::Paths;
use crate::protocol::AppSpec;

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
}

/// ` (PM2_HOME /x)` when the home is known.
pub fn in_home(var: &str, home: Option<&Path>) -> String {
    home.map_or_else(String::new, |h| format!(" ({var} {})", h.display()))
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
