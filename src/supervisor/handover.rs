//! One instance across `herder update`: its actor holds still and reports what the next image
//! of the daemon needs ([`InstanceState`]: counters, policy memory, the phase with its pid and
//! deadlines, the descriptors of its notify socket and IPC channel), and the next image starts
//! an actor in that same phase. The process itself is untouched: it stays a child of the same
//! pid, so the new image waits for it as for any child.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::policy::PolicyState;
use super::{
    bind_notify, Actor, Cmd, Context, InstanceHandle, InstanceId, IpcChannel, Phase, Running, WatchDue,
};
use crate::health::notify::NotifySocket;
use crate::process::tree;
use crate::protocol::{AppSpec, ExitReason, InstanceInfo};

/// The exits of an adopted instance's processes, registered with the reaper.
pub struct Exits {
    pub main: Option<oneshot::Receiver<ExitReason>>,
    /// Of the process named by `MAINPID=`.
    pub next_main: Option<oneshot::Receiver<ExitReason>>,
}

/// What the next image needs of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceState {
    pub info: InstanceInfo,
    pub unstable: u32,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    pub cgroup_dirty: bool,
    pub auto_restart_pending: bool,
    #[serde(default)]
    pub notify: Option<NotifyState>,
    /// With `watch`: the app's files were watched (the new image watches them again).
    #[serde(default)]
    pub watching: bool,
    /// Watched files changed: the restart is due in this long.
    #[serde(default)]
    pub watch_due: Option<WatchDueState>,
    pub phase: PhaseState,
}

/// A burst of changes to watched files, waiting for quiet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchDueState {
    pub first_age_ms: u64,
    pub due_in_ms: u64,
    pub path: PathBuf,
}

/// An instance's `NOTIFY_SOCKET`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyState {
    pub fd: RawFd,
    pub path: Option<PathBuf>,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhaseState {
    Idle,
    /// Waiting to restart for this long still.
    Waiting {
        remaining_ms: u64,
    },
    Running {
        pid: i32,
        uptime_ms: u64,
        /// Where the kernel counts OOM kills of the instance, and the count at its start.
        #[serde(default)]
        oom: Option<(PathBuf, u64)>,
        /// A `wait_ready` instance's ready signal is due in this long.
        #[serde(default)]
        ready_in_ms: Option<u64>,
        /// The next `WATCHDOG=1` is due in this long.
        #[serde(default)]
        watchdog_in_ms: Option<u64>,
        /// Our end of a Node app's IPC channel.
        #[serde(default)]
        ipc_fd: Option<RawFd>,
        /// `MAINPID=`: the process that takes over as the main one when `pid` exits.
        #[serde(default)]
        next_main: Option<i32>,
    },
}

impl InstanceState {
    /// The pid of the running process, if any.
    pub fn pid(&self) -> Option<i32> {
        match self.phase {
            PhaseState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// The process named by `MAINPID=` to take over from the running one, if any.
    pub fn next_main(&self) -> Option<i32> {
        match self.phase {
            PhaseState::Running { next_main, .. } => next_main,
            _ => None,
        }
    }

    /// The descriptors the state names.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.notify.iter().map(|n| n.fd).collect();
        if let PhaseState::Running { ipc_fd: Some(fd), .. } = self.phase {
            fds.push(fd);
        }
        fds
    }
}

/// What an actor receives with `Cmd::Hold`.
pub(super) struct HoldRequest {
    held: oneshot::Sender<()>,
    report: oneshot::Receiver<oneshot::Sender<InstanceState>>,
    resume: oneshot::Receiver<()>,
}

/// An actor holding still: it acts on nothing (no exit, no timer, no command) until this is
/// dropped.
pub struct Held {
    report: Option<oneshot::Sender<oneshot::Sender<InstanceState>>>,
    _resume: oneshot::Sender<()>,
}

impl Held {
    /// The actor's state as of now. An exit the reaper already delivered is handled first, so
    /// once the reaper is paused the state says exactly which processes still run. `None` if
    /// asked twice or the actor is gone.
    pub async fn state(&mut self) -> Option<InstanceState> {
        let (tx, rx) = oneshot::channel();
        self.report.take()?.send(tx).ok()?;
        rx.await.ok()
    }
}

impl InstanceHandle {
    /// Ask the actor to hold still (once it is done with what it is doing, a stop say).
    /// `None` if the actor is gone.
    pub async fn hold(&self) -> Option<Held> {
        let (report_tx, report) = oneshot::channel();
        let (resume_tx, resume) = oneshot::channel();
        self.ask(|held| Cmd::Hold(HoldRequest { held, report, resume })).await?;
        Some(Held { report: Some(report_tx), _resume: resume_tx })
    }

