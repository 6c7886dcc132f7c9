//! The typed reader of values under the validator: the per-file and per-app context that
//! collects errors and ignored keys, and the conversions every key uses (strings, booleans,
//! integers, ports, durations, sizes, words, env tables, exit codes, signals), each reporting a
//! wrong kind or value at its span. The warnings about ignored keys are summed up here too.

use crate::protocol::spec::SocketSpec;
use std::collections::BTreeMap;

use crate::config::keys::{signal_hint, FieldDef, Support};
use crate::config::units::{self, UnitError};
use crate::config::value::{to_json, Kind, Span, Value};
use crate::config::ConfigError;
use crate::protocol::signal::{canonical_name, name_of};

/// What `port` and a balancer's `listen` take, for their type errors.
const PORT_FORMS: &str =
    "a port number, an address such as \"127.0.0.1:3000\", a list of them or a table of named ones";

/// The forms of an address and port.
const ADDRESS_HINT: &str = "an IP address and a port, such as \"127.0.0.1:3000\", \"0.0.0.0:3000\" or \"[::1]:3000\"; or the port alone for every address";

/// Which rules a file follows: herder's own format, or PM2's (every format but TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Herder,
    Pm2,
}

/// One key that herder accepts but ignores, where it is set.
pub(super) struct Ignore {
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
pub(super) struct Later {
    /// The key's canonical name, for the warning.
    pub(super) key: &'static str,
    /// The key (and value) as written, for the error: "`exec_mode = \"cluster\"`".
    pub(super) written: String,
    /// The rest of herder.toml's error: "is not implemented yet".
    pub(super) error: &'static str,
    /// The rest of a PM2 file's warning: "is not implemented yet; it is ignored".
    pub(super) warning: &'static str,
    pub(super) hint: &'static str,
}

pub(super) fn summarize(ignores: Vec<Ignore>) -> Vec<ConfigError> {
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

/// The state shared by every app of a file.
pub(super) struct Cx<'a> {
    pub(super) dialect: Dialect,
    pub(super) errors: &'a mut Vec<ConfigError>,
    pub(super) ignores: &'a mut Vec<Ignore>,
}

pub(super) struct AppCx<'a, 'b> {
    pub(super) label: String,
    pub(super) cx: &'a mut Cx<'b>,
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
    pub(super) fn push(&mut self, e: ConfigError) {
        self.cx.errors.push(e);
    }

    pub(super) fn pm2(&self) -> bool {
        self.cx.dialect == Dialect::Pm2
    }

    /// A PM2 option with no meaning in herder: a warning, in every format.
    pub(super) fn ignore(&mut self, def: &FieldDef, span: Span) {
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
    pub(super) fn not_yet(&mut self, later: Later, value: &Value, span: Span) -> bool {
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

    pub(super) fn type_error(&mut self, key: &str, value: &Value, expected: &str) {
        let msg = format!("`{key}` in app {} must be {expected}, found {}", self.label, value.type_name());
        self.push(ConfigError::new(msg).at(value.span));
    }

    fn unit_error(&mut self, key: &str, value: &Value, e: UnitError) {
        let hint = e.hint();
        self.push(
            ConfigError::new(format!("`{key}` in app {}: {e}", self.label)).at(value.span).with_hint(hint),
        );
    }

    pub(super) fn string(&mut self, key: &str, value: &Value) -> Option<String> {
        match &value.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.type_error(key, value, "a string");
                None
            }
        }
    }

    pub(super) fn non_empty_string(&mut self, key: &str, value: &Value) -> Option<String> {
        let s = self.string(key, value)?;
        if s.trim().is_empty() {
            self.push(ConfigError::new(format!("`{key}` in app {} is empty", self.label)).at(value.span));
            return None;
        }
        Some(s)
    }

