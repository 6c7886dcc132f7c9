//! The checks of particular keys, on top of the typed reader: `instances`, `exec_mode`,
//! `filter_env`, `cron_restart`, the CPU and memory limits, `user`/`group`, the log rate,
//! `watch`/`ignore_watch`, and the `hooks` and `health` sections with their own keys.

use super::reader::AppCx;
use crate::config::decl::{FilterEnv, Instances};
use crate::config::keys::{did_you_mean, unknown_key};
use crate::config::units;
use crate::config::value::{Kind, Value};
use crate::config::ConfigError;
use crate::protocol::spec::{HookAction, HookSpec, ProbeCheck, ProbeKind, ProbeSpec};

impl AppCx<'_, '_> {
    pub(super) fn instances(&mut self, key: &str, value: &Value) -> Option<Instances> {
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

    pub(super) fn exec_mode(&mut self, key: &str, value: &Value) -> Option<bool> {
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

    pub(super) fn filter_env(&mut self, key: &str, value: &Value) -> Option<FilterEnv> {
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
    pub(super) fn cron(&mut self, key: &str, value: &Value) -> Option<String> {
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
    pub(super) fn cpu_limit(&mut self, key: &str, value: &Value) -> Option<u32> {
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
    pub(super) fn memory_limit(&mut self, key: &str, value: &Value) -> Option<u64> {
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
    pub(super) fn account(&mut self, key: &str, value: &Value) -> Option<String> {
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
    pub(super) fn log_rate_limit(&mut self, key: &str, value: &Value) -> Option<(u64, u64)> {
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
    pub(super) fn hooks(&mut self, key: &str, value: &Value) -> Vec<HookSpec> {
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
    pub(super) fn probes(&mut self, key: &str, value: &Value) -> Vec<ProbeSpec> {
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
                        let port = |p: &str| p.parse::<u16>().is_ok() || p == crate::health::probe::PORT_VAR;
                        if addr.rsplit_once(':').is_some_and(|(_, p)| port(p)) {
                            checks.push(ProbeCheck::Tcp(addr));
                        } else {
                            let msg = format!("`{k}` in app {}: `{addr}` is not host:port", self.label);
                            self.push(ConfigError::new(msg).at(v.span).with_hint("e.g. \"127.0.0.1:5432\", or \"127.0.0.1:$PORT\" for each instance's own port"));
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

    /// `watch = ["src", "app.js"]`: non-empty paths.
    pub(super) fn watch_paths(&mut self, key: &str, value: &Value) -> Vec<String> {
        let paths = self.strings(key, value).unwrap_or_default();
        if paths.iter().any(|p| p.trim().is_empty()) {
            let msg = format!("`{key}` in app {}: a path is empty", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint("use `true` to watch the app's `cwd`"));
            return Vec::new();
        }
        paths
    }

    /// `ignore_watch`: names or globs, each of which must compile.
    pub(super) fn ignore_patterns(&mut self, key: &str, value: &Value) -> Vec<String> {
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
}
