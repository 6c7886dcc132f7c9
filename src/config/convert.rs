//! `herder convert`: a validated config tree (usually a PM2 ecosystem file) written back as
//! `herder.toml`, key by key: aliases and camelCase become herder's names, PM2's loose values
//! become what herder.toml expects (`instances: 0` → `"max"`, numbers written as strings →
//! numbers, env objects → their JSON text), command strings that need a shell get
//! `shell = true`, `deploy.<env>.env` moves into the apps' `env_<env>`, and options that mean
//! nothing in herder are dropped with a comment. Loading the output from the same directory
//! gives the same apps.

use std::collections::BTreeMap;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table as TomlTable};

use super::keys::{env_name, lookup, Field, Support};
use super::resolve::needs_shell;
use super::value::{to_json, Kind, Table, Value};

/// The TOML text for `root`, which validated without error. `from` names the source file.
pub fn to_toml(root: &Value, from: &str) -> String {
    let (apps, deploy) = split(root);
    let mut doc = DocumentMut::new();
    let mut array = ArrayOfTables::new();
    let mut dropped: Vec<String> = Vec::new();
    for app in apps {
        let Kind::Table(table) = &app.kind else { continue };
        array.push(convert_app(table, &deploy, &mut dropped));
    }
    doc.insert("apps", Item::ArrayOfTables(array));
    let mut header = format!("# herder.toml converted by `herder convert` from {from}.\n");
    header
        .push_str("# Keep it next to the original: relative paths resolve against this file's directory.\n");
    if !dropped.is_empty() {
        header.push_str(&format!("# Dropped (no meaning in herder): {}.\n", dropped.join(", ")));
    }
    header.push('\n');
    header + &doc.to_string()
}

/// PM2's `deploy.<env>.env` tables: the variables of each environment, in order.
type DeployEnv = BTreeMap<String, Vec<(String, Value)>>;

/// The app tables, and PM2's `deploy.<env>.env` tables.
fn split(root: &Value) -> (Vec<&Value>, DeployEnv) {
    let mut deploy = BTreeMap::new();
    let apps = match &root.kind {
        Kind::Array(items) => items.iter().collect(),
        Kind::Table(t) => {
            let mut apps = None;
            for entry in &t.entries {
                match (entry.key.as_str(), &entry.value.kind) {
                    ("apps" | "pm2", Kind::Array(items)) if apps.is_none() => {
                        apps = Some(items.iter().collect())
                    }
                    ("apps" | "pm2", Kind::Table(_)) if apps.is_none() => apps = Some(vec![&entry.value]),
                    ("deploy", Kind::Table(envs)) => {
                        for target in &envs.entries {
                            let Kind::Table(settings) = &target.value.kind else { continue };
                            if let Some(Kind::Table(vars)) =
                                settings.entries.iter().find(|e| e.key == "env").map(|e| &e.value.kind)
                            {
                                let vars =
                                    vars.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
                                deploy.insert(target.key.clone(), vars);
                            }
                        }
                    }
                    _ => {}
                }
            }
            // A bare app object.
            apps.unwrap_or_else(|| vec![root])
        }
        _ => Vec::new(),
    };
    (apps, deploy)
}

