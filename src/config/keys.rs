//! The table of the keys herder knows in an app (with their camelCase forms, PM2's aliases and
//! what herder does with each), the top-level keys, and the did-you-mean suggestions that
//! errors about an unknown key, event or signal carry.

use super::value::Span;
use super::ConfigError;
use crate::protocol::signal::signal_names;

/// The keys of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Script,
    Args,
    Interpreter,
    InterpreterArgs,
    Cwd,
    Shell,
    Env,
    EnvFile,
    FilterEnv,
    AppendEnvToName,
    InstanceVar,
    IncrementVar,
    Port,
    Namespace,
    Instances,
    ExecMode,
    Autostart,
    Autorestart,
    StopExitCodes,
    MinUptime,
    MaxRestarts,
    RestartDelay,
    ExpBackoffRestartDelay,
    KillSignal,
    KillTimeout,
    User,
    Group,
    CronRestart,
    CronTimezone,
    Hooks,
    Watch,
    IgnoreWatch,
    WatchDelay,
    MaxMemoryRestart,
    MemoryLimit,
    CpuLimit,
    ShutdownWithMessage,
    WaitReady,
    ListenTimeout,
    Health,
    Watchdog,
    OutFile,
    ErrorFile,
    LogFile,
    MergeLogs,
    Time,
    LogDateFormat,
    LogType,
    DisableLogs,
    LogMaxSize,
    LogRetain,
    LogCompress,
    LogRotateInterval,
    LogRateLimit,
    PidFile,
    Balancer,
    Image,
    // PM2 options with no meaning in herder.
    Ignored,
}

/// What herder does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Now,
    /// A PM2 option that means nothing here (why, for the warning).
    Ignored(&'static str),
}

pub struct FieldDef {
    pub field: Field,
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub support: Support,
}

const fn now(field: Field, name: &'static str, aliases: &'static [&'static str]) -> FieldDef {
    FieldDef { field, name, aliases, support: Support::Now }
}

const fn ignored(name: &'static str, why: &'static str) -> FieldDef {
    FieldDef { field: Field::Ignored, name, aliases: &[], support: Support::Ignored(why) }
}

const APM: &str = "PM2's APM and PM2 Plus instrumentation";

pub const FIELDS: &[FieldDef] = &[
    now(Field::Name, "name", &[]),
    now(Field::Script, "script", &["exec", "cmd", "command"]),
    now(Field::Args, "args", &[]),
    now(Field::Interpreter, "interpreter", &["exec_interpreter"]),
    now(Field::InterpreterArgs, "interpreter_args", &["node_args"]),
    now(Field::Cwd, "cwd", &[]),
    now(Field::Shell, "shell", &[]),
    now(Field::Env, "env", &[]),
    now(Field::EnvFile, "env_file", &[]),
    now(Field::FilterEnv, "filter_env", &[]),
    now(Field::AppendEnvToName, "append_env_to_name", &[]),
    now(Field::InstanceVar, "instance_var", &[]),
    now(Field::IncrementVar, "increment_var", &[]),
    now(Field::Port, "port", &[]),
    now(Field::Namespace, "namespace", &[]),
    now(Field::Instances, "instances", &[]),
    now(Field::ExecMode, "exec_mode", &[]),
    now(Field::Autostart, "autostart", &[]),
    now(Field::Autorestart, "autorestart", &[]),
    now(Field::StopExitCodes, "stop_exit_codes", &[]),
    now(Field::MinUptime, "min_uptime", &[]),
    now(Field::MaxRestarts, "max_restarts", &[]),
    now(Field::RestartDelay, "restart_delay", &[]),
    now(Field::ExpBackoffRestartDelay, "exp_backoff_restart_delay", &[]),
    now(Field::KillSignal, "kill_signal", &[]),
    now(Field::KillTimeout, "kill_timeout", &[]),
    now(Field::User, "user", &["uid"]),
    now(Field::Group, "group", &["gid"]),
    now(Field::CronRestart, "cron_restart", &["cron"]),
    now(Field::CronTimezone, "cron_timezone", &[]),
    now(Field::Hooks, "hooks", &[]),
    now(Field::Watch, "watch", &[]),
    now(Field::IgnoreWatch, "ignore_watch", &[]),
    now(Field::WatchDelay, "watch_delay", &[]),
    now(Field::MaxMemoryRestart, "max_memory_restart", &[]),
    now(Field::MemoryLimit, "memory_limit", &[]),
    now(Field::CpuLimit, "cpu_limit", &[]),
    now(Field::ShutdownWithMessage, "shutdown_with_message", &[]),
    now(Field::WaitReady, "wait_ready", &[]),
    now(Field::ListenTimeout, "listen_timeout", &[]),
    now(Field::Health, "health", &[]),
    now(Field::Watchdog, "watchdog", &[]),
    now(Field::OutFile, "out_file", &["output", "out", "out_log"]),
    now(Field::ErrorFile, "error_file", &["error", "err", "err_file", "err_log"]),
    now(Field::LogFile, "log_file", &["log"]),
    now(Field::MergeLogs, "merge_logs", &["combine_logs"]),
    now(Field::Time, "time", &[]),
    now(Field::LogDateFormat, "log_date_format", &[]),
    now(Field::LogType, "log_type", &[]),
    now(Field::DisableLogs, "disable_logs", &[]),
    now(Field::LogMaxSize, "log_max_size", &[]),
    now(Field::LogRetain, "log_retain", &[]),
    now(Field::LogCompress, "log_compress", &[]),
    now(Field::LogRotateInterval, "log_rotate_interval", &[]),
    now(Field::LogRateLimit, "log_rate_limit", &[]),
    now(Field::PidFile, "pid_file", &["pid"]),
    now(Field::Balancer, "balancer", &[]),
    now(Field::Image, "image", &[]),
    ignored("treekill", "herder always stops the whole process tree"),
    ignored("kill_retry_time", "herder waits for the exit instead of polling"),
    ignored("force", "app names are unique in herder"),
    ignored("execute_command", "herder runs every app as its own process"),
    ignored("name_prefix", "PM2's programmatic API only"),
    ignored("windowsHide", "Windows only"),
    ignored("watch_options", "PM2's file watcher (chokidar) settings"),
    ignored("vizion", "PM2's git metadata"),
    ignored("post_update", "PM2's git metadata"),
    ignored("source_map_support", "Node source maps"),
    ignored("disable_source_map_support", "Node source maps"),
    ignored("pmx", APM),
    ignored("automation", APM),
    ignored("trace", APM),
    ignored("disable_trace", APM),
    ignored("v8", APM),
    ignored("event_loop_inspector", APM),
    ignored("deep_monitoring", APM),
    ignored("io", APM),
    ignored("install_url", "PM2 internal"),
    ignored("username", "PM2 internal"),
    ignored("write", "PM2 internal"),
    ignored("km_link", "PM2 internal"),
    ignored("pmx_module", "PM2 internal"),
];

/// Top-level keys.
pub(super) const TOP_LEVEL: &[&str] = &["apps", "pm2", "deploy", "static"];

/// `max_restarts` → `maxRestarts`.
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

pub fn lookup(key: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|d| {
        std::iter::once(d.name).chain(d.aliases.iter().copied()).any(|n| key == n || key == camel_case(n))
    })
}

