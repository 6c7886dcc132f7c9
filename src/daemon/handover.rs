//! `herder update`: the daemon executes its binary again in place. The pid stays the same, so
//! every app stays its child, untouched; what the daemon knows and holds goes to the new image
//! through `execve` itself.
//!
//! The old image, on `Update`:
//! 1. answers every other request with `Updating` (clients send it again) and waits for the
//!    requests under way to finish, then stops accepting (new clients wait in the listening
//!    socket's backlog, which the new image inherits);
//! 2. holds every instance actor still, then pauses the reaper (a child that exits from now on
//!    stays a zombie for the new image), then asks each actor for its state (phase, pid,
//!    counters, deadlines, descriptors), which handles first an exit delivered before the
//!    pause;
//! 3. holds every log capture still between two reads (each reports its pipe and the
//!    unfinished last line; what the app writes meanwhile waits in the pipe), and waits for
//!    rotated logs being compressed;
//! 4. writes `state.json` (so a new image that dies at once is recovered as after a crash) and
//!    the handover document ([`Doc`], JSON) to a memfd;
//! 5. runs `<binary> handover-check` to make sure the file there is a herder that reads this
//!    document;
//! 6. with every spawn held off, clears close-on-exec on exactly the descriptors the document
//!    names and calls `execve(<binary>, argv, env + HERDER_TAKEOVER=<memfd>)`.
//!
//! If anything fails (a step times out, the check fails, `execve` returns), everything is
//! undone in reverse and the client gets the error: the old image goes on as it was.
//!
//! The new image ([`Takeover::from_env`]) marks every inherited descriptor close-on-exec, reads
//! the document, keeps the lock and the listening socket, registers the adopted pids with its
//! reaper before the first `waitpid`, starts each actor in the phase it had, resumes each
//! capture, writes `state.json` and answers the client on the inherited connection. Crash
//! recovery does not run: nothing is killed. If the document cannot be used, the new image
//! closes what it inherited and starts like a daemon after a crash, which ends the old
//! instances and starts the apps again, so each still runs exactly once.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch, Notify};

use super::image::{self, CheckReport};
use super::lock::DaemonLock;
use super::registry::App;
use super::Daemon;
use crate::logs::handover::CaptureState;
use crate::protocol::{self, AppSpec, ErrorKind, ErrorReply, ExitReason, ImageInfo, Response};
use crate::supervisor::handover::{Exits, InstanceState};
use crate::supervisor::InstanceHandle;

