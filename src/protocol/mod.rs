//! Wire types and framing between the `herder` client and its daemon.
//!
//! A frame is a big-endian `u32` length followed by that many bytes of JSON. The first frame
//! each way is the handshake ([`Hello`], [`HelloReply`]); after it the client sends
//! [`Request`]s and reads one [`Response`] per request. Frames over [`MAX_FRAME`] are refused.
//! This module depends on nothing else in the crate.

pub mod secrets;
pub mod signal;
pub mod spec;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use signal::{signal_name, signal_number};
pub use spec::AppSpec;

/// Version of the wire format; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
/// The program version, compared in the handshake.
pub const PROGRAM_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest frame accepted either way.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// First frame from the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    /// The client only asks for [`Request::Update`], which a daemon of any version accepts
    /// (it is how a daemon of another version is moved to the installed one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update: bool,
}

impl Hello {
    pub fn current() -> Self {
        Hello { protocol: PROTOCOL_VERSION, version: PROGRAM_VERSION.to_string(), update: false }
    }
}

/// The daemon's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    /// Versions match; requests may follow.
    Welcome { version: String, pid: u32 },
    /// The versions differ; the connection is closed after this frame.
    Mismatch { protocol: u32, version: String, pid: u32 },
    /// The daemon turns the connection away (it has as many connections as it allows) and
    /// closes it. Sent at once, possibly before the client's `Hello` is read; `message` is
    /// written for the user.
    Refused { message: String },
}

/// Which apps a command applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every app.
    All,
    /// An app id, an app name, or a namespace, tried in that order.
    Name(String),
}

impl Target {
    pub fn parse(s: &str) -> Target {
        if s == "all" {
            Target::All
        } else {
            Target::Name(s.to_string())
        }
    }
}

