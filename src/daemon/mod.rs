//! The daemon: one per `HERDER_HOME`, holding the lock, serving the control socket, owning
//! the registry of apps and persisting it for crash recovery.
//!
//! [`run`] is a library function so tests and `herder daemon` start it the same way.

mod control;
mod coordinator;
pub mod dump;
mod foreground;
pub(crate) mod handlers;
mod handover;
pub mod home;
pub mod image;
pub mod lock;
mod logs;
mod metrics;
mod private_log;
mod recovery;
pub mod registry;
mod sd_notify;
pub mod state;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::logs::Rotation;
use crate::paths::Paths;
use crate::process::cgroup::CgroupRoot;
use crate::process::reaper::Reaper;
use crate::protocol::{self, ErrorKind, ErrorReply, FrameError, Hello, HelloReply, Request, Response};
use crate::supervisor::Context;
pub use foreground::Foreground;
pub use lock::LockError;
use registry::Registry;
use state::{PersistedApp, PersistedState, STATE_VERSION};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot prepare {path}: {source}")]
    Home { path: String, source: io::Error },
    #[error("cannot listen on {path}: {source}")]
    Socket { path: String, source: io::Error },
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
}

/// State shared by every connection.
pub(crate) struct Daemon {
    pub ctx: Arc<Context>,
    pub registry: Mutex<Registry>,
    pub started: Instant,
    pub shutdown: Notify,
    /// Woken when apps are added, so the sampler sleeps while there are none.
    pub apps_added: Notify,
    /// Serializes writes of `state.json` (they share one temporary file).
    pub persisting: tokio::sync::Mutex<()>,
    pub subreaper: bool,
    pub cgroup_note: Option<String>,
    /// Clients following logs right now.
    pub followers: AtomicUsize,
    /// Clients streaming events (`herder events`) right now.
    pub event_followers: AtomicUsize,
    /// The metrics endpoint, when one is asked for.
    pub metrics: metrics::Endpoint,
    /// The web dashboard, when one is asked for.
    pub web: crate::web::Endpoint,
    /// Instances the last stop of everything had to kill past their `kill_timeout`.
    pub killed_at_stop: Mutex<Vec<String>>,
    /// The program image this process runs (`herder update` replaces it).
    pub image: crate::protocol::ImageInfo,
    /// Unix time this image started, ms.
    pub image_started_ms: u64,
    /// Requests under way, and their pause during `herder update`.
    pub handover: handover::give::Gate,
    /// What the daemon could not write in its home (a full or read-only disk).
    pub home: home::Health,
}

impl Daemon {
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persisted(&self) -> PersistedState {
        let reg = self.registry();
        PersistedState {
            version: STATE_VERSION,
            next_id: reg.next_id,
            metrics_listen: self.metrics.address(),
            web_listen: self.web.address(),
            boot_id: state::boot_id(),
            apps: reg
                .apps
                .values()
                .map(|a| PersistedApp { id: a.id, spec: a.spec().clone(), instances: a.infos() })
                .collect(),
        }
    }

    /// Write `state.json` now.
    pub async fn persist(&self) {
        let _one_at_a_time = self.persisting.lock().await;
        let st = self.persisted();
        let path = self.ctx.paths.state();
        let res = tokio::task::spawn_blocking(move || {
            let mut len = 0;
            state::write_atomic_with(&path, |w| {
                let mut counted = Counted { inner: w, len: &mut len };
                serde_json::to_writer(&mut counted, &st).map_err(io::Error::other)
            })
            .map(|()| len)
        })
        .await;
        match res {
            Ok(Ok(len)) => {
                if self.home.written(home::Part::State) {
                    tracing::info!("state.json is written again");
                }
                // A large state (many apps) leaves freed buffers behind; a small one is not
                // worth the trim on every restart of a flapping app.
                if len > 64 * 1024 {
                    trim_memory();
                }
            }
            Ok(Err(e)) => {
                let what = format!("state.json is not written ({e}): after a crash, the daemon recovers the apps of its last write");
                if self.home.failed(home::Part::State, what) {
                    tracing::error!(error = %e, "cannot write state.json; tried again every few seconds");
                }
            }
            Err(e) => tracing::error!(error = %e, "state writer panicked"),
        }
    }
}

