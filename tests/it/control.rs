//! The control socket: daemon.log's mode.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
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
