//! `herder doctor`: what this machine offers herder and what degrades without it. Each check
//! is `ok`, `degraded` or `missing`, with one sentence on what a non-ok one costs. Facts come
//! from the running daemon where it has them (its cgroup and subreaper), else from probing
//! the way a daemon started from this shell would, without creating or starting anything.
//!
//! It also names the other supervisors of the machine (PM2 daemons, supervisord, herder
//! daemons of other homes) and the processes holding ports herder's apps want ([`peers`]).
//!
//! The exit code is 1 only when something herder cannot run without is missing.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::output::out;
use super::peers::{self, Peers};
use crate::client::{Client, ClientError};
use crate::health::notify::NotifySocket;
use crate::human;
use crate::paths::Paths;
use crate::process::cgroup::CgroupRoot;
use crate::process::{fork, limits};
use crate::protocol::{AppSpec, DaemonInfo, Request, Response, PROGRAM_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Degraded,
    Missing,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Degraded => "degraded",
            Level::Missing => "missing",
        }
    }
}

/// One fact about the machine.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier (`cgroup-v2`, `pidfd` …).
    pub id: &'static str,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What does not work as well without it (non-ok checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degrades: Option<String>,
    /// herder cannot run without it.
    pub essential: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub home: PathBuf,
    pub checks: Vec<Check>,
    /// Other supervisors on the machine and what they share with herder's apps.
    pub peers: Peers,
}

impl Report {
    /// Something essential is missing.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.essential && c.level == Level::Missing)
    }
}

fn check(id: &'static str, level: Level, detail: impl Into<String>, degrades: &str) -> Check {
    Check {
        id,
        level,
        detail: detail.into(),
        degrades: (level != Level::Ok).then(|| degrades.to_string()),
        essential: false,
    }
}

/// `herder doctor [--json]`.
pub async fn doctor(paths: &Paths, json: bool) -> Result<i32> {
    let report = gather(paths).await;
    if json {
        out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        out(&text(&report))?;
    }
    Ok(if report.failed() { 1 } else { 0 })
}

pub async fn gather(paths: &Paths) -> Report {
    let (daemon_check, daemon) = daemon(paths).await;
    let mut checks = vec![home(paths), daemon_check];
    if let Some(warnings) = daemon.as_ref().map(|d| &d.home_warnings).filter(|w| !w.is_empty()) {
        checks.push(check(
            "home-writes",
            Level::Degraded,
            warnings.join("; "),
            "the apps run on; what is listed is not written until the home takes writes again",
        ));
    }
    checks.extend(cgroups(paths, daemon.as_ref()));
    checks.push(clone_into_cgroup());
    checks.push(subreaper(daemon.as_ref()));
    checks.push(pidfd());
    checks.push(notify_socket(paths).await);
    checks.push(inotify());
    checks.push(interpreter(
        "node",
        "node",
        "`.js`/`.mjs`/`.cjs` apps and PM2 `ecosystem.config.js` files need `node` in PATH",
    ));
    checks.push(interpreter("python3", "python3", "`.py` apps need `python3` in PATH"));
    let own = peers::Own { home: paths.home.clone(), daemon_pid: daemon.as_ref().map(|d| d.pid) };
    let wanted: Vec<peers::Wanted> = daemon_apps(paths).await.iter().map(peers::Wanted::of).collect();
    let peers = peers::scan(&own, &wanted);
    checks.push(others(&peers));
    Report { version: PROGRAM_VERSION, home: paths.home.clone(), checks, peers }
}

/// The apps of this home's daemon with their environments (for `PORT`); none when it does
/// not run.
async fn daemon_apps(paths: &Paths) -> Vec<AppSpec> {
    let Ok(mut c) = Client::connect(paths, false).await else { return Vec::new() };
    match c.request(&Request::ListFull).await {
        Ok(Response::List { apps, .. }) => apps.into_iter().map(|a| a.spec).collect(),
        _ => Vec::new(),
    }
}

fn others(p: &Peers) -> Check {
    let level = if p.is_empty() { Level::Ok } else { Level::Degraded };
    let degrades = if p.clashes.is_empty() && p.ports.is_empty() && p.warnings.is_empty() {
        "another supervisor runs here: if it manages one of herder's apps too, both restart it and fight over its port"
    } else {
        "two supervisors restart the same app against each other and fight over its port: stop the other copy (below)"
    };
    check("other-supervisors", level, p.summary(), degrades)
}

