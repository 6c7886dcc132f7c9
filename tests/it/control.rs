//! The control socket: what a client says when its daemon dies under a request or is another
//! user's, and daemon.log's mode.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_request_cut_off_by_the_daemon_dying_says_so_and_fails() {
    let h = TestHome::new();
    let pid_file = h.dir.path().join("stubborn.pid");
    let config = h.write(
        "stubborn.toml",
        &format!(
            "[[apps]]\nname = \"stubborn\"\nscript = \"{}\"\nargs = [\"{}\"]\nkill_timeout = \"60s\"\n",
            fixture("stubborn.py").display(),
            pid_file.display()
        ),
    );
    h.ok(&["start", config.to_str().unwrap()]);
    wait_for("the stubborn app", T, || pid_file.exists().then_some(()));
    h.wait_status("stubborn", Status::Online, T);
    let daemon = h.daemon_pid().unwrap();
    // The app ignores SIGTERM: the stop waits for its kill_timeout, a minute.
    let mut stop =
        h.cmd(&["stop", "stubborn"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the stop to be under way", T, || {
        (h.app("stubborn").instances[0].status == Status::Stopping).then_some(())
    });
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    let status = wait_for("the stop command to end", T, || stop.try_wait().unwrap());
    let mut err = String::new();
    stop.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let app: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the test's own app.
    unsafe { libc::kill(app, libc::SIGKILL) };

    assert!(!status.success(), "the cut-off stop exited 0: {err}");
    assert!(!err.contains("another user"), "{err}");
    assert!(err.contains(&format!("the daemon (pid {daemon}) stopped before it answered")), "{err}");
    assert!(err.contains("daemon.log"), "points at the daemon's log: {err}");
}

#[test]
fn a_daemon_of_another_user_is_named_as_such() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root, so this test cannot switch users");
        return;
    }
    let h = TestHome::new();
    h.ok(&["ping"]);
    let ping_as_nobody = || {
        use std::os::unix::process::CommandExt;
        let out = h.cmd(&["ping"]).uid(65534).gid(65534).current_dir("/").output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // As herder sets the permissions, the kernel turns another uid away: the client names
    // the folder of another user in the way (the home, 0700).
    let err = ping_as_nobody();
    assert!(err.contains(&format!("{} belongs to uid 0, and this is uid 65534", h.home.display())), "{err}");
    // Permissions loosened by hand let another uid reach the socket; the daemon's peer check
    // then drops it without a word, and the client says whose socket it is.
    let set = |dirs: u32, sock: u32| {
        for dir in [h.dir.path(), &h.home] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dirs)).unwrap();
        }
        std::fs::set_permissions(h.home.join("herder.sock"), std::fs::Permissions::from_mode(sock)).unwrap();
    };
    set(0o711, 0o666);
    let err = ping_as_nobody();
    set(0o700, 0o600);
    let sock = h.home.join("herder.sock");
    assert!(err.contains(&format!("{} belongs to uid 0, and this is uid 65534", sock.display())), "{err}");
    assert!(err.contains("a herder daemon serves only its own user"), "{err}");
}

#[test]
fn daemon_log_is_private() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    assert_eq!(mode(&h.home.join("daemon.log")), 0o600);
}

#[test]
fn an_older_looser_daemon_log_and_its_rotations_become_private() {
    let h = TestHome::new();
    // A home of an older herder: daemon.log 0644 and full to its rotation size (10 MiB), so
    // the daemon's first line rotates it, and an older rotated file.
    std::fs::create_dir(&h.home).unwrap();
    std::fs::set_permissions(&h.home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = h.home.join("daemon.log");
    let old = h.home.join("daemon.log.20200101-000000.000000");
    let line = "2020-01-01T00:00:00Z  INFO herder::daemon: an old line of an older herder\n";
    std::fs::write(&log, line.repeat(10 * 1024 * 1024 / line.len() + 1)).unwrap();
    std::fs::write(&old, line).unwrap();
    for p in [&log, &old] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    h.ok(&["ping"]);
    let files = || -> Vec<std::path::PathBuf> {
        let mut f: Vec<_> = std::fs::read_dir(&h.home)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("daemon.log"))
            .collect();
        f.sort();
        f
    };
    wait_for("daemon.log to rotate", T, || (files().len() >= 3).then_some(()));
    let modes: Vec<_> =
        files().iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), mode(p))).collect();
    assert!(modes.iter().all(|(_, m)| *m == 0o600), "{modes:?}");
}
