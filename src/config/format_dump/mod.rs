//! PM2's process dump as a config: `~/.pm2/dump.pm2` (what `pm2 save` writes, and `pm2
//! resurrect` reads), its `dump.pm2.bak`, and the list `pm2 jlist` prints.
//!
//! A dump is a JSON array with one record per running *instance* (a `-i 4` app is four
//! records of the same name; `pm2 save` deletes `instances` and `pm_id`). A record is the
//! process's whole `pm2_env`: the app's options under PM2's internal names (`pm_exec_path`,
//! `pm_cwd`, `exec_interpreter`, `node_args`, `pm_out_log_path` …), PM2's runtime state
//! (`status`, `restart_time`, `pm_uptime`, `axm_*` …), and an `env` holding the app's variables
//! *mixed with the entire shell environment of the `pm2` command that started it* (every
//! variable is also copied to the top level of the record).
//!
//! This module turns the records into the tree of an ecosystem file (`{ apps: [ … ] }`), one
//! app per name, reusing the dump's own nodes so that every error points at the dump's line,
//! and leaves validation to the one validator. What it keeps:
//!
//! - the options PM2 recorded that herder reads, under herder's names; values that are only
//!   PM2's defaults (`autorestart: true`, `treekill: true`, `namespace: "default"` …) and
//!   PM2's runtime state are left out;
//! - `instances`: the number of records with that name;
//! - log paths (`pm_out_log_path`, `pm_err_log_path`, `pm_log_path`) unless they are PM2's
//!   default place (`<PM2_HOME>/logs/<name>-out.log`), which herder replaces with its own;
//! - a shell command PM2 ran as `bash -c "<command>"` as that command string;
//! - the environment by [the env rule](keep_var).

use std::collections::BTreeMap;

use super::keys::{env_name, lookup, Support};
use super::value::{to_json, Entry, Kind, Span, Table, Value};
use super::ConfigError;

/// Whether a file name is one PM2 gives its dump.
pub fn is_dump_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "dump.pm2" || name == "dump.pm2.bak"
}

/// Whether a parsed JSON file has the shape of a dump: a non-empty array whose first element
/// is a process record (`pm_exec_path`), or a `pm2 jlist` entry (`pm2_env`).
pub fn looks_like(root: &Value) -> bool {
    let Kind::Array(items) = &root.kind else { return false };
    let Some(Value { kind: Kind::Table(first), .. }) = items.first() else { return false };
    first.entries.iter().any(|e| e.key == "pm_exec_path" || (e.key == "pm2_env" && is_table(&e.value)))
}

/// Whether the start of a file's text looks like a dump (for files whose name says nothing).
pub fn sniff(text: &str) -> bool {
    let rest = text.trim_start_matches('\u{feff}').trim_start();
    rest.strip_prefix('[').is_some_and(|r| r.trim_start().starts_with('{'))
        && (text.contains("\"pm_exec_path\"") || text.contains("\"pm2_env\""))
}

/// Variables of the records' `env` that were left out, by the reason of [`keep_var`], each
/// name once; `convert` lists them so that nothing disappears unsaid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub pm2: Vec<String>,
    pub session: Vec<String>,
    pub inherited: Vec<String>,
}

impl LeftOut {
    fn add(&mut self, why: Drop, name: &str) {
        let list = match why {
            Drop::Pm2 => &mut self.pm2,
            Drop::Session => &mut self.session,
            Drop::Inherited => &mut self.inherited,
            Drop::Port => return,
        };
        if !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
    }

