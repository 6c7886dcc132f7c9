//! `herder export`: the apps of a config, resolved exactly as `start` resolves them, written
//! as an engine's own files: Kubernetes manifests, a docker compose file, systemd units. One
//! file of this module per target.
//!
//! Nothing is dropped in silence: what a target cannot express (a file watch, hooks, log
//! rotation …) is a [`Note`], shown on stderr and as a comment in the output, per app. An app
//! a target cannot take at all (no image for Kubernetes) is [`Refused`] with what to pass;
//! the other apps are written all the same.

pub mod compose;
pub mod kubernetes;
pub mod systemd;
pub mod yaml;

use std::collections::BTreeMap;

use crate::protocol::AppSpec;

/// The engines herder exports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Kubernetes,
    Compose,
    Systemd,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Kubernetes => "kubernetes",
            Target::Compose => "compose",
            Target::Systemd => "systemd",
        }
    }
}

/// How to export, besides the apps.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The image of apps whose spec names none (`--image`).
    pub image: Option<String>,
    /// Write secret-looking values themselves instead of placeholders (`--include-secrets`).
    pub include_secrets: bool,
    /// Kubernetes: a CronJob that restarts the Deployment for `cron_restart`
    /// (`--cron-jobs`), instead of a note.
    pub cron_jobs: bool,
    /// The number of CPUs of this machine, for `instances = "max"`.
    pub cpus: u32,
}

/// One file of the output, named relative to the output folder.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub name: String,
    /// The app it is for.
    pub app: String,
    pub text: String,
}

/// Something of an app that the target does not express, or expresses differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub app: String,
    /// The key of the app spec (`watch`, `log_max_size` …).
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "app `{}`: `{}` {}", self.app, self.key, self.message)
    }
}

/// An app the target cannot take, and what would let it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub app: String,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "app `{}`: {}", self.app, self.message)
    }
}

/// What an export made.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub files: Vec<File>,
    pub notes: Vec<Note>,
    pub refused: Vec<Refused>,
}

/// What one app became: its files and notes, or why it cannot be exported.
pub type AppExport = Result<(Vec<File>, Vec<Note>), String>;

/// Export `specs` to `target`.
pub fn export(target: Target, specs: &[AppSpec], opts: &Options) -> Export {
    let mut out = Export::default();
    if target == Target::Compose {
        // One compose file holds every service: the project is compose's unit.
        let (files, notes, refused) = compose::export(specs, opts);
        out.files = files;
        out.notes = notes;
        out.refused = refused;
        return out;
    }
    for spec in specs {
        let made: AppExport = match target {
            Target::Kubernetes => kubernetes::app(spec, opts),
            Target::Systemd => systemd::app(spec, opts),
            Target::Compose => unreachable!("exported above"),
        };
        // Names an engine folds together (`Web` and `web` both become `web`) would overwrite
        // each other's objects: the later app is refused.
        let clash = made.as_ref().ok().and_then(|(files, _)| {
            files.iter().find_map(|f| {
                let folded = dns_label(&f.name, usize::MAX);
                let other = out.files.iter().find(|o| dns_label(&o.name, usize::MAX) == folded)?;
                Some((f.name.clone(), other.app.clone()))
            })
        });
        match (made, clash) {
            (Ok(_), Some((name, other))) => out.refused.push(Refused {
                app: spec.name.clone(),
                message: format!(
                    "its output `{name}` is also app `{other}`'s (the names fold together): rename one"
                ),
            }),
            (Ok((files, notes)), None) => {
                out.files.extend(files);
                out.notes.extend(notes);
            }
            (Err(message), _) => out.refused.push(Refused { app: spec.name.clone(), message }),
        }
    }
    out
}

/// A note about `key` of `spec`.
pub fn note(spec: &AppSpec, key: &str, message: impl Into<String>) -> Note {
    Note { app: spec.name.clone(), key: key.to_string(), message: message.into() }
}

/// The notes every target shares: what only herder does (file watching, hooks, its own log
/// files and their rotation, pid files, the balancer's strategies).
pub fn herder_only(spec: &AppSpec, target: Target) -> Vec<Note> {
    let mut notes = Vec::new();
    let logs_go = match target {
        Target::Kubernetes | Target::Compose => "the engine keeps the container's stdout and stderr",
        Target::Systemd => "the journal keeps the service's stdout and stderr",
    };
    if !spec.watch.is_empty() {
        notes.push(note(
            spec,
            "watch",
            "is not exported: restart on file changes is herder's; redeploy instead",
        ));
    }
    if !spec.ignore_watch.is_empty() || spec.watch_delay_ms > 0 {
        notes.push(note(
            spec,
            "ignore_watch/watch_delay",
            "are not exported: restart on file changes is herder's",
        ));
    }
    if !spec.hooks.is_empty() {
        let events: Vec<&str> = spec.hooks.iter().flat_map(|h| h.events.iter().map(String::as_str)).collect();
        notes.push(note(
            spec,
            "hooks",
            format!("({}) are not exported: the engine has no hooks on these events", events.join(", ")),
        ));
    }
    let l = &spec.logs;
    if l.disable {
        notes.push(note(spec, "disable_logs", format!("is not exported: {logs_go}; quiet the app instead")));
    }
    if l.merge_logs || (l.log_file_default && l.log_file.is_none()) {
        notes.push(note(spec, "merge_logs/log_file", format!("is not exported: {logs_go}")));
    }
    let mut log_keys = Vec::new();
    if l.out_file.is_some() || l.error_file.is_some() || l.log_file.is_some() {
        log_keys.push("out_file/error_file/log_file");
    }
    if l.max_size.is_some() || l.retain.is_some() || l.compress || l.rotate_interval_ms.is_some() {
        log_keys.push("log_max_size/log_retain/log_compress/log_rotate_interval");
    }
    if l.time || l.date_format.is_some() || l.json {
        log_keys.push("time/log_date_format/log_type");
    }
    if l.rate_limit.is_some() {
        log_keys.push("log_rate_limit");
    }
    for key in log_keys {
        notes.push(note(spec, key, format!("is not exported: {logs_go}, and its own settings apply")));
    }
    if spec.pid_file.is_some() {
        notes.push(note(spec, "pid_file", "is not exported: the engine tracks the process itself"));
    }
    if spec.shutdown_with_message {
        notes.push(note(
            spec,
            "shutdown_with_message",
            "is not exported: the engine stops the app with its stop signal, not a message",
        ));
    }
    notes
}

