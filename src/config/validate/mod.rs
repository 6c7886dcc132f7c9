//! The one validator: walks a [`Value`] tree (whatever format it came from) into [`AppDecl`]s,
//! collecting every problem with its position instead of stopping at the first.
//!
//! Keys are herder's snake_case names, which are PM2's; each also accepts its camelCase form
//! (`maxRestarts`) and PM2's aliases (`exec_interpreter`, `node_args`, `out`, `cron`…). Every PM2
//! option is known. No key herder names is silently ignored: those whose behaviour comes
//! later are validated now and are errors in herder.toml, warnings in PM2 files (which are
//! shared with PM2); PM2 options that mean nothing in herder (APM, source maps, vizion) are
//! warnings.
//!
//! The table of keys and the suggestions live in [`super::keys`]; here is the walk over a file
//! and its apps, with the typed reader of values in `reader` and the checks of particular keys
//! and sections (`hooks`, `health`…) in `checks`.

mod balancer;
mod checks;
mod reader;

use std::collections::BTreeMap;

use super::decl::{AppDecl, NamedEnv, Spanned};
use super::keys::{env_name, key_suggestion, lookup, unknown_key, Field, Support, TOP_LEVEL};
use super::value::{Kind, Table, Value};
use super::ConfigError;
pub use reader::Dialect;
use reader::{summarize, AppCx, Cx, Later};

/// What the validator found in a whole file.
#[derive(Debug, Default)]
pub struct Validated {
    pub apps: Vec<AppDecl>,
    /// `deploy.<env>.env` of PM2 files, applied under the app's `env` with `--env <env>`.
    pub deploy_env: BTreeMap<String, BTreeMap<String, String>>,
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
            Field::Port => {
                if let Some(ports) = cx.ports(key, v) {
                    decl.port = ports.first().map(|p| p.port);
                    decl.ports = ports;
                }
            }
            Field::Namespace => decl.namespace = cx.non_empty_string(key, v).map(spanned),
            Field::Instances => decl.instances = cx.instances(key, v),
            Field::ExecMode => decl.cluster = cx.exec_mode(key, v),
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
            Field::Image => decl.image = cx.non_empty_string(key, v),
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
            Field::Balancer => decl.balancer = cx.balancer(key, v),
            Field::Ignored => {}
        }
        // An invalid value is an error; a warning that it is ignored would only be noise.
        if cx.cx.errors.len() == errors_before {
            match (support, def.field) {
                (Support::Ignored(_), _) => cx.ignore(def, entry.key_span),
                (Support::Now, _) => {}
            }
        }
    }

    // An `instances` that is wrong was reported; its count is unknown.
    let bad_instances = decl.instances.is_none() && seen.iter().any(|(f, _)| *f == Field::Instances);
    if let (Some(b), false) = (&decl.balancer, bad_instances) {
        cx.balancer_instances(b, decl.instances);
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
