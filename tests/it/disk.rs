//! A full or read-only home: the apps run on, a daemon still starts and recovers them, what
//! cannot be done fails with the reason, and `list`, `doctor` and a `disk` event tell what is
//! not written. The homes are a small tmpfs and a read-only bind mount, which need root (or
//! CAP_SYS_ADMIN): where the test cannot mount, it says so and does nothing else.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// A test home on a mount of its own, unmounted (after its daemon is gone) on drop.
struct Mounted {
    h: TestHome,
    layers: usize,
}

fn mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount").args(args).output().map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl Mounted {
    /// A home on a tmpfs of `size` (`2m`), or `None` where this test cannot mount.
    fn tmpfs(size: &str) -> Option<Mounted> {
        let h = TestHome::new();
        std::fs::create_dir(&h.home).unwrap();
        let home = h.home.to_str().unwrap();
        match mount(&["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", home]) {
            Ok(()) => Some(Mounted { h, layers: 1 }),
            Err(why) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here ({why}); this test needs root or CAP_SYS_ADMIN"
                );
                None
            }
        }
    }

    /// A home on the test's own disk, to be made read-only later, or `None` where this test
    /// cannot mount.
    fn bindable() -> Option<Mounted> {
        let h = TestHome::new();
        let probe = h.dir.path().join("probe");
        std::fs::create_dir(&probe).unwrap();
        let probe = probe.to_str().unwrap();
        match mount(&["--bind", probe, probe]).and_then(|()| mount(&["-o", "remount,ro,bind", probe])) {
            Ok(()) => {
                let _ = Command::new("umount").arg(probe).status();
                Some(Mounted { h, layers: 0 })
            }
            Err(why) => {
                let _ = Command::new("umount").arg(probe).status();
                eprintln!("skipped: cannot bind-mount here ({why}); this test needs root or CAP_SYS_ADMIN");
                None
            }
        }
    }

    /// Make the home read-only from here on: a read-only bind mount over it. Files the daemon
    /// holds open stay writable (they are on the mount below), as after a remount of a disk
    /// that has gone bad; new files cannot be opened for writing.
    fn make_read_only(&mut self) {
        let home = self.h.home.to_str().unwrap();
        mount(&["--bind", home, home]).unwrap();
        self.layers += 1;
        // A file the daemon opens for writing on the new mount in between (a state write)
        // makes the remount busy for that moment.
        let mut last = String::new();
        poll(T, || match mount(&["-o", "remount,ro,bind", home]) {
            Ok(()) => Some(()),
            Err(e) => {
                last = e;
                None
            }
        })
        .unwrap_or_else(|| panic!("cannot make the home read-only: {last}"));
        let probe = self.h.home.join("probe");
        let err = std::fs::write(&probe, "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let pid = self.h.daemon_pid();
        let _ = self.h.cmd(&["kill"]).output();
        if let Some(pid) = pid.filter(|p| pid_alive(*p)) {
            // SAFETY: kill(2) on the test's own daemon.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for _ in 0..self.layers {
            let _ = Command::new("umount").arg("-l").arg(&self.h.home).status();
        }
    }
}

/// Fill the disk of `dir` until it takes no more.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("fill");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&chunk[..1]);
    while f.write_all(&[0]).is_ok() {}
    path
}

/// A shell app that writes a line every 50 ms, named by the test's tag.
fn start_talker(h: &TestHome, name: &str) {
    let script = format!("while true; do echo {}; sleep 0.05; done", h.tag(name));
    h.ok(&["start", "sh", "--name", name, "--", "-c", &script]);
}

fn temporary_files(home: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [home.to_path_buf(), home.join("logs")] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                found.push(name);
            }
        }
    }
    found
}

fn kill_daemon(h: &TestHome) -> u32 {
    let pid = h.daemon_pid().expect("a daemon pid");
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(pid)).then_some(()));
    pid
}

