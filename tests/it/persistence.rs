//! `save`, `resurrect` and `daemon --resurrect`: the saved apps come back with the same specs
//! and environments; a damaged dump.json is named and its `.bak` used; the daemon tells systemd
//! it is ready and keeps systemd's socket from its apps.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use herder::protocol::{AppInfo, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// `show --json` of `name`: the spec with its environment.
fn shown(h: &TestHome, name: &str) -> AppInfo {
    serde_json::from_str(&h.ok(&["show", name, "--json"])).unwrap()
}

/// The environment of process `pid`.
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Three apps: two online with their own environments (one with two instances), one stopped.
fn start_three(h: &TestHome) -> Vec<String> {
    let tags: Vec<String> = ["one", "two", "parked"].iter().map(|t| h.tag(t)).collect();
    let idle = fixture("idle.sh");
    let idle = idle.to_str().unwrap();
    let mut c = h.cmd(&["start", idle, "--name", "one", "--", &tags[0]]);
    c.env("HERDER_TEST_SECRET", "s3cr3t value").env("HERDER_TEST_ONLY_ONE", "1");
    assert!(c.output().unwrap().status.success());
    let mut c = h.cmd(&["start", idle, "--name", "two", "-i", "2", "--kill-timeout", "1500", "--", &tags[1]]);
    c.env("HERDER_TEST_SECRET", "other");
    assert!(c.output().unwrap().status.success());
    h.ok(&["start", idle, "--name", "parked", "--", &tags[2]]);
    h.ok(&["stop", "parked"]);
    h.wait_status("one", Status::Online, T);
    h.wait_status("two", Status::Online, T);
    tags
}

#[test]
fn save_kill_resurrect_restores_the_same_apps_specs_and_env() {
    let h = TestHome::new();
    let tags = start_three(&h);
    let before: Vec<AppInfo> = ["one", "two", "parked"].iter().map(|n| shown(&h, n)).collect();
    let out = h.ok(&["save"]);
    assert!(out.contains("saved 3 app(s)"), "{out}");
    let dump = h.home.join("dump.json");
    assert_eq!(std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777, 0o600);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    assert_eq!(saved["version"], 1, "the dump is versioned");

    h.ok(&["kill"]);
    assert!(pids_with_arg(&tags[0]).is_empty() && pids_with_arg(&tags[1]).is_empty());
    // A later shell without those variables: the saved environments still apply.
    let out = h.cmd(&["resurrect"]).env_remove("HERDER_TEST_SECRET").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("resurrected `one`, `two`, `parked`"), "{text}");

    let one = h.wait_status("one", Status::Online, T);
    let two = h.wait_status("two", Status::Online, T);
    assert_eq!(h.app("parked").instances[0].status, Status::Stopped, "a stopped app comes back stopped");
    for (old, name) in before.iter().zip(["one", "two", "parked"]) {
        let new = shown(&h, name);
        assert_eq!(new.spec, old.spec, "`{name}` has the same spec and env");
        assert_eq!(new.id, old.id, "`{name}` has the same id");
    }
    let env = environ(one.instances[0].pid.unwrap());
    assert!(env.contains(&"HERDER_TEST_SECRET=s3cr3t value".to_string()), "{env:?}");
    assert!(env.contains(&"HERDER_TEST_ONLY_ONE=1".to_string()));
    assert_eq!(two.instances.len(), 2);
    assert!(environ(two.instances[1].pid.unwrap()).contains(&"HERDER_TEST_SECRET=other".to_string()));
    assert_eq!(pids_with_arg(&tags[0]).len(), 1, "`one` runs exactly once");
    assert_eq!(pids_with_arg(&tags[1]).len(), 2);
    assert!(pids_with_arg(&tags[2]).is_empty());

    // What runs is left alone by a second resurrect.
    let out = h.ok(&["resurrect"]);
    assert!(out.contains("already there") && out.contains("nothing to resurrect"), "{out}");
    assert_eq!(h.app("one").instances[0].pid, one.instances[0].pid);
}

