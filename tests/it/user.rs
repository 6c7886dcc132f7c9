//! `user`/`group`: a root daemon runs an app as another account (ids, supplementary groups,
//! login variables, a notify socket it can reach); a daemon that is not root refuses, and
//! nothing starts. Also `pid_file`, and keys herder does not act on yet.
//!
//! The tests that switch accounts need root (the CI runs as root): without it they fail, they
//! do not skip.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn require_root(test: &str) {
    // SAFETY: geteuid(2) cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "`{test}` switches users and must run as root (the CI does); this run is uid {euid}");
}

/// nobody's passwd entry: uid, gid, home, shell.
fn nobody() -> (u32, u32, String, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("nobody:")).expect("a `nobody` user in /etc/passwd");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap(), f[5].to_string(), f[6].to_string())
}

/// Let other users reach the test's directory (its `HERDER_HOME` stays 0700).
fn open_to_all(h: &TestHome) {
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A line `key=value` of `text`.
fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A `/proc/<pid>/status` field.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().trim().to_string()
}

#[test]
fn an_app_with_user_nobody_runs_with_nobodys_ids_groups_and_login_variables() {
    require_root("an_app_with_user_nobody_runs_…");
    let h = TestHome::new();
    open_to_all(&h);
    let (uid, gid, home, shell) = nobody();
    let expected_groups = Command::new("id").args(["-G", "nobody"]).output().unwrap();
    let mut expected_groups: Vec<u32> = String::from_utf8_lossy(&expected_groups.stdout)
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    expected_groups.sort_unstable();

    // What the app sees, then its ready signal through `NOTIFY_SOCKET`, which it can reach
    // although `HERDER_HOME` is root's and 0700. Its readiness probe passes only as nobody.
    let script = h.write(
        "who.sh",
        "#!/bin/sh\n\
         echo \"uid=$(id -u)\"\necho \"gid=$(id -g)\"\necho \"groups=$(id -G)\"\n\
         echo \"home=$HOME\"\necho \"user=$USER\"\necho \"logname=$LOGNAME\"\necho \"shell=$SHELL\"\n\
         python3 -c 'import os, socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])'\n\
         exec sleep 100000\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"who\"\nscript = \"{}\"\nuser = \"nobody\"\nwait_ready = true\nlisten_timeout = \"15s\"\n\
             [[apps.health]]\nkind = \"readiness\"\nexec = [\"sh\", \"-c\", \"test $(id -u) = {uid}\"]\ninterval = \"100ms\"\n",
            script.display()
        ),
    );
    h.ok(&["start", config.to_str().unwrap()]);
    let app = h.wait_status("who", Status::Online, T);
    let pid = app.instances[0].pid.unwrap();

    let log = std::fs::read_to_string(h.home.join("logs/who-0.out.log")).unwrap();
    assert_eq!(value(&log, "uid"), Some(uid.to_string().as_str()), "{log}");
    assert_eq!(value(&log, "gid"), Some(gid.to_string().as_str()), "{log}");
    let mut groups: Vec<u32> =
        value(&log, "groups").unwrap().split_whitespace().map(|g| g.parse().unwrap()).collect();
    groups.sort_unstable();
    assert_eq!(groups, expected_groups, "the supplementary groups are nobody's, not root's: {log}");
    assert_eq!(value(&log, "home"), Some(home.as_str()), "{log}");
    assert_eq!(value(&log, "user"), Some("nobody"), "{log}");
    assert_eq!(value(&log, "logname"), Some("nobody"), "{log}");
    assert_eq!(value(&log, "shell"), Some(shell.as_str()), "{log}");

    // The kernel agrees: real, effective, saved and file-system ids, and no root group left.
    let ids = format!("{uid}\t{uid}\t{uid}\t{uid}");
    assert_eq!(status_field(pid, "Uid:"), ids);
    assert_eq!(status_field(pid, "Gid:"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    let proc_groups = status_field(pid, "Groups:");
    assert!(!proc_groups.split_whitespace().any(|g| g == "0"), "no root group: {proc_groups}");

    // The notify socket is alone in a 0700 directory of nobody's; the log stays the daemon's.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let socket = environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"NOTIFY_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("NOTIFY_SOCKET");
    let dir = Path::new(&socket).parent().unwrap();
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700), "{socket}");
    assert!(!socket.starts_with(h.home.to_str().unwrap()), "{socket}");
    assert_eq!(std::fs::metadata(h.home.join("logs/who-0.out.log")).unwrap().uid(), 0);

    // Stopped and deleted, the socket's directory goes too.
    h.ok(&["delete", "who"]);
    assert!(!dir.exists(), "{} is left", dir.display());

    // A script the user cannot reach fails its start and says why.
    let private = h.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = private.join("hidden.sh");
    std::fs::write(&hidden, "#!/bin/sh\nexec sleep 100000\n").unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = h.write(
        "hidden.toml",
        &format!("[[apps]]\nname = \"hidden\"\nscript = \"{}\"\nuser = \"nobody\"\n", hidden.display()),
    );
    h.ok(&["start", config.to_str().unwrap()]);
    let app = h.wait_status("hidden", Status::Errored, T);
    let reason = app.instances[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("can the user `nobody` reach it?"), "{reason}");
}

