//! `herder start` never replaces or restarts a running app behind the user's back: a taken
//! name or a script that already runs is refused (`-f` does it on purpose), and a config file
//! says which of its apps it started and which it restarted.

use std::io::{Read, Write};
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether an HTTP server answers a GET on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

#[test]
fn a_second_command_under_a_taken_name_is_refused_and_the_first_keeps_serving() {
    let h = TestHome::new();
    let (p1, p2) = (free_port(), free_port());
    let first = format!("python3 -m http.server {p1} --bind 127.0.0.1");
    let out = h.ok(&["start", &first]);
    assert!(out.contains("started `python3`"), "{out}");
    wait_for("the first server to answer", T, || answers(p1).then_some(()));
    let pid = h.app("python3").instances[0].pid;

    let err = h.fails(&["start", &format!("python3 -m http.server {p2} --bind 127.0.0.1")]);
    assert!(err.contains("an app named `python3` already exists"), "{err}");
    assert!(err.contains(&first), "the message names what runs under the name: {err}");
    assert!(err.contains("--name"), "the hint says how to start it beside: {err}");
    let app = h.app("python3");
    assert_eq!(app.spec.script, first, "the spec is unchanged");
    assert_eq!(app.instances[0].pid, pid, "the app was not restarted");
    assert_eq!(app.instances[0].restarts, 0);
    assert!(answers(p1), "the first server still answers");

    // Beside it under another name: both serve.
    h.ok(&["start", &format!("python3 -m http.server {p2} --bind 127.0.0.1"), "--name", "second"]);
    wait_for("the second server to answer", T, || answers(p2).then_some(()));
    assert!(answers(p1));
}

#[test]
fn a_script_that_already_runs_is_refused_and_force_restarts_it_with_the_new_flags() {
    let h = TestHome::new();
    let script = fixture("idle.sh");
    let script = script.to_str().unwrap();
    let tag = h.tag("idle");
    h.ok(&["start", script, "--name", "idle", "--", &tag]);
    let app = h.wait_status("idle", Status::Online, T);
    let pid = app.instances[0].pid;

    let err = h.fails(&["start", script, "--name", "idle", "--", &tag]);
    assert!(err.contains("already launched"), "{err}");
    assert!(err.contains("-f"), "{err}");
    assert_eq!(h.app("idle").instances[0].pid, pid);

    let out = h.ok(&["start", script, "--name", "idle", "-f", "--kill-timeout", "2s", "--", &tag]);
    assert!(out.contains("restarted `idle`"), "{out}");
    let app = wait_for("the forced restart", T, || {
        let a = h.app("idle");
        (a.instances[0].status == Status::Online && a.instances[0].pid != pid).then_some(a)
    });
    assert_eq!(app.spec.kill_timeout_ms, 2_000, "the new flags apply");

    // Stopped, the same script starts again without `-f`.
    h.ok(&["stop", "idle"]);
    let out = h.ok(&["start", script, "--name", "idle", "--", &tag]);
    assert!(out.contains("started `idle`"), "{out}");
    h.wait_status("idle", Status::Online, T);
}

#[test]
fn a_config_file_says_which_apps_it_started_and_which_it_restarted() {
    let h = TestHome::new();
    let idle = fixture("idle.sh");
    let app = |name: &str| {
        format!(
            "[[apps]]\nname = \"{name}\"\nscript = \"{}\"\nargs = [\"{}\"]\n",
            idle.display(),
            h.tag(name)
        )
    };
    let cfg = h.write("apps.toml", &(app("a") + &app("b")));
    let out = h.ok(&["start", cfg.to_str().unwrap()]);
    assert!(out.contains("started `a`, `b`"), "{out}");
    assert!(!out.contains("restarted"), "{out}");
    h.wait_status("a", Status::Online, T);
    h.wait_status("b", Status::Online, T);

    std::fs::write(&cfg, app("a") + &app("b") + &app("c")).unwrap();
    let out = h.ok(&["start", cfg.to_str().unwrap()]);
    assert!(out.contains("started `c`"), "{out}");
    assert!(out.contains("restarted `a`, `b`"), "{out}");
}

#[test]
fn an_env_name_no_app_defines_is_an_error_and_the_running_apps_keep_theirs() {
    let h = TestHome::new();
    let text = format!(
        "module.exports = {{ apps: [{{ name: 'api', script: '{}', args: ['{}'],\n  \
         env: {{ NODE_ENV: 'development' }},\n  env_production: {{ NODE_ENV: 'production' }} }}] }};\n",
        fixture("idle.sh").display(),
        h.tag("api")
    );
    let cfg = h.write("ecosystem.config.js", &text);
    let cfg = cfg.to_str().unwrap();
    h.ok(&["start", cfg, "--env", "production"]);
    let app = h.wait_status("api", Status::Online, T);
    let pid = app.instances[0].pid;

    for verb in ["start", "restart"] {
        let err = h.fails(&[verb, cfg, "--env", "prod"]);
        assert!(err.contains("no app sets `env_prod`"), "{verb}: {err}");
        assert!(err.contains("did you mean `--env production`?"), "{verb}: {err}");
    }
    let err = h.fails(&["validate", cfg, "--env", "staging"]);
    assert!(err.contains("the file defines `production`"), "{err}");

    let app: serde_json::Value = serde_json::from_str(&h.ok(&["show", "api", "--json"])).unwrap();
    assert_eq!(app["instances"][0]["pid"].as_u64(), pid.map(u64::from), "not restarted");
    assert_eq!(app["instances"][0]["restarts"].as_u64(), Some(0));
    assert_eq!(app["spec"]["env"]["NODE_ENV"].as_str(), Some("production"), "its environment is kept");
}

#[test]
fn a_files_warnings_are_printed_by_the_commands_given_the_file_only() {
    let h = TestHome::new();
    let text = "module.exports = { apps: [\n  { name: 'w', script: 'sleep', args: '1000', vizion: false },\n  { name: 'v', script: 'sleep', args: '1001' }] };\n";
    let cfg = h.write("ecosystem.config.js", text);
    let cfg = cfg.to_str().unwrap();
    let warned = |args: &[&str]| {
        let out = h.run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).contains("`vizion`")
    };
    assert!(warned(&["start", cfg]), "start of the file warns");
    assert!(warned(&["restart", cfg]), "restart of the file warns");
    for args in [
        &["restart", "v"][..],
        &["restart", "w"],
        &["stop", "w"],
        &["start", "w"],
        &["list"],
        &["show", "w"],
        &["save"],
    ] {
        assert!(!warned(args), "`herder {}` repeated the file's warning", args.join(" "));
    }
}
