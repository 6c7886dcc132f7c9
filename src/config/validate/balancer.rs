//! `[apps.balancer]`: the public address, the mode, how an instance is picked, when one is
//! taken out, the timeouts and TLS.

use super::reader::AppCx;
use crate::config::decl::{BalancerDecl, Instances};
use crate::config::keys::unknown_key;
use crate::config::value::{Kind, Value};
use crate::config::ConfigError;
use crate::protocol::spec::{BalancerMode, BalancerSpec, SocketSpec, Strategy, TlsSpec};

const KEYS: &[&str] = &[
    "listen",
    "mode",
    "strategy",
    "header",
    "cookie",
    "weights",
    "backup",
    "max_fails",
    "fail_timeout",
    "connect_timeout",
    "first_byte_timeout",
    "idle_timeout",
    "stream_idle_timeout",
    "drain_timeout",
    "trust_forwarded",
    "access_log",
    "unix_hop",
    "tls",
];

const STRATEGIES: &[&str] = &["round_robin", "least_conn", "ip_hash", "header", "cookie"];

impl AppCx<'_, '_> {
    pub(super) fn balancer(&mut self, key: &str, value: &Value) -> Option<BalancerDecl> {
        let Kind::Table(table) = &value.kind else {
            self.type_error(key, value, "a table");
            return None;
        };
        let errors_before = self.cx.errors.len();
        let placeholder = SocketSpec { name: String::new(), host: None, port: 0 };
        let mut spec = BalancerSpec::new(placeholder);
        let mut listen = None;
        let mut mode = None;
        let mut strategy: Option<(String, &Value)> = None;
        let (mut header, mut cookie) = (None, None);
        let (mut weights_span, mut backup_span) = (value.span, value.span);
        // Keys that mean nothing in `socket` mode, for an error there.
        let mut proxy_keys = Vec::new();
        for e in &table.entries {
            let k = format!("{key}.{}", e.key);
            let v = &e.value;
            if e.key != "listen" && e.key != "mode" {
                proxy_keys.push((e.key.clone(), e.key_span));
            }
            match e.key.as_str() {
                "listen" => {
                    if let Some(mut ports) = self.ports(&k, v) {
                        if ports.len() == 1 {
                            listen = ports.pop();
                        } else {
                            let msg =
                                format!("`{k}` in app {}: the balancer listens on one address", self.label);
                            self.push(
                                ConfigError::new(msg).at(v.span).with_hint("e.g. 8080 or \"0.0.0.0:8080\""),
                            );
                        }
                    }
                }
                "mode" => match self.string(&k, v).as_deref() {
                    Some("http") => mode = Some(Some(BalancerMode::Http)),
                    Some("tcp") => mode = Some(Some(BalancerMode::Tcp)),
                    Some("socket") => mode = Some(None),
                    Some(other) => {
                        let msg = format!("`{k}` in app {}: unknown mode `{other}`", self.label);
                        self.push(
                            ConfigError::new(msg).at(v.span).with_hint("use \"http\", \"tcp\" or \"socket\""),
                        );
                    }
                    None => {}
                },
                "strategy" => {
                    if let Some(s) = self.string(&k, v) {
                        if STRATEGIES.contains(&s.as_str()) {
                            strategy = Some((s, v));
                        } else {
                            let msg = format!("`{k}` in app {}: unknown strategy `{s}`", self.label);
                            self.push(unknown_key(msg, v.span, &s, STRATEGIES));
                        }
                    }
                }
                "header" => header = self.name_of(&k, v, "a header name such as \"X-User-Id\""),
                "cookie" => cookie = self.name_of(&k, v, "a cookie name such as \"session\""),
                "weights" => {
                    if let Some(weights) = self.numbers(&k, v) {
                        if weights.contains(&0) {
                            let msg = format!("`{k}` in app {}: a weight of 0", self.label);
                            self.push(
                                ConfigError::new(msg).at(v.span).with_hint(
                                    "weights are 1 or more; `backup` keeps an instance in reserve",
                                ),
                            );
                        }
                        spec.weights = weights;
                    }
                    weights_span = v.span;
                }
                "backup" => {
                    spec.backup = self.numbers(&k, v).unwrap_or_default();
                    backup_span = v.span;
                }
                "max_fails" => spec.max_fails = self.u32(&k, v).unwrap_or(spec.max_fails),
                "fail_timeout" => spec.fail_timeout_ms = self.positive(&k, v).unwrap_or(spec.fail_timeout_ms),
                "connect_timeout" => {
                    spec.connect_timeout_ms = self.positive(&k, v).unwrap_or(spec.connect_timeout_ms)
                }
                "first_byte_timeout" => {
                    spec.first_byte_timeout_ms = self.positive(&k, v).unwrap_or(spec.first_byte_timeout_ms)
                }
                "idle_timeout" => spec.idle_timeout_ms = self.positive(&k, v).unwrap_or(spec.idle_timeout_ms),
                "stream_idle_timeout" => {
                    spec.stream_idle_timeout_ms = self.positive(&k, v).unwrap_or(spec.stream_idle_timeout_ms)
                }
                "drain_timeout" => {
                    spec.drain_timeout_ms = self.duration(&k, v).unwrap_or(spec.drain_timeout_ms)
                }
                "trust_forwarded" => spec.trust_forwarded = self.bool(&k, v).unwrap_or(false),
                "access_log" => spec.access_log = self.bool(&k, v).unwrap_or(false),
                "unix_hop" => spec.unix_hop = self.bool(&k, v).unwrap_or(true),
                "tls" => spec.tls = self.tls(&k, v),
                other => {
                    let msg = format!("unknown key `{other}` in `{key}` of app {}", self.label);
                    self.push(unknown_key(msg, e.key_span, other, KEYS));
                }
            }
        }
        let mode = mode.unwrap_or(Some(BalancerMode::Http));
        match mode {
            None => {
                if let Some((name, span)) = proxy_keys.first() {
                    let msg = format!(
                        "`{key}.{name}` in app {}: `mode = \"socket\"` shares one socket and balances nothing",
                        self.label
                    );
                    self.push(
                        ConfigError::new(msg)
                            .at(*span)
                            .with_hint("use mode = \"http\" or \"tcp\", or remove the key"),
                    );
                }
            }
            Some(m) => spec.mode = m,
        }
        if let Some((s, v)) = strategy {
            spec.strategy = match s.as_str() {
                "least_conn" => Strategy::LeastConn,
                "ip_hash" => Strategy::IpHash,
                "header" => match header.take() {
                    Some(h) => Strategy::Header(h),
                    None => {
                        self.missing(key, v, "strategy = \"header\" needs `header`, the header to hash");
                        Strategy::RoundRobin
                    }
                },
                "cookie" => match cookie.take() {
                    Some(c) => Strategy::Cookie(c),
                    None => {
                        self.missing(key, v, "strategy = \"cookie\" needs `cookie`, the cookie to hash");
                        Strategy::RoundRobin
                    }
                },
                _ => Strategy::RoundRobin,
            };
            if spec.mode == BalancerMode::Tcp
                && !matches!(spec.strategy, Strategy::RoundRobin | Strategy::LeastConn)
            {
                let msg = format!(
                    "`{key}.strategy` in app {}: `{s}` needs HTTP; a tcp balancer picks by `round_robin` or `least_conn`",
                    self.label
                );
                self.push(ConfigError::new(msg).at(v.span));
            }
        }
        for (given, what) in [(header.is_some(), "header"), (cookie.is_some(), "cookie")] {
            if given {
                let msg =
                    format!("`{key}.{what}` in app {} is used only with strategy = \"{what}\"", self.label);
                self.push(
                    ConfigError::new(msg).at(value.span).with_hint(format!("add strategy = \"{what}\"")),
                );
            }
        }
        if spec.mode == BalancerMode::Tcp && spec.tls.is_some() {
            let msg = format!("`{key}.tls` in app {}: TLS is terminated in http mode only", self.label);
            self.push(ConfigError::new(msg).at(value.span));
        }
        if self.cx.errors.len() != errors_before {
            return None;
        }
        Some(BalancerDecl {
            listen,
            socket_mode: mode.is_none(),
            spec,
            span: value.span,
            weights_span,
            backup_span,
        })
    }

