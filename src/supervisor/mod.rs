//! Supervision: one tokio task (an actor) owns each instance of an app. Everything else holds
//! an [`InstanceHandle`], sends it commands and reads its latest [`InstanceInfo`] from a watch
//! channel without waiting on the actor.
//!
//! The actor spawns the process in its own session (and cgroup where possible), applies the
//! restart policy ([`policy`]) when it exits, and stops it by signalling its process group,
//! waiting `kill_timeout`, then killing every process left ([`tree`], [`cgroup`]).

pub mod handover;
pub mod pidfile;
pub mod policy;
pub mod spawn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::sleep_until;

use crate::health::notify::{Notice, NotifySocket};
use crate::health::probe::{self, ProbeResult};
use crate::health::watch::{Ignore, Watcher};
use crate::paths::Paths;
use crate::process::cgroup::{Cgroup, CgroupRoot};
use crate::process::reaper::Reaper;
use crate::process::terminate::Group;
use crate::process::{fork, limits, tree, usage};
use crate::protocol::secrets;
use crate::protocol::spec::ProbeKind;
use crate::protocol::EventKind;
use crate::protocol::ProbeState;
use crate::protocol::{now_ms, AppSpec, ExitReason, ExitRecord, InstanceInfo, Status};
use policy::{Decision, PolicyState};

/// Exits kept in an instance's history.
const HISTORY_LEN: usize = 10;

/// Notices (or IPC messages) handled in a row before commands and timers get a turn.
const NOTICE_BURST: u32 = 64;

