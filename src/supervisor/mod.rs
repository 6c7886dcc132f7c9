//! Supervision: one tokio task (an actor) owns each instance of an app. Everything else holds
//! an [`InstanceHandle`], sends it commands and reads its latest [`InstanceInfo`] from a watch
//! channel without waiting on the actor.
//!
//! The actor ([`actor`]) spawns the process in its own session (and cgroup where possible)
//! through [`spawn`], applies the restart policy ([`policy`]) when it exits, and stops it with
//! [`crate::process::terminate`]. While it runs, the actor waits on every source of events at
//! once ([`running`]: the exit, the app's notices, probes, timers, watched files); what each of
//! those does is in [`triggers`]. [`handover`] carries an instance across `herder update`.

mod actor;
pub mod handover;
pub mod pidfile;
pub mod policy;
mod running;
pub mod sockets;
pub mod spawn;
pub mod spawner;
mod triggers;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::health::notify::NotifySocket;
use crate::paths::Paths;
use crate::process::cgroup::CgroupRoot;
use crate::process::reaper::Reaper;
use crate::process::{limits, usage};
use crate::protocol::{AppSpec, InstanceInfo, Status};
use actor::Actor;
use policy::PolicyState;
use running::{IpcChannel, Phase, Running, WatchDue};
use sockets::Sockets;

/// Exits kept in an instance's history.
const HISTORY_LEN: usize = 10;

/// Notices (or IPC messages) handled in a row before commands and timers get a turn.
const NOTICE_BURST: u32 = 64;

/// Which process slot of which app an actor runs, and the slot's generation. A replacement of
/// a running instance (a rolling reload) is the next generation of its slot: both run side by
/// side for a while, each with its own cgroup, notify socket, marker and limit groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId {
    pub app: u32,
    pub index: u32,
    pub generation: u32,
}

impl InstanceId {
    pub fn new(app: u32, index: u32, generation: u32) -> InstanceId {
        InstanceId { app, index, generation }
    }

    /// The name of its cgroup, notify socket and limit groups: `app-<id>-<index>`, then
    /// `-g<generation>` from the second generation on (the first keeps the names of state
    /// files written before generations existed).
    pub fn name(&self) -> String {
        match self.generation {
            0 => format!("app-{}-{}", self.app, self.index),
            g => format!("app-{}-{}-g{g}", self.app, self.index),
        }
    }
}

/// Bind the `NOTIFY_SOCKET` of instance `id`.
fn bind_notify(ctx: &Context, id: InstanceId, spec: &AppSpec) -> Option<NotifySocket> {
    let index = id.index;
    match NotifySocket::bind(&ctx.paths.run_dir(), &ctx.paths.token(), &id.name()) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(app = %spec.name, instance = index, error = %e, "no notify socket; `wait_ready` cannot see a ready signal");
            None
        }
    }
}

/// What every actor shares.
pub struct Context {
    pub paths: Paths,
    pub reaper: Reaper,
    pub cgroups: Option<CgroupRoot>,
    /// Where `memory_limit` and `cpu_limit` can be set.
    pub limits: limits::LimitRoots,
    /// Log writers shared by instances, and the channel to `logs -f` followers.
    pub logs: Arc<crate::logs::Hub>,
    /// Every instance's events, for `herder events` and hooks.
    pub events: tokio::sync::broadcast::Sender<crate::protocol::Event>,
    /// Woken whenever something worth persisting changed (a pid, a status).
    pub changed: Arc<Notify>,
    /// What starts and ends the instances' processes.
    pub spawner: Arc<dyn spawner::Spawner>,
}

impl Context {
    /// The marker value of one instance (see [`tree::MARKER_VAR`]).
    pub fn marker(&self, id: InstanceId) -> String {
        match id.generation {
            0 => format!("{}-{}-{}", self.paths.token(), id.app, id.index),
            g => format!("{}-{}-{}-g{g}", self.paths.token(), id.app, id.index),
        }
    }
}

enum Cmd {
    Start(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    Restart(Option<Arc<AppSpec>>, oneshot::Sender<()>),
    Signal(i32, oneshot::Sender<Result<(), String>>),
    Reset(oneshot::Sender<()>),
    /// Stop, remove the cgroup and end the actor.
    Shutdown(oneshot::Sender<()>),
    /// The process `pid` holds `rss` bytes, over `max_memory_restart`: restart it gracefully.
    MemoryRestart {
        pid: i32,
        rss: u64,
    },
    /// Hold still, report the state when asked, go on when let go (`herder update`).
    Hold(handover::HoldRequest),
}

/// A cloneable handle to one instance's actor.
#[derive(Clone)]
pub struct InstanceHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    status: watch::Receiver<InstanceInfo>,
    /// CPU and memory of the process tree at the last samples.
    usage: Arc<std::sync::Mutex<usage::Usage>>,
}

impl InstanceHandle {
    /// Start the actor of instance `id`. It begins `stopped`; send [`InstanceHandle::start`]
    /// to run it.
    /// `sockets` are the app's listening sockets (cluster mode), which it inherits.
    pub fn spawn(
        ctx: Arc<Context>,
        id: InstanceId,
        spec: Arc<AppSpec>,
        sockets: Arc<Sockets>,
    ) -> InstanceHandle {
        Self::spawn_with(ctx, id, spec, InstanceInfo::new(id.index), sockets)
    }

