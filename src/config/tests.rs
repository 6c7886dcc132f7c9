//! Loading and resolution end to end, with real files in a temp dir.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::protocol::spec::{DEFAULT_KILL_SIGNAL, DEFAULT_MAX_RESTARTS, DEFAULT_MIN_UPTIME_MS};

/// A temp dir with a `bin/` on the context's `PATH` holding an executable `mytool`.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let f = Fixture { dir: tempfile::tempdir().unwrap() };
        f.executable("bin/mytool", "#!/bin/sh\nexit 0\n");
        f
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn file(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn executable(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.file(rel, text);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn ctx(&self) -> ResolveContext {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), self.dir.path().join("bin").display().to_string());
        env.insert("HOME".to_string(), "/home/someone".to_string());
        ResolveContext { cwd: self.root(), env }
    }

    /// Writes `herder.toml` and loads it by its relative name, as the CLI would.
    fn load(&self, toml: &str) -> Result<Vec<AppSpec>, ConfigErrors> {
        self.file("herder.toml", toml);
        load_file(Path::new("herder.toml"), &self.ctx())
    }

    fn load_one(&self, toml: &str) -> AppSpec {
        let mut specs = self.load(toml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(specs.len(), 1);
        specs.remove(0)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
}

fn at(e: &ConfigError) -> (usize, usize) {
    (e.line.expect("line"), e.column.expect("column"))
}

#[test]
fn unknown_key_is_reported_with_position_and_suggestion() {
    let f = Fixture::new();
    f.file("app.js", "");
    let toml = "[[apps]]\nname = \"web\"\nscript = \"app.js\"\nmax_restart = 3\n";
    let errs = f.load(toml).unwrap_err();
    assert_eq!(errs.len(), 1);
    let e = &errs.errors[0];
    assert_eq!(at(e), (4, 1));
    assert_eq!(e.file.as_deref(), Some(Path::new("herder.toml")));
    assert_eq!(e.hint.as_deref(), Some("did you mean `max_restarts`?"));
    assert_eq!(
        errs.to_string(),
        "error: herder.toml:4:1: unknown key `max_restart` in app `web`\n  hint: did you mean `max_restarts`?"
    );
}

#[test]
fn unknown_top_level_key() {
    let f = Fixture::new();
    let errs = f.load("[[app]]\nscript = \"x\"\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.errors[0].message, "unknown key `app`");
    assert_eq!(errs.errors[0].hint.as_deref(), Some("did you mean `apps`?"));
    assert_eq!(errs.errors[0].line, Some(1));
}

#[test]
fn wrong_type_points_at_the_value() {
    let f = Fixture::new();
    f.file("app.js", "");
    let errs =
        f.load("[[apps]]\nscript = \"app.js\"\nmax_restarts = \"ten\"\nautorestart = 1\n").unwrap_err();
    assert_eq!(errs.len(), 2);
    assert_eq!(at(&errs.errors[0]), (3, 16));
    assert_eq!(
        errs.errors[0].message,
        "`max_restarts` in app `app` must be a non-negative integer, found a string"
    );
    assert_eq!(at(&errs.errors[1]), (4, 15));
    assert!(errs.errors[1].message.contains("must be a boolean"), "{}", errs.errors[1].message);
}

#[test]
fn bad_and_negative_durations() {
    let f = Fixture::new();
    f.file("app.js", "");
    let toml = "[[apps]]\nname = \"web\"\nscript = \"app.js\"\nrestart_delay = \"abc\"\n\
                kill_timeout = -5\nmin_uptime = \"-2s\"\nexp_backoff_restart_delay = \"10 parsecs\"\n";
    let errs = f.load(toml).unwrap_err();
    let got: Vec<_> = errs.iter().map(|e| (at(e), e.message.as_str())).collect();
    assert_eq!(
        got,
        [
            ((4, 17), "`restart_delay` in app `web`: invalid duration `abc`"),
            ((5, 16), "`kill_timeout` in app `web`: negative duration `-5`"),
            ((6, 14), "`min_uptime` in app `web`: negative duration `-2s`"),
            ((7, 29), "`exp_backoff_restart_delay` in app `web`: invalid duration `10 parsecs`"),
        ]
    );
    assert!(errs.errors[0].hint.as_deref().unwrap().contains("`500ms`"));
}

#[test]
fn durations_accept_ms_integers_and_unit_strings() {
    let f = Fixture::new();
    f.file("app.js", "");
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\nrestart_delay = 250\nkill_timeout = \"10s\"\nmin_uptime = \"1500\"\n\
         exp_backoff_restart_delay = \"100ms\"\n",
    );
    assert_eq!(spec.restart_delay_ms, 250);
    assert_eq!(spec.kill_timeout_ms, 10_000);
    assert_eq!(spec.min_uptime_ms, 1_500);
    assert_eq!(spec.exp_backoff_restart_delay_ms, Some(100));
}

#[test]
fn all_errors_of_the_file_are_reported_in_order() {
    let f = Fixture::new();
    f.file("app.js", "");
    let toml = "\
[[apps]]
name = \"a\"
script = \"app.js\"
instancez = 2
kill_signal = \"SIGTREM\"

[[apps]]
name = \"b\"
restart_delay = true

[[apps]]
script = \"missing.js\"
";
    let errs = f.load(toml).unwrap_err();
    let got: Vec<_> = errs.iter().map(|e| (e.line, e.message.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(4), "unknown key `instancez` in app `a`"),
            (Some(5), "`kill_signal` in app `a`: unknown signal `SIGTREM`"),
            (Some(7), "app `b` has no `script`"),
            (
                Some(9),
                "`restart_delay` in app `b` must be a duration (milliseconds, or a string such as \"10s\"), found a boolean"
            ),
            (Some(12), "script `missing.js` of app `missing` not found"),
        ]
    );
    assert_eq!(errs.errors[0].hint.as_deref(), Some("did you mean `instances`?"));
    assert_eq!(errs.errors[1].hint.as_deref(), Some("did you mean `SIGTERM`?"));
    // Every entry is printed, each with its location.
    let text = errs.to_string();
    assert_eq!(text.matches("error: herder.toml:").count(), 5, "{text}");
}

#[test]
fn duplicate_names_are_errors() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file("lib/app.js", "");
    let toml =
        "[[apps]]\nname = \"web\"\nscript = \"app.js\"\n\n[[apps]]\nname = \"web\"\nscript = \"app.js\"\n";
    let errs = f.load(toml).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.errors[0].message, "duplicate app name `web`");
    assert_eq!(at(&errs.errors[0]), (6, 8));
    assert!(errs.errors[0].hint.as_deref().unwrap().contains("line 2"));

    // Default names collide too.
    let errs = f.load("[[apps]]\nscript = \"app.js\"\n[[apps]]\nscript = \"lib/app.js\"\n").unwrap_err();
    assert_eq!(errs.errors[0].message, "duplicate app name `app`");
    assert_eq!(at(&errs.errors[0]), (3, 1));
}