/// A request from the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity of the daemon.
    Ping,
    /// Stream every supervision event ([`Response::Event`] frames) until the client hangs up.
    Events,
    /// Add these apps and start them; what happens to an app whose name already exists is
    /// `existing`'s choice. Answered with [`Response::Started`].
    Start {
        specs: Vec<AppSpec>,
        #[serde(default)]
        existing: OnExisting,
    },
    /// Start (again) existing apps that are stopped or errored; restart running ones.
    StartExisting {
        targets: Vec<Target>,
    },
    Stop {
        targets: Vec<Target>,
    },
    /// Restart the apps `targets` name. One whose name is in `specs` takes that spec (its
    /// config file read again by the client); `env` replaces the whole environment of the
    /// others when given (`--update-env`).
    Restart {
        targets: Vec<Target>,
        env: Option<BTreeMap<String, String>>,
        #[serde(default)]
        specs: Vec<AppSpec>,
    },
    Delete {
        targets: Vec<Target>,
    },
    /// Converge on a config file's apps (`herder apply`): start the new ones, reload those
    /// whose spec changed (rolling in cluster mode), rescale those whose count changed, leave
    /// the others untouched; with `prune`, delete the apps started from `source` that it no
    /// longer lists. With `dry_run`, only the plan. Answered with [`Response::Applied`].
    Apply {
        specs: Vec<AppSpec>,
        source: PathBuf,
        #[serde(default)]
        prune: bool,
        #[serde(default)]
        dry_run: bool,
    },
    /// Change an app's number of instances: `count` is a number (`4`) or a change (`+2`,
    /// `-1`); the instances there are untouched. Answered with [`Response::Scaled`].
    Scale {
        target: Target,
        count: String,
    },
    /// Send a signal (a name such as `SIGUSR2` or a number) to each instance's main process.
    Signal {
        signal: String,
        targets: Vec<Target>,
    },
    /// Zero the restart counters.
    Reset {
        targets: Vec<Target>,
    },
    /// Reload apps: an app in cluster mode has each instance replaced, one at a time, by a new
    /// process (the next generation of its slot) that is ready before the old one stops, which
    /// stops at the first replacement that is not ready and leaves the rest as they were; an
    /// app without listening sockets is restarted, as PM2 reloads fork-mode apps. `env` and
    /// `specs` as for [`Request::Restart`].
    Reload {
        targets: Vec<Target>,
        /// As [`Request::Restart`]'s.
        #[serde(default)]
        env: Option<BTreeMap<String, String>>,
        #[serde(default)]
        specs: Vec<AppSpec>,
    },
    List,
    /// [`Request::List`] for the table of `herder list`: each app's spec holds only its name,
    /// namespace, instance count and watched paths, and instances come without their exit
    /// history, so that a thousand apps answer in a few milliseconds.
    ListBrief,
    /// [`Request::List`] with each app's whole spec, environment included, and its exit
    /// history, unmasked as [`Request::Show`]'s answer is (for PM2's `jlist` and `doctor`).
    ListFull,
    Show {
        target: Target,
    },
    /// The apps `targets` name, as [`Request::List`] gives them (answered with
    /// [`Response::List`]): the daemon alone resolves targets.
    Select {
        targets: Vec<Target>,
    },
    /// The metrics in the Prometheus text format; with `listen`, also serve them over HTTP
    /// there from now on; with `off`, stop serving them.
    Metrics {
        #[serde(default)]
        listen: Option<String>,
        #[serde(default)]
        off: bool,
    },
    /// The web dashboard: with `listen`, serve it there from now on; with `off`, stop
    /// serving it. Answered with [`Response::Web`].
    Web {
        #[serde(default)]
        listen: Option<String>,
        #[serde(default)]
        off: bool,
    },
    /// Stop every app, then the daemon.
    Kill,
    /// `herder logs`: the apps' log files and where each ended at this moment
    /// ([`Response::Logs`]); with `follow`, every line written after that moment follows as
    /// [`Response::LogLines`] frames on the same connection until the client hangs up.
    Logs {
        targets: Vec<Target>,
        follow: bool,
        /// Which streams to follow (both when both are false).
        #[serde(default)]
        out: bool,
        #[serde(default)]
        err: bool,
    },
    /// Empty the apps' current log files (`targets` empty: every app).
    Flush {
        targets: Vec<Target>,
    },
    /// Reopen every open log file (after an external logrotate moved them).
    ReloadLogs,
    /// Read the TLS certificates and keys of the apps' balancers again (`targets` empty:
    /// every app). Answered with [`Response::Certs`].
    ReloadCerts {
        targets: Vec<Target>,
    },
    /// Write every app (spec, environment, whether it runs) to `dump.json`; an empty list
    /// only with `force`.
    Save {
        force: bool,
    },
    /// Start the apps of `dump.json` (or its `.bak`) that are not running.
    Resurrect,
    /// Re-execute the daemon's binary in place (same pid, apps untouched); answered with
    /// [`Response::Updated`] by the new image, or an error by the old one, which keeps running.
    /// Its spelling (`"Update"`) and that of the answer never change, so any two versions can
    /// do it.
    Update,
}

/// What [`Request::Start`] does with an app whose name is already taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExisting {
    /// Give it the new spec and restart it (or start it, when it does not run): a config
    /// file's apps, as `pm2 start ecosystem.config.js` does.
    #[default]
    Restart,
    /// Refuse the whole request, unless the app runs nothing and has the same command (then it
    /// is started with the new spec): `herder start <script>`, which must never replace
    /// another app or start a second copy of a script behind the user's back.
    Refuse,
    /// Give it the new spec and restart it, whatever it ran (`herder start -f`).
    Replace,
}

