//! PM2's verbs in PM2's own shapes, for the scripts, monitoring and test suites written against
//! them: `jlist` (PM2's JSON process records), `prettylist` (the same laid out by Node's
//! `util.inspect`), `env`, `pid` and `id`. herder's own views stay `list --json` and `show`.
//!
//! Also the PM2 verbs herder does not have: each is refused with what to use instead, before
//! the argument parser would answer "unrecognized subcommand" with a look-alike.

use std::io::IsTerminal;

use anyhow::{bail, Result};

use super::inspect::{inspect, Js};
use super::output::{expect_ok, out};
use crate::client;
use crate::paths::Paths;
use crate::protocol::{AppInfo, InstanceInfo, Request, Response, Status, Target};

/// Every app with its whole spec (environment included), secrets masked.
async fn full_list(paths: &Paths) -> Result<Vec<AppInfo>> {
    let Response::List { apps, .. } = expect_ok(client::call(paths, &Request::ListFull).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    Ok(apps.iter().map(AppInfo::masked).collect())
}

/// `herder jlist` and `herder prettylist`: as PM2, the list without a trailing newline (the
/// bytes scripts compare), with one when a person reads it.
pub async fn jlist(paths: &Paths, pretty: bool) -> Result<i32> {
    let records = records(&full_list(paths).await?);
    let mut text = if pretty { inspect(&records) } else { serde_json::to_string(&records)? };
    if std::io::stdout().is_terminal() {
        text.push('\n');
    }
    out(&text)?;
    Ok(0)
}

/// `herder pid [app]`: the pid of every instance of the app (of every app), one per line, 0 for
/// an instance that does not run; nothing for an unknown name (PM2's output).
pub async fn pid(paths: &Paths, name: Option<&str>) -> Result<i32> {
    let Response::List { apps, .. } = expect_ok(client::call(paths, &Request::ListBrief).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let pids: Vec<String> = apps
        .iter()
        .filter(|a| name.is_none_or(|n| a.spec.name == n))
        .flat_map(|a| a.instances.iter().map(|i| i.pid.unwrap_or(0).to_string()))
        .collect();
    out(&(pids.join("\n") + "\n"))?;
    Ok(0)
}

/// `herder id <name>`: the ids of that app's instances as PM2 prints them (`[ 0, 1 ]`, `[]`).
pub async fn id(paths: &Paths, name: &str) -> Result<i32> {
    let Response::List { apps, .. } = expect_ok(client::call(paths, &Request::ListBrief).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let ids = apps
        .iter()
        .filter(|a| a.spec.name == name)
        .flat_map(|a| a.instances.iter().map(move |i| Js::num(i.id.unwrap_or(a.id))))
        .collect();
    out(&(inspect(&Js::Arr(ids)) + "\n"))?;
    Ok(0)
}

/// `herder env <app>`: the app's environment, one `KEY: value` a line (PM2's layout), secret
/// values masked unless `show_secrets`.
pub async fn env(paths: &Paths, target: &str, show_secrets: bool) -> Result<i32> {
    let req = Request::Show { target: Target::parse(target) };
    let Response::Show { app } = expect_ok(client::call(paths, &req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let app = if show_secrets { *app } else { app.masked() };
    let text: String = app.spec.env.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    out(&text)?;
    Ok(0)
}

/// PM2's words for a status.
fn status(s: Status) -> &'static str {
    match s {
        Status::WaitingRestart => "waiting restart",
        s => s.as_str(),
    }
}

/// PM2's process records (`pm2 jlist`): one per instance, with the fields PM2 tools read.
pub fn records(apps: &[AppInfo]) -> Js {
    let user = super::render::user();
    Js::Arr(
        apps.iter()
            .flat_map(|app| app.instances.iter().map(|i| record(app, i, &user)).collect::<Vec<_>>())
            .collect(),
    )
}

fn strings<'a>(v: impl IntoIterator<Item = &'a String>) -> Js {
    Js::Arr(v.into_iter().map(|s| Js::str(s.as_str())).collect())
}

/// Where the script is in the spec's arguments: the interpreter's arguments come before it, the
/// app's after it. A command run directly has no interpreter arguments.
fn split_args(app: &AppInfo) -> (String, Vec<String>, Vec<String>) {
    let spec = &app.spec;
    match spec.interpreter.as_deref() {
        Some(i) if i != "none" && i != "sh" => {
            let script = std::path::Path::new(&spec.script);
            let at = spec.args.iter().position(|a| {
                let a = std::path::Path::new(a);
                a == script || a == spec.cwd.join(script) || (a.is_absolute() && a.ends_with(script))
            });
            match at {
                Some(at) => (spec.args[at].clone(), spec.args[..at].to_vec(), spec.args[at + 1..].to_vec()),
                None => (spec.program.clone(), Vec::new(), spec.args.clone()),
            }
        }
        _ => (spec.program.clone(), Vec::new(), spec.args.clone()),
    }
}

fn record(app: &AppInfo, i: &InstanceInfo, user: &str) -> Js {
    let spec = &app.spec;
    let (exec_path, node_args, args) = split_args(app);
    let interpreter = match spec.interpreter.as_deref() {
        None | Some("sh") => "none".to_string(),
        Some(i) => i.rsplit('/').next().unwrap_or(i).to_string(),
    };
    let (out_log, err_log) = app.log_files.get(i.index as usize).cloned().unwrap_or_default();
    let env = Js::obj(spec.env.iter().map(|(k, v)| (k.as_str(), Js::str(v.as_str()))));
    let watch = if spec.watch.is_empty() {
        Js::Bool(false)
    } else {
        Js::Arr(spec.watch.iter().map(|p| Js::str(p.display().to_string())).collect())
    };
    let uptime = i.started_at_ms.map(|t| Js::num(t as f64)).unwrap_or(Js::num(0));
    let mut pm2_env = Js::obj([
        ("name", Js::str(spec.name.as_str())),
        ("namespace", Js::str(spec.namespace.as_str())),
        ("args", strings(&args)),
        ("env", env),
        ("merge_logs", Js::Bool(spec.logs.merge_logs)),
        ("autostart", Js::Bool(spec.autostart)),
        ("autorestart", Js::Bool(spec.autorestart)),
        ("watch", watch),
        ("instance_var", Js::str(spec.instance_var.as_str())),
        ("username", Js::str(spec.user.as_deref().unwrap_or(user))),
        ("kill_timeout", Js::num(spec.kill_timeout_ms as f64)),
        ("node_args", strings(&node_args)),
        ("pm_exec_path", Js::str(exec_path)),
        ("pm_cwd", Js::str(spec.cwd.display().to_string())),
        ("exec_interpreter", Js::str(interpreter)),
        ("exec_mode", Js::str(if spec.is_cluster() { "cluster_mode" } else { "fork_mode" })),
        ("instances", Js::num(spec.instances)),
        ("pm_out_log_path", Js::str(out_log.display().to_string())),
        ("pm_err_log_path", Js::str(err_log.display().to_string())),
        ("pm_pid_path", Js::str(spec.pid_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default())),
        ("min_uptime", Js::num(spec.min_uptime_ms as f64)),
        ("max_restarts", Js::num(spec.max_restarts)),
        ("restart_delay", Js::num(spec.restart_delay_ms as f64)),
        (spec.instance_var.as_str(), Js::num(i.index)),
    ]);
    if let Some(limit) = spec.max_memory_restart {
        pm2_env.insert_missing("max_memory_restart", Js::num(limit as f64));
    }
    if let Some(cron) = &spec.cron_restart {
        pm2_env.insert_missing("cron_restart", Js::str(cron.as_str()));
    }
    if !spec.stop_exit_codes.is_empty() {
        pm2_env.insert_missing(
            "stop_exit_codes",
            Js::Arr(spec.stop_exit_codes.iter().map(|c| Js::num(*c)).collect()),
        );
    }
    // PM2 also spreads the app's environment over the record (`pm2_env.NODE_ENV`).
    for (k, v) in spec.env.iter() {
        pm2_env.insert_missing(k, Js::str(v.as_str()));
    }
    for (k, v) in [
        ("status", Js::str(status(i.status))),
        ("pm_uptime", uptime),
        ("axm_actions", Js::Arr(Vec::new())),
        ("axm_monitor", Js::obj::<&str>([])),
        ("axm_options", Js::obj::<&str>([])),
        ("axm_dynamic", Js::obj::<&str>([])),
        ("pm_id", Js::num(i.id.unwrap_or(app.id))),
        ("restart_time", Js::num(i.restarts)),
        ("unstable_restarts", Js::num(i.unstable_restarts)),
        ("version", Js::str("N/A")),
    ] {
        if let Js::Obj(entries) = &mut pm2_env {
            entries.retain(|(key, _)| key != k);
            entries.push((k.to_string(), v));
        }
    }
    if let Some(crate::protocol::ExitReason::Code(code)) = i.last_exit.as_ref().map(|e| e.reason) {
        pm2_env.insert_missing("exit_code", Js::num(code));
    }
    Js::obj([
        ("pid", Js::num(i.pid.unwrap_or(0))),
        ("name", Js::str(spec.name.as_str())),
        ("pm2_env", pm2_env),
        ("pm_id", Js::num(i.id.unwrap_or(app.id))),
        (
            "monit",
            Js::obj([
                ("memory", Js::num(i.memory_bytes.unwrap_or(0) as f64)),
                ("cpu", Js::num(i.cpu_percent.map(|c| (c as f64 * 10.0).round() / 10.0).unwrap_or(0.0))),
            ]),
        ),
    ])
}

/// What to use instead of a PM2 verb herder does not have.
pub fn refusal(verb: &str) -> Option<String> {
    let (what, hint) = REFUSED.iter().find(|(verbs, ..)| verbs.contains(&verb)).map(|(_, w, h)| (*w, *h))?;
    Some(format!("`{verb}`: {what}\nhint: {hint}"))
}

const MODULES: &str = "herder has no module system";
const MODULES_HINT: &str = "log rotation is built in (`log_max_size`, `log_retain`, `log_compress` in herder.toml); run any other tool as an app with `herder start`";
const PLUS: &str =
    "PM2 Plus is PM2's hosted monitoring service; herder does not send anything off the machine";
const PLUS_HINT: &str = "`herder monit` (terminal dashboard), `herder metrics --listen 9209` (Prometheus), `herder events` and webhooks in `[[apps.hooks]]`";

/// PM2's verbs that herder does not have: (verbs, why, what to use).
const REFUSED: &[(&[&str], &str, &str)] = &[
    (
        &["deploy"],
        "herder does not deploy code over SSH",
        "deploy with your CI or git, then run `herder startOrRestart ecosystem.config.js --env production` on the host",
    ),
    (
        &[
            "install",
            "module:install",
            "uninstall",
            "module:uninstall",
            "module:update",
            "module:generate",
            "package",
            "publish",
            "module:publish",
            "install-otel",
            "uninstall-otel",
            "autoinstall",
        ],
        MODULES,
        MODULES_HINT,
    ),
    (
        &["set", "multiset", "get", "unset", "conf", "config"],
        "herder has no settings store: an app's settings live in its config file, herder's own in its commands",
        "edit herder.toml (or the ecosystem file) and `herder start` it; `herder metrics --listen` and `herder startup` keep their own settings",
    ),
    (&["link", "unlink", "plus", "register", "login", "logout", "open", "monitor", "unmonitor"], PLUS, PLUS_HINT),
    (
        &["trigger"],
        "custom actions belong to PM2's APM library, which herder does not load into apps",
        "send the app a signal it handles: `herder signal SIGUSR2 <app>`",
    ),
    (
        &["send", "attach"],
        "herder does not connect to apps' standard input",
        "read the app's output with `herder logs <app>`",
    ),
    (
        &["pull", "forward", "backward"],
        "herder does not manage git checkouts",
        "`git pull` in the app's directory, then `herder restart <app>`",
    ),
    (
        &["inspect"],
        "herder does not attach Node's inspector to a running app",
        "start the app with `--node-args=\"--inspect\"` (or `interpreter_args` in the config)",
    ),
    (
        &["serve", "expose"],
        "herder has no built-in static file server",
        "run one as an app: `herder start \"python3 -m http.server 8080\" --name static`",
    ),
    (
        &["slist", "sysinfos"],
        "herder does not print PM2's host metrics",
        "`herder doctor` says what the machine offers; `herder metrics` prints the apps' and the daemon's figures",
    ),
    (&["examples"], "herder has no examples command", "`herder --help`, `herder start --help`, and the README's quick start"),
    (
        &["create"],
        "herder has no sample-app generator",
        "`herder init` writes a commented herder.toml to start from",
    ),
    (
        &["logrotate"],
        "herder rotates logs itself, by renaming at line boundaries: no logrotate configuration is needed",
        "set `log_max_size`, `log_retain`, `log_compress`; with an external logrotate, run `herder reload-logs` in its postrotate",
    ),
    (
        &["cleardump"],
        "herder has no cleardump",
        "remove `$HERDER_HOME/dump.json` (and `dump.json.bak`), or `herder save --force` once no app runs",
    ),
    (
        &["deepUpdate"],
        "herder does not install itself",
        "install the new herder (`cargo install --path .` or your package manager), then `herder update` replaces the daemon in place",
    ),
    (
        &["profile:cpu", "profile:mem"],
        "herder's daemon is not a Node process to profile",
        "profile it with `perf record -p $(cat $HERDER_HOME/daemon.pid)`; `herder ping` and `herder metrics` show its memory and CPU",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AppSpec;
    use std::path::PathBuf;

    fn instance(index: u32, status: Status, pid: Option<u32>) -> InstanceInfo {
        InstanceInfo {
            index,
            generation: 0,
            id: None,
            status,
            pid,
            start_ticks: None,
            started_at_ms: Some(1_700_000_000_000),
            restarts: 2,
            unstable_restarts: 0,
            last_exit: None,
            reason: None,
            cgroup: None,
            memory_bytes: Some(1024),
            cpu_percent: Some(1.25),
            cpu_seconds: None,
            processes: None,
            usage_history: Vec::new(),
            history: Vec::new(),
            oom_kills: 0,
            status_text: None,
            probes: Vec::new(),
            unready: false,
            port: None,
        }
    }

    fn app() -> AppInfo {
        let mut spec = AppSpec::new("api", "/usr/bin/node", PathBuf::from("/srv/api"));
        spec.script = "server.js".into();
        spec.interpreter = Some("node".into());
        spec.args = vec![
            "--max-old-space-size=512".into(),
            "/srv/api/server.js".into(),
            "--port".into(),
            "3000".into(),
        ];
        spec.env = std::sync::Arc::new([("NODE_ENV".to_string(), "production".to_string())].into());
        spec.instances = 2;
        AppInfo {
            id: 4,
            spec,
            instances: vec![
                instance(0, Status::Online, Some(100)),
                instance(1, Status::WaitingRestart, None),
            ],
            log_files: vec![("/o0".into(), "/e0".into()), ("/o1".into(), "/e1".into())],
            log_errors: Vec::new(),
            balancer: None,
            spread: None,
        }
    }

    #[test]
    fn a_record_per_instance_in_pm2s_shape() {
        let v = serde_json::to_value(records(&[app()])).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        let r = &v[0];
        assert_eq!(r["pid"], 100);
        assert_eq!(r["pm_id"], 4);
        assert_eq!(r["monit"]["memory"], 1024);
        assert_eq!(r["monit"]["cpu"], 1.3);
        let e = &r["pm2_env"];
        assert_eq!(e["status"], "online");
        assert_eq!(e["pm_exec_path"], "/srv/api/server.js");
        assert_eq!(e["node_args"], serde_json::json!(["--max-old-space-size=512"]));
        assert_eq!(e["args"], serde_json::json!(["--port", "3000"]));
        assert_eq!(e["exec_interpreter"], "node");
        assert_eq!(e["exec_mode"], "fork_mode");
        assert_eq!(e["restart_time"], 2);
        assert_eq!(e["NODE_ENV"], "production");
        assert_eq!(e["env"]["NODE_ENV"], "production");
        assert_eq!(e["NODE_APP_INSTANCE"], 0);
        assert_eq!(e["pm_out_log_path"], "/o0");
        let second = &v[1];
        assert_eq!(second["pid"], 0);
        assert_eq!(second["pm2_env"]["status"], "waiting restart");
        assert_eq!(second["pm2_env"]["NODE_APP_INSTANCE"], 1);
        assert_eq!(second["pm2_env"]["pm_err_log_path"], "/e1");
    }

    #[test]
    fn refused_verbs_name_what_to_use() {
        let r = refusal("deploy").unwrap();
        assert!(r.starts_with("`deploy`: herder does not deploy"), "{r}");
        assert!(r.contains("\nhint: "), "{r}");
        assert!(refusal("install").unwrap().contains("log_max_size"));
        assert!(refusal("list").is_none());
    }
}