/// Bind instance `index` of app `app_id`'s `NOTIFY_SOCKET`.
fn bind_notify(ctx: &Context, app_id: u32, index: u32, spec: &AppSpec) -> Option<NotifySocket> {
    match NotifySocket::bind(&ctx.paths.run_dir(), &ctx.paths.token(), &format!("app-{app_id}-{index}")) {
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
}

impl Context {
    /// The marker value of one instance (see [`tree::MARKER_VAR`]).
    pub fn marker(&self, app_id: u32, index: u32) -> String {
        format!("{}-{app_id}-{index}", self.paths.token())
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
    /// Start the actor of instance `index` of app `app_id`. It begins `stopped`; send
    /// [`InstanceHandle::start`] to run it.
    pub fn spawn(ctx: Arc<Context>, app_id: u32, index: u32, spec: Arc<AppSpec>) -> InstanceHandle {
        Self::spawn_with(ctx, app_id, index, spec, InstanceInfo::new(index))
    }

    /// Start an actor that carries over counters from an earlier life (crash recovery).
    pub fn spawn_with(
        ctx: Arc<Context>,
        app_id: u32,
        index: u32,
        spec: Arc<AppSpec>,
        mut info: InstanceInfo,
    ) -> InstanceHandle {
        info.pid = None;
        info.status = if info.status == Status::Errored { Status::Errored } else { Status::Stopped };
        let notify = bind_notify(&ctx, app_id, index, &spec);
        Self::start_actor(ctx, app_id, index, spec, info, notify, |_| Phase::Idle)
    }

    /// Start the actor of an instance in the phase `first` sets up.
    fn start_actor(
        ctx: Arc<Context>,
        app_id: u32,
        index: u32,
        spec: Arc<AppSpec>,
        mut info: InstanceInfo,
        notify: Option<NotifySocket>,
        first: impl FnOnce(&mut Actor) -> Phase,
    ) -> InstanceHandle {
        let cgroup = ctx.cgroups.as_ref().map(|root| root.instance(app_id, index));
        info.index = index;
        info.cgroup = cgroup.as_ref().map(|c| c.path.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(info.clone());
        let mut actor = Actor {
            app_id,
            marker: ctx.marker(app_id, index),
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
        };
        let phase = first(&mut actor);
        actor.status.send_replace(actor.info.clone());
        tokio::spawn(actor.run(rx, phase));
        InstanceHandle { tx, status, usage: Arc::default() }
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
            status: Status::Stopped,
            pid: None,
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
        }
    }
}

struct Running {
    pid: i32,
    /// `MAINPID=`: the process that takes over as the main one when `pid` exits.
    next_main: Option<(i32, oneshot::Receiver<ExitReason>)>,
    /// Where the kernel counts OOM kills of the instance, and the count at its start.
    oom: Option<(PathBuf, u64)>,
    exit: oneshot::Receiver<ExitReason>,
    started: Instant,
    /// While a `wait_ready` instance is launching: when its ready signal is due.
    ready_deadline: Option<tokio::time::Instant>,
    /// With `watchdog`: when the next `WATCHDOG=1` is due.
    watchdog_deadline: Option<tokio::time::Instant>,
    /// A Node app's IPC channel (`process.send('ready')`).
    ipc: Option<IpcChannel>,
    /// Its health probes, which end with it.
    probes: Option<Probes>,
    /// With `cron_restart`: when the next scheduled restart is due.
    cron_deadline: Option<tokio::time::Instant>,
}

/// The probe tasks of a running instance and their results.
struct Probes {
    results: mpsc::Receiver<ProbeResult>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The next probe result; never, without probes.
async fn recv_probe(probes: &mut Option<Probes>) -> Option<ProbeResult> {
    match probes {
        Some(p) => p.results.recv().await,
        None => std::future::pending().await,
    }
}

/// Our end of a Node app's IPC channel: JSON values, one per line.
struct IpcChannel {
    stream: tokio::net::UnixStream,
    buf: Vec<u8>,
}

impl IpcChannel {
    fn new(fd: std::os::fd::OwnedFd) -> Option<IpcChannel> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true).ok()?;
        Some(IpcChannel { stream: tokio::net::UnixStream::from_std(std).ok()?, buf: Vec::new() })
    }

    /// The next whole message already read (`Some(vec![])` for one that means nothing here).
    fn take_message(&mut self) -> Option<Vec<Notice>> {
        let nl = self.buf.iter().position(|b| *b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        // `process.send('ready')` arrives as the JSON string "ready".
        let ready = serde_json::from_slice::<serde_json::Value>(&line).is_ok_and(|v| v == "ready");
        Some(if ready { vec![Notice::Ready] } else { Vec::new() })
    }

    /// Every message queued now, read without waiting (see [`NotifySocket::queued`]).
    fn queued(&mut self) -> Vec<Notice> {
        use std::os::fd::AsRawFd;
        let mut chunk = [0u8; 1024];
        for _ in 0..64 {
            // SAFETY: recv(2) into a local buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n as usize]);
        }
        std::iter::from_fn(|| self.take_message()).flatten().collect()
    }
}

/// The next messages on a Node app's IPC channel (`Some(vec![])` for messages that mean
/// nothing here); `None` once it is closed; never, without one.
async fn recv_ipc(ipc: &mut Option<IpcChannel>) -> Option<Vec<Notice>> {
    let Some(ch) = ipc else { return std::future::pending().await };
    loop {
        if let Some(notices) = ch.take_message() {
            return Some(notices);
        }
        if ch.stream.readable().await.is_err() {
            return None;
        }
        let mut chunk = [0u8; 1024];
        match ch.stream.try_read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                ch.buf.extend_from_slice(&chunk[..n]);
                // A line this long is not a message of ours.
                if ch.buf.len() > 64 * 1024 {
                    ch.buf.clear();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
}

// One per actor, moved only when the phase changes: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Phase {
    Idle,
    Running(Running),
    Waiting(tokio::time::Instant),
}

/// A burst of changes to watched files, waiting for quiet.
struct WatchDue {
    /// The first change of the burst.
    first: tokio::time::Instant,
    /// When the restart comes unless more changes arrive.
    due: tokio::time::Instant,
    /// The first path that changed, for the event.
    path: PathBuf,
}

struct Actor {
    app_id: u32,
    ctx: Arc<Context>,
    spec: Arc<AppSpec>,
    info: InstanceInfo,
    status: watch::Sender<InstanceInfo>,
    policy: PolicyState,
    cgroup: Option<Cgroup>,
    /// Something was killed in the cgroup (or it may hold leftovers of an earlier daemon):
    /// the next spawn gets a fresh one (see [`Cgroup::prepare`]).
    cgroup_dirty: bool,
    marker: String,
    /// The next launch is an automatic restart (counted in `restarts`).
    auto_restart_pending: bool,
    /// The instance's `NOTIFY_SOCKET` (none if it could not be bound).
    notify: Option<NotifySocket>,
    /// With `watch`: the app's files, watched from its start until it is stopped.
    watcher: Option<Watcher>,
    /// A watched file changed: when the restart is due.
    watch_due: Option<WatchDue>,
    /// The account of the last start (`user`/`group`), which its `exec` probes run as too.
    run_as: Option<fork::Credentials>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, mut phase: Phase) {
        let mut notices_in_a_row = 0;
        loop {
            phase = match phase {
                Phase::Idle => tokio::select! {
                    cmd = rx.recv() => match cmd {
                        None => break,
                        Some(cmd) => match self.command(cmd, None).await {
                            Some(p) => p,
                            None => break,
                        },
                    },
                    // An app that gave up (errored) is tried again once its files change and
                    // settle: the fix for a crash on start is an edit.
                    path = watch_changed(&mut self.watcher), if self.info.status == Status::Errored => {
                        self.on_watch_change(path);
                        Phase::Idle
                    }
                    _ = sleep_until_some(self.watch_due.as_ref().map(|d| d.due)), if self.info.status == Status::Errored => {
                        self.watch_start(true)
                    }
                },
                // In this order: the exit, what the app said (a `WATCHDOG=1` or `READY=1` queued
                // while the daemon did not run, as during an update, wins over the deadline it
                // answers), commands, then the timers, which complete once each. Every
                // `NOTICE_BURST` notices in a row, the others get a turn: a flood of notices
                // must not hold a stop back.
                Phase::Running(mut run) => tokio::select! {
                    biased;
                    exit = &mut run.exit => match run.next_main.take() {
                        Some((pid, rx)) if tree::alive(pid) => {
                            self.switch_main(&mut run, pid, rx, exit.ok());
                            Phase::Running(run)
                        }
                        _ => self.exited(exit.ok(), &run),
                    },
                    notices = recv_notices(self.notify.as_ref()), if notices_in_a_row < NOTICE_BURST => {
                        notices_in_a_row += 1;
                        self.on_notices(notices, &mut run);
                        Phase::Running(run)
                    }
                    msg = recv_ipc(&mut run.ipc), if notices_in_a_row < NOTICE_BURST => {
                        notices_in_a_row += 1;
                        match msg {
                            Some(notices) => self.on_notices(notices, &mut run),
                            None => run.ipc = None,
                        }
                        Phase::Running(run)
                    }
                    result = recv_probe(&mut run.probes) => match result {
                        Some(result) => self.on_probe(result, run).await,
                        None => {
                            run.probes = None;
                            Phase::Running(run)
                        }
                    },
                    cmd = rx.recv() => match cmd {
                        None => {
                            self.stop_process(run).await;
                            break;
                        }
                        Some(cmd) => match self.command(cmd, Some(run)).await {
                            Some(p) => p,
                            None => break,
                        },
                    },
                    _ = sleep_until_some(run.ready_deadline) => self.failed_start(run).await,
                    _ = sleep_until_some(run.cron_deadline) => self.cron_restart(run).await,
                    _ = sleep_until_some(run.watchdog_deadline) => self.watchdog_missed(run).await,
                    path = watch_changed(&mut self.watcher) => {
                        self.on_watch_change(path);
                        Phase::Running(run)
                    }
                    _ = sleep_until_some(self.watch_due.as_ref().map(|d| d.due)) => self.watch_restart(run).await,
                    // The others' turn came and none was ready: notices again.
                    _ = std::future::ready(()), if notices_in_a_row >= NOTICE_BURST => {
                        notices_in_a_row = 0;
                        Phase::Running(run)
                    }
                },
                Phase::Waiting(until) => tokio::select! {
                    _ = sleep_until(until) => self.launch(),
                    path = watch_changed(&mut self.watcher) => {
                        self.on_watch_change(path);
                        Phase::Waiting(until)
                    }
                    _ = sleep_until_some(self.watch_due.as_ref().map(|d| d.due)) => self.watch_start(false),
                    cmd = rx.recv() => match cmd {
                        None => break,
                        Some(cmd) => {
                            // A command during the delay acts as on a stopped instance, except
                            // that a signal has nothing to reach and the delay goes on.
                            if let Cmd::Signal(_, reply) = cmd {
                                let _ = reply.send(Err("the instance is waiting to restart".into()));
                                Phase::Waiting(until)
                            } else if let Cmd::Reset(reply) = cmd {
                                self.reset();
                                let _ = reply.send(());
                                Phase::Waiting(until)
                            } else if let Cmd::Hold(req) = cmd {
                                self.hold(Phase::Waiting(until), req).await
                            } else {
                                self.auto_restart_pending = false;
                                match self.command(cmd, None).await {
                                    Some(p) => p,
                                    None => break,
                                }
                            }
                        }
                    },
                },
            };
        }
        if let Some(cg) = &self.cgroup {
            if cg.populated() {
                let cg = cg.clone();
                let _ = tokio::task::spawn_blocking(move || cg.kill_and_wait(Duration::from_secs(5))).await;
            }
            cg.remove();
        }
        self.ctx.limits.remove(self.app_id, self.info.index);
    }

    /// Carry out `cmd`; `running` is the live process, if any. `None` ends the actor.
    async fn command(&mut self, cmd: Cmd, running: Option<Running>) -> Option<Phase> {
        match cmd {
            Cmd::Start(reply) => {
                let phase = match running {
                    Some(run) => Phase::Running(run),
                    None => {
                        self.policy = PolicyState::default();
                        self.info.unstable_restarts = 0;
                        self.launch()
                    }
                };
                let _ = reply.send(());
                Some(phase)
            }
            Cmd::Stop(reply) => {
                if let Some(run) = running {
                    self.stop_process(run).await;
                }
                // A stopped app is not watched (as `pm2 stop`); `start` watches it again.
                self.watcher = None;
                self.watch_due = None;
                self.info.status = Status::Stopped;
                self.info.reason = None;
                self.publish();
                let _ = reply.send(());
                Some(Phase::Idle)
            }
            Cmd::Restart(spec, reply) => {
                let was_up = running.is_some();
                self.event(EventKind::Restart, None, Some("requested".into()));
                if let Some(run) = running {
                    self.stop_process(run).await;
                }
                if let Some(spec) = spec {
                    if spec.watch != self.spec.watch || spec.ignore_watch != self.spec.ignore_watch {
                        self.watcher = None;
                    }
                    self.spec = spec;
                }
                if was_up {
                    self.info.restarts += 1;
                }
                self.policy = PolicyState::default();
                self.info.unstable_restarts = 0;
                let phase = self.launch();
                let _ = reply.send(());
                Some(phase)
            }
            Cmd::Signal(sig, reply) => {
                let res = match &running {
                    Some(run) => {
                        // SAFETY: kill(2) on our own child's pid, which stays ours until reaped.
                        if unsafe { libc::kill(run.pid, sig) } == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error().to_string())
                        }
                    }
                    None => Err(format!("the instance is {}", self.info.status)),
                };
                let _ = reply.send(res);
                Some(running.map_or(Phase::Idle, Phase::Running))
            }
            Cmd::Reset(reply) => {
                self.reset();
                let _ = reply.send(());
                Some(running.map_or(Phase::Idle, Phase::Running))
            }
            Cmd::MemoryRestart { pid, rss } => match running {
                Some(run) if run.pid == pid => Some(self.memory_restart(run, rss).await),
                // A sample of a process that is already gone: nothing to do.
                other => Some(other.map_or(Phase::Idle, Phase::Running)),
            },
            Cmd::Shutdown(reply) => {
                if let Some(run) = running {
                    self.stop_process(run).await;
                }
                self.info.status = Status::Stopped;
                self.publish();
                // Reply after the cgroup is gone: `run` cleans it up when this returns None.
                if let Some(cg) = &self.cgroup {
                    cg.remove();
                }
                let _ = reply.send(());
                None
            }
            Cmd::Hold(req) => Some(self.hold(running.map_or(Phase::Idle, Phase::Running), req).await),
        }
    }

    fn reset(&mut self) {
        self.info.restarts = 0;
        self.info.unstable_restarts = 0;
        self.info.oom_kills = 0;
        self.policy = PolicyState::default();
        self.publish();
    }

    /// Tell `herder events` (and hooks) that `kind` happened.
    fn event(&self, kind: EventKind, exit: Option<ExitReason>, detail: Option<String>) {
        if self.ctx.events.receiver_count() == 0 {
            return;
        }
        let _ = self.ctx.events.send(crate::protocol::Event {
            at_ms: now_ms(),
            kind,
            app: self.spec.name.clone(),
            instance: self.info.index,
            pid: self.info.pid,
            exit,
            detail: detail.map(|d| secrets::scrub(&d, &secrets::secret_values(&self.spec.env))),
        });
    }

    fn publish(&self) {
        self.status.send_replace(self.info.clone());
        self.ctx.changed.notify_one();
    }

    /// Spawn the process; on failure the instance is `errored` with the reason.
    fn launch(&mut self) -> Phase {
        if std::mem::take(&mut self.auto_restart_pending) {
            self.info.restarts += 1;
        }
        // The account is looked up for each start: the passwd and group files may have changed.
        let spawned = match crate::users::switch_for(self.spec.user.as_deref(), self.spec.group.as_deref()) {
            Ok(account) => {
                self.place_notify(account.as_ref());
                self.run_as = account.as_ref().map(fork::Credentials::of);
                spawn::spawn_instance(
                    &self.ctx,
                    &self.spec,
                    self.app_id,
                    self.info.index,
                    self.cgroup.as_ref(),
                    self.cgroup_dirty,
                    &self.marker,
                    self.notify.as_ref().map(|n| n.address.as_str()),
                    account.as_ref(),
                )
            }
            Err(e) => Err(spawn::SpawnError::new(&self.spec.program, e.to_string())),
        };
        self.watch_due = None;
        if self.watcher.is_none() && !self.spec.watch.is_empty() {
            self.watcher = self.start_watching();
        } else if let Some(w) = &mut self.watcher {
            // Whatever changed up to this start (during a stop, a restart command, a backoff)
            // is in the files the new process reads: not a reason to restart it again.
            w.drain();
        }
        match spawned {
            Ok(s) => {
                self.cgroup_dirty = false;
                self.info.pid = Some(s.pid as u32);
                self.info.start_ticks = s.start_ticks;
                self.info.started_at_ms = Some(now_ms());
                self.info.status_text = s.limit_note.clone();
                if let Some(note) = &s.limit_note {
                    self.event(EventKind::Limits, None, Some(note.clone()));
                }
                let ready_deadline = self.spec.wait_ready.then(|| {
                    tokio::time::Instant::now() + Duration::from_millis(self.spec.listen_timeout_ms)
                });
                let probes = self.start_probes();
                let readiness = self.spec.health.iter().any(|p| p.kind == ProbeKind::Readiness);
                if ready_deadline.is_some() || readiness {
                    // Online only once the app says so and its readiness probes pass.
                    self.info.status = Status::Launching;
                } else {
                    self.info.status = Status::Online;
                    self.info.reason = None;
                }
                self.write_pid_file(s.pid);
                self.publish();
                tracing::info!(app = %self.spec.name, instance = self.info.index, pid = s.pid, "started");
                self.event(EventKind::Start, None, None);
                let watchdog_deadline = self.watchdog_due();
                Phase::Running(Running {
                    pid: s.pid,
                    next_main: None,
                    oom: s.oom,
                    exit: s.exit,
                    started: s.started,
                    ready_deadline,
                    watchdog_deadline,
                    ipc: s.ipc.and_then(IpcChannel::new),
                    probes,
                    cron_deadline: self.cron_due(),
                })
            }
            Err(e) => {
                self.info.pid = None;
                self.info.status = Status::Errored;
                self.info.reason = Some(e.to_string());
                self.publish();
                tracing::warn!(app = %self.spec.name, instance = self.info.index, error = %e, "cannot start");
                Phase::Idle
            }
        }
    }

    /// Where the app's user can send its notices: a socket in `HERDER_HOME/run/` serves the
    /// daemon's own account; an app that runs as another user needs one in a directory of
    /// its own, owned by that user (see [`NotifySocket::bind_owned`]).
    fn place_notify(&mut self, account: Option<&crate::users::Account>) {
        // SAFETY: geteuid(2) and getegid(2) cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let owner = account.filter(|a| a.uid != euid).map(|a| (a.uid, a.gid));
        if let Some(n) = self.notify.as_ref().filter(|n| n.is_owned()) {
            // Handed to this start's account (back to the daemon's without one).
            let (uid, gid) = owner.unwrap_or((euid, egid));
            if let Err(e) = n.chown(uid, gid) {
                tracing::warn!(app = %self.spec.name, instance = self.info.index, error = %e, "cannot hand the notify socket to the app's user");
            }
            return;
        }
        let Some((uid, gid)) = owner else { return };
        let name = format!("app-{}-{}", self.app_id, self.info.index);
        let bound = self
            .ctx
            .paths
            .ensure_shared_run_dir()
            .and_then(|root| NotifySocket::bind_owned(&root, &name, uid, gid));
        match bound {
            Ok(n) => self.notify = Some(n),
            Err(e) => {
                tracing::warn!(app = %self.spec.name, instance = self.info.index, error = %e, "no notify socket the app's user can reach; `wait_ready` cannot see a ready signal");
                self.notify = None;
            }
        }
    }

    /// Write `pid_file` for the main process `pid`; a failure shows in the status text.
    fn write_pid_file(&mut self, pid: i32) {
        let Some(path) = pidfile::path_for(&self.spec, self.info.index) else { return };
        if let Err(e) = pidfile::write(&path, pid) {
            let why = format!("`pid_file` {} not written: {e}", path.display());
            tracing::warn!(app = %self.spec.name, instance = self.info.index, "{why}");
            self.info.status_text = Some(why);
        }
    }

    fn record_exit(&mut self, exit: ExitReason, started: Instant, oom: Option<&(PathBuf, u64)>) -> u64 {
        let uptime_ms = started.elapsed().as_millis() as u64;
        // A SIGKILL while the kernel's count of OOM kills in the instance's group went up.
        let oom_killed = exit == ExitReason::Signal(libc::SIGKILL)
            && oom.is_some_and(|(file, before)| limits::oom_count(file) > *before);
        if oom_killed {
            self.info.oom_kills += 1;
            tracing::warn!(app = %self.spec.name, instance = self.info.index, "killed by the kernel: over `memory_limit`");
            self.event(
                EventKind::Oom,
                Some(exit),
                self.spec.memory_limit.map(|b| format!("over memory_limit ({b} bytes)")),
            );
        }
        let rec = ExitRecord { at_ms: now_ms(), reason: exit, uptime_ms, oom_killed, memory_restart: None };
        self.info.last_exit = Some(rec.clone());
        self.info.history.push(rec);
        if self.info.history.len() > HISTORY_LEN {
            self.info.history.remove(0);
        }
        if let (Some(path), Some(pid)) = (pidfile::path_for(&self.spec, self.info.index), self.info.pid) {
            pidfile::remove(&path, pid as i32);
        }
        self.info.pid = None;
        self.info.start_ticks = None;
        uptime_ms
    }

    /// The main process exited on its own.
    fn exited(&mut self, exit: Option<ExitReason>, run: &Running) -> Phase {
        // A closed channel means the reaper is gone, which only happens at daemon exit.
        let exit = exit.unwrap_or(ExitReason::Signal(libc::SIGKILL));
        let uptime_ms = self.record_exit(exit, run.started, run.oom.as_ref());
        tracing::info!(app = %self.spec.name, instance = self.info.index, %exit, uptime_ms, "exited");
        self.event(EventKind::Exit, Some(exit), Some(format!("after {uptime_ms} ms")));
        // What the app left behind (children of a crashed parent) would run twice after the
        // restart: end it first.
        self.kill_leftovers();
        self.after_exit(exit, uptime_ms)
    }

    /// Messages from the app on its notify socket.
    fn on_notices(&mut self, notices: Vec<Notice>, run: &mut Running) {
        for n in notices {
            match n {
                Notice::Ready if run.ready_deadline.is_some() => {
                    run.ready_deadline = None;
                    tracing::info!(app = %self.spec.name, instance = self.info.index, "ready");
                    self.maybe_online(run);
                }
                Notice::Status(text) => self.info.status_text = Some(text),
                Notice::Watchdog => run.watchdog_deadline = self.watchdog_due(),
                Notice::Stopping => {
                    // The app is shutting down on its own; its exit is handled as any other.
                    self.info.status = Status::Stopping;
                    self.event(EventKind::Stopping, None, Some("the app sent `STOPPING=1`".into()));
                }
                Notice::MainPid(pid) => self.main_pid(run, pid as i32),
                Notice::Ready | Notice::Reloading => {}
            }
        }
        self.publish();
    }

    /// A deadline came: first handle what the app sent that is still queued. The runtime may
    /// not have seen it yet (it was sent while the daemon did not run: an update, a stopped
    /// daemon), and a `WATCHDOG=1` or `READY=1` there answers the deadline.
    fn take_queued(&mut self, run: &mut Running) {
        let mut notices = self.notify.as_ref().map(NotifySocket::queued).unwrap_or_default();
        if let Some(ch) = &mut run.ipc {
            notices.extend(ch.queued());
        }
        if !notices.is_empty() {
            self.on_notices(notices, run);
        }
    }

    /// `MAINPID=<pid>`: a process of the instance will be its main one (an app that re-executes
    /// or forks its server). Honoured when `pid` is a descendant of the instance and the daemon
    /// is a subreaper, so that it becomes the daemon's child when the current one exits.
    fn main_pid(&mut self, run: &mut Running, pid: i32) {
        if pid <= 0 || pid == run.pid {
            return;
        }
        // SAFETY: prctl(2) reading a flag of this process.
        let mut subreaper: libc::c_int = 0;
        let is_subreaper =
            unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut subreaper as *mut libc::c_int) } == 0
                && subreaper != 0;
        let ours = match &self.cgroup {
            Some(cg) if cg.populated() => cg.pids().contains(&pid),
            _ => tree::descendants(run.pid).contains(&pid),
        };
        if !ours || !is_subreaper {
            tracing::warn!(app = %self.spec.name, instance = self.info.index, pid, ours, is_subreaper, "`MAINPID=` ignored");
            return;
        }
        if let Some(rx) = self.ctx.reaper.adopt(pid) {
            run.next_main = Some((pid, rx));
            tracing::info!(app = %self.spec.name, instance = self.info.index, pid, "`MAINPID=`: main process once the current one exits");
        }
    }

    /// The main process exited after naming its successor (`MAINPID=`), which lives on: it is
    /// the instance's main process from now on.
    fn switch_main(
        &mut self,
        run: &mut Running,
        pid: i32,
        exit: oneshot::Receiver<ExitReason>,
        old: Option<ExitReason>,
    ) {
        tracing::info!(app = %self.spec.name, instance = self.info.index, old = run.pid, pid, "main process handed over");
        self.event(EventKind::Mainpid, old, Some(format!("pid {} handed over to pid {pid}", run.pid)));
        if let Some(path) = pidfile::path_for(&self.spec, self.info.index) {
            pidfile::remove(&path, run.pid);
        }
        run.pid = pid;
        run.exit = exit;
        self.info.pid = Some(pid as u32);
        self.info.start_ticks = tree::start_ticks(pid);
        self.write_pid_file(pid);
        self.publish();
    }

    /// A `wait_ready` instance gave no ready signal within `listen_timeout`: the start failed.
    /// It is stopped and counts as an unstable run, so the restart policy (and in the end
    /// `errored`) applies; it is never shown as online.
    async fn failed_start(&mut self, mut run: Running) -> Phase {
        self.take_queued(&mut run);
        if run.ready_deadline.is_none() {
            return Phase::Running(run);
        }
        let why = format!("no ready signal within `listen_timeout` ({} ms)", self.spec.listen_timeout_ms);
        tracing::warn!(app = %self.spec.name, instance = self.info.index, "{why}");
        self.stop_process(run).await;
        let exit = self.info.last_exit.as_ref().map_or(ExitReason::Signal(libc::SIGKILL), |e| e.reason);
        let phase = self.after_exit(exit, 0);
        self.info.reason = Some(match self.info.reason.take() {
            Some(r) => format!("{why}; {r}"),
            None => why,
        });
        self.publish();
        phase
    }

    /// Start the instance's health probes (fresh state each run).
    fn start_probes(&mut self) -> Option<Probes> {
        self.info.probes = self
            .spec
            .health
            .iter()
            .map(|p| ProbeState {
                kind: match p.kind {
                    ProbeKind::Liveness => "liveness".into(),
                    ProbeKind::Readiness => "readiness".into(),
                },
                target: probe::describe(&p.check),
                // Alive until proven otherwise; ready once proven.
                healthy: p.kind == ProbeKind::Liveness,
                failures: 0,
                successes: 0,
                last_error: None,
            })
            .collect();
        if self.spec.health.is_empty() {
            return None;
        }
        let (results, tasks) = probe::start(
            self.spec.health.clone(),
            self.ctx.reaper.clone(),
            self.spec.cwd.clone(),
            (*self.spec.env).clone(),
            self.run_as.clone(),
        );
        Some(Probes { results, tasks })
    }

    /// `launching` → `online` once the ready signal (if awaited) came and every readiness
    /// probe passes.
    fn maybe_online(&mut self, run: &Running) {
        let probes_ready = self
            .spec
            .health
            .iter()
            .zip(&self.info.probes)
            .all(|(spec, state)| spec.kind != ProbeKind::Readiness || state.healthy);
        if self.info.status == Status::Launching && run.ready_deadline.is_none() && probes_ready {
            self.info.status = Status::Online;
            self.info.reason = None;
            tracing::info!(app = %self.spec.name, instance = self.info.index, "online");
            self.event(EventKind::Ready, None, None);
        }
    }

    /// One probe result: count it, and act when a threshold is crossed.
    async fn on_probe(&mut self, result: ProbeResult, mut run: Running) -> Phase {
        let Some(spec) = self.spec.health.get(result.index).cloned() else { return Phase::Running(run) };
        let Some(state) = self.info.probes.get_mut(result.index) else { return Phase::Running(run) };
        let was_healthy = state.healthy;
        match result.outcome {
            Ok(()) => {
                state.successes += 1;
                state.failures = 0;
                if state.successes >= spec.success_threshold {
                    state.healthy = true;
                }
            }
            Err(e) => {
                state.failures += 1;
                state.successes = 0;
                state.last_error = Some(e);
                if state.failures >= spec.failure_threshold {
                    state.healthy = false;
                }
            }
        }
        let (healthy, failures, last) = (state.healthy, state.failures, state.last_error.clone());
        if healthy != was_healthy {
            tracing::info!(app = %self.spec.name, instance = self.info.index, probe = %probe::describe(&spec.check), healthy, "health changed");
            let state = if healthy { "healthy" } else { "unhealthy" };
            let detail = format!(
                "{} probe `{}` is {state}",
                self.info.probes[result.index].kind,
                probe::describe(&spec.check)
            );
            self.event(EventKind::Health, None, Some(detail));
        }
        if spec.kind == ProbeKind::Liveness && !healthy {
            let why = format!(
                "liveness probe `{}` failed {failures} times in a row ({})",
                probe::describe(&spec.check),
                last.unwrap_or_default()
            );
            tracing::warn!(app = %self.spec.name, instance = self.info.index, "{why}; restarting");
            let started = run.started;
            run.probes = None;
            self.stop_process(run).await;
            let exit = self.info.last_exit.as_ref().map_or(ExitReason::Signal(libc::SIGKILL), |e| e.reason);
            let phase = self.after_exit(exit, started.elapsed().as_millis() as u64);
            self.info.reason = Some(why);
            self.publish();
            return phase;
        }
        self.maybe_online(&run);
        self.publish();
        Phase::Running(run)
    }

    /// When the next `cron_restart` is due, if the app has one.
    fn cron_due(&self) -> Option<tokio::time::Instant> {
        let expr = self.spec.cron_restart.as_deref()?;
        let schedule = match crate::health::cron::Schedule::parse(expr, self.spec.cron_timezone.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(app = %self.spec.name, error = %e, "cron_restart ignored");
                return None;
            }
        };
        schedule.until_next().map(|d| tokio::time::Instant::now() + d)
    }

    /// The `cron_restart` schedule came due: restart the instance.
    async fn cron_restart(&mut self, run: Running) -> Phase {
        let expr = self.spec.cron_restart.clone().unwrap_or_default();
        tracing::info!(app = %self.spec.name, instance = self.info.index, cron = %expr, "scheduled restart");
        self.event(EventKind::Restart, None, Some(format!("cron_restart `{expr}`")));
        self.stop_process(run).await;
        self.info.restarts += 1;
        self.launch()
    }

    /// Watch the app's `watch` paths, leaving out its own log files and herder's home.
    fn start_watching(&mut self) -> Option<Watcher> {
        let spec = &self.spec;
        let mut logs = Vec::new();
        for i in 0..spec.instances.max(1) {
            let (out, err, combined) = crate::logs::log_paths(&self.ctx.paths, spec, i);
            logs.extend([out, err, combined].into_iter().flatten());
        }
        let ignore =
            Ignore::new(&spec.cwd, &spec.ignore_watch, &logs, std::slice::from_ref(&self.ctx.paths.home));
        match Watcher::new(&spec.watch, ignore) {
            Ok(w) => {
                tracing::info!(app = %spec.name, instance = self.info.index, dirs = w.watched(), "watching files");
                if let Some(note) = &w.note {
                    tracing::warn!(app = %spec.name, "{note}");
                    self.info.status_text = Some(format!("watch: {note}"));
                }
                Some(w)
            }
            Err(e) => {
                let why = format!("`watch` is off: {e}");
                tracing::warn!(app = %spec.name, instance = self.info.index, "{why}");
                self.event(EventKind::Watch, None, Some(why));
                None
            }
        }
    }

    /// A watched file changed: the restart waits until files are quiet for `watch_delay`, but
    /// a stream of changes that never pauses delays it at most ten times that.
    fn on_watch_change(&mut self, path: PathBuf) {
        let now = tokio::time::Instant::now();
        let quiet = self.watch_quiet();
        match &mut self.watch_due {
            Some(d) => d.due = (now + quiet).min(d.first + quiet * 10),
            None => self.watch_due = Some(WatchDue { first: now, due: now + quiet, path }),
        }
    }

    /// How long files must stay quiet after a change before the restart.
    fn watch_quiet(&self) -> Duration {
        Duration::from_millis(self.spec.watch_delay_ms).max(crate::health::watch::MIN_QUIET)
    }

    /// Watched files changed and have been quiet since: restart the instance once.
    async fn watch_restart(&mut self, run: Running) -> Phase {
        let path = self.watch_due.take().map(|d| d.path).unwrap_or_default();
        let why = format!("`watch`: {} changed", path.display());
        tracing::info!(app = %self.spec.name, instance = self.info.index, "{why}; restarting");
        self.event(EventKind::Restart, None, Some(why));
        self.stop_process(run).await;
        self.info.restarts += 1;
        self.launch()
    }

    /// Watched files changed while the app was down and have been quiet since: start it now.
    /// Errored (`fresh_budget`), the edit is the fix and the restart budget starts over;
    /// waiting to restart after a crash, the backoff is cut short but the budget stays.
    fn watch_start(&mut self, fresh_budget: bool) -> Phase {
        let path = self.watch_due.take().map(|d| d.path).unwrap_or_default();
        let why = format!("`watch`: {} changed", path.display());
        tracing::info!(app = %self.spec.name, instance = self.info.index, "{why}; starting");
        self.event(EventKind::Restart, None, Some(why));
        if fresh_budget {
            self.policy = PolicyState::default();
            self.info.unstable_restarts = 0;
        }
        self.auto_restart_pending = false;
        self.info.restarts += 1;
        self.launch()
    }

    /// The tree went over `max_memory_restart`: restart it gracefully (stop signal, then
    /// `kill_timeout`), not as a crash, but a run shorter than `min_uptime` counts as unstable
    /// (see [`policy::on_memory_restart`]).
    async fn memory_restart(&mut self, run: Running, rss: u64) -> Phase {
        let limit = self.spec.max_memory_restart.unwrap_or(0);
        let why = format!("memory {} over `max_memory_restart` ({})", human_bytes(rss), human_bytes(limit));
        tracing::warn!(app = %self.spec.name, instance = self.info.index, "{why}; restarting");
        self.event(EventKind::Memory, None, Some(why.clone()));
        let started = run.started;
        self.stop_process(run).await;
        // The exit says why it happened.
        for rec in self.info.last_exit.iter_mut().chain(self.info.history.last_mut()) {
            rec.memory_restart = Some(limit);
        }
        let uptime_ms = started.elapsed().as_millis() as u64;
        let exit = self.info.last_exit.as_ref().map(|e| e.reason);
        let decision = policy::on_memory_restart(&self.spec, &mut self.policy, uptime_ms, &why);
        self.follow(decision, exit)
    }

    /// When the next `WATCHDOG=1` is due, if the app has a watchdog.
    fn watchdog_due(&self) -> Option<tokio::time::Instant> {
        // Without a notify socket the app could never ping.
        self.notify.as_ref()?;
        self.spec.watchdog_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms))
    }

    /// No `WATCHDOG=1` within `watchdog`: the app hangs. Stop it and restart it like a crash.
    async fn watchdog_missed(&mut self, mut run: Running) -> Phase {
        self.take_queued(&mut run);
        if run.watchdog_deadline.is_some_and(|d| d > tokio::time::Instant::now()) {
            return Phase::Running(run);
        }
        let why = format!("no `WATCHDOG=1` within `watchdog` ({} ms)", self.spec.watchdog_ms.unwrap_or(0));
        tracing::warn!(app = %self.spec.name, instance = self.info.index, "{why}; restarting");
        self.event(EventKind::Watchdog, None, Some(why.clone()));
        let started = run.started;
        self.stop_process(run).await;
        let exit = self.info.last_exit.as_ref().map_or(ExitReason::Signal(libc::SIGKILL), |e| e.reason);
        let phase = self.after_exit(exit, started.elapsed().as_millis() as u64);
        self.info.reason = Some(why);
        self.publish();
        phase
    }

    /// Apply the restart policy to an exit.
    fn after_exit(&mut self, exit: ExitReason, uptime_ms: u64) -> Phase {
        // What the dying process wrote (a core file, a crash report) is not an edit: only
        // changes from now on may start it early.
        self.watch_due = None;
        if let Some(w) = &mut self.watcher {
            w.drain();
        }
        let decision = policy::on_exit(&self.spec, &mut self.policy, exit, uptime_ms);
        self.follow(decision, Some(exit))
    }

    /// Carry out what the restart policy decided after the run that ended with `exit`.
    fn follow(&mut self, decision: Decision, exit: Option<ExitReason>) -> Phase {
        match decision {
            Decision::Restart { delay_ms } => {
                self.info.unstable_restarts = self.policy.unstable;
                self.auto_restart_pending = true;
                self.event(EventKind::Restart, exit, Some(format!("in {delay_ms} ms")));
                if delay_ms == 0 {
                    self.launch()
                } else {
                    self.info.status = Status::WaitingRestart;
                    self.publish();
                    Phase::Waiting(tokio::time::Instant::now() + Duration::from_millis(delay_ms))
                }
            }
            Decision::Halt { status, reason } => {
                self.info.unstable_restarts = self.policy.unstable;
                if status == Status::Errored {
                    self.event(EventKind::Errored, exit, reason.clone());
                }
                self.info.status = status;
                self.info.reason = reason;
                self.publish();
                Phase::Idle
            }
        }
    }

    /// SIGKILL whatever of the instance outlived its main process.
    fn kill_leftovers(&mut self) {
        if let Some(cg) = &self.cgroup {
            if cg.populated() {
                cg.signal_all(libc::SIGKILL);
                self.cgroup_dirty = true;
            }
        } else {
            for pid in tree::find_children_marked(&self.marker) {
                // SAFETY: kill(2); the pid is a child of ours carrying this instance's marker.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Stop a running process: `kill_signal` to its group (or the `'shutdown'` message), up
    /// to `kill_timeout` for the group to end, then kill everything left of the instance.
    async fn stop_process(&mut self, mut run: Running) {
        self.info.status = Status::Stopping;
        self.publish();
        let sig = crate::protocol::signal_number(&self.spec.kill_signal).unwrap_or(libc::SIGTERM);
        let group = Group::of(run.pid, self.cgroup.clone(), &self.marker);
        if self.cgroup.is_some() {
            self.cgroup_dirty = true;
        }
        let told = self.spec.shutdown_with_message && send_shutdown(&mut run.ipc).await;
        let grace = Duration::from_millis(self.spec.kill_timeout_ms);
        let mut exit = None;
        group.terminate((!told).then_some(sig), grace, async { exit = (&mut run.exit).await.ok() }).await;
        if exit.is_none() {
            exit =
                tokio::time::timeout(Duration::from_secs(5), &mut run.exit).await.ok().and_then(Result::ok);
        }
        let exit = exit.unwrap_or(ExitReason::Signal(libc::SIGKILL));
        self.record_exit(exit, run.started, run.oom.as_ref());
        tracing::info!(app = %self.spec.name, instance = self.info.index, %exit, "stopped");
    }
}

/// The next notices of `socket`; never, without one.
async fn recv_notices(socket: Option<&NotifySocket>) -> Vec<Notice> {
    match socket {
        Some(s) => match s.recv().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "notify socket failed");
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Sleep until `deadline`; never, without one.
fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b >= 1024 * 1024 * 1024 {
        format!("{:.1} GiB", b as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

/// `shutdown_with_message`: send `'shutdown'` on a Node app's IPC channel, as PM2 does.
/// False when there is no channel (not a Node app) or it is closed: the caller signals.
async fn send_shutdown(ipc: &mut Option<IpcChannel>) -> bool {
    use tokio::io::AsyncWriteExt;
    let Some(ch) = ipc else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ch.stream.write_all(b"\"shutdown\"\n")).await,
        Ok(Ok(()))
    )
}

/// The next change to the watched files; never, without a watcher.
async fn watch_changed(watcher: &mut Option<Watcher>) -> PathBuf {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
