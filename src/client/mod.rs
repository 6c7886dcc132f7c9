//! The client side of the control socket: connect (spawning the daemon when none runs),
//! handshake, and request/response.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::paths::Paths;
use crate::protocol::{self, ErrorKind, FrameError, Hello, HelloReply, Request, Response};
use crate::wait::{self, Backoff};

/// How long a command waits for a daemon it started to accept connections.
const SPAWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long a request turned away by a daemon updating itself is sent again.
const UPDATE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no herder daemon runs for {home}\nhint: any command that needs one starts it, e.g. `herder ping`"
    )]
    NoDaemon { home: String },
    #[error("the herder daemon did not start within {secs} s\nhint: see {log}")]
    SpawnTimeout { secs: u64, log: String },
    #[error("cannot start the herder daemon: {0}")]
    Spawn(io::Error),
    #[error("the daemon (pid {pid}) runs herder {daemon}, this is herder {client}\nhint: `herder update` moves the daemon to the installed herder without restarting any app (`herder kill` stops it and its apps)")]
    VersionMismatch { pid: u32, daemon: String, client: String },
    /// The connection ended after the handshake, before the daemon answered.
    #[error("{}", lost(*pid, *stopped, log))]
    Closed { pid: u32, stopped: bool, log: String },
    /// The connection ended during the handshake, with no word from the daemon.
    #[error("the daemon closed the connection before the handshake was done\nhint: see {log}")]
    HandshakeClosed { log: String },
    /// The socket is another user's: its daemon turns this user away (or the kernel does).
    #[error("{path} belongs to uid {owner}, and this is uid {me}: a herder daemon serves only its own user\nhint: run herder as uid {owner}, or give this user a HERDER_HOME of its own")]
    OtherUser { path: String, owner: u32, me: u32 },
    /// The daemon turned the connection away (it has as many as it allows).
    #[error("{0}")]
    Refused(String),
    #[error("cannot talk to the daemon at {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
}

/// What [`ClientError::Closed`] says: whether the daemon is gone, and where it said why.
fn lost(pid: u32, stopped: bool, log: &str) -> String {
    if stopped {
        format!(
            "the daemon (pid {pid}) stopped before it answered: it was killed or it crashed\n\
             hint: see {log}; the next command starts a new daemon, and `herder list` shows what it did"
        )
    } else {
        format!("the daemon (pid {pid}) closed the connection before it answered\nhint: see {log}")
    }
}

/// A connection to the daemon, past the handshake.
pub struct Client {
    stream: UnixStream,
    pub daemon_pid: u32,
    /// `daemon.log`, named when the connection is lost.
    log: String,
}

impl Client {
    /// Connect to the daemon of `paths`; with `spawn`, start one when none runs.
    pub async fn connect(paths: &Paths, spawn: bool) -> Result<Client, ClientError> {
        Ok(Self::connect_with(paths, spawn, Hello::current()).await?.0)
    }

    /// Connect to ask for `Update` only, which a daemon of any version serves. Returns the
    /// daemon's version with the connection.
    pub async fn connect_for_update(paths: &Paths) -> Result<(Client, String), ClientError> {
        Self::connect_with(paths, false, Hello { update: true, ..Hello::current() }).await
    }

    async fn connect_with(paths: &Paths, spawn: bool, hello: Hello) -> Result<(Client, String), ClientError> {
        let sock = paths.socket();
        let log = paths.daemon_log().display().to_string();
        let mut wait = Backoff::new(SPAWN_DEADLINE, Duration::from_millis(1), Duration::from_millis(50));
        let mut child: Option<Child> = None;
        loop {
            match connect_socket(paths).await {
                Ok(stream) => match Self::handshake(stream, &hello, &log).await {
                    Err(ClientError::HandshakeClosed { log }) => {
                        // A daemon that is another user's drops us without a word: say whose
                        // it is.
                        if let Some(e) = other_user(&sock) {
                            return Err(e);
                        }
                        // A daemon that is going away (killed, its last threads still
                        // exiting) can still accept; the next attempt finds its socket dead
                        // and starts one.
                        if spawn && wait.sleep_async().await {
                            continue;
                        }
                        return Err(ClientError::HandshakeClosed { log });
                    }
                    other => return other,
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                    if !spawn {
                        return Err(ClientError::NoDaemon { home: paths.home.display().to_string() });
                    }
                }
                // A daemon that is going away (its first thread gone, its last ones still
                // closing its socket) can reset a connect: the next attempt finds its socket
                // dead.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && wait.sleep_async().await => continue,
                Err(source) => {
                    let other = (source.kind() == io::ErrorKind::PermissionDenied).then(|| other_user(&sock));
                    return Err(other
                        .flatten()
                        .unwrap_or(ClientError::Connect { path: sock.display().to_string(), source }));
                }
            }
            // Start a daemon unless the one we started is still coming up. Many clients may
            // do this at once: the lock lets one daemon win and the others exit.
            let ours_alive = child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if !ours_alive && !wait.expired() {
                child = Some(spawn_daemon(paths).map_err(ClientError::Spawn)?);
            }
            if !wait.sleep_async().await {
                return Err(ClientError::SpawnTimeout {
                    secs: SPAWN_DEADLINE.as_secs(),
                    log: paths.daemon_log().display().to_string(),
                });
            }
        }
    }