#[test]
fn on_a_read_only_home_apps_restart_and_start_and_a_new_daemon_recovers_them() {
    let Some(mut m) = Mounted::bindable() else { return };
    m.h.ok(&["start", "sleep", "--name", "quiet", "--", "1000"]);
    start_talker(&m.h, "talk");
    let quiet = m.h.wait_status("quiet", Status::Online, T).instances[0].pid.unwrap();
    m.h.wait_status("talk", Status::Online, T);
    m.make_read_only();
    let h = &m.h;

    // The restart cannot open the log files again: the app runs on into the files still open.
    let out = h.ok(&["restart", "quiet"]);
    assert!(out.contains("restarted `quiet`"), "{out}");
    let after = h.wait_status("quiet", Status::Online, T).instances[0].pid.unwrap();
    assert_ne!(after, quiet);
    assert!(pid_alive(after));

    // A new app starts; its logs cannot be created, and the command says so.
    let out = h.ok(&["start", "sleep", "--name", "new", "--", "1000"]);
    assert!(out.contains("new-0.out.log is not written") && out.contains("Read-only file system"), "{out}");
    let new = h.wait_status("new", Status::Online, T).instances[0].pid.unwrap();

    let table = h.ok(&["list"]);
    assert!(table.contains(&format!("warning: the home {} is read-only", h.home.display())), "{table}");
    assert!(
        table.contains("warning: log files of app new are not written: Read-only file system"),
        "{table}"
    );
    let doctor = String::from_utf8_lossy(&h.run(&["doctor"]).stdout).into_owned();
    assert!(doctor.contains("is read-only"), "{doctor}");

    // A daemon killed now is followed by one that binds its socket beside the home and
    // recovers the apps `state.json` last held; `new` was never written there, so it is
    // stopped rather than left running unsupervised.
    let old = kill_daemon(h);
    let listed = wait_for("a new daemon to list the apps", T, || {
        let apps = h.list();
        let online = |n: &str| {
            apps.iter().any(|a| a.spec.name == n && a.instances.iter().all(|i| i.status == Status::Online))
        };
        (online("quiet") && online("talk")).then_some(apps)
    });
    assert!(listed.iter().all(|a| a.spec.name != "new"), "{listed:?}");
    let ping = h.ok(&["ping"]);
    assert!(!ping.contains(&format!("pid {old}")), "{ping}");
    wait_for("the unrecorded app to be stopped", T, || (!pid_alive(new)).then_some(()));
    let table = h.ok(&["list"]);
    assert!(table.contains("the control socket is") && table.contains("instead of in the home"), "{table}");
}

#[test]
fn on_a_full_home_a_new_daemon_starts_recovers_the_apps_and_says_what_is_stale() {
    let Some(m) = Mounted::tmpfs("2m") else { return };
    let h = &m.h;
    h.ok(&["start", "sleep", "--name", "quiet", "--", "1000"]);
    start_talker(h, "talk");
    h.wait_status("quiet", Status::Online, T);
    h.wait_status("talk", Status::Online, T);
    let filler = fill(&h.home);

    // Before: "cannot open …/daemon.pid: No space left on device" and no daemon at all.
    let old = kill_daemon(h);
    let (_events, rx) = {
        let apps = wait_for("a new daemon to list the apps", T, || {
            let apps = h.list();
            (apps.len() == 2 && apps.iter().all(|a| a.instances.iter().all(|i| i.status == Status::Online)))
                .then_some(apps)
        });
        assert_eq!(apps.len(), 2);
        follow_events(h)
    };
    assert_ne!(h.daemon_pid(), Some(old));

    // A change cannot reach state.json: `list`, `doctor` and an event say so.
    h.ok(&["start", "sleep", "--name", "new", "--", "1000"]);
    h.wait_status("new", Status::Online, T);
    let table = wait_for("list to say state.json is stale", T, || {
        let table = h.ok(&["list"]);
        table.contains("warning: state.json is not written (No space left on device").then_some(table)
    });
    assert!(table.contains(&format!("warning: the home {} is full", h.home.display())), "{table}");
    let doctor = String::from_utf8_lossy(&h.run(&["doctor"]).stdout).into_owned();
    assert!(doctor.contains("is full") && doctor.contains("state.json is not written"), "{doctor}");
    let event = wait_for("a disk event", T, || {
        let e = rx.recv_timeout(Duration::from_millis(100)).ok()?;
        (e["kind"] == "disk").then_some(e)
    });
    assert!(event["detail"].as_str().unwrap().contains("is full"), "{event}");

    // What cannot be written fails with the reason and leaves nothing half written.
    let err = h.fails(&["save"]);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(temporary_files(&h.home), Vec::<String>::new());

    // Room again: the warnings go, state.json holds the new app, an event says so.
    std::fs::remove_file(filler).unwrap();
    wait_for("the warnings to go", T, || (!h.ok(&["list"]).contains("warning:")).then_some(()));
    let state = std::fs::read_to_string(h.home.join("state.json")).unwrap();
    assert!(state.contains("\"new\""), "{state}");
    wait_for("the event that the home takes writes again", T, || {
        let e = rx.recv_timeout(Duration::from_millis(100)).ok()?;
        (e["kind"] == "disk" && e["detail"] == "the home takes writes again").then_some(())
    });
    h.ok(&["save"]);
}
