//! The resolved app spec: what the daemon needs to run an app, with every default applied and
//! every path made absolute. The config module produces it from files and flags; the daemon
//! stores it in `state.json` and `dump.json`, so its serialized form is part of the protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default `min_uptime`: a run shorter than this is unstable.
pub const DEFAULT_MIN_UPTIME_MS: u64 = 1_000;
/// Default `max_restarts`: unstable runs in a row allowed before `errored`.
pub const DEFAULT_MAX_RESTARTS: u32 = 16;
/// Default `kill_timeout` (PM2: 1600 ms).
pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 5_000;
/// Default stop signal (PM2: a global SIGINT).
pub const DEFAULT_KILL_SIGNAL: &str = "SIGTERM";
/// Default `listen_timeout`: how long a `wait_ready` app has to say it is ready.
pub const DEFAULT_LISTEN_TIMEOUT_MS: u64 = 3_000;
/// `watchdog = true`: the interval an app must send `WATCHDOG=1` within.
pub const DEFAULT_WATCHDOG_MS: u64 = 10_000;
/// Default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default `instance_var`: the variable holding the instance number (PM2's).
pub const DEFAULT_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";
/// Exponential backoff ceiling.
pub const BACKOFF_MAX_MS: u64 = 15_000;
/// Uptime after which the exponential backoff starts again from its first delay.
pub const BACKOFF_RESET_MS: u64 = 30_000;