#[test]
fn a_corrupt_dump_is_named_and_resurrect_uses_the_backup() {
    let h = TestHome::new();
    let tag = h.tag("first");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "first", "--", &tag]);
    h.ok(&["save"]);
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "second", "--", &h.tag("second")]);
    let out = h.ok(&["save"]);
    let dump = h.home.join("dump.json");
    let bak = h.home.join("dump.json.bak");
    assert!(out.contains(&bak.display().to_string()), "{out}");
    assert_eq!(std::fs::metadata(&bak).unwrap().permissions().mode() & 0o777, 0o600);
    h.ok(&["kill"]);

    // Truncated, as by a full disk or a crash of a careless writer.
    let text = std::fs::read(&dump).unwrap();
    std::fs::write(&dump, &text[..text.len() / 3]).unwrap();
    let out = h.run(&["resurrect"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("error: {} is corrupt", dump.display())),
        "the error names the file: {stderr}"
    );
    assert!(stderr.contains(&bak.display().to_string()), "it says the backup is used: {stderr}");
    h.wait_status("first", Status::Online, T);
    assert_eq!(h.list().len(), 1, "the backup holds the first save only");
    h.ok(&["kill"]);

    // Both unusable: an error naming both, nothing started.
    std::fs::write(&bak, b"{\"version\": 1, \"apps\": [").unwrap();
    let err = h.fails(&["resurrect"]);
    assert!(err.contains(&dump.display().to_string()) && err.contains(&bak.display().to_string()), "{err}");
    assert!(h.list().is_empty());
}

#[test]
fn saving_an_empty_list_needs_force() {
    let h = TestHome::new();
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "solo", "--", &h.tag("solo")]);
    h.ok(&["save"]);
    h.ok(&["delete", "solo"]);
    let err = h.fails(&["save"]);
    assert!(err.contains("--force") && err.contains("1 app(s)"), "{err}");
    let dump: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.home.join("dump.json")).unwrap()).unwrap();
    assert_eq!(dump["apps"].as_array().unwrap().len(), 1, "the save is untouched");
    assert!(h.ok(&["save", "--force"]).contains("saved 0 app(s)"));
    let err = TestHome::new().fails(&["resurrect"]);
    assert!(err.contains("herder save"), "no dump yet: {err}");
}

/// A datagram listener standing in for systemd's `NOTIFY_SOCKET`.
fn notify_listener(h: &TestHome) -> (UnixDatagram, std::path::PathBuf) {
    let path = h.dir.path().join("systemd-notify.sock");
    // A listener of an earlier daemon in the same test is done with: take its place.
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    (sock, path)
}

/// The next notification from the daemon of `h`; without one in time, fail with its log.
fn recv_text(h: &TestHome, sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => {
            let log = std::fs::read_to_string(h.home.join("daemon.log")).unwrap_or_default();
            panic!("no notification from the daemon within {T:?} ({e}); daemon.log:\n{log}")
        }
    }
}

#[test]
fn daemon_resurrect_notifies_systemd_when_ready_and_keeps_its_socket_from_apps() {
    let h = TestHome::new();
    let tag = h.tag("booted");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "booted", "--", &tag]);
    h.ok(&["save"]);
    h.ok(&["kill"]);

    let (mut daemon, sock, path) = unit_daemon(&h);
    // Ready means serving, with the saved apps started.
    let app = h.app("booted");
    assert!(app.instances[0].status.is_running(), "{:?}", app.instances[0].status);
    let pid = h.wait_status("booted", Status::Online, T).instances[0].pid.unwrap();
    let env = environ(pid);
    let theirs = format!("NOTIFY_SOCKET={}", path.display());
    assert!(!env.contains(&theirs), "the app got systemd's socket: {env:?}");
    assert!(env.iter().any(|v| v.starts_with("NOTIFY_SOCKET=") && v.contains("/run/")), "{env:?}");

    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(recv_text(&h, &sock).contains("STOPPING=1"));
    assert!(daemon.wait().unwrap().success());
    assert!(pids_with_arg(&tag).is_empty(), "SIGTERM stopped the app");
}

