//! Every PM2 verb (pm2-compat.md §2): acted on in PM2's shape, or refused with what to use; and a
//! shell script written for PM2 run unchanged with `pm2` pointing at herder.

use std::process::Command;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn idle() -> String {
    fixture("idle.sh").to_str().unwrap().to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two apps: `api` with two instances and a secret, `web` with one.
fn two_apps(h: &TestHome) {
    h.ok(&[
        "start",
        &idle(),
        "--name",
        "api",
        "-i",
        "2",
        "--env",
        "API_TOKEN=hunter22",
        "--env",
        "NODE_ENV=prod",
    ]);
    h.ok(&["start", &idle(), "--name", "web"]);
    h.wait_status("api", Status::Online, T);
    h.wait_status("web", Status::Online, T);
}

#[test]
fn jlist_prints_pm2s_process_records_with_secrets_masked() {
    let h = TestHome::new();
    two_apps(&h);
    let out = h.run(&["jlist"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(!text.ends_with('\n'), "PM2 prints no newline after the JSON when piped");
    assert!(!text.contains("hunter22"), "the secret is masked: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let records = v.as_array().unwrap();
    assert_eq!(records.len(), 3, "one record per instance");
    let api = h.app("api");
    for (r, i) in records.iter().filter(|r| r["name"] == "api").zip(&api.instances) {
        assert_eq!(r["pid"], i.pid.unwrap());
        assert_eq!(r["pm_id"], i.id.unwrap(), "each instance has its own id");
        assert_eq!(r["pm2_env"]["status"], "online");
        assert_eq!(r["pm2_env"]["exec_mode"], "fork_mode");
        assert_eq!(r["pm2_env"]["instances"], 2);
        assert_eq!(r["pm2_env"]["NODE_APP_INSTANCE"], i.index);
        assert_eq!(r["pm2_env"]["restart_time"], 0);
        assert_eq!(r["pm2_env"]["namespace"], "default");
        assert_eq!(r["pm2_env"]["env"]["NODE_ENV"], "prod");
        assert_eq!(r["pm2_env"]["env"]["API_TOKEN"], "********");
        assert_eq!(r["pm2_env"]["NODE_ENV"], "prod", "the env is spread over pm2_env as PM2 does");
        assert!(r["pm2_env"]["pm_uptime"].as_u64().unwrap() > 0);
        assert!(r["monit"]["memory"].is_u64() && r["monit"]["cpu"].is_number(), "{}", r["monit"]);
    }
    h.ok(&["stop", "web"]);
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["jlist"])).unwrap();
    let web = v.as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap();
    assert_eq!(web["pid"], 0);
    assert_eq!(web["pm2_env"]["status"], "stopped");
}

#[test]
fn prettylist_is_what_nodes_util_inspect_prints_of_jlist() {
    let h = TestHome::new();
    two_apps(&h);
    // An app whose values need quoting and escaping, and args grouped in columns.
    h.ok(&[
        "start",
        &idle(),
        "--name",
        "odd",
        "--env",
        "QUOTE=it's \"x\"",
        "--env",
        "weird-key=tab\there",
        "--",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
    ]);
    h.wait_status("odd", Status::Online, T);
    let jlist = h.dir.path().join("jlist.json");
    std::fs::write(&jlist, h.ok(&["jlist"])).unwrap();
    let pretty = h.ok(&["prettylist"]);
    let node = Command::new("node")
        .arg("-e")
        .arg("process.stdout.write(require('util').inspect(JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')), false, null, false))")
        .arg(&jlist)
        .output()
        .expect("node runs (.ci/run installs it)");
    assert!(node.status.success(), "{}", String::from_utf8_lossy(&node.stderr));
    // The records are read at two moments: only the sampled figures may differ.
    let figures = |s: &str| -> String {
        s.lines()
            .filter(|l| !["memory:", "cpu:", "pm_uptime:"].iter().any(|k| l.trim_start().starts_with(k)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(figures(&pretty), figures(&stdout(&node)));
    assert!(pretty.contains("name: 'api'"), "{pretty}");
    assert!(pretty.contains("restart_time: 0"), "{pretty}");
}

#[test]
fn env_pid_and_id_answer_as_pm2_does() {
    let h = TestHome::new();
    two_apps(&h);
    let api = h.app("api");
    let env = h.ok(&["env", &api.id.to_string()]);
    assert!(env.lines().any(|l| l == "NODE_ENV: prod"), "{env}");
    assert!(env.lines().any(|l| l == "API_TOKEN: ********"), "{env}");
    let shown = h.ok(&["env", "api", "--show-secrets"]);
    assert!(shown.lines().any(|l| l == "API_TOKEN: hunter22"), "{shown}");
    let err = h.fails(&["env", "99"]);
    assert!(err.contains("99"), "{err}");

    let pids: Vec<u32> = h.ok(&["pid", "api"]).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(pids, api.instances.iter().map(|i| i.pid.unwrap()).collect::<Vec<_>>());
    assert_eq!(h.ok(&["pid"]).lines().count(), 3);
    assert_eq!(h.ok(&["pid", "nosuchapp"]), "\n");
    h.ok(&["stop", "web"]);
    assert_eq!(h.ok(&["pid", "web"]), "0\n", "PM2 prints 0 for a stopped app");

    let ids: Vec<String> = api.instances.iter().map(|i| i.id.unwrap().to_string()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(h.ok(&["id", "api"]), format!("[ {} ]\n", ids.join(", ")));
    assert_eq!(h.ok(&["id", "nosuchapp"]), "[]\n");
}

#[test]
fn start_or_restart_starts_the_missing_apps_and_restarts_the_running_ones() {
    let h = TestHome::new();
    let file = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"a\"\nscript = \"{0}\"\n\n[[apps]]\nname = \"b\"\nscript = \"{0}\"\n",
            idle()
        ),
    );
    let file = file.to_str().unwrap();
    let out = h.ok(&["startOrRestart", file]);
    assert!(out.contains("started `a`, `b`"), "{out}");
    h.wait_status("a", Status::Online, T);
    h.wait_status("b", Status::Online, T);
    let out = h.ok(&["startOrRestart", file]);
    assert!(out.contains("restarted `a`, `b`"), "{out}");
    assert_eq!(h.app("a").instances[0].restarts, 1);
}

#[test]
fn a_config_file_stands_for_its_apps_in_stop_reset_and_delete() {
    let h = TestHome::new();
    let file = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"a\"\nscript = \"{0}\"\n\n[[apps]]\nname = \"b\"\nscript = \"{0}\"\n",
            idle()
        ),
    );
    h.ok(&["start", &idle(), "--name", "other"]);
    h.ok(&["start", file.to_str().unwrap()]);
    h.wait_status("a", Status::Online, T);
    let out = h.ok(&["stop", "herder.toml"]);
    assert!(out.contains("stopped `a`, `b`"), "{out}");
    assert_eq!(h.app("other").instances[0].status, Status::Online, "only the file's apps");
    h.ok(&["reset", "herder.toml"]);
    let out = h.ok(&["delete", "herder.toml"]);
    assert!(out.contains("deleted `a`, `b`"), "{out}");
    let names: Vec<String> = h.list().into_iter().map(|a| a.spec.name).collect();
    assert_eq!(names, ["other"]);
}

#[test]
fn pm2s_spacing_of_watch_paths_and_the_simple_ecosystem_are_understood() {
    let h = TestHome::new();
    let err = h.fails(&["start", &idle(), "--watch", "src"]);
    assert!(err.contains("--watch=src"), "{err}");
    assert!(h.list().is_empty());
    let out = h.ok(&["ecosystem", "simple"]);
    assert!(out.contains("wrote herder.toml"), "{out}");
    assert!(h.dir.path().join("herder.toml").is_file() && !h.dir.path().join("simple").exists());
    let out = h.run(&["stop", "all", "--watch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: `--watch`"));
}

/// PM2's verbs herder answers: each run for real, except those that need a terminal or root
/// (asked for their help: the verb exists) and `kill`, run last.
const ACTED_ON: &[&[&str]] = &[
    &["ping"],
    &["start", "IDLE", "--name", "v"],
    &["stop", "v"],
    &["restart", "v"],
    &["reload", "v"],
    &["startOrReload", "--help"],
    &["scale", "v", "2"],
    &["scale", "v", "-1"],
    &["gracefulReload", "v"],
    &["reset", "v"],
    &["sendSignal", "SIGWINCH", "v"],
    &["signal", "SIGWINCH", "v"],
    &["list"],
    &["ls"],
    &["l"],
    &["ps"],
    &["status"],
    &["jlist"],
    &["prettylist"],
    &["describe", "v"],
    &["desc", "v"],
    &["info", "v"],
    &["show", "v"],
    &["env", "v"],
    &["pid", "v"],
    &["id", "v"],
    &["report"],
    &["logs", "v", "--nostream"],
    &["log", "v", "--nostream"],
    &["flush", "v"],
    &["reloadLogs"],
    &["reload-logs"],
    &["save"],
    &["dump"],
    &["resurrect"],
    &["ecosystem", "eco.toml"],
    &["init", "init.toml"],
    &["completion", "bash"],
    &["monit", "--help"],
    &["dashboard", "--help"],
    &["dash", "--help"],
    &["imonit", "--help"],
    &["startup", "--help"],
    &["unstartup", "--help"],
    &["update", "--help"],
    &["updatePM2", "--help"],
    &["startOrRestart", "--help"],
    &["delete", "v"],
    &["start", "IDLE", "--name", "w"],
    &["del", "w"],
    &["kill"],
];

/// PM2's verbs herder does not have.
const REFUSED: &[&str] = &[
    "trigger",
    "send",
    "attach",
    "pull",
    "forward",
    "backward",
    "inspect",
    "serve",
    "expose",
    "slist",
    "sysinfos",
    "examples",
    "logrotate",
    "cleardump",
    "deepUpdate",
    "profile:cpu",
    "profile:mem",
    "create",
    "set",
    "multiset",
    "get",
    "unset",
    "conf",
    "config",
    "install",
    "module:install",
    "module:update",
    "uninstall",
    "module:uninstall",
    "module:generate",
    "package",
    "publish",
    "module:publish",
    "deploy",
    "install-otel",
    "uninstall-otel",
    "autoinstall",
    "link",
    "unlink",
    "plus",
    "register",
    "login",
    "logout",
    "open",
    "monitor",
    "unmonitor",
];

#[test]
fn every_pm2_verb_is_acted_on_or_refused_with_what_to_use() {
    let h = TestHome::new();
    for verb in REFUSED {
        let out = h.run(&[verb, "x"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb}: {err}");
        assert!(err.starts_with(&format!("error: `{verb}`: ")), "{verb}: {err}");
        assert!(err.contains("\nhint: "), "{verb} names what to use: {err}");
    }
    assert!(h.daemon_pid().is_none(), "a refused verb starts no daemon");
    let idle = idle();
    for args in ACTED_ON {
        let args: Vec<&str> = args.iter().map(|a| if *a == "IDLE" { idle.as_str() } else { a }).collect();
        h.ok(&args);
        if args[0] == "start" {
            h.wait_status(args[3], Status::Online, T);
        }
    }
    assert!(h.dir.path().join("eco.toml").is_file(), "`ecosystem` writes a config as `init` does");
}

#[test]
fn usage_in_errors_is_the_commands_whole_usage() {
    let h = TestHome::new();
    let err = h.fails(&["show", "--json"]);
    assert!(err.contains("Usage: herder show [OPTIONS] <TARGET>"), "{err}");
    let err = h.fails(&["restart", "--update-env"]);
    assert!(err.contains("Usage: herder restart [OPTIONS] <TARGETS>..."), "{err}");
    let err = h.fails(&["logs", "--lines", "5", "--bogus"]);
    assert!(err.contains("Usage: herder logs [OPTIONS] [TARGETS]..."), "{err}");
    assert!(!err.contains("--lines <N> [TARGETS]"), "{err}");
}

#[test]
fn report_gathers_versions_doctor_apps_and_the_daemon_log_without_starting_a_daemon() {
    let h = TestHome::new();
    let out = h.ok(&["report"]);
    assert!(out.contains("no daemon runs for"), "{out}");
    assert!(h.daemon_pid().is_none(), "report starts no daemon");
    two_apps(&h);
    let out = h.ok(&["report"]);
    for part in
        ["## versions", "herder (this command): ", "kernel: ", "## daemon", "## doctor", "## apps", "api:1"]
    {
        assert!(out.contains(part), "{part} in:\n{out}");
    }
    assert!(out.contains("daemon started"), "the daemon log's tail: {out}");
    assert!(!out.contains("hunter22"), "{out}");
}

/// A deployment script written for PM2, run with `pm2` on PATH being herder.
const PM2_SCRIPT: &str = r#"#!/usr/bin/env bash
set -u
fail() { echo "FAILED: $*"; exit 1; }
pm2 start "$APP" --name api -i 2 --max-memory-restart 300M || fail start
pm2 start "$APP" --name worker --no-autorestart || fail start worker
pm2 restart api --update-env || fail restart
pm2 prettylist | grep -q "name: 'api'" || fail prettylist
[ "$(pm2 jlist | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).filter(p=>p.pm2_env.status==="online").length))')" = 3 ] || fail jlist
pm2 stop nosuchapp && fail "stop of a missing app succeeded"
pm2 restart nosuchapp && fail "restart of a missing app succeeded"
pm2 delete nosuchapp && fail "delete of a missing app succeeded"
pm2 describe nosuchapp > /dev/null 2>&1 && fail "describe of a missing app succeeded"
pm2 stop worker || fail stop
pm2 list | grep -q worker || fail list
pm2 save || fail save
pm2 delete all || fail delete
pm2 resurrect || fail resurrect
[ "$(pm2 pid api | wc -l)" = 2 ] || fail pid
pm2 kill || fail kill
echo "all good"
"#;

#[test]
fn a_pm2_shell_script_runs_unchanged_with_pm2_pointing_at_herder() {
    let h = TestHome::new();
    let bin = h.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("pm2")).unwrap();
    let script = h.write("deploy.sh", PM2_SCRIPT);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg(&script)
        .env("PATH", path)
        .env("APP", idle())
        .env("HERDER_HOME", &h.home)
        .current_dir(h.dir.path())
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all good"), "{text}");
}