/// The daemon's answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Pong(DaemonInfo),
    /// One event of an `Events` stream.
    Event(Event),
    /// The request was carried out on these apps: on the whole app, or on the instances
    /// `instances` gives for it (a target named them by their ids).
    Done {
        apps: Vec<AppInfo>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instances: Vec<Instances>,
    },
    /// What `Start` did: apps that were started (new ones, and existing ones that ran
    /// nothing) and apps that ran and were restarted with their new spec.
    Started {
        started: Vec<AppInfo>,
        restarted: Vec<AppInfo>,
    },
    List {
        apps: Vec<AppInfo>,
        /// What the daemon cannot write in its home right now (a full or read-only disk), for
        /// a line under the table; only for [`Request::List`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// What `Apply` did (or, with `dry_run`, would do): one step per app, in the file's order,
    /// then the apps as the table shows them.
    Applied {
        plan: Vec<Step>,
        apps: Vec<AppInfo>,
    },
    /// What `Scale` did: the app, and its count before and after.
    Scaled {
        apps: Vec<AppInfo>,
        before: u32,
        after: u32,
    },
    Show {
        app: Box<AppInfo>,
    },
    /// The apps of a `Logs` request and where their files ended when it was answered: the
    /// lines before a mark are in the files, those after it come as [`Response::LogLines`].
    Logs {
        apps: Vec<AppInfo>,
        marks: Vec<FileMark>,
    },
    /// Lines that reached the log files of followed apps, in order per stream.
    LogLines(Vec<LogItem>),
    /// What `ReloadCerts` loaded (a line per app) and what it could not (the old ones stay).
    Certs {
        loaded: Vec<String>,
        failed: Vec<String>,
    },
    /// The files a `Flush` or `ReloadLogs` acted on.
    LogFiles {
        files: Vec<PathBuf>,
    },
    /// The metrics, and where they are served over HTTP, if anywhere.
    Metrics {
        text: String,
        listen: Option<std::net::SocketAddr>,
    },
    /// Where the web dashboard listens, if anywhere; its token when it does; a warning when
    /// it listens beyond loopback.
    Web {
        listen: Option<std::net::SocketAddr>,
        token: Option<String>,
        warning: Option<String>,
    },
    /// `Save` wrote these apps to `path`; the previous save is `backup`.
    Saved {
        path: PathBuf,
        apps: Vec<String>,
        backup: Option<PathBuf>,
    },
    /// What `Resurrect` did with the apps of `source`.
    Resurrected(ResurrectReport),
    /// `Update` is done: the daemon `pid` now runs the image `to`.
    Updated {
        pid: u32,
        from: ImageInfo,
        to: ImageInfo,
    },
    Error(ErrorReply),
}

/// The answer to `Resurrect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResurrectReport {
    /// The file the apps came from (`dump.json`, or `dump.json.bak` when that was unusable).
    pub source: PathBuf,
    /// Why `dump.json` was not used, when `source` is the backup.
    pub fallback: Option<String>,
    /// Apps started (or, saved stopped, registered stopped).
    pub apps: Vec<AppInfo>,
    /// Saved apps left alone because they already run (or exist, stopped on purpose).
    pub skipped: Vec<String>,
}

/// Which program image a daemon runs: the same pid runs a new one after each `Update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub version: String,
    /// The binary's GNU build id (hex), which differs between any two builds.
    #[serde(default)]
    pub build_id: Option<String>,
    /// Images this daemon process ran before this one (0 until its first update).
    #[serde(default)]
    pub generation: u32,
    /// The binary the daemon was started from, which `Update` executes again.
    #[serde(default)]
    pub exe: PathBuf,
}

/// Where a log file ended when a `Logs` request was answered: a file at `path` with inode
/// `inode` (after a rotation, the file renamed aside) held `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    pub path: PathBuf,
    pub inode: u64,
    pub size: u64,
}

/// Which output of an instance a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Out,
    Err,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Out => "out",
            LogStream::Err => "err",
        }
    }
}

/// One element of a follow stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogItem {
    /// Lines as written to the log file (timestamps and JSON included). A piece of a very
    /// long line may end without a newline; the next item of the same stream continues it.
    Lines { app: String, instance: u32, stream: LogStream, at_ms: u64, text: LogBytes },
    /// The follower fell behind and these lines were not sent (they are in the files).
    Skipped { app: String, instance: u32, stream: LogStream, lines: u64 },
}

/// Bytes of app output: a JSON string when they are UTF-8 (the usual case), else an array
/// of numbers, so that no byte is changed on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBytes(pub Vec<u8>);