pub(super) fn text(r: &Report) -> String {
    let mut s = format!("herder {} doctor for {}\n\n", r.version, r.home.display());
    for c in &r.checks {
        s.push_str(&format!("  {:<9} {:<18} {}\n", c.level.as_str(), c.id, c.detail));
        if let Some(d) = &c.degrades {
            s.push_str(&format!("  {:<9} {:<18} → {d}\n", "", ""));
        }
    }
    if !r.peers.is_empty() || !r.peers.warnings.is_empty() {
        s.push_str("\nother supervisors on this machine:\n");
        s.push_str(&r.peers.text());
    }
    let count = |l| r.checks.iter().filter(|c| c.level == l).count();
    s.push_str(&format!(
        "\n{} ok, {} degraded, {} missing{}\n",
        count(Level::Ok),
        count(Level::Degraded),
        count(Level::Missing),
        if r.failed() { "; herder cannot run here until the essential ones are fixed" } else { "" }
    ));
    s
}

/// access(2) for the real user: what the daemon (same user) may do.
fn access(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

fn home(paths: &Paths) -> Check {
    let home = &paths.home;
    // SAFETY: geteuid(2) has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let disk = crate::daemon::home::Disk::of(home);
    let mut c = match std::fs::metadata(home) {
        Ok(m) if !m.is_dir() => check(
            "home",
            Level::Missing,
            format!("{} is not a directory", home.display()),
            "herder keeps its socket, state and logs there: nothing works; point HERDER_HOME elsewhere",
        ),
        Ok(m) if m.uid() != uid && uid != 0 => check(
            "home",
            Level::Missing,
            format!("{} belongs to uid {}, not to you (uid {uid})", home.display(), m.uid()),
            "the daemon would not be yours; use your own HERDER_HOME",
        ),
        Ok(_) if disk.is_some_and(|d| d.problem().is_some()) => check(
            "home",
            Level::Degraded,
            format!("{} {}", home.display(), disk.and_then(|d| d.problem()).unwrap_or_default()),
            "the apps run on, but their logs and state.json are not written (crash recovery uses the last state written); make room or remount it writable",
        ),
        Ok(_) if !access(home, libc::W_OK | libc::X_OK) => check(
            "home",
            Level::Missing,
            format!("{} is not writable", home.display()),
            "herder keeps its socket, state and logs there: nothing works",
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => check(
            "home",
            Level::Degraded,
            format!("{} has mode {:04o}", home.display(), m.permissions().mode() & 0o7777),
            "other users may read app logs and state until the next command tightens it to 0700",
        ),
        Ok(_) => {
            let free = disk.map(|d| format!(", {} free", crate::human::bytes(d.free_bytes))).unwrap_or_default();
            check("home", Level::Ok, format!("{}: mode 0700, yours, writable{free}", home.display()), "")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = home.ancestors().skip(1).find(|p| p.exists());
            match parent {
                Some(p) if access(p, libc::W_OK | libc::X_OK) => check(
                    "home",
                    Level::Ok,
                    format!("{} does not exist yet; the first command creates it (mode 0700)", home.display()),
                    "",
                ),
                _ => check(
                    "home",
                    Level::Missing,
                    format!("{} does not exist and cannot be created", home.display()),
                    "herder keeps its socket, state and logs there: nothing works; point HERDER_HOME elsewhere",
                ),
            }
        }
        Err(e) => check(
            "home",
            Level::Missing,
            format!("cannot read {}: {e}", home.display()),
            "herder keeps its socket, state and logs there: nothing works",
        ),
    };
    c.essential = true;
    c
}

async fn daemon(paths: &Paths) -> (Check, Option<DaemonInfo>) {
    const HINT: &str = "nothing runs yet; any command (e.g. `herder ping`) starts the daemon";
    let info = match Client::connect(paths, false).await {
        Ok(mut c) => match c.request(&Request::Ping).await {
            Ok(Response::Pong(info)) => info,
            Ok(_) => return (check("daemon", Level::Degraded, "the daemon gave an unexpected answer", HINT), None),
            Err(e) => return (check("daemon", Level::Degraded, format!("the daemon did not answer: {e}"), HINT), None),
        },
        Err(ClientError::NoDaemon { .. }) => {
            return (check("daemon", Level::Missing, "no daemon runs for this HERDER_HOME", HINT), None)
        }
        Err(ClientError::VersionMismatch { pid, daemon, client }) => {
            return (
                check(
                    "daemon",
                    Level::Degraded,
                    format!("the daemon (pid {pid}) runs herder {daemon}, this is herder {client}"),
                    "commands of this version cannot talk to it; `herder kill` stops it and its apps, the next command starts this version",
                ),
                None,
            )
        }
        Err(e) => {
            return (
                check("daemon", Level::Degraded, format!("cannot reach the daemon: {e}"), "commands cannot reach it"),
                None,
            )
        }
    };
    let c = check(
        "daemon",
        Level::Ok,
        format!(
            "pid {}, herder {}, up {}, {} app(s)",
            info.pid,
            info.version,
            human::duration(info.uptime_ms),
            info.apps
        ),
        "",
    );
    (c, Some(info))
}

const NO_CGROUP: &str = "stop finds an app's processes through process groups and the process tree instead \
                         of one kernel group, and CPU and memory are summed over that tree from /proc";

/// A cgroup v1 controller's mount and this process's group in it (where a daemon started here
/// puts its `herder-<token>` group).
struct V1 {
    mount: PathBuf,
    group: PathBuf,
}

fn v1(controller: &str) -> Option<V1> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = limits::v1_mount(&mountinfo, controller)?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = limits::own_v1_group(&own, controller).unwrap_or_default();
    let rel = rel.trim_start_matches('/');
    let group = if rel.is_empty() { mount.clone() } else { mount.join(rel) };
    Some(V1 { mount, group })
}

/// How the running daemon applies limits through `controller`, from its `limits` description
/// (`memory: cgroup v1, cpu: unavailable`); `None` from a daemon that does not say.
fn daemon_limit<'a>(info: &'a DaemonInfo, controller: &str) -> Option<&'a str> {
    info.limits.split(", ").find_map(|part| part.strip_prefix(controller)?.strip_prefix(": "))
}

