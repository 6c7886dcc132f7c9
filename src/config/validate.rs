//! The one validator: walks a [`Value`] tree (whatever format it came from) into [`AppDecl`]s,
//! collecting every problem with its position instead of stopping at the first.
//!
//! Keys are herder's snake_case names; each also accepts its camelCase form (`maxRestarts`) and
//! PM2's obvious aliases (`exec_interpreter`, `node_args`).

use std::collections::BTreeMap;

use super::resolve::{AppDecl, Instances, Spanned};
use super::signal::{parse_signal, signal_from_number, signal_names};
use super::units::{self, UnitError};
use super::value::{Kind, Table, Value};
use super::ConfigError;

/// The keys of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Script,
    Args,
    Interpreter,
    InterpreterArgs,
    Cwd,
    Env,
    Namespace,
    Autorestart,
    StopExitCodes,
    MinUptime,
    MaxRestarts,
    RestartDelay,
    ExpBackoffRestartDelay,
    KillSignal,
    KillTimeout,
    Instances,
    Autostart,
}

struct FieldDef {
    field: Field,
    name: &'static str,
    aliases: &'static [&'static str],
}

const fn def(field: Field, name: &'static str, aliases: &'static [&'static str]) -> FieldDef {
    FieldDef { field, name, aliases }
}

const FIELDS: &[FieldDef] = &[
    def(Field::Name, "name", &[]),
    def(Field::Script, "script", &[]),
    def(Field::Args, "args", &[]),
    def(Field::Interpreter, "interpreter", &["exec_interpreter"]),
    def(Field::InterpreterArgs, "interpreter_args", &["node_args"]),
    def(Field::Cwd, "cwd", &[]),
    def(Field::Env, "env", &[]),
    def(Field::Namespace, "namespace", &[]),
    def(Field::Autorestart, "autorestart", &[]),
    def(Field::StopExitCodes, "stop_exit_codes", &[]),
    def(Field::MinUptime, "min_uptime", &[]),
    def(Field::MaxRestarts, "max_restarts", &[]),
    def(Field::RestartDelay, "restart_delay", &[]),
    def(Field::ExpBackoffRestartDelay, "exp_backoff_restart_delay", &[]),
    def(Field::KillSignal, "kill_signal", &[]),
    def(Field::KillTimeout, "kill_timeout", &[]),
    def(Field::Instances, "instances", &[]),
    def(Field::Autostart, "autostart", &[]),
];

/// Top-level keys.
const TOP_LEVEL: &[&str] = &["apps"];

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

fn lookup(key: &str) -> Option<&'static FieldDef> {
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

fn key_suggestion(key: &str) -> Option<String> {
    // Suggest in the style the user writes in.
    let camel = key.chars().any(|c| c.is_ascii_uppercase());
    let names = FIELDS.iter().map(|d| if camel { camel_case(d.name) } else { d.name.to_string() });
    did_you_mean(key, names)
}

/// Every app of a config tree; problems go to `errors`.
pub fn apps(root: &Value, errors: &mut Vec<ConfigError>) -> Vec<AppDecl> {
    let app_values: Vec<&Value> = match &root.kind {
        // JSON/YAML files may be a bare list of apps (PM2 accepts it).
        Kind::Array(items) => items.iter().collect(),
        Kind::Table(table) => top_level(table, errors),
        _ => {
            errors.push(
                ConfigError::new(format!("the config must be a table of apps, found {}", root.type_name()))
                    .at(root.span),
            );
            return Vec::new();
        }
    };
    app_values.into_iter().enumerate().filter_map(|(i, v)| app(v, i + 1, errors)).collect()
}

fn top_level<'a>(table: &'a Table, errors: &mut Vec<ConfigError>) -> Vec<&'a Value> {
    let mut apps = None;
    for entry in &table.entries {
        if entry.key == "apps" {
            apps = Some(&entry.value);
        } else {
            let mut e = ConfigError::new(format!("unknown key `{}`", entry.key)).at(entry.key_span);
            if let Some(s) = did_you_mean(&entry.key, TOP_LEVEL) {
                e = e.with_hint(format!("did you mean `{s}`?"));
            }
            errors.push(e);
        }
    }
    let Some(apps) = apps else {
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
                errors.push(ConfigError::new("`apps` is empty").at(apps.span));
            }
            items.iter().collect()
        }
        // A single app written as `[apps]` (PM2 also accepts a bare object).
        Kind::Table(_) => vec![apps],
        _ => {
            errors.push(
                ConfigError::new(format!("`apps` must be an array of tables, found {}", apps.type_name()))
                    .at(apps.span)
                    .with_hint("declare each app in an `[[apps]]` table"),
            );
            Vec::new()
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

struct AppCx<'a> {
    label: String,
    errors: &'a mut Vec<ConfigError>,
}

