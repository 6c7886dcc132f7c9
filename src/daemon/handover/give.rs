//! The old image's side of `herder update`: the gate that counts requests under way and turns
//! new ones away, then steps 1 to 6 of [`super`]'s description (hold every actor and capture
//! still, gather their state into the document, check the new binary, execute it), undoing
//! them all when one fails.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::{
    deferred_set, set_cloexec, write_doc, AppState, ConnectionState, Doc, FrontState, SocketState, WebState,
    HANDOVER_VERSION, TAKEOVER_VAR,
};
use crate::balancer::{Front, Handed};
use crate::daemon::image::CheckReport;
use crate::daemon::registry::App;
use crate::daemon::Daemon;
use crate::logs::handover::CaptureState;
use crate::protocol::{self, ErrorKind, ErrorReply, Response};

/// How long requests under way may take to finish before the update gives up.
const REQUESTS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long actors, log writers and compressions may take to hold still.
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the balancers' connections may take to answer their requests under way; a
/// connection still busy then (a stream) is closed with the old image.
const FRONT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `handover-check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

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
    web_quiet: bool,
    reaper_paused: bool,
    /// Balancers that stopped serving, by app id, with what they gave up.
    fronts: Vec<(u32, Arc<Front>, Handed)>,
}

impl Undo<'_> {
    async fn finish(self) {
        for (_, front, handed) in self.fronts {
            front.resume(handed);
        }
        if self.reaper_paused {
            self.d.ctx.reaper.resume();
        }
        if self.accept_paused {
            self.d.handover.pause_accepting(false).await;
        }
        if self.web_quiet {
            self.d.web.resume();
            self.d.metrics.resume();
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
    let mut undo =
        Undo { d, accept_paused: false, web_quiet: false, reaper_paused: false, fronts: Vec::new() };
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

/// Steps 1 to 6 of [`super`]'s description; returns only on failure. What it holds (actors,
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
    // The web dashboard and the metrics endpoint too: their requests under way are answered,
    // their sockets' queues wait for the new image.
    tokio::join!(d.web.quiesce(), d.metrics.quiesce());
    undo.web_quiet = true;
    let (next_id, apps): (u32, Vec<App>) = {
        let reg = d.registry();
        (reg.next_id, reg.apps.values().cloned().collect())
    };
    // The balancers stop accepting (clients wait in the backlog, which the new image
    // inherits) and keep their connections, once idle, for the new image.
    let mut handing = JoinSet::new();
    for app in apps.iter().filter(|a| a.spec().balancer.is_some()) {
        let (id, front) = (app.id, app.front.clone());
        handing.spawn(async move {
            let handed = front.hand_over(FRONT_TIMEOUT).await;
            (id, front, handed)
        });
    }
    while let Some(Ok((id, front, handed))) = handing.join_next().await {
        if let Some(handed) = handed {
            undo.fronts.push((id, front, handed));
        }
    }
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
        let listeners = app.sockets.get();
        let sockets = listeners
            .iter()
            .map(|l| SocketState {
                spec: l.spec.clone(),
                fds: l.fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect(),
                learned: l.learned,
            })
            .collect();
        let balancer = undo.fronts.iter().find(|(id, ..)| *id == app.id).map(|(_, _, h)| FrontState {
            listen: h.address.clone(),
            fd: h.listener.as_raw_fd(),
            connections: h
                .connections
                .iter()
                .map(|(fd, read)| ConnectionState { fd: fd.as_raw_fd(), read: read.clone() })
                .collect(),
        });
        app_states.push(AppState {
            id: app.id,
            spec: (**app.spec()).clone(),
            instances,
            sockets,
            ids: app.ids.clone(),
            balancer,
        });
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
        web: d.web.handover().map(|(fd, sessions)| WebState { fd, sessions }),
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
    fds.extend(doc.web.as_ref().map(|w| w.fd));
    fds.extend(doc.apps.iter().flat_map(AppState::fds));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
