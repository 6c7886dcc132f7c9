//! How the actor reaches the operating system for its process: start it, end it, sweep up
//! what outlived it. [`OsSpawner`] clones real processes ([`super::spawn`]) and ends them with
//! [`crate::process::terminate`]; the actor's tests drive it with a fake instead, so that its
//! lifecycle can be checked in milliseconds on a paused clock.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::spawn::{self, Launch, SpawnError, Spawned};
use super::Context;
use crate::process::cgroup::Cgroup;
use crate::process::terminate::Group;
use crate::process::tree;

/// A future the spawner may hold across an await.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
