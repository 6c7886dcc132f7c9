//! `herder start <script|"command"> [flags]`: the flags into an [`AppDecl`], parsed with the
//! same unit parsers as files; each error names its flag.

use super::decl::{AppDecl, FilterEnv, Instances, Spanned};
use super::keys::signal_hint;
use super::resolve::lexical_default_name;
use super::units::{self, UnitError};
use super::{ConfigError, Overrides};
use crate::protocol::signal::canonical_name;

/// The declaration for `script` with `ov` applied; problems go to `errors`.
pub fn decl(script: &str, ov: &Overrides, errors: &mut Vec<ConfigError>) -> AppDecl {
    let label = match ov.name.as_deref().or(lexical_default_name(script).as_deref()) {
        Some(name) => format!("`{name}`"),
        None => format!("`{script}`"),
    };
    let mut decl = AppDecl {
        label,
        name: ov.name.clone().map(Spanned::unknown),
        script: Some(Spanned::unknown(script.to_string())),
        args: ov.args.clone(),
        interpreter: ov.interpreter.clone(),
        cwd: ov.cwd.clone().map(Spanned::unknown),
        namespace: ov.namespace.clone().map(Spanned::unknown),
        ..AppDecl::default()
    };
    if script.trim().is_empty() {
        errors.push(ConfigError::new("the script to start is empty").with_hint("name a file or a command"));
        decl.script = None;
    }
    if ov.interpreter.as_deref().is_some_and(|i| i.trim().is_empty()) {
        errors.push(ConfigError::new("`--interpreter` is empty"));
        decl.interpreter = None;
    }
    if ov.cwd.as_deref().is_some_and(|c| c.trim().is_empty()) {
        errors.push(ConfigError::new("`--cwd` is empty"));
        decl.cwd = None;
    }

    let mut duration = |flag: &str, value: &Option<String>| {
        let value = value.as_deref()?;
        units::parse_duration(value).map_err(|e| errors.push(unit_error(flag, e))).ok()
    };
    decl.restart_delay_ms = duration("--restart-delay", &ov.restart_delay);
    decl.exp_backoff_restart_delay_ms =
        duration("--exp-backoff-restart-delay", &ov.exp_backoff_restart_delay);
    decl.min_uptime_ms = duration("--min-uptime", &ov.min_uptime);
    decl.kill_timeout_ms = duration("--kill-timeout", &ov.kill_timeout);
    decl.listen_timeout_ms = duration("--listen-timeout", &ov.listen_timeout);
    if ov.wait_ready {
        decl.wait_ready = Some(true);
    }
    // PM2 reads a bare `--watch-delay 2` as seconds, herder's durations as ms: ask for a unit.
    if let Some(bare) = ov.watch_delay.as_deref().filter(|v| v.trim().parse::<f64>().is_ok()) {
        errors.push(ConfigError::new(format!("`--watch-delay {bare}`: give a unit")).with_hint(format!(
            "`--watch-delay {bare}s` or `--watch-delay {bare}ms` (PM2 reads a bare number as seconds)"
        )));
    } else {
        decl.watch_delay_ms = duration("--watch-delay", &ov.watch_delay);
    }
    if ov.shutdown_with_message {
        decl.shutdown_with_message = Some(true);
    }
    if let Some(paths) = &ov.watch {
        if paths.iter().any(|p| p.trim().is_empty()) {
            errors.push(
                ConfigError::new("`--watch`: a path is empty").with_hint("`--watch` or `--watch=src,lib`"),
            );
        } else {
            decl.watch = paths.clone();
        }
    }
    for p in &ov.ignore_watch {
        match crate::health::watch::Ignore::check(p) {
            Ok(()) => decl.ignore_watch.push(p.clone()),
            Err(e) => {
                errors.push(ConfigError::new(format!("`--ignore-watch`: `{p}` is not a valid pattern: {e}")))
            }
        }
    }

    if let Some(value) = &ov.max_restarts {
        match value.trim().parse::<u32>() {
            Ok(n) => decl.max_restarts = Some(n),
            Err(_) => errors.push(
                ConfigError::new(format!("`--max-restarts`: `{value}` is not a non-negative integer"))
                    .with_hint("e.g. `--max-restarts 10`"),
            ),
        }
    }
    if let Some(value) = &ov.kill_signal {
        match canonical_name(value) {
            Some(signal) => decl.kill_signal = Some(signal.to_string()),
            None => errors.push(
                ConfigError::new(format!("`--kill-signal`: unknown signal `{value}`"))
                    .with_hint(signal_hint(value)),
            ),
        }
    }
    if let Some(values) = &ov.stop_exit_codes {
        decl.stop_exit_codes = exit_codes(values, errors);
    }
    if ov.no_autorestart {
        decl.autorestart = Some(false);
    }
    // `--user`, `--group`: the accounts are looked up when the app is resolved.
    for (flag, value, slot) in [("--user", &ov.user, &mut decl.user), ("--group", &ov.group, &mut decl.group)]
    {
        match value.as_deref().map(str::trim) {
            Some("") => errors.push(ConfigError::new(format!("`{flag}` is empty"))),
            Some(v) => *slot = Some(Spanned::unknown(v.to_string())),
            None => {}
        }
    }
    match ov.pid_file.as_deref().map(str::trim) {
        Some("") => errors.push(ConfigError::new("`--pid` is empty")),
        Some(path) => decl.pid_file = Some(Spanned::unknown(path.to_string())),
        None => {}
    }
    if let Some(value) = &ov.instances {
        let parsed = match value.trim() {
            "max" => Some(Instances::Max),
            n => n.parse::<i64>().ok().and_then(Instances::from_int),
        };
        match parsed {
            Some(i) => decl.instances = Some(i),
            None => errors.push(
                ConfigError::new(format!("`--instances`: invalid number of instances `{value}`"))
                    .with_hint("use a number, `max` (one per CPU), or `-N` (all CPUs but N)"),
            ),
        }
    }
    if let Some(value) = &ov.max_memory_restart {
        match units::parse_size(value) {
            Ok(0) => {}
            Ok(bytes) => decl.max_memory_restart = Some(bytes),
            Err(e) => errors.push(unit_error("--max-memory-restart", e)),
        }
    }
    if let Some(expr) = ov.cron_restart.as_deref().map(str::trim).filter(|e| *e != "0") {
        match crate::health::cron::Schedule::parse(expr, Some("UTC")) {
            Ok(_) => decl.cron_restart = Some(expr.to_string()),
            Err(e) => errors.push(ConfigError::new(format!("`--cron-restart`: {e}")).with_hint(
                "5 fields (minute hour day month weekday), or 6 with seconds first: `--cron \"0 3 * * *\"`",
            )),
        }
    }
    if let Some(words) = &ov.interpreter_args {
        match shell_words::split(words) {
            Ok(w) => decl.interpreter_args = w,
            Err(e) => errors.push(ConfigError::new(format!("`--interpreter-args`: {e}"))),
        }
    }
    if let Some(name) = &ov.instance_var {
        if name.is_empty() || name.contains(['=', '\0']) {
            errors.push(ConfigError::new(format!("`--instance-var`: `{name}` is not a valid variable name")));
        } else {
            decl.instance_var = Some(name.clone());
        }
    }
    match ov.filter_env.as_deref() {
        None => {}
        Some([]) => decl.filter_env = FilterEnv::All,
        Some(names) => decl.filter_env = FilterEnv::Containing(names.to_vec()),
    }
    for pair in &ov.env {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') => {
                decl.env.insert(k.to_string(), v.to_string());
            }
            _ => errors.push(
                ConfigError::new(format!("`--env {pair}`: a script takes variables as `--env KEY=VALUE`"))
                    .with_hint(format!(
                        "named environments (`env_{pair}`) belong to config files: `herder start ecosystem.config.js --env {pair}`; for this script perhaps `--env NODE_ENV={pair}`"
                    )),
            ),
        }
    }
    if let Some(value) = &ov.port {
        match value.trim().parse::<u16>() {
            Ok(port) if port > 0 => {
                decl.port = Some(port);
                decl.ports =
                    vec![crate::protocol::spec::SocketSpec { name: port.to_string(), host: None, port }];
            }
            _ => errors.push(ConfigError::new(format!("`--port`: `{value}` is not a port (1 to 65535)"))),
        }
    }
    if ov.no_autostart {
        decl.autostart = Some(false);
    }
    let logs = &mut decl.logs;
    logs.out_file = ov.out_file.clone().map(Into::into);
    logs.error_file = ov.error_file.clone().map(Into::into);
    match ov.log_file.as_deref() {
        Some("") => logs.log_file_default = true,
        Some(path) => logs.log_file = Some(path.into()),
        None => {}
    }
    logs.merge_logs = ov.merge_logs;
    logs.time = ov.time;
    logs.disable = ov.disable_logs;
    if let Some(format) = &ov.log_date_format {
        match crate::logs::format::TimeFormat::parse(format) {
            Ok(_) => logs.date_format = Some(format.clone()),
            Err(e) => errors.push(ConfigError::new(format!("`--log-date-format`: {e}"))),
        }
    }
    match ov.log_type.as_deref() {
        None | Some("raw") => {}
        Some("json") => logs.json = true,
        Some(other) => errors.push(
            ConfigError::new(format!("`--log-type`: unknown log type `{other}`"))
                .with_hint("use `json` or `raw`"),
        ),
    }
    decl
}

fn unit_error(flag: &str, e: UnitError) -> ConfigError {
    let hint = e.hint();
    ConfigError::new(format!("`{flag}`: {e}")).with_hint(hint)
}

/// `--stop-exit-codes 0 2` or `--stop-exit-codes 0,2`.
fn exit_codes(values: &[String], errors: &mut Vec<ConfigError>) -> Option<Vec<i32>> {
    let mut codes = Vec::new();
    let mut ok = true;
    for word in values.iter().flat_map(|v| v.split([',', ' '])).filter(|w| !w.is_empty()) {
        match word.parse::<i32>() {
            Ok(code @ 0..=255) => codes.push(code),
            _ => {
                ok = false;
                errors.push(
                    ConfigError::new(format!("`--stop-exit-codes`: invalid exit code `{word}`"))
                        .with_hint("exit codes are 0 to 255"),
                );
            }
        }
    }
    ok.then_some(codes)
}