    /// `weights` and `backup` against the file's `instances`: both list instances by index, so
    /// a weight for an instance that does not exist, a backup that is none, or no instance
    /// left to take requests first is a mistake. A count the file does not fix (`"max"`, all
    /// CPUs but N) is not checked: that list is whatever the machine gives.
    pub(super) fn balancer_instances(&mut self, b: &BalancerDecl, instances: Option<Instances>) {
        let n = match instances {
            None => 1,
            Some(Instances::Count(n)) => n,
            Some(Instances::Max | Instances::AllBut(_)) => return,
        };
        let written = match instances {
            Some(_) => format!("`instances = {n}`"),
            None => "one instance (`instances` is not set)".to_string(),
        };
        let last = n - 1;
        let weights = &b.spec.weights;
        if !weights.is_empty() && weights.len() != n as usize {
            let msg =
                format!("`balancer.weights` in app {}: {} weights for {written}", self.label, weights.len());
            let hint = format!("give one weight per instance, instance 0 first ({n} in all)");
            self.push(ConfigError::new(msg).at(b.weights_span).with_hint(hint));
        }
        if let Some(i) = b.spec.backup.iter().find(|i| **i >= n) {
            let msg =
                format!("`balancer.backup` in app {}: there is no instance {i} with {written}", self.label);
            let hint = match last {
                0 => "instances are numbered from 0: the only one is 0".to_string(),
                _ => format!("instances are numbered from 0: backup indexes are 0 to {last}"),
            };
            self.push(ConfigError::new(msg).at(b.backup_span).with_hint(hint));
        } else if (0..n).all(|i| b.spec.backup.contains(&i)) {
            let msg = format!(
                "`balancer.backup` in app {}: every instance is a backup, so none would take requests first",
                self.label
            );
            let hint = "leave at least one instance out of `backup`, or add instances";
            self.push(ConfigError::new(msg).at(b.backup_span).with_hint(hint));
        }
    }

