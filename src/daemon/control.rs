//! Limits on the control socket's connections, so that clients that connect and then say
//! nothing cannot hold the daemon's descriptors: a deadline for the handshake, an idle limit
//! between requests, and a cap on how many connections are open at once.
//!
//! Streams (`logs --follow`, `events`, and so `monit`'s log pane) are subscriptions: once one
//! starts, the connection is the stream's and no idle limit applies (they end when the client
//! hangs up, which the daemon notices at once). They still count against the cap.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::protocol::{self, FrameError, HelloReply};

/// herder's client sends its `Hello` the moment it connects: five seconds is far beyond any
/// scheduling delay of a loaded machine, and short enough that silent connections (a port
/// scanner, a stuck script) never pile up.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// herder's own clients send their next request at once (`monit` asks every second), so a
/// connection quiet for a minute is one that was forgotten. The limit runs only while the
/// daemon waits for a request: a request being served (a `reload` waiting minutes for
/// readiness) is not idle.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every command holds one or two connections for its duration and each `logs --follow`,
/// `events` or `monit` one or two for as long as it runs: a busy machine has tens, never
/// hundreds. 512 stays well clear of that while keeping the daemon's descriptors for its apps
/// (each instance holds several) when something opens connections in a loop.
pub(crate) const MAX_CONNECTIONS: usize = 512;

/// The limits in force, read once when the daemon starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub handshake: Duration,
    pub idle: Duration,
    pub max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { handshake: HANDSHAKE_TIMEOUT, idle: IDLE_TIMEOUT, max: MAX_CONNECTIONS }
    }
}

impl Limits {
    /// The defaults, each overridden by its variable when that is set and valid:
    /// `HERDER_CONTROL_HANDSHAKE_TIMEOUT` and `HERDER_CONTROL_IDLE_TIMEOUT` (durations such as
    /// `300ms` or `2m`), `HERDER_CONTROL_MAX_CONNECTIONS` (a count). For tests, and for an
    /// operator with an unusual load.
    pub fn from_env() -> Limits {
        Limits::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Limits {
        let mut limits = Limits::default();
        let duration = |name: &str, into: &mut Duration| {
            let Some(v) = var(name).filter(|v| !v.trim().is_empty()) else { return };
            match crate::config::units::parse_duration(&v) {
                Ok(ms) if ms > 0 => *into = Duration::from_millis(ms),
                _ => {
                    tracing::warn!(variable = name, value = %v, default = ?*into, "not a duration above 0; using the default")
                }
            }
        };
        duration("HERDER_CONTROL_HANDSHAKE_TIMEOUT", &mut limits.handshake);
        duration("HERDER_CONTROL_IDLE_TIMEOUT", &mut limits.idle);
        const MAX: &str = "HERDER_CONTROL_MAX_CONNECTIONS";
        if let Some(v) = var(MAX).filter(|v| !v.trim().is_empty()) {
            match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => limits.max = n,
                _ => {
                    tracing::warn!(variable = MAX, value = %v, default = limits.max, "not a count above 0; using the default")
                }
            }
        }
        limits
    }
}

/// The open control connections, counted against the cap.
pub(crate) struct Connections {
    open: AtomicUsize,
    max: usize,
    /// Refusals since the cap was last reached, and whether it is reached now: the log says
    /// when refusing starts and when it ends (with the count), not once per client.
    refused: AtomicU64,
    refusing: AtomicBool,
}

/// One connection's place under the cap, given back when dropped.
pub(crate) struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// No place under the cap: the connection is to be refused with [`refuse`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Full {
    pub max: usize,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        })
    }

    /// A place for a new connection, or [`Full`] when `max` are open.
    pub fn open(self: &Arc<Self>) -> Result<Slot, Full> {
        let taken =
            self.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max).then_some(n + 1));
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::SeqCst);
            if !self.refusing.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    limit = self.max,
                    "too many control connections: refusing new ones until some close"
                );
            }
            return Err(Full { max: self.max });
        }
        if self.refusing.swap(false, Ordering::SeqCst) {
            let refused = self.refused.swap(0, Ordering::SeqCst);
            tracing::info!(refused, limit = self.max, "accepting control connections again");
        }
        Ok(Slot(self.clone()))
    }
}