    /// The handshake; the daemon's version with the connection.
    async fn handshake(
        mut stream: UnixStream,
        hello: &Hello,
        log: &str,
    ) -> Result<(Client, String), ClientError> {
        let handshake_closed = |e: FrameError| match closed(e) {
            Ok(()) => ClientError::HandshakeClosed { log: log.to_string() },
            Err(e) => e,
        };
        let sent = protocol::write_frame(&mut stream, hello).await;
        // A daemon that refuses the connection answers at once and closes it: its answer can
        // be waiting even when the `Hello` could not be written.
        let reply: HelloReply = match (protocol::read_frame(&mut stream).await, sent) {
            (Ok(reply), _) => reply,
            (Err(_), Err(e)) | (Err(e), Ok(())) => return Err(handshake_closed(e)),
        };
        match reply {
            HelloReply::Welcome { pid, version } => {
                Ok((Client { stream, daemon_pid: pid, log: log.to_string() }, version))
            }
            HelloReply::Refused { message } => Err(ClientError::Refused(message)),
            HelloReply::Mismatch { version, pid, .. } => Err(ClientError::VersionMismatch {
                pid,
                daemon: version,
                client: protocol::PROGRAM_VERSION.to_string(),
            }),
        }
    }

    /// Send a request without waiting for an answer (a stream follows).
    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        match protocol::write_frame(&mut self.stream, req).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.lost(e).await),
        }
    }

    /// Send one request and read its response.
    pub async fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.send(req).await?;
        self.next().await
    }

    /// Read the next frame: the answer to a request sent, or the next of a stream that follows
    /// a response (`logs -f`).
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        match protocol::read_frame(&mut self.stream).await {
            Ok(resp) => Ok(resp),
            Err(e) => Err(self.lost(e).await),
        }
    }

    /// The error for a connection that failed with `e`: when the daemon closed it, whether the
    /// daemon is still there.
    async fn lost(&self, e: FrameError) -> ClientError {
        if let Err(e) = closed(e) {
            return e;
        }
        // The connection closes as the daemon's process exits, a moment before it is gone.
        let stopped = wait_gone(self.daemon_pid, LOST_DAEMON_EXIT).await;
        ClientError::Closed { pid: self.daemon_pid, stopped, log: self.log.clone() }
    }
}

/// How long a client whose connection was closed waits to see whether the daemon is exiting.
const LOST_DAEMON_EXIT: Duration = Duration::from_millis(300);

/// `Ok` when `e` means the other end closed the connection (cleanly, by a reset, or in the
/// middle of a frame), else the error to report.
fn closed(e: FrameError) -> Result<(), ClientError> {
    match e {
        FrameError::Closed => Ok(()),
        FrameError::Io(ref io)
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(())
        }
        e => Err(ClientError::Frame(e)),
    }
}

/// Connect to the control socket: in the home, else where a daemon on a read-only home put
/// it (see [`Paths::fallback_socket`]).
async fn connect_socket(paths: &Paths) -> io::Result<UnixStream> {
    let err = match UnixStream::connect(paths.socket()).await {
        Ok(stream) => return Ok(stream),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => e,
        Err(e) => return Err(e),
    };
    match UnixStream::connect(paths.fallback_socket()).await {
        Ok(stream) => Ok(stream),
        Err(_) => Err(err),
    }
}

/// [`ClientError::OtherUser`] when the socket at `sock` is another uid's than ours (root is
/// let in by every daemon). When the socket cannot be seen (a folder on the way is another
/// user's), the nearest folder above it that can be seen is the one named.
fn other_user(sock: &std::path::Path) -> Option<ClientError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
    let (path, meta) = sock.ancestors().find_map(|p| Some((p, std::fs::symlink_metadata(p).ok()?)))?;
    let owner = meta.uid();
    (owner != me && me != 0).then(|| ClientError::OtherUser { path: path.display().to_string(), owner, me })
}

/// Start `herder daemon` for `paths`, detached in its own session, its stderr (panics, early
/// errors) appended to `daemon.log`. A home that cannot be written (a read-only or full disk)
/// does not stop it: the daemon starts degraded and says so.
fn spawn_daemon(paths: &Paths) -> io::Result<Child> {
    if let Err(e) = paths.ensure() {
        if !paths.home.is_dir() {
            return Err(e);
        }
    }
    let exe = std::env::current_exe()?;
    // A home that cannot take the file (read-only, full) does not stop the daemon's start.
    let log = open_daemon_log(paths).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(exe);
    cmd.arg("daemon")
        .env("HERDER_HOME", &paths.home)
        // A command run by a systemd unit must not make the daemon it starts report to
        // that unit's manager.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// `daemon.log` for appending, 0600 like the rest of the home (a file of an older herder is
/// made so).
fn open_daemon_log(paths: &Paths) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(paths.daemon_log())?;
    if file.metadata()?.permissions().mode() & 0o7777 != 0o600 {
        // A file of another owner stays as it is: the daemon's start says what is wrong.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    Ok(file)
}

/// Wait until process `pid` is gone, up to `timeout`. Returns whether it is gone.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let gone = || (!crate::process::tree::alive(pid as i32)).then_some(());
    wait::until_async(timeout, Duration::from_millis(1), Duration::from_millis(20), gone).await.is_some()
}

/// Convenience: connect (spawning a daemon) and send one request. A request turned away
/// because the daemon is updating itself is sent again once it can be served.
pub async fn call(paths: &Paths, req: &Request) -> Result<Response, ClientError> {
    let mut wait = Backoff::new(UPDATE_WAIT, Duration::from_millis(2), Duration::from_millis(100));
    loop {
        let resp = Client::connect(paths, true).await?.request(req).await?;
        match resp {
            Response::Error(e) if e.kind == ErrorKind::Updating && wait.sleep_async().await => {}
            other => return Ok(other),
        }
    }
}