    fn missing(&mut self, key: &str, v: &Value, what: &str) {
        let msg = format!("`{key}` in app {}: {what}", self.label);
        self.push(ConfigError::new(msg).at(v.span));
    }

    /// A header or cookie name: letters, digits and `-_.`.
    fn name_of(&mut self, key: &str, value: &Value, example: &str) -> Option<String> {
        let name = self.non_empty_string(key, value)?;
        if name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            Some(name)
        } else {
            let msg = format!("`{key}` in app {}: `{name}` is not a valid name", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint(example));
            None
        }
    }

    /// A list of non-negative integers.
    fn numbers(&mut self, key: &str, value: &Value) -> Option<Vec<u32>> {
        let Kind::Array(items) = &value.kind else {
            self.type_error(key, value, "a list of numbers");
            return None;
        };
        items.iter().map(|item| self.u32(key, item)).collect()
    }

    fn positive(&mut self, key: &str, value: &Value) -> Option<u64> {
        let ms = self.duration(key, value)?;
        if ms == 0 {
            let msg = format!("`{key}` in app {} is 0", self.label);
            self.push(ConfigError::new(msg).at(value.span).with_hint("a duration such as \"30s\""));
            return None;
        }
        Some(ms)
    }

    fn tls(&mut self, key: &str, value: &Value) -> Option<TlsSpec> {
        let Kind::Table(table) = &value.kind else {
            self.type_error(key, value, "a table with `cert` and `key`");
            return None;
        };
        let (mut cert, mut pem_key) = (None, None);
        for e in &table.entries {
            let k = format!("{key}.{}", e.key);
            match e.key.as_str() {
                "cert" => cert = self.non_empty_string(&k, &e.value),
                "key" => pem_key = self.non_empty_string(&k, &e.value),
                other => {
                    let msg = format!("unknown key `{other}` in `{key}` of app {}", self.label);
                    self.push(unknown_key(msg, e.key_span, other, &["cert", "key"]));
                }
            }
        }
        match (cert, pem_key) {
            (Some(cert), Some(key)) => Some(TlsSpec { cert: cert.into(), key: key.into() }),
            _ => {
                let msg = format!("`{key}` in app {} needs `cert` and `key` (PEM files)", self.label);
                self.push(ConfigError::new(msg).at(value.span));
                None
            }
        }
    }
}