    /// `# …` lines for the header of `herder convert`'s output (nothing when none was left out).
    pub fn comment(&self) -> String {
        let mut out = String::new();
        let groups = [
            ("PM2's own", &self.pm2),
            ("the shell session's", &self.session),
            (
                "set to the same value in the shell that ran `herder convert` (apps inherit it)",
                &self.inherited,
            ),
        ];
        if groups.iter().all(|(_, names)| names.is_empty()) {
            return out;
        }
        out.push_str(
            "# Left out of the apps' env (PM2 saves the whole shell environment with each process):\n",
        );
        for (what, names) in groups {
            if names.is_empty() {
                continue;
            }
            let mut line = format!("#   {what}:");
            for name in names.iter() {
                if line.len() + name.len() + 2 > 100 {
                    out.push_str(&line);
                    out.push('\n');
                    line = "#    ".to_string();
                }
                line.push(' ');
                line.push_str(name);
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The dump as an ecosystem tree.
#[derive(Debug, Clone)]
pub struct Dump {
    /// The apps of the records that could be read.
    pub root: Value,
    pub left_out: LeftOut,
    /// Records that could not be read, each naming the record (`#3`, 1-based) and its app;
    /// reported with what the validator finds in the others.
    pub errors: Vec<ConfigError>,
}

/// Turns the records of a dump into `{ apps: [ … ] }`. `shell` is the environment of the
/// command reading it (see [`keep_var`]). Fails only when the file is no dump at all.
pub fn to_ecosystem(root: &Value, shell: &BTreeMap<String, String>) -> Result<Dump, Vec<ConfigError>> {
    let Kind::Array(items) = &root.kind else {
        return Err(vec![ConfigError::new(format!(
            "a PM2 dump is a JSON array of process records, found {}",
            root.type_name()
        ))
        .at(root.span)
        .with_hint("give the file `pm2 save` writes (~/.pm2/dump.pm2)")]);
    };
    if items.is_empty() {
        return Err(vec![ConfigError::new("the PM2 dump holds no process").at(root.span).with_hint(
            "PM2 writes `[]` after `pm2 cleardump`; `pm2 save` with the apps running writes them",
        )]);
    }
    let mut errors = Vec::new();
    // Records grouped by app name, in the order the names first appear.
    let mut groups: Vec<(String, Vec<Record<'_>>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let index = i + 1;
        let Some(record) = record(item) else {
            errors.push(
                ConfigError::new(format!(
                    "record #{index} must be a process record, found {}",
                    item.type_name()
                ))
                .at(item.span),
            );
            continue;
        };
        let name = match get(record, "name").map(|v| &v.kind) {
            Some(Kind::Str(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                errors.push(
                    ConfigError::new(format!("record #{index} has no `name`"))
                        .at(item.span)
                        .with_hint("every record `pm2 save` writes names its app"),
                );
                continue;
            }
        };
        if get(record, "pmx_module").is_some_and(|v| matches!(v.kind, Kind::Bool(true))) {
            // A PM2 module (pm2-logrotate …), which PM2 does not dump itself.
            continue;
        }
        if !matches!(get(record, "pm_exec_path").map(|v| &v.kind), Some(Kind::Str(s)) if !s.is_empty()) {
            errors.push(
                ConfigError::new(format!("record #{index} (app `{name}`) has no `pm_exec_path`"))
                    .at(item.span)
                    .with_hint("`pm_exec_path` is the script PM2 ran; a record without it cannot be started"),
            );
            continue;
        }
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, records)) => records.push((index, record, item.span)),
            None => groups.push((name, vec![(index, record, item.span)])),
        }
    }
    let mut left_out = LeftOut::default();
    let mut apps = Vec::with_capacity(groups.len());
    for (name, records) in &groups {
        let (first_index, first, span) = records[0];
        // Instances of one app run the same program; PM2 also lets two apps share a name.
        let program = |t: &Table| ["pm_exec_path", "args", "pm_cwd"].map(|k| get(t, k).map(to_json));
        if let Some((other, _, other_span)) =
            records[1..].iter().find(|(_, t, _)| program(t) != program(first))
        {
            errors.push(
                ConfigError::new(format!(
                    "records #{first_index} and #{other} are both named `{name}` but run different programs"
                ))
                .at(*other_span)
                .with_hint("herder's app names are unique: rename one of them (`name`) in the dump"),
            );
            continue;
        }
        let tables: Vec<&Table> = records.iter().map(|(_, t, _)| *t).collect();
        apps.push(Value::new(Kind::Table(app(name, &tables, span, shell, &mut left_out)), span));
    }
    let apps = Value::new(Kind::Array(apps), root.span);
    let root = Value::new(
        Kind::Table(Table { entries: vec![Entry { key: "apps".into(), key_span: root.span, value: apps }] }),
        root.span,
    );
    Ok(Dump { root, left_out, errors })
}

/// A record of the dump: its rank (1-based), its fields, where it starts.
type Record<'a> = (usize, &'a Table, Span);

/// The process record of an array element: itself, or the `pm2_env` of a `pm2 jlist` entry.
fn record(item: &Value) -> Option<&Table> {
    let Kind::Table(t) = &item.kind else { return None };
    match get(t, "pm2_env") {
        Some(Value { kind: Kind::Table(env), .. }) => Some(env),
        _ => Some(t),
    }
}

fn get<'a>(t: &'a Table, key: &str) -> Option<&'a Value> {
    t.entries.iter().find(|e| e.key == key).map(|e| &e.value)
}