/// One app, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    /// Unique name of the app.
    pub name: String,
    /// Group used as a target (`herder stop <namespace>`).
    pub namespace: String,
    /// What the user asked to run, for display: a script path or a command string.
    pub script: String,
    /// The program to execute: an interpreter, the script itself, or a command from `PATH`.
    pub program: String,
    /// Arguments after `program` (interpreter args, the script, the app's args).
    pub args: Vec<String>,
    /// Interpreter used, if any (`none` for direct execution).
    pub interpreter: Option<String>,
    /// Working directory (absolute).
    pub cwd: PathBuf,
    /// The whole environment of the app (the shell's unless filtered, then the file's).
    pub env: std::sync::Arc<BTreeMap<String, String>>,
    /// Number of instances.
    pub instances: u32,
    /// `instances = "max"`: one per CPU, counted where the spec was resolved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub instances_max: bool,
    /// Restart on exit.
    pub autorestart: bool,
    /// Exit codes that stop the app instead of restarting it.
    pub stop_exit_codes: Vec<i32>,
    /// A run shorter than this is unstable (ms).
    pub min_uptime_ms: u64,
    /// More unstable runs in a row than this make the app `errored`.
    pub max_restarts: u32,
    /// Fixed delay before a restart (ms).
    pub restart_delay_ms: u64,
    /// First delay of the exponential backoff (ms); grows ×1.5 up to 15 s.
    pub exp_backoff_restart_delay_ms: Option<u64>,
    /// Signal sent to the process group on stop, e.g. `SIGTERM`.
    pub kill_signal: String,
    /// Time from the stop signal to killing what is left (ms).
    pub kill_timeout_ms: u64,
    /// Start the app when it is added (false: registered as `stopped`).
    pub autostart: bool,
    /// Where the output goes and how it is rotated (left out of the JSON when default).
    #[serde(default, skip_serializing_if = "LogSpec::is_default")]
    pub logs: LogSpec,
    /// Where the spec came from (a config file), for `show` and for reloading the env.
    pub source: Option<PathBuf>,
    /// The variable that holds the instance number (`HERDER_INSTANCE` is always set too).
    #[serde(default = "default_instance_var")]
    pub instance_var: String,
    /// A variable of `env` incremented per instance (`PORT` = 3000, 3001, …).
    #[serde(default)]
    pub increment_var: Option<String>,
    /// The `--env <name>` the app was loaded with from `source`, to resolve it again the same
    /// way on `restart`.
    #[serde(default)]
    pub env_name: Option<String>,
    /// `online` only after the app's ready signal (`READY=1` on `NOTIFY_SOCKET`).
    #[serde(default)]
    pub wait_ready: bool,
    /// How long to wait for the ready signal (ms); past it the start has failed.
    #[serde(default = "default_listen_timeout")]
    pub listen_timeout_ms: u64,
    /// The app must send `WATCHDOG=1` at least this often (ms; `WATCHDOG_USEC` tells it), or
    /// it is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_ms: Option<u64>,
    /// Health probes (`[[apps.health]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<ProbeSpec>,
    /// Restart on this cron schedule (`cron_restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_restart: Option<String>,
    /// The time zone of `cron_restart` (IANA name; the machine's by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_timezone: Option<String>,
    /// Webhooks and commands run on events (`[[apps.hooks]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookSpec>,
    /// Restart when a file under one of these paths changes (`watch`; absolute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<PathBuf>,
    /// Changes to paths matching these are not restarts (`ignore_watch`): a name matches any
    /// path component (`dist`), a glob matches the path relative to `cwd` (`**/*.log`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_watch: Vec<String>,
    /// How long files must stay quiet after a change before the restart (ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub watch_delay_ms: u64,
    /// Stop a Node app by sending it the IPC message `'shutdown'` instead of `kill_signal`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shutdown_with_message: bool,
    /// Restart an instance gracefully once its process tree holds more memory (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_restart: Option<u64>,
    /// Kernel memory limit of an instance (bytes; cgroup `memory.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Kernel CPU limit of an instance, in thousandths of a CPU (1500: one and a half).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millis: Option<u32>,
    /// Run as this user (`user`: a name or a numeric uid, as written), which needs a daemon
    /// running as root; the account is looked up again before each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run with this group (`group`: a name or a numeric gid); the user's primary group when
    /// only `user` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where each instance's pid is written while it runs (`pid_file`, absolute; `-<n>` goes
    /// before the extension when there are several instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Cluster mode: the listening sockets the daemon binds once and every instance inherits
    /// (socket activation, descriptors 3, 4 …). Empty for an app whose instances bind their
    /// own ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketSpec>,
    /// A Node app in cluster mode (`exec_mode = "cluster"`, or several instances), with or
    /// without `sockets`: its `listen(port)` on a port not among them asks the daemon for it,
    /// which binds it once for every instance (see `supervisor::sockets`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// `[apps.balancer]` in `http` or `tcp` mode: the daemon listens on the public port and
    /// balances over the instances, each on a loopback port of its own (`PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerSpec>,
    /// The container image of the app, for `herder export` (`image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `[apps.balancer]`: the daemon's proxy in front of the app's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerSpec {
    /// The public address.
    pub listen: SocketSpec,
    pub mode: BalancerMode,
    /// The first instance's loopback port (the app's `port`), the next ones counting up;
    /// none: a free port for each, picked when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<u16>,
    pub strategy: Strategy,
    /// Weight of each instance by index (1 where not given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<u32>,
    /// Instances (by index) that get requests only while no other one can.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup: Vec<u32>,
    /// Failures within `fail_timeout` that take an instance out for `fail_timeout` (nginx's
    /// `max_fails`; 0 never takes one out).
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
    /// Time to connect to an instance.
    pub connect_timeout_ms: u64,
    /// Time from the request to the answer's headers.
    pub first_byte_timeout_ms: u64,
    /// Longest silence within an ordinary answer.
    pub idle_timeout_ms: u64,
    /// Longest silence within a stream (Server-Sent Events, WebSocket, any upgrade).
    pub stream_idle_timeout_ms: u64,
    /// How long streams to an instance that is being stopped may go on.
    pub drain_timeout_ms: u64,
    /// Take `X-Forwarded-*` of the client as they are (behind another proxy) instead of
    /// replacing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_forwarded: bool,
    /// HTTPS on the public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Write a JSON line per request to the app's access log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access_log: bool,
    /// In `http` mode, reach Node instances over their Unix socket (the hop) where they serve
    /// one (`unix_hop`; on unless set to false); off: always over their loopback port.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub unix_hop: bool,
}