/// How long the persister waits after a change before writing `state.json`. Recovery does not
/// depend on it being instant: leftover cgroups (or marked processes) are found regardless.
const PERSIST_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// How the daemon runs besides serving its socket.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Once crash recovery is done, start the apps of `dump.json` that do not run
    /// (`herder daemon --resurrect`, at boot).
    pub resurrect: bool,
    /// `herder run`: start these apps and show their output (see [`Foreground`]).
    pub foreground: Option<Foreground>,
}

/// Run the daemon for `paths` until `herder kill` or SIGTERM/SIGINT.
pub fn run(paths: Paths) -> Result<(), DaemonError> {
    run_with(paths, Options::default()).map(drop)
}

/// Run the daemon with `options`; returns the exit code (see [`Foreground`]; always 0
/// without it).
pub fn run_with(paths: Paths, options: Options) -> Result<i32, DaemonError> {
    // Before any thread exists: the environment is changed here.
    let manager = sd_notify::Manager::take_from_env();
    // Before anything opens a descriptor: what an earlier image of this process left.
    let mut takeover = handover::take::Takeover::from_env();
    // A full or read-only home degrades the daemon, it does not stop it: the apps it recovers
    // run on, and what it cannot write is told (see `home`).
    let health = home::Health::default();
    if let Err(source) = paths.ensure() {
        if !paths.home.is_dir() {
            return Err(DaemonError::Home { path: paths.home.display().to_string(), source });
        }
        health.failed(home::Part::Folders, format!("the home's folders cannot be prepared: {source}"));
    }
    let lock = match takeover.lock() {
        Some(lock) => lock,
        None => lock::acquire(&paths)?,
    };
    if let Err(e) = lock::write_pid(&paths, Some(std::process::id())) {
        health.failed(home::Part::Pid, format!("{} is not written: {e}", paths.pid_file().display()));
    }
    init_tracing(&paths);
    takeover.log_error();
    raise_nofile(takeover.nofile_soft());
    let (listener, socket_path) = match takeover.listener() {
        Some(listener) => (listener, None),
        None => {
            let (listener, path) = bind(&paths)?;
            if path != paths.socket() {
                health.failed(
                    home::Part::Socket,
                    format!("the control socket is {} instead of in the home", path.display()),
                );
            }
            (listener, Some(path))
        }
    };
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        // Idle blocking threads (state writes, cgroup waits) go away soon: each holds a stack.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .thread_name("herder")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let result =
        runtime.block_on(serve(paths.clone(), listener, health, lock.fd(), options, manager, takeover));
    // An update in place hands the socket over; whoever binds it last removes it.
    let _ = std::fs::remove_file(socket_path.unwrap_or_else(|| paths.socket()));
    // Blanked, not removed: writing it again then needs no new space.
    let _ = lock::write_pid(&paths, None);
    // Where the notify sockets of apps with a `user` were, once they are all gone.
    let _ = std::fs::remove_dir(paths.shared_run_dir());
    tracing::info!("daemon stopped");
    // Blocking tasks (a stuck file system, say) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Every instance holds descriptors of the daemon: raise its soft limit to the hard one (the
/// apps get the original back, see [`crate::process::nofile`]).
fn raise_nofile(original: Option<u64>) {
    match crate::process::nofile::raise(original) {
        Ok(r) if r.soft != r.original => {
            tracing::info!(
                from = r.original,
                to = r.soft,
                "raised the open file limit (apps keep the original)"
            )
        }
        Ok(r) => tracing::info!(limit = r.soft, "open file limit (the hard limit already)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

/// glibc gives each thread that allocates an arena of its own, up to a limit (8 per CPU by
/// default), after which threads share arenas, each behind a lock.
///
/// The limit is fixed at the first thread's first allocation, so it is set here for the
/// daemon's whole life: room for the daemon's own threads (the runtime's two, a few blocking
/// ones) and for the balancer's (up to four per balancer), which allocate on every request.
/// Two balancer threads sharing an arena wait on its lock under load: with a limit of two (the
/// daemon's before), they shared one in some starts and not in others, and the http mode then
/// spent 1.3x the CPU per request (18–20 against 14–15 µs, the lock's futex calls about one per
/// ten requests). Arenas are made only as threads need them, and an idle daemon has few
/// threads: idle and with 100 apps it is the same size as with two (bench/memory.py).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) with a documented parameter, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 8);
    }
}

/// A writer that counts what goes through it.
struct Counted<'a, W: ?Sized> {
    inner: &'a mut W,
    len: &'a mut usize,
}

impl<W: io::Write + ?Sized> io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        *self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Give memory freed after a burst (a large list, a state write) back to the system.
pub(crate) fn trim_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bind the control socket, 0600, replacing a stale one (we hold the lock, so no live daemon
/// is behind it). Where the home cannot hold a new socket (a read-only disk), it is bound in
/// [`Paths::fallback_socket`], where clients look next. Returns where it is.
fn bind(paths: &Paths) -> Result<(StdUnixListener, std::path::PathBuf), DaemonError> {
    let home = paths.socket();
    let err =
        |path: &std::path::Path, source| DaemonError::Socket { path: path.display().to_string(), source };
    match bind_at(&home) {
        Ok(listener) => {
            // A socket a daemon bound elsewhere while the home was read-only is stale now.
            let _ = std::fs::remove_file(paths.fallback_socket());
            Ok((listener, home))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT)) => {
            let fallback = paths.fallback_socket();
            paths.ensure_shared_run_dir().map_err(|source| err(&fallback, source))?;
            let listener = bind_at(&fallback).map_err(|source| err(&fallback, source))?;
            Ok((listener, fallback))
        }
        Err(e) => Err(err(&home, e)),
    }
}

fn bind_at(path: &std::path::Path) -> io::Result<StdUnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!("replaced a stale socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The umask makes the socket 0600 from its creation: no window where others could connect.
    // SAFETY: umask(2) has no preconditions; no other thread runs yet.
    let old = unsafe { libc::umask(0o177) };
    let listener = StdUnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `daemon.log` is rotated like app logs: past 10 MB it is renamed aside, five are kept.
const DAEMON_LOG_ROTATION: Rotation =
    Rotation { max_size: Some(10 * 1024 * 1024), interval: None, retain: 5, compress: false };

/// The daemon's own log, written one whole event at a time, its files kept 0600.
struct DaemonLog(Mutex<private_log::PrivateLog>);

thread_local! {
    /// Set while this thread writes to the daemon log, so that an error the log file reports
    /// about itself (through tracing) is dropped instead of locking the file twice.
    static IN_DAEMON_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl io::Write for &DaemonLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !IN_DAEMON_LOG.with(|f| f.replace(true)) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).write_lines(&[buf]);
            IN_DAEMON_LOG.with(|f| f.set(false));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn init_tracing(paths: &Paths) {
    // `HERDER_LOG=debug` or `HERDER_LOG=herder::supervisor=debug,info`.
    let filter: tracing_subscriber::filter::Targets = std::env::var("HERDER_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO));
    if let Ok(file) = private_log::PrivateLog::open(paths.daemon_log(), DAEMON_LOG_ROTATION) {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let log: &'static DaemonLog = Box::leak(Box::new(DaemonLog(Mutex::new(file))));
        let layer = tracing_subscriber::fmt::layer().with_writer(move || log).with_ansi(false);
        let _ = tracing_subscriber::registry().with(layer).with(filter).try_init();
    }
}

async fn serve(
    paths: Paths,
    listener: StdUnixListener,
    health: home::Health,
    lock_fd: std::os::fd::RawFd,
    options: Options,
    manager: sd_notify::Manager,
    takeover: handover::take::Takeover,
) -> Result<i32, DaemonError> {
    use std::os::fd::AsRawFd;
    // SAFETY: prctl(2) with integer arguments only.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    let listener = UnixListener::from_std(listener)
        .map_err(|source| DaemonError::Socket { path: paths.socket().display().to_string(), source })?;
    // Early, so that a SIGTERM while apps start (as PID 1, where an unhandled SIGTERM is
    // ignored) is not lost.
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Runtime)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Runtime)?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(DaemonError::Runtime)?;
    // Blocked by the previous image across `execve` (see `handover`); handled from here on.
    handover::take::unblock_signals();
    let (reaper, exits) = Reaper::start_adopting(&takeover.pids()).map_err(DaemonError::Runtime)?;
    let (cgroups, cgroup_note) = match CgroupRoot::detect(&paths.token()) {
        Ok(root) => (Some(root), None),
        Err(why) => {
            tracing::warn!(reason = %why, "no cgroup for instances; stop relies on process groups and the process tree");
            (None, Some(why))
        }
    };
    let limits = crate::process::limits::LimitRoots::detect(&paths.token(), cgroups.as_ref());
    if let Some(note) = &limits.note {
        tracing::info!(note = %note, "kernel limits");
    }
    let changed = Arc::new(Notify::new());
    let ctx = Arc::new(Context {
        paths: paths.clone(),
        reaper,
        cgroups,
        limits,
        logs: Arc::default(),
        events: tokio::sync::broadcast::channel(1024).0,
        changed: changed.clone(),
        spawner: Arc::new(crate::supervisor::spawner::OsSpawner),
    });
    let (image, started) = match takeover.previous() {
        Some((prev, uptime)) => (
            image::this_image(prev.exe.clone(), prev.generation + 1),
            Instant::now().checked_sub(uptime).unwrap_or_else(Instant::now),
        ),
        None => (image::this_image(image::current_exe(), 0), Instant::now()),
    };
    let daemon = Arc::new(Daemon {
        ctx,
        registry: Mutex::new(Registry { logs_dir: paths.logs_dir(), ..Registry::default() }),
        started,
        shutdown: Notify::new(),
        apps_added: Notify::new(),
        persisting: tokio::sync::Mutex::new(()),
        subreaper,
        cgroup_note,
        followers: AtomicUsize::new(0),
        event_followers: AtomicUsize::new(0),
        metrics: metrics::Endpoint::default(),
        web: crate::web::Endpoint::default(),
        killed_at_stop: Mutex::new(Vec::new()),
        image,
        image_started_ms: protocol::now_ms(),
        handover: handover::give::Gate::new(
            lock_fd,
            listener.as_raw_fd(),
            options.foreground.is_some(),
            manager.address().map(ToOwned::to_owned),
        ),
        home: health,
    });
    tracing::info!(pid = std::process::id(), version = protocol::PROGRAM_VERSION, home = %paths.home.display(), subreaper, generation = daemon.image.generation, "daemon started");

    // `herder run`: the output is followed from before the first app starts.
    let output = match &options.foreground {
        Some(fg) => Some(
            foreground::Output::start(&daemon.ctx.logs, daemon.ctx.events.subscribe(), &fg.specs)
                .map_err(DaemonError::Runtime)?,
        ),
        None => None,
    };

    // An update in place (`herder update`) adopts the apps as they run: nothing to recover,
    // resurrect or start.
    let took_over = takeover.is_takeover();
    let recovered = if took_over {
        handover::take::adopt(&daemon, takeover, exits).await;
        0
    } else {
        recovery::recover(&daemon).await
    };
    if let Some(listen) = std::env::var("HERDER_METRICS_LISTEN").ok().filter(|v| !v.trim().is_empty()) {
        match metrics::parse_listen(&listen) {
            Ok(addr) => {
                if let Err(e) = metrics::listen(&daemon, addr).await {
                    tracing::error!(error = %e, "HERDER_METRICS_LISTEN: no metrics endpoint");
                }
            }
            Err(e) => tracing::error!(error = %e, "HERDER_METRICS_LISTEN: no metrics endpoint"),
        }
    }
    if let Some(listen) = std::env::var("HERDER_WEB_LISTEN").ok().filter(|v| !v.trim().is_empty()) {
        if let Err(e) = handlers::web_listen(&daemon, &listen).await {
            tracing::error!(error = %e.message, "HERDER_WEB_LISTEN: no web dashboard");
        }
    }

    // Persist whenever an instance or the registry changes; bursts coalesce into one write.
    let persister = {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                // Let a burst (100 apps starting, an app flapping) settle into one write, and
                // keep the write off the CPU while a restarted app starts up.
                tokio::time::sleep(PERSIST_DELAY).await;
                daemon.persist().await;
            }
        })
    };

    let sampler = tokio::spawn(sample_memory(daemon.clone()));
    let home_watch = tokio::spawn(home::watch(daemon.clone()));
    let hooks = {
        let d = daemon.clone();
        let spec_of = move |app: &str| d.registry().by_name(app).map(|a| a.spec().clone());
        tokio::spawn(crate::health::hooks::run(
            daemon.ctx.events.subscribe(),
            spec_of,
            daemon.ctx.reaper.clone(),
        ))
    };

    // Hooks and the persister see the apps started from here on. `--resurrect` (the unit's
    // `Restart=on-failure` too) brings the saved apps back only on a fresh start: after a
    // crash, `state.json` says what ran since the save (an app stopped or deleted since stays
    // so).
    if options.resurrect && !took_over && recovered > 0 {
        tracing::info!(apps = recovered, "not resurrecting: the apps of the previous daemon (which did not stop cleanly) were recovered as they were");
    } else if options.resurrect && !took_over {
        tracing::info!("resurrecting the saved apps: no previous daemon's apps to recover");
        match handlers::resurrect(&daemon).await {
            Ok(report) => {
                if let Some(why) = &report.fallback {
                    eprintln!(
                        "error: {why}\nresurrected from the previous save, {}, instead",
                        report.source.display()
                    );
                }
            }
            // No dump yet is the normal state of a new machine.
            Err(e)
                if !daemon.ctx.paths.dump().exists()
                    && !dump::backup_of(&daemon.ctx.paths.dump()).exists() =>
            {
                tracing::info!(reason = %e.message, "nothing to resurrect");
            }
            Err(e) => {
                tracing::error!(error = %e.message, "cannot resurrect the saved apps");
                eprintln!("error: {}", e.message);
            }
        }
    }
    let mut start_failed = false;
    if let (Some(fg), Some(out), false) = (&options.foreground, &output, took_over) {
        match handlers::handle(
            &daemon,
            Request::Start { specs: fg.specs.clone(), existing: Default::default() },
        )
        .await
        {
            Response::Error(e) => {
                out.say(format!("cannot start the apps of {}: {}", fg.source, e.message));
                start_failed = true;
            }
            _ => out.say(format!(
                "{} app(s) of {} running (herder pid {}, home {}); `herder list` in another shell shows them",
                fg.specs.len(),
                fg.source,
                std::process::id(),
                paths.home.display()
            )),
        }
    }

    let exit_when_empty = options.foreground.as_ref().is_some_and(|f| f.exit_when_empty);
    let mut emptied = false;
    let say = |text: String| {
        if let Some(out) = &output {
            out.say(text);
        }
    };
    // Serving: tell systemd (`Type=notify`), which then starts the units ordered after us.
    manager.notify(&format!("READY=1\nSTATUS=serving {} app(s)", daemon.registry().apps.len()));
    let mut accept_switch = daemon.handover.accept_switch();
    let mut accept_errors = AcceptErrors::new("control socket");
    let limits = control::Limits::from_env();
    let connections = control::Connections::new(limits.max);
    loop {
        if start_failed {
            break;
        }
        tokio::select! {
            // `herder update` stops accepting while it hands the socket over.
            _ = accept_switch.changed() => daemon.handover.accept_switched(),
            accepted = listener.accept(), if !*accept_switch.borrow() => match accepted {
                Ok((stream, _)) => {
                    accept_errors.accepted();
                    let daemon = daemon.clone();
                    let slot = connections.open();
                    tokio::spawn(async move { connection(daemon, stream, slot, limits).await });
                }
                Err(e) => accept_errors.failed(&e).await,
            },
            _ = daemon.shutdown.notified() => {
                manager.notify("STOPPING=1");
                say("`herder kill`: every app stopped".into());
                break;
            }
            _ = foreground::until_empty(&daemon), if exit_when_empty => {
                say("no app is left running (--exit-when-empty): stopping".into());
                emptied = true;
                break;
            }
            _ = sigterm.recv() => {
                daemon.handover.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("SIGTERM: stopping every app");
                say("SIGTERM: stopping every app".into());
                manager.notify("STOPPING=1");
                handlers::stop_everything(&daemon).await;
                break;
            }
            _ = sigint.recv() => {
                daemon.handover.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("SIGINT: stopping every app");
                say("SIGINT: stopping every app".into());
                manager.notify("STOPPING=1");
                handlers::stop_everything(&daemon).await;
                break;
            }
            // As nginx: SIGHUP reads the balancers' certificates again.
            _ = sighup.recv() => {
                let _ = handlers::reload_certs(&daemon, &[]);
            }
            // As PM2: SIGUSR2 reopens the log files (after an external logrotate).
            _ = sigusr2.recv() => {
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = logs::reload(&daemon).await {
                        tracing::error!(error = %e.message, "SIGUSR2: cannot reopen every log file");
                    }
                });
            }
        }
    }
    // With `--exit-when-empty`, what counts is how the apps ended; otherwise how they stopped.
    let failed = if emptied { foreground::errored(&daemon) } else { Vec::new() };
    if emptied {
        handlers::stop_everything(&daemon).await;
    }
    persister.abort();
    sampler.abort();
    home_watch.abort();
    hooks.abort();
    daemon.persist().await;
    // herder's own groups go with the daemon once empty (a group still holding an app's
    // process stays, for the next daemon to find).
    if let Some(root) = &daemon.ctx.cgroups {
        let _ = std::fs::remove_dir(&root.path);
    }
    daemon.ctx.limits.remove_roots();
    let killed = std::mem::take(&mut *daemon.killed_at_stop.lock().unwrap_or_else(|e| e.into_inner()));
    let clean = failed.is_empty() && killed.is_empty() && !start_failed;
    let code = if output.is_none() || clean { 0 } else { 1 };
    if let Some(out) = output {
        if !killed.is_empty() {
            out.say(format!("killed after their kill_timeout: {}", killed.join(", ")));
        }
        if !failed.is_empty() {
            out.say(format!("errored: {}", failed.join(", ")));
        }
        out.say(format!("exiting with {code}"));
        out.finish(&daemon.ctx.logs).await;
    }
    Ok(code)
}

