//! Starting one instance's process: its own session, its cgroup, stdout and stderr piped to
//! the log writers, the instance variables in its environment.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use tokio::sync::oneshot;

use super::Context;
use crate::logs::{self, Sink, Stream};
use crate::process::fork::{self, CgroupTarget, Plan};
use crate::process::tree;
use crate::protocol::spec::BalancerMode;
use crate::protocol::{AppSpec, ExitReason};

/// Variables of socket activation: set for an instance that inherits listening sockets, never
/// passed on from the environment it was started from (a `herder start` in a unit started by
/// socket activation would otherwise hand the app descriptors it does not have).
const SOCKET_ACTIVATION_VARS: &[&str] =
    &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "HERDER_LISTEN_PORTS"];

/// What one start of an instance needs.
pub struct Launch<'a> {
    pub spec: &'a std::sync::Arc<AppSpec>,
    /// The instance: app, slot, generation.
    pub id: super::InstanceId,
    /// The instance's cgroup, when it has one.
    pub cgroup: Option<&'a crate::process::cgroup::Cgroup>,
    /// The cgroup may hold leftovers: make a fresh one.
    pub recreate_cgroup: bool,
    /// The instance's marker value (see [`crate::process::tree::MARKER_VAR`]).
    pub marker: &'a str,
    /// Its `NOTIFY_SOCKET` address.
    pub notify_socket: Option<&'a str>,
    /// The account it runs as (`user`/`group`).
    pub account: Option<&'a crate::users::Account>,
    /// Listening sockets it inherits at 3, 4, 5 … (socket activation).
    pub sockets: &'a [Inherit<'a>],
    /// Its loopback port behind the app's balancer: its `PORT`.
    pub port: Option<u16>,
}

/// A listening socket an instance inherits, with its name for `LISTEN_FDNAMES` and its port.
#[derive(Debug, Clone, Copy)]
pub struct Inherit<'a> {
    pub fd: std::os::fd::BorrowedFd<'a>,
    pub name: &'a str,
    pub port: u16,
}

/// A started process.
pub struct Spawned {
    pub pid: i32,
    pub start_ticks: Option<u64>,
    pub started: Instant,
    pub exit: oneshot::Receiver<ExitReason>,
    /// Our end of a Node app's IPC channel (`NODE_CHANNEL_FD`), for `process.send('ready')`.
    pub ipc: Option<OwnedFd>,
    /// Where the kernel counts the instance's OOM kills, and the count at its start.
    pub oom: Option<(std::path::PathBuf, u64)>,
    /// A limit of the spec that this machine cannot apply, in words.
    pub limit_note: Option<String>,
    /// Why some log file of the instance is not written (a read-only or full home).
    pub log_note: Option<String>,
    /// The log files its output goes to: held by the instance's supervisor between runs, so
    /// that a restart writes on into the same open files even when they could not be opened
    /// again.
    pub log_files: Vec<logs::SharedFile>,
}

/// The variables that tell an instance which one it is (its `exec` probes get them too):
/// `HERDER_APP`, `HERDER_INSTANCE` and `instance_var` (PM2's `NODE_APP_INSTANCE` by default)
/// with its number, `increment_var` (its value in `env`, or 0, plus the number), and `PORT`
/// where the instance has a port of its own.
pub(super) fn instance_vars(spec: &AppSpec, index: u32, port: Option<u16>) -> Vec<(&str, String)> {
    let number = index.to_string();
    let instance_var = if spec.instance_var.is_empty() { "NODE_APP_INSTANCE" } else { &spec.instance_var };
    let mut vars =
        vec![("HERDER_APP", spec.name.clone()), ("HERDER_INSTANCE", number.clone()), (instance_var, number)];
    if let Some(var) = spec.increment_var.as_deref().filter(|v| !v.is_empty()) {
        let start = spec.env.get(var).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
        vars.push((var, (start + i64::from(index)).to_string()));
    }
    if let Some(port) = port {
        vars.push(("PORT", port.to_string()));
    }
    vars
}

/// A connected pair of stream sockets, close-on-exec.
fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair(2) writes two descriptors into the array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) }
        != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Why a process could not be started, worded for `list` and `show`.
#[derive(Debug)]
pub struct SpawnError {
    program: String,
    what: String,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot start `{}`: {}", self.program, self.what)
    }
}

impl std::error::Error for SpawnError {}

impl SpawnError {
    pub(crate) fn new(program: &str, what: String) -> SpawnError {
        SpawnError { program: program.to_string(), what }
    }
}

