//! What can end a run besides the process's own exit and commands: the app's notices (ready,
//! watchdog, `MAINPID=`), a `wait_ready` deadline, health probes, `cron_restart`, watched files
//! and `max_memory_restart`. Each handler updates the instance and says what phase follows.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use super::actor::Actor;
use super::pidfile;
use super::policy::{self, PolicyState};
use super::running::{Phase, Probes, Running, WatchDue};
use crate::health::notify::{Notice, NotifySocket};
use crate::health::probe::{self, ProbeResult};
use crate::health::watch::{Ignore, Watcher};
use crate::process::tree;
use crate::protocol::spec::ProbeKind;
use crate::protocol::EventKind;
use crate::protocol::{ExitReason, ProbeState, Status};

impl Actor {
    /// Messages from the app on its notify socket.
    pub(super) fn on_notices(&mut self, notices: Vec<Notice>, run: &mut Running) {
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
    pub(super) fn take_queued(&mut self, run: &mut Running) {
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
    pub(super) fn main_pid(&mut self, run: &mut Running, pid: i32) {
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
    pub(super) fn switch_main(
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
    pub(super) async fn failed_start(&mut self, mut run: Running) -> Phase {
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
    pub(super) fn start_probes(&mut self) -> Option<Probes> {
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
        // Each probe checks this instance: `$PORT` in its target is the instance's port, and an
        // `exec` probe gets the variables that tell the instance which one it is.
        let port = self.info.port;
        let probes = self.spec.health.iter().map(|p| probe::for_instance(p, port)).collect();
        let mut env = (*self.spec.env).clone();
        for (k, v) in super::spawn::instance_vars(&self.spec, self.info.index, port) {
            env.insert(k.to_string(), v);
        }
        let (results, tasks) =
            probe::start(probes, self.ctx.reaper.clone(), self.spec.cwd.clone(), env, self.run_as.clone());
        Some(Probes { results, tasks })
    }

    /// `launching` → `online` once the ready signal (if awaited) came and every readiness
    /// probe passes.
    pub(super) fn maybe_online(&mut self, run: &Running) {
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
    pub(super) async fn on_probe(&mut self, result: ProbeResult, mut run: Running) -> Phase {
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
    pub(super) fn cron_due(&self) -> Option<tokio::time::Instant> {
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
    pub(super) async fn cron_restart(&mut self, run: Running) -> Phase {
        let expr = self.spec.cron_restart.clone().unwrap_or_default();
        tracing::info!(app = %self.spec.name, instance = self.info.index, cron = %expr, "scheduled restart");
        self.event(EventKind::Restart, None, Some(format!("cron_restart `{expr}`")));
        self.stop_process(run).await;
        self.info.restarts += 1;
        self.launch()
    }

    /// Watch the app's `watch` paths, leaving out its own log files and herder's home.
    pub(super) fn start_watching(&mut self) -> Option<Watcher> {
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
    pub(super) fn on_watch_change(&mut self, path: PathBuf) {
        let now = tokio::time::Instant::now();
        let quiet = self.watch_quiet();
        match &mut self.watch_due {
            Some(d) => d.due = (now + quiet).min(d.first + quiet * 10),
            None => self.watch_due = Some(WatchDue { first: now, due: now + quiet, path }),
        }
    }

    /// How long files must stay quiet after a change before the restart.
    pub(super) fn watch_quiet(&self) -> Duration {
        Duration::from_millis(self.spec.watch_delay_ms).max(crate::health::watch::MIN_QUIET)
    }

    /// Watched files changed and have been quiet since: restart the instance once.
    pub(super) async fn watch_restart(&mut self, run: Running) -> Phase {
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
    pub(super) fn watch_start(&mut self, fresh_budget: bool) -> Phase {
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
    pub(super) async fn memory_restart(&mut self, run: Running, rss: u64) -> Phase {
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
    pub(super) fn watchdog_due(&self) -> Option<tokio::time::Instant> {
        // Without a notify socket the app could never ping.
        self.notify.as_ref()?;
        self.spec.watchdog_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms))
    }

    /// No `WATCHDOG=1` within `watchdog`: the app hangs. Stop it and restart it like a crash.
    pub(super) async fn watchdog_missed(&mut self, mut run: Running) -> Phase {
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
}

/// A size for people: `1.5 GiB`, `300.0 MiB`.
fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b >= 1024 * 1024 * 1024 {
        format!("{:.1} GiB", b as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}