/// `herder <args>` as nobody (and group nogroup, no supplementary groups).
fn as_nobody(h: &TestHome, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(BIN)
        .args(args)
        .env("HERDER_HOME", &h.home)
        .current_dir(h.dir.path())
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn a_daemon_that_is_not_root_refuses_an_app_for_another_user_and_starts_nothing() {
    require_root("a_daemon_that_is_not_root_refuses_…");
    let h = TestHome::new();
    open_to_all(&h);
    std::fs::create_dir(&h.home).unwrap();
    let (uid, gid, _, _) = nobody();
    std::os::unix::fs::chown(&h.home, Some(uid), Some(gid)).unwrap();
    let idle = fixture("idle.sh");
    let tag = h.tag("web");
    let config = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"ok\"\nscript = \"{idle}\"\nargs = [\"{tag}\"]\n\n\
             [[apps]]\nname = \"web\"\nscript = \"{idle}\"\nargs = [\"{tag}\"]\nuser = \"root\"\n",
            idle = idle.display()
        ),
    );

    let out = as_nobody(&h, &["start", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started as nobody: {err}");
    assert!(
        err.contains(&format!(
            "app `web`: `user = \"root\"` needs a daemon running as root (this one runs as uid {uid}); nothing was started"
        )),
        "{err}"
    );
    assert_eq!(h.daemon_pid().map(|p| status_field(p, "Uid:")), Some(format!("{uid}\t{uid}\t{uid}\t{uid}")));
    let list = as_nobody(&h, &["list", "--json"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let apps: Vec<herder::protocol::AppInfo> = serde_json::from_slice(&list.stdout).unwrap();
    assert!(apps.is_empty(), "nothing was started: {apps:?}");
    assert!(pids_with_arg(&tag).is_empty());

    // Its own account is no switch at all: that app runs.
    let own = h.write(
        "own.toml",
        &format!(
            "[[apps]]\nname = \"own\"\nscript = \"{}\"\nargs = [\"{tag}\"]\nuser = \"nobody\"\n",
            idle.display()
        ),
    );
    let out = as_nobody(&h, &["start", own.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let app = h.wait_status("own", Status::Online, T);
    assert_eq!(status_field(app.instances[0].pid.unwrap(), "Uid:"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
}

#[test]
fn a_user_that_does_not_exist_is_an_error_with_its_line_and_nothing_starts() {
    let h = TestHome::new();
    let config = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"web\"\nscript = \"{}\"\nuser = \"no-such-user-herder\"\n",
            fixture("idle.sh").display()
        ),
    );
    let err = h.fails(&["start", config.to_str().unwrap()]);
    assert!(
        err.contains(
            "herder.toml:4:8: app `web`: `user = \"no-such-user-herder\"`: no such user on this machine"
        ),
        "{err}"
    );
    assert!(h.list().is_empty());
}

#[test]
fn keys_not_implemented_yet_fail_herder_toml_and_warn_in_pm2_files() {
    let h = TestHome::new();
    let idle = fixture("idle.sh");
    let toml = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"web\"\nscript = \"{}\"\nimage = \"web:1\"\ninterpreter = \"node@18\"\n",
            idle.display()
        ),
    );
    // `image` (line 4) is for `herder export`; a Node version (line 5) herder does not install.
    let err = h.fails(&["validate", toml.to_str().unwrap()]);
    assert!(err.contains("herder.toml:5:") && err.contains("asks for a Node version"), "{err}");
    assert!(!err.contains("`image`"), "{err}");
    let err = h.fails(&["start", toml.to_str().unwrap()]);
    assert!(err.contains("asks for a Node version"), "{err}");
    assert!(h.list().is_empty(), "nothing started");

    let json = h.write(
        "ecosystem.json",
        &format!(
            "{{\"apps\": [{{\"name\": \"web\", \"script\": \"{}\", \"exec_mode\": \"cluster\", \"instances\": 2}}]}}",
            idle.display()
        ),
    );
    // `exec_mode = "cluster"` is implemented: no warning.
    let out = h.cmd(&["validate", json.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("exec_mode"), "{err}");
}

#[test]
fn pid_file_holds_the_running_pid_and_is_removed_at_stop() {
    let h = TestHome::new();
    let tag = h.tag("pidded");
    let config = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"pidded\"\nscript = \"{}\"\nargs = [\"{tag}\"]\npid_file = \"run/pidded.pid\"\n\n\
             [[apps]]\nname = \"two\"\nscript = \"{}\"\nargs = [\"{tag}\"]\ninstances = 2\npid_file = \"run/two.pid\"\n",
            fixture("idle.sh").display(),
            fixture("idle.sh").display()
        ),
    );
    std::fs::create_dir(h.dir.path().join("run")).unwrap();
    let pid_file = h.dir.path().join("run/pidded.pid");
    let read = |p: &Path| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u32>().ok());
    h.ok(&["start", config.to_str().unwrap()]);
    let app = h.wait_status("pidded", Status::Online, T);
    let pid = app.instances[0].pid.unwrap();
    assert_eq!(read(&pid_file), Some(pid));

    // Several instances: one file each.
    let two = h.wait_status("two", Status::Online, T);
    for i in &two.instances {
        assert_eq!(read(&h.dir.path().join(format!("run/two-{}.pid", i.index))), i.pid);
    }

    // A restart writes the new pid.
    h.ok(&["restart", "pidded"]);
    let app = wait_for("the restart", T, || {
        let a = h.app("pidded");
        (a.instances[0].status == Status::Online && a.instances[0].pid != Some(pid)).then_some(a)
    });
    assert_eq!(read(&pid_file), app.instances[0].pid);

    // A crash takes it away until the replacement writes its own.
    let pid = app.instances[0].pid.unwrap();
    // SAFETY: kill(2) on the test's own app.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let app = wait_for("the replacement", T, || {
        let a = h.app("pidded");
        (a.instances[0].status == Status::Online && a.instances[0].pid != Some(pid)).then_some(a)
    });
    assert_eq!(read(&pid_file), app.instances[0].pid);

    h.ok(&["stop", "all"]);
    assert!(!pid_file.exists(), "removed at stop");
    assert!(!h.dir.path().join("run/two-0.pid").exists() && !h.dir.path().join("run/two-1.pid").exists());
}