fn entry<'a>(t: &'a Table, key: &str) -> Option<&'a Entry> {
    t.entries.iter().find(|e| e.key == key)
}

fn is_table(v: &Value) -> bool {
    matches!(v.kind, Kind::Table(_))
}

fn str_of<'a>(t: &'a Table, key: &str) -> Option<&'a str> {
    match get(t, key).map(|v| &v.kind) {
        Some(Kind::Str(s)) => Some(s),
        _ => None,
    }
}

/// An empty list, empty string, `false`, `null` or `{}`: not worth writing.
fn is_empty(v: &Value) -> bool {
    match &v.kind {
        Kind::Array(items) => items.is_empty(),
        Kind::Str(s) => s.trim().is_empty(),
        Kind::Bool(b) => !b,
        Kind::Null => true,
        Kind::Table(t) => t.entries.is_empty(),
        _ => false,
    }
}

/// Record keys this module maps itself (the rest go through [`carry`]).
const MAPPED: &[&str] = &[
    "name",
    "script",
    "pm_exec_path",
    "args",
    "exec_interpreter",
    "interpreter",
    "node_args",
    "interpreter_args",
    "pm_cwd",
    "cwd",
    "namespace",
    "instances",
    "env",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_log_path",
    "out_file",
    "error_file",
    "log_file",
];

