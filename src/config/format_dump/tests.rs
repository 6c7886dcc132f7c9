//! Tests of reading PM2's `dump.pm2`.

use super::super::format_json;
use super::*;

fn fixture() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pm2/dump.pm2")).unwrap()
}

fn json(v: &Value) -> serde_json::Value {
    to_json(v)
}

fn apps(text: &str, shell: &BTreeMap<String, String>) -> (Vec<serde_json::Value>, LeftOut) {
    let root = format_json::parse(text).unwrap();
    let dump = to_ecosystem(&root, shell).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(dump.errors.is_empty(), "{:?}", dump.errors);
    let j = json(&dump.root);
    (j["apps"].as_array().unwrap().clone(), dump.left_out)
}

#[test]
fn the_fixture_is_recognised_by_name_and_by_shape() {
    assert!(is_dump_name("dump.pm2"));
    assert!(is_dump_name("DUMP.PM2.BAK"));
    assert!(!is_dump_name("dump.pm2.old"));
    let text = fixture();
    assert!(sniff(&text));
    assert!(looks_like(&format_json::parse(&text).unwrap()));
    assert!(!looks_like(&format_json::parse(r#"[{"script": "a.js"}]"#).unwrap()));
    assert!(!looks_like(&format_json::parse(r#"{"apps": []}"#).unwrap()));
    assert!(!sniff("[[apps]]\nscript = \"pm_exec_path\"\n"));
    // `pm2 jlist` prints the records under `pm2_env`.
    assert!(looks_like(&format_json::parse(r#"[{"pid": 1, "pm2_env": {"name": "a"}}]"#).unwrap()));
}

#[test]
fn records_of_one_name_become_one_app_with_their_options() {
    let (apps, _) = apps(&fixture(), &BTreeMap::new());
    let names: Vec<&str> = apps.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "worker", "sh", "api"]);

    let web = &apps[0];
    assert_eq!(web["script"], "/srv/shop/server.js");
    assert_eq!(web["args"], serde_json::json!(["--verbose", "--level", "3"]));
    assert_eq!(web["cwd"], "/srv/shop");
    assert_eq!(web["namespace"], "shop");
    assert_eq!(web["instances"], 2);
    assert_eq!(web["exec_mode"], "cluster_mode");
    assert_eq!(web["max_memory_restart"], 209715200);
    assert_eq!(
        web["env"],
        serde_json::json!({"GREETING": "hello", "PORT": "18431",
        "LANG": "en_US.UTF-8", "PATH": "/home/deploy/.nvm/versions/node/v20.20.2/bin:/usr/local/bin:/usr/bin:/bin"})
    );
    // `node` for a .js file, PM2's defaults, its bookkeeping and its default log place: gone.
    for key in [
        "interpreter",
        "exec_interpreter",
        "autorestart",
        "treekill",
        "status",
        "pm_uptime",
        "axm_monitor",
        "out_file",
        "error_file",
        "instance_var",
        "username",
        "NODE_APP_INSTANCE",
        "GREETING",
    ] {
        assert!(web.get(key).is_none(), "`{key}` kept: {web:#}");
    }

    let worker = &apps[1];
    assert_eq!(worker["interpreter"], "python3");
    assert_eq!(worker["args"], serde_json::json!(["one", "two words"]));
    assert_eq!(worker["autorestart"], false);
    assert_eq!(worker["watch"], true);
    assert_eq!(worker["cron_restart"], "0 3 * * *");
    assert!(worker.get("namespace").is_none(), "the default namespace: {worker:#}");
    assert!(worker.get("instances").is_none());
    assert_eq!(worker["env"]["QUEUE"], "jobs");

    // `bash -c "<command>"` is the command string again.
    let sh = &apps[2];
    assert_eq!(sh["script"], "sleep 1000 && echo x");
    assert!(sh.get("args").is_none() && sh.get("interpreter").is_none(), "{sh:#}");
    assert_eq!(sh["log_file"], "/var/log/shop/sh.log");
    assert_eq!(sh["stop_exit_codes"], 0);
    assert_eq!(sh["exp_backoff_restart_delay"], 100);
    assert_eq!(sh["env"]["NESTED"], "{\"a\":1}");
    assert!(sh["env"].get("sh").is_none(), "PM2's entry under the app's name: {sh:#}");

    let api = &apps[3];
    assert_eq!(api["instances"], 2);
    assert_eq!(api["port"], 18500);
    assert_eq!(api["interpreter_args"], serde_json::json!(["--max-old-space-size=128"]));
    assert_eq!(api["out_file"], "/var/log/shop/api.out");
    assert_eq!(api["error_file"], "/var/log/shop/api.err");
    assert_eq!(api["env_production"], serde_json::json!({"NODE_ENV": "production"}));
    assert_eq!(api["time"], true);
    assert!(api.get("log_date_format").is_none(), "what `time` means in PM2: {api:#}");
    for (key, value) in
        [("kill_timeout", 4000), ("min_uptime", 5000), ("max_restarts", 5), ("restart_delay", 250)]
    {
        assert_eq!(api[key], value, "{api:#}");
    }
    // `PORT` comes from `port`.
    assert!(api["env"].get("PORT").is_none(), "{api:#}");
    assert_eq!(api["env"]["NODE_ENV"], "production");
    assert_eq!(api["env"]["API_KEY"], "k1");
}

#[test]
fn the_env_rule_drops_pm2s_the_sessions_and_what_the_shell_already_gives() {
    let shell: BTreeMap<String, String> = [
        ("PATH", "/home/deploy/.nvm/versions/node/v20.20.2/bin:/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("GREETING", "hello"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (apps, left) = apps(&fixture(), &shell);
    // PATH is the same here: inherited. LANG differs: kept. GREETING is the same: inherited.
    assert_eq!(apps[0]["env"], serde_json::json!({"PORT": "18431", "LANG": "en_US.UTF-8"}));
    assert_eq!(left.inherited, ["GREETING", "PATH"]);
    assert_eq!(
        left.pm2,
        [
            "PM2_HOME",
            "PM2_USAGE",
            "PM2_INTERACTOR_PROCESSING",
            "web",
            "unique_id",
            "worker",
            "PM2_JSON_PROCESSING",
            "sh",
            "api"
        ]
    );
    for name in ["SHELL", "PWD", "HOME", "USER", "SHLVL", "SSH_TTY", "XDG_RUNTIME_DIR", "_", "OLDPWD"] {
        assert!(left.session.iter().any(|n| n == name), "{name}: {left:?}");
    }
    let comment = left.comment();
    assert!(comment.lines().all(|l| l.starts_with('#') && l.len() <= 100), "{comment}");
    assert!(comment.contains("PM2_HOME") && comment.contains("SSH_TTY") && comment.contains("GREETING"));

    // With `filter_env`, PM2 copied nothing from the shell: only its own variables go.
    let cx =
        VarContext { app: "a", instance_var: "NODE_APP_INSTANCE", port: None, filtered: true, shell: &shell };
    let s = |t: &str| Value::new(Kind::Str(t.into()), Span::UNKNOWN);
    assert_eq!(keep_var("HOME", &s("/root"), &cx), Ok(()));
    assert_eq!(keep_var("GREETING", &s("hello"), &cx), Ok(()));
    assert_eq!(keep_var("PM2_HOME", &s("/root/.pm2"), &cx), Err(Drop::Pm2));
    let cx = VarContext { filtered: false, port: Some("3000"), ..cx };
    assert_eq!(keep_var("PORT", &s("3000"), &cx), Err(Drop::Port));
    assert_eq!(keep_var("PORT", &s("3001"), &cx), Ok(()));
    assert_eq!(keep_var("npm_lifecycle_event", &s("start"), &cx), Err(Drop::Session));
    assert_eq!(keep_var("a", &s("{}"), &cx), Err(Drop::Pm2));
    assert_eq!(keep_var("NODE_ENV", &s("production"), &cx), Ok(()));
}

#[test]
fn errors_name_the_record_and_its_app() {
    let err = |text: &str| {
        let root = format_json::parse(text).unwrap();
        let e = match to_ecosystem(&root, &BTreeMap::new()) {
            Ok(dump) => dump.errors,
            Err(e) => e,
        };
        e.iter()
            .map(|e| format!("{}:{}: {}", e.line.unwrap_or(0), e.column.unwrap_or(0), e.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(err("[]"), ["1:1: the PM2 dump holds no process"]);
    assert_eq!(err("{}")[0], "1:1: a PM2 dump is a JSON array of process records, found a table");
    assert_eq!(
        err("[\n {\"name\": \"a\", \"pm_exec_path\": \"/a.js\"},\n {\"name\": \"b\"},\n 3\n]"),
        [
            "3:2: record #2 (app `b`) has no `pm_exec_path`",
            "4:2: record #3 must be a process record, found an integer"
        ]
    );
    assert_eq!(
        err("[{\"name\": \"a\", \"pm_exec_path\": \"/a.js\"},\n {\"name\": \"a\", \"pm_exec_path\": \"/b.js\"}]"),
        ["2:2: records #1 and #2 are both named `a` but run different programs"]
    );
    assert_eq!(err("[{\"pm_exec_path\": \"/a.js\"}]"), ["1:2: record #1 has no `name`"]);
}

#[test]
fn log_paths_in_pm2s_place_are_left_to_herder() {
    let home = Some("/srv/pm2");
    assert!(is_default_log("/home/u/.pm2/logs/web-out-0.log", None, "web", Some("out")));
    assert!(is_default_log("/srv/pm2/logs/web-error.log", home, "web", Some("error")));
    assert!(is_default_log("/srv/pm2/logs/my-app-out.log", home, "my app", Some("out")));
    assert!(is_default_log("/srv/pm2/logs/web.log", home, "web", None));
    assert!(!is_default_log("/srv/app/logs/web.log", home, "web", None));
    assert!(!is_default_log("/srv/app/logs/web-out.log", None, "web", Some("out")));
    assert!(!is_default_log("/var/log/web-out.log", home, "web", Some("out")));
    assert!(!is_default_log("/srv/pm2/logs/other-out.log", home, "web", Some("out")));
    assert_eq!(common_log_path(&["/var/log/api-4.log", "/var/log/api-5.log"]), "/var/log/api.log");
    assert_eq!(common_log_path(&["/var/log/api.out", "/var/log/api.out"]), "/var/log/api.out");
    assert_eq!(common_log_path(&["/var/log/a.log", "/var/log/b.log"]), "/var/log/a.log");
}
