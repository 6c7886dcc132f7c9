//! The actor of one instance: its commands, its process's lifecycle (launch, exit, stop) and
//! the restart policy's decisions. What else can end a run (probes, the watchdog, cron, watched
//! files, memory) is in [`super::triggers`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use super::policy::{self, Decision, PolicyState};
use super::running::{
    recv_ipc, recv_notices, recv_probe, send_shutdown, sleep_until_some, watch_changed, Event, IpcChannel,
    IpcEvent, ListenAsk, Phase, Running, WatchDue,
};
use super::spawn::{Inherit, Launch};
use super::spawner::Stop;
use super::{pidfile, spawn, Cmd, Context, InstanceId, HISTORY_LEN, NOTICE_BURST};
use crate::health::notify::NotifySocket;
use crate::health::watch::Watcher;
use crate::process::cgroup::Cgroup;
use crate::process::{fork, limits, tree};
use crate::protocol::secrets;
use crate::protocol::spec::ProbeKind;
use crate::protocol::EventKind;
use crate::protocol::{now_ms, AppSpec, ExitReason, ExitRecord, InstanceInfo, Status};

pub(super) struct Actor {
    /// Its app, slot and generation.
    pub(super) id: InstanceId,
    pub(super) ctx: Arc<Context>,
    pub(super) spec: Arc<AppSpec>,
    pub(super) info: InstanceInfo,
    pub(super) status: watch::Sender<InstanceInfo>,
    pub(super) policy: PolicyState,
    pub(super) cgroup: Option<Cgroup>,
    /// Something was killed in the cgroup (or it may hold leftovers of an earlier daemon):
    /// the next spawn gets a fresh one (see [`Cgroup::prepare`]).
    pub(super) cgroup_dirty: bool,
    pub(super) marker: String,
    /// The next launch is an automatic restart (counted in `restarts`).
    pub(super) auto_restart_pending: bool,
    /// The instance's `NOTIFY_SOCKET` (none if it could not be bound).
    pub(super) notify: Option<NotifySocket>,
    /// With `watch`: the app's files, watched from its start until it is stopped.
    pub(super) watcher: Option<Watcher>,
    /// A watched file changed: when the restart is due.
    pub(super) watch_due: Option<WatchDue>,
    /// The account of the last start (`user`/`group`), which its `exec` probes run as too.
    pub(super) run_as: Option<fork::Credentials>,
    /// The app's listening sockets (cluster mode), passed on at each start.
    pub(super) sockets: Arc<super::sockets::Sockets>,
    /// The log files of the last start, held open until the next one (see
    /// [`spawn::Spawned::log_files`]).
    pub(super) log_files: Vec<crate::logs::SharedFile>,
    /// Why the last start's logs were not written, so that a flapping app says it once.
    pub(super) log_note: Option<String>,
}

impl Actor {
    /// The actor's life, boxed: its task then holds the actor once, on the heap, where an
    /// `async fn` taking `self` by value would hold it twice in the task (as the argument and
    /// as the local it is moved into).
    pub(super) async fn run(mut self: Box<Self>, mut rx: mpsc::UnboundedReceiver<Cmd>, mut phase: Phase) {
        let mut notices_in_a_row = 0;
        loop {
            let event = self.next_event(&mut phase, &mut rx, &mut notices_in_a_row).await;
            // Boxed: the task of a waiting actor then holds the small future of `next_event`
            // only, not also the state of the largest step (a stop, a restart).
            phase = match Box::pin(self.step(phase, event)).await {
                Some(p) => p,
                None => break,
            };
        }
        if let Some(cg) = &self.cgroup {
            if cg.populated() {
                let cg = cg.clone();
                let _ = tokio::task::spawn_blocking(move || cg.kill_and_wait(Duration::from_secs(5))).await;
            }
            cg.remove();
        }
        self.ctx.limits.remove(&self.id.name());
    }