#[test]
fn missing_script_names_the_app() {
    let f = Fixture::new();
    let errs = f.load("[[apps]]\nname = \"worker\"\ninstances = 2\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.errors[0].message, "app `worker` has no `script`");
    assert_eq!(at(&errs.errors[0]), (1, 1));
    let errs = f.load("[[apps]]\ninstances = 2\n").unwrap_err();
    assert_eq!(errs.errors[0].message, "app #1 has no `script`");
}

#[test]
fn toml_syntax_error_has_position() {
    let f = Fixture::new();
    let errs = f.load("[[apps]]\nname = \"web\"\nscript = \"app.js\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.errors[0].line, Some(3));
    assert!(errs.errors[0].column.is_some());
    assert!(errs.to_string().starts_with("error: herder.toml:3:"), "{errs}");
}

#[test]
fn interpreter_by_extension() {
    let f = Fixture::new();
    f.file("src/server.py", "print()\n");
    f.file("app.js", "");
    f.file("job.sh", "echo\n");
    let spec = f.load_one("[[apps]]\nscript = \"src/server.py\"\nargs = \"--port 80 'a b'\"\n");
    assert_eq!(spec.name, "server");
    assert_eq!(spec.program, "python3");
    assert_eq!(spec.interpreter.as_deref(), Some("python3"));
    assert_eq!(spec.args, [f.path("src/server.py"), "--port".into(), "80".into(), "a b".into()]);
    assert_eq!(spec.script, "src/server.py");

    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\ninterpreter_args = [\"--max-old-space-size=64\"]\nargs = [\"x\", 1]\n",
    );
    assert_eq!(spec.program, "node");
    assert_eq!(spec.args, ["--max-old-space-size=64".to_string(), f.path("app.js"), "x".into(), "1".into()]);

    let spec = f.load_one("[[apps]]\nscript = \"job.sh\"\n");
    assert_eq!(spec.program, "bash");

    // An explicit interpreter wins over the extension.
    let spec = f.load_one("[[apps]]\nscript = \"job.sh\"\ninterpreter = \"zsh\"\n");
    assert_eq!((spec.program.as_str(), spec.args.as_slice()), ("zsh", [f.path("job.sh")].as_slice()));
}

#[test]
fn executables_run_directly() {
    let f = Fixture::new();
    f.executable("server", "#!/bin/sh\n");
    f.file("plain", "data\n");
    f.file("script-no-x", "#!/bin/sh\n");
    let spec = f.load_one("[[apps]]\nscript = \"./server\"\nargs = \"a\"\n");
    assert_eq!(spec.program, f.path("server"));
    assert_eq!(spec.args, ["a"]);
    assert_eq!(spec.interpreter.as_deref(), Some("none"));
    assert_eq!(spec.name, "server");

    // A bare name that is not a file here is looked up in PATH.
    let spec = f.load_one("[[apps]]\nscript = \"mytool\"\n");
    assert_eq!(spec.program, f.path("bin/mytool"));

    let errs = f.load("[[apps]]\nscript = \"plain\"\n").unwrap_err();
    assert!(errs.errors[0].message.starts_with("cannot tell how to run"), "{errs}");
    assert_eq!(at(&errs.errors[0]), (2, 10));
    // A file that is not executable runs with the interpreter of its shebang line.
    let spec = f.load_one("[[apps]]\nscript = \"script-no-x\"\n");
    assert_eq!(
        (spec.program.as_str(), spec.args.as_slice()),
        ("/bin/sh", [f.path("script-no-x")].as_slice())
    );
    let errs = f.load("[[apps]]\nscript = \"plain\"\ninterpreter = \"none\"\n").unwrap_err();
    assert!(errs.errors[0].message.ends_with("is not executable"), "{errs}");
}

#[test]
fn command_strings_are_split() {
    let f = Fixture::new();
    let spec = f.load_one("[[apps]]\nscript = \"mytool -m 'http server' 8000\"\nargs = [\"--x\"]\n");
    assert_eq!(spec.name, "mytool");
    assert_eq!(spec.program, f.path("bin/mytool"));
    assert_eq!(spec.args, ["-m", "http server", "8000", "--x"]);
    assert_eq!(spec.script, "mytool -m 'http server' 8000");

    // The first word may be a file of the app, with its interpreter.
    f.file("app.js", "");
    let spec = f.load_one("[[apps]]\nscript = \"app.js --port 3000\"\n");
    assert_eq!((spec.program.as_str(), spec.name.as_str()), ("node", "app.js"));
    assert_eq!(spec.args, [f.path("app.js"), "--port".into(), "3000".into()]);

    // A file whose name has a space is a file.
    f.file("my app.py", "");
    let spec = f.load_one("[[apps]]\nscript = \"my app.py\"\n");
    assert_eq!((spec.program.as_str(), spec.name.as_str()), ("python3", "my app"));

    let errs = f.load("[[apps]]\nscript = \"mytool a && mytool b\"\n").unwrap_err();
    assert!(errs.errors[0].message.contains("shell operator `&&`"), "{errs}");
    let errs = f.load("[[apps]]\nscript = \"nothere --flag\"\n").unwrap_err();
    assert_eq!(errs.errors[0].message, "script `nothere` of app `nothere` not found");
}

#[test]
fn camel_case_and_pm2_aliases() {
    let f = Fixture::new();
    f.file("app.js", "");
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\nmaxRestarts = 3\nkillSignal = \"INT\"\nexpBackoffRestartDelay = 100\n\
         stopExitCodes = 0\nexecInterpreter = \"deno\"\nnodeArgs = \"run -A\"\n",
    );
    assert_eq!(spec.max_restarts, 3);
    assert_eq!(spec.kill_signal, "SIGINT");
    assert_eq!(spec.exp_backoff_restart_delay_ms, Some(100));
    assert_eq!(spec.stop_exit_codes, [0]);
    assert_eq!(spec.program, "deno");
    assert_eq!(spec.args, ["run".to_string(), "-A".into(), f.path("app.js")]);

    let errs = f.load("[[apps]]\nscript = \"app.js\"\nmax_restarts = 1\nmaxRestarts = 2\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(at(&errs.errors[0]), (4, 1));
    assert!(errs.errors[0].message.contains("sets `max_restarts` again"), "{errs}");
    let errs = f.load("[[apps]]\nscript = \"app.js\"\nmaxRestart = 2\n").unwrap_err();
    assert_eq!(errs.errors[0].hint.as_deref(), Some("did you mean `maxRestarts`?"));
}

#[test]
fn env_overlays_the_shell_environment() {
    let f = Fixture::new();
    f.file("app.js", "");
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\n[apps.env]\nHOME = \"/srv\"\nPORT = 3000\nDEBUG = true\nRATIO = 0.5\n",
    );
    let mut want = f.ctx().env;
    want.insert("HOME".into(), "/srv".into());
    want.insert("PORT".into(), "3000".into());
    want.insert("DEBUG".into(), "true".into());
    want.insert("RATIO".into(), "0.5".into());
    assert_eq!(*spec.env, want);

    let errs = f.load("[[apps]]\nscript = \"app.js\"\nenv = { A = [1] }\n").unwrap_err();
    assert_eq!(
        errs.errors[0].message,
        "`env.A` in app `app` must be a string, number or boolean, found an array"
    );
    assert_eq!(at(&errs.errors[0]), (3, 13));
}

#[test]
fn instances_max_negative_and_count() {
    let f = Fixture::new();
    f.file("app.js", "");
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    let count = |v: &str| f.load_one(&format!("[[apps]]\nscript = \"app.js\"\ninstances = {v}\n")).instances;
    assert_eq!(count("\"max\""), cpus);
    assert_eq!(count("3"), 3);
    assert_eq!(count("-1"), (cpus - 1).max(1));
    assert_eq!(count("-1000"), 1);
    // PM2 reads 0 as one per CPU; herder.toml asks for "max".
    let errs = f.load("[[apps]]\nscript = \"app.js\"\ninstances = 0\n").unwrap_err();
    assert_eq!(at(&errs.errors[0]), (3, 13));
    assert!(errs.errors[0].hint.as_deref().unwrap().contains("\"max\""), "{errs}");
    f.file("apps.json", "{\"apps\": [{\"script\": \"app.js\", \"instances\": 0}]}");
    let specs = load_file(Path::new("apps.json"), &f.ctx()).unwrap();
    assert_eq!(specs[0].instances, cpus);
    let errs = f.load("[[apps]]\nscript = \"app.js\"\ninstances = \"many\"\n").unwrap_err();
    assert!(errs.errors[0].message.starts_with("`instances` in app `app` must be"), "{errs}");
}

#[test]
fn defaults_cwd_source_and_namespace() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file("svc/worker.js", "");
    let spec = f.load_one("[[apps]]\nscript = \"app.js\"\n");
    assert_eq!(spec.cwd, f.root());
    assert_eq!(spec.source, Some(f.root().join("herder.toml")));
    assert_eq!(spec.namespace, "default");
    assert_eq!(spec.instances, 1);
    assert!(spec.autorestart && spec.autostart);
    assert_eq!(spec.max_restarts, DEFAULT_MAX_RESTARTS);
    assert_eq!(spec.min_uptime_ms, DEFAULT_MIN_UPTIME_MS);
    assert_eq!(spec.kill_signal, DEFAULT_KILL_SIGNAL);
    assert_eq!(spec.exp_backoff_restart_delay_ms, None);

    // The script is relative to `cwd`, which is relative to the file's directory.
    let spec = f.load_one(
        "[[apps]]\nscript = \"worker.js\"\ncwd = \"./svc\"\nnamespace = \"jobs\"\nautostart = false\n\
         autorestart = false\nstop_exit_codes = [0, 3]\nkill_signal = 2\n",
    );
    assert_eq!(spec.cwd, f.root().join("svc"));
    assert_eq!(spec.args, [f.path("svc/worker.js")]);
    assert_eq!(spec.namespace, "jobs");
    assert!(!spec.autostart && !spec.autorestart);
    assert_eq!(spec.stop_exit_codes, [0, 3]);
    assert_eq!(spec.kill_signal, "SIGINT");

    // A config loaded from another directory resolves against its own directory.
    let ctx = ResolveContext { cwd: PathBuf::from("/"), env: BTreeMap::new() };
    let specs = load_file(&f.root().join("herder.toml"), &ctx).unwrap();
    assert_eq!(specs[0].cwd, f.root().join("svc"));

    let errs = f.load("[[apps]]\nscript = \"app.js\"\ncwd = \"nope\"\n").unwrap_err();
    assert!(errs.errors[0].message.contains("does not exist"), "{errs}");
    assert_eq!(at(&errs.errors[0]), (3, 7));
}

