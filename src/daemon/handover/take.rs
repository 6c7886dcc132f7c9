//! The new image's side of `herder update`: claim what the previous image left (the document
//! and every descriptor it names, or close it all when the document cannot be used), then, in
//! place of crash recovery, adopt the apps, instances and log captures it describes and answer
//! the client.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::{decode, deferred_set, set_cloexec, AppState, Doc, TAKEOVER_VAR};
use crate::daemon::coordinator::Coordinator;
use crate::daemon::lock::DaemonLock;
use crate::daemon::registry::App;
use crate::daemon::Daemon;
use crate::protocol::{self, ExitReason, ImageInfo, Response};
use crate::supervisor::handover::Exits;
use crate::supervisor::sockets::{Listener, Sockets};
use crate::supervisor::InstanceHandle;

/// Let the deferred signals through again (the new image, once it handles them).
pub(crate) fn unblock_signals() {
    let set = deferred_set();
    // SAFETY: pthread_sigmask(3) with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
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
    let doc = decode(&bytes)?;
    let mut numbers = vec![doc.lock_fd, doc.listener_fd];
    numbers.extend(doc.reply_fd);
    numbers.extend(doc.metrics_fd);
    numbers.extend(doc.web.as_ref().map(|w| w.fd));
    numbers.extend(doc.apps.iter().flat_map(AppState::fds));
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
    let Doc { from, next_id, apps, captures, reply_fd, metrics_fd, web, .. } = doc;
    let mut take = |fd: RawFd| t.fds.remove(&fd);
    if let Some(fd) = metrics_fd.and_then(&mut take) {
        let std = std::net::TcpListener::from(fd);
        let served = std
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(std))
            .map_err(|e| e.to_string())
            .and_then(|l| crate::daemon::metrics::serve(d, l));
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics endpoint is not served any more");
        }
    }
    if let Some(web) = web {
        let served = match take(web.fd) {
            Some(fd) => crate::web::adopt(d, std::net::TcpListener::from(fd), web.sessions),
            None => Err("its socket was not handed over".into()),
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "the web dashboard is not served any more");
        }
    }
    let mut adopted = 0;
    {
        let mut reg = d.registry();
        reg.next_id = next_id;
        let mut pending = Vec::new();
        for app in apps {
            let mut spec = app.spec;
            crate::daemon::registry::share_env(&mut spec.env);
            let spec = Arc::new(spec);
            let sockets = Sockets::new(
                app.sockets
                    .into_iter()
                    .map(|s| Listener {
                        spec: s.spec,
                        fds: s.fds.iter().filter_map(|fd| take(*fd)).collect(),
                        learned: s.learned,
                    })
                    .collect(),
            );
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
                        sockets.clone(),
                        st,
                        exits,
                        &mut take,
                    )
                })
                .collect();
            reg.next_id = reg.next_id.max(app.id + 1).max(app.ids.iter().max().map_or(0, |m| m + 1));
            let mut ids = app.ids;
            ids.truncate(instances.len());
            if ids.is_empty() {
                ids.push(app.id);
            }
            let front = crate::balancer::Front::default();
            if let Some(b) = app.balancer {
                match take(b.fd) {
                    Some(listener) => {
                        let connections: Vec<_> =
                            b.connections.into_iter().filter_map(|c| Some((take(c.fd)?, c.read))).collect();
                        tracing::info!(app = %spec.name, connections = connections.len(), "balancer taken over");
                        front.adopt(crate::balancer::Handed { address: b.listen, listener, connections });
                    }
                    None => tracing::error!(app = %spec.name, "the balancer's socket was not handed over"),
                }
            }
            pending.push((app.id, spec, instances, sockets, ids, front));
        }
        // Ids for slots the document has none for, once every id it names is taken.
        for (id, spec, instances, sockets, mut ids, front) in pending {
            while ids.len() < instances.len() {
                ids.push(reg.next_id());
            }
            let coordinator =
                Coordinator::spawn(d, id, spec.clone(), instances.clone(), sockets.clone(), ids.clone());
            let mut app = App::new(id, spec, instances, sockets, ids);
            app.front = Arc::new(front);
            // The group keeps the old daemon's steering; steered again, this one knows how.
            crate::daemon::coordinator::steer_running(&app.sockets, &app.spec().name, &app.instances, &[]);
            reg.insert(app, coordinator);
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
        // Files that cannot be opened again drop their lines until they can; the pipe is read
        // on all the same (closing it would kill the app with SIGPIPE at its next write).
        let sink = crate::logs::Sink::open(&d.ctx.logs, &policy, &spec.name, c.instance, c.stream);
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
