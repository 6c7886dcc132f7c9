//! The live side of a running instance: its process's exit, what the app says on its notify
//! socket and IPC channel, its probes' results, and the timers and watched files that can end
//! the run. The actor waits on all of them at once.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use crate::health::notify::{Notice, NotifySocket};
use crate::health::probe::ProbeResult;
use crate::health::watch::Watcher;
use crate::protocol::ExitReason;

pub(super) struct Running {
    pub(super) pid: i32,
    /// `MAINPID=`: the process that takes over as the main one when `pid` exits.
    pub(super) next_main: Option<(i32, oneshot::Receiver<ExitReason>)>,
    /// Where the kernel counts OOM kills of the instance, and the count at its start.
    pub(super) oom: Option<(PathBuf, u64)>,
    pub(super) exit: oneshot::Receiver<ExitReason>,
    /// When it started, on the runtime's clock (which tests can pause).
    pub(super) started: tokio::time::Instant,
    /// While a `wait_ready` instance is launching: when its ready signal is due.
    pub(super) ready_deadline: Option<tokio::time::Instant>,
    /// With `watchdog`: when the next `WATCHDOG=1` is due.
    pub(super) watchdog_deadline: Option<tokio::time::Instant>,
    /// A Node app's IPC channel (`process.send('ready')`).
    pub(super) ipc: Option<IpcChannel>,
    /// Its health probes, which end with it.
    pub(super) probes: Option<Probes>,
    /// With `cron_restart`: when the next scheduled restart is due.
    pub(super) cron_deadline: Option<tokio::time::Instant>,
}

/// The probe tasks of a running instance and their results.
pub(super) struct Probes {
    pub(super) results: mpsc::Receiver<ProbeResult>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The next probe result; never, without probes.
pub(super) async fn recv_probe(probes: &mut Option<Probes>) -> Option<ProbeResult> {
    match probes {
        Some(p) => p.results.recv().await,
        None => std::future::pending().await,
    }
}

/// Our end of a Node app's IPC channel: JSON values, one per line.
pub(super) struct IpcChannel {
    pub(super) stream: tokio::net::UnixStream,
    pub(super) buf: Vec<u8>,
    /// Ports the preload asked for (`listen` on a port the app was not given), not answered
    /// yet.
    pub(super) asks: std::collections::VecDeque<ListenAsk>,
}

/// What the Node preload asks for: a port to listen on (`{"cmd": "NODE_HERDER_LISTEN",
/// "port": 3000, "host": null}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListenAsk {
    pub(super) port: u16,
    /// An IP address as the app wrote it, or none (every address).
    pub(super) host: Option<String>,
}

impl ListenAsk {
    fn parse(v: &serde_json::Value) -> Option<ListenAsk> {
        if v.get("cmd")?.as_str()? != LISTEN_CMD {
            return None;
        }
        let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
        let host = v.get("host").and_then(|h| h.as_str()).map(str::to_string);
        Some(ListenAsk { port, host })
    }
}

/// The command of a listen request and of its answer: Node passes a message whose `cmd`
/// begins with `NODE_` to its `internalMessage` listeners only, so the app's own `message`
/// listeners never see these.
const LISTEN_CMD: &str = "NODE_HERDER_LISTEN";

/// What arrived on an IPC channel.
pub(super) enum IpcEvent {
    Notices(Vec<Notice>),
    Listen(ListenAsk),
}