#[test]
fn bad_names_and_exit_codes() {
    let f = Fixture::new();
    f.file("app.js", "");
    let errs =
        f.load("[[apps]]\nname = \"all\"\nscript = \"app.js\"\nstop_exit_codes = [0, 256]\n").unwrap_err();
    let got: Vec<_> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        got,
        ["app name `all` is reserved", "`stop_exit_codes` in app `all`: exit code `256` is out of range"]
    );
}

#[test]
fn missing_and_empty_files() {
    let f = Fixture::new();
    let errs = load_file(Path::new("nope.toml"), &f.ctx()).unwrap_err();
    assert_eq!(errs.to_string(), "error: nope.toml: config file not found");
    for name in ["apps.yaml", "apps.json"] {
        f.file(name, "");
        let errs = load_file(Path::new(name), &f.ctx()).unwrap_err();
        let text = errs.to_string();
        assert!(text.starts_with(&format!("error: {name}:1:1: ")), "{text}");
    }
    assert!(f.load("").unwrap_err().errors[0].message.contains("no apps"));
}

#[test]
fn config_file_names() {
    for name in [
        "herder.toml",
        "a/b/apps.yaml",
        "x.yml",
        "ecosystem.json",
        "ecosystem.config.js",
        "ecosystem.config.cjs",
        "pm2.config.mjs",
        "HERDER.TOML",
    ] {
        assert!(is_config_file(Path::new(name)), "{name}");
    }
    for name in ["app.js", "server.py", "config.js", "toml", "run.sh", "mytool"] {
        assert!(!is_config_file(Path::new(name)), "{name}");
    }
}