    /// The next thing that happens to the instance in `phase`.
    ///
    /// While it runs, in this order: the exit, what the app said (a `WATCHDOG=1` or `READY=1`
    /// queued while the daemon did not run, as during an update, wins over the deadline it
    /// answers), probes, commands, then the timers, which complete once each. Every
    /// `NOTICE_BURST` notices in a row, the others get a turn: a flood of notices must not
    /// hold a stop back.
    pub(super) async fn next_event(
        &mut self,
        phase: &mut Phase,
        rx: &mut mpsc::UnboundedReceiver<Cmd>,
        notices_in_a_row: &mut u32,
    ) -> Event {
        let watch_due = self.watch_due.as_ref().map(|d| d.due);
        let errored = self.info.status == Status::Errored;
        match phase {
            Phase::Idle => tokio::select! {
                cmd = rx.recv() => Event::Command(cmd),
                // An app that gave up (errored) is tried again once its files change and
                // settle: the fix for a crash on start is an edit.
                path = watch_changed(&mut self.watcher), if errored => Event::WatchChanged(path),
                _ = sleep_until_some(watch_due), if errored => Event::WatchSettled,
            },
            Phase::Running(run) => {
                let burst = *notices_in_a_row < NOTICE_BURST;
                let event = tokio::select! {
                    biased;
                    exit = &mut run.exit => Event::Exit(exit.ok()),
                    notices = recv_notices(self.notify.as_ref()), if burst => Event::Notices(notices),
                    msg = recv_ipc(&mut run.ipc), if burst => match msg {
                        None => Event::IpcClosed,
                        Some(IpcEvent::Notices(n)) => Event::Notices(n),
                        Some(IpcEvent::Listen(ask)) => Event::ListenAsked(ask),
                    },
                    result = recv_probe(&mut run.probes) => Event::Probe(result),
                    cmd = rx.recv() => Event::Command(cmd),
                    _ = sleep_until_some(run.ready_deadline) => Event::ReadyTimeout,
                    _ = sleep_until_some(run.cron_deadline) => Event::CronDue,
                    _ = sleep_until_some(run.watchdog_deadline) => Event::WatchdogDue,
                    path = watch_changed(&mut self.watcher) => Event::WatchChanged(path),
                    _ = sleep_until_some(watch_due) => Event::WatchSettled,
                    // The others' turn came and none was ready: notices again.
                    _ = std::future::ready(()), if !burst => Event::Yield,
                };
                match event {
                    Event::Notices(_) | Event::IpcClosed | Event::ListenAsked(_) => *notices_in_a_row += 1,
                    Event::Yield => *notices_in_a_row = 0,
                    _ => {}
                }
                event
            }
            Phase::Waiting(until) => tokio::select! {
                _ = sleep_until(*until) => Event::DelayOver,
                path = watch_changed(&mut self.watcher) => Event::WatchChanged(path),
                _ = sleep_until_some(watch_due) => Event::WatchSettled,
                cmd = rx.recv() => Event::Command(cmd),
            },
        }
    }

    /// What `event` does to the instance in `phase`: the phase that follows, or `None` to end
    /// the actor.
    pub(super) async fn step(&mut self, phase: Phase, event: Event) -> Option<Phase> {
        Some(match (phase, event) {
            (Phase::Running(run), Event::Command(None)) => {
                self.stop_process(run).await;
                return None;
            }
            (_, Event::Command(None)) => return None,
            (Phase::Running(run), Event::Command(Some(cmd))) => return self.command(cmd, Some(run)).await,
            (Phase::Idle, Event::Command(Some(cmd))) => return self.command(cmd, None).await,
            // A command during the delay acts as on a stopped instance, except that a signal
            // has nothing to reach and the delay goes on.
            (Phase::Waiting(until), Event::Command(Some(cmd))) => match cmd {
                Cmd::Signal(_, reply) => {
                    let _ = reply.send(Err("the instance is waiting to restart".into()));
                    Phase::Waiting(until)
                }
                Cmd::Reset(reply) => {
                    self.reset();
                    let _ = reply.send(());
                    Phase::Waiting(until)
                }
                Cmd::Hold(req) => self.hold(Phase::Waiting(until), req).await,
                cmd => {
                    self.auto_restart_pending = false;
                    return self.command(cmd, None).await;
                }
            },
            (Phase::Running(mut run), Event::Exit(exit)) => match run.next_main.take() {
                Some((pid, rx)) if tree::alive(pid) => {
                    self.switch_main(&mut run, pid, rx, exit);
                    Phase::Running(run)
                }
                _ => self.exited(exit, &run),
            },
            (Phase::Running(mut run), Event::Notices(notices)) => {
                self.on_notices(notices, &mut run);
                Phase::Running(run)
            }
            (Phase::Running(mut run), Event::ListenAsked(ask)) => {
                self.on_listen_ask(ask, &mut run).await;
                Phase::Running(run)
            }
            (Phase::Running(mut run), Event::IpcClosed) => {
                run.ipc = None;
                Phase::Running(run)
            }
            (Phase::Running(run), Event::Probe(Some(result))) => self.on_probe(result, run).await,
            (Phase::Running(mut run), Event::Probe(None)) => {
                run.probes = None;
                Phase::Running(run)
            }
            (Phase::Running(run), Event::ReadyTimeout) => self.failed_start(run).await,
            (Phase::Running(run), Event::CronDue) => self.cron_restart(run).await,
            (Phase::Running(run), Event::WatchdogDue) => self.watchdog_missed(run).await,
            (phase, Event::WatchChanged(path)) => {
                self.on_watch_change(path);
                phase
            }
            (Phase::Running(run), Event::WatchSettled) => self.watch_restart(run).await,
            (Phase::Idle, Event::WatchSettled) => self.watch_start(true),
            (Phase::Waiting(_), Event::WatchSettled) => self.watch_start(false),
            (Phase::Waiting(_), Event::DelayOver) => self.launch(),
            // Events of another phase (none are produced): nothing to do.
            (phase, _) => phase,
        })
    }