    pub(super) fn bool(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.type_error(key, value, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    /// An integer; PM2 files may write it as a string of digits (PM2 parses numbers).
    pub(super) fn int(&mut self, value: &Value) -> Option<i64> {
        match &value.kind {
            Kind::Int(i) => Some(*i),
            Kind::Str(s) if self.pm2() => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(super) fn u32(&mut self, key: &str, value: &Value) -> Option<u32> {
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

    /// `port`: a port (`3000`, `"3000"`), an address (`"127.0.0.1:3000"`, `"[::1]:3000"`), a
    /// list of them, or a table of named ones (`{ http = 3000, admin = "127.0.0.1:9090" }`).
    pub(super) fn ports(&mut self, key: &str, value: &Value) -> Option<Vec<SocketSpec>> {
        let mut out = Vec::new();
        match &value.kind {
            Kind::Array(items) => {
                for item in items {
                    out.push(self.one_port(key, item, None)?);
                }
            }
            Kind::Table(t) => {
                for e in &t.entries {
                    out.push(self.one_port(key, &e.value, Some(e.key.clone()))?);
                }
            }
            _ => out.push(self.one_port(key, value, None)?),
        }
        let mut seen = std::collections::HashSet::new();
        for p in &out {
            if !seen.insert((p.host.clone(), p.port)) {
                let msg = format!("`{key}` in app {}: port {} is given twice", self.label, p.address());
                self.push(ConfigError::new(msg).at(value.span));
                return None;
            }
        }
        Some(out)
    }

    /// A port number, or an IP address and a port (`"127.0.0.1:3000"`, `"[::1]:3000"`): the
    /// address is bound as written, so a host name or a malformed address is an error here
    /// rather than a failed lookup when the socket is bound.
    fn one_port(&mut self, key: &str, value: &Value, name: Option<String>) -> Option<SocketSpec> {
        let (host, number) = match &value.kind {
            Kind::Int(i) => (None, *i),
            Kind::Str(s) => {
                let s = s.trim();
                if let Ok(i) = s.parse::<i64>() {
                    (None, i)
                } else if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
                    (Some(addr.ip().to_string()), i64::from(addr.port()))
                } else {
                    self.bad_address(key, value, s);
                    return None;
                }
            }
            _ => {
                self.type_error(key, value, PORT_FORMS);
                return None;
            }
        };
        match u16::try_from(number) {
            Ok(port) if port > 0 => {
                Some(SocketSpec { name: name.unwrap_or_else(|| port.to_string()), host, port })
            }
            _ => {
                self.port_out_of_range(key, value, number);
                None
            }
        }
    }

    fn port_out_of_range(&mut self, key: &str, value: &Value, number: i64) {
        let msg = format!("`{key}` in app {}: port `{number}` is out of range", self.label);
        self.push(ConfigError::new(msg).at(value.span).with_hint("ports are 1 to 65535"));
    }

    /// Why `s` is neither a port nor an IP address and port, in the user's words.
    fn bad_address(&mut self, key: &str, value: &Value, s: &str) {
        let Some((host, port)) = s.rsplit_once(':') else {
            self.type_error(key, value, PORT_FORMS);
            return;
        };
        let port = port.trim();
        let Ok(number) = port.parse::<i64>() else {
            let msg = format!("`{key}` in app {}: `{s}` does not end with a port number", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint(ADDRESS_HINT));
            return;
        };
        if u16::try_from(number).map_or(true, |p| p == 0) {
            self.port_out_of_range(key, value, number);
            return;
        }
        let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
        let (msg, hint) = if bare.is_empty() {
            (format!("`{s}` has no address before the port"), format!("write {port} for every address"))
        } else if !host.starts_with('[') && bare.parse::<std::net::Ipv6Addr>().is_ok() {
            (format!("the IPv6 address in `{s}` needs brackets"), format!("write \"[{bare}]:{port}\""))
        } else if !bare.contains(':') && bare.chars().any(|c| c.is_ascii_alphabetic()) {
            (
                format!("`{bare}` is a host name; herder listens on an IP address, not a name"),
                format!(
                    "write \"127.0.0.1:{port}\" for this machine only, \"0.0.0.0:{port}\" or {port} for every address"
                ),
            )
        } else {
            (format!("`{bare}` is not an IP address"), ADDRESS_HINT.to_string())
        };
        let msg = format!("`{key}` in app {}: {msg}", self.label);
        self.push(ConfigError::new(msg).at(value.span).with_hint(hint));
    }

    pub(super) fn duration(&mut self, key: &str, value: &Value) -> Option<u64> {
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

    pub(super) fn size(&mut self, key: &str, value: &Value) -> Option<u64> {
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
    pub(super) fn words(&mut self, key: &str, value: &Value) -> Option<Vec<String>> {
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
    pub(super) fn strings(&mut self, key: &str, value: &Value) -> Option<Vec<String>> {
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

    pub(super) fn var_name(&mut self, key: &str, value: &Value) -> Option<String> {
        let name = self.non_empty_string(key, value)?;
        if name.contains(['=', '\0']) {
            let msg = format!("`{key}` in app {}: `{name}` is not a valid variable name", self.label);
            self.push(ConfigError::new(msg).at(value.span));
            return None;
        }
        Some(name)
    }

    pub(super) fn env(&mut self, key: &str, value: &Value) -> Option<BTreeMap<String, String>> {
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

    pub(super) fn exit_code(&mut self, key: &str, value: &Value) -> Option<i32> {
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

    pub(super) fn exit_codes(&mut self, key: &str, value: &Value) -> Option<Vec<i32>> {
        match &value.kind {
            Kind::Array(items) => {
                let codes: Vec<Option<i32>> = items.iter().map(|v| self.exit_code(key, v)).collect();
                codes.into_iter().collect()
            }
            _ => self.exit_code(key, value).map(|c| vec![c]),
        }
    }

    pub(super) fn signal(&mut self, key: &str, value: &Value) -> Option<String> {
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
}