#[test]
fn from_command_resolves_a_script_with_flags() {
    let f = Fixture::new();
    f.file("app.py", "");
    let ov = Overrides {
        name: Some("x".into()),
        namespace: Some("ns".into()),
        restart_delay: Some("2s".into()),
        exp_backoff_restart_delay: Some("100".into()),
        max_restarts: Some("5".into()),
        min_uptime: Some("1m".into()),
        kill_timeout: Some("500ms".into()),
        kill_signal: Some("usr2".into()),
        stop_exit_codes: Some(vec!["0,2".into(), "3".into()]),
        no_autorestart: true,
        instances: Some("2".into()),
        args: vec!["a".into(), "b c".into()],
        ..Overrides::default()
    };
    let spec = from_command("app.py", &ov, &f.ctx()).unwrap();
    assert_eq!(spec.name, "x");
    assert_eq!(spec.namespace, "ns");
    assert_eq!(spec.program, "python3");
    assert_eq!(spec.args, [f.path("app.py"), "a".into(), "b c".into()]);
    assert_eq!(spec.cwd, f.root());
    let mut want = f.ctx().env;
    want.insert("PYTHONUNBUFFERED".into(), "1".into());
    assert_eq!(*spec.env, want);
    assert_eq!(spec.source, None);
    assert_eq!(spec.restart_delay_ms, 2_000);
    assert_eq!(spec.exp_backoff_restart_delay_ms, Some(100));
    assert_eq!(spec.max_restarts, 5);
    assert_eq!(spec.min_uptime_ms, 60_000);
    assert_eq!(spec.kill_timeout_ms, 500);
    assert_eq!(spec.kill_signal, "SIGUSR2");
    assert_eq!(spec.stop_exit_codes, [0, 2, 3]);
    assert!(!spec.autorestart);
    assert_eq!(spec.instances, 2);
}

#[test]
fn from_command_command_string_and_cwd() {
    let f = Fixture::new();
    let spec = from_command("mytool -m http.server 8000", &Overrides::default(), &f.ctx()).unwrap();
    assert_eq!(spec.name, "mytool");
    assert_eq!(spec.program, f.path("bin/mytool"));
    assert_eq!(spec.args, ["-m", "http.server", "8000"]);

    f.file("svc/main.rb", "");
    let ov = Overrides { cwd: Some("svc".into()), interpreter: Some("ruby3".into()), ..Overrides::default() };
    let spec = from_command("main.rb", &ov, &f.ctx()).unwrap();
    assert_eq!(spec.cwd, f.root().join("svc"));
    assert_eq!(spec.program, "ruby3");
    assert_eq!(spec.args, [f.path("svc/main.rb")]);
}

#[test]
fn from_command_reports_every_bad_flag() {
    let f = Fixture::new();
    f.file("app.py", "");
    let ov = Overrides {
        restart_delay: Some("abc".into()),
        kill_timeout: Some("-1s".into()),
        max_restarts: Some("lots".into()),
        kill_signal: Some("SIGNOPE".into()),
        instances: Some("x".into()),
        stop_exit_codes: Some(vec!["0,x".into()]),
        ..Overrides::default()
    };
    let errs = from_command("app.py", &ov, &f.ctx()).unwrap_err();
    let got: Vec<_> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        got,
        [
            "`--restart-delay`: invalid duration `abc`",
            "`--kill-timeout`: negative duration `-1s`",
            "`--max-restarts`: `lots` is not a non-negative integer",
            "`--kill-signal`: unknown signal `SIGNOPE`",
            "`--stop-exit-codes`: invalid exit code `x`",
            "`--instances`: invalid number of instances `x`",
        ]
    );
    assert!(errs.iter().all(|e| e.file.is_none() && e.line.is_none()));
    assert!(errs.to_string().starts_with("error: `--restart-delay`: invalid duration `abc`\n  hint: "));
}

#[test]
fn from_command_missing_script_is_a_clear_error() {
    let f = Fixture::new();
    let errs = from_command("nothere.py", &Overrides::default(), &f.ctx()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.errors[0].message, "script `nothere.py` of app `nothere` not found");
    assert_eq!(
        errs.errors[0].hint.as_deref(),
        Some(
            format!("there is no file `{}` and no `nothere.py` command in PATH", f.path("nothere.py"))
                .as_str()
        )
    );
    let errs = from_command("./gone", &Overrides::default(), &f.ctx()).unwrap_err();
    assert_eq!(
        errs.errors[0].hint.as_deref(),
        Some(format!("there is no file `{}`", f.path("gone")).as_str())
    );
    let ov = Overrides { name: Some("42".into()), ..Overrides::default() };
    let errs = from_command("mytool", &ov, &f.ctx()).unwrap_err();
    assert_eq!(errs.errors[0].message, "app name `42` is a number");
}

#[test]
fn shell_syntax() {
    for (command, op) in [
        ("a && b", Some("&&")),
        ("a | b", Some("|")),
        ("a; b", Some(";")),
        ("a > out.log", Some(">")),
        ("echo $HOME", Some("$")),
        ("echo \"$HOME\"", Some("$")),
        ("echo '$HOME && x'", None),
        ("node app.js --flag 'a b'", None),
        ("a\\;b", None),
    ] {
        assert_eq!(resolve::needs_shell(command).as_deref(), op, "{command}");
    }
}

#[test]
fn commands_that_need_a_shell() {
    let f = Fixture::new();
    // herder.toml asks for `shell = true`, and then uses `sh -c`.
    let spec = f.load_one(
        "[[apps]]\nname = \"p\"\nscript = \"mytool a | mytool b\"\nshell = true\nargs = [\"x y\"]\n",
    );
    assert!(spec.program.ends_with("sh"), "{}", spec.program);
    assert_eq!(spec.args, ["-c", "mytool a | mytool b 'x y'"]);
    // PM2 files use a shell by themselves where the command needs one.
    f.file("apps.json", "[{\"name\": \"p\", \"script\": \"mytool a && mytool b\"}]");
    let specs = load_file(Path::new("apps.json"), &f.ctx()).unwrap();
    assert_eq!(specs[0].args, ["-c", "mytool a && mytool b"]);
    // …and so does the command line.
    let spec = from_command("mytool a > out.log", &Overrides::default(), &f.ctx()).unwrap();
    assert_eq!(spec.args, ["-c", "mytool a > out.log"]);
    // A plain command string is split, never given to a shell.
    f.file("plain.json", "[{\"name\": \"p\", \"script\": \"mytool 'a b'\"}]");
    let specs = load_file(Path::new("plain.json"), &f.ctx()).unwrap();
    assert_eq!(
        (specs[0].program.as_str(), specs[0].args.as_slice()),
        (f.path("bin/mytool").as_str(), ["a b".to_string()].as_slice())
    );
}

