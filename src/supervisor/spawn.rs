//! Starting one instance's process: its own session, its cgroup, stdout and stderr piped to
//! the log writers, the instance variables in its environment.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use tokio::sync::oneshot;

use super::cgroup::Cgroup;
use super::tree;
use super::Context;
use crate::logs;
pub use crate::protocol::signal_number;
use crate::protocol::{AppSpec, ExitReason};

/// A started process.
pub struct Spawned {
    pub pid: i32,
    pub start_ticks: Option<u64>,
    pub started: Instant,
    pub exit: oneshot::Receiver<ExitReason>,
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

/// Spawn instance `index` of `spec` and start copying its output to its log files.
pub fn spawn_instance(
    ctx: &Context,
    spec: &AppSpec,
    index: u32,
    cgroup: Option<&Cgroup>,
    marker: &str,
) -> Result<Spawned, SpawnError> {
    let err = |what: String| SpawnError { program: spec.program.clone(), what };
    if !spec.cwd.is_dir() {
        return Err(err(format!("its working directory {} does not exist", spec.cwd.display())));
    }
    let (out_path, err_path) = logs::instance_paths(&ctx.paths, &spec.name, index);
    let out_file =
        logs::open_append(&out_path).map_err(|e| err(format!("cannot open {}: {e}", out_path.display())))?;
    let err_file =
        logs::open_append(&err_path).map_err(|e| err(format!("cannot open {}: {e}", err_path.display())))?;

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(&spec.env)
        .env("HERDER_HOME", &ctx.paths.home)
        .env("HERDER_APP", &spec.name)
        .env("HERDER_INSTANCE", index.to_string())
        .env("NODE_APP_INSTANCE", index.to_string())
        .env(tree::MARKER_VAR, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    // The cgroup is joined from inside the child before exec, so that not even a fork the
    // program makes first can escape it.
    let procs: Option<OwnedFd> = match cgroup.map(Cgroup::prepare).transpose() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(app = %spec.name, instance = index, error = %e, "cannot prepare the instance's cgroup; continuing without it");
            None
        }
    };
    let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: the closure only makes async-signal-safe calls (write, setsid, sigprocmask,
    // signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd {
                // Failure to join leaves the child in the daemon's group; stop still works
                // through the process group.
                libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }

    let (mut child, exit) = ctx.reaper.spawn(&mut cmd).map_err(|e| err(describe_spawn_error(&e)))?;
    let started = Instant::now();
    drop(procs);
    let pid = child.id() as i32;
    let start_ticks = tree::start_ticks(pid);
    if let Some(out) = child.stdout.take() {
        logs::capture(OwnedFd::from(out), out_file, &spec.name, index);
    }
    if let Some(errp) = child.stderr.take() {
        logs::capture(OwnedFd::from(errp), err_file, &spec.name, index);
    }
    Ok(Spawned { pid, start_ticks, started, exit })
}

fn describe_spawn_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or command".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied (is it executable?)".to_string(),
        _ => e.to_string(),
    }
}