/// How long an accept loop pauses after a failure before it tries again.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Failures of an accept loop. A connection that cannot be accepted (`EMFILE`: out of
/// descriptors) stays in the backlog and fails again at once, so the loop would spin: it logs
/// the first failure of a streak and pauses before each new try.
pub(crate) struct AcceptErrors {
    socket: &'static str,
    failing: bool,
}

impl AcceptErrors {
    pub fn new(socket: &'static str) -> AcceptErrors {
        AcceptErrors { socket, failing: false }
    }

    pub fn accepted(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(socket = self.socket, "accepting connections again");
        }
    }

    pub async fn failed(&mut self, e: &io::Error) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(socket = self.socket, error = %e, "cannot accept connections; trying again every 100 ms");
        }
        tokio::time::sleep(ACCEPT_RETRY).await;
    }

    /// The next connection of a TCP `listener`, through failures as [`AcceptErrors::failed`]
    /// says.
    pub async fn next(&mut self, listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    self.accepted();
                    return stream;
                }
                Err(e) => self.failed(&e).await,
            }
        }
    }
}

/// How often instances are measured (`HERDER_SAMPLE_INTERVAL` overrides it, e.g. `250ms`).
pub(crate) fn sample_interval() -> std::time::Duration {
    std::env::var("HERDER_SAMPLE_INTERVAL")
        .ok()
        .and_then(|v| crate::config::units::parse_duration(&v).ok())
        .filter(|ms| *ms >= 10)
        .map_or(std::time::Duration::from_secs(1), std::time::Duration::from_millis)
}

