//! `herder export systemd`: `systemd-analyze verify --man=no --recursive-errors=one` takes every
//! unit written for the examples and the PM2 fixtures, and the mapped values read back.
//!
//! `systemd-analyze verify` needs no running systemd: it loads the unit files given (their folder
//! joins the search path, so a socket finds its service and a timer its oneshot) and checks
//! that `ExecStart=` names an executable. The programs are the ones herder resolved on this
//! machine; the Go example's `./server`, which `go build` makes, is a stand-in script where it
//! is not built (`prepare`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::*;

/// The version of `systemd-analyze` here.
fn analyzer_version() -> u32 {
    let out = Command::new("systemd-analyze").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The units among the files written to `dir` (not the environment files nor the preload).
fn units(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "service" || e == "socket" || e == "timer"))
        .collect();
    found.sort();
    found
}

/// `systemd-analyze verify` succeeds on `unit` and says nothing about it (it exits 0 on some
/// warnings, such as an unsafe `User=`).
fn check(unit: &Path) {
    let mut c = Command::new("systemd-analyze");
    c.args(["verify", "--man=no", "--recursive-errors=one"]).arg(unit);
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = unit.parent().unwrap().display().to_string();
    let name = unit.file_name().unwrap().to_string_lossy().replace("@.", "@");
    assert!(
        out.status.success() && !stderr.lines().any(|l| l.contains(&dir) || l.contains(&name)),
        "systemd-analyze verify rejects {}:\n{stderr}\n--- the unit:\n{}",
        unit.display(),
        std::fs::read_to_string(unit).unwrap_or_default()
    );
}

/// A `systemctl` that only says its version, for the units of another systemd than this one.
fn systemctl_of_version(h: &TestHome, version: u32) -> PathBuf {
    let path = h.write(
        &format!("systemctl-{version}"),
        &format!("#!/bin/sh\necho 'systemd {version} ({version})'\n"),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A unit file as systemd reads it: `(section, key)` to its values in order, comments left
/// out.
fn read_unit(path: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut section = String::new();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        out.entry((section.clone(), k.trim().to_string())).or_default().push(v.trim().to_string());
    }
    out
}

/// The one value of `key` in `section`.
fn one(unit: &BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> String {
    match unit.get(&(section.to_string(), key.to_string())).map(Vec::as_slice) {
        Some([v]) => v.clone(),
        other => panic!("[{section}] {key}: {other:?} in {unit:#?}"),
    }
}

/// The `Environment=` assignments, unquoted and with `%%` back to `%`, as `KEY` → value.
fn environment(unit: &BTreeMap<(String, String), Vec<String>>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for word in unit.get(&("Service".into(), "Environment".into())).cloned().unwrap_or_default() {
        let inner = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')).expect("quoted");
        let mut value = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("a trailing backslash in {word}"),
                },
                (c, false) => value.push(c),
            }
        }
        let (k, v) = value.split_once('=').unwrap();
        env.insert(k.to_string(), resolve(v));
    }
    env
}

/// `%%` back to `%`; the specifiers the export writes (`%i`, `%E`) kept. Any other `%` would be
/// expanded by systemd (`%o`: its OS) or make it drop the line.
fn resolve(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(s @ ('i' | 'E')) => {
                out.push('%');
                out.push(s);
            }
            other => panic!("an unescaped `%` before {other:?} in {value}"),
        }
    }
    out
}

/// `KEY='value'` lines of an environment file.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