fn convert_app(table: &Table, deploy: &DeployEnv, dropped: &mut Vec<String>) -> TomlTable {
    let mut out = TomlTable::new();
    let mut script_needs_shell = false;
    let mut has_shell = false;
    let mut env_keys: Vec<String> = Vec::new();
    let mut named: Vec<String> = Vec::new();
    for entry in &table.entries {
        if matches!(entry.value.kind, Kind::Null) {
            continue;
        }
        if let Some(name) = env_name(&entry.key) {
            named.push(name.to_string());
            out.insert(&entry.key, Item::Table(env_table(&entry.value)));
            continue;
        }
        let Some(def) = lookup(&entry.key) else { continue };
        if let Support::Ignored(_) = def.support {
            if !dropped.iter().any(|d| d == def.name) {
                dropped.push(def.name.to_string());
            }
            continue;
        }
        let v = &entry.value;
        let item = match def.field {
            // PM2's `cluster_mode` and `fork_mode` are herder's `cluster` and `fork`.
            Field::ExecMode => match &v.kind {
                Kind::Str(m) => toml_edit::value(m.trim().trim_end_matches("_mode")),
                _ => Item::Value(plain(v)),
            },
            // PM2's `node@<version>`: herder runs the `node` in PATH.
            Field::Interpreter => match &v.kind {
                Kind::Str(i) if i.split_once('@').is_some_and(|(n, _)| n == "node") => {
                    toml_edit::value("node")
                }
                _ => Item::Value(plain(v)),
            },
            Field::Env => {
                if let Kind::Table(t) = &v.kind {
                    env_keys = t.entries.iter().map(|e| e.key.clone()).collect();
                }
                Item::Table(env_table(v))
            }
            Field::Instances => match &v.kind {
                Kind::Int(0) => toml_edit::value("max"),
                Kind::Str(s) if s.trim() == "0" => toml_edit::value("max"),
                _ => Item::Value(numeric(v)),
            },
            Field::MaxRestarts | Field::Port | Field::LogRetain | Field::StopExitCodes => {
                Item::Value(numeric(v))
            }
            Field::Script => {
                if let Kind::Str(s) = &v.kind {
                    script_needs_shell = needs_shell(s).is_some();
                }
                Item::Value(plain(v))
            }
            Field::Shell => {
                has_shell = true;
                Item::Value(plain(v))
            }
            Field::Health => match &v.kind {
                Kind::Table(_) => Item::Table(nested_table(v)),
                _ => Item::Value(plain(v)),
            },
            _ => Item::Value(plain(v)),
        };
        out.insert(def.name, item);
    }
    // herder.toml asks for `shell = true` where PM2 used a shell by itself. (A script that
    // is an existing file never runs through a shell; `sh -c ./file` would still run it.)
    if script_needs_shell && !has_shell {
        out.insert("shell", toml_edit::value(true));
    }
    // `deploy.<env>.env` sits under the app's `env`: what `env` sets wins.
    for (target, vars) in deploy {
        let key = format!("env_{target}");
        let extra: Vec<&(String, Value)> = vars.iter().filter(|(k, _)| !env_keys.contains(k)).collect();
        if extra.is_empty() {
            continue;
        }
        if !named.contains(target) {
            out.insert(&key, Item::Table(TomlTable::new()));
        }
        if let Some(Item::Table(t)) = out.get_mut(&key) {
            for (k, v) in extra {
                if !t.contains_key(k) {
                    t.insert(k, Item::Value(env_value(v)));
                }
            }
        }
    }
    out
}

/// An env table: scalars as they are, objects and lists as their JSON text (as PM2 passes them).
fn env_table(value: &Value) -> TomlTable {
    let mut t = TomlTable::new();
    if let Kind::Table(vars) = &value.kind {
        for e in &vars.entries {
            if !matches!(e.value.kind, Kind::Null) {
                t.insert(&e.key, Item::Value(env_value(&e.value)));
            }
        }
    }
    t
}

fn env_value(v: &Value) -> toml_edit::Value {
    match &v.kind {
        Kind::Array(_) | Kind::Table(_) => to_json(v).to_string().into(),
        _ => plain(v),
    }
}

/// A number written as a string of digits (PM2 parses those) as a number.
fn numeric(v: &Value) -> toml_edit::Value {
    match &v.kind {
        Kind::Str(s) => s.trim().parse::<i64>().map_or_else(|_| plain(v), toml_edit::Value::from),
        Kind::Array(items) => {
            let mut a = Array::new();
            for item in items {
                a.push(numeric(item));
            }
            toml_edit::Value::Array(a)
        }
        _ => plain(v),
    }
}

fn nested_table(v: &Value) -> TomlTable {
    let mut t = TomlTable::new();
    if let Kind::Table(entries) = &v.kind {
        for e in &entries.entries {
            if !matches!(e.value.kind, Kind::Null) {
                t.insert(&e.key, Item::Value(plain(&e.value)));
            }
        }
    }
    t
}

fn plain(v: &Value) -> toml_edit::Value {
    match &v.kind {
        Kind::Str(s) | Kind::Datetime(s) => s.as_str().into(),
        Kind::Int(i) => (*i).into(),
        Kind::Float(x) => (*x).into(),
        Kind::Bool(b) => (*b).into(),
        // Not reached: nulls are skipped before.
        Kind::Null => "".into(),
        Kind::Array(items) => {
            let mut a = Array::new();
            for item in items.iter().filter(|i| !matches!(i.kind, Kind::Null)) {
                a.push(plain(item));
            }
            toml_edit::Value::Array(a)
        }
        Kind::Table(t) => {
            let mut inline = InlineTable::new();
            for e in t.entries.iter().filter(|e| !matches!(e.value.kind, Kind::Null)) {
                inline.insert(&e.key, plain(&e.value));
            }
            toml_edit::Value::InlineTable(inline)
        }
    }
}