/// What a client refused by the cap reads instead of `Welcome`.
pub(crate) fn refusal(full: Full) -> HelloReply {
    HelloReply::Refused {
        message: format!(
            "the herder daemon has too many connections (its limit is {}); try again once some have closed\n\
             hint: each running `herder logs --follow`, `herder events` or `herder monit` holds one; \
             HERDER_CONTROL_MAX_CONNECTIONS, where the daemon starts, sets the limit",
            full.max
        ),
    }
}

/// Tell a client over the cap why it is turned away, and close. The answer goes out at once,
/// without waiting for the client's `Hello`, so a refused connection holds a descriptor only
/// for as long as one small write takes.
pub(crate) async fn refuse(mut stream: UnixStream, full: Full) {
    let reply = refusal(full);
    let _ = tokio::time::timeout(Duration::from_secs(1), protocol::write_frame(&mut stream, &reply)).await;
}

/// Read one frame, waiting at most `limit` for all of it: `None` once the limit has passed.
pub(crate) async fn read_within<T: DeserializeOwned>(
    stream: &mut UnixStream,
    limit: Duration,
) -> Option<Result<T, FrameError>> {
    tokio::time::timeout(limit, protocol::read_frame(stream)).await.ok()
}

/// Write one frame, giving up after `limit`: a client that stops reading its answer is as idle
/// as one that sends nothing.
pub(crate) async fn write_within<T: Serialize>(
    stream: &mut UnixStream,
    msg: &T,
    limit: Duration,
) -> Result<(), FrameError> {
    match tokio::time::timeout(limit, protocol::write_frame(stream, msg)).await {
        Ok(written) => written,
        Err(_) => Err(FrameError::Io(io::Error::new(io::ErrorKind::TimedOut, "the client read nothing"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(vars: &[(&str, &str)]) -> Limits {
        Limits::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn limits_default_and_take_valid_overrides_only() {
        assert_eq!(limits(&[]), Limits::default());
        let set = limits(&[
            ("HERDER_CONTROL_HANDSHAKE_TIMEOUT", "300ms"),
            ("HERDER_CONTROL_IDLE_TIMEOUT", "2s"),
            ("HERDER_CONTROL_MAX_CONNECTIONS", "4"),
        ]);
        assert_eq!(
            set,
            Limits { handshake: Duration::from_millis(300), idle: Duration::from_secs(2), max: 4 }
        );
        let bad = limits(&[
            ("HERDER_CONTROL_HANDSHAKE_TIMEOUT", "0ms"),
            ("HERDER_CONTROL_IDLE_TIMEOUT", "soon"),
            ("HERDER_CONTROL_MAX_CONNECTIONS", "0"),
        ]);
        assert_eq!(bad, Limits::default());
    }

    #[test]
    fn the_cap_refuses_past_max_and_frees_places_as_slots_drop() {
        let c = Connections::new(2);
        let a = c.open().unwrap();
        let _b = c.open().unwrap();
        assert_eq!(c.open().err().map(|f| f.max), Some(2));
        assert_eq!(c.open().err().map(|f| f.max), Some(2));
        assert_eq!(c.refused.load(Ordering::SeqCst), 2);
        drop(a);
        let _c = c.open().unwrap();
        assert!(!c.refusing.load(Ordering::SeqCst));
        assert_eq!(c.refused.load(Ordering::SeqCst), 0);
        assert_eq!(c.open.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_refusal_names_the_cause_and_the_limit() {
        let HelloReply::Refused { message } = refusal(Full { max: 7 }) else { panic!("not a refusal") };
        assert!(message.contains("too many connections"), "{message}");
        assert!(message.contains("limit is 7"), "{message}");
    }
}