impl Serialize for LogBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for LogBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LogBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LogBytes, E> {
                Ok(LogBytes(v.as_bytes().to_vec()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<LogBytes, E> {
                Ok(LogBytes(v.into_bytes()))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<LogBytes, E> {
                Ok(LogBytes(v.to_vec()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<LogBytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(LogBytes(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An error the client shows to the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No app matched a target.
    NotFound,
    /// The request is malformed or not allowed.
    BadRequest,
    /// The daemon failed to do what was asked.
    Internal,
    /// The daemon is replacing its image (`herder update`); nothing was done: send the request
    /// again in a moment.
    Updating,
}

/// One app's step of `herder apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub app: String,
    pub action: StepAction,
    /// Why, in words (what changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    Start,
    Reload,
    /// Only the balancer's own settings changed (strategy, weights, timeouts, address…): the
    /// running balancer takes them, the instances are left as they are.
    Retune,
    Scale,
    Delete,
    Unchanged,
}

/// What `ping` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub home: PathBuf,
    pub uptime_ms: u64,
    pub apps: usize,
    /// Cgroup v2 directory holding the instances, when the machine offers one.
    pub cgroup_root: Option<PathBuf>,
    /// Why instances get no cgroup, when they do not.
    pub cgroup_note: Option<String>,
    /// Whether the daemon is a child subreaper.
    pub subreaper: bool,
    /// What the daemon cannot write in its home right now (a full or read-only disk).
    #[serde(default)]
    pub home_warnings: Vec<String>,
    /// Clients following logs (`herder logs`) right now.
    #[serde(default)]
    pub followers: usize,
    /// Clients streaming events (`herder events`) right now.
    #[serde(default)]
    pub event_followers: usize,
    /// How `memory_limit` and `cpu_limit` are applied (`memory: cgroup v1, cpu: cgroup v2`).
    #[serde(default)]
    pub limits: String,
    /// Why some limit cannot be applied on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_note: Option<String>,
    /// Milliseconds between two measurements of every instance.
    #[serde(default)]
    pub sample_interval_ms: u64,
    /// The binary's GNU build id (hex).
    #[serde(default)]
    pub build_id: Option<String>,
    /// Updates in place since the daemon started (its pid stays the same).
    #[serde(default)]
    pub exec_generation: u32,
    /// Unix time the running image started (at the last update, or the daemon's start), ms.
    #[serde(default)]
    pub image_started_ms: u64,
    /// The binary `herder update` executes again.
    #[serde(default)]
    pub exe: PathBuf,
}

/// States of an instance (DESIGN.md, Lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Launching,
    Online,
    Stopping,
    Stopped,
    WaitingRestart,
    Errored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Launching => "launching",
            Status::Online => "online",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::WaitingRestart => "waiting-restart",
            Status::Errored => "errored",
        }
    }

    /// A process of the instance may be running.
    pub fn is_running(self) -> bool {
        matches!(self, Status::Launching | Status::Online | Status::Stopping)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitReason::Code(c) => write!(f, "code {c}"),
            ExitReason::Signal(s) => write!(f, "{}", signal_name(s)),
        }
    }
}

/// What an [`Event`] is about; on the wire its lowercase name (`"restart"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The process was spawned.
    Start,
    /// It exited (with `exit`).
    Exit,
    /// A restart: requested, automatic (after a delay), `cron_restart`, `watch`.
    Restart,
    /// It will not be restarted: too many unstable runs, or `autorestart` off.
    Errored,
    /// It said it is ready (or its readiness probe passed).
    Ready,
    /// A probe changed state.
    Health,
    /// No `WATCHDOG=1` in time.
    Watchdog,
    /// Over `max_memory_restart`.
    Memory,
    /// Killed by the kernel for going over `memory_limit`.
    Oom,
    /// A limit could not be applied as asked.
    Limits,
    /// A watched file changed.
    Watch,
    /// The app sent `STOPPING=1`.
    Stopping,
    /// The app handed its main pid over (`MAINPID=`).
    Mainpid,
    /// An instance was replaced by the next generation of its slot (a reload in cluster
    /// mode), or a replacement was not ready.
    Reload,
    /// This client read too slowly: events were skipped.
    Lagged,
    /// The home cannot be written (a full or read-only disk), or can be again: what is not
    /// written (logs, `state.json`). About one app when its logs are concerned.
    Disk,
    /// A port a Node instance in cluster mode asked for could not be shared (taken by another
    /// process, privileged, not an IP address): its `listen` failed with this reason.
    Listen,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::Start,
        EventKind::Exit,
        EventKind::Restart,
        EventKind::Errored,
        EventKind::Ready,
        EventKind::Health,
        EventKind::Watchdog,
        EventKind::Memory,
        EventKind::Oom,
        EventKind::Limits,
        EventKind::Watch,
        EventKind::Stopping,
        EventKind::Mainpid,
        EventKind::Reload,
        EventKind::Lagged,
        EventKind::Disk,
        EventKind::Listen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Exit => "exit",
            EventKind::Restart => "restart",
            EventKind::Errored => "errored",
            EventKind::Ready => "ready",
            EventKind::Health => "health",
            EventKind::Watchdog => "watchdog",
            EventKind::Memory => "memory",
            EventKind::Oom => "oom",
            EventKind::Limits => "limits",
            EventKind::Watch => "watch",
            EventKind::Stopping => "stopping",
            EventKind::Reload => "reload",
            EventKind::Mainpid => "mainpid",
            EventKind::Lagged => "lagged",
            EventKind::Disk => "disk",
            EventKind::Listen => "listen",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to an instance, as `herder events` and hooks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time, ms.
    pub at_ms: u64,
    pub kind: EventKind,
    pub app: String,
    pub instance: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitReason>,
    /// Why, in words (a probe's error, a restart's cause…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One exit in an instance's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Unix time of the exit, ms.
    pub at_ms: u64,
    pub reason: ExitReason,
    /// How long the run lasted, ms.
    pub uptime_ms: u64,
    /// The kernel killed it for going over its `memory_limit`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// herder restarted it for going over `max_memory_restart`: that limit, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_restart: Option<u64>,
}

/// A snapshot of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub index: u32,
    /// Which process of the slot `index` this is: a replacement (a rolling reload) is the next
    /// generation, and runs beside the one it replaces until that one is stopped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// Its own id, as PM2's `pm_id` (`herder stop 3` acts on this instance alone); the first
    /// instance's is the app's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    pub status: Status,
    pub pid: Option<u32>,
    /// The loopback port it listens on behind the app's balancer (its `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Start time of the process in clock ticks since boot; with `pid` it identifies the
    /// process across pid reuse (used by crash recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// Unix time the current process started, ms.
    pub started_at_ms: Option<u64>,
    /// Restarts since the app was added or reset (automatic and requested).
    pub restarts: u32,
    /// Unstable runs in a row.
    pub unstable_restarts: u32,
    pub last_exit: Option<ExitRecord>,
    /// Why the instance is `errored` or could not start.
    pub reason: Option<String>,
    /// The instance's cgroup, when it has one.
    pub cgroup: Option<PathBuf>,
    /// Resident memory of the instance's whole process tree in bytes, at the last sample.
    pub memory_bytes: Option<u64>,
    /// CPU use over the last sample interval, in percent of one core (200: two full cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// CPU time used by the current process tree so far, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Processes in the instance's tree at the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// The last samples as (CPU %, memory bytes), oldest first (filled by `show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage_history: Vec<(f32, u64)>,
    /// The last exits, newest last.
    pub history: Vec<ExitRecord>,
    /// Kernel OOM kills since the app was added or reset (a counter: `history` keeps only the
    /// last exits).
    #[serde(default)]
    pub oom_kills: u64,
    /// The app's own status line (`STATUS=` on `NOTIFY_SOCKET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// The state of each health probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeState>,
    /// Online, but a readiness probe fails now: out of its app's balancer pool until the probe
    /// passes again (the process runs on; only a liveness probe restarts it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unready: bool,
}