#[test]
fn shebangs_are_respected() {
    let f = Fixture::new();
    // An executable with a shebang runs directly, whatever its extension.
    f.executable("tool.py", "#!/bin/sh\necho\n");
    let spec = f.load_one("[[apps]]\nscript = \"tool.py\"\n");
    assert_eq!(
        (spec.program.as_str(), spec.interpreter.as_deref()),
        (f.path("tool.py").as_str(), Some("none"))
    );
    // Not executable: its shebang line says what runs it, argument included.
    f.file("job.js", "#!/usr/bin/env node\n");
    let spec = f.load_one("[[apps]]\nscript = \"job.js\"\ninterpreter_args = \"--trace-warnings\"\n");
    assert_eq!(spec.program, "/usr/bin/env");
    assert_eq!(spec.args, ["node".to_string(), "--trace-warnings".into(), f.path("job.js")]);
    assert_eq!(spec.interpreter.as_deref(), Some("/usr/bin/env node"));
}

#[test]
fn environment_layers_and_names() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file(".env", "FROM_FILE=1\nLAYER=file\n");
    let toml = "[[apps]]\nname = \"web\"\nscript = \"app.js\"\nenv_file = \".env\"\nport = 8080\n\
                append_env_to_name = true\ninstance_var = \"INST\"\nincrement_var = \"PORT\"\n\
                filter_env = [\"HOM\"]\nenv = { LAYER = \"env\" }\nenv_prod = { LAYER = \"prod\" }\n";
    let spec = f.load_one(toml);
    assert_eq!(spec.name, "web");
    assert_eq!(spec.env.get("LAYER").map(String::as_str), Some("env"));
    assert_eq!(spec.env.get("PORT").map(String::as_str), Some("8080"));
    assert_eq!(spec.env.get("FROM_FILE").map(String::as_str), Some("1"));
    assert!(!spec.env.contains_key("HOME"), "filtered");
    assert!(spec.env.contains_key("PATH"));
    assert_eq!((spec.instance_var.as_str(), spec.increment_var.as_deref()), ("INST", Some("PORT")));
    let opts = LoadOptions { env_name: Some("prod".into()), only: Vec::new(), ..Default::default() };
    let loaded = load(Path::new("herder.toml"), &opts, &f.ctx()).unwrap();
    assert_eq!(loaded.specs[0].name, "web-prod");
    assert_eq!(loaded.specs[0].env.get("LAYER").map(String::as_str), Some("prod"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // `filter_env = true`: nothing from the shell.
    let spec = f.load_one("[[apps]]\nscript = \"app.js\"\nfilter_env = true\n");
    assert!(spec.env.is_empty(), "{:?}", spec.env);
}

#[test]
fn yaml_extension_fields_hold_anchors() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file(
        "apps.yaml",
        "x-defaults: &defaults\n  max_restarts: 4\n  env:\n    SHARED: yes\napps:\n  - <<: *defaults\n    name: a\n    script: app.js\n",
    );
    let specs = load_file(Path::new("apps.yaml"), &f.ctx()).unwrap();
    assert_eq!(specs[0].max_restarts, 4);
    assert_eq!(specs[0].env.get("SHARED").map(String::as_str), Some("yes"));
    // Converted, the anchor's values are written out in the app.
    let (toml, _) = convert_file(Path::new("apps.yaml"), &f.ctx()).unwrap();
    f.file("converted.toml", &toml);
    let again = load_file(Path::new("converted.toml"), &f.ctx()).unwrap();
    assert_eq!(again[0].max_restarts, 4);
    assert!(!toml.contains("x-defaults"), "{toml}");
}

#[test]
fn convert_folds_deploy_env_under_env() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file(
        "ecosystem.json",
        "{apps: [{name: 'a', script: 'app.js', instances: 0, max_restarts: '3', env: {A: 'app'}}],\n\
         deploy: {production: {user: 'x', env: {A: 'deploy', B: 'deploy'}}}}",
    );
    let (toml, _) = convert_file(Path::new("ecosystem.json"), &f.ctx()).unwrap();
    f.file("converted.toml", &toml);
    for env_name in [None, Some("production".to_string())] {
        let opts = LoadOptions { env_name, only: Vec::new(), ..Default::default() };
        let strip = |mut specs: Vec<AppSpec>| {
            specs.iter_mut().for_each(|s| s.source = None);
            specs
        };
        let a = strip(load(Path::new("ecosystem.json"), &opts, &f.ctx()).unwrap().specs);
        let b = strip(load(Path::new("converted.toml"), &opts, &f.ctx()).unwrap().specs);
        assert_eq!(a, b, "{toml}");
    }
    assert!(toml.contains("instances = \"max\"") && toml.contains("max_restarts = 3"), "{toml}");
}

#[test]
fn node_at_a_version_runs_node_with_a_warning() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file("apps.json", "[{\"script\": \"app.js\", \"interpreter\": \"node@18.20.0\"}]");
    let loaded = load(Path::new("apps.json"), &LoadOptions::default(), &f.ctx()).unwrap();
    assert_eq!(loaded.specs[0].program, "node");
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].message.contains("runs `node` from PATH"), "{:?}", loaded.warnings);
}

#[test]
fn a_node_version_is_an_error_in_herder_toml_with_its_line() {
    let f = Fixture::new();
    f.file("app.js", "");
    let toml = "[[apps]]\nname = \"web\"\nscript = \"app.js\"\nimage = \"web:1\"\nexec_mode = \"cluster\"\n\
                interpreter = \"node@18\"\n";
    // `image` (line 4, for `herder export`) and `exec_mode = "cluster"` (line 5): no error.
    let errs = f.load(toml).unwrap_err();
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line.unwrap(), e.message.as_str())).collect();
    assert_eq!(
        found,
        [(
            6,
            "`interpreter = \"node@18\"` in app `web` asks for a Node version, which herder does not install"
        )],
        "{errs}"
    );
    assert!(errs.iter().all(|e| e.hint.is_some() && e.file.as_deref() == Some(Path::new("herder.toml"))));
    // Their "off" values are fine.
    f.load_one("[[apps]]\nscript = \"app.js\"\nexec_mode = \"fork\"\n");
}

