//! Config formats end to end: PM2 ecosystem files (`.js`, `.cjs`, `.mjs`, an ESM package, YAML,
//! JSON5-style and strict JSON) started under herder, each app dumping its argv, cwd and env;
//! `--env`, the environment's precedence, `restart --update-env` removing a variable;
//! malformed files in every format rejected with a position and nothing started; `convert`
//! output loading back to the same specs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use herder::config::{self, LoadOptions, ResolveContext};
use herder::protocol::Status;
use serde_json::Value as Json;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn eco(rel: &str) -> PathBuf {
    fixture("ecosystem").join(rel)
}

/// What one app of a fixture must look like once started.
struct Expect {
    name: &'static str,
    instances: u32,
    /// Arguments after the script.
    argv: &'static [&'static str],
    /// Node's own flags (`interpreter_args`), when checked.
    exec_argv: Option<&'static [&'static str]>,
    /// The working directory, relative to `tests/fixtures/ecosystem`.
    cwd: &'static str,
    env: &'static [(&'static str, &'static str)],
    absent: &'static [&'static str],
}

const fn app(name: &'static str, cwd: &'static str) -> Expect {
    Expect { name, instances: 1, argv: &[], exec_argv: None, cwd, env: &[], absent: &[] }
}

/// Starts `file` (relative to the ecosystem fixtures) with `flags` and `shell_env`, then checks
/// every app's dump and the list.
fn check(file: &str, flags: &[&str], shell_env: &[(&str, &str)], expect: &[Expect]) -> TestHome {
    let h = TestHome::new();
    let dumps = h.dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let path = eco(file);
    let mut args = vec!["start", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    let mut cmd = h.cmd(&args);
    cmd.env("DUMP_DIR", &dumps);
    for (k, v) in shell_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_success(&out, &args);

    for e in expect {
        for i in 0..e.instances {
            let d = read_dump(&dumps, e.name, i);
            let argv: Vec<&str> = d["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            // Node's argv[2..] holds the arguments; PM2 and herder both put the script first.
            assert_eq!(argv, e.argv, "{file}: argv of `{}`", e.name);
            if let Some(exec_argv) = e.exec_argv {
                let got: Vec<&str> =
                    d["execArgv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                assert_eq!(got, exec_argv, "{file}: interpreter args of `{}`", e.name);
            }
            assert_eq!(Path::new(d["cwd"].as_str().unwrap()), eco(e.cwd), "{file}: cwd of `{}`", e.name);
            let env = &d["env"];
            for (k, v) in e.env {
                assert_eq!(env[k].as_str(), Some(*v), "{file}: `{k}` of `{}` #{i}", e.name);
            }
            for k in e.absent {
                assert!(env.get(k).is_none(), "{file}: `{k}` should not be set for `{}`", e.name);
            }
            assert_eq!(env["HERDER_INSTANCE"].as_str(), Some(i.to_string().as_str()));
        }
    }
    let apps = h.list();
    let mut names: Vec<(&str, usize)> =
        apps.iter().map(|a| (a.spec.name.as_str(), a.instances.len())).collect();
    names.sort();
    let mut want: Vec<(&str, usize)> = expect.iter().map(|e| (e.name, e.instances as usize)).collect();
    want.sort();
    assert_eq!(names, want, "{file}: apps and instance counts");
    h
}

fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "herder {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_dump(dir: &Path, app: &str, instance: u32) -> Json {
    let path = dir.join(format!("{app}-{instance}.json"));
    wait_for(&format!("the dump of `{app}` #{instance}"), T, || {
        let text = std::fs::read_to_string(&path).ok()?;
        serde_json::from_str(&text).ok()
    })
}

#[test]
fn basic_js_with_env_production() {
    check(
        "basic/ecosystem.config.js",
        &["--env", "production"],
        &[],
        &[
            Expect {
                env: &[("NODE_ENV", "production"), ("API_URL", "https://api.example.com")],
                ..app("api", "basic")
            },
            Expect {
                argv: &["--queue", "emails", "--concurrency", "4"],
                env: &[("NODE_ENV", "production")],
                ..app("worker", "basic")
            },
        ],
    );
}

#[test]
fn cluster_instances_instance_var_and_increment_var() {
    let h = check(
        "cluster/ecosystem.config.js",
        &[],
        &[],
        &[Expect { instances: 2, env: &[("NODE_ENV", "development")], ..app("web", "cluster") }],
    );
    let dumps = h.dir.path().join("dumps");
    for i in 0..2u32 {
        let d = read_dump(&dumps, "web", i);
        assert_eq!(d["env"]["INSTANCE_ID"].as_str(), Some(i.to_string().as_str()));
        assert_eq!(d["env"]["PORT"].as_str(), Some((4000 + i).to_string().as_str()));
        assert!(d["env"].get("NODE_APP_INSTANCE").is_none(), "instance_var replaces NODE_APP_INSTANCE");
    }
}

#[test]
fn camel_case_keys_and_append_env_to_name() {
    let h = check(
        "camel/ecosystem.config.js",
        &["--env", "staging"],
        &[],
        &[Expect {
            exec_argv: Some(&["--no-warnings"]),
            env: &[("LEVEL", "info")],
            ..app("camel-staging", "apps")
        }],
    );
    let spec = h.app("camel-staging").spec;
    assert_eq!(
        (spec.max_restarts, spec.min_uptime_ms, spec.kill_timeout_ms, spec.restart_delay_ms),
        (5, 2000, 3000, 250)
    );
    assert_eq!(spec.exp_backoff_restart_delay_ms, Some(100));
    assert_eq!(spec.stop_exit_codes, [0]);
}

#[test]
fn cjs_computed_apps() {
    check(
        "cjs/ecosystem.config.cjs",
        &[],
        &[],
        &[
            Expect {
                argv: &["--index", "0"],
                env: &[("SHARED", "yes"), ("APP_NAME", "alpha")],
                ..app("alpha", "cjs")
            },
            Expect {
                argv: &["--index", "1"],
                env: &[("SHARED", "yes"), ("APP_NAME", "beta")],
                ..app("beta", "cjs")
            },
        ],
    );
}

#[test]
fn mjs_export_default() {
    check(
        "mjs/ecosystem.config.mjs",
        &[],
        &[],
        &[Expect { argv: &["--from", "mjs"], env: &[("FORMAT", "esm")], ..app("mjs-app", "mjs") }],
    );
}

#[test]
fn js_inside_an_esm_package_both_styles() {
    check(
        "esm-package/ecosystem.config.js",
        &[],
        &[],
        &[Expect { env: &[("IN_ESM_PACKAGE", "true")], ..app("esm-app", "esm-package") }],
    );
    check(
        "esm-package-cjs/ecosystem.config.js",
        &[],
        &[],
        &[Expect { env: &[("STYLE", "commonjs")], ..app("esm-cjs-app", "esm-package-cjs") }],
    );
}

#[test]
fn yaml_with_anchors_and_python() {
    let h = check(
        "yaml/ecosystem.yaml",
        &["--env", "production"],
        &[],
        &[
            Expect {
                argv: &["--mode", "yaml"],
                env: &[("FROM_YAML", "production"), ("RETRIES", "3")],
                ..app("yaml-node", "yaml")
            },
            Expect {
                instances: 2,
                env: &[("LANGUAGE_NAME", "python"), ("PYTHONUNBUFFERED", "1")],
                absent: &["FROM_YAML"],
                ..app("yaml-python", "yaml")
            },
        ],
    );
    // Merged from the anchor.
    let spec = h.app("yaml-python").spec;
    assert_eq!((spec.max_restarts, spec.kill_timeout_ms), (3, 2000));
}

#[test]
fn json5_style_ecosystem_json() {
    check(
        "json5/ecosystem.json",
        &[],
        &[],
        &[Expect {
            instances: 2,
            argv: &["--port", "8080"],
            env: &[
                ("QUOTED", "double"),
                ("single", "single"),
                ("NUMBER", "42"),
                ("NESTED", r#"{"a":1,"b":[true,null]}"#),
            ],
            ..app("json5-app", "json5")
        }],
    );
}

#[test]
fn strict_json_bare_array() {
    let h = check(
        "strict-json/apps.json",
        &[],
        &[],
        &[Expect {
            argv: &["one", "two words", "three"],
            exec_argv: Some(&["--no-deprecation"]),
            env: &[("JSON_STRICT", "1")],
            ..app("plain-json", "strict-json")
        }],
    );
    assert_eq!(h.app("plain-json").spec.namespace, "batch");
}

#[test]
fn args_as_list_string_command_and_shell() {
    check(
        "args/ecosystem.config.js",
        &[],
        &[],
        &[
            Expect { argv: &["--name", "with space", "--empty", ""], ..app("args-list", "args") },
            Expect { argv: &["--inline", "quoted arg"], ..app("args-command", "args") },
            Expect { argv: &["--via-shell"], env: &[("FROM_SHELL", "1")], ..app("args-shell", "args") },
            Expect {
                argv: &["--x=1"],
                exec_argv: Some(&["--max-old-space-size=64"]),
                ..app("args-interpreter", "args")
            },
        ],
    );
}

#[test]
fn env_file_filter_env_and_port() {
    check(
        "envfile/ecosystem.config.js",
        &["--env", "production"],
        &[("SECRET_TOKEN", "hunter2"), ("KEPT_VAR", "kept")],
        &[Expect {
            env: &[
                ("FROM_FILE", "file"),
                ("OVERRIDDEN", "production"),
                ("PORT", "5055"),
                ("KEPT_VAR", "kept"),
            ],
            absent: &["SECRET_TOKEN"],
            ..app("envfile-app", "envfile")
        }],
    );
}

#[test]
fn bare_app_object() {
    let h = check(
        "bare/ecosystem.config.js",
        &[],
        &[],
        &[Expect { env: &[("BARE", "true")], ..app("bare-app", "bare") }],
    );
    assert_eq!(h.app("bare-app").spec.namespace, "solo");
}

#[test]
fn only_starts_the_named_apps() {
    check(
        "basic/ecosystem.config.js",
        &["--only", "worker"],
        &[],
        &[Expect { argv: &["--queue", "emails", "--concurrency", "4"], ..app("worker", "basic") }],
    );
    let h = TestHome::new();
    let err = h.fails(&["start", eco("basic/ecosystem.config.js").to_str().unwrap(), "--only", "wroker"]);
    assert!(err.contains("no app named `wroker`") && err.contains("did you mean `worker`?"), "{err}");
    assert!(h.daemon_pid().is_none(), "a rejected config does not even start the daemon");
}

/// shell < env_file < env < env_<name>, each layer seen through the variable it wins.
#[test]
fn environment_precedence() {
    let h = TestHome::new();
    let dumps = h.dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    h.write("layers.env", "B=file\nC=file\nD=file\n");
    let text = format!(
        "[[apps]]\nname = \"layers\"\nscript = \"{}\"\nenv_file = \"layers.env\"\n\
         env = {{ C = \"env\", D = \"env\" }}\nenv_production = {{ D = \"production\" }}\n",
        eco("apps/dump.js").display()
    );
    let path = h.write("herder.toml", &text);
    let shell = [("A", "shell"), ("B", "shell"), ("C", "shell"), ("D", "shell")];
    let start = |flags: &[&str]| {
        let mut args = vec!["start", path.to_str().unwrap()];
        args.extend_from_slice(flags);
        let mut cmd = h.cmd(&args);
        cmd.env("DUMP_DIR", &dumps).envs(shell);
        assert_success(&cmd.output().unwrap(), &args);
    };
    let layers = |pid: Option<u64>| {
        let d = wait_for("a new dump", T, || {
            let d = read_dump(&dumps, "layers", 0);
            (Some(d["pid"].as_u64().unwrap()) != pid).then_some(d)
        });
        let got: Vec<String> =
            ["A", "B", "C", "D"].iter().map(|k| d["env"][k].as_str().unwrap().to_string()).collect();
        (got, d["pid"].as_u64())
    };
    start(&[]);
    let (got, pid) = layers(None);
    assert_eq!(got, ["shell", "file", "env", "env"]);
    // Starting the file again with `--env production` restarts the app with the new env.
    start(&["--env", "production"]);
    let (got, _) = layers(pid);
    assert_eq!(got, ["shell", "file", "env", "production"]);
}

#[test]
fn restart_of_a_config_file_resolves_it_again() {
    let h = TestHome::new();
    let dumps = h.dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let write = |level: &str| {
        let text = format!(
            "apps:\n  - name: again\n    script: {}\n    env:\n      LEVEL: {level}\n    env_prod:\n      MODE: prod\n",
            eco("apps/dump.js").display()
        );
        h.write("apps.yaml", &text)
    };
    let path = write("one");
    let run = |verb: &str, flags: &[&str]| {
        let mut args = vec![verb, path.to_str().unwrap()];
        args.extend_from_slice(flags);
        let mut cmd = h.cmd(&args);
        cmd.env("DUMP_DIR", &dumps);
        assert_success(&cmd.output().unwrap(), &args);
    };
    run("start", &[]);
    let first = read_dump(&dumps, "again", 0);
    assert_eq!(first["env"]["LEVEL"].as_str(), Some("one"));
    write("two");
    run("restart", &["--env", "prod"]);
    let second = wait_for("the restarted app's dump", T, || {
        let d = read_dump(&dumps, "again", 0);
        (d["pid"] != first["pid"]).then_some(d)
    });
    assert_eq!(second["env"]["LEVEL"].as_str(), Some("two"));
    assert_eq!(second["env"]["MODE"].as_str(), Some("prod"));
    assert_eq!(h.list().len(), 1);

    // `restart <app>` of an app from a file resolves that file again, with the `--env` the app
    // was started with; an app started from a script restarts as it was.
    let script = eco("apps/dump.js");
    let args = ["start", script.to_str().unwrap(), "--name", "loose"];
    let mut cmd = h.cmd(&args);
    cmd.env("DUMP_DIR", &dumps);
    assert_success(&cmd.output().unwrap(), &args);
    let loose = read_dump(&dumps, "loose", 0);
    write("three");
    let args = ["restart", "all"];
    let mut cmd = h.cmd(&args);
    cmd.env("DUMP_DIR", &dumps);
    assert_success(&cmd.output().unwrap(), &args);
    let third = wait_for("the app restarted from its file", T, || {
        let d = read_dump(&dumps, "again", 0);
        (d["pid"] != second["pid"]).then_some(d)
    });
    assert_eq!(third["env"]["LEVEL"].as_str(), Some("three"));
    assert_eq!(third["env"]["MODE"].as_str(), Some("prod"));
    wait_for("the script app restarted", T, || {
        (read_dump(&dumps, "loose", 0)["pid"] != loose["pid"]).then_some(())
    });
    // A file that no longer loads restarts nothing.
    h.write("apps.yaml", "apps: [\n");
    let before: Vec<_> = h.list().iter().map(|a| a.instances[0].pid).collect();
    let err = h.fails(&["restart", "again"]);
    assert!(err.contains("apps.yaml:"), "{err}");
    let after: Vec<_> = h.list().iter().map(|a| a.instances[0].pid).collect();
    assert_eq!(before, after);
}

#[test]
fn restart_update_env_removes_a_variable() {
    let h = TestHome::new();
    let dumps = h.dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let script = eco("apps/dump.js");
    let args = ["start", script.to_str().unwrap(), "--name", "envy"];
    let mut cmd = h.cmd(&args);
    cmd.env("DUMP_DIR", &dumps).env("GOING_AWAY", "1").env("STAYING", "1");
    assert_success(&cmd.output().unwrap(), &args);
    let first = read_dump(&dumps, "envy", 0);
    assert_eq!(first["env"]["GOING_AWAY"].as_str(), Some("1"));

    let args = ["restart", "envy", "--update-env"];
    let mut cmd = h.cmd(&args);
    cmd.env("DUMP_DIR", &dumps).env_remove("GOING_AWAY").env("STAYING", "2");
    assert_success(&cmd.output().unwrap(), &args);
    let second = wait_for("the restarted app's dump", T, || {
        let d = read_dump(&dumps, "envy", 0);
        (d["pid"] != first["pid"]).then_some(d)
    });
    assert!(second["env"].get("GOING_AWAY").is_none(), "--update-env removes what the shell no longer has");
    assert_eq!(second["env"]["STAYING"].as_str(), Some("2"));
}

/// Every malformed file: its message, line and column; non-zero exit.
const MALFORMED: &[(&str, &str, &str)] = &[
    ("syntax.toml", "2:12", "invalid toml"),
    ("unknown_key.toml", "4:1", "did you mean `max_restarts`?"),
    ("wrong_type.toml", "4:15", "`autorestart` in app `web` must be a boolean"),
    ("bad_duration.toml", "4:17", "invalid duration `10 parsecs`"),
    ("negative_duration.toml", "4:16", "negative duration `-5`"),
    ("bad_size.toml", "4:22", "invalid size `12Q`"),
    ("duplicate_names.toml", "6:8", "duplicate app name `web`"),
    ("missing_script.toml", "1:1", "app `web` has no `script`"),
    ("instances_zero.toml", "4:13", "`instances` in app `web` is 0"),
    ("shell_operator.toml", "3:10", "uses the shell operator `|`"),
    ("bad_signal.toml", "4:15", "did you mean `SIGTERM`?"),
    ("exit_code_range.toml", "4:23", "exit code `300` is out of range"),
    ("wrong_env_value.toml", "4:16", "`env.LIST` in app `web` must be a string, number or boolean"),
    ("syntax.yaml", "4:4", "invalid yaml"),
    ("tabs.yaml", "2:11", "found a tab"),
    ("unknown_key.yaml", "3:5", "did you mean `script`?"),
    ("wrong_type.yaml", "4:16", "`instances` in app `web` must be a number of instances"),
    ("negative_size.yaml", "4:25", "negative size `-1`"),
    ("duplicate_names.yaml", "4:11", "duplicate app name `web`"),
    ("bad_cron.yaml", "4:19", "invalid cron expression"),
    ("env_not_table.yaml", "4:10", "`env` in app `web` must be a table of variables"),
    ("bad_env_file.yaml", "bad.env:2:1", "expected `KEY=value`"),
    ("trailing_garbage.json", "2:1", "unexpected `}` after the value"),
    ("missing_comma.json", "5:7", "expected `,` or `}`"),
    ("unclosed.json", "2:11", "unclosed `[`"),
    ("bad_number.json", "1:63", "invalid number `1.2.3`"),
    ("negative_restarts.json", "5:21", "`max_restarts` in app `web` must be between 0"),
    ("missing_script.json", "3:5", "app `web` has no `script`"),
    ("bad_port.json", "5:11", "port `70000` is out of range"),
    ("bad_exec_mode.json", "5:18", "unknown mode `clustr`"),
    ("syntax.config.js", "4:23", "syntax error: Unexpected token ','"),
    ("throws.config.js", "3:9", "the config threw Error: NO_SUCH_PORT_VARIABLE must be set"),
    ("unknown_key.config.js", "5:5", "did you mean `maxRestarts`?"),
    ("bad_duration.config.js", "6:19", "invalid duration `2 weeks`"),
    ("duplicate_names.config.cjs", "5:13", "duplicate app name `web`"),
    ("syntax.config.mjs", "4:16", "syntax error: Unexpected token ';'"),
    ("not_object.config.js", "1:1", "the config must be a table of apps, found an integer"),
    ("missing_env_file.config.js", "5:15", "missing.env` of app `web` does not exist"),
    ("throws_in_module.config.js", "helper_throws.js:2:14", "ReferenceError: settings is not defined"),
];

#[test]
fn malformed_files_give_precise_errors() {
    let h = TestHome::new();
    let dir = fixture("malformed");
    let mut failures = Vec::new();
    for (file, at, what) in MALFORMED {
        let out = h.cmd(&["validate", file]).current_dir(&dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // The error line itself names the file, line and column, then says what is wrong.
        // An error located in another file (an env_file, a module the config requires) names it.
        let located = if at.starts_with(|c: char| c.is_ascii_digit()) {
            format!("{file}:{at}:")
        } else {
            format!("{}:", dir.join(at).display())
        };
        let ok = !out.status.success()
            && err.lines().any(|l| l.starts_with("error: ") && l.contains(&located))
            && err.contains(what);
        if !ok {
            failures.push(format!(
                "{file}: expected `{located}` and `{what}` (exit {}), got:\n{err}",
                out.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(MALFORMED.len() >= 30);
    assert!(h.daemon_pid().is_none(), "validate never starts the daemon");
}

#[test]
fn malformed_files_start_nothing_and_leave_running_apps_alone() {
    let h = TestHome::new();
    let tag = h.tag("keep");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "keep", "--", &tag]);
    let pid = h.wait_status("keep", Status::Online, T).instances[0].pid;
    let dir = fixture("malformed");
    for file in
        ["syntax.config.js", "duplicate_names.yaml", "bad_port.json", "unknown_key.toml", "bad_env_file.yaml"]
    {
        let out = h.cmd(&["start", file]).current_dir(&dir).output().unwrap();
        assert!(!out.status.success(), "{file} started");
        // An error in an env_file names that file.
        let named = if file == "bad_env_file.yaml" { "bad.env:2:1:".to_string() } else { format!("{file}:") };
        assert!(String::from_utf8_lossy(&out.stderr).contains(&named), "{file}");
    }
    let apps = h.list();
    assert_eq!(apps.len(), 1, "nothing was started");
    assert_eq!(apps[0].instances[0].pid, pid, "the running app was not restarted");
}

#[test]
fn node_missing_is_a_clear_error() {
    let h = TestHome::new();
    let out = h
        .cmd(&["validate", eco("basic/ecosystem.config.js").to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .env_remove("HERDER_NODE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`node` was not found in PATH"), "{err}");
}

#[test]
fn warnings_name_ignored_options_and_do_not_fail() {
    let h = TestHome::new();
    let path = h.write(
        "ecosystem.json",
        &format!(
            "{{apps: [{{name: 'w', script: '{}', vizion: false, kill_retry_time: 100, image: 'w:1', watch: false}}]}}",
            eco("apps/dump.js").display()
        ),
    );
    let out = h.cmd(&["validate", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line per option, none for `watch: false`:\n{err}");
    assert!(
        lines[0].starts_with("warning: ")
            && lines[0].contains("ecosystem.json:1:")
            && lines[0].contains("`vizion`")
    );
    assert!(lines[1].contains("`kill_retry_time`"), "{err}");
    // `image` is for `herder export`: no warning.
    assert!(!err.contains("`image`"), "{err}");
}

#[test]
fn start_without_a_target_uses_the_config_file_of_the_directory() {
    let h = TestHome::new();
    let err = h.fails(&["start"]);
    assert!(err.contains("no config file here") && err.contains("ecosystem.config.js"), "{err}");
    let text = format!(
        "module.exports = {{ apps: [{{ name: 'here', script: '{}', args: ['{}'] }}] }};\n",
        fixture("idle.sh").display(),
        h.tag("here")
    );
    h.write("ecosystem.config.js", &text);
    h.ok(&["start"]);
    h.wait_status("here", Status::Online, T);
}

#[test]
fn init_writes_a_template_that_validates_and_never_overwrites() {
    let h = TestHome::new();
    h.ok(&["init"]);
    let path = h.dir.path().join("herder.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[[apps]]") && text.starts_with('#'));
    h.write("server.js", "setInterval(() => {}, 1000);\n");
    h.ok(&["validate", "herder.toml"]);
    let err = h.fails(&["init"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// Copies the ecosystem fixtures into a temp dir (so converted files can sit beside them).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

const FIXTURE_FILES: &[&str] = &[
    "basic/ecosystem.config.js",
    "cluster/ecosystem.config.js",
    "camel/ecosystem.config.js",
    "cjs/ecosystem.config.cjs",
    "mjs/ecosystem.config.mjs",
    "esm-package/ecosystem.config.js",
    "esm-package-cjs/ecosystem.config.js",
    "yaml/ecosystem.yaml",
    "json5/ecosystem.json",
    "strict-json/apps.json",
    "args/ecosystem.config.js",
    "envfile/ecosystem.config.js",
    "bare/ecosystem.config.js",
];

#[test]
fn convert_output_loads_back_to_the_same_specs() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("ecosystem"), tmp.path());
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let ctx = ResolveContext { cwd: tmp.path().to_path_buf(), env };
    for file in FIXTURE_FILES {
        let (toml, _) = config::convert_file(Path::new(file), &ctx).unwrap_or_else(|e| panic!("{file}: {e}"));
        let converted = Path::new(file).with_file_name("converted.herder.toml");
        std::fs::write(tmp.path().join(&converted), &toml).unwrap();
        for env_name in [None, Some("production"), Some("staging")] {
            let opts = LoadOptions {
                env_name: env_name.map(str::to_string),
                only: Vec::new(),
                ..Default::default()
            };
            // An `--env` that the file does not define is refused by both alike.
            let load = |p: &Path| match config::load(p, &opts, &ctx) {
                Ok(loaded) => {
                    let mut specs = loaded.specs;
                    for s in &mut specs {
                        s.source = None;
                    }
                    Ok(specs)
                }
                Err(e) if e.to_string().contains("no app sets `env_") => Err(()),
                Err(e) => panic!("{}: {e}\n{toml}", p.display()),
            };
            assert_eq!(load(Path::new(file)), load(&converted), "{file} with {env_name:?}:\n{toml}");
        }
    }
}