#[test]
fn every_config_exports_to_units_systemd_verifies() {
    if let Err(reason) = analyzer_or_reason() {
        eprintln!("skipped (HERDER_TEST_NO_SYSTEMD_ANALYZE): {reason}");
        return;
    }
    let h = TestHome::new();
    let mut checked = 0;
    for config in configs() {
        let config = prepare(&h, &config);
        let dir = h.dir.path().join(config.file_name().unwrap()).with_extension("units");
        let out = export(&h, &config, &["export", "systemd", "-o", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "export of {} failed:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let written = units(&dir);
        assert!(!written.is_empty(), "no unit for {}", config.display());
        for unit in written {
            check(&unit);
            checked += 1;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(checked >= configs().len(), "{checked} units");
}

const CONFIG: &str = r#"
[[apps]]
name = "api"
script = "server.py"
instances = 3
port = 8080
env = { APP_MODE = "production", GREETING = "50%off, 100% \"quoted\" $HOME", API_TOKEN = "s3cr3t" }
stop_exit_codes = [0, 3]
max_restarts = 5
min_uptime = "2s"
exp_backoff_restart_delay = "500ms"
kill_signal = "SIGINT"
kill_timeout = "12s"
memory_limit = "256M"
max_memory_restart = "200M"
cpu_limit = 1.5
wait_ready = true
listen_timeout = "8s"
watchdog = "20s"
cron_restart = "30 4 * * 1-5"
cron_timezone = "UTC"
user = "USER"
watch = ["src"]
log_max_size = "10M"
[[apps.health]]
http = "http://127.0.0.1:8080/health"

[[apps]]
name = "edge"
script = "server.py"
namespace = "front"
image = "edge:1"
instances = 2
port = 9100
autorestart = false
autostart = false
pid_file = "edge.pid"
cron_restart = "0 0 L * *"
[apps.balancer]
listen = 9000
[[apps.hooks]]
command = "true"
events = ["exit"]
"#;

#[test]
fn the_mapped_values_read_back_and_what_systemd_lacks_is_named() {
    if let Err(reason) = analyzer_or_reason() {
        eprintln!("skipped (HERDER_TEST_NO_SYSTEMD_ANALYZE): {reason}");
        return;
    }
    let h = TestHome::new();
    h.write("server.py", "");
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap().name;
    let config = h.write("herder.toml", &CONFIG.replace("\"USER\"", &format!("{user:?}")));
    let dir = h.dir.path().join("units");
    // A systemd without RestartSteps=, whatever this machine's is: its units verify here too.
    let old = systemctl_of_version(&h, 252);
    let mut c = h.cmd(&["export", "systemd", "-o", dir.to_str().unwrap()]);
    let out = c.arg(&config).env("HERDER_SYSTEMCTL", &old).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "api-restart.service",
            "api-restart.timer",
            "api.env",
            "api@.service",
            "api@.socket",
            "edge@.service",
            "edge@0.env",
            "edge@1.env"
        ],
        "{stderr}"
    );
    for unit in units(&dir) {
        check(&unit);
    }

    // The service: a template, its command, environment, restarts, readiness, stop, limits.
    let api = read_unit(&dir.join("api@.service"));
    let python = one(&api, "Service", "ExecStart");
    let (program, script) = python.split_once(' ').unwrap();
    assert!(Path::new(program).is_absolute(), "{python}");
    assert_eq!(script, h.dir.path().join("server.py").display().to_string());
    assert_eq!(one(&api, "Service", "WorkingDirectory"), h.dir.path().display().to_string());
    assert_eq!(one(&api, "Service", "User"), user);
    let env = environment(&api);
    assert_eq!(env["APP_MODE"], "production");
    assert_eq!(env["GREETING"], "50%off, 100% \"quoted\" $HOME");
    assert_eq!((env["HERDER_INSTANCE"].as_str(), env["NODE_APP_INSTANCE"].as_str()), ("%i", "%i"));
    assert_eq!((env["PORT"].as_str(), env["HERDER_LISTEN_PORTS"].as_str()), ("8080", "8080"));
    assert!(!env.contains_key("API_TOKEN"), "{env:?}");
    assert!(!std::fs::read_to_string(dir.join("api@.service")).unwrap().contains("s3cr3t"));
    assert_eq!(one(&api, "Service", "EnvironmentFile"), "%E/herder/api.env");
    assert_eq!(env_file(&dir.join("api.env"))["API_TOKEN"], "<API_TOKEN: set the secret value here>");

    assert_eq!(one(&api, "Service", "Restart"), "always");
    assert_eq!(one(&api, "Service", "RestartPreventExitStatus"), "0 3");
    assert_eq!(one(&api, "Service", "SuccessExitStatus"), "3");
    assert_eq!(one(&api, "Service", "RestartSec"), "500ms");
    assert!(!api.contains_key(&("Service".into(), "RestartSteps".into())), "systemd 252 has none");
    assert_eq!(one(&api, "Unit", "StartLimitBurst"), "6");
    // 6 runs of 2 s and the delays 0.5, 0.75, 1.125, 1.687, 2.53 s.
    assert_eq!(one(&api, "Unit", "StartLimitIntervalSec"), "19s");
    assert_eq!(one(&api, "Service", "Type"), "notify");
    assert_eq!(one(&api, "Service", "TimeoutStartSec"), "8s");
    assert_eq!(one(&api, "Service", "WatchdogSec"), "20s");
    assert_eq!(one(&api, "Service", "NotifyAccess"), "all");
    assert_eq!(one(&api, "Service", "KillSignal"), "SIGINT");
    assert_eq!(one(&api, "Service", "TimeoutStopSec"), "12s");
    assert_eq!(one(&api, "Service", "KillMode"), "control-group");
    assert_eq!(one(&api, "Service", "MemoryMax"), (256u64 << 20).to_string());
    assert_eq!(one(&api, "Service", "MemoryHigh"), (200u64 << 20).to_string());
    assert_eq!(one(&api, "Service", "CPUQuota"), "150%");
    assert_eq!(one(&api, "Unit", "Requires"), "api@%i.socket");
    assert_eq!(one(&api, "Install", "WantedBy"), "multi-user.target");

    // Its sockets: one per instance, in one reuseport group, named as under herder.
    let socket = read_unit(&dir.join("api@.socket"));
    assert_eq!(one(&socket, "Socket", "ListenStream"), "8080");
    assert_eq!(one(&socket, "Socket", "FileDescriptorName"), "8080");
    assert_eq!(one(&socket, "Socket", "ReusePort"), "yes");
    assert_eq!(one(&socket, "Socket", "Accept"), "no");

    // cron_restart: a timer restarting the running instances.
    let timer = read_unit(&dir.join("api-restart.timer"));
    assert_eq!(one(&timer, "Timer", "OnCalendar"), "Mon,Tue,Wed,Thu,Fri *-*-* 4:30:0 UTC");
    let restart = read_unit(&dir.join("api-restart.service"));
    assert!(one(&restart, "Service", "ExecStart").ends_with(" try-restart \"api@*.service\""), "{restart:?}");

    // The other app: no restarts, the balancer's instances on ports of their own.
    let edge = read_unit(&dir.join("edge@.service"));
    assert_eq!(one(&edge, "Service", "Restart"), "no");
    assert_eq!(one(&edge, "Service", "Type"), "exec");
    assert!(!edge.contains_key(&("Unit".into(), "StartLimitBurst".into())));
    assert_eq!(one(&edge, "Service", "EnvironmentFile"), "%E/herder/edge@%i.env");
    assert_eq!(env_file(&dir.join("edge@0.env"))["PORT"], "9100");
    assert_eq!(env_file(&dir.join("edge@1.env"))["PORT"], "9101");

    // What systemd cannot express: a warning naming the app and the key, and a comment.
    let edge_text = std::fs::read_to_string(dir.join("edge@.service")).unwrap();
    let api_text = std::fs::read_to_string(dir.join("api@.service")).unwrap();
    for (app, key, text) in [
        ("api", "watch", &api_text),
        ("api", "log_max_size", &api_text),
        ("api", "health", &api_text),
        ("api", "max_memory_restart", &api_text),
        ("api", "exp_backoff_restart_delay", &api_text),
        ("api", "env", &api_text),
        ("edge", "balancer", &edge_text),
        ("edge", "hooks", &edge_text),
        ("edge", "pid_file", &edge_text),
        ("edge", "cron_restart", &edge_text),
        ("edge", "namespace", &edge_text),
        ("edge", "image", &edge_text),
        ("edge", "autostart", &edge_text),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&format!("warning: systemd: app `{app}`: `{key}"))),
            "no warning for {app} {key}:\n{stderr}"
        );
        assert!(text.contains(&format!("# note: `{key}")), "no comment for {app} {key}:\n{text}");
    }

    // A systemd with RestartSteps=, and the secrets asked for, on stdout.
    let new = systemctl_of_version(&h, 256);
    let mut c = h.cmd(&["export", "systemd", "--only", "api", "--include-secrets"]);
    let out = c.arg(&config).env("HERDER_SYSTEMCTL", &new).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# api.env\n") && text.contains("API_TOKEN='s3cr3t'\n"), "{text}");
    for line in ["RestartSec=500ms", "RestartSteps=9", "RestartMaxDelaySec=15s"] {
        assert!(text.contains(&format!("\n{line}\n")), "no {line}:\n{text}");
    }
    if analyzer_version() >= 254 {
        let dir = h.dir.path().join("units-256");
        let mut c = h.cmd(&["export", "systemd", "--only", "api", "-o", dir.to_str().unwrap()]);
        assert!(c.arg(&config).env("HERDER_SYSTEMCTL", &new).output().unwrap().status.success());
        check(&dir.join("api@.service"));
    }
}
