//! An app as declared, before resolution: [`AppDecl`] and the types of its fields. The
//! validator fills it from a config file, `herder start` from its flags, and `resolve` turns
//! it into what the daemon runs.

use std::collections::BTreeMap;

use super::value::Span;

/// A value and where it was written ([`Span::UNKNOWN`] for flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn unknown(value: T) -> Self {
        Spanned { value, span: Span::UNKNOWN }
    }
}

/// `instances` as written; the CPU count is applied at resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Count(u32),
    /// One per CPU (`"max"`, or `0` as in PM2).
    Max,
    /// All CPUs but this many (a negative number), at least one.
    AllBut(u32),
}

impl Instances {
    pub fn from_int(n: i64) -> Option<Self> {
        match n {
            0 => Some(Instances::Max),
            n if n > 0 => u32::try_from(n).ok().map(Instances::Count),
            n => u32::try_from(n.unsigned_abs()).ok().map(Instances::AllBut),
        }
    }

    pub fn count(self, cpus: u32) -> u32 {
        match self {
            Instances::Count(n) => n,
            Instances::Max => cpus.max(1),
            Instances::AllBut(n) => cpus.saturating_sub(n).max(1),
        }
    }
}

/// One app as declared: every field optional except where the validator says otherwise.
#[derive(Debug, Clone, Default)]
pub struct AppDecl {
    /// Where the app is declared (its `[[apps]]` header).
    pub span: Span,
    /// How messages name the app: "`web`" or "#2".
    pub label: String,
    pub name: Option<Spanned<String>>,
    pub script: Option<Spanned<String>>,
    pub args: Vec<String>,
    pub interpreter: Option<String>,
    pub interpreter_args: Vec<String>,
    pub cwd: Option<Spanned<String>>,
    pub env: BTreeMap<String, String>,
    pub namespace: Option<Spanned<String>>,
    pub autorestart: Option<bool>,
    pub stop_exit_codes: Option<Vec<i32>>,
    pub min_uptime_ms: Option<u64>,
    pub max_restarts: Option<u32>,
    pub restart_delay_ms: Option<u64>,
    pub exp_backoff_restart_delay_ms: Option<u64>,
    pub kill_signal: Option<String>,
    pub kill_timeout_ms: Option<u64>,
    pub instances: Option<Instances>,
    pub autostart: Option<bool>,
    /// Run `script` with `sh -c`.
    pub shell: Option<bool>,
    /// Dotenv files, relative to the config file's directory.
    pub env_file: Vec<Spanned<String>>,
    /// `env_<name>` tables, applied with `--env <name>`.
    pub named_env: Vec<NamedEnv>,
    pub filter_env: FilterEnv,
    pub append_env_to_name: bool,
    pub instance_var: Option<String>,
    pub increment_var: Option<String>,
    /// Sets `PORT` (the first of `ports`).
    pub port: Option<u16>,
    /// `port` as written: the listening sockets of the app in cluster mode.
    pub ports: Vec<crate::protocol::spec::SocketSpec>,
    /// `exec_mode`: `Some(true)` for `cluster`, `Some(false)` for `fork`.
    pub cluster: Option<bool>,
    /// Log settings; paths as written (resolved against `cwd`).
    pub logs: crate::protocol::spec::LogSpec,
    pub wait_ready: Option<bool>,
    pub listen_timeout_ms: Option<u64>,
    /// `watchdog`: the app must send `WATCHDOG=1` at least this often (ms).
    pub watchdog_ms: Option<u64>,
    pub health: Vec<crate::protocol::spec::ProbeSpec>,
    pub cron_restart: Option<String>,
    pub cron_timezone: Option<String>,
    pub hooks: Vec<crate::protocol::spec::HookSpec>,
    /// `watch`: paths as written, relative to `cwd` (`true` is `"."`).
    pub watch: Vec<String>,
    pub ignore_watch: Vec<String>,
    pub watch_delay_ms: Option<u64>,
    pub shutdown_with_message: Option<bool>,
    pub max_memory_restart: Option<u64>,
    pub memory_limit: Option<u64>,
    pub cpu_limit_millis: Option<u32>,
    /// `user`: a name or a numeric uid, as written.
    pub user: Option<Spanned<String>>,
    /// `group`: a name or a numeric gid, as written.
    pub group: Option<Spanned<String>>,
    /// `pid_file`, relative to `cwd`.
    pub pid_file: Option<Spanned<String>>,
    /// `image`: the container image `herder export` names for the app.
    pub image: Option<String>,
    /// `[apps.balancer]`.
    pub balancer: Option<BalancerDecl>,
}

/// `[apps.balancer]` as written: the rest of it is resolved with the app's `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerDecl {
    /// `listen`, when given (else the app's `port`).
    pub listen: Option<crate::protocol::spec::SocketSpec>,
    /// `mode = "socket"`: the instances share the public socket; no proxy.
    pub socket_mode: bool,
    /// The proxy's settings (its `listen` set when resolved).
    pub spec: crate::protocol::spec::BalancerSpec,
    pub span: Span,
    /// Where `weights` and `backup` are written, for the errors about the app's instances.
    pub weights_span: Span,
    pub backup_span: Span,
}

/// An `env_<name>` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEnv {
    pub name: String,
    pub vars: BTreeMap<String, String>,
    pub span: Span,
}

/// `filter_env`: which variables of the shell an app does not inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FilterEnv {
    #[default]
    None,
    All,
    /// Variables whose name contains any of these.
    Containing(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_from_numbers() {
        assert_eq!(Instances::from_int(3), Some(Instances::Count(3)));
        assert_eq!(Instances::from_int(0), Some(Instances::Max));
        assert_eq!(Instances::from_int(-1), Some(Instances::AllBut(1)));
        assert_eq!(Instances::from_int(i64::MAX), None);
        assert_eq!(Instances::Max.count(8), 8);
        assert_eq!(Instances::AllBut(1).count(8), 7);
        assert_eq!(Instances::AllBut(4).count(2), 1);
        assert_eq!(Instances::Count(3).count(1), 3);
    }
}
