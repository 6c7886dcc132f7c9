//! The daemon's only `waitpid` caller.
//!
//! The daemon is a child subreaper, so besides the instances it spawns, orphaned descendants of
//! apps are re-parented to it and must be reaped too. One task reaps every child on SIGCHLD and
//! hands the exit status of registered pids to their owners; everything else is reaped and
//! dropped. Spawning happens under the same lock as reaping, so an instance that exits at once
//! can never be reaped before its pid is registered.
//!
//! For `herder update` the reaper pauses (children that exit stay zombies for the next image,
//! which registers the adopted pids before its first pass) and can hold off every spawn.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::protocol::ExitReason;

pub type Waiters = HashMap<i32, oneshot::Sender<ExitReason>>;

/// A cloneable handle to the reaper task.
#[derive(Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
    /// While set (during `herder update`), nothing is reaped: children that exit stay zombies
    /// whose status the next image collects.
    paused: Arc<AtomicBool>,
}

impl Reaper {
    /// Install the SIGCHLD handler and start the reaping task. Must run inside a tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        Ok(Self::start_adopting(&[])?.0)
    }

    /// Like [`Reaper::start`], with `pids` (children of an earlier image of this process)
    /// registered before the first pass, so that one that exited meanwhile is reaped as theirs.
    pub fn start_adopting(pids: &[i32]) -> io::Result<(Reaper, HashMap<i32, oneshot::Receiver<ExitReason>>)> {
        let mut sigchld = signal(SignalKind::child())?;
        let mut exits = HashMap::new();
        let mut waiters = Waiters::new();
        for &pid in pids {
            let (tx, rx) = oneshot::channel();
            waiters.insert(pid, tx);
            exits.insert(pid, rx);
        }
        let reaper = Reaper { waiters: Arc::new(Mutex::new(waiters)), paused: Arc::default() };
        let task = reaper.clone();
        tokio::spawn(async move {
            // Children that exited before the handler existed are reaped on the first pass.
            loop {
                reap_all(&task);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok((reaper, exits))
    }

    /// Stop reaping until [`Reaper::resume`]; once this returns, no `waitpid` runs.
    pub fn pause(&self) {
        let _waiters = self.lock();
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Reap again, starting with whatever exited while paused.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        reap_all(self);
    }

    /// Hold off every spawn (they all go through [`Reaper::spawn_with`]) while the guard lives:
    /// no child can be created, and inherit a descriptor, while the daemon prepares to execute
    /// its new image.
    pub fn hold_spawns(&self) -> MutexGuard<'_, Waiters> {
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create a child with `make` and register its pid (given by `pid_of`) before anything
    /// can reap it; the receiver yields its exit.
    pub fn spawn_with<T>(
        &self,
        make: impl FnOnce() -> io::Result<T>,
        pid_of: impl Fn(&T) -> i32,
    ) -> io::Result<(T, oneshot::Receiver<ExitReason>)> {
        let mut waiters = self.lock();
        let child = make()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid_of(&child), tx);
        Ok((child, rx))
    }

    /// Register for the exit of `pid`, a descendant that is to become our child (an app's new
    /// main process, `MAINPID=`): once its parent exits it is re-parented to the daemon (a
    /// subreaper) and reaped here. `None` if it is gone or already registered.
    pub fn adopt(&self, pid: i32) -> Option<oneshot::Receiver<ExitReason>> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters.contains_key(&pid) || !super::tree::alive(pid) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Some(rx)
    }
}

fn reap_all(reaper: &Reaper) {
    let mut waiters = reaper.lock();
    if reaper.paused.load(Ordering::SeqCst) {
        return;
    }
    loop {
        let reason = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitReason::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitReason::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) => continue,
            // ECHILD: no children at all.
            Err(_) => return,
        };
        let (pid, reason) = reason;
        if let Some(tx) = waiters.remove(&pid.as_raw()) {
            let _ = tx.send(reason);
        } else {
            tracing::debug!(pid = pid.as_raw(), %reason, "reaped an orphaned descendant");
        }
    }
}