impl AppCx<'_> {
    fn push(&mut self, e: ConfigError) {
        self.errors.push(e);
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

    fn u32(&mut self, key: &str, value: &Value) -> Option<u32> {
        match value.kind {
            Kind::Int(i) => match u32::try_from(i) {
                Ok(n) => Some(n),
                Err(_) => {
                    let msg = format!(
                        "`{key}` in app {} must be between 0 and {}, found {i}",
                        self.label,
                        u32::MAX
                    );
                    self.push(ConfigError::new(msg).at(value.span));
                    None
                }
            },
            _ => {
                self.type_error(key, value, "a non-negative integer");
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

    fn env(&mut self, key: &str, value: &Value) -> Option<BTreeMap<String, String>> {
        let Kind::Table(table) = &value.kind else {
            self.type_error(key, value, "a table of variables");
            return None;
        };
        let mut env = BTreeMap::new();
        for entry in &table.entries {
            let name = &entry.key;
            if name.is_empty() || name.contains(['=', '\0']) {
                let msg = format!("`{key}` in app {}: `{name}` is not a valid variable name", self.label);
                self.push(ConfigError::new(msg).at(entry.key_span));
                continue;
            }
            let text = match &entry.value.kind {
                Kind::Str(s) => s.clone(),
                Kind::Int(i) => i.to_string(),
                Kind::Float(x) => x.to_string(),
                Kind::Bool(b) => b.to_string(),
                Kind::Null => continue,
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
        match value.kind {
            Kind::Int(i @ 0..=255) => Some(i as i32),
            Kind::Int(i) => {
                let msg = format!("`{key}` in app {}: exit code `{i}` is out of range", self.label);
                self.push(ConfigError::new(msg).at(value.span).with_hint("exit codes are 0 to 255"));
                None
            }
            _ => {
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
            Kind::Str(s) => (parse_signal(s), s.clone()),
            Kind::Int(i) => (signal_from_number(*i), i.to_string()),
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
        match &value.kind {
            Kind::Int(i) => Instances::from_int(*i).or_else(|| {
                let msg = format!("`{key}` in app {}: `{i}` instances is out of range", self.label);
                self.push(ConfigError::new(msg).at(value.span));
                None
            }),
            Kind::Str(s) if s.trim() == "max" => Some(Instances::Max),
            _ => {
                let expected = "a number of instances or \"max\"";
                self.type_error(key, value, expected);
                None
            }
        }
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

fn app(value: &Value, index: usize, errors: &mut Vec<ConfigError>) -> Option<AppDecl> {
    let Kind::Table(table) = &value.kind else {
        errors.push(
            ConfigError::new(format!("app #{index} must be a table, found {}", value.type_name()))
                .at(value.span),
        );
        return None;
    };
    let mut cx = AppCx { label: label(table, index), errors };
    let mut decl = AppDecl { span: value.span, label: cx.label.clone(), ..AppDecl::default() };
    let mut seen: Vec<(Field, &str)> = Vec::new();

    for entry in &table.entries {
        let key = entry.key.as_str();
        let Some(def) = lookup(key) else {
            let mut e =
                ConfigError::new(format!("unknown key `{key}` in app {}", cx.label)).at(entry.key_span);
            if let Some(s) = key_suggestion(key) {
                e = e.with_hint(format!("did you mean `{s}`?"));
            }
            cx.push(e);
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(f, _)| *f == def.field) {
            let msg =
                format!("`{key}` in app {} sets `{}` again (already set by `{first}`)", cx.label, def.name);
            cx.push(ConfigError::new(msg).at(entry.key_span).with_hint("keep only one of them"));
            continue;
        }
        let v = &entry.value;
        // `null` (JSON, YAML) is as if the key were absent.
        if matches!(v.kind, Kind::Null) {
            continue;
        }
        seen.push((def.field, key));
        let spanned = |value: String| Spanned { value, span: v.span };
        match def.field {
            Field::Name => decl.name = cx.non_empty_string(key, v).map(spanned),
            Field::Script => decl.script = cx.non_empty_string(key, v).map(spanned),
            Field::Args => decl.args = cx.words(key, v).unwrap_or_default(),
            Field::Interpreter => decl.interpreter = cx.non_empty_string(key, v),
            Field::InterpreterArgs => decl.interpreter_args = cx.words(key, v).unwrap_or_default(),
            Field::Cwd => decl.cwd = cx.non_empty_string(key, v).map(spanned),
            Field::Env => decl.env = cx.env(key, v).unwrap_or_default(),
            Field::Namespace => decl.namespace = cx.non_empty_string(key, v).map(spanned),
            Field::Autorestart => decl.autorestart = cx.bool(key, v),
            Field::StopExitCodes => decl.stop_exit_codes = cx.exit_codes(key, v),
            Field::MinUptime => decl.min_uptime_ms = cx.duration(key, v),
            Field::MaxRestarts => decl.max_restarts = cx.u32(key, v),
            Field::RestartDelay => decl.restart_delay_ms = cx.duration(key, v),
            Field::ExpBackoffRestartDelay => decl.exp_backoff_restart_delay_ms = cx.duration(key, v),
            Field::KillSignal => decl.kill_signal = cx.signal(key, v),
            Field::KillTimeout => decl.kill_timeout_ms = cx.duration(key, v),
            Field::Instances => decl.instances = cx.instances(key, v),
            Field::Autostart => decl.autostart = cx.bool(key, v),
        }
    }

    if !seen.iter().any(|(f, _)| *f == Field::Script) {
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
        let decls = apps(&root, &mut errors);
        assert_eq!(decls.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "app `w` has no `script`");
        assert_eq!((errors[0].line, errors[0].column), (None, None));
    }
}
