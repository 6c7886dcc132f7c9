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
    #[error("the daemon closed the connection (is it owned by another user?)")]
    Closed,
    #[error("cannot talk to the daemon at {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
}

/// A connection to the daemon, past the handshake.
pub struct Client {
    stream: UnixStream,
    pub daemon_pid: u32,
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
        let mut wait = Backoff::new(SPAWN_DEADLINE, Duration::from_millis(1), Duration::from_millis(50));
        let mut child: Option<Child> = None;
        loop {
            match UnixStream::connect(&sock).await {
                Ok(stream) => match Self::handshake(stream, &hello).await {
                    // A daemon that is going away (killed, its last threads still exiting)
                    // can still accept; the next attempt finds its socket dead and starts one.
                    Err(ClientError::Closed) if spawn && wait.sleep_async().await => continue,
                    other => return other,
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                    if !spawn {
                        return Err(ClientError::NoDaemon { home: paths.home.display().to_string() });
                    }
                }
                Err(source) => return Err(ClientError::Connect { path: sock.display().to_string(), source }),
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
    async fn handshake(mut stream: UnixStream, hello: &Hello) -> Result<(Client, String), ClientError> {
        protocol::write_frame(&mut stream, hello).await.map_err(closed)?;
        let reply: HelloReply = protocol::read_frame(&mut stream).await.map_err(closed)?;
        match reply {
            HelloReply::Welcome { pid, version } => Ok((Client { stream, daemon_pid: pid }, version)),
            HelloReply::Mismatch { version, pid, .. } => Err(ClientError::VersionMismatch {
                pid,
                daemon: version,
                client: protocol::PROGRAM_VERSION.to_string(),
            }),
        }
    }

    /// Send one request and read its response.
    /// Send a request without waiting for an answer (a stream follows).
    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        protocol::write_frame(&mut self.stream, req).await.map_err(closed)
    }

    pub async fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        protocol::write_frame(&mut self.stream, req).await.map_err(closed)?;
        protocol::read_frame(&mut self.stream).await.map_err(closed)
    }

    /// Read the next frame of a stream that follows a response (`logs -f`).
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        protocol::read_frame(&mut self.stream).await.map_err(closed)
    }
}

fn closed(e: FrameError) -> ClientError {
    match e {
        FrameError::Closed => ClientError::Closed,
        FrameError::Io(ref io)
            if io.kind() == io::ErrorKind::ConnectionReset || io.kind() == io::ErrorKind::BrokenPipe =>
        {
            ClientError::Closed
        }
        e => ClientError::Frame(e),
    }
}

/// Start `herder daemon` for `paths`, detached in its own session, its stderr (panics, early
/// errors) appended to `daemon.log`.
fn spawn_daemon(paths: &Paths) -> io::Result<Child> {
    paths.ensure()?;
    let exe = std::env::current_exe()?;
    let log = open_daemon_log(paths)?;
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
