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
//! The new image ([`take::Takeover::from_env`]) marks every inherited descriptor
//! close-on-exec, reads the document, keeps the lock and the listening socket, registers the
//! adopted pids with its reaper before the first `waitpid`, starts each actor in the phase it
//! had, resumes each capture, writes `state.json` and answers the client on the inherited
//! connection. Crash recovery does not run: nothing is killed. If the document cannot be
//! used, the new image closes what it inherited and starts like a daemon after a crash, which
//! ends the old instances and starts the apps again, so each still runs exactly once.
//!
//! This module holds what both images agree on: the document, its versions and its encoding,
//! the variable that names it, the signals held blocked across `execve` and the close-on-exec
//! switch. [`give`] is the old image's side (the request gate, holding still, gathering,
//! checking the new binary, executing it), [`take`] the new image's (claiming what it
//! inherits, adopting the apps).

pub(super) mod give;
pub(super) mod take;

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use serde::{Deserialize, Serialize};

use crate::logs::handover::CaptureState;
use crate::protocol::{AppSpec, ImageInfo};
use crate::supervisor::handover::InstanceState;

/// Version of the handover document. A new binary reads every older version (fields are only
/// added, with defaults); `handover-check` tells which versions a binary reads.
pub const HANDOVER_VERSION: u32 = 1;
/// The oldest and newest handover documents this binary reads (`handover-check` reports them).
pub const HANDOVER_MIN: u32 = 1;
pub const HANDOVER_MAX: u32 = HANDOVER_VERSION;
/// The variable naming the document's descriptor in the new image.
const TAKEOVER_VAR: &str = "HERDER_TAKEOVER";

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
    /// The web dashboard's listening socket and sessions, if it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    web: Option<WebState>,
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

/// The web dashboard: its listening socket, and its sessions (cookie value, CSRF token), so
/// that an open page stays logged in across the update.
#[derive(Debug, Serialize, Deserialize)]
struct WebState {
    fd: RawFd,
    sessions: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppState {
    id: u32,
    spec: AppSpec,
    instances: Vec<InstanceState>,
    /// Its listening sockets (cluster mode): kept open, so that no connection is refused
    /// while the daemon changes its image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sockets: Vec<SocketState>,
    /// The id of each slot's instance; none from an older herder (then the first is the app's
    /// id and the others get new ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ids: Vec<u32>,
    /// Its balancer's public socket and idle connections: no connection refused or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    balancer: Option<FrontState>,
}

/// A balancer's public socket and the HTTP/1 connections it kept open for the next image.
#[derive(Debug, Serialize, Deserialize)]
struct FrontState {
    listen: crate::protocol::spec::SocketSpec,
    fd: RawFd,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    connections: Vec<ConnectionState>,
}

/// A client connection, with the bytes read from it and not yet served.
#[derive(Debug, Serialize, Deserialize)]
struct ConnectionState {
    fd: RawFd,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    read: Vec<u8>,
}

/// One port of an app: its socket of each slot, by descriptor.
#[derive(Debug, Serialize, Deserialize)]
struct SocketState {
    spec: crate::protocol::spec::SocketSpec,
    fds: Vec<RawFd>,
    /// Bound because an instance asked for the port (see `Listener::learned`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    learned: bool,
}

impl AppState {
    /// Every descriptor this app hands over.
    fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.instances
            .iter()
            .flat_map(InstanceState::fds)
            .chain(self.sockets.iter().flat_map(|s| s.fds.iter().copied()))
            .chain(
                self.balancer
                    .iter()
                    .flat_map(|b| std::iter::once(b.fd).chain(b.connections.iter().map(|c| c.fd))),
            )
    }
}

/// The fields every version of the document keeps, read first: enough to keep the lock and
/// the socket when the rest cannot be read.
#[derive(Debug, Deserialize)]
struct Envelope {
    version: u32,
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

/// The document in `bytes`, if this binary reads its version.
fn decode(bytes: &[u8]) -> Result<Doc, String> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| format!("the handover document is corrupt: {e}"))?;
    if !(HANDOVER_MIN..=HANDOVER_MAX).contains(&envelope.version) {
        return Err(format!(
            "the handover document has version {}, this herder reads {} to {}",
            envelope.version, HANDOVER_MIN, HANDOVER_MAX
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("the handover document is corrupt: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    use crate::daemon::image;

    #[test]
    fn the_document_reads_back_and_names_its_descriptors() {
        let doc = Doc {
            version: HANDOVER_VERSION,
            lock_fd: 5,
            listener_fd: 6,
            reply_fd: Some(7),
            metrics_fd: None,
            web: None,
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