/// The candidate closest to `key`, if it is close enough to be a likely typo.
pub fn did_you_mean<I, S>(key: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let squash = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_lowercase();
    let squashed = squash(key);
    let mut best: Option<(f64, String)> = None;
    for candidate in candidates {
        let candidate = candidate.as_ref();
        // Same word in another case or separator style (`MAX-RESTARTS`): certainly that key.
        let score = if squash(candidate) == squashed {
            2.0
        } else {
            strsim::jaro_winkler(&key.to_lowercase(), &candidate.to_lowercase())
        };
        if score > 0.8 && best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, candidate.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

/// The error for an unknown key `key` at `span`, hinting the nearest of `known`.
pub(super) fn unknown_key(message: String, span: Span, key: &str, known: &[&str]) -> ConfigError {
    let err = ConfigError::new(message).at(span);
    match did_you_mean(key, known) {
        Some(s) => err.with_hint(format!("did you mean `{s}`?")),
        None => err,
    }
}

pub(super) fn key_suggestion(key: &str) -> Option<String> {
    // Suggest in the style the user writes in.
    let camel = key.chars().any(|c| c.is_ascii_uppercase());
    let names = FIELDS.iter().map(|d| if camel { camel_case(d.name) } else { d.name.to_string() });
    did_you_mean(key, names)
}

/// The hint for an unknown signal: the closest name, else what is accepted.
pub fn signal_hint(written: &str) -> String {
    // Compare without the `SIG` prefix, which every name shares.
    let upper = written.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let names = signal_names().map(|n| n.trim_start_matches("SIG"));
    match did_you_mean(bare, names) {
        Some(s) => format!("did you mean `SIG{s}`?"),
        None => "use a signal name such as `SIGTERM` or `SIGINT`, or its number".to_string(),
    }
}

/// The name of a `env_<name>` key, if it is one.
pub fn env_name(key: &str) -> Option<&str> {
    key.strip_prefix("env_").filter(|n| !n.is_empty() && lookup(key).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_forms() {
        assert_eq!(camel_case("max_restarts"), "maxRestarts");
        assert_eq!(camel_case("exp_backoff_restart_delay"), "expBackoffRestartDelay");
        assert_eq!(camel_case("name"), "name");
    }

    #[test]
    fn every_key_and_alias_is_found_in_both_cases() {
        for d in FIELDS {
            assert_eq!(lookup(d.name).map(|f| f.field), Some(d.field));
            assert_eq!(lookup(&camel_case(d.name)).map(|f| f.field), Some(d.field));
        }
        assert_eq!(lookup("execInterpreter").map(|d| d.field), Some(Field::Interpreter));
        assert_eq!(lookup("node_args").map(|d| d.field), Some(Field::InterpreterArgs));
        assert!(lookup("max_restart").is_none());
        assert!(lookup("MaxRestarts").is_none());
    }

    #[test]
    fn suggestions() {
        assert_eq!(key_suggestion("max_restart").as_deref(), Some("max_restarts"));
        assert_eq!(key_suggestion("maxRestart").as_deref(), Some("maxRestarts"));
        assert_eq!(key_suggestion("max-restarts").as_deref(), Some("max_restarts"));
        assert_eq!(key_suggestion("scrpit").as_deref(), Some("script"));
        assert_eq!(key_suggestion("restart_delya").as_deref(), Some("restart_delay"));
        assert_eq!(key_suggestion("arg").as_deref(), Some("args"));
        assert_eq!(key_suggestion("zzz"), None);
        assert_eq!(signal_hint("SIGTREM"), "did you mean `SIGTERM`?");
        assert_eq!(signal_hint("term1"), "did you mean `SIGTERM`?");
        assert!(signal_hint("bogus").contains("`SIGTERM`"), "{}", signal_hint("bogus"));
        assert!(signal_hint("SIGNOPE").contains("`SIGTERM`"), "{}", signal_hint("SIGNOPE"));
    }
}
