//! The daemon's only `waitpid` caller.
//!
//! The daemon is a child subreaper, so besides the instances it spawns, orphaned descendants of
//! apps are re-parented to it and must be reaped too. One task reaps every child on SIGCHLD and
//! hands the exit status of registered pids to their owners; everything else is reaped and
//! dropped. Spawning happens under the same lock as reaping, so an instance that exits at once
//! can never be reaped before its pid is registered.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::protocol::ExitReason;

type Waiters = HashMap<i32, oneshot::Sender<ExitReason>>;

/// A cloneable handle to the reaper task.
#[derive(Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    /// Install the SIGCHLD handler and start the reaping task. Must run inside a tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        let mut sigchld = signal(SignalKind::child())?;
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let task_waiters = waiters.clone();
        tokio::spawn(async move {
            // Children that exited before the handler existed are reaped on the first pass.
            loop {
                reap_all(&task_waiters);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(Reaper { waiters })
    }

    /// Create a child with `make` and register its pid (given by `pid_of`) before anything
    /// can reap it; the receiver yields its exit.
    pub fn spawn_with<T>(
        &self,
        make: impl FnOnce() -> io::Result<T>,
        pid_of: impl Fn(&T) -> i32,
    ) -> io::Result<(T, oneshot::Receiver<ExitReason>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
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

fn reap_all(waiters: &Mutex<Waiters>) {
    let mut waiters = waiters.lock().unwrap_or_else(|e| e.into_inner());
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