    /// Carry out `cmd`; `running` is the live process, if any. `None` ends the actor.
    pub(super) async fn command(&mut self, cmd: Cmd, running: Option<Running>) -> Option<Phase> {
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
                if let Some(port) = self.info.port.take() {
                    self.sockets.release_port(port);
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

    pub(super) fn reset(&mut self) {
        self.info.restarts = 0;
        self.info.unstable_restarts = 0;
        self.info.oom_kills = 0;
        self.policy = PolicyState::default();
        self.publish();
    }

    /// Tell `herder events` (and hooks) that `kind` happened.
    pub(super) fn event(&self, kind: EventKind, exit: Option<ExitReason>, detail: Option<String>) {
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

    pub(super) fn publish(&mut self) {
        // Online with a readiness probe failing: out of the balancer's pool until it passes.
        self.info.unready = self.info.status == Status::Online
            && self
                .spec
                .health
                .iter()
                .zip(&self.info.probes)
                .any(|(p, s)| p.kind == ProbeKind::Readiness && !s.healthy);
        self.status.send_replace(self.info.clone());
        self.ctx.changed.notify_one();
    }

    /// A Node instance's `listen` on a port the app was not given (see the preload): the app's
    /// socket of this slot for that port, bound now for every instance if no instance asked
    /// before; or why not, which its `listen` reports as an error.
    async fn on_listen_ask(&mut self, ask: ListenAsk, run: &mut Running) {
        let spec = crate::protocol::spec::SocketSpec {
            name: ask.port.to_string(),
            host: ask.host.clone(),
            port: ask.port,
        };
        let socket = match ask.host.as_deref().map(str::parse::<std::net::IpAddr>) {
            Some(Err(_)) => Err(format!(
                "app `{}`: listen on `{}`: herder binds IP addresses only",
                self.spec.name,
                spec.address()
            )),
            _ if ask.port == 0 => Err(format!("app `{}`: port 0 is not shared", self.spec.name)),
            _ => self.sockets.learn(
                &self.spec.name,
                &spec,
                self.id.index as usize,
                self.spec.instances as usize,
            ),
        };
        match &socket {
            Ok(_) => {
                tracing::info!(app = %self.spec.name, instance = self.info.index, port = %spec.address(), "the instance listens on a port it asked for, shared by every instance")
            }
            Err(e) => {
                tracing::warn!(app = %self.spec.name, instance = self.info.index, error = %e, "a port the instance asked for");
                self.event(EventKind::Listen, None, Some(e.clone()));
            }
        }
        if let Some(ch) = &mut run.ipc {
            if let Err(e) = ch.answer_listen(&ask, socket).await {
                tracing::warn!(app = %self.spec.name, instance = self.info.index, error = %e, "cannot answer the instance's listen");
            }
        }
    }

    /// The instance's loopback port behind the app's balancer (kept across its restarts), if
    /// the app has one.
    fn backend_port(&mut self) -> Result<Option<u16>, spawn::SpawnError> {
        let Some(balancer) = &self.spec.balancer else {
            if let Some(port) = self.info.port.take() {
                self.sockets.release_port(port);
            }
            return Ok(None);
        };
        let port = self.sockets.backend_port(balancer.backend_port, self.info.port).map_err(|e| {
            spawn::SpawnError::new(&self.spec.program, format!("no loopback port for it: {e}"))
        })?;
        self.info.port = Some(port);
        Ok(Some(port))
    }

    /// Spawn the process; on failure the instance is `errored` with the reason.
    pub(super) fn launch(&mut self) -> Phase {
        if std::mem::take(&mut self.auto_restart_pending) {
            self.info.restarts += 1;
        }
        // The account is looked up for each start: the passwd and group files may have changed.
        let port = self.backend_port();
        let spawned =
            match (crate::users::switch_for(self.spec.user.as_deref(), self.spec.group.as_deref()), port) {
                (Ok(account), Ok(port)) => {
                    self.place_notify(account.as_ref());
                    self.run_as = account.as_ref().map(fork::Credentials::of);
                    let listeners = self.sockets.get();
                    let inherit: Vec<Inherit<'_>> = listeners
                        .iter()
                        .filter_map(|l| {
                            Some(Inherit {
                                fd: l.of_slot(self.id.index as usize)?,
                                name: &l.spec.name,
                                port: l.spec.port,
                            })
                        })
                        .collect();
                    let launch = Launch {
                        port,
                        spec: &self.spec,
                        id: self.id,
                        cgroup: self.cgroup.as_ref(),
                        recreate_cgroup: self.cgroup_dirty,
                        marker: &self.marker,
                        notify_socket: self.notify.as_ref().map(|n| n.address.as_str()),
                        account: account.as_ref(),
                        sockets: &inherit,
                    };
                    self.ctx.spawner.spawn(&self.ctx, &launch)
                }
                (Err(e), _) => Err(spawn::SpawnError::new(&self.spec.program, e.to_string())),
                (_, Err(e)) => Err(e),
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
                self.info.status_text = match (&s.limit_note, &s.log_note) {
                    (Some(limits), Some(logs)) => Some(format!("{limits}; {logs}")),
                    (limits, logs) => limits.clone().or_else(|| logs.clone()),
                };
                if let Some(note) = &s.limit_note {
                    self.event(EventKind::Limits, None, Some(note.clone()));
                }
                if s.log_note.is_some() && s.log_note != self.log_note {
                    tracing::warn!(app = %self.spec.name, instance = self.info.index, note = s.log_note.as_deref().unwrap_or_default(), "started; its output reaches followers only");
                    self.event(EventKind::Disk, None, s.log_note.clone());
                }
                self.log_note = s.log_note;
                self.log_files = s.log_files;
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
                    started: tokio::time::Instant::from_std(s.started),
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
    pub(super) fn place_notify(&mut self, account: Option<&crate::users::Account>) {
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
        let name = self.id.name();
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
    pub(super) fn write_pid_file(&mut self, pid: i32) {
        let Some(path) = pidfile::path_for(&self.spec, self.info.index) else { return };
        if let Err(e) = pidfile::write(&path, pid) {
            let why = format!("`pid_file` {} not written: {e}", path.display());
            tracing::warn!(app = %self.spec.name, instance = self.info.index, "{why}");
            self.info.status_text = Some(why);
        }
    }

    pub(super) fn record_exit(
        &mut self,
        exit: ExitReason,
        started: tokio::time::Instant,
        oom: Option<&(PathBuf, u64)>,
    ) -> u64 {
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
    pub(super) fn exited(&mut self, exit: Option<ExitReason>, run: &Running) -> Phase {
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

    /// Apply the restart policy to an exit.
    pub(super) fn after_exit(&mut self, exit: ExitReason, uptime_ms: u64) -> Phase {
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
    pub(super) fn follow(&mut self, decision: Decision, exit: Option<ExitReason>) -> Phase {
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
    pub(super) fn kill_leftovers(&mut self) {
        if self.ctx.spawner.sweep(self.cgroup.as_ref(), &self.marker) {
            self.cgroup_dirty = true;
        }
    }

    /// Stop a running process: `kill_signal` to its group (or the `'shutdown'` message), up
    /// to `kill_timeout` for the group to end, then kill everything left of the instance.
    pub(super) async fn stop_process(&mut self, mut run: Running) {
        self.info.status = Status::Stopping;
        self.publish();
        let sig = crate::protocol::signal_number(&self.spec.kill_signal).unwrap_or(libc::SIGTERM);
        if self.cgroup.is_some() {
            self.cgroup_dirty = true;
        }
        let told = self.spec.shutdown_with_message && send_shutdown(&mut run.ipc).await;
        let stop = Stop {
            pid: run.pid,
            cgroup: self.cgroup.clone(),
            marker: self.marker.clone(),
            signal: (!told).then_some(sig),
            grace: Duration::from_millis(self.spec.kill_timeout_ms),
        };
        let mut exit = None;
        let exited = Box::pin(async { exit = (&mut run.exit).await.ok() });
        self.ctx.spawner.stop(stop, exited).await;
        if exit.is_none() {
            exit =
                tokio::time::timeout(Duration::from_secs(5), &mut run.exit).await.ok().and_then(Result::ok);
        }
        let exit = exit.unwrap_or(ExitReason::Signal(libc::SIGKILL));
        self.record_exit(exit, run.started, run.oom.as_ref());
        tracing::info!(app = %self.spec.name, instance = self.info.index, %exit, "stopped");
    }
}