fn on() -> bool {
    true
}

fn is_on(b: &bool) -> bool {
    *b
}

impl BalancerSpec {
    /// The defaults, listening on `listen`: nginx's where nginx has one (`max_fails` 1,
    /// `fail_timeout` 10 s, 60 s to the first byte), streams silent for up to a day.
    pub fn new(listen: SocketSpec) -> BalancerSpec {
        BalancerSpec {
            listen,
            mode: BalancerMode::Http,
            backend_port: None,
            strategy: Strategy::RoundRobin,
            weights: Vec::new(),
            backup: Vec::new(),
            max_fails: 1,
            fail_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            stream_idle_timeout_ms: 86_400_000,
            drain_timeout_ms: 30_000,
            trust_forwarded: false,
            tls: None,
            access_log: false,
            unix_hop: true,
        }
    }

    /// The weight of instance `index`.
    pub fn weight(&self, index: u32) -> u32 {
        self.weights.get(index as usize).copied().unwrap_or(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalancerMode {
    Http,
    Tcp,
}

/// How the balancer picks an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// The fewest requests under way (by weight).
    LeastConn,
    /// The client's address, consistently hashed.
    IpHash,
    /// A request header's value, consistently hashed.
    Header(String),
    /// A cookie's value, consistently hashed.
    Cookie(String),
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::RoundRobin => f.write_str("round_robin"),
            Strategy::LeastConn => f.write_str("least_conn"),
            Strategy::IpHash => f.write_str("ip_hash"),
            Strategy::Header(h) => write!(f, "header {h}"),
            Strategy::Cookie(c) => write!(f, "cookie {c}"),
        }
    }
}

/// A certificate and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One listening socket of an app in cluster mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SocketSpec {
    /// Its name in `LISTEN_FDNAMES`: the config's name for it, else the port's number.
    pub name: String,
    /// The address to listen on; none: every address (IPv6 and IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u16,
}