#[test]
fn image_is_kept_from_pm2_files_and_through_convert() {
    let f = Fixture::new();
    f.file("app.js", "");
    f.file(
        "ecosystem.json",
        r#"{"apps": [{"name": "web", "script": "app.js", "exec_mode": "cluster", "image": "web:1",
            "balancer": {"listen": 80}}, {"name": "api", "script": "app.js", "image": "api:1"}]}"#,
    );
    let loaded = load(Path::new("ecosystem.json"), &LoadOptions::default(), &f.ctx()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let images: Vec<_> = loaded.specs.iter().map(|s| s.image.as_deref()).collect();
    assert_eq!(images, [Some("web:1"), Some("api:1")]);
    let (toml, _) = convert_file(Path::new("ecosystem.json"), &f.ctx()).unwrap();
    assert!(toml.contains("image = \"web:1\"") && toml.contains("listen = 80"), "{toml}");
    f.file("converted.toml", &toml);
    let converted = load(Path::new("converted.toml"), &LoadOptions::default(), &f.ctx()).unwrap();
    assert_eq!(converted.specs[1].image.as_deref(), Some("api:1"));
    assert!(converted.warnings.is_empty(), "{:?}", converted.warnings);
}

#[test]
fn user_and_group_resolve_and_give_the_login_variables() {
    let f = Fixture::new();
    f.file("app.js", "");
    let spec =
        f.load_one("[[apps]]\nscript = \"app.js\"\nuser = \"root\"\ngroup = 0\npid_file = \"run/app.pid\"\n");
    assert_eq!(spec.user.as_deref(), Some("root"));
    assert_eq!(spec.group.as_deref(), Some("0"));
    assert_eq!(spec.pid_file, Some(f.root().join("run/app.pid")));
    // The shell's HOME is whoever ran herder's; the app gets its user's.
    let root = nix::unistd::User::from_name("root").unwrap().unwrap();
    assert_eq!(spec.env.get("HOME").map(String::as_str), root.dir.to_str());
    assert_eq!(spec.env.get("USER").map(String::as_str), Some("root"));
    assert_eq!(spec.env.get("LOGNAME").map(String::as_str), Some("root"));
    assert_eq!(spec.env.get("SHELL").map(String::as_str), root.shell.to_str());
    // What the app's own env says wins.
    let spec = f.load_one("[[apps]]\nscript = \"app.js\"\nuser = \"root\"\nenv = { HOME = \"/srv\" }\n");
    assert_eq!(spec.env.get("HOME").map(String::as_str), Some("/srv"));
    // Without `user`, the shell's stay.
    let spec = f.load_one("[[apps]]\nscript = \"app.js\"\n");
    assert_eq!(spec.env.get("HOME").map(String::as_str), Some("/home/someone"));
    assert_eq!((spec.user, spec.group, spec.pid_file), (None, None, None));
}