/// The state of one health probe of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeState {
    /// `liveness` or `readiness`.
    pub kind: String,
    /// What it checks, e.g. `http http://127.0.0.1:3000/health`.
    pub target: String,
    pub healthy: bool,
    /// Results in a row of the current kind (failures while unhealthy, successes while healthy).
    pub failures: u32,
    pub successes: u32,
    pub last_error: Option<String>,
}

/// The instances of an app a request acted on, by their numbers (`api:1`), when it did not act
/// on the whole app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instances {
    pub app: String,
    pub indexes: Vec<u32>,
}

/// A snapshot of one app and its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    pub id: u32,
    pub spec: AppSpec,
    pub instances: Vec<InstanceInfo>,
    /// Paths of the stdout and stderr log files of each instance.
    pub log_files: Vec<(PathBuf, PathBuf)>,
    /// Log files that cannot be written right now (filled by `show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_errors: Vec<LogWriteError>,
    /// Its balancer's state (filled by `show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerView>,
    /// How the kernel spreads the connections to its shared sockets over its instances
    /// (cluster mode: `round-robin`, or `by a hash of the client's port` where eBPF cannot be
    /// loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
}

/// A balancer as `show`, `monit` and the metrics see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerView {
    /// Where it listens, and its mode.
    pub listen: String,
    pub mode: String,
    pub strategy: String,
    /// Client connections open now.
    pub connections: i64,
    /// The connections each of its threads serves (http mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<i64>,
    /// Requests sent again to another instance, and the balancer's own answers (no instance
    /// ready: 503; broken: 502; timed out: 504).
    pub retries: u64,
    pub unavailable: u64,
    pub bad_gateway: u64,
    pub timeouts: u64,
    /// Time to the answer's headers: the upper bounds of the buckets in seconds, the requests
    /// at or under each (cumulative; one more for every request), and their sum in seconds.
    pub latency_le: Vec<f64>,
    pub latency_counts: Vec<u64>,
    pub latency_sum_s: f64,
    pub members: Vec<MemberView>,
}