/// One app from the records of its instances (all run the same program; the first speaks).
fn app(
    name: &str,
    records: &[&Table],
    span: Span,
    shell: &BTreeMap<String, String>,
    left_out: &mut LeftOut,
) -> Table {
    let r = records[0];
    let mut out: Vec<Entry> = Vec::new();
    let mut put =
        |key: &str, value: Value| out.push(Entry { key: key.to_string(), key_span: value.span, value });
    let at = |key: &str| entry(r, key).map_or(span, |e| e.key_span);

    put("name", get(r, "name").cloned().unwrap_or_else(|| Value::new(Kind::Str(name.into()), span)));
    let exec = get(r, "pm_exec_path").cloned().unwrap_or_else(|| Value::new(Kind::Str(String::new()), span));
    let interpreter = str_of(r, "exec_interpreter").unwrap_or("");
    let args = get(r, "args");
    // PM2 runs a command string as `bash -c "<command>"` (`sh` where bash is missing).
    let shell_command = match (&exec.kind, args.map(|a| &a.kind)) {
        (Kind::Str(path), Some(Kind::Array(a)))
            if matches!(path.rsplit('/').next(), Some("bash" | "sh"))
                && matches!(interpreter, "" | "none")
                && a.len() == 2
                && matches!(&a[0].kind, Kind::Str(s) if s == "-c") =>
        {
            Some(a[1].clone())
        }
        _ => None,
    };
    match shell_command {
        Some(command) => put("script", command),
        None => {
            let script = match &exec.kind {
                Kind::Str(s) => s.clone(),
                _ => String::new(),
            };
            put("script", exec);
            if let Some(a) = args.filter(|a| !is_empty(a)) {
                put("args", a.clone());
            }
            // `node` for a `.js` file is what herder picks by itself.
            let js = [".js", ".mjs", ".cjs"].iter().any(|e| script.ends_with(e));
            if let Some(i) = get(r, "exec_interpreter").filter(|i| !is_empty(i)) {
                if !(js && interpreter == "node") {
                    put("interpreter", i.clone());
                }
            }
            if let Some(a) = get(r, "node_args").filter(|a| !is_empty(a)) {
                put("interpreter_args", a.clone());
            }
        }
    }
    if let Some(cwd) = get(r, "pm_cwd").or_else(|| get(r, "cwd")) {
        put("cwd", cwd.clone());
    }
    if let Some(ns) = get(r, "namespace").filter(|n| !matches!(&n.kind, Kind::Str(s) if s == "default")) {
        put("namespace", ns.clone());
    }
    if records.len() > 1 {
        put("instances", Value::new(Kind::Int(records.len() as i64), span));
    }

    let port = get(r, "port").and_then(|p| match &p.kind {
        Kind::Int(i) => Some(i.to_string()),
        Kind::Str(s) => Some(s.trim().to_string()),
        _ => None,
    });
    let filtered = get(r, "filter_env").is_some_and(|f| !is_empty(f));
    let instance_var = str_of(r, "instance_var").unwrap_or("NODE_APP_INSTANCE");
    let env_vars = match get(r, "env").map(|e| &e.kind) {
        Some(Kind::Table(t)) => Some(t),
        _ => None,
    };
    if let Some(vars) = env_vars {
        let mut kept = Table::default();
        for e in &vars.entries {
            let context = VarContext { app: name, instance_var, port: port.as_deref(), filtered, shell };
            match keep_var(&e.key, &e.value, &context) {
                Ok(()) => kept.entries.push(e.clone()),
                Err(why) => left_out.add(why, &e.key),
            }
        }
        if !kept.entries.is_empty() {
            put("env", Value::new(Kind::Table(kept), get(r, "env").map_or(span, |v| v.span)));
        }
    }

    for (pm, key, stream) in [
        ("pm_out_log_path", "out_file", Some("out")),
        ("pm_err_log_path", "error_file", Some("error")),
        ("pm_log_path", "log_file", None),
    ] {
        let paths: Vec<&str> = records.iter().filter_map(|t| str_of(t, pm)).collect();
        let Some(first) = paths.first() else { continue };
        if is_default_log(first, pm2_home(r).as_deref(), name, stream) {
            if stream.is_none() {
                // `log_file: true`: the combined file in herder's default place.
                put(key, Value::new(Kind::Bool(true), at(pm)));
            }
            continue;
        }
        put(key, Value::new(Kind::Str(common_log_path(&paths)), at(pm)));
    }

    let time = get(r, "time").is_some_and(|t| matches!(t.kind, Kind::Bool(true)));
    for e in &r.entries {
        let key = e.key.as_str();
        if MAPPED.contains(&key) || env_vars.is_some_and(|vars| vars.entries.iter().any(|v| v.key == key)) {
            continue;
        }
        // `time: true` is how PM2 wrote this format; herder's `time` has its own.
        if key == "log_date_format" && time && matches!(&e.value.kind, Kind::Str(s) if s == PM2_TIME_FORMAT) {
            continue;
        }
        if carry(key, &e.value) {
            out.push(e.clone());
        }
    }
    Table { entries: out }
}

/// The format PM2 sets `log_date_format` to for `time: true`.
const PM2_TIME_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss";