    /// Start an actor that carries over counters from an earlier life (crash recovery).
    pub fn spawn_with(
        ctx: Arc<Context>,
        id: InstanceId,
        spec: Arc<AppSpec>,
        mut info: InstanceInfo,
        sockets: Arc<Sockets>,
    ) -> InstanceHandle {
        info.pid = None;
        info.status = if info.status == Status::Errored { Status::Errored } else { Status::Stopped };
        let notify = bind_notify(&ctx, id, &spec);
        Self::start_actor(ctx, id, spec, info, notify, sockets, |_| Phase::Idle)
    }

    /// Start the actor of an instance in the phase `first` sets up.
    fn start_actor(
        ctx: Arc<Context>,
        id: InstanceId,
        spec: Arc<AppSpec>,
        mut info: InstanceInfo,
        notify: Option<NotifySocket>,
        sockets: Arc<Sockets>,
        first: impl FnOnce(&mut Actor) -> Phase,
    ) -> InstanceHandle {
        let cgroup = ctx.cgroups.as_ref().map(|root| root.instance(&id.name()));
        info.index = id.index;
        info.generation = id.generation;
        info.cgroup = cgroup.as_ref().map(|c| c.path.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(info.clone());
        let mut actor = Actor {
            id,
            marker: ctx.marker(id),
            ctx,
            spec,
            info,
            status: status_tx,
            policy: PolicyState::default(),
            cgroup,
            cgroup_dirty: true,
            notify,
            auto_restart_pending: false,
            watcher: None,
            watch_due: None,
            run_as: None,
            sockets,
            log_files: Vec::new(),
            log_note: None,
        };
        let phase = first(&mut actor);
        actor.status.send_replace(actor.info.clone());
        tokio::spawn(Box::new(actor).run(rx, phase));
        InstanceHandle { tx, status, usage: Arc::default() }
    }

    /// Whether `other` is a handle to the same actor.
    pub fn same(&self, other: &InstanceHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// The latest state, with the figures of the last sample.
    pub fn snapshot(&self) -> InstanceInfo {
        let mut info = self.status.borrow().clone();
        let u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if info.pid.is_some() && u.pid() == info.pid.map(|p| p as i32) {
            info.memory_bytes = u.rss;
            info.cpu_percent = u.cpu_percent;
            info.cpu_seconds = u.cpu_seconds;
            info.processes = u.processes;
        }
        info
    }

    /// [`InstanceHandle::snapshot`] with the recent samples (for `show` and `monit`).
    pub fn snapshot_with_history(&self) -> InstanceInfo {
        let mut info = self.snapshot();
        info.usage_history =
            self.usage.lock().unwrap_or_else(|e| e.into_inner()).history.iter().copied().collect();
        info
    }

    /// CPU and memory over the last hour (see [`usage::HourRing`]).
    pub fn usage_hour(&self, now_ms: u64) -> Vec<usage::HourPoint> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).hour.points(now_ms)
    }

    /// Measure the instance's process tree now (called by the daemon's sampler). Returns the
    /// pid and its tree's resident memory.
    pub fn sample(&self, now: std::time::Instant) -> Option<(i32, u64)> {
        let (pid, cgroup) = {
            let info = self.status.borrow();
            (info.pid.map(|p| p as i32), info.cgroup.clone())
        };
        let reading = pid.and_then(|p| usage::measure(p, cgroup.as_deref()));
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).update(pid, reading, now);
        Some((pid?, reading?.rss))
    }

    /// The tree of `pid` went over `max_memory_restart` with `rss` bytes.
    pub fn memory_restart(&self, pid: i32, rss: u64) {
        let _ = self.tx.send(Cmd::MemoryRestart { pid, rss });
    }

    /// A receiver of every state the instance publishes (it ends with the actor).
    pub fn watch(&self) -> watch::Receiver<InstanceInfo> {
        self.status.clone()
    }

    /// The latest state as last published, without reading /proc.
    pub fn info(&self) -> InstanceInfo {
        self.status.borrow().clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// Start if not running; returns once the process is spawned (or failed to be).
    pub async fn start(&self) {
        self.ask(Cmd::Start).await;
    }

    /// Stop gracefully; returns once nothing of the instance runs.
    pub async fn stop(&self) {
        self.ask(Cmd::Stop).await;
    }

    /// Stop if running, then start, with `spec` when given.
    pub async fn restart(&self, spec: Option<Arc<AppSpec>>) {
        self.ask(|tx| Cmd::Restart(spec, tx)).await;
    }

    pub async fn signal(&self, sig: i32) -> Result<(), String> {
        self.ask(|tx| Cmd::Signal(sig, tx)).await.unwrap_or_else(|| Err("the instance is gone".into()))
    }

    pub async fn reset(&self) {
        self.ask(Cmd::Reset).await;
    }

    /// Stop and end the actor.
    pub async fn shutdown(&self) {
        self.ask(Cmd::Shutdown).await;
    }
}

impl InstanceInfo {
    /// A fresh, never started instance.
    pub fn new(index: u32) -> InstanceInfo {
        InstanceInfo {
            index,
            generation: 0,
            id: None,
            status: Status::Stopped,
            pid: None,
            port: None,
            start_ticks: None,
            started_at_ms: None,
            restarts: 0,
            unstable_restarts: 0,
            last_exit: None,
            reason: None,
            cgroup: None,
            memory_bytes: None,
            cpu_percent: None,
            cpu_seconds: None,
            processes: None,
            usage_history: Vec::new(),
            history: Vec::new(),
            oom_kills: 0,
            status_text: None,
            probes: Vec::new(),
            unready: false,
        }
    }
}

#[cfg(test)]
mod tests;
