//! Secret-looking values and how outputs hide them.
//!
//! An env variable whose name contains `SECRET`, `TOKEN`, `PASSWORD`, `PASSWD`, `KEY` or
//! `CREDENTIAL` (any case) holds a secret. Every output (`list`, `show`, their `--json`,
//! `jlist`, `env`, events) prints `********` instead of its value, and wherever that value
//! appears inside other text (an argument, a probe's command, an error message) it is
//! replaced the same way. `--show-secrets` prints them on purpose where an output carries the
//! environment (`show`, `jlist`, `env`); `list --json` carries none and is always scrubbed.

use std::collections::BTreeMap;

use super::spec::{AppSpec, HookAction, ProbeCheck};
use super::{AppInfo, InstanceInfo};

/// What a masked value prints as.
pub const MASK: &str = "********";

/// Values shorter than this are masked where they are an env value, but not searched for
/// inside other text: a two-letter secret would blank out half of every message.
const MIN_SCRUB_LEN: usize = 4;

/// Whether the env variable `key` holds a secret.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL"].iter().any(|w| k.contains(w))
}

/// `value`, or [`MASK`] when `key` names a secret.
pub fn mask(key: &str, value: &str) -> String {
    if is_secret(key) {
        MASK.into()
    } else {
        value.to_string()
    }
}

/// The secret values of `env`, longest first (so a secret containing another is replaced
/// whole).
pub fn secret_values(env: &BTreeMap<String, String>) -> Vec<&str> {
    let mut v: Vec<&str> = env
        .iter()
        .filter(|(k, v)| is_secret(k) && v.len() >= MIN_SCRUB_LEN)
        .map(|(_, v)| v.as_str())
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

/// `text` with every one of `secrets` replaced by [`MASK`].
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s) {
            out = out.replace(s, MASK);
        }
    }
    out
}

impl AppSpec {
    /// This spec as outputs show it: secret env values masked, and hidden wherever they
    /// appear in the command, probes and hooks.
    pub fn masked(&self) -> AppSpec {
        let secrets = secret_values(&self.env);
        let hide = |s: &str| scrub(s, &secrets);
        let mut spec = self.clone();
        spec.env = std::sync::Arc::new(self.env.iter().map(|(k, v)| (k.clone(), mask(k, v))).collect());
        if secrets.is_empty() {
            return spec;
        }
        spec.script = hide(&spec.script);
        spec.program = hide(&spec.program);
        spec.args = spec.args.iter().map(|a| hide(a)).collect();
        for p in &mut spec.health {
            match &mut p.check {
                ProbeCheck::Http(s) | ProbeCheck::Tcp(s) => *s = hide(s),
                ProbeCheck::Exec(argv) => argv.iter_mut().for_each(|a| *a = hide(a)),
            }
        }
        for h in &mut spec.hooks {
            match &mut h.action {
                HookAction::Webhook(url) => *url = hide(url),
                HookAction::Command(argv) => argv.iter_mut().for_each(|a| *a = hide(a)),
            }
        }
        spec
    }
}

impl AppInfo {
    /// This app as outputs show it (see [`AppSpec::masked`]); instance errors are scrubbed too.
    pub fn masked(&self) -> AppInfo {
        let secrets = secret_values(&self.spec.env);
        let mut app = self.clone();
        app.spec = self.spec.masked();
        for i in &mut app.instances {
            scrub_instance(i, &secrets);
        }
        app
    }
}

/// Hide `secrets` in what an instance's state says in words (its error, its probes).
pub fn scrub_instance(i: &mut InstanceInfo, secrets: &[&str]) {
    if secrets.is_empty() {
        return;
    }
    if let Some(r) = &i.reason {
        i.reason = Some(scrub(r, secrets));
    }
    for p in &mut i.probes {
        p.target = scrub(&p.target, secrets);
        p.last_error = p.last_error.as_deref().map(|e| scrub(e, secrets));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        assert!(is_secret("API_TOKEN"));
        assert!(is_secret("db_password"));
        assert!(is_secret("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret("PORT"));
        assert_eq!(mask("API_TOKEN", "abc"), MASK);
        assert_eq!(mask("PORT", "8080"), "8080");
    }

    #[test]
    fn scrubbing_replaces_the_longest_first_and_skips_tiny_values() {
        let env: BTreeMap<String, String> = [
            ("A_TOKEN".to_string(), "s3cr3t".to_string()),
            ("B_TOKEN".to_string(), "s3cr3t-and-more".to_string()),
            ("PIN_KEY".to_string(), "42".to_string()),
            ("PORT".to_string(), "s3cr3t".to_string()),
        ]
        .into();
        let secrets = secret_values(&env);
        assert_eq!(secrets, ["s3cr3t-and-more", "s3cr3t"]);
        assert_eq!(scrub("--token=s3cr3t-and-more x s3cr3t 42", &secrets), "--token=******** x ******** 42");
    }

    #[test]
    fn a_masked_spec_hides_values_everywhere() {
        let mut spec = AppSpec::new("web", "node", "/".into());
        spec.env = std::sync::Arc::new(
            [("API_TOKEN".to_string(), "tok-123".to_string()), ("PORT".to_string(), "80".to_string())].into(),
        );
        spec.args = vec!["--auth".into(), "tok-123".into()];
        spec.health.push(crate::protocol::spec::ProbeSpec::new(
            crate::protocol::spec::ProbeKind::Readiness,
            ProbeCheck::Http("http://u:tok-123@localhost/".into()),
        ));
        let m = spec.masked();
        assert_eq!(m.env["API_TOKEN"], MASK);
        assert_eq!(m.env["PORT"], "80");
        assert_eq!(m.args, ["--auth", MASK]);
        assert_eq!(m.health[0].check, ProbeCheck::Http("http://u:********@localhost/".into()));
        assert_eq!(spec.env["API_TOKEN"], "tok-123", "the original is untouched");
    }
}