/// Version of the handover document. A new binary reads every older version (fields are only
/// added, with defaults); `handover-check` tells which versions a binary reads.
pub const HANDOVER_VERSION: u32 = 1;
/// The variable naming the document's descriptor in the new image.
const TAKEOVER_VAR: &str = "HERDER_TAKEOVER";
/// How long requests under way may take to finish before the update gives up.
const REQUESTS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long actors, log writers and compressions may take to hold still.
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `handover-check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The handover document.
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    version: u32,
    lock_fd: RawFd,
    listener_fd: RawFd,
    /// The `herder update` client's connection, which the new image answers.
    #[serde(default)]
    reply_fd: Option<RawFd>,
    /// The metrics endpoint's listening socket, if one is served.
    #[serde(default)]
    metrics_fd: Option<RawFd>,
    /// The open file soft limit the daemon was started with (before it raised its own), which
    /// the apps get.
    #[serde(default)]
    nofile_soft: Option<u64>,
    from: ImageInfo,
    /// How long the daemon process has run.
    uptime_ms: u64,
    next_id: u32,
    apps: Vec<AppState>,
    captures: Vec<CaptureState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppState {
    id: u32,
    spec: AppSpec,
    instances: Vec<InstanceState>,
}

/// The fields every version of the document keeps, read first: enough to keep the lock and
/// the socket when the rest cannot be read.
#[derive(Debug, Deserialize)]
struct Envelope {
    version: u32,
}

/// Requests under way, and the switch that turns new ones away during an update.
pub(crate) struct Gate {
    updating: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// `true` tells the accept loop to stop accepting.
    accept_paused: watch::Sender<bool>,
    accept_acked: Notify,
    /// SIGTERM or SIGINT came: the daemon is stopping, not to be replaced.
    pub stopping: AtomicBool,
    lock_fd: RawFd,
    listener_fd: RawFd,
    /// `herder run`: a container's program, replaced with its container.
    foreground: bool,
    /// The service manager's `NOTIFY_SOCKET` (taken out of the environment at start), for
    /// the next image.
    service_notify: Option<OsString>,
}

/// A request counted in; counted out when dropped.
pub(crate) struct Busy<'a>(&'a Gate);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Gate {
    pub fn new(
        lock_fd: RawFd,
        listener_fd: RawFd,
        foreground: bool,
        service_notify: Option<OsString>,
    ) -> Gate {
        Gate {
            updating: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            accept_paused: watch::channel(false).0,
            accept_acked: Notify::new(),
            stopping: AtomicBool::new(false),
            lock_fd,
            listener_fd,
            foreground,
            service_notify,
        }
    }

    /// Count a request in, unless an update is under way.
    pub fn enter(&self) -> Option<Busy<'_>> {
        // Counted first, then checked: the update sets its flag first, then reads the count,
        // so one of the two always sees the other.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.updating.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(Busy(self))
    }

    fn leave(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// The answer to a request that came during an update.
    pub fn updating_reply() -> Response {
        Response::Error(ErrorReply {
            kind: ErrorKind::Updating,
            message: "the daemon is updating itself (`herder update`); run the command again".into(),
        })
    }

    /// For the accept loop: whether to accept now, and the change to wait for.
    pub fn accept_switch(&self) -> watch::Receiver<bool> {
        self.accept_paused.subscribe()
    }

    /// The accept loop saw a change of the switch.
    pub fn accept_switched(&self) {
        self.accept_acked.notify_one();
    }

    async fn wait_idle(&self, deadline: tokio::time::Instant) -> Result<(), String> {
        let mut told = false;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let n = self.in_flight.load(Ordering::SeqCst);
            if n == 0 {
                return Ok(());
            }
            if !std::mem::replace(&mut told, true) {
                tracing::info!(requests = n, "update: waiting for the requests under way to be answered");
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return Err(format!(
                    "{n} request(s) still running after {} s (a stop waiting for `kill_timeout`?); try again",
                    REQUESTS_TIMEOUT.as_secs()
                ));
            }
        }
    }

    async fn pause_accepting(&self, paused: bool) {
        let acked = self.accept_acked.notified();
        tokio::pin!(acked);
        acked.as_mut().enable();
        if *self.accept_paused.borrow() == paused {
            return;
        }
        self.accept_paused.send_replace(paused);
        // The accept loop answers at once; without one (it ended), there is nothing to pause.
        let _ = tokio::time::timeout(Duration::from_secs(5), acked).await;
    }
}

/// What the old image undoes when the update fails, in reverse order of doing it.
struct Undo<'a> {
    d: &'a Daemon,
    accept_paused: bool,
    reaper_paused: bool,
}

impl Undo<'_> {
    async fn finish(self) {
        if self.reaper_paused {
            self.d.ctx.reaper.resume();
        }
        if self.accept_paused {
            self.d.handover.pause_accepting(false).await;
        }
        self.d.handover.updating.store(false, Ordering::SeqCst);
    }
}

/// Serve `Update` on `stream`: on success this never returns (the process runs the new image,
/// which answers); on failure the daemon goes on as it was and the client gets the error.
pub(crate) async fn update(d: &Arc<Daemon>, mut stream: UnixStream) {
    if d.handover.foreground {
        let message = "`herder run` (a container's foreground program) is not updated in place\nhint: start the container again with the new herder".to_string();
        let _ = protocol::write_frame(
            &mut stream,
            &Response::Error(ErrorReply { kind: ErrorKind::BadRequest, message }),
        )
        .await;
        return;
    }
    if d.handover.updating.swap(true, Ordering::SeqCst) {
        let reply = Response::Error(ErrorReply {
            kind: ErrorKind::BadRequest,
            message: "an update is already under way".into(),
        });
        let _ = protocol::write_frame(&mut stream, &reply).await;
        return;
    }
    let mut undo = Undo { d, accept_paused: false, reaper_paused: false };
    let err = replace_image(d, &stream, &mut undo).await;
    undo.finish().await;
    tracing::error!(error = %err, "update failed; the daemon goes on as it was");
    let reply = Response::Error(ErrorReply {
        kind: ErrorKind::Internal,
        message: format!(
            "{err}\nthe daemon (pid {}) goes on running herder {} with its apps",
            std::process::id(),
            d.image.version
        ),
    });
    let _ = protocol::write_frame(&mut stream, &reply).await;
}

/// Steps 1 to 6 of the module's description; returns only on failure. What it holds (actors,
/// captures, the state lock) is let go when it returns.
async fn replace_image(d: &Arc<Daemon>, client: &UnixStream, undo: &mut Undo<'_>) -> String {
    let exe = d.image.exe.clone();
    tracing::info!(exe = %exe.display(), "update: holding every app's supervision and logs still");
    let started = std::time::Instant::now();
    if let Err(e) = d.handover.wait_idle(tokio::time::Instant::now() + REQUESTS_TIMEOUT).await {
        return e;
    }
    d.handover.pause_accepting(true).await;
    undo.accept_paused = true;
    let (next_id, apps): (u32, Vec<App>) = {
        let reg = d.registry();
        (reg.next_id, reg.apps.values().cloned().collect())
    };
    // An actor stopping its process when the update comes holds still once it is done.
    let longest_stop = apps.iter().map(|a| a.spec().kill_timeout_ms).max().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + HOLD_TIMEOUT + Duration::from_millis(longest_stop);
    // The actors hold still while the reaper still runs (a stop under way needs it); then the
    // reaper pauses; then each reports, handling first an exit delivered before the pause.
    let mut held_actors = Vec::new();
    for app in &apps {
        for h in &app.instances {
            match tokio::time::timeout_at(deadline, h.hold()).await {
                Ok(Some(held)) => held_actors.push(held),
                Ok(None) => return format!("`{}`: an instance's supervisor is gone", app.spec().name),
                Err(_) => {
                    return format!(
                        "`{}` did not hold still in time (an instance is stopping?); try again",
                        app.spec().name
                    )
                }
            }
        }
    }
    d.ctx.reaper.pause();
    undo.reaper_paused = true;
    let mut held_iter = held_actors.iter_mut();
    let mut app_states = Vec::new();
    for app in &apps {
        let mut instances = Vec::new();
        for _ in &app.instances {
            let Some(held) = held_iter.next() else { break };
            match tokio::time::timeout_at(deadline, held.state()).await {
                Ok(Some(state)) => instances.push(state),
                _ => return format!("`{}`: an instance did not report its state", app.spec().name),
            }
        }
        app_states.push(AppState { id: app.id, spec: (**app.spec()).clone(), instances });
    }
    let held = match d.ctx.logs.hold_captures(deadline).await {
        Ok(h) => h,
        Err(e) => return e,
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let idle = || (crate::logs::file::compressions_running() == 0).then_some(());
    if crate::wait::until_async(left, Duration::from_millis(1), Duration::from_millis(50), idle)
        .await
        .is_none()
    {
        return "rotated logs are still being compressed; try again".into();
    }
    let captures: Vec<CaptureState> = held
        .held
        .iter()
        .map(|h| {
            let mut state = h.state.clone();
            let current = apps.iter().find(|a| a.id == state.app_id).map(|a| a.spec());
            if !current.is_some_and(|s| Arc::ptr_eq(s, &h.spec)) {
                state.spec = Some((*h.spec).clone());
            }
            state
        })
        .collect();

    d.persist().await;
    // No state write from here on: the new image writes its own.
    let _persisting = d.persisting.lock().await;

    let doc = Doc {
        version: HANDOVER_VERSION,
        lock_fd: d.handover.lock_fd,
        listener_fd: d.handover.listener_fd,
        reply_fd: Some(client.as_raw_fd()),
        metrics_fd: d.metrics.listener_fd(),
        nofile_soft: crate::process::nofile::original(),
        from: d.image.clone(),
        uptime_ms: d.started.elapsed().as_millis() as u64,
        next_id,
        apps: app_states,
        captures,
    };
    let memfd = match write_doc(&doc) {
        Ok(f) => f,
        Err(e) => return format!("cannot write the handover document: {e}"),
    };
    let report = match check_binary(&exe).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if d.handover.stopping.load(Ordering::SeqCst) {
        return "the daemon is stopping (SIGTERM or SIGINT came)".into();
    }
    let mut fds = vec![doc.lock_fd, doc.listener_fd, client.as_raw_fd(), memfd.as_raw_fd()];
    fds.extend(doc.metrics_fd);
    fds.extend(doc.apps.iter().flat_map(|a| a.instances.iter().flat_map(InstanceState::fds)));
    fds.extend(doc.captures.iter().map(|c| c.fd));
    tracing::info!(
        exe = %exe.display(),
        to_version = %report.version,
        to_build = report.build_id.as_deref().unwrap_or("-"),
        apps = doc.apps.len(),
        captures = doc.captures.len(),
        held_ms = started.elapsed().as_millis() as u64,
        "update: executing the new image"
    );
    let reaper = d.ctx.reaper.clone();
    let memfd_raw = memfd.as_raw_fd();
    let service_notify = d.handover.service_notify.clone();
    let exec_result =
        tokio::task::spawn_blocking(move || execute(&exe, memfd_raw, &fds, service_notify, &reaper)).await;
    drop(memfd);
    drop(held);
    drop(held_actors);
    match exec_result {
        Ok(e) => format!("cannot execute {}: {e}", d.image.exe.display()),
        Err(e) => format!("the update failed: {e}"),
    }
}

/// The document in a memfd (a deleted file in `/tmp` on kernels without them), close-on-exec
/// until the last moment, positioned at its start.
fn write_doc(doc: &Doc) -> io::Result<File> {
    let bytes = serde_json::to_vec(doc).map_err(io::Error::other)?;
    // SAFETY: memfd_create(2) with a valid C string.
    let fd = unsafe { libc::memfd_create(c"herder-handover".as_ptr(), libc::MFD_CLOEXEC) };
    let mut file = if fd >= 0 {
        // SAFETY: a new descriptor owned by nobody else.
        unsafe { File::from_raw_fd(fd) }
    } else {
        let path = std::env::temp_dir().join(format!("herder-handover-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .mode(0o600)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        f
    };
    file.write_all(&bytes)?;
    file.rewind()?;
    Ok(file)
}
/// Run `<exe> handover-check`: the file must be a herder that reads this document.
async fn check_binary(exe: &Path) -> Result<CheckReport, String> {
    let exe = exe.to_path_buf();
    let shown = exe.display().to_string();
    let out = tokio::task::spawn_blocking(move || -> io::Result<std::process::Output> {
        let mut child = std::process::Command::new(&exe)
            .arg("handover-check")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // The reaper is paused, so only this wait collects the child.
        let mut wait =
            crate::wait::Backoff::new(CHECK_TIMEOUT, Duration::from_millis(1), Duration::from_millis(20));
        while child.try_wait()?.is_none() {
            if !wait.sleep() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "it did not answer in time"));
            }
        }
        child.wait_with_output()
    })
    .await
    .map_err(|e| format!("cannot check {shown}: {e}"))?;
    let out = out.map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::PermissionDenied => "permission denied (is it an executable file?)".to_string(),
            io::ErrorKind::NotFound => "no such file".to_string(),
            _ => e.to_string(),
        };
        format!("cannot run the new binary {shown}: {why}")
    })?;
    let report: Option<CheckReport> =
        serde_json::from_slice(&out.stdout).ok().filter(|r: &CheckReport| r.program == "herder");
    let Some(report) = report.filter(|_| out.status.success()) else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(format!(
            "{shown} is not a herder that can take over from this daemon (`{shown} handover-check` {}{})",
            out.status,
            if first.is_empty() { String::new() } else { format!(": {first}") }
        ));
    };
    if !(report.handover_min..=report.handover_max).contains(&HANDOVER_VERSION) {
        return Err(format!(
            "herder {} at {shown} cannot take over from herder {} (it reads handover versions {} to {}, this daemon writes {HANDOVER_VERSION})\nhint: `herder kill` stops this daemon and its apps; start them again with the new binary",
            report.version,
            protocol::PROGRAM_VERSION,
            report.handover_min,
            report.handover_max
        ));
    }
    Ok(report)
}

/// Signals whose default action ends the process: blocked from just before `execve` until the
/// new image handles them, so that none arriving in between kills the daemon.
const DEFERRED_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR2];

fn deferred_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in DEFERRED_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Let the deferred signals through again (the new image, once it handles them).
pub(crate) fn unblock_signals() {
    let set = deferred_set();
    // SAFETY: pthread_sigmask(3) with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor number; an invalid one fails with EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Clear close-on-exec on `fds` and execute `exe` with this process's arguments and
/// environment plus `HERDER_TAKEOVER` (and the service manager's `NOTIFY_SOCKET`, which the
/// daemon took out of its environment). Returns only on failure, with everything as it was.
fn execute(
    exe: &Path,
    doc_fd: RawFd,
    fds: &[RawFd],
    service_notify: Option<OsString>,
    reaper: &crate::process::reaper::Reaper,
) -> io::Error {
    let cstr =
        |b: Vec<u8>| CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"));
    let prepared = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = cstr(exe.as_os_str().to_owned().into_vec())?;
        let argv = std::env::args_os().map(|a| cstr(a.into_vec())).collect::<io::Result<Vec<_>>>()?;
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != TAKEOVER_VAR)
            .map(|(k, v)| {
                let mut kv: OsString = k;
                kv.push("=");
                kv.push(v);
                cstr(kv.into_vec())
            })
            .collect::<io::Result<_>>()?;
        env.push(cstr(format!("{TAKEOVER_VAR}={doc_fd}").into_bytes())?);
        if let Some(address) = service_notify {
            let mut kv = OsString::from("NOTIFY_SOCKET=");
            kv.push(address);
            env.push(cstr(kv.into_vec())?);
        }
        Ok((path, argv, env))
    })();
    let (path, argv, env) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());

    // No child may be created (and inherit these descriptors) from here to `execve`.
    let _no_spawns = reaper.hold_spawns();
    let mut cleared = Vec::new();
    let mut failure = None;
    for &fd in fds {
        match set_cloexec(fd, false) {
            Ok(()) => cleared.push(fd),
            Err(e) => {
                failure = Some(io::Error::new(e.kind(), format!("descriptor {fd}: {e}")));
                break;
            }
        }
    }
    let err = match failure {
        Some(e) => e,
        None => {
            let set = deferred_set();
            let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: pthread_sigmask(3) and execve(2) with valid, NUL-terminated arrays of
            // pointers into `path`, `argv` and `env`, which live across the call.
            unsafe {
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
                libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
                let e = io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                e
            }
        }
    };
    for fd in cleared {
        let _ = set_cloexec(fd, true);
    }
    err
}

/// What the new image inherits, read in `run` before anything else opens a descriptor.
pub(crate) struct Takeover {
    doc: Option<Doc>,
    /// Descriptors the document names, not claimed yet.
    fds: HashMap<RawFd, OwnedFd>,
    /// Why the document could not be used, for the daemon log.
    error: Option<String>,
}

impl Takeover {
    /// The state an earlier image of this process handed over, if it is one.
    pub fn from_env() -> Takeover {
        let Some(var) = std::env::var_os(TAKEOVER_VAR) else {
            return Takeover { doc: None, fds: HashMap::new(), error: None };
        };
        // SAFETY: `run` calls this before any other thread exists.
        unsafe { std::env::remove_var(TAKEOVER_VAR) };
        // Whatever is inherited must not leak into the apps this image starts.
        cloexec_from(3);
        match read_inherited(&var) {
            Ok((doc, fds)) => Takeover { doc: Some(doc), fds, error: None },
            Err(e) => {
                // Close everything inherited (the lock included): this image starts like a
                // daemon after a crash.
                close_from(3);
                Takeover { doc: None, fds: HashMap::new(), error: Some(e) }
            }
        }
    }

    /// Log why the handover could not be used, once the log is open.
    pub fn log_error(&self) {
        if let Some(e) = &self.error {
            tracing::error!(error = %e, "cannot take over from the previous image; its apps are recovered as after a crash");
        }
    }

    fn take(&mut self, fd: RawFd) -> Option<OwnedFd> {
        self.fds.remove(&fd)
    }

    /// The daemon lock the previous image held.
    pub fn lock(&mut self) -> Option<DaemonLock> {
        let fd = self.doc.as_ref()?.lock_fd;
        self.take(fd).map(|fd| DaemonLock::inherited(File::from(fd)))
    }

    /// The listening control socket.
    pub fn listener(&mut self) -> Option<StdUnixListener> {
        let fd = self.doc.as_ref()?.listener_fd;
        let listener = StdUnixListener::from(self.take(fd)?);
        listener.set_nonblocking(true).ok()?;
        Some(listener)
    }

    pub fn is_takeover(&self) -> bool {
        self.doc.is_some()
    }

    /// Pids of the running instances (and of the processes they named with `MAINPID=`), to
    /// register with the reaper before its first pass. Nothing has reaped since the previous
    /// image paused its reaper, so each is alive or a zombie; one that is neither (reaped all
    /// the same) is left out, and its instance's actor sees its exit at once.
    pub fn pids(&self) -> Vec<i32> {
        use crate::process::tree::start_ticks;
        let instances = self.doc.iter().flat_map(|d| d.apps.iter().flat_map(|a| a.instances.iter()));
        let mut pids = Vec::new();
        for st in instances {
            if let Some(pid) = st.pid() {
                match st.info.start_ticks {
                    Some(ticks) if start_ticks(pid) != Some(ticks) => {
                        tracing::warn!(pid, "an adopted process is gone; its exit status is unknown");
                    }
                    _ => pids.push(pid),
                }
            }
            pids.extend(st.next_main().filter(|pid| start_ticks(*pid).is_some()));
        }
        pids
    }

    /// The open file soft limit the first image started with.
    pub fn nofile_soft(&self) -> Option<u64> {
        self.doc.as_ref()?.nofile_soft
    }

    /// The image this one replaced, and how long the daemon process has run.
    pub fn previous(&self) -> Option<(&ImageInfo, Duration)> {
        self.doc.as_ref().map(|d| (&d.from, Duration::from_millis(d.uptime_ms)))
    }
}

/// Read the document named by `HERDER_TAKEOVER` and claim every descriptor it names.
fn read_inherited(var: &std::ffi::OsStr) -> Result<(Doc, HashMap<RawFd, OwnedFd>), String> {
    let fd: RawFd = var
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|fd| *fd > 2 && fd_is_open(*fd))
        .ok_or_else(|| format!("`{TAKEOVER_VAR}` is not an open descriptor: {var:?}"))?;
    // SAFETY: an open descriptor the previous image left for this one alone.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the handover: {e}"))?;
    drop(file);
    let envelope: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("the handover document is corrupt: {e}"))?;
    if !(image::HANDOVER_MIN..=image::HANDOVER_MAX).contains(&envelope.version) {
        return Err(format!(
            "the handover document has version {}, this herder reads {} to {}",
            envelope.version,
            image::HANDOVER_MIN,
            image::HANDOVER_MAX
        ));
    }
    let doc: Doc =
        serde_json::from_slice(&bytes).map_err(|e| format!("the handover document is corrupt: {e}"))?;
    let mut numbers = vec![doc.lock_fd, doc.listener_fd];
    numbers.extend(doc.reply_fd);
    numbers.extend(doc.metrics_fd);
    numbers.extend(doc.apps.iter().flat_map(|a| a.instances.iter().flat_map(InstanceState::fds)));
    numbers.extend(doc.captures.iter().map(|c| c.fd));
    let mut fds = HashMap::new();
    for n in numbers {
        if n <= 2 || !fd_is_open(n) || fds.contains_key(&n) {
            return Err(format!("the handover names descriptor {n}, which is not open or named twice"));
        }
        // SAFETY: an open descriptor, named once, which the previous image left to this one.
        fds.insert(n, unsafe { OwnedFd::from_raw_fd(n) });
    }
    Ok((doc, fds))
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl(2) F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Mark every descriptor from `first` on close-on-exec.
fn cloexec_from(first: RawFd) {
    // SAFETY: close_range(2) only changes flags with CLOSE_RANGE_CLOEXEC.
    if unsafe {
        libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC)
    } == 0
    {
        return;
    }
    for fd in open_fds().into_iter().filter(|fd| *fd >= first) {
        let _ = set_cloexec(fd, true);
    }
}

/// Close every descriptor from `first` on.
fn close_from(first: RawFd) {
    // SAFETY: close_range(2); nothing in this process uses these descriptors yet.
    if unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0) } == 0 {
        return;
    }
    for fd in open_fds().into_iter().filter(|fd| *fd >= first) {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

fn open_fds() -> Vec<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// In the new image, in place of crash recovery: the registry as it was, every instance's
/// actor in its phase, every capture reading on; then `state.json` and the client's answer.
pub(crate) async fn adopt(
    d: &Arc<Daemon>,
    mut t: Takeover,
    mut exits: HashMap<i32, oneshot::Receiver<ExitReason>>,
) {
    let Some(doc) = t.doc.take() else { return };
    let Doc { from, next_id, apps, captures, reply_fd, metrics_fd, .. } = doc;
    let mut take = |fd: RawFd| t.fds.remove(&fd);
    if let Some(fd) = metrics_fd.and_then(&mut take) {
        let std = std::net::TcpListener::from(fd);
        let served = std
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(std))
            .map_err(|e| e.to_string())
            .and_then(|l| super::metrics::serve(d, l));
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics endpoint is not served any more");
        }
    }
    let mut adopted = 0;
    {
        let mut reg = d.registry();
        reg.next_id = next_id;
        for app in apps {
            let mut spec = app.spec;
            super::registry::share_env(&mut spec.env);
            let spec = Arc::new(spec);
            let instances: Vec<InstanceHandle> = app
                .instances
                .into_iter()
                .map(|st| {
                    let exits = Exits {
                        main: st.pid().and_then(|p| exits.remove(&p)),
                        next_main: st.next_main().and_then(|p| exits.remove(&p)),
                    };
                    adopted += usize::from(exits.main.is_some());
                    InstanceHandle::adopt(
                        d.ctx.clone(),
                        app.id,
                        st.info.index,
                        spec.clone(),
                        st,
                        exits,
                        &mut take,
                    )
                })
                .collect();
            reg.next_id = reg.next_id.max(app.id + 1);
            reg.apps.insert(app.id, App::new(app.id, spec, instances));
        }
    }
    let mut resumed = 0;
    for c in captures {
        let Some(fd) = take(c.fd) else { continue };
        let spec = match &c.spec {
            Some(s) => Some(Arc::new(s.clone())),
            None => d.registry().apps.get(&c.app_id).map(|a| a.spec().clone()),
        };
        let Some(spec) = spec else {
            tracing::warn!(app_id = c.app_id, "output of an unknown app dropped");
            continue;
        };
        let policy = crate::logs::policy_of(&d.ctx.paths, &spec, c.instance);
        let sink = crate::logs::Sink::open(&d.ctx.logs, &policy, &spec.name, c.instance, c.stream)
            .unwrap_or_else(|e| {
                // The pipe is read on all the same: closing it would kill the app (SIGPIPE) at
                // its next write. Followers still get the lines.
                tracing::error!(app = %spec.name, instance = c.instance, stream = c.stream.as_str(), error = %e, "cannot open the log files again; that output is dropped until the app restarts");
                crate::logs::Sink::discard(&policy, &spec.name, c.instance, c.stream)
            });
        crate::logs::handover::resume(fd, sink.owned_by(c.app_id, spec), &d.ctx.logs, &c);
        resumed += 1;
    }
    let reply = reply_fd.and_then(&mut take);
    // Descriptors nobody claimed are closed here.
    t.fds.clear();
    d.ctx.changed.notify_one();
    d.apps_added.notify_one();
    d.persist().await;
    tracing::info!(
        from_version = %from.version,
        from_build = from.build_id.as_deref().unwrap_or("-"),
        generation = d.image.generation,
        apps = d.registry().apps.len(),
        running = adopted,
        captures = resumed,
        "took over from the previous image"
    );
    if let Some(fd) = reply {
        let std = std::os::unix::net::UnixStream::from(fd);
        let stream = std.set_nonblocking(true).ok().and_then(|()| UnixStream::from_std(std).ok());
        if let Some(mut stream) = stream {
            let reply = Response::Updated { pid: std::process::id(), from, to: d.image.clone() };
            let _ = protocol::write_frame(&mut stream, &reply).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_failed_exec_restores_close_on_exec() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reaper_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let reaper = reaper_rt.block_on(async { crate::process::reaper::Reaper::start().unwrap() });
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        let err = execute(Path::new("/nonexistent/herder"), a.as_raw_fd(), &fds, None, &reaper);
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        for fd in fds {
            // SAFETY: F_GETFD on our own descriptors.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_ne!(flags & libc::FD_CLOEXEC, 0, "descriptor {fd} is close-on-exec again");
        }
        // And spawning works again (the spawn lock was let go).
        let r = reaper.spawn_with(|| Ok(()), |_| 0);
        assert!(r.is_ok());
    }

    #[test]
    fn the_document_reads_back_and_names_its_descriptors() {
        let doc = Doc {
            version: HANDOVER_VERSION,
            lock_fd: 5,
            listener_fd: 6,
            reply_fd: Some(7),
            metrics_fd: None,
            nofile_soft: Some(1024),
            from: image::this_image(PathBuf::from("/usr/bin/herder"), 2),
            uptime_ms: 1234,
            next_id: 3,
            apps: Vec::new(),
            captures: Vec::new(),
        };
        let mut f = write_doc(&doc).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        let back: Doc = serde_json::from_str(&text).unwrap();
        assert_eq!((back.lock_fd, back.listener_fd, back.reply_fd, back.next_id), (5, 6, Some(7), 3));
        assert_eq!(back.from.generation, 2);
        // SAFETY: F_GETFD on our own descriptor.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec until the last moment");
    }
}