/// Whether a record's option is worth carrying into the app: herder knows it, and it is not
/// one of PM2's defaults (which PM2 writes into every record) nor its internal bookkeeping.
fn carry(key: &str, value: &Value) -> bool {
    if matches!(value.kind, Kind::Null) {
        return false;
    }
    if env_name(key).is_some() {
        return is_table(value);
    }
    let Some(def) = lookup(key) else {
        // PM2's runtime state and bookkeeping: `status`, `pm_uptime`, `axm_*`, `_pm2_version` …
        return false;
    };
    let is = |expected: &serde_json::Value| to_json(value) == *expected;
    use serde_json::json;
    match def.name {
        // PM2's defaults, written into every record.
        "autostart" | "autorestart" => !is(&json!(true)),
        "watch" | "merge_logs" | "time" | "wait_ready" | "shutdown_with_message" | "disable_logs" => {
            !is_empty(value)
        }
        "instance_var" => !is(&json!("NODE_APP_INSTANCE")),
        "filter_env" | "ignore_watch" => !is_empty(value),
        "exec_mode" => !matches!(&value.kind, Kind::Str(s) if s.trim_end_matches("_mode") == "fork"),
        // PM2 fills these in itself.
        "username" | "km_link" | "install_url" | "write" | "pmx_module" | "windowsHide"
        | "kill_retry_time" => false,
        "treekill" | "pmx" | "automation" | "vizion" | "source_map_support" => !is(&json!(true)),
        _ => match def.support {
            // An option herder ignores, set to something: the validator says so.
            Support::Ignored(_) => !is_empty(value),
            _ => true,
        },
    }
}

/// Why a variable of a record's `env` is not the app's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// PM2's own bookkeeping.
    Pm2,
    /// A variable the login shell sets for the session, no app's setting.
    Session,
    /// The shell reading the dump has it with the same value: the app inherits it anyway.
    Inherited,
    /// `PORT` set by the record's `port`, which is kept.
    Port,
}

/// What [`keep_var`] looks at besides the variable.
pub struct VarContext<'a> {
    pub app: &'a str,
    pub instance_var: &'a str,
    /// The record's `port`, as text.
    pub port: Option<&'a str>,
    /// The record has `filter_env`: PM2 did not copy the shell into `env`.
    pub filtered: bool,
    /// The environment of the command reading the dump.
    pub shell: &'a BTreeMap<String, String>,
}

/// Variables a login shell or terminal sets for the session.
const SESSION_VARS: &[&str] = &[
    "_",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "SHELL",
    "HOME",
    "USER",
    "LOGNAME",
    "MAIL",
    "HOSTNAME",
    "TERM",
    "COLORTERM",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TERM_SESSION_ID",
    "PS1",
    "PS2",
    "PS4",
    "PROMPT_COMMAND",
    "HISTFILE",
    "HISTSIZE",
    "HISTFILESIZE",
    "HISTCONTROL",
    "LS_COLORS",
    "LSCOLORS",
    "LESSOPEN",
    "LESSCLOSE",
    "MOTD_SHOWN",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
    "TMUX",
    "STY",
    "WINDOW",
    "WINDOWID",
    "VTE_VERSION",
    "GPG_AGENT_INFO",
    "GPG_TTY",
];

/// Prefixes of session variables: ssh, sudo, XDG session, terminal multiplexers and
/// emulators, and those `npm run` sets.
const SESSION_PREFIXES: &[&str] =
    &["SSH_", "SUDO_", "XDG_", "TMUX_", "KONSOLE_", "GNOME_", "ITERM_", "VSCODE_", "npm_"];

/// The env rule: which variables of a record's `env` are the app's own. PM2 merges the app's
/// variables over the *whole* environment of the shell that ran `pm2 start` and saves the
/// result, so the dump cannot tell `NODE_ENV` set in the ecosystem file from `SHELL`. A
/// variable is kept unless:
///
/// 1. it is PM2's: a name starting with `PM2_` (`PM2_HOME`, `PM2_USAGE`,
///    `PM2_INTERACTOR_PROCESSING`, `PM2_JSON_PROCESSING` …), `unique_id`, `pm_id`, the
///    instance variable (`NODE_APP_INSTANCE`), or the entry PM2 adds under the app's own name
///    (`"web": {}`), or a value that is no scalar; `PORT` equal to the record's `port` goes
///    too, as `port` is kept;
/// 2. the record has no `filter_env` (so PM2 copied the shell) and it is a variable of the
///    login session: `SHELL`, `PWD`, `OLDPWD`, `SHLVL`, `_`, `HOME`, `USER`, `LOGNAME`, `TERM`,
///    `SSH_*`, `SUDO_*`, `XDG_*`, `npm_*` … ([`SESSION_VARS`], [`SESSION_PREFIXES`]);
/// 3. the record has no `filter_env` and the shell reading the dump has the same value:
///    herder apps inherit the shell's environment, so the app gets it anyway.
///
/// Everything else stays, `PATH` included when it differs from this shell's (a PM2 started
/// from an nvm shell found `node` there).
pub fn keep_var(key: &str, value: &Value, cx: &VarContext<'_>) -> Result<(), Drop> {
    let text = match &value.kind {
        Kind::Str(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(x) => x.to_string(),
        Kind::Bool(b) => b.to_string(),
        _ => return Err(Drop::Pm2),
    };
    if key.starts_with("PM2_")
        || matches!(key, "unique_id" | "pm_id" | "NODE_APP_INSTANCE")
        || key == cx.instance_var
        || (key == cx.app && text == "{}")
    {
        return Err(Drop::Pm2);
    }
    if key == "PORT" && cx.port == Some(text.as_str()) {
        return Err(Drop::Port);
    }
    if cx.filtered {
        return Ok(());
    }
    if SESSION_VARS.contains(&key) || SESSION_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Err(Drop::Session);
    }
    if cx.shell.get(key) == Some(&text) {
        return Err(Drop::Inherited);
    }
    Ok(())
}