/// The app's environment split into plain values and secret-looking ones (the rule that masks
/// them in `show`), as `(plain, secret)`.
pub fn split_env(spec: &AppSpec) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    spec.env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| !crate::protocol::secrets::is_secret(k))
}

/// The app's command for a container image: a program found on the exporting machine's `PATH`
/// by its name (the image has its own), paths under the app's `cwd` relative to it (the
/// image's working directory holds the app).
pub fn container_command(spec: &AppSpec) -> Vec<String> {
    let rel = |s: &str| -> String {
        let p = std::path::Path::new(s);
        match p.strip_prefix(&spec.cwd) {
            Ok(r) if p.is_absolute() && !r.as_os_str().is_empty() => r.display().to_string(),
            _ => s.to_string(),
        }
    };
    let program = std::path::Path::new(&spec.program);
    let first = if program.starts_with(&spec.cwd) {
        format!("./{}", rel(&spec.program))
    } else if program.is_absolute() {
        program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| spec.program.clone())
    } else {
        spec.program.clone()
    };
    std::iter::once(first).chain(spec.args.iter().map(|a| rel(a))).collect()
}

/// The ports an app serves on: its balancer's public port, else its cluster sockets, else a
/// numeric `PORT` of its environment.
pub fn ports(spec: &AppSpec) -> Vec<u16> {
    if let Some(b) = &spec.balancer {
        return vec![b.listen.port];
    }
    if !spec.sockets.is_empty() {
        return spec.sockets.iter().map(|s| s.port).collect();
    }
    spec.env.get("PORT").and_then(|p| p.trim().parse().ok()).into_iter().collect()
}

/// The placeholder written for a secret value unless `--include-secrets`.
pub fn placeholder(key: &str) -> String {
    format!("<{key}: set the secret value here>")
}

/// A name the engines accept for objects: lowercase letters, digits and `-`, starting and
/// ending with a letter or digit, at most `max` long (Kubernetes: 63 for labels and services).
pub fn dns_label(name: &str, max: usize) -> String {
    let mut s: String =
        name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.truncate(max);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "app".into()
    } else {
        s
    }
}

/// Seconds for a duration in ms, rounded up (engines count whole seconds).
pub fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The comment lines at the head of an app's output: where it comes from and its notes.
pub fn header(spec: &AppSpec, target: Target, notes: &[Note]) -> Vec<String> {
    let mut lines = vec![format!(
        "herder export {}: app `{}`{}",
        target.name(),
        spec.name,
        spec.source.as_ref().map(|s| format!(" of {}", s.display())).unwrap_or_default()
    )];
    for n in notes.iter().filter(|n| n.app == spec.name) {
        lines.push(format!("note: `{}` {}", n.key, n.message));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_whose_names_fold_together_are_not_both_written() {
        let specs =
            [AppSpec::new("Web", "/bin/true", "/".into()), AppSpec::new("web", "/bin/true", "/".into())];
        let opts = Options { image: Some("app:1".into()), ..Options::default() };
        let out = export(Target::Kubernetes, &specs, &opts);
        assert!(out.files.iter().all(|f| f.app == "Web"), "{:?}", out.files);
        assert_eq!(out.refused.len(), 1);
        assert_eq!(out.refused[0].app, "web");
        assert!(out.refused[0].message.contains("app `Web`"), "{}", out.refused[0].message);
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("Web_API.v2", 63), "web-api-v2");
        assert_eq!(dns_label("--", 63), "app");
        assert_eq!(dns_label(&"a".repeat(70), 63).len(), 63);
    }

    #[test]
    fn secret_looking_values_are_split_off() {
        let mut spec = AppSpec::new("web", "/bin/true", "/".into());
        spec.env = std::sync::Arc::new(
            [("PORT", "3000"), ("API_TOKEN", "t0k"), ("DB_PASSWORD", "pw")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        let (plain, secret) = split_env(&spec);
        assert_eq!(plain.keys().collect::<Vec<_>>(), ["PORT"]);
        assert_eq!(secret.keys().collect::<Vec<_>>(), ["API_TOKEN", "DB_PASSWORD"]);
    }
}
