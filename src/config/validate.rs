//! The one validator: walks a [`Value`] tree (whatever format it came from) into [`AppDecl`]s,
//! collecting every problem with its position instead of stopping at the first.
//!
//! Keys are herder's snake_case names, which are PM2's; each also accepts its camelCase form
//! (`maxRestarts`) and PM2's aliases (`exec_interpreter`, `node_args`, `out`, `cron`…). Every PM2
//! option is known. No key herder names is silently ignored: those whose behaviour comes
//! later are validated now and are errors in herder.toml, warnings in PM2 files (which are
//! shared with PM2); PM2 options that mean nothing in herder (APM, source maps, vizion) are
//! warnings.

use std::collections::BTreeMap;

use super::resolve::{AppDecl, Instances, NamedEnv, Spanned};
use super::units::{self, UnitError};
use super::value::{Kind, Span, Table, Value};
use super::ConfigError;
use crate::protocol::signal::{canonical_name, name_of, signal_names};
use crate::protocol::spec::{HookAction, HookSpec, ProbeCheck, ProbeKind, ProbeSpec};

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
    // Validated now; their behaviour comes with later work.
    Balancer,
    Image,
    // PM2 options with no meaning in herder.
    Ignored,
}

/// What herder does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Now,
    /// Parsed and validated; a later release gives it its behaviour. An error in herder.toml,
    /// a warning in PM2 files.
    Later,
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

