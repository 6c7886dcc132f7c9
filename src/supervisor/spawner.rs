//! How the actor reaches the operating system for its process: start it, end it, sweep up
//! what outlived it. [`OsSpawner`] clones real processes ([`super::spawn`]) and ends them with
//! [`crate::process::terminate`]; the actor's tests drive it with a fake instead, so that its
//! lifecycle can be checked in milliseconds on a paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::spawn::{self, SpawnError, Spawned};
use super::Context;
use crate::process::cgroup::Cgroup;
use crate::process::terminate::Group;
use crate::process::tree;
use crate::protocol::AppSpec;
use crate::users::Account;

/// A future the spawner may hold across an await.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one start of an instance needs.
pub struct Launch<'a> {
    pub spec: &'a Arc<AppSpec>,
    pub app_id: u32,
    pub index: u32,
    /// The instance's cgroup, when it has one.
    pub cgroup: Option<&'a Cgroup>,
    /// The cgroup may hold leftovers: make a fresh one.
    pub recreate_cgroup: bool,
    /// The instance's marker value (see [`tree::MARKER_VAR`]).
    pub marker: &'a str,
    /// Its `NOTIFY_SOCKET` address.
    pub notify_socket: Option<&'a str>,
    /// The account it runs as (`user`/`group`).
    pub account: Option<&'a Account>,
    /// Listening sockets it inherits at 3, 4, 5 … (socket activation).
    pub sockets: &'a [Inherit<'a>],
}

/// A listening socket an instance inherits, with its name for `LISTEN_FDNAMES`.
#[derive(Debug, Clone, Copy)]
pub struct Inherit<'a> {
    pub fd: std::os::fd::BorrowedFd<'a>,
    pub name: &'a str,
}

/// How to end one running process.
pub struct Stop {
    pub pid: i32,
    pub cgroup: Option<Cgroup>,
    pub marker: String,
    /// The stop signal; `None` when the app was asked another way (`'shutdown'`).
    pub signal: Option<i32>,
    /// How long the process and its children have before everything left is killed.
    pub grace: Duration,
}

/// Starting and ending an instance's processes.
pub trait Spawner: Send + Sync {
    /// Start the instance's process.
    fn spawn(&self, ctx: &Context, launch: &Launch<'_>) -> Result<Spawned, SpawnError>;

    /// End a running process and everything of it; `exited` resolves when the main process
    /// has exited. Returns once nothing of it runs.
    fn stop<'a>(&'a self, stop: Stop, exited: BoxFuture<'a, ()>) -> BoxFuture<'a, ()>;

    /// Kill what is left of an instance whose main process exited on its own. True when
    /// something was killed in its cgroup (the next start then gets a fresh one).
    fn sweep(&self, cgroup: Option<&Cgroup>, marker: &str) -> bool;
}

/// The real processes.
pub struct OsSpawner;

impl Spawner for OsSpawner {
    fn spawn(&self, ctx: &Context, launch: &Launch<'_>) -> Result<Spawned, SpawnError> {
        spawn::spawn_instance(ctx, launch)
    }

    fn stop<'a>(&'a self, stop: Stop, exited: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        Box::pin(Group::of(stop.pid, stop.cgroup, &stop.marker).terminate(stop.signal, stop.grace, exited))
    }

    fn sweep(&self, cgroup: Option<&Cgroup>, marker: &str) -> bool {
        if let Some(cg) = cgroup {
            if cg.populated() {
                cg.signal_all(libc::SIGKILL);
                return true;
            }
            return false;
        }
        for pid in tree::find_children_marked(marker) {
            // SAFETY: kill(2); the pid is a child of ours carrying this instance's marker.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        false
    }
}