fn cgroups(paths: &Paths, daemon: Option<&DaemonInfo>) -> Vec<Check> {
    let located = CgroupRoot::locate(&paths.token());
    // The running daemon's environment counts, else this shell's (a daemon started from it).
    let disabled = match daemon {
        Some(info) => info.cgroup_note.as_deref().is_some_and(|n| n.contains("HERDER_NO_CGROUP")),
        None => std::env::var_os("HERDER_NO_CGROUP").is_some(),
    };
    let v2 = match (daemon, &located) {
        (Some(info), _) => match (&info.cgroup_root, &info.cgroup_note) {
            (Some(root), _) => {
                check("cgroup-v2", Level::Ok, format!("the daemon's instances run in {}", root.display()), "")
            }
            (None, note) => check(
                "cgroup-v2",
                Level::Degraded,
                format!("the daemon has no cgroup: {}", note.as_deref().unwrap_or("no reason given")),
                NO_CGROUP,
            ),
        },
        (None, Err(why)) if disabled => check("cgroup-v2", Level::Degraded, why.clone(), NO_CGROUP),
        (None, Err(why)) => check("cgroup-v2", Level::Missing, why.clone(), NO_CGROUP),
        (None, Ok(loc)) if loc.root.join("cgroup.procs").exists() && access(&loc.root, libc::W_OK) => {
            check("cgroup-v2", Level::Ok, format!("{} exists and is writable", loc.root.display()), "")
        }
        (None, Ok(loc)) if access(&loc.group, libc::W_OK) => check(
            "cgroup-v2",
            Level::Ok,
            format!(
                "{} is writable: a daemon started here creates {}",
                loc.group.display(),
                loc.root.display()
            ),
            "",
        ),
        (None, Ok(loc)) => check(
            "cgroup-v2",
            Level::Degraded,
            format!(
                "{} is not writable (not delegated to this user; a systemd unit with `Delegate=yes` is)",
                loc.group.display()
            ),
            NO_CGROUP,
        ),
    };
    let mut checks = vec![v2];
    // Controllers. The v2 ones herder's group gets are those its parent group passes down
    // (`cgroup.subtree_control`), or, once it exists, those it has.
    let v2_controllers: Vec<String> = located
        .as_ref()
        .ok()
        .and_then(|loc| {
            let file = if loc.root.is_dir() {
                loc.root.join("cgroup.controllers")
            } else {
                loc.group.join("cgroup.subtree_control")
            };
            std::fs::read_to_string(file).ok()
        })
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    // Those the group has but does not pass down yet: a daemon alone in it passes them down
    // itself, by moving into a leaf of it (see `supervisor::delegate`).
    let v2_offered: Vec<String> = located
        .as_ref()
        .ok()
        .and_then(|loc| std::fs::read_to_string(loc.group.join("cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let controllers: [(&'static str, &str, &str); 3] = [
        (
            "cgroup-memory",
            "memory",
            "`memory_limit` cannot be enforced by the kernel (`max_memory_restart` still works)",
        ),
        ("cgroup-cpu", "cpu", "`cpu_limit` cannot be enforced by the kernel"),
        ("cgroup-pids", "pids", "herder does not use it: nothing degrades"),
    ];
    for (id, name, degrades) in controllers {
        let from_daemon = daemon.and_then(|info| Some((daemon_limit(info, name)?, info)));
        let c = if disabled {
            check(id, Level::Degraded, "disabled by `HERDER_NO_CGROUP`", degrades)
        } else if let Some((how, info)) = from_daemon {
            if how == "unavailable" {
                let why = info.limits_note.as_deref().unwrap_or("no controller");
                check(id, Level::Missing, format!("the daemon cannot use it: {why}"), degrades)
            } else {
                check(id, Level::Ok, format!("the daemon applies `{name}` limits through {how}"), "")
            }
        } else if v2_controllers.iter().any(|c| c == name) {
            check(id, Level::Ok, "cgroup v2 controller available to herder's group", "")
        } else {
            match v1(name) {
                Some(v) if access(&v.group, libc::W_OK) => check(
                    id,
                    Level::Ok,
                    format!("cgroup v1 controller at {}, {} writable", v.mount.display(), v.group.display()),
                    "",
                ),
                Some(v) => check(
                    id,
                    Level::Degraded,
                    format!(
                        "cgroup v1 controller at {}, but {} is not writable",
                        v.mount.display(),
                        v.group.display()
                    ),
                    degrades,
                ),
                None if v2_offered.iter().any(|c| c == name) => check(
                    id,
                    Level::Degraded,
                    format!(
                        "cgroup v2 controller in {}, not passed down to its groups: a daemon alone in \
                         its cgroup (as under `herder startup`) passes it down itself, one that shares \
                         it with other processes cannot",
                        located.as_ref().map(|l| l.group.display().to_string()).unwrap_or_default()
                    ),
                    degrades,
                ),
                None => check(
                    id,
                    Level::Missing,
                    "neither herder's v2 group nor a v1 hierarchy offers it",
                    degrades,
                ),
            }
        };
        checks.push(c);
    }
    checks
}

fn clone_into_cgroup() -> Check {
    const SLOWER: &str =
        "each start forks, then moves the process into its cgroup by writing `cgroup.procs`, \
                          which costs milliseconds per (re)start";
    const ID: &str = "clone-into-cgroup";
    match fork::probe_clone_into_cgroup() {
        Ok(()) => check(ID, Level::Ok, "clone3 with CLONE_INTO_CGROUP", ""),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOSYS) => {
                check(ID, Level::Missing, "no clone3 (kernel before 5.3, or filtered)", SLOWER)
            }
            Some(libc::EINVAL | libc::E2BIG) => {
                check(ID, Level::Degraded, "clone3 without CLONE_INTO_CGROUP (kernel before 5.7)", SLOWER)
            }
            _ => check(ID, Level::Degraded, format!("clone3 answered {e}"), SLOWER),
        },
    }
}