    /// Start the actor of an instance an earlier image of the daemon ran, in the same phase.
    /// `exits` yield the exits of its processes (registered with the reaper); `take` claims
    /// an inherited descriptor by number.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        ctx: Arc<Context>,
        app_id: u32,
        index: u32,
        spec: Arc<AppSpec>,
        sockets: Arc<super::sockets::Sockets>,
        state: InstanceState,
        exits: Exits,
        take: &mut dyn FnMut(RawFd) -> Option<OwnedFd>,
    ) -> InstanceHandle {
        let id = InstanceId::new(app_id, index, state.info.generation);
        let notify = match state.notify.as_ref() {
            Some(n) => take(n.fd).and_then(|fd| {
                NotifySocket::from_inherited(fd, n.path.clone(), n.address.clone())
                    .map_err(|e| tracing::warn!(app = %spec.name, instance = index, error = %e, "cannot keep the notify socket"))
                    .ok()
            }),
            None => None,
        }
        .or_else(|| bind_notify(&ctx, id, &spec));
        let ipc = match state.phase {
            PhaseState::Running { ipc_fd: Some(fd), .. } => take(fd),
            _ => None,
        };
        let InstanceState {
            info,
            unstable,
            backoff_ms,
            cgroup_dirty,
            auto_restart_pending,
            watching,
            watch_due,
            phase,
            ..
        } = state;
        Self::start_actor(ctx, id, spec, info, notify, sockets, move |actor| {
            actor.policy = PolicyState { unstable, backoff_ms };
            actor.cgroup_dirty = cgroup_dirty;
            actor.auto_restart_pending = auto_restart_pending;
            if watching {
                actor.watcher = actor.start_watching();
            }
            let now = tokio::time::Instant::now();
            actor.watch_due = watch_due.map(|w| WatchDue {
                first: now.checked_sub(Duration::from_millis(w.first_age_ms)).unwrap_or(now),
                due: now + Duration::from_millis(w.due_in_ms),
                path: w.path,
            });
            actor.resume_phase(phase, exits, ipc)
        })
    }
}

fn remaining(deadline: Option<tokio::time::Instant>, now: tokio::time::Instant) -> Option<u64> {
    deadline.map(|d| d.saturating_duration_since(now).as_millis() as u64)
}

impl Actor {
    /// `Cmd::Hold`: hold still; report the state when asked; then go on in `phase` once let go.
    pub(super) async fn hold(&mut self, mut phase: Phase, req: HoldRequest) -> Phase {
        if req.held.send(()).is_err() {
            return phase;
        }
        if let Ok(reply) = req.report.await {
            // Asked after the reaper paused: an exit reaped before that is handled now (as the
            // run loop does); one after it waits, as a zombie, for the next image.
            phase = match phase {
                Phase::Running(mut run) => {
                    if let Some((_, rx)) = &mut run.next_main {
                        if rx.try_recv().is_ok() {
                            run.next_main = None;
                        }
                    }
                    match run.exit.try_recv() {
                        Ok(exit) => match run.next_main.take() {
                            Some((pid, rx)) if tree::alive(pid) => {
                                self.switch_main(&mut run, pid, rx, Some(exit));
                                Phase::Running(run)
                            }
                            _ => self.exited(Some(exit), &run),
                        },
                        Err(_) => Phase::Running(run),
                    }
                }
                other => other,
            };
            if reply.send(self.state(&phase)).is_ok() {
                let _ = req.resume.await;
            }
        }
        phase
    }

    fn state(&self, phase: &Phase) -> InstanceState {
        let now = tokio::time::Instant::now();
        let phase = match phase {
            Phase::Idle => PhaseState::Idle,
            Phase::Waiting(until) => {
                PhaseState::Waiting { remaining_ms: remaining(Some(*until), now).unwrap_or(0) }
            }
            Phase::Running(run) => PhaseState::Running {
                pid: run.pid,
                uptime_ms: run.started.elapsed().as_millis() as u64,
                oom: run.oom.clone(),
                ready_in_ms: remaining(run.ready_deadline, now),
                watchdog_in_ms: remaining(run.watchdog_deadline, now),
                ipc_fd: run.ipc.as_ref().map(|c| c.stream.as_raw_fd()),
                next_main: run.next_main.as_ref().map(|(pid, _)| *pid),
            },
        };
        InstanceState {
            info: self.info.clone(),
            unstable: self.policy.unstable,
            backoff_ms: self.policy.backoff_ms,
            cgroup_dirty: self.cgroup_dirty,
            auto_restart_pending: self.auto_restart_pending,
            notify: self.notify.as_ref().map(|n| {
                let (fd, path) = n.raw_parts();
                NotifyState { fd, path: path.map(PathBuf::from), address: n.address.clone() }
            }),
            watching: self.watcher.is_some(),
            watch_due: self.watch_due.as_ref().map(|w| WatchDueState {
                first_age_ms: now.saturating_duration_since(w.first).as_millis() as u64,
                due_in_ms: w.due.saturating_duration_since(now).as_millis() as u64,
                path: w.path.clone(),
            }),
            phase,
        }
    }

    /// The phase of an adopted instance.
    fn resume_phase(&mut self, phase: PhaseState, exits: Exits, ipc: Option<OwnedFd>) -> Phase {
        let now = tokio::time::Instant::now();
        match phase {
            PhaseState::Idle => Phase::Idle,
            PhaseState::Waiting { remaining_ms } => Phase::Waiting(now + Duration::from_millis(remaining_ms)),
            PhaseState::Running { pid, uptime_ms, oom, ready_in_ms, watchdog_in_ms, next_main, .. } => {
                // Without a registered exit the process cannot be waited for: a closed
                // channel reads as killed, and the restart policy applies.
                let exit = exits.main.unwrap_or_else(|| oneshot::channel().1);
                let next_main = next_main.zip(exits.next_main);
                let probes_before = std::mem::take(&mut self.info.probes);
                let probes = self.start_probes();
                if probes_before.len() == self.info.probes.len() {
                    self.info.probes = probes_before;
                }
                let started = tokio::time::Instant::now();
                Phase::Running(Running {
                    pid,
                    next_main,
                    oom,
                    exit,
                    started: started.checked_sub(Duration::from_millis(uptime_ms)).unwrap_or(started),
                    ready_deadline: ready_in_ms.map(|ms| now + Duration::from_millis(ms)),
                    watchdog_deadline: watchdog_in_ms.map(|ms| now + Duration::from_millis(ms)),
                    ipc: ipc.and_then(IpcChannel::new),
                    probes,
                    cron_deadline: self.cron_due(),
                })
            }
        }
    }
}