/// Spawn instance `index` of app `app_id` and start copying its output to its log files.
pub fn spawn_instance(ctx: &Context, launch: &Launch<'_>) -> Result<Spawned, SpawnError> {
    let Launch { spec, id, cgroup, recreate_cgroup, marker, notify_socket, account, sockets, port } = *launch;
    let (app_id, index) = (id.app, id.index);
    let err = |what: String| SpawnError { program: spec.program.clone(), what };
    if !spec.cwd.is_dir() {
        return Err(err(format!("its working directory {} does not exist", spec.cwd.display())));
    }
    let policy = logs::policy_of(&ctx.paths, spec, index);
    // Log files that cannot be opened (a read-only or full home) do not stop the app: their
    // lines are dropped, counted and shown until the files can be opened again.
    let open =
        |stream| Sink::open(&ctx.logs, &policy, &spec.name, index, stream).owned_by(app_id, spec.clone());
    let (out_sink, err_sink) = (open(Stream::Out), open(Stream::Err));
    let log_error = out_sink.files.iter().chain(&err_sink.files).find_map(|f| {
        let f = f.lock().unwrap_or_else(|e| e.into_inner());
        f.error().map(|e| format!("its log {} is not written: {}", f.path().display(), e.message))
    });

    let home = ctx.paths.home.to_string_lossy();
    let own = instance_vars(spec, index, port);
    let mut extra = vec![("HERDER_HOME", home.as_ref()), (tree::MARKER_VAR, marker)];
    extra.extend(own.iter().map(|(k, v)| (*k, v.as_str())));
    let port = port.map(|p| p.to_string());
    if let Some(address) = notify_socket {
        extra.push(("NOTIFY_SOCKET", address));
    }
    // Node apps signal readiness with `process.send('ready')` over an IPC channel, as under
    // PM2, and `shutdown_with_message` stops them with `'shutdown'` on it; in cluster mode the
    // preload asks on it for a port the app listens on and was not given. Only then: an open
    // channel keeps a Node process alive.
    let ask = spec.cluster && spec.runs_node();
    let ipc = if (spec.wait_ready || spec.shutdown_with_message || ask) && spec.runs_node() {
        Some(socketpair().map_err(|e| err(format!("cannot create its IPC channel: {e}")))?)
    } else {
        None
    };
    // Socket activation: the listening sockets at 3, 4, 5 … (`LISTEN_PID` is set by the
    // child itself), then the IPC channel.
    let listen_fds = sockets.len().to_string();
    let listen_names = sockets.iter().map(|s| s.name).collect::<Vec<_>>().join(":");
    let listen_ports = sockets.iter().map(|s| s.port.to_string()).collect::<Vec<_>>().join(":");
    // Behind an http balancer, the instance's loopback port: the preload serves its hop too,
    // an abstract Unix socket the balancer reaches it on more cheaply (`balancer::upstream`).
    let hop =
        spec.balancer.as_ref().filter(|b| b.mode == BalancerMode::Http && b.unix_hop).and(port.as_deref());
    // Node processes anywhere in the app's tree (`node`, `npm start`, a script with a node
    // shebang) load the preload, which makes their `listen(port)` use these sockets.
    let node_options = if sockets.is_empty() && !ask && hop.is_none() {
        None
    } else {
        let preload =
            preload_path(ctx, account).map_err(|e| err(format!("cannot write the Node preload: {e}")))?;
        let preload = preload.display().to_string();
        let require = if preload.contains(' ') {
            format!("--require \"{preload}\"")
        } else {
            format!("--require {preload}")
        };
        Some(match spec.env.get("NODE_OPTIONS").filter(|o| !o.trim().is_empty()) {
            Some(own) => format!("{own} {require}"),
            None => require,
        })
    };
    if let Some(options) = &node_options {
        if !sockets.is_empty() {
            extra.push(("LISTEN_FDS", listen_fds.as_str()));
            extra.push(("LISTEN_FDNAMES", listen_names.as_str()));
            extra.push(("HERDER_LISTEN_PORTS", listen_ports.as_str()));
        }
        extra.push(("NODE_OPTIONS", options.as_str()));
        if ask {
            extra.push(("HERDER_LISTEN_ASK", "1"));
        }
        if let Some(port) = hop {
            extra.push(("HERDER_HOP_PORT", port));
        }
    }
    let ipc_fd = (3 + sockets.len()).to_string();
    if ipc.is_some() {
        extra.push(("NODE_CHANNEL_FD", ipc_fd.as_str()));
        extra.push(("NODE_CHANNEL_SERIALIZATION_MODE", "json"));
    }
    let watchdog_usec = spec.watchdog_ms.map(|ms| (ms * 1000).to_string());
    if let (Some(usec), Some(_)) = (&watchdog_usec, notify_socket) {
        extra.push(("WATCHDOG_USEC", usec.as_str()));
    }
    // The user's login variables, where the spec has none (its env was resolved with them,
    // unless it was replaced since, as by `--update-env` with a filtered shell).
    let login: Vec<(&str, String)> = account
        .filter(|_| spec.user.is_some())
        .map(crate::users::login_env)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !spec.env.contains_key(*k))
        .collect();
    let env = spec
        .env
        .iter()
        .filter(|(k, _)| {
            !extra.iter().any(|(e, _)| e == k)
                && !fork::SERVICE_MANAGER_VARS.contains(&k.as_str())
                && !SOCKET_ACTIVATION_VARS.contains(&k.as_str())
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(login.iter().map(|(k, v)| (*k, v.as_str())))
        .chain(extra.iter().copied());
    let plan = Plan::new(&spec.program, spec.args.iter().map(String::as_str), env, &spec.cwd)
        .map_err(|e| err(describe_spawn_error(&e)))?
        .run_as(account.map(fork::Credentials::of));
    let plan = if sockets.is_empty() { plan } else { plan.listen_pid() };

    let cg_fds = match cgroup.map(|c| c.prepare(recreate_cgroup)).transpose() {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!(app = %spec.name, instance = index, error = %e, "cannot prepare the instance's cgroup; continuing without it");
            None
        }
    };
    let (limits, limit_note) =
        if spec.memory_limit.is_some() || spec.cpu_limit_millis.is_some() || cg_fds.is_some() {
            let v2 = cg_fds.as_ref().and(cgroup);
            match ctx.limits.apply(v2, &id.name(), spec) {
                Ok(applied) => (applied, None),
                Err(e) => {
                    tracing::warn!(app = %spec.name, instance = index, error = %e, "limits not applied");
                    (crate::process::limits::Applied::default(), Some(format!("limits not applied: {e}")))
                }
            }
        } else {
            (crate::process::limits::Applied::default(), None)
        };
    let join: Vec<std::os::fd::RawFd> = limits.join.iter().map(|f| f.as_raw_fd()).collect();
    let target = cg_fds.as_ref().map(|(dir, procs)| CgroupTarget { dir, procs });
    let inherit: Vec<std::os::fd::RawFd> = sockets
        .iter()
        .map(|s| s.fd.as_raw_fd())
        .chain(ipc.as_ref().map(|(_, child)| child.as_raw_fd()))
        .collect();
    let (pending, exit) = ctx
        .reaper
        .spawn_with(|| fork::clone_child(&plan, target, &inherit, &join), |p| p.pid)
        .map_err(|e| err(describe_spawn_error(&e)))?;
    let child = pending.wait_exec().map_err(|e| match (account, e.raw_os_error()) {
        // Denied to the app's user, which is not the daemon's.
        (Some(a), Some(libc::EACCES)) => {
            err(format!("permission denied (is it executable, and can the user `{}` reach it?)", a.name))
        }
        _ => err(describe_spawn_error(&e)),
    })?;
    let started = Instant::now();
    drop(cg_fds);
    let pid = child.pid;
    let start_ticks = tree::start_ticks(pid);
    let log_files = out_sink.files.iter().chain(&err_sink.files).cloned().collect();
    logs::capture(child.stdout, out_sink, &ctx.logs);
    logs::capture(child.stderr, err_sink, &ctx.logs);
    drop(join);
    Ok(Spawned {
        pid,
        start_ticks,
        started,
        exit,
        ipc: ipc.map(|(ours, _)| ours),
        oom: limits.oom,
        limit_note,
        log_note: log_error,
        log_files,
    })
}

/// Where the Node preload is for an app run as `account`: the home's `run/` for the daemon's
/// own account, the shared run directory (which other users can pass through) for another.
fn preload_path(
    ctx: &Context,
    account: Option<&crate::users::Account>,
) -> std::io::Result<std::path::PathBuf> {
    // SAFETY: geteuid(2) cannot fail.
    let euid = unsafe { libc::geteuid() };
    let dir = match account.filter(|a| a.uid != euid) {
        Some(_) => ctx.paths.ensure_shared_run_dir()?,
        None => ctx.paths.run_dir(),
    };
    super::sockets::node_preload(&dir)
}

fn describe_spawn_error(e: &io::Error) -> String {
    // Errors without an OS error number already say what failed (a step before exec).
    match (e.kind(), e.raw_os_error()) {
        (_, None) => e.to_string(),
        (io::ErrorKind::NotFound, _) => "no such file or command".to_string(),
        (io::ErrorKind::PermissionDenied, _) => "permission denied (is it executable?)".to_string(),
        _ => e.to_string(),
    }
}