impl IpcChannel {
    pub(super) fn new(fd: std::os::fd::OwnedFd) -> Option<IpcChannel> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true).ok()?;
        Some(IpcChannel {
            stream: tokio::net::UnixStream::from_std(std).ok()?,
            buf: Vec::new(),
            asks: Default::default(),
        })
    }

    /// The next whole message already read (`Some(vec![])` for one that means nothing here).
    pub(super) fn take_message(&mut self) -> Option<Vec<Notice>> {
        let nl = self.buf.iter().position(|b| *b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else { return Some(Vec::new()) };
        // `process.send('ready')` arrives as the JSON string "ready".
        if value == "ready" {
            return Some(vec![Notice::Ready]);
        }
        if let Some(ask) = ListenAsk::parse(&value) {
            self.asks.push_back(ask);
        }
        Some(Vec::new())
    }

    /// Answer a listen request: the socket (passed with the message, `SCM_RIGHTS`, as Node's
    /// own `send(message, handle)` does), or why there is none.
    pub(super) async fn answer_listen(
        &mut self,
        ask: &ListenAsk,
        socket: Result<OwnedFd, String>,
    ) -> std::io::Result<()> {
        let inner = match &socket {
            Ok(_) => serde_json::json!({ "cmd": LISTEN_CMD, "port": ask.port }),
            Err(why) => serde_json::json!({ "cmd": LISTEN_CMD, "port": ask.port, "error": why }),
        };
        let message = match &socket {
            Ok(_) => serde_json::json!({ "cmd": "NODE_HANDLE", "type": "net.Native", "msg": inner }),
            Err(_) => inner,
        };
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        let fd = socket.as_ref().ok().map(|f| f.as_raw_fd());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut sent = 0;
        while sent < line.len() {
            tokio::time::timeout_at(deadline, self.stream.writable())
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            // The descriptor goes with the first byte, so that Node reads it with this line.
            match send_with_fd(self.stream.as_raw_fd(), &line[sent..], if sent == 0 { fd } else { None }) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every message queued now, read without waiting (see [`NotifySocket::queued`]).
    pub(super) fn queued(&mut self) -> Vec<Notice> {
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

/// The next messages on a Node app's IPC channel (`Notices(vec![])` for messages that mean
/// nothing here); `None` once it is closed; never, without one.
pub(super) async fn recv_ipc(ipc: &mut Option<IpcChannel>) -> Option<IpcEvent> {
    let Some(ch) = ipc else { return std::future::pending().await };
    loop {
        if let Some(ask) = ch.asks.pop_front() {
            return Some(IpcEvent::Listen(ask));
        }
        if let Some(notices) = ch.take_message() {
            if let Some(ask) = ch.asks.pop_front() {
                return Some(IpcEvent::Listen(ask));
            }
            return Some(IpcEvent::Notices(notices));
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

/// What happens to an instance: the actor waits for the next one
/// ([`super::actor::Actor::next_event`]) and carries it out in its phase
/// ([`super::actor::Actor::step`]).
pub(super) enum Event {
    /// A command; `None` once every handle is gone.
    Command(Option<super::Cmd>),
    /// The main process exited (`None`: the reaper is gone, at daemon exit).
    Exit(Option<ExitReason>),
    /// What the app said on its notify socket or IPC channel.
    Notices(Vec<Notice>),
    /// The app's IPC channel closed.
    IpcClosed,
    /// The Node preload asked for a port to listen on.
    ListenAsked(ListenAsk),
    /// A probe's result; `None` once the probes ended.
    Probe(Option<ProbeResult>),
    /// No ready signal within `listen_timeout`.
    ReadyTimeout,
    /// The `cron_restart` schedule came due.
    CronDue,
    /// No `WATCHDOG=1` within `watchdog`.
    WatchdogDue,
    /// A watched file changed.
    WatchChanged(PathBuf),
    /// Watched files have been quiet since their last change.
    WatchSettled,
    /// The restart delay is over.
    DelayOver,
    /// The other sources had their turn after a burst of notices.
    Yield,
}

// One per actor, moved only when the phase changes: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Phase {
    Idle,
    Running(Running),
    Waiting(tokio::time::Instant),
}

/// A burst of changes to watched files, waiting for quiet.
pub(super) struct WatchDue {
    /// The first change of the burst.
    pub(super) first: tokio::time::Instant,
    /// When the restart comes unless more changes arrive.
    pub(super) due: tokio::time::Instant,
    /// The first path that changed, for the event.
    pub(super) path: PathBuf,
}

/// The next notices of `socket`; never, without one.
pub(super) async fn recv_notices(socket: Option<&NotifySocket>) -> Vec<Notice> {
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

/// `shutdown_with_message`: send `'shutdown'` on a Node app's IPC channel, as PM2 does.
/// False when there is no channel (not a Node app) or it is closed: the caller signals.
pub(super) async fn send_shutdown(ipc: &mut Option<IpcChannel>) -> bool {
    use tokio::io::AsyncWriteExt;
    let Some(ch) = ipc else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ch.stream.write_all(b"\"shutdown\"\n")).await,
        Ok(Ok(()))
    )
}

/// The next change to the watched files; never, without a watcher.
pub(super) async fn watch_changed(watcher: &mut Option<Watcher>) -> PathBuf {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Sleep until `deadline`; never, without one.
pub(super) async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// sendmsg(2) of `bytes` on a stream socket, with `fd` as `SCM_RIGHTS` when given; the bytes
/// written.
fn send_with_fd(socket: RawFd, bytes: &[u8], fd: Option<RawFd>) -> std::io::Result<usize> {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // Room for one descriptor, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes; the control buffer (32 bytes) holds
        // one cmsghdr with one int, and CMSG_FIRSTHDR points into it.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: msg points to iov and control, which outlive the call.
    let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}
