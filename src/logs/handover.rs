//! Log capture across `herder update`: every reading task is held still between two reads and
//! reports its pipe and its unfinished last line; the next image of the daemon reads on from
//! the same pipe with that state. Bytes the app writes meanwhile wait in the pipe, so no line
//! is lost, split or written twice.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use super::{Hub, Sink, Stream, StreamState};
use crate::protocol::{AppSpec, LogBytes};

/// A request to a capture to hold still until `resume` fires or is dropped.
pub(crate) struct Hold {
    reply: oneshot::Sender<Held>,
    resume: oneshot::Receiver<()>,
}

/// The running captures.
#[derive(Default)]
pub(crate) struct Captures {
    next: AtomicU64,
    live: Mutex<HashMap<u64, mpsc::UnboundedSender<Hold>>>,
}

impl Captures {
    pub(crate) fn register(&self) -> (u64, mpsc::UnboundedReceiver<Hold>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        (id, rx)
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// One stream's capture as the next image needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureState {
    /// The read end of the app's pipe.
    pub fd: RawFd,
    pub app_id: u32,
    pub instance: u32,
    pub stream: Stream,
    /// The spec its files come from, when it is not the app's current one (the output of an
    /// earlier run still draining, say); filled in by the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<AppSpec>,
    /// The unfinished last line.
    pub partial: LogBytes,
    /// The rate limit's window: its age, lines kept in it, lines dropped.
    pub window_age_ms: u64,
    pub in_window: u64,
    pub suppressed: u64,
}

/// A held capture: its state, and the spec its sink was opened with.
pub struct Held {
    pub state: CaptureState,
    pub spec: Arc<AppSpec>,
}

/// Every capture, held still; dropping this lets them all go on.
pub struct HeldCaptures {
    pub held: Vec<Held>,
    _resume: Vec<oneshot::Sender<()>>,
}

impl Hub {
    /// Hold every capture still between two reads, or say which did not stop by `deadline`
    /// (those already held go on).
    pub async fn hold_captures(&self, deadline: tokio::time::Instant) -> Result<HeldCaptures, String> {
        let senders: Vec<_> =
            self.captures.live.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut replies = Vec::new();
        let mut resume = Vec::new();
        for tx in senders {
            let (reply, reply_rx) = oneshot::channel();
            let (resume_tx, resume_rx) = oneshot::channel();
            // A capture that ended meanwhile has nothing left to hand over.
            if tx.send(Hold { reply, resume: resume_rx }).is_ok() {
                replies.push(reply_rx);
                resume.push(resume_tx);
            }
        }
        let mut held = Vec::new();
        for rx in replies {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(h)) => held.push(h),
                // It reached the end of its pipe and wrote everything.
                Ok(Err(_)) => {}
                Err(_) => {
                    return Err("a log writer did not pause in time (is a log file's disk stalled?)".into())
                }
            }
        }
        Ok(HeldCaptures { held, _resume: resume })
    }
}

/// In the capture task: report the state, then wait until told to go on.
pub(super) async fn hold(hold: Hold, rx: &pipe::Receiver, sink: &Sink, st: &StreamState) {
    let Some((app_id, spec)) = sink.owner.clone() else {
        // Not an app's output (unit tests): nothing to hand over.
        return;
    };
    let state = CaptureState {
        fd: rx.as_raw_fd(),
        app_id,
        instance: sink.instance,
        stream: sink.stream,
        spec: None,
        partial: LogBytes(st.partial.clone()),
        window_age_ms: st.window.elapsed().as_millis() as u64,
        in_window: st.in_window,
        suppressed: st.suppressed,
    };
    if hold.reply.send(Held { state, spec }).is_ok() {
        let _ = hold.resume.await;
    }
}

/// Read on from a pipe an earlier image of the daemon captured, with its state.
pub fn resume(fd: OwnedFd, sink: Sink, hub: &Arc<Hub>, state: &CaptureState) {
    let now = Instant::now();
    let st = StreamState {
        partial: state.partial.0.clone(),
        window: now.checked_sub(Duration::from_millis(state.window_age_ms)).unwrap_or(now),
        in_window: state.in_window,
        suppressed: state.suppressed,
    };
    super::read_pipe(fd, sink, hub, st);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogPolicy;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn pipe() -> (OwnedFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) writes two new descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new and owned here.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
    }

    async fn wait_for_text(path: &std::path::Path, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = std::fs::read_to_string(path).unwrap_or_default();
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{path:?} holds {got:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_held_capture_hands_over_its_unfinished_line_and_a_new_reader_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Arc::new(Hub::default());
        let policy = LogPolicy { out: Some(out.clone()), ..LogPolicy::default() };
        let spec = Arc::new(AppSpec::new("app", "/bin/true", dir.path().to_path_buf()));
        let sink = || Sink::open(&hub, &policy, "app", 0, Stream::Out).owned_by(7, spec.clone());
        let (r, mut w) = pipe();
        super::super::capture(r, sink(), &hub);
        w.write_all(b"one\ntw").unwrap();
        wait_for_text(&out, "one\n").await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let held = hub.hold_captures(deadline).await.unwrap();
        assert_eq!(held.held.len(), 1);
        let state = held.held[0].state.clone();
        assert_eq!((state.app_id, state.partial.0.as_slice()), (7, &b"tw"[..]));
        // Held: what the app writes now waits in the pipe.
        w.write_all(b"o\nthree\n").unwrap();
        // The next image reads from the same pipe (here a duplicate of it; the held task
        // would have been replaced by exec).
        // SAFETY: dup(2) of a descriptor the held capture keeps open.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::fcntl(state.fd, libc::F_DUPFD_CLOEXEC, 0)) };
        std::mem::forget(held);
        resume(dup, sink(), &hub, &state);
        wait_for_text(&out, "one\ntwo\nthree\n").await;
    }

    #[tokio::test]
    async fn released_captures_go_on_where_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Arc::new(Hub::default());
        let policy = LogPolicy { out: Some(out.clone()), ..LogPolicy::default() };
        let spec = Arc::new(AppSpec::new("app", "/bin/true", dir.path().to_path_buf()));
        let (r, mut w) = pipe();
        super::super::capture(r, Sink::open(&hub, &policy, "app", 0, Stream::Out).owned_by(1, spec), &hub);
        w.write_all(b"a\nb").unwrap();
        wait_for_text(&out, "a\n").await;
        let held = hub.hold_captures(tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap();
        w.write_all(b"\nc\n").unwrap();
        drop(held);
        wait_for_text(&out, "a\nb\nc\n").await;
    }
}