const fn later(field: Field, name: &'static str, aliases: &'static [&'static str]) -> FieldDef {
    FieldDef { field, name, aliases, support: Support::Later }
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
    later(Field::Balancer, "balancer", &[]),
    later(Field::Image, "image", &[]),
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

/// Which rules a file follows: herder's own format, or PM2's (every format but TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Herder,
    Pm2,
}

/// Top-level keys.
const TOP_LEVEL: &[&str] = &["apps", "pm2", "deploy", "static"];

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
fn unknown_key(message: String, span: Span, key: &str, known: &[&str]) -> ConfigError {
    let err = ConfigError::new(message).at(span);
    match did_you_mean(key, known) {
        Some(s) => err.with_hint(format!("did you mean `{s}`?")),
        None => err,
    }
}

fn key_suggestion(key: &str) -> Option<String> {
    // Suggest in the style the user writes in.
    let camel = key.chars().any(|c| c.is_ascii_uppercase());
    let names = FIELDS.iter().map(|d| if camel { camel_case(d.name) } else { d.name.to_string() });
    did_you_mean(key, names)
}

/// What the validator found in a whole file.
#[derive(Debug, Default)]
pub struct Validated {
    pub apps: Vec<AppDecl>,
    /// `deploy.<env>.env` of PM2 files, applied under the app's `env` with `--env <env>`.
    pub deploy_env: BTreeMap<String, BTreeMap<String, String>>,
}

/// One key that herder accepts but ignores, where it is set.
struct Ignore {
    key: &'static str,
    /// What the warning says after the key and the apps.
    why: Why,
    app: String,
    span: Span,
}

enum Why {
    /// A PM2 option with no meaning in herder, and why.
    Meaningless(&'static str),
    /// A key whose behaviour comes later: the rest of the sentence.
    Later(&'static str),
}

/// A key (or a value of one) that herder validates but does not act on yet.
struct Later {
    /// The key's canonical name, for the warning.
    key: &'static str,
    /// The key (and value) as written, for the error: "`exec_mode = \"cluster\"`".
    written: String,
    /// The rest of herder.toml's error: "is not implemented yet".
    error: &'static str,
    /// The rest of a PM2 file's warning: "is not implemented yet; it is ignored".
    warning: &'static str,
    hint: &'static str,
}

/// Every app of a config tree; problems go to `errors`, ignored options to `warnings` (one
/// line per option, naming the apps that set it).
pub fn apps(
    root: &Value,
    dialect: Dialect,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Validated {
    let mut out = Validated::default();
    let mut ignores = Vec::new();
    let app_values: Vec<&Value> = match &root.kind {
        // PM2 accepts a bare list of apps.
        Kind::Array(items) => items.iter().collect(),
        Kind::Table(table) if dialect == Dialect::Pm2 && is_bare_app(table) => vec![root],
        Kind::Table(table) => top_level(table, &mut out, errors, warnings),
        Kind::Null => {
            errors.push(ConfigError::new("no apps in the config").at(root.span).with_hint(
                "declare each app with at least a `script`, under `apps` (`[[apps]]` in herder.toml)",
            ));
            return out;
        }
        _ => {
            errors.push(
                ConfigError::new(format!("the config must be a table of apps, found {}", root.type_name()))
                    .at(root.span),
            );
            return out;
        }
    };
    let mut cx = Cx { dialect, errors, ignores: &mut ignores };
    out.apps = app_values.into_iter().enumerate().filter_map(|(i, v)| app(v, i + 1, &mut cx)).collect();
    warnings.extend(summarize(ignores));
    out
}

/// A top-level table that is itself an app (PM2 accepts `module.exports = { script: … }`).
fn is_bare_app(table: &Table) -> bool {
    let has = |f: Field| table.entries.iter().any(|e| lookup(&e.key).is_some_and(|d| d.field == f));
    !table.entries.iter().any(|e| e.key == "apps" || e.key == "pm2") && has(Field::Script)
}

fn summarize(ignores: Vec<Ignore>) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for (i, first) in ignores.iter().enumerate() {
        if done.contains(&first.key) {
            continue;
        }
        done.push(first.key);
        let apps: Vec<&str> =
            ignores[i..].iter().filter(|w| w.key == first.key).map(|w| w.app.as_str()).collect();
        let apps =
            if apps.len() == 1 { format!("app {}", apps[0]) } else { format!("apps {}", apps.join(", ")) };
        let message = match first.why {
            Why::Meaningless(why) => {
                format!(
                    "`{}` ({apps}) is a PM2 option with no meaning in herder ({why}); it is ignored",
                    first.key
                )
            }
            Why::Later(rest) => format!("`{}` ({apps}) {rest}", first.key),
        };
        out.push(ConfigError::new(message).at(first.span));
    }
    out
}

fn top_level<'a>(
    table: &'a Table,
    out: &mut Validated,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<&'a Value> {
    let mut apps: Option<(&str, &Value)> = None;
    for entry in &table.entries {
        match entry.key.as_str() {
            "apps" | "pm2" => {
                if let Some((first, _)) = apps {
                    errors.push(
                        ConfigError::new(format!(
                            "`{}` declares the apps again (already in `{first}`)",
                            entry.key
                        ))
                        .at(entry.key_span)
                        .with_hint("keep one list of apps"),
                    );
                    continue;
                }
                apps = Some((entry.key.as_str(), &entry.value));
            }
            "deploy" => deploy(&entry.value, out, errors, warnings),
            // Extension fields, as in docker compose: a place for YAML anchors.
            key if key.starts_with("x-") => {}
            "static" => warnings.push(
                ConfigError::new(
                    "`static` (PM2's built-in static file server) is not supported; it is ignored",
                )
                .at(entry.key_span),
            ),
            key => errors.push(unknown_key(format!("unknown key `{key}`"), entry.key_span, key, TOP_LEVEL)),
        }
    }
    let Some((key, apps)) = apps else {
        if errors.is_empty() {
            errors.push(
                ConfigError::new("no apps in the config")
                    .with_hint("declare each app in an `[[apps]]` table with at least a `script`"),
            );
        }
        return Vec::new();
    };
    match &apps.kind {
        Kind::Array(items) => {
            if items.is_empty() {
                errors.push(ConfigError::new(format!("`{key}` is empty")).at(apps.span));
            }
            items.iter().collect()
        }
        // A single app written as `[apps]` (PM2 also accepts a bare object).
        Kind::Table(_) => vec![apps],
        _ => {
            errors.push(
                ConfigError::new(format!("`{key}` must be an array of tables, found {}", apps.type_name()))
                    .at(apps.span)
                    .with_hint("declare each app in an `[[apps]]` table"),
            );
            Vec::new()
        }
    }
}

/// PM2's `deploy` section: herder does not deploy, but `deploy.<env>.env` feeds `--env <env>`.
fn deploy(
    value: &Value,
    out: &mut Validated,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    let Kind::Table(envs) = &value.kind else {
        errors.push(
            ConfigError::new(format!(
                "`deploy` must be a table of environments, found {}",
                value.type_name()
            ))
            .at(value.span),
        );
        return;
    };
    warnings.push(
        ConfigError::new("`deploy` is not supported (herder does not deploy); only its `env` tables are used, with `--env`")
            .at(value.span),
    );
    let mut ignores = Vec::new();
    let mut cx = Cx { dialect: Dialect::Pm2, errors, ignores: &mut ignores };
    let mut app = AppCx { label: "`deploy`".to_string(), cx: &mut cx };
    for target in &envs.entries {
        let Kind::Table(settings) = &target.value.kind else {
            app.type_error(&format!("deploy.{}", target.key), &target.value, "a table");
            continue;
        };
        if let Some(env) = settings.entries.iter().find(|e| e.key == "env") {
            if let Some(vars) = app.env(&format!("deploy.{}.env", target.key), &env.value) {
                out.deploy_env.insert(target.key.clone(), vars);
            }
        }
    }
}

/// How errors name an app: its name, else the default name its script gives, else its rank.
fn label(table: &Table, index: usize) -> String {
    let str_of = |field: Field| {
        table.entries.iter().find_map(|e| match (&e.value.kind, lookup(&e.key)) {
            (Kind::Str(s), Some(d)) if d.field == field && !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        })
    };
    if let Some(name) = str_of(Field::Name) {
        return format!("`{name}`");
    }
    if let Some(name) = str_of(Field::Script).and_then(|s| super::resolve::lexical_default_name(&s)) {
        return format!("`{name}`");
    }
    format!("#{index}")
}

/// The state shared by every app of a file.
struct Cx<'a> {
    dialect: Dialect,
    errors: &'a mut Vec<ConfigError>,
    ignores: &'a mut Vec<Ignore>,
}

struct AppCx<'a, 'b> {
    label: String,
    cx: &'a mut Cx<'b>,
}

/// Whether a value turns an option on: `false`, `0`, `""`, `[]` and `null` leave it off, so they
/// deserve no warning.
fn is_active(value: &Value) -> bool {
    match &value.kind {
        Kind::Bool(b) => *b,
        Kind::Int(i) => *i != 0,
        Kind::Str(s) => !s.trim().is_empty() && s.trim() != "0",
        Kind::Array(items) => !items.is_empty(),
        Kind::Null => false,
        _ => true,
    }
}

impl AppCx<'_, '_> {
    fn push(&mut self, e: ConfigError) {
        self.cx.errors.push(e);
    }

    fn pm2(&self) -> bool {
        self.cx.dialect == Dialect::Pm2
    }

    /// A PM2 option with no meaning in herder: a warning, in every format.
    fn ignore(&mut self, def: &FieldDef, span: Span) {
        if let Support::Ignored(why) = def.support {
            self.cx.ignores.push(Ignore {
                key: def.name,
                why: Why::Meaningless(why),
                app: self.label.clone(),
                span,
            });
        }
    }

    /// A key (or value) herder does not act on yet: an error in herder.toml, a warning in PM2
    /// files (which PM2 reads too), none for a value that leaves the option off. Returns
    /// whether the rest of the value is still used (in PM2 files).
    fn not_yet(&mut self, later: Later, value: &Value, span: Span) -> bool {
        if self.pm2() {
            if is_active(value) {
                let why = Why::Later(later.warning);
                self.cx.ignores.push(Ignore { key: later.key, why, app: self.label.clone(), span });
            }
            return true;
        }
        let msg = format!("{} in app {} {}", later.written, self.label, later.error);
        self.push(ConfigError::new(msg).at(span).with_hint(later.hint));
        false
    }

    fn type_error(&mut self, key: &str, value: &Value, expected: &str) {
        let msg = format!("`{key}` in app {} must be {expected}, found {}", self.label, value.type_name());
        self.push(ConfigError::new(msg).at(value.span));
    }

    fn unit_error(&mut self, key: &str, value: &Value, e: UnitError) {
        let hint = e.hint();
        self.push(
            ConfigError::new(format!("`{key}` in app {}: {e}", self.label)).at(value.span).with_hint(hint),
        );
    }

    fn string(&mut self, key: &str, value: &Value) -> Option<String> {
        match &value.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.type_error(key, value, "a string");
                None
            }
        }
    }

    fn non_empty_string(&mut self, key: &str, value: &Value) -> Option<String> {
        let s = self.string(key, value)?;
        if s.trim().is_empty() {
            self.push(ConfigError::new(format!("`{key}` in app {} is empty", self.label)).at(value.span));
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.type_error(key, value, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    /// An integer; PM2 files may write it as a string of digits (PM2 parses numbers).
    fn int(&mut self, value: &Value) -> Option<i64> {
        match &value.kind {
            Kind::Int(i) => Some(*i),
            Kind::Str(s) if self.pm2() => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn u32(&mut self, key: &str, value: &Value) -> Option<u32> {
        let Some(i) = self.int(value) else {
            self.type_error(key, value, "a non-negative integer");
            return None;
        };
        match u32::try_from(i) {
            Ok(n) => Some(n),
            Err(_) => {
                let msg =
                    format!("`{key}` in app {} must be between 0 and {}, found {i}", self.label, u32::MAX);
                self.push(ConfigError::new(msg).at(value.span));
                None
            }
        }
    }

    fn port(&mut self, key: &str, value: &Value) -> Option<u16> {
        let Some(i) = self.int(value) else {
            self.type_error(key, value, "a port number");
            return None;
        };
        match u16::try_from(i) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                let msg = format!("`{key}` in app {}: port `{i}` is out of range", self.label);
                self.push(ConfigError::new(msg).at(value.span).with_hint("ports are 1 to 65535"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: &Value) -> Option<u64> {
        let parsed = match &value.kind {
            Kind::Int(i) => units::duration_from_int(*i),
            Kind::Str(s) => units::parse_duration(s),
            _ => {
                self.type_error(key, value, "a duration (milliseconds, or a string such as \"10s\")");
                return None;
            }
        };
        parsed.map_err(|e| self.unit_error(key, value, e)).ok()
    }

    fn size(&mut self, key: &str, value: &Value) -> Option<u64> {
        let parsed = match &value.kind {
            Kind::Int(i) => units::size_from_int(*i),
            Kind::Str(s) => units::parse_size(s),
            _ => {
                self.type_error(key, value, "a size (bytes, or a string such as \"500M\")");
                return None;
            }
        };
        parsed.map_err(|e| self.unit_error(key, value, e)).ok()
    }

    /// A string split shell-style, or a list of strings (numbers are accepted as text).
    fn words(&mut self, key: &str, value: &Value) -> Option<Vec<String>> {
        match &value.kind {
            Kind::Str(s) => match shell_words::split(s) {
                Ok(words) => Some(words),
                Err(e) => {
                    let msg = format!("`{key}` in app {}: cannot split {s:?}: {e}", self.label);
                    self.push(
                        ConfigError::new(msg)
                            .at(value.span)
                            .with_hint("close the quote, or write a list of strings"),
                    );
                    None
                }
            },
            Kind::Array(items) => {
                let mut words = Vec::with_capacity(items.len());
                let mut ok = true;
                for item in items {
                    match &item.kind {
                        Kind::Str(s) => words.push(s.clone()),
                        Kind::Int(i) => words.push(i.to_string()),
                        Kind::Float(x) => words.push(x.to_string()),
                        _ => {
                            self.type_error(key, item, "a list of strings");
                            ok = false;
                        }
                    }
                }
                ok.then_some(words)
            }
            _ => {
                self.type_error(key, value, "a string or a list of strings");
                None
            }
        }
    }

    /// A string or a list of strings, kept as written.
    fn strings(&mut self, key: &str, value: &Value) -> Option<Vec<String>> {
        match &value.kind {
            Kind::Str(s) => Some(vec![s.clone()]),
            Kind::Array(items) => {
                let strings: Vec<Option<String>> = items
                    .iter()
                    .map(|item| match &item.kind {
                        Kind::Str(s) => Some(s.clone()),
                        _ => {
                            self.type_error(key, item, "a list of strings");
                            None
                        }
                    })
                    .collect();
                strings.into_iter().collect()
            }
            _ => {
                self.type_error(key, value, "a string or a list of strings");
                None
            }
        }
    }

    /// `watch = ["src", "app.js"]`: non-empty paths.
    fn watch_paths(&mut self, key: &str, value: &Value) -> Vec<String> {
        let paths = self.strings(key, value).unwrap_or_default();
        if paths.iter().any(|p| p.trim().is_empty()) {
            let msg = format!("`{key}` in app {}: a path is empty", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint("use `true` to watch the app's `cwd`"));
            return Vec::new();
        }
        paths
    }

    /// `ignore_watch`: names or globs, each of which must compile.
    fn ignore_patterns(&mut self, key: &str, value: &Value) -> Vec<String> {
        let patterns = self.strings(key, value).unwrap_or_default();
        for p in &patterns {
            if let Err(e) = crate::health::watch::Ignore::check(p) {
                let msg = format!("`{key}` in app {}: `{p}` is not a valid pattern: {e}", self.label);
                self.push(
                    ConfigError::new(msg)
                        .at(value.span)
                        .with_hint("a name such as \"dist\" or a glob such as \"**/*.tmp\""),
                );
            }
        }
        patterns
    }

    fn var_name(&mut self, key: &str, value: &Value) -> Option<String> {
        let name = self.non_empty_string(key, value)?;
        if name.contains(['=', '\0']) {
            let msg = format!("`{key}` in app {}: `{name}` is not a valid variable name", self.label);
            self.push(ConfigError::new(msg).at(value.span));
            return None;
        }
        Some(name)
    }

    fn env(&mut self, key: &str, value: &Value) -> Option<BTreeMap<String, String>> {
        let Kind::Table(table) = &value.kind else {
            self.type_error(key, value, "a table of variables");
            return None;
        };
        let mut env = BTreeMap::new();
        let mut seen: Vec<&str> = Vec::new();
        for entry in &table.entries {
            let name = &entry.key;
            if name.is_empty() || name.contains(['=', '\0']) {
                let msg = format!("`{key}` in app {}: `{name}` is not a valid variable name", self.label);
                self.push(ConfigError::new(msg).at(entry.key_span));
                continue;
            }
            if seen.contains(&name.as_str()) {
                let msg = format!("`{key}` in app {} sets `{name}` twice", self.label);
                self.push(ConfigError::new(msg).at(entry.key_span).with_hint("keep only one of them"));
                continue;
            }
            seen.push(name);
            let text = match &entry.value.kind {
                Kind::Str(s) => s.clone(),
                Kind::Int(i) => i.to_string(),
                Kind::Float(x) => x.to_string(),
                Kind::Bool(b) => b.to_string(),
                Kind::Null => continue,
                // PM2 passes objects as their JSON text.
                Kind::Array(_) | Kind::Table(_) if self.pm2() => to_json(&entry.value).to_string(),
                _ => {
                    self.type_error(&format!("{key}.{name}"), &entry.value, "a string, number or boolean");
                    continue;
                }
            };
            if text.contains('\0') {
                let msg = format!("`{key}.{name}` in app {} contains a NUL byte", self.label);
                self.push(ConfigError::new(msg).at(entry.value.span));
                continue;
            }
            env.insert(name.clone(), text);
        }
        Some(env)
    }

    fn exit_code(&mut self, key: &str, value: &Value) -> Option<i32> {
        match self.int(value) {
            Some(i @ 0..=255) => Some(i as i32),
            Some(i) => {
                let msg = format!("`{key}` in app {}: exit code `{i}` is out of range", self.label);
                self.push(ConfigError::new(msg).at(value.span).with_hint("exit codes are 0 to 255"));
                None
            }
            None => {
                self.type_error(key, value, "an exit code or a list of exit codes");
                None
            }
        }
    }

    fn exit_codes(&mut self, key: &str, value: &Value) -> Option<Vec<i32>> {
        match &value.kind {
            Kind::Array(items) => {
                let codes: Vec<Option<i32>> = items.iter().map(|v| self.exit_code(key, v)).collect();
                codes.into_iter().collect()
            }
            _ => self.exit_code(key, value).map(|c| vec![c]),
        }
    }

    fn signal(&mut self, key: &str, value: &Value) -> Option<String> {
        let (found, written) = match &value.kind {
            Kind::Str(s) => (canonical_name(s), s.clone()),
            Kind::Int(i) => (name_of(*i), i.to_string()),
            _ => {
                self.type_error(key, value, "a signal name such as \"SIGTERM\", or a number");
                return None;
            }
        };
        if found.is_none() {
            let msg = format!("`{key}` in app {}: unknown signal `{written}`", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint(signal_hint(&written)));
        }
        found.map(str::to_string)
    }

    fn instances(&mut self, key: &str, value: &Value) -> Option<Instances> {
        if let Kind::Str(s) = &value.kind {
            if s.trim() == "max" {
                return Some(Instances::Max);
            }
        }
        let Some(i) = self.int(value) else {
            self.type_error(key, value, "a number of instances or \"max\"");
            return None;
        };
        // PM2 reads 0 as "one per CPU"; herder's own format says "max" for that.
        if i == 0 && !self.pm2() {
            let msg = format!("`{key}` in app {} is 0: the app would run no process", self.label);
            self.push(
                ConfigError::new(msg)
                    .at(value.span)
                    .with_hint("write \"max\" for one instance per CPU, or at least 1"),
            );
            return None;
        }
        Instances::from_int(i).or_else(|| {
            let msg = format!("`{key}` in app {}: `{i}` instances is out of range", self.label);
            self.push(ConfigError::new(msg).at(value.span));
            None
        })
    }

    fn exec_mode(&mut self, key: &str, value: &Value) -> Option<bool> {
        let mode = self.string(key, value)?;
        match mode.trim().trim_end_matches("_mode") {
            "fork" => Some(false),
            "cluster" => Some(true),
            _ => {
                let msg = format!("`{key}` in app {}: unknown mode `{mode}`", self.label);
                self.push(ConfigError::new(msg).at(value.span).with_hint("use \"fork\" or \"cluster\""));
                None
            }
        }
    }

    fn filter_env(&mut self, key: &str, value: &Value) -> Option<FilterEnv> {
        match &value.kind {
            Kind::Bool(true) => Some(FilterEnv::All),
            Kind::Bool(false) => Some(FilterEnv::None),
            Kind::Str(_) | Kind::Array(_) => self.strings(key, value).map(FilterEnv::Containing),
            _ => {
                self.type_error(key, value, "a boolean, a string or a list of strings");
                None
            }
        }
    }

    /// `cron_restart`: a cron expression; `0` (PM2) turns it off.
    fn cron(&mut self, key: &str, value: &Value) -> Option<String> {
        let text = match &value.kind {
            Kind::Int(0) => return None,
            Kind::Str(s) => s.trim().to_string(),
            _ => {
                self.type_error(key, value, "a cron expression such as \"0 3 * * *\"");
                return None;
            }
        };
        if text == "0" {
            return None;
        }
        match crate::health::cron::Schedule::parse(&text, Some("UTC")) {
            Ok(_) => Some(text),
            Err(e) => {
                let msg = format!("`{key}` in app {}: {e}", self.label);
                let hint =
                    "write 5 fields (minute hour day month weekday), or 6 with seconds first, e.g. \"0 3 * * *\"";
                self.push(ConfigError::new(msg).at(value.span).with_hint(hint));
                None
            }
        }
    }

    /// A CPU limit in thousandths of a CPU: `1.5` or `"150%"` is 1500.
    fn cpu_limit(&mut self, key: &str, value: &Value) -> Option<u32> {
        let cpus = match &value.kind {
            Kind::Int(i) => Some(*i as f64),
            Kind::Float(x) => Some(*x),
            Kind::Str(s) => {
                s.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok()).map(|p| p / 100.0)
            }
            _ => None,
        };
        let millis =
            cpus.filter(|c| c.is_finite() && *c >= 0.01 && *c <= 4096.0).map(|c| (c * 1000.0).round() as u32);
        if millis.is_none() {
            let msg = format!("`{key}` in app {}: invalid CPU limit {value}", self.label);
            self.push(
                ConfigError::new(msg)
                    .at(value.span)
                    .with_hint("write a number of CPUs (`1.5`) or a percentage (`\"150%\"`)"),
            );
        }
        millis
    }

    /// `memory_limit`: a size the kernel can enforce (at least 4 MiB).
    fn memory_limit(&mut self, key: &str, value: &Value) -> Option<u64> {
        let bytes = self.size(key, value)?;
        if bytes < 4 * 1024 * 1024 {
            let msg = format!("`{key}` in app {}: {bytes} bytes is too small to run anything", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint("at least \"4M\""));
            return None;
        }
        Some(bytes)
    }

    /// `user` or `group`: a name, or a numeric id (an integer or a string of digits). Whether
    /// it exists is checked when the app is resolved.
    fn account(&mut self, key: &str, value: &Value) -> Option<String> {
        match &value.kind {
            Kind::Str(s) if !s.trim().is_empty() && !s.contains('\0') => Some(s.trim().to_string()),
            Kind::Int(i) if u32::try_from(*i).is_ok() => Some(i.to_string()),
            Kind::Int(i) => {
                let msg = format!("`{key}` in app {}: `{i}` is not a valid id", self.label);
                self.push(ConfigError::new(msg).at(value.span).with_hint("ids are 0 to 4294967295"));
                None
            }
            _ => {
                self.type_error(key, value, "a user or group name, or a numeric id");
                None
            }
        }
    }

    /// `"1000/10s"` (lines per interval) or an integer (lines per second).
    fn log_rate_limit(&mut self, key: &str, value: &Value) -> Option<(u64, u64)> {
        match &value.kind {
            Kind::Int(i) if *i > 0 => Some((*i as u64, 1000)),
            Kind::Str(s) => {
                let parsed = s.split_once('/').and_then(|(n, per)| {
                    let n = n.trim().parse::<u64>().ok().filter(|n| *n > 0)?;
                    let per = units::parse_duration(per).ok().filter(|ms| *ms > 0)?;
                    Some((n, per))
                });
                if parsed.is_none() {
                    let msg = format!("`{key}` in app {}: invalid rate `{s}`", self.label);
                    self.push(
                        ConfigError::new(msg)
                            .at(value.span)
                            .with_hint("write lines per interval, e.g. \"1000/10s\""),
                    );
                }
                parsed
            }
            _ => {
                self.type_error(key, value, "lines per second, or a string such as \"1000/10s\"");
                None
            }
        }
    }

    /// `hooks`: a hook table or a list of them.
    fn hooks(&mut self, key: &str, value: &Value) -> Vec<HookSpec> {
        const KEYS: &[&str] = &["events", "webhook", "command", "timeout", "retries"];
        const KINDS: &[&str] = &[
            "start", "exit", "restart", "errored", "ready", "health", "watchdog", "memory", "oom", "limits",
            "watch",
        ];
        let items: Vec<&Value> = match &value.kind {
            Kind::Table(_) => vec![value],
            Kind::Array(items) => items.iter().collect(),
            _ => {
                self.type_error(key, value, "a table or a list of tables");
                return Vec::new();
            }
        };
        let mut hooks = Vec::new();
        for item in items {
            let Kind::Table(table) = &item.kind else {
                self.type_error(key, item, "a table or a list of tables");
                continue;
            };
            let errors_before = self.cx.errors.len();
            let mut hook = HookSpec {
                events: Vec::new(),
                action: HookAction::Command(Vec::new()),
                timeout_ms: 5_000,
                retries: 2,
            };
            let mut actions = Vec::new();
            for e in &table.entries {
                let k = format!("{key}.{}", e.key);
                let v = &e.value;
                match e.key.as_str() {
                    "events" => {
                        for kind in self.strings(&k, v).unwrap_or_default() {
                            if KINDS.contains(&kind.as_str()) {
                                hook.events.push(kind);
                            } else {
                                let mut err = ConfigError::new(format!(
                                    "`{k}` in app {}: unknown event `{kind}`",
                                    self.label
                                ))
                                .at(v.span);
                                err = err.with_hint(match did_you_mean(&kind, KINDS) {
                                    Some(s) => format!("did you mean `{s}`?"),
                                    None => format!("events are {}", KINDS.join(", ")),
                                });
                                self.push(err);
                            }
                        }
                    }
                    "webhook" => {
                        if let Some(url) = self.non_empty_string(&k, v) {
                            if url.starts_with("http://") {
                                actions.push(HookAction::Webhook(url));
                            } else {
                                let msg =
                                    format!("`{k}` in app {}: `{url}` is not an http:// URL", self.label);
                                self.push(ConfigError::new(msg).at(v.span));
                            }
                        }
                    }
                    "command" => {
                        if let Some(words) = self.words(&k, v).filter(|w| !w.is_empty()) {
                            actions.push(HookAction::Command(words));
                        }
                    }
                    "timeout" => {
                        hook.timeout_ms = self.duration(&k, v).filter(|ms| *ms > 0).unwrap_or(hook.timeout_ms)
                    }
                    "retries" => hook.retries = self.u32(&k, v).unwrap_or(hook.retries),
                    other => {
                        let msg = format!("unknown key `{other}` in a `{key}` entry of app {}", self.label);
                        self.push(unknown_key(msg, e.key_span, other, KEYS));
                    }
                }
            }
            if actions.len() != 1 {
                let msg = format!(
                    "a `{key}` entry of app {} needs exactly one of `webhook` or `command`",
                    self.label
                );
                self.push(ConfigError::new(msg).at(item.span));
            }
            if self.cx.errors.len() == errors_before {
                if let Some(action) = actions.pop() {
                    hook.action = action;
                    hooks.push(hook);
                }
            }
        }
        hooks
    }

    /// `health`: a probe table or a list of them.
    fn probes(&mut self, key: &str, value: &Value) -> Vec<ProbeSpec> {
        let items: Vec<&Value> = match &value.kind {
            Kind::Table(_) => vec![value],
            Kind::Array(items) => items.iter().collect(),
            _ => {
                self.type_error(key, value, "a table or a list of tables");
                return Vec::new();
            }
        };
        items.into_iter().filter_map(|item| self.probe(key, item)).collect()
    }

    fn probe(&mut self, key: &str, value: &Value) -> Option<ProbeSpec> {
        const KEYS: &[&str] = &[
            "kind",
            "http",
            "tcp",
            "exec",
            "interval",
            "timeout",
            "failure_threshold",
            "success_threshold",
            "initial_delay",
        ];
        let Kind::Table(table) = &value.kind else {
            self.type_error(key, value, "a table or a list of tables");
            return None;
        };
        let errors_before = self.cx.errors.len();
        let mut kind = ProbeKind::Liveness;
        let mut checks = Vec::new();
        let mut probe = ProbeSpec::new(kind, ProbeCheck::Tcp(String::new()));
        for e in &table.entries {
            let k = format!("{key}.{}", e.key);
            let v = &e.value;
            match e.key.as_str() {
                "kind" => match self.string(&k, v).as_deref() {
                    Some("liveness") => kind = ProbeKind::Liveness,
                    Some("readiness") => kind = ProbeKind::Readiness,
                    Some(other) => {
                        let msg = format!("`{k}` in app {}: unknown probe kind `{other}`", self.label);
                        self.push(
                            ConfigError::new(msg).at(v.span).with_hint("use \"liveness\" or \"readiness\""),
                        );
                    }
                    None => {}
                },
                "http" => {
                    if let Some(url) = self.non_empty_string(&k, v) {
                        if url.starts_with("http://") {
                            checks.push(ProbeCheck::Http(url));
                        } else {
                            let msg = format!("`{k}` in app {}: `{url}` is not an http:// URL", self.label);
                            self.push(
                                ConfigError::new(msg)
                                    .at(v.span)
                                    .with_hint("e.g. \"http://127.0.0.1:3000/health\""),
                            );
                        }
                    }
                }
                "tcp" => {
                    if let Some(addr) = self.non_empty_string(&k, v) {
                        if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
                            checks.push(ProbeCheck::Tcp(addr));
                        } else {
                            let msg = format!("`{k}` in app {}: `{addr}` is not host:port", self.label);
                            self.push(ConfigError::new(msg).at(v.span).with_hint("e.g. \"127.0.0.1:5432\""));
                        }
                    }
                }
                "exec" => {
                    if let Some(words) = self.words(&k, v).filter(|w| !w.is_empty()) {
                        checks.push(ProbeCheck::Exec(words));
                    }
                }
                "interval" => {
                    probe.interval_ms = self.duration(&k, v).filter(|ms| *ms > 0).unwrap_or(probe.interval_ms)
                }
                "timeout" => {
                    probe.timeout_ms = self.duration(&k, v).filter(|ms| *ms > 0).unwrap_or(probe.timeout_ms)
                }
                "initial_delay" => probe.initial_delay_ms = self.duration(&k, v).unwrap_or(0),
                "failure_threshold" => {
                    probe.failure_threshold =
                        self.u32(&k, v).filter(|n| *n > 0).unwrap_or(probe.failure_threshold)
                }
                "success_threshold" => {
                    probe.success_threshold =
                        self.u32(&k, v).filter(|n| *n > 0).unwrap_or(probe.success_threshold)
                }
                other => {
                    let msg = format!("unknown key `{other}` in a `{key}` probe of app {}", self.label);
                    self.push(unknown_key(msg, e.key_span, other, KEYS));
                }
            }
        }
        if checks.len() != 1 {
            let msg =
                format!("a `{key}` probe of app {} needs exactly one of `http`, `tcp` or `exec`", self.label);
            self.push(ConfigError::new(msg).at(value.span));
        }
        if self.cx.errors.len() != errors_before {
            return None;
        }
        probe.kind = kind;
        probe.check = checks.pop()?;
        Some(probe)
    }
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

/// A value as JSON (for PM2's stringified env objects).
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.kind {
        Kind::Str(s) | Kind::Datetime(s) => J::String(s.clone()),
        Kind::Int(i) => J::from(*i),
        Kind::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Kind::Bool(b) => J::Bool(*b),
        Kind::Null => J::Null,
        Kind::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Kind::Table(t) => J::Object(t.entries.iter().map(|e| (e.key.clone(), to_json(&e.value))).collect()),
    }
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

fn app(value: &Value, index: usize, cx: &mut Cx<'_>) -> Option<AppDecl> {
    let Kind::Table(table) = &value.kind else {
        cx.errors.push(
            ConfigError::new(format!("app #{index} must be a table, found {}", value.type_name()))
                .at(value.span),
        );
        return None;
    };
    let mut cx = AppCx { label: label(table, index), cx };
    let mut decl = AppDecl { span: value.span, label: cx.label.clone(), ..AppDecl::default() };
    let mut seen: Vec<(Field, &str)> = Vec::new();
    let mut named_seen: Vec<&str> = Vec::new();

    for entry in &table.entries {
        let key = entry.key.as_str();
        let v = &entry.value;
        let Some(def) = lookup(key) else {
            if let Some(name) = env_name(key) {
                if named_seen.contains(&name) {
                    let msg = format!("`{key}` in app {} is set twice", cx.label);
                    cx.push(ConfigError::new(msg).at(entry.key_span).with_hint("keep only one of them"));
                    continue;
                }
                named_seen.push(name);
                if matches!(v.kind, Kind::Null) {
                    continue;
                }
                if let Some(vars) = cx.env(key, v) {
                    decl.named_env.push(NamedEnv { name: name.to_string(), vars, span: entry.key_span });
                }
                continue;
            }
            let mut e =
                ConfigError::new(format!("unknown key `{key}` in app {}", cx.label)).at(entry.key_span);
            if let Some(s) = key_suggestion(key) {
                e = e.with_hint(format!("did you mean `{s}`?"));
            }
            cx.push(e);
            continue;
        };
        if let Some((_, first)) =
            seen.iter().find(|(f, n)| *f == def.field && (def.field != Field::Ignored || *n == key))
        {
            let msg = if *first == key {
                format!("`{key}` in app {} is set twice", cx.label)
            } else {
                format!("`{key}` in app {} sets `{}` again (already set by `{first}`)", cx.label, def.name)
            };
            cx.push(ConfigError::new(msg).at(entry.key_span).with_hint("keep only one of them"));
            continue;
        }
        // `null` (JSON, YAML) is as if the key were absent.
        if matches!(v.kind, Kind::Null) {
            continue;
        }
        seen.push((def.field, key));
        let spanned = |value: String| Spanned { value, span: v.span };
        let support = def.support;
        let errors_before = cx.cx.errors.len();
        match def.field {
            Field::Name => decl.name = cx.non_empty_string(key, v).map(spanned),
            Field::Script => decl.script = cx.non_empty_string(key, v).map(spanned),
            Field::Args => decl.args = cx.words(key, v).unwrap_or_default(),
            Field::Interpreter => {
                decl.interpreter = cx.non_empty_string(key, v).and_then(|i| match i.split_once('@') {
                    // PM2 installs `node@<version>` through nvm; herder runs the `node` in PATH.
                    Some(("node", _)) => cx.not_yet(
                        Later {
                            key: "interpreter",
                            written: format!("`{key} = \"{i}\"`"),
                            error: "asks for a Node version, which herder does not install",
                            warning: "asks for a Node version, which herder does not install; it runs `node` from PATH",
                            hint: "write `interpreter = \"node\"`: herder runs the `node` in PATH",
                        },
                        v,
                        v.span,
                    )
                    .then(|| "node".to_string()),
                    _ => Some(i),
                })
            }
            Field::InterpreterArgs => decl.interpreter_args = cx.words(key, v).unwrap_or_default(),
            Field::Cwd => decl.cwd = cx.non_empty_string(key, v).map(spanned),
            Field::Shell => decl.shell = cx.bool(key, v),
            Field::Env => decl.env = cx.env(key, v).unwrap_or_default(),
            Field::EnvFile => {
                decl.env_file = cx.strings(key, v).unwrap_or_default().into_iter().map(spanned).collect()
            }
            Field::FilterEnv => decl.filter_env = cx.filter_env(key, v).unwrap_or_default(),
            Field::AppendEnvToName => decl.append_env_to_name = cx.bool(key, v).unwrap_or(false),
            Field::InstanceVar => decl.instance_var = cx.var_name(key, v),
            Field::IncrementVar => decl.increment_var = cx.var_name(key, v),
            Field::Port => decl.port = cx.port(key, v),
            Field::Namespace => decl.namespace = cx.non_empty_string(key, v).map(spanned),
            Field::Instances => decl.instances = cx.instances(key, v),
            Field::ExecMode => {
                if cx.exec_mode(key, v) == Some(true) {
                    cx.not_yet(
                        Later {
                            key: "exec_mode",
                            written: match &v.kind {
                                Kind::Str(mode) => format!("`{key} = \"{mode}\"`"),
                                _ => format!("`{key}`"),
                            },
                            error: "is not implemented yet",
                            warning: "is `cluster`, which is not implemented yet: the instances run as separate processes that do not share one port",
                            hint: "the instances would run as separate processes that do not share one port; remove `exec_mode` or write `exec_mode = \"fork\"`",
                        },
                        v,
                        v.span,
                    );
                }
            }
            Field::Autostart => decl.autostart = cx.bool(key, v),
            Field::Autorestart => decl.autorestart = cx.bool(key, v),
            Field::StopExitCodes => decl.stop_exit_codes = cx.exit_codes(key, v),
            Field::MinUptime => decl.min_uptime_ms = cx.duration(key, v),
            Field::MaxRestarts => decl.max_restarts = cx.u32(key, v),
            Field::RestartDelay => decl.restart_delay_ms = cx.duration(key, v),
            Field::ExpBackoffRestartDelay => decl.exp_backoff_restart_delay_ms = cx.duration(key, v),
            Field::KillSignal => decl.kill_signal = cx.signal(key, v),
            Field::KillTimeout => decl.kill_timeout_ms = cx.duration(key, v),
            Field::User => decl.user = cx.account(key, v).map(spanned),
            Field::Group => decl.group = cx.account(key, v).map(spanned),
            Field::CronRestart => decl.cron_restart = cx.cron(key, v),
            Field::CronTimezone => {
                if let Some(tz) = cx.non_empty_string(key, v) {
                    if jiff02::tz::TimeZone::get(&tz).is_ok() {
                        decl.cron_timezone = Some(tz);
                    } else {
                        let msg = format!("`{key}` in app {}: unknown time zone `{tz}`", cx.label);
                        cx.push(
                            ConfigError::new(msg)
                                .at(v.span)
                                .with_hint("an IANA name such as \"Europe/Paris\" or \"UTC\""),
                        );
                    }
                }
            }
            Field::Watch => {
                decl.watch = match v.kind {
                    Kind::Bool(true) => vec![".".to_string()],
                    Kind::Bool(false) => Vec::new(),
                    _ => cx.watch_paths(key, v),
                }
            }
            Field::IgnoreWatch => decl.ignore_watch = cx.ignore_patterns(key, v),
            Field::WatchDelay => decl.watch_delay_ms = cx.duration(key, v),
            Field::ShutdownWithMessage => decl.shutdown_with_message = cx.bool(key, v),
            Field::ListenTimeout => decl.listen_timeout_ms = cx.duration(key, v),
            Field::LogRotateInterval => {
                decl.logs.rotate_interval_ms = match &v.kind {
                    Kind::Str(word) if word == "hourly" => Some(3_600_000),
                    Kind::Str(word) if word == "daily" => Some(86_400_000),
                    Kind::Str(word) if word == "weekly" => Some(604_800_000),
                    _ => cx.duration(key, v),
                }
            }
            Field::Watchdog => {
                decl.watchdog_ms = match v.kind {
                    Kind::Bool(false) => None,
                    Kind::Bool(true) => Some(crate::protocol::spec::DEFAULT_WATCHDOG_MS),
                    _ => cx.duration(key, v).filter(|ms| *ms > 0),
                }
            }
            Field::MaxMemoryRestart => decl.max_memory_restart = cx.size(key, v).filter(|b| *b > 0),
            Field::MemoryLimit => decl.memory_limit = cx.memory_limit(key, v),
            Field::LogMaxSize => decl.logs.max_size = cx.size(key, v),
            Field::CpuLimit => decl.cpu_limit_millis = cx.cpu_limit(key, v),
            Field::WaitReady => decl.wait_ready = cx.bool(key, v),
            Field::MergeLogs => decl.logs.merge_logs = cx.bool(key, v).unwrap_or(false),
            Field::Time => decl.logs.time = cx.bool(key, v).unwrap_or(false),
            Field::DisableLogs => decl.logs.disable = cx.bool(key, v).unwrap_or(false),
            Field::LogCompress => decl.logs.compress = cx.bool(key, v).unwrap_or(false),
            Field::PidFile => decl.pid_file = cx.non_empty_string(key, v).map(spanned),
            Field::Image => {
                cx.non_empty_string(key, v);
            }
            Field::OutFile => decl.logs.out_file = cx.non_empty_string(key, v).map(Into::into),
            Field::ErrorFile => decl.logs.error_file = cx.non_empty_string(key, v).map(Into::into),
            Field::LogDateFormat => {
                if let Some(f) = cx.non_empty_string(key, v) {
                    match crate::logs::format::TimeFormat::parse(&f) {
                        Ok(_) => decl.logs.date_format = Some(f),
                        Err(e) => {
                            let msg = format!("`{key}` in app {}: {e}", cx.label);
                            cx.push(ConfigError::new(msg).at(v.span));
                        }
                    }
                }
            }
            Field::LogFile => match v.kind {
                Kind::Bool(b) => decl.logs.log_file_default = b,
                _ => decl.logs.log_file = cx.non_empty_string(key, v).map(Into::into),
            },
            Field::LogType => {
                if let Some(t) = cx.string(key, v) {
                    if t != "json" && t != "raw" {
                        let msg = format!("`{key}` in app {}: unknown log type `{t}`", cx.label);
                        cx.push(ConfigError::new(msg).at(v.span).with_hint("use \"json\" or \"raw\""));
                    } else {
                        decl.logs.json = t == "json";
                    }
                }
                continue;
            }
            Field::LogRetain => decl.logs.retain = cx.u32(key, v),
            Field::LogRateLimit => decl.logs.rate_limit = cx.log_rate_limit(key, v),
            Field::Health => decl.health = cx.probes(key, v),
            Field::Hooks => decl.hooks = cx.hooks(key, v),
            Field::Balancer => {
                if !matches!(v.kind, Kind::Table(_)) {
                    cx.type_error(key, v, "a table");
                }
            }
            Field::Ignored => {}
        }
        // An invalid value is an error; a warning that it is ignored would only be noise.
        if cx.cx.errors.len() == errors_before {
            match (support, def.field) {
                (Support::Ignored(_), _) => cx.ignore(def, entry.key_span),
                (Support::Later, Field::Balancer) => {
                    cx.not_yet(
                        Later {
                            key: def.name,
                            written: format!("`{key}`"),
                            error: "is not implemented yet",
                            warning: "is not implemented yet; it is ignored",
                            hint: "the built-in load balancer comes with a later release; remove the table",
                        },
                        v,
                        entry.key_span,
                    );
                }
                (Support::Later, field) => {
                    let hint = if field == Field::Image {
                        "`image` is for `herder export`, which comes with a later release; remove it"
                    } else {
                        "a later release gives it its behaviour; remove it"
                    };
                    cx.not_yet(
                        Later {
                            key: def.name,
                            written: format!("`{key}`"),
                            error: "is not implemented yet",
                            warning: "is not implemented yet; it is ignored",
                            hint,
                        },
                        v,
                        entry.key_span,
                    );
                }
                (Support::Now, _) => {}
            }
        }
    }

    // A misspelt `script` was reported with a suggestion; "no script" would say it twice.
    let misspelt_script = table.entries.iter().any(|e| {
        lookup(&e.key).is_none()
            && env_name(&e.key).is_none()
            && key_suggestion(&e.key).is_some_and(|s| s == "script")
    });
    if !seen.iter().any(|(f, _)| *f == Field::Script) && !misspelt_script {
        cx.push(
            ConfigError::new(format!("app {} has no `script`", cx.label))
                .at(value.span)
                .with_hint("add `script = \"…\"`: the file or the command to run"),
        );
    }
    Some(decl)
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

    #[test]
    fn null_is_absent_and_a_null_script_is_missing() {
        use crate::config::value::{Entry, Span};
        let entry = |key: &str, kind: Kind| Entry {
            key: key.to_string(),
            key_span: Span::UNKNOWN,
            value: Value::new(kind, Span::UNKNOWN),
        };
        let app = Table { entries: vec![entry("name", Kind::Str("w".into())), entry("script", Kind::Null)] };
        let root = Value::new(Kind::Array(vec![Value::new(Kind::Table(app), Span::UNKNOWN)]), Span::UNKNOWN);
        let mut errors = Vec::new();
        let decls = apps(&root, Dialect::Pm2, &mut errors, &mut Vec::new()).apps;
        assert_eq!(decls.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "app `w` has no `script`");
        assert_eq!((errors[0].line, errors[0].column), (None, None));
    }
}