/// The `PM2_HOME` a record was saved from: its env says, else its pid file
/// (`<PM2_HOME>/pids/<name>-<id>.pid`) does.
fn pm2_home(r: &Table) -> Option<String> {
    let from_env = match get(r, "env").map(|e| &e.kind) {
        Some(Kind::Table(env)) => str_of(env, "PM2_HOME").map(str::to_string),
        _ => None,
    };
    from_env.or_else(|| {
        let pid = str_of(r, "pm_pid_path")?;
        let (pids, _) = pid.rsplit_once('/')?;
        pids.strip_suffix("/pids").map(str::to_string)
    })
}

/// PM2's own place for an app's logs: `<PM2_HOME>/logs/<name>-out.log` (or `-error`, with
/// `-<pm_id>` when the instances' logs are not merged; `<name>.log` for the combined file),
/// where `<name>` has every character but letters, digits, `.` and `-` replaced by `-`. With
/// no known `PM2_HOME`, a `.pm2/logs` folder is PM2's.
fn is_default_log(path: &str, pm2_home: Option<&str>, app: &str, stream: Option<&str>) -> bool {
    let Some((dir, file)) = path.rsplit_once('/') else { return false };
    let in_pm2_logs = match pm2_home {
        Some(home) => dir.strip_suffix("/logs") == Some(home.trim_end_matches('/')),
        None => dir.ends_with("/.pm2/logs"),
    };
    if !in_pm2_logs {
        return false;
    }
    let name: String = app
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    let Some(stem) = file.strip_suffix(".log") else { return false };
    let stem = strip_id(stem);
    match stream {
        Some(s) => stem == format!("{name}-{s}"),
        None => stem == name,
    }
}

/// `web-out-3` → `web-out`: the `-<pm_id>` PM2 appends to unmerged log files.
fn strip_id(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((head, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => stem,
    }
}

/// The path the user gave for the logs of every instance: PM2 records one per instance
/// (`api-4.log`, `api-5.log` for `api.log`); when they differ only by that id, without it.
fn common_log_path(paths: &[&str]) -> String {
    let first = paths[0];
    if paths.iter().all(|p| *p == first) {
        return first.to_string();
    }
    let without_id = |p: &str| {
        let (dir, file) = p.rsplit_once('/').map_or(("", p), |(d, f)| (d, f));
        let (stem, ext) = file.rsplit_once('.').map_or((file, None), |(s, e)| (s, Some(e)));
        let stem = strip_id(stem);
        let file = ext.map_or_else(|| stem.to_string(), |e| format!("{stem}.{e}"));
        if dir.is_empty() && !p.starts_with('/') {
            file
        } else {
            format!("{dir}/{file}")
        }
    };
    let common = without_id(first);
    if paths.iter().all(|p| without_id(p) == common) {
        common
    } else {
        first.to_string()
    }
}

#[cfg(test)]
mod tests;