fn subreaper(daemon: Option<&DaemonInfo>) -> Check {
    const DEGRADES: &str = "processes an app leaves behind when its parent dies go to init, out of herder's \
                            sight: they are neither reaped nor found by stop when no cgroup holds them";
    let ok = match daemon {
        Some(info) => info.subreaper,
        None => {
            // SAFETY: prctl(2) with integer arguments; set, then unset on this short-lived process.
            let ok = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
            ok
        }
    };
    let whose = if daemon.is_some() { "the daemon is" } else { "a daemon can be" };
    if ok {
        check("subreaper", Level::Ok, format!("{whose} a child subreaper"), "")
    } else {
        check("subreaper", Level::Missing, format!("{whose} no child subreaper (prctl refused)"), DEGRADES)
    }
}

fn pidfd() -> Check {
    // SAFETY: pidfd_open(2) on this process; the descriptor is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd as i32) };
        return check("pidfd", Level::Ok, "pidfd_open works", "");
    }
    check(
        "pidfd",
        Level::Missing,
        format!("pidfd_open fails: {}", io::Error::last_os_error()),
        "nothing herder does needs it today: it signals only children it has not reaped, whose pids cannot be reused",
    )
}

/// Bind a notify socket as the daemon does for each instance, and send it `READY=1`.
async fn notify_socket(paths: &Paths) -> Check {
    const DEGRADES: &str =
        "apps cannot signal readiness or status (`wait_ready` apps fail to start, `watchdog` apps \
                            are restarted)";
    let run = paths.run_dir();
    let dir = if run.is_dir() { run } else { std::env::temp_dir() };
    let name = format!("doctor-{}", std::process::id());
    let sock = match NotifySocket::bind(&dir, &paths.token(), &name) {
        Ok(s) => s,
        Err(e) => {
            return check(
                "notify-socket",
                Level::Missing,
                format!("cannot bind one in {}: {e}", dir.display()),
                DEGRADES,
            )
        }
    };
    let sent = UnixDatagram::unbound().and_then(|u| match sock.address.strip_prefix('@') {
        Some(abs) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())?;
            u.send_to_addr(b"READY=1\n", &addr)
        }
        None => u.send_to(b"READY=1\n", &sock.address),
    });
    if let Err(e) = sent {
        return check(
            "notify-socket",
            Level::Missing,
            format!("cannot send to {}: {e}", sock.address),
            DEGRADES,
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), sock.recv()).await {
        Ok(Ok(notices)) if !notices.is_empty() => {
            check("notify-socket", Level::Ok, format!("bound and received READY=1 in {}", dir.display()), "")
        }
        Ok(Ok(_)) => {
            check("notify-socket", Level::Degraded, "a datagram arrived but did not parse", DEGRADES)
        }
        Ok(Err(e)) => check("notify-socket", Level::Missing, format!("cannot receive: {e}"), DEGRADES),
        Err(_) => check("notify-socket", Level::Missing, "a datagram sent to it never arrived", DEGRADES),
    }
}