/// One instance in a balancer's pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub slot: u32,
    pub generation: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Whether it takes requests now: ready, and not taken out for failures.
    pub up: bool,
    /// Taken out for failures (`max_fails` within `fail_timeout`).
    pub down: bool,
    pub weight: u32,
    pub backup: bool,
    /// Requests (and streams) under way on it.
    pub active: u32,
    /// Answers by status class, 1xx to 5xx.
    pub responses: [u64; 5],
    /// Connect errors, errors before the answer, timeouts.
    pub failures: u64,
}

/// A log file whose writes fail: the app keeps running, its lines are dropped until writes
/// succeed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogWriteError {
    pub path: PathBuf,
    pub message: String,
    /// Bytes dropped since the error began.
    pub dropped_bytes: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Unix time now in milliseconds, as the protocol's `*_ms` timestamps are.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is over the 16 MiB limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Write one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWriteExt + Unpin,
    T: Serialize,
{
    let buf = encode_frame(msg)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// One frame's bytes (length prefix included), for writers that send them piece by piece.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Read one frame; [`FrameError::Closed`] on a clean end of stream before a frame starts.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncReadExt + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_kinds_are_their_lowercase_names_on_the_wire() {
        for kind in super::EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<super::EventKind>(&json).unwrap(), kind);
        }
    }

    use super::*;

    #[tokio::test]
    async fn frame_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &Request::Stop { targets: vec![Target::parse("web")] }).await.unwrap();
        let got: Request = read_frame(&mut b).await.unwrap();
        assert!(matches!(got, Request::Stop { targets } if targets == vec![Target::Name("web".into())]));
    }

    #[tokio::test]
    async fn oversized_frame_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes()).await.unwrap();
        let got: Result<Request, _> = read_frame(&mut b).await;
        assert!(matches!(got, Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn closed_stream_is_reported_as_closed() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let got: Result<Request, _> = read_frame(&mut b).await;
        assert!(matches!(got, Err(FrameError::Closed)));
    }

    #[test]
    fn log_bytes_travel_unchanged() {
        for bytes in [&b"plain text\n"[..], b"caf\xc3\xa9\n", b"not utf-8 \xff\xfe\n", b""] {
            let json = serde_json::to_string(&LogBytes(bytes.to_vec())).unwrap();
            let back: LogBytes = serde_json::from_str(&json).unwrap();
            assert_eq!(back.0, bytes, "{json}");
        }
        assert_eq!(serde_json::to_string(&LogBytes(b"hi\n".to_vec())).unwrap(), r#""hi\n""#);
    }
}