impl SocketSpec {
    /// `port`, `host:port` or `[v6]:port`, as the config and `show` write it.
    pub fn address(&self) -> String {
        match &self.host {
            Some(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Some(h) => format!("{h}:{}", self.port),
            None => self.port.to_string(),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_listen_timeout() -> u64 {
    DEFAULT_LISTEN_TIMEOUT_MS
}

fn default_instance_var() -> String {
    DEFAULT_INSTANCE_VAR.to_string()
}

impl AppSpec {
    /// In cluster mode: its instances share the ports it was given, and those its Node
    /// instances ask for.
    pub fn is_cluster(&self) -> bool {
        self.cluster || !self.sockets.is_empty()
    }

    /// Whether it runs under Node: its program or interpreter is `node`.
    pub fn runs_node(&self) -> bool {
        let base = |p: &str| p.rsplit('/').next().unwrap_or(p).starts_with("node");
        self.interpreter.as_deref().is_some_and(base) || base(&self.program)
    }

    /// A spec with every default, running `program args…` in `cwd`.
    pub fn new(name: impl Into<String>, program: impl Into<String>, cwd: PathBuf) -> Self {
        let program = program.into();
        AppSpec {
            name: name.into(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            script: program.clone(),
            program,
            args: Vec::new(),
            interpreter: None,
            cwd,
            env: Default::default(),
            instances: 1,
            autorestart: true,
            stop_exit_codes: Vec::new(),
            min_uptime_ms: DEFAULT_MIN_UPTIME_MS,
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_delay_ms: 0,
            exp_backoff_restart_delay_ms: None,
            kill_signal: DEFAULT_KILL_SIGNAL.to_string(),
            kill_timeout_ms: DEFAULT_KILL_TIMEOUT_MS,
            autostart: true,
            logs: LogSpec::default(),
            source: None,
            instance_var: default_instance_var(),
            increment_var: None,
            env_name: None,
            wait_ready: false,
            listen_timeout_ms: DEFAULT_LISTEN_TIMEOUT_MS,
            watchdog_ms: None,
            health: Vec::new(),
            cron_restart: None,
            cron_timezone: None,
            hooks: Vec::new(),
            watch: Vec::new(),
            ignore_watch: Vec::new(),
            watch_delay_ms: 0,
            shutdown_with_message: false,
            max_memory_restart: None,
            memory_limit: None,
            cpu_limit_millis: None,
            user: None,
            group: None,
            pid_file: None,
            sockets: Vec::new(),
            cluster: false,
            balancer: None,
            image: None,
            instances_max: false,
        }
    }
}

/// Default `log_max_size`: files rotate past 100 MiB unless told otherwise, so that a noisy app
/// cannot fill the disk.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 100 * 1024 * 1024;
/// Default `log_retain`: rotated files kept per log.
pub const DEFAULT_LOG_RETAIN: u32 = 10;

/// The log settings of an app, as resolved from its config (paths absolute).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSpec {
    /// stdout file (`out_file`); `None` is `logs/<name>-<n>.out.log`; `/dev/null` drops it.
    pub out_file: Option<PathBuf>,
    /// stderr file (`error_file`).
    pub error_file: Option<PathBuf>,
    /// A file for both streams (`log_file`).
    pub log_file: Option<PathBuf>,
    /// `log_file = true`: the combined file at its default place, `logs/<name>.log`.
    pub log_file_default: bool,
    /// Every instance writes the same files (no `-<n>` in the names).
    pub merge_logs: bool,
    /// Prefix lines with the time (`time`, or a `date_format`).
    pub time: bool,
    /// A dayjs-style format (`log_date_format`).
    pub date_format: Option<String>,
    /// One JSON object per line (`log_type = "json"`).
    pub json: bool,
    /// Drop all output (`disable_logs`).
    pub disable: bool,
    /// `log_max_size` in bytes; `Some(0)` turns size rotation off.
    pub max_size: Option<u64>,
    pub retain: Option<u32>,
    pub compress: bool,
    /// `log_rotate_interval` in ms.
    pub rotate_interval_ms: Option<u64>,
    /// `log_rate_limit`: at most `.0` lines per `.1` ms.
    pub rate_limit: Option<(u64, u64)>,
}

impl LogSpec {
    pub fn is_default(&self) -> bool {
        *self == LogSpec::default()
    }
}

/// What a probe's failures do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `failure_threshold` failures in a row restart the instance.
    Liveness,
    /// The instance is `online` only while it passes.
    Readiness,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeCheck {
    /// GET the URL; a 2xx or 3xx answer is healthy.
    Http(String),
    /// Connect to `host:port`.
    Tcp(String),
    /// Run the command (split shell-style, no shell) in the app's cwd and env; exit 0 is healthy.
    Exec(Vec<String>),
}

/// One `[[apps.health]]` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub check: ProbeCheck,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub initial_delay_ms: u64,
}

impl ProbeSpec {
    pub fn new(kind: ProbeKind, check: ProbeCheck) -> ProbeSpec {
        ProbeSpec {
            kind,
            check,
            interval_ms: 5_000,
            timeout_ms: 1_000,
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay_ms: 0,
        }
    }
}

/// What a hook does with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookAction {
    /// POST the event as JSON to this http:// URL.
    Webhook(String),
    /// Run this command (no shell) with the event in `HERDER_EVENT` (JSON) and
    /// `HERDER_EVENT_KIND`.
    Command(Vec<String>),
}

/// One `[[apps.hooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    /// Event kinds it receives (`exit`, `restart`, `errored`, `health`…); empty = all.
    pub events: Vec<String>,
    pub action: HookAction,
    pub timeout_ms: u64,
    /// Further attempts after a failed one.
    pub retries: u32,
}