#[test]
fn unknown_users_and_groups_are_errors_naming_app_key_and_value() {
    let f = Fixture::new();
    f.file("app.js", "");
    let errs = f
        .load("[[apps]]\nname = \"web\"\nscript = \"app.js\"\nuser = \"no-such-user-herder\"\n")
        .unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(at(&errs.errors[0]), (4, 8));
    assert_eq!(
        errs.errors[0].message,
        "app `web`: `user = \"no-such-user-herder\"`: no such user on this machine"
    );
    let errs =
        f.load("[[apps]]\nname = \"web\"\nscript = \"app.js\"\nuser = \"root\"\ngroup = \"no-such-group-herder\"\n").unwrap_err();
    assert_eq!(at(&errs.errors[0]), (5, 9));
    assert_eq!(
        errs.errors[0].message,
        "app `web`: `group = \"no-such-group-herder\"`: no such group on this machine"
    );
    let errs = f.load("[[apps]]\nscript = \"app.js\"\nuser = -1\ngroup = [1]\n").unwrap_err();
    assert_eq!(errs.len(), 2, "{errs}");
    // PM2's `uid`/`gid` are the same keys.
    f.file("ecosystem.json", r#"{"apps": [{"name": "w", "script": "app.js", "uid": "root", "gid": "0"}]}"#);
    let loaded = load(Path::new("ecosystem.json"), &LoadOptions::default(), &f.ctx()).unwrap();
    assert_eq!(
        (loaded.specs[0].user.as_deref(), loaded.specs[0].group.as_deref()),
        (Some("root"), Some("0"))
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn start_flags_name_the_user_flag() {
    let f = Fixture::new();
    let script = f.file("app.js", "").display().to_string();
    let ov = Overrides { user: Some("no-such-user-herder".into()), ..Overrides::default() };
    let errs = from_command(&script, &ov, &f.ctx()).unwrap_err();
    assert_eq!(
        errs.errors[0].message,
        "app `app`: `--user no-such-user-herder`: no such user on this machine"
    );
    let ov = Overrides { user: Some("root".into()), group: Some("0".into()), ..Overrides::default() };
    let spec = from_command(&script, &ov, &f.ctx()).unwrap();
    assert_eq!((spec.user.as_deref(), spec.group.as_deref()), (Some("root"), Some("0")));
}

/// The dump fixture with its paths moved under `f` (where its scripts exist).
fn pm2_dump(f: &Fixture, name: &str) -> PathBuf {
    let text =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pm2/dump.pm2")).unwrap();
    let shop = f.root().join("shop");
    f.file("shop/server.js", "");
    f.file("shop/worker.py", "");
    f.file(name, &text.replace("/srv/shop", &shop.display().to_string()))
}

#[test]
fn a_pm2_dump_loads_one_app_per_name_and_converts_to_the_same_apps() {
    let f = Fixture::new();
    let shop = f.root().join("shop");
    pm2_dump(&f, "dump.pm2");
    let loaded =
        load(Path::new("dump.pm2"), &LoadOptions::default(), &f.ctx()).unwrap_or_else(|e| panic!("{e}"));
    let specs = &loaded.specs;
    let summary: Vec<(&str, u32)> = specs.iter().map(|s| (s.name.as_str(), s.instances)).collect();
    assert_eq!(summary, [("web", 2), ("worker", 1), ("sh", 1), ("api", 2)]);
    let web = &specs[0];
    assert_eq!(web.script, shop.join("server.js").display().to_string());
    assert_eq!(web.cwd, shop);
    assert_eq!(web.namespace, "shop");
    assert!(
        web.args.ends_with(&["--verbose".to_string(), "--level".to_string(), "3".to_string()]),
        "{:?}",
        web.args
    );
    assert_eq!(web.env.get("GREETING").map(String::as_str), Some("hello"));
    // The dump's shell and PM2's own variables are not the app's; the test shell's still come.
    assert!(!web.env.contains_key("PM2_HOME") && !web.env.contains_key("SSH_TTY"), "{:?}", web.env);
    assert_eq!(web.env.get("HOME").map(String::as_str), Some("/home/someone"));
    assert_eq!(web.max_memory_restart, Some(200 * 1024 * 1024));
    let worker = &specs[1];
    assert!(!worker.autorestart);
    assert_eq!(worker.cron_restart.as_deref(), Some("0 3 * * *"));
    assert_eq!(specs[3].env.get("PORT").map(String::as_str), Some("18500"));
    assert_eq!(specs[3].kill_timeout_ms, 4000);

    // `herder convert` gives a herder.toml that loads to the same apps.
    let (toml, _) = convert_file(Path::new("dump.pm2"), &f.ctx()).unwrap();
    assert!(toml.contains("# Left out of the apps' env"), "{toml}");
    f.file("converted.toml", &toml);
    let strip = |mut specs: Vec<AppSpec>| {
        specs.iter_mut().for_each(|s| s.source = None);
        specs
    };
    let again =
        strip(load_file(Path::new("converted.toml"), &f.ctx()).unwrap_or_else(|e| panic!("{e}\n{toml}")));
    assert_eq!(strip(loaded.specs), again, "{toml}");
}

#[test]
fn a_pm2_dump_is_known_by_its_shape_under_another_name() {
    let f = Fixture::new();
    pm2_dump(&f, "saved-processes");
    pm2_dump(&f, "procs.json");
    for name in ["saved-processes", "procs.json"] {
        assert!(is_config_file(&f.root().join(name)), "{name}");
        let specs = load_file(Path::new(name), &f.ctx()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(specs.len(), 4, "{name}");
    }
    assert!(is_config_file(Path::new("dump.pm2.bak")), "by its name, even before it exists");
    assert!(!is_config_file(&f.root().join("shop/server.js")));
}

#[test]
fn errors_in_a_pm2_dump_name_the_file_the_line_and_the_app() {
    let f = Fixture::new();
    f.file("app.js", "");
    let dir = f.root().display().to_string();
    f.file(
        "dump.pm2",
        &format!(
            "[\n  {{\"name\": \"web\", \"pm_exec_path\": \"{dir}/app.js\", \"pm_cwd\": \"{dir}\",\n   \"max_memory_restart\": \"lots\"}},\n  {{\"name\": \"gone\", \"pm_cwd\": \"{dir}\"}}\n]"
        ),
    );
    let e = load_file(Path::new("dump.pm2"), &f.ctx()).unwrap_err().to_string();
    assert!(e.contains("error: dump.pm2:3:") && e.contains("`max_memory_restart` in app `web`"), "{e}");
    assert!(e.contains("error: dump.pm2:4:3: record #2 (app `gone`) has no `pm_exec_path`"), "{e}");
}

#[test]
fn a_balancer_resolves_its_address_mode_and_backend_ports() {
    use crate::protocol::spec::{BalancerMode, Strategy};
    let f = Fixture::new();
    f.file("app.js", "");
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\ninstances = 3\nport = 3000\n[apps.balancer]\nlisten = 8080\n\
         strategy = \"header\"\nheader = \"X-User\"\nweights = [3, 2, 1]\nbackup = [2]\nfail_timeout = \"30s\"\n\
         stream_idle_timeout = \"24h\"\n",
    );
    let b = spec.balancer.expect("a balancer");
    assert_eq!((b.listen.port, b.backend_port, b.mode), (8080, Some(3000), BalancerMode::Http));
    assert_eq!(b.strategy, Strategy::Header("X-User".into()));
    assert_eq!((b.weights, b.backup), (vec![3, 2, 1], vec![2]));
    assert_eq!((b.fail_timeout_ms, b.stream_idle_timeout_ms, b.max_fails), (30_000, 86_400_000, 1));
    assert!(spec.sockets.is_empty(), "the instances listen on ports of their own");
    assert!(b.unix_hop, "Node instances are reached over their hop unless told otherwise");
    let spec =
        f.load_one("[[apps]]\nscript = \"app.js\"\n[apps.balancer]\nlisten = 8080\nunix_hop = false\n");
    assert!(!spec.balancer.expect("a balancer").unix_hop);

    // The app's port is the public one: the instances get free ports.
    let spec = f.load_one("[[apps]]\nscript = \"app.js\"\nport = 3000\n[apps.balancer]\nmode = \"tcp\"\n");
    let b = spec.balancer.expect("a balancer");
    assert_eq!((b.listen.port, b.backend_port, b.mode), (3000, None, BalancerMode::Tcp));

    // `socket` mode: the shared socket, no proxy.
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\n[apps.balancer]\nmode = \"socket\"\nlisten = \"127.0.0.1:9000\"\n",
    );
    assert!(spec.balancer.is_none());
    assert_eq!(spec.sockets.len(), 1);
    assert_eq!((spec.sockets[0].host.as_deref(), spec.sockets[0].port), (Some("127.0.0.1"), 9000));
}

#[test]
fn balancer_weights_and_backup_must_fit_the_file_s_instances() {
    let f = Fixture::new();
    f.file("app.js", "");
    let load = |instances: &str, balancer: &str| {
        f.load(&format!(
            "[[apps]]\nname = \"web\"\nscript = \"app.js\"\n{instances}[apps.balancer]\nlisten = 8080\n{balancer}\n"
        ))
    };
    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        (
            "instances = 2\n",
            "backup = [5]",
            7,
            10,
            "`balancer.backup` in app `web`: there is no instance 5 with `instances = 2`",
            "backup indexes are 0 to 1",
        ),
        (
            "",
            "backup = [1]",
            6,
            10,
            "there is no instance 1 with one instance (`instances` is not set)",
            "the only one is 0",
        ),
        (
            "instances = 2\n",
            "backup = [1, 0]",
            7,
            10,
            "`balancer.backup` in app `web`: every instance is a backup",
            "leave at least one instance out of `backup`",
        ),
        ("", "backup = [0]", 6, 10, "every instance is a backup", "leave at least one"),
        (
            "instances = 2\n",
            "weights = [3, 1, 1, 1]",
            7,
            11,
            "`balancer.weights` in app `web`: 4 weights for `instances = 2`",
            "one weight per instance",
        ),
        ("instances = 3\n", "weights = [3, 1]", 7, 11, "2 weights for `instances = 3`", "(3 in all)"),
    ];
    for (instances, balancer, line, column, message, hint) in cases {
        let errs = load(instances, balancer).expect_err(balancer);
        assert_eq!(errs.errors.len(), 1, "{balancer}: {errs}");
        let e = &errs.errors[0];
        assert!(e.message.contains(message), "{balancer}: {errs}");
        assert!(e.hint.as_deref().is_some_and(|h| h.contains(hint)), "{balancer}: {errs}");
        assert_eq!((e.line, e.column), (Some(*line), Some(*column)), "{balancer}: {errs}");
        assert!(e.to_string().contains(&format!("herder.toml:{line}:{column}")), "{errs}");
    }
    // Lists that fit, and a count the file leaves to the machine, are taken as written.
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\ninstances = 2\n[apps.balancer]\nlisten = 8080\nweights = [3, 1]\nbackup = [1]\n",
    );
    let b = spec.balancer.expect("a balancer");
    assert_eq!((b.weights, b.backup), (vec![3, 1], vec![1]));
    let spec = f.load_one(
        "[[apps]]\nscript = \"app.js\"\ninstances = \"max\"\n[apps.balancer]\nlisten = 8080\nweights = [3, 1, 1, 1, 1, 1, 1, 1, 1]\n",
    );
    assert_eq!(spec.balancer.expect("a balancer").weights.len(), 9);
    // A wrong `instances` is reported alone.
    let errs = load("instances = \"many\"\n", "weights = [3, 1]").unwrap_err();
    assert_eq!(errs.errors.len(), 1, "{errs}");
    assert!(errs.errors[0].message.contains("`instances`"), "{errs}");
}