fn inotify() -> Check {
    // SAFETY: inotify_init1(2) with a flag; the descriptor is closed at once.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    const DEGRADES: &str = "`watch` cannot restart apps when their files change";
    if fd < 0 {
        return check(
            "inotify",
            Level::Missing,
            format!("inotify_init1 fails: {}", io::Error::last_os_error()),
            DEGRADES,
        );
    }
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
    let watches = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok();
    let detail = match watches.as_deref().map(str::trim) {
        Some(n) => format!("available, {n} watches per user"),
        None => "available".into(),
    };
    check("inotify", Level::Ok, detail, "")
}

/// `program` in PATH and its `--version`.
fn interpreter(id: &'static str, program: &str, degrades: &str) -> Check {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file() && access(p, libc::X_OK))
    });
    let Some(path) = found else {
        return check(id, Level::Missing, format!("no `{program}` in PATH"), degrades);
    };
    match version(&path) {
        Some(v) => check(id, Level::Ok, format!("{} ({v})", path.display()), ""),
        None => check(
            id,
            Level::Degraded,
            format!("{} does not answer `--version` within 5 s", path.display()),
            degrades,
        ),
    }
}

/// The first line `program --version` prints, waiting at most 5 s.
fn version(program: &Path) -> Option<String> {
    let child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(out)) => {
            // Python 2 printed its version on stderr.
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            let line = String::from_utf8_lossy(&text).lines().next()?.trim().to_string();
            (!line.is_empty()).then_some(line)
        }
        Ok(Err(_)) => None,
        Err(_) => {
            // SAFETY: kill(2) on the child spawned above, not reaped yet (its waiter still runs).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn essential_failures_fail_the_report() {
        let mut r = Report {
            version: "x",
            home: "/h".into(),
            checks: vec![check("pidfd", Level::Missing, "no", "nothing")],
            peers: Peers::default(),
        };
        assert!(!r.failed(), "a missing non-essential check does not fail");
        let mut home = check("home", Level::Missing, "gone", "nothing works");
        home.essential = true;
        r.checks.push(home);
        assert!(r.failed());
        let t = text(&r);
        assert!(t.contains("  missing   pidfd              no\n"), "{t}");
        assert!(t.contains("→ nothing works"), "{t}");
        assert!(t.contains("0 ok, 0 degraded, 2 missing; herder cannot run here"), "{t}");
    }

    #[test]
    fn ok_checks_carry_no_degrade_sentence() {
        let c = check("inotify", Level::Ok, "available", "ignored");
        assert!(c.degrades.is_none());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["level"], "ok");
        assert!(json.get("degrades").is_none());
    }
}