#[test]
fn a_command_run_under_systemd_passes_its_notify_socket_to_no_one() {
    let h = TestHome::new();
    let bogus = h.dir.path().join("unit-notify.sock");
    let mut c =
        h.cmd(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "unit", "--", &h.tag("unit")]);
    c.env("NOTIFY_SOCKET", &bogus).env("WATCHDOG_USEC", "1000000");
    assert!(c.output().unwrap().status.success());
    let pid = h.wait_status("unit", Status::Online, T).instances[0].pid.unwrap();
    let env = environ(pid);
    assert!(
        !env.iter().any(|v| v.contains(&*bogus.to_string_lossy()) || v.starts_with("WATCHDOG_USEC=")),
        "{env:?}"
    );
    let daemon = h.daemon_pid().unwrap();
    assert!(!environ(daemon).iter().any(|v| v.starts_with("NOTIFY_SOCKET=")), "the daemon it started");
}

/// `herder daemon --resurrect` as the unit runs it, in the background, with a notify socket
/// of its own (returned with its path); returns once it said `READY=1`.
fn unit_daemon(h: &TestHome) -> (std::process::Child, UnixDatagram, std::path::PathBuf) {
    let (sock, path) = notify_listener(h);
    let daemon = h
        .cmd(&["daemon", "--resurrect"])
        .env("NOTIFY_SOCKET", &path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = recv_text(h, &sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    (daemon, sock, path)
}

#[test]
fn daemon_resurrect_after_a_crash_keeps_apps_stopped_or_deleted_since_the_save() {
    let h = TestHome::new();
    let idle = fixture("idle.sh");
    let idle = idle.to_str().unwrap();
    let tags: Vec<String> = ["kept", "parked", "gone"].iter().map(|t| h.tag(t)).collect();
    for (name, tag) in ["kept", "parked", "gone"].iter().zip(&tags) {
        h.ok(&["start", idle, "--name", name, "--", tag]);
        h.wait_status(name, Status::Online, T);
    }
    h.ok(&["save"]);
    h.ok(&["stop", "parked"]);
    h.ok(&["delete", "gone"]);
    let kept = h.app("kept").instances[0].pid.unwrap();
    let dump = std::fs::read(h.home.join("dump.json")).unwrap();

    let crashed = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(crashed as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(crashed)).then_some(()));
    // systemd's `Restart=on-failure` starts the unit's command again.
    let (mut daemon, ..) = unit_daemon(&h);
    let apps = h.list();
    let names: Vec<&str> = apps.iter().map(|a| a.spec.name.as_str()).collect();
    assert_eq!(names, ["kept", "parked"], "the deleted app stays deleted");
    assert_eq!(h.app("parked").instances[0].status, Status::Stopped, "the stopped app stays stopped");
    assert!(pids_with_arg(&tags[1]).is_empty() && pids_with_arg(&tags[2]).is_empty());
    let now = h.wait_status("kept", Status::Online, T).instances[0].pid.unwrap();
    assert_ne!(now, kept, "the running app was recovered (started again)");
    let log = std::fs::read_to_string(h.home.join("daemon.log")).unwrap();
    assert!(log.contains("not resurrecting"), "{log}");
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());

    // A fresh start (no state.json: a new machine, or after a clean stop) resurrects the save.
    let fresh = TestHome::new();
    std::fs::create_dir_all(&fresh.home).unwrap();
    std::fs::write(fresh.home.join("dump.json"), dump).unwrap();
    let (mut daemon, ..) = unit_daemon(&fresh);
    for name in ["kept", "parked", "gone"] {
        fresh.wait_status(name, Status::Online, T);
    }
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    // After a clean stop, the next start is a fresh one too.
    let (mut daemon, ..) = unit_daemon(&fresh);
    for name in ["kept", "parked", "gone"] {
        fresh.wait_status(name, Status::Online, T);
    }
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
}