/// Every sample interval, measure each running instance's process tree (CPU and memory), so
/// that `list` answers from memory, and restart those over `max_memory_restart`.
async fn sample_memory(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(sample_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let handles: Vec<_> = daemon
            .registry()
            .apps
            .values()
            .flat_map(|a| a.instances.iter().map(|h| (h.clone(), a.spec().max_memory_restart)))
            .collect();
        if handles.is_empty() {
            // Nothing to sample: sleep until an app is added instead of ticking.
            daemon.apps_added.notified().await;
            continue;
        }
        // Reading /proc and cgroup files blocks: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || {
            let now = std::time::Instant::now();
            for (h, limit) in &handles {
                if let (Some((pid, rss)), Some(limit)) = (h.sample(now), limit) {
                    if rss > *limit {
                        h.memory_restart(pid, rss);
                    }
                }
            }
        })
        .await;
        tick.tick().await;
    }
}

/// `herder events`: every event as a frame, until the client hangs up (noticed at once, even
/// when nothing happens). A client too slow to keep up is told how many events it missed.
async fn stream_events(daemon: &Daemon, mut stream: UnixStream) {
    use tokio::io::AsyncReadExt;
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = daemon.ctx.events.subscribe();
    daemon.event_followers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _leave = Leave(&daemon.event_followers);
    let (mut read, mut write) = stream.split();
    let mut byte = [0u8; 1];
    loop {
        let event = tokio::select! {
            got = rx.recv() => match got {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => protocol::Event {
                    at_ms: protocol::now_ms(),
                    kind: protocol::EventKind::Lagged,
                    app: String::new(),
                    instance: 0,
                    pid: None,
                    exit: None,
                    detail: Some(format!("{n} events skipped: this client read too slowly")),
                },
                Err(RecvError::Closed) => return,
            },
            // The client sends nothing: a read ending means it hung up.
            _ = read.read(&mut byte) => return,
        };
        if protocol::write_frame(&mut write, &Response::Event(event)).await.is_err() {
            return;
        }
    }
}