#[test]
fn a_listen_address_is_an_ip_address_and_a_port_checked_where_it_is_written() {
    let f = Fixture::new();
    f.file("app.js", "");
    let load = |listen: &str| {
        f.load(&format!(
            "[[apps]]\nname = \"web\"\nscript = \"app.js\"\n[apps.balancer]\nlisten = {listen}\n"
        ))
    };
    let cases: &[(&str, &str, &str)] = &[
        ("\"1.2.3.4.5:19202\"", "`1.2.3.4.5` is not an IP address", "\"127.0.0.1:3000\""),
        (
            "\"localhost:19202\"",
            "`localhost` is a host name; herder listens on an IP address",
            "write \"127.0.0.1:19202\" for this machine only",
        ),
        ("\"example.com:80\"", "`example.com` is a host name", "\"127.0.0.1:80\""),
        ("\"::1:19202\"", "the IPv6 address in `::1:19202` needs brackets", "write \"[::1]:19202\""),
        ("\"[::g]:19202\"", "`::g` is not an IP address", "\"[::1]:3000\""),
        ("\"127.0.0.1:70000\"", "port `70000` is out of range", "ports are 1 to 65535"),
        ("\"127.0.0.1:0\"", "port `0` is out of range", "ports are 1 to 65535"),
        ("\"127.0.0.1:http\"", "`127.0.0.1:http` does not end with a port number", "\"0.0.0.0:3000\""),
        ("\":19202\"", "`:19202` has no address before the port", "write 19202 for every address"),
        ("\"web\"", "must be a port number, an address such as", ""),
    ];
    for (listen, message, hint) in cases {
        let errs = load(listen).expect_err(listen);
        assert_eq!(errs.errors.len(), 1, "{listen}: {errs}");
        let e = &errs.errors[0];
        assert!(e.message.starts_with("`balancer.listen` in app `web`"), "{listen}: {errs}");
        assert!(e.message.contains(message), "{listen}: {errs}");
        assert!(e.hint.as_deref().unwrap_or("").contains(hint), "{listen}: {errs}");
        assert!(e.to_string().contains("herder.toml:5:10: "), "{listen}: {errs}");
    }
    // The forms the documentation gives.
    for (listen, host, port) in [
        ("8080", None, 8080),
        ("\"8080\"", None, 8080),
        ("\"127.0.0.1:8080\"", Some("127.0.0.1"), 8080),
        ("\"0.0.0.0:8080\"", Some("0.0.0.0"), 8080),
        ("\"[::1]:8080\"", Some("::1"), 8080),
        ("\"[::]:8080\"", Some("::"), 8080),
    ] {
        let spec = load(listen).unwrap_or_else(|e| panic!("{listen}: {e}")).remove(0);
        let b = spec.balancer.expect("a balancer");
        assert_eq!((b.listen.host.as_deref(), b.listen.port), (host, port), "{listen}");
    }
    // The app's `port` takes the same forms, with the same errors.
    let errs =
        f.load("[[apps]]\nname = \"web\"\nscript = \"app.js\"\nport = \"localhost:3000\"\n").unwrap_err();
    assert!(
        errs.to_string().contains("herder.toml:4:8: `port` in app `web`: `localhost` is a host name"),
        "{errs}"
    );
}

#[test]
fn balancer_mistakes_name_the_key_and_line() {
    let f = Fixture::new();
    f.file("app.js", "");
    let cases: &[(&str, usize, &str)] = &[
        ("[apps.balancer]\nstrategy = \"ip-hash\"\n", 5, "unknown strategy `ip-hash`"),
        ("[apps.balancer]\nlisten = 80\nstrategy = \"header\"\n", 6, "strategy = \"header\" needs `header`"),
        ("[apps.balancer]\nlisten = 80\nmaxfails = 3\n", 6, "unknown key `maxfails` in `balancer` of app"),
        ("[apps.balancer]\nlisten = 80\nmode = \"socket\"\nstrategy = \"ip_hash\"\n", 7, "balances nothing"),
        ("[apps.balancer]\nlisten = 80\nmode = \"tcp\"\nstrategy = \"ip_hash\"\n", 7, "needs HTTP"),
        ("[apps.balancer]\nlisten = 80\nweights = [1, 0]\n", 6, "a weight of 0"),
        ("[apps.balancer]\nlisten = 80\nunix_hop = \"no\"\n", 6, "unix_hop"),
        (
            "[apps.balancer]\nlisten = 80\n[apps.balancer.tls]\ncert = \"c.pem\"\n",
            6,
            "needs `cert` and `key`",
        ),
        ("[apps.balancer]\nmode = \"http\"\n", 4, "has no address to listen on"),
        ("increment_var = \"PORT\"\n[apps.balancer]\nlisten = 80\n", 5, "both set each instance's PORT"),
    ];
    for (table, line, message) in cases {
        let toml = format!("[[apps]]\nname = \"web\"\nscript = \"app.js\"\n{table}");
        let errs = f.load(&toml).expect_err(table);
        let e = errs.iter().next().unwrap();
        assert!(e.message.contains(message), "{table}: {errs}");
        assert!(e.message.contains("`web`"), "{table}: {errs}");
        assert_eq!(e.line, Some(*line), "{table}: {errs}");
    }
    let errs =
        f.load("[[apps]]\nname = \"web\"\nscript = \"app.js\"\n[apps.balancer]\nlisten = 80\nmaxfails = 3\n");
    let errs = errs.unwrap_err();
    assert_eq!(errs.iter().next().unwrap().hint.as_deref(), Some("did you mean `max_fails`?"), "{errs}");
}
