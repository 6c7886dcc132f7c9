//! Every `start` flag of PM2 (pm2-compat.md §3): acted on, accepted with a note where it
//! turns off something herder never does, or refused with what to use instead.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn idle() -> String {
    fixture("idle.sh").to_str().unwrap().to_string()
}

#[test]
fn flags_that_shape_the_app_are_acted_on() {
    let h = TestHome::new();
    let out = h
        .cmd(&[
            "start",
            &idle(),
            "--name",
            "api",
            "--max-memory-restart",
            "200M",
            "--cron",
            "0 3 * * *",
            "--node-args=--max-old-space-size=512 --trace-warnings",
            "--instance-var",
            "INSTANCE_ID",
            "--filter-env",
            "HERDER_TEST_DROP",
            "--env",
            "NODE_ENV=production",
            "--env",
            "FEATURE=on",
            "--port",
            "3999",
            "--interpreter",
            "sh",
        ])
        .env("HERDER_TEST_DROP_ME", "1")
        .env("HERDER_TEST_KEEP", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let app = h.wait_status("api", Status::Online, T);
    let s = &app.spec;
    assert_eq!(s.max_memory_restart, Some(200 * 1024 * 1024));
    assert_eq!(s.cron_restart.as_deref(), Some("0 3 * * *"));
    assert_eq!(s.instance_var, "INSTANCE_ID");
    // `list --json` carries no env: `show` does.
    let shown: serde_json::Value = serde_json::from_str(&h.ok(&["show", "api", "--json"])).unwrap();
    let env = &shown["spec"]["env"];
    assert_eq!(env["NODE_ENV"], "production");
    assert_eq!(env["FEATURE"], "on");
    assert_eq!(env["PORT"], "3999", "--port sets PORT");
    assert!(env.get("HERDER_TEST_DROP_ME").is_none(), "--filter-env dropped it: {env}");
    assert_eq!(env["HERDER_TEST_KEEP"], "1");
    // The interpreter arguments come before the script.
    assert!(s.program.ends_with("/sh"), "{}", s.program);
    assert_eq!(s.args[..2], ["--max-old-space-size=512", "--trace-warnings"]);

    // -c and --cron-restart are the same flag.
    h.ok(&["start", "sleep 1000", "--name", "c", "-c", "*/5 * * * *"]);
    assert_eq!(h.app("c").spec.cron_restart.as_deref(), Some("*/5 * * * *"));
    h.ok(&["start", "sleep 1001", "--name", "d", "--cron-restart", "0 4 * * *"]);
    assert_eq!(h.app("d").spec.cron_restart.as_deref(), Some("0 4 * * *"));
}

#[test]
fn no_autostart_adds_the_app_stopped_and_says_so() {
    let h = TestHome::new();
    let out = h.ok(&["start", &idle(), "--name", "later", "--no-autostart"]);
    assert!(out.contains("added `later` as stopped"), "{out}");
    let app = h.app("later");
    assert_eq!(app.instances[0].status, Status::Stopped);
    assert_eq!(app.instances[0].pid, None);
    h.ok(&["start", "later"]);
    h.wait_status("later", Status::Online, T);
}

#[test]
fn update_env_on_start_restarts_existing_apps_with_this_shells_environment() {
    let h = TestHome::new();
    h.ok(&["start", &idle(), "--name", "api"]);
    h.wait_status("api", Status::Online, T);
    let out = h.cmd(&["start", "api", "--update-env"]).env("HERDER_TEST_NEW", "yes").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_str(&h.ok(&["show", "api", "--json"])).unwrap();
    assert_eq!(shown["spec"]["env"]["HERDER_TEST_NEW"], "yes");
    assert_eq!(h.app("api").instances[0].restarts, 1);
}

#[test]
fn bad_values_name_their_flag_and_start_nothing() {
    let h = TestHome::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--max-memory-restart", "lots"], "--max-memory-restart"),
        (&["--cron", "every day"], "--cron-restart"),
        (&["--port", "99999"], "--port"),
        (&["--env", "production"], "--env NODE_ENV=production"),
        (&["--watch", "--watch-delay", "2"], "--watch-delay 2s"),
        (&["--instance-var", "A=B"], "--instance-var"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["start", "sleep 1000", "--name", "x"];
        args.extend_from_slice(flags);
        let err = h.fails(&args);
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    assert!(h.list().is_empty(), "nothing was started");
}

#[test]
fn flags_for_what_herder_never_does_are_accepted_with_a_note() {
    let h = TestHome::new();
    let out = h.run(&[
        "start",
        &idle(),
        "--name",
        "api",
        "--no-vizion",
        "--no-pmx",
        "--no-automation",
        "-x",
        "--disable-source-map-support",
        "--no-color",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    for word in ["--no-vizion", "--no-pmx", "-x", "--disable-source-map-support"] {
        assert!(err.contains(&format!("note: `{word}`")), "{word}: {err}");
    }
    h.wait_status("api", Status::Online, T);
    // --parallel takes a value; -s silences stdout.
    let out = h.run(&["restart", "api", "--parallel", "2", "-s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "-s prints nothing: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(h.app("api").instances[0].restarts, 1);
}

#[test]
fn flags_herder_does_differently_are_refused_with_the_alternative() {
    let h = TestHome::new();
    let cases: &[(&[&str], &str)] = &[
        (&["start", "app.js", "--no-treekill"], "herder signal"),
        (&["start", "app.js", "--ext", "js,json"], "--ignore-watch"),
        (&["start", "app.js", "--source-map-support"], "--enable-source-maps"),
        (&["start", "app.js", "--trace"], "herder metrics"),
        (&["start", "app.js", "--disable-trace"], "herder metrics"),
        (&["start", "app.js", "--v8"], "herder metrics"),
        (&["start", "app.js", "--event-loop-inspector"], "herder metrics"),
        (&["start", "app.js", "--deep-monitoring"], "herder metrics"),
        (&["start", "app.js", "--attach"], "herder logs"),
        (&["start", "app.js", "-w"], "herder show"),
        (&["start", "app.js", "--container"], "herder run"),
        (&["start", "app.js", "--dist"], "herder run"),
        (&["start", "app.js", "--image-name", "x"], "herder run"),
        (&["start", "app.js", "--node-version", "20"], "herder run"),
        (&["start", "app.js", "--fresh"], "herder run"),
        (&["start", "app.js", "--dockerdaemon"], "herder run"),
        (&["logs", "api", "--highlight"], "grep"),
        (&["logs", "api", "--format"], "--raw"),
        (&["startup", "-u", "deploy"], "--run-as"),
        (&["startup", "--hp", "/home/deploy"], "--run-as"),
        (&["startup", "--service-name", "x"], "herder startup"),
    ];
    for (args, alternative) in cases {
        let err = h.fails(args);
        assert!(err.contains(alternative), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?} got the parser's answer: {err}");
    }
    assert!(!h.home.join("daemon.pid").exists() || h.list().is_empty(), "nothing was started");
}

#[test]
fn no_daemon_runs_the_script_in_the_foreground() {
    let h = TestHome::new();
    let mut child = h
        .cmd(&[
            "start",
            &fixture("crash.sh").display().to_string(),
            "--name",
            "fg",
            "--no-daemon",
            "--no-autorestart",
            "--",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = wait_for("the app's output on the foreground's stdout", T, || {
        rx.recv_timeout(Duration::from_millis(200)).ok().filter(|l| l.contains("crashing with 0"))
    });
    assert!(line.contains("fg"), "prefixed with the app's name: {line}");
    // Another shell sees it, and it is the foreground's: no daemon was left behind.
    h.wait_status("fg", Status::Stopped, T);
    // SAFETY: kill(2) on the test's own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("the foreground to exit", T, || child.try_wait().unwrap());
    assert!(status.success(), "{status}");
    assert!(h.daemon_pid().is_none_or(|p| !pid_alive(p)), "no daemon runs after it");
}

#[test]
fn uid_gid_and_pid_flags_run_the_app_as_that_account_and_write_its_pid() {
    assert!(
        // SAFETY: geteuid(2) has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "this test needs root (as the CI runs): `--uid` needs a daemon that can switch users"
    );
    let h = TestHome::new();
    let pid_file = h.dir.path().join("api.pid");
    for (user_flag, group_flag) in [("--uid", "--gid"), ("--user", "--group")] {
        let name = format!("api{user_flag}");
        h.ok(&[
            "start",
            "sleep 1000",
            "--name",
            &name,
            user_flag,
            "nobody",
            group_flag,
            "65534",
            "-p",
            pid_file.to_str().unwrap(),
            "--cwd",
            "/",
        ]);
        let pid = h.wait_status(&name, Status::Online, T).instances[0].pid.unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ids = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!((ids("Uid:"), ids("Gid:")), ("65534".to_string(), "65534".to_string()), "{user_flag}");
        let written = wait_for("the pid file", T, || std::fs::read_to_string(&pid_file).ok());
        assert_eq!(written.trim(), pid.to_string());
        h.ok(&["delete", &name]);
        wait_for("the pid file to go", T, || (!pid_file.exists()).then_some(()));
    }
}