/// Serve one client: check its uid, handshake, then answer requests until it hangs up (or
/// passes one of the [`control::Limits`]). A client over the cap is told so and closed.
async fn connection(
    daemon: Arc<Daemon>,
    mut stream: UnixStream,
    slot: Result<control::Slot, control::Full>,
    limits: control::Limits,
) {
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a client of another user");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the client's credentials; refused");
            return;
        }
    }
    let _slot = match slot {
        Ok(slot) => slot,
        Err(full) => return control::refuse(stream, full).await,
    };
    let pid = std::process::id();
    let hello: Hello = match control::read_within(&mut stream, limits.handshake).await {
        Some(Ok(h)) => h,
        Some(Err(_)) => return,
        None => {
            tracing::debug!(limit = ?limits.handshake, "closed a connection that sent no handshake in time");
            return;
        }
    };
    let mismatch = hello.protocol != protocol::PROTOCOL_VERSION || hello.version != protocol::PROGRAM_VERSION;
    // A client of any version may ask for `Update`, and only that.
    if mismatch && !hello.update {
        let reply = HelloReply::Mismatch {
            protocol: protocol::PROTOCOL_VERSION,
            version: protocol::PROGRAM_VERSION.to_string(),
            pid,
        };
        let _ = control::write_within(&mut stream, &reply, limits.idle).await;
        return;
    }
    let welcome = HelloReply::Welcome { version: protocol::PROGRAM_VERSION.to_string(), pid };
    if control::write_within(&mut stream, &welcome, limits.idle).await.is_err() {
        return;
    }
    loop {
        // Between requests the connection is idle; streams below leave this loop for good.
        let req: Request = match control::read_within(&mut stream, limits.idle).await {
            Some(Ok(r)) => r,
            Some(Err(FrameError::Closed)) => return,
            Some(Err(e)) => {
                let reply =
                    Response::Error(ErrorReply { kind: ErrorKind::BadRequest, message: e.to_string() });
                let _ = control::write_within(&mut stream, &reply, limits.idle).await;
                return;
            }
            None => {
                tracing::debug!(limit = ?limits.idle, "closed an idle connection");
                return;
            }
        };
        if let Request::Update = req {
            return handover::give::update(&daemon, stream).await;
        }
        if mismatch {
            let message = format!(
                "this daemon runs herder {}: only `herder update` is served",
                protocol::PROGRAM_VERSION
            );
            let reply = Response::Error(ErrorReply { kind: ErrorKind::BadRequest, message });
            let _ = control::write_within(&mut stream, &reply, limits.idle).await;
            return;
        }
        if let Request::Events = req {
            return stream_events(&daemon, stream).await;
        }
        if let Request::Logs { targets, follow, out, err } = req {
            let (resp, follower) = match logs::open(&daemon, targets, follow, out, err).await {
                Ok(opened) => (opened.reply, opened.follower),
                Err(e) => (Response::Error(e), None),
            };
            if control::write_within(&mut stream, &resp, limits.idle).await.is_err() {
                return;
            }
            drop(resp);
            match follower {
                // The connection now carries the stream of lines until the client hangs up.
                Some(f) => return f.run(stream).await,
                None => continue,
            }
        }
        let is_kill = matches!(req, Request::Kill);
        // Counted in until the reply is written: an update must not replace the image while a
        // reply is half sent.
        let busy = daemon.handover.enter();
        let resp = match &busy {
            Some(_) => handlers::handle(&daemon, req).await,
            None => handover::give::Gate::updating_reply(),
        };
        let written = control::write_within(&mut stream, &resp, limits.idle).await;
        drop(busy);
        drop(resp);
        trim_memory();
        if written.is_err() {
            return;
        }
        if is_kill {
            daemon.shutdown.notify_one();
            return;
        }
    }
}
