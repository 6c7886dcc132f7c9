//! `herder update`: the daemon executes its binary again in place. Apps keep their pids, no
//! log line is lost or doubled, the notify sockets and the watchdog carry on; a binary that
//! cannot take over leaves the daemon as it was.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herder::protocol::{DaemonInfo, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn ping(h: &TestHome) -> DaemonInfo {
    serde_json::from_str(&h.ok(&["ping", "--json"])).unwrap()
}

/// The numbers in the counter's log, one per line.
fn numbers(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("a line that is not a number: {l:?}")))
        .collect()
}

/// Every number from 0 to the last, once each, in order.
fn assert_consecutive(nums: &[u64]) {
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64,
            "line {i} of the log holds {n}: {} lines, lost or doubled around it",
            nums.len()
        );
    }
}

fn wait_lines(log: &Path, at_least: usize) -> usize {
    wait_for(&format!("{at_least} lines in {}", log.display()), T, || {
        let n = numbers(log).len();
        (n >= at_least).then_some(n)
    })
}

/// Every instance's pid, by app and index.
fn pids(h: &TestHome) -> Vec<(String, u32, Option<u32>)> {
    let mut v: Vec<_> = h
        .list()
        .into_iter()
        .flat_map(|a| a.instances.into_iter().map(move |i| (a.spec.name.clone(), i.index, i.pid)))
        .collect();
    v.sort();
    v
}

#[test]
fn update_keeps_every_pid_and_every_log_line() {
    let h = TestHome::new();
    let hang = h.dir.path().join("hang");
    let text = format!(
        r#"
[[apps]]
name = "counter"
script = "{numbered}"

[[apps]]
name = "idle"
script = "{idle}"
args = ["{tag}"]
instances = 2

[[apps]]
name = "dog"
script = "{watchdog}"
args = ["{hang}"]
watchdog = "1500ms"
wait_ready = true
kill_timeout = "200ms"
"#,
        numbered = fixture("numbered.py").display(),
        idle = fixture("idle.sh").display(),
        tag = h.tag("idle"),
        watchdog = fixture("watchdog.py").display(),
        hang = hang.display(),
    );
    let cfg = h.write("apps.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    for app in ["counter", "idle", "dog"] {
        h.wait_status(app, Status::Online, T);
    }
    wait_for("the watchdog app's status", T, || {
        (h.app("dog").instances[0].status_text.as_deref() == Some("pinging")).then_some(())
    });
    let log = h.home.join("logs/counter-0.out.log");
    wait_lines(&log, 100);
    let before = pids(&h);
    assert!(before.iter().all(|(_, _, p)| p.is_some()), "{before:?}");
    let old = ping(&h);
    assert_eq!(old.exec_generation, 0);
    let served = h.ok(&["metrics", "--listen", "127.0.0.1:0"]);
    let metrics = served
        .trim()
        .strip_prefix("metrics served at http://")
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();

    // Other commands during the update are answered (sent again by the client if the daemon
    // turned them away while it was busy).
    let done = Arc::new(AtomicBool::new(false));
    let lister = {
        let (done, home, dir) = (done.clone(), h.home.clone(), h.dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) || runs == 0 {
                let out = Command::new(BIN)
                    .arg("list")
                    .env("HERDER_HOME", &home)
                    .current_dir(&dir)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "a list during the update failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
        })
    };
    let out = h.ok(&["update"]);
    done.store(true, Ordering::SeqCst);
    lister.join().unwrap();
    assert!(
        out.contains(&format!("pid {}", old.pid)) && out.contains("image 0") && out.contains("image 1"),
        "{out}"
    );

    // The same process runs a new image.
    let new = ping(&h);
    assert_eq!(new.pid, old.pid, "same pid");
    assert_eq!(new.exec_generation, 1);
    assert!(new.build_id.is_some() && new.build_id == old.build_id, "same binary: {:?}", new.build_id);
    assert!(new.image_started_ms >= old.image_started_ms);
    assert!(new.uptime_ms >= old.uptime_ms, "the daemon's uptime goes on");

    // The counter goes on writing through the new image.
    let at_update = numbers(&log).len();
    wait_lines(&log, at_update + 300);
    assert_eq!(pids(&h), before, "every app keeps its pid");
    for app in h.list() {
        for i in &app.instances {
            assert_eq!((i.status, i.restarts), (Status::Online, 0), "`{}` {i:?}", app.spec.name);
        }
    }

    // The metrics endpoint's socket carried over too: nothing bound it again.
    assert!(scrape(&metrics).contains("herder_app_up{app=\"counter\""), "{}", scrape(&metrics));

    // The watchdog app's notify socket and deadline carried over: its next status arrives,
    // and once it stops pinging the new image restarts it.
    std::fs::write(&hang, "").unwrap();
    wait_for("the status sent after the update", T, || {
        (h.app("dog").instances[0].status_text.as_deref() == Some("hung")).then_some(())
    });
    wait_for("the hung app to be restarted", T, || (h.app("dog").instances[0].restarts >= 1).then_some(()));

    h.ok(&["stop", "counter"]);
    let nums = numbers(&log);
    assert!(nums.len() > at_update + 300);
    assert_consecutive(&nums);
    let state = std::fs::read_to_string(h.home.join("state.json")).unwrap();
    assert!(state.contains(&format!("\"pid\":{}", before.iter().find(|p| p.0 == "idle").unwrap().2.unwrap())));
}

/// `GET /metrics` from the endpoint at `addr`.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: herder\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// A copy of the binary at a path of the test's own, which it can replace.
fn own_binary(h: &TestHome) -> PathBuf {
    let dir = h.dir.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("herder");
    install(&exe, Path::new(BIN));
    exe
}

/// Put `from` at `to` the way installers do: a new file renamed over the old one.
fn install(to: &Path, from: &Path) {
    let tmp = to.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).unwrap();
    }
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn update_to_a_binary_that_cannot_run_keeps_the_daemon_as_it_was() {
    let h = TestHome::new();
    let exe = own_binary(&h);
    // The daemon is started from the test's copy, so that is the path it executes again.
    let out = Command::new(&exe).arg("ping").env("HERDER_HOME", &h.home).output().unwrap();
    assert!(out.status.success());
    h.ok(&["start", fixture("numbered.py").to_str().unwrap(), "--name", "counter"]);
    let log = h.home.join("logs/counter-0.out.log");
    wait_lines(&log, 50);
    let old = ping(&h);
    assert_eq!(old.exe, exe);
    let pid = h.app("counter").instances[0].pid;

    let text = h.dir.path().join("not-a-binary");
    std::fs::write(&text, "this is not a program\n").unwrap();
    install(&exe, &text);
    let err = h.fails(&["update"]);
    assert!(
        err.contains("cannot update the daemon")
            && err.contains(&exe.display().to_string())
            && err.contains("permission denied")
            && err.contains(&format!("pid {}", old.pid)),
        "{err}"
    );

    // Nothing changed, and nothing stopped: supervision and logs go on in the old image.
    let same = ping(&h);
    assert_eq!((same.pid, same.exec_generation), (old.pid, 0));
    let at_failure = numbers(&log).len();
    wait_lines(&log, at_failure + 100);
    assert_eq!(h.app("counter").instances[0].pid, pid);
    assert_eq!(h.app("counter").instances[0].restarts, 0);

    // With a working binary back at the path, the update succeeds.
    install(&exe, Path::new(BIN));
    h.ok(&["update"]);
    let new = ping(&h);
    assert_eq!((new.pid, new.exec_generation), (old.pid, 1));
    assert_eq!(h.app("counter").instances[0].pid, pid);
    h.ok(&["stop", "counter"]);
    assert_consecutive(&numbers(&log));
}

#[test]
fn update_without_a_daemon_starts_nothing() {
    let h = TestHome::new();
    let out = h.ok(&["update"]);
    assert!(out.contains("no daemon is running"), "{out}");
    assert!(!h.home.join("herder.sock").exists());
}

#[test]
fn an_app_killed_while_the_daemon_holds_still_is_reaped_and_restarted_by_the_new_image() {
    let h = TestHome::new();
    let exe = own_binary(&h);
    let out = Command::new(&exe).arg("ping").env("HERDER_HOME", &h.home).output().unwrap();
    assert!(out.status.success());
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "victim", "--", &h.tag("victim")]);
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "bystander", "--", &h.tag("bystander")]);
    let victim = h.wait_status("victim", Status::Online, T).instances[0].pid.unwrap();
    let bystander = h.wait_status("bystander", Status::Online, T).instances[0].pid.unwrap();

    // A wrapper in the binary's place (as some installs have): its `handover-check` waits
    // for the test, so the test acts while the daemon holds everything still.
    let (checking, go) = (h.dir.path().join("checking"), h.dir.path().join("go"));
    let wrapper = h.write(
        "wrapper.sh",
        &format!(
            "#!/bin/sh\nif [ \"$1\" = handover-check ]; then\n  touch '{}'\n  while [ ! -e '{}' ]; do sleep 0.01; done\nfi\nexec '{BIN}' \"$@\"\n",
            checking.display(),
            go.display()
        ),
    );
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    install(&exe, &wrapper);
    let update = h.cmd(&["update"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    wait_for("the daemon to check the new binary", T, || checking.exists().then_some(()));
    // SIGUSR1, not SIGKILL: an exit the daemon could not see would read as SIGKILL.
    // SAFETY: kill(2) on the test's own app.
    unsafe { libc::kill(victim as i32, libc::SIGUSR1) };
    // Nothing reaps it now: it stays a zombie of the daemon.
    wait_for("the victim to be a zombie", T, || (!pid_alive(victim)).then_some(()));
    std::fs::write(&go, "").unwrap();
    let out = update.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // The new image reaped it as an exit and restarted it; the other app is untouched.
    let app = wait_for("the victim to be restarted", T, || {
        let a = h.app("victim");
        (a.instances[0].restarts == 1 && a.instances[0].status == Status::Online).then_some(a)
    });
    assert_eq!(
        app.instances[0].last_exit.as_ref().map(|e| e.reason),
        Some(herder::protocol::ExitReason::Signal(libc::SIGUSR1))
    );
    assert_ne!(app.instances[0].pid, Some(victim));
    assert!(!std::path::Path::new(&format!("/proc/{victim}")).exists(), "the zombie was reaped");
    let b = h.app("bystander");
    assert_eq!((b.instances[0].pid, b.instances[0].restarts), (Some(bystander), 0));
    assert_eq!(ping(&h).exec_generation, 1);
}

#[test]
fn a_handover_document_the_binary_cannot_read_makes_it_start_as_after_a_crash() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let h = TestHome::new();
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "app", "--", &h.tag("app")]);
    let old = h.wait_status("app", Status::Online, T).instances[0].pid.unwrap();
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(daemon)).then_some(()));

    // A daemon started as if an image of another version had handed over.
    let doc = h.write("handover.json", r#"{"version": 99, "lock_fd": 3, "listener_fd": 4}"#);
    let doc = std::fs::File::open(doc).unwrap();
    let fd = doc.as_raw_fd();
    let mut cmd = h.cmd(&["daemon"]);
    cmd.env("HERDER_TAKEOVER", fd.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: fcntl(2) on a descriptor of this process, in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // Once it holds the lock it says why it cannot take over; a command before that would
    // start a daemon of its own, which could win the lock.
    let log = h.home.join("daemon.log");
    wait_for("the daemon to hold the lock", T, || {
        std::fs::read_to_string(&log).ok()?.contains("cannot take over").then_some(())
    });
    // It recovers as after a crash: the old instance ended, the app started once again.
    let app = wait_for("the app to run again", T, || {
        let a = h.list().into_iter().find(|a| a.spec.name == "app")?;
        (a.instances[0].status == Status::Online && a.instances[0].pid != Some(old)).then_some(a)
    });
    assert!(!pid_alive(old));
    // (A shell forking its `sleep` shows its own arguments for an instant.)
    wait_for("one process of the app", T, || {
        (pids_with_arg(&h.tag("app")) == [app.instances[0].pid.unwrap()]).then_some(())
    });
    let log = std::fs::read_to_string(h.home.join("daemon.log")).unwrap();
    assert!(log.contains("cannot take over") && log.contains("version 99"), "{log}");
    assert_eq!(ping(&h).exec_generation, 0);
    h.ok(&["kill"]);
    child.wait().unwrap();
}

#[test]
fn a_main_process_named_before_the_update_takes_over_after_it() {
    let h = TestHome::new();
    let (go, first, child) = start_forker(&h);
    h.ok(&["update"]);
    assert_eq!(h.app("forker").instances[0].pid, Some(first));
    // The first process exits only now, under the new image, which knows its successor.
    std::fs::write(&go, "").unwrap();
    let app = wait_for("the new main pid", T, || {
        let a = h.app("forker");
        (a.instances[0].pid == Some(child)).then_some(a)
    });
    assert_eq!((app.instances[0].status, app.instances[0].restarts), (Status::Online, 0));
    h.ok(&["stop", "forker"]);
    assert!(!pid_alive(child));
}

/// Read one frame from a blocking stream.
fn read_frame_blocking<T: serde::de::DeserializeOwned>(s: &mut std::os::unix::net::UnixStream) -> T {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)
        .unwrap_or_else(|e| panic!("the reply of {} bytes was cut short: {e}", body.len()));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn an_update_waits_until_a_reply_under_way_is_written_whole() {
    use herder::protocol::{encode_frame, Hello, HelloReply, Request, Response, Target};
    use std::io::{Read, Write};
    let h = TestHome::new();
    // `show` answers with the environment: 1 MB, far more than a socket buffer, so the reply
    // is written only as fast as the client reads it.
    let big = "x".repeat(1 << 20);
    let cfg = h.write(
        "big.toml",
        &format!(
            "[[apps]]\nname = \"big\"\nscript = \"/bin/sleep\"\nargs = [\"1000\"]\nautostart = false\nenv = {{ BIG = \"{big}\" }}\n"
        ),
    );
    h.ok(&["start", cfg.to_str().unwrap()]);
    let old = ping(&h);
    let mut s = std::os::unix::net::UnixStream::connect(h.home.join("herder.sock")).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&encode_frame(&Hello::current()).unwrap()).unwrap();
    let _: HelloReply = read_frame_blocking(&mut s);
    s.write_all(&encode_frame(&Request::Show { target: Target::Name("big".into()) }).unwrap()).unwrap();
    // The reply has begun: the daemon is writing it, blocked on the full socket buffer.
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let len = u32::from_be_bytes(len) as usize;
    assert!(len > 1 << 20, "a reply of {len} bytes");

    let mut update = h.cmd(&["update"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let log = h.home.join("daemon.log");
    wait_for("the update to wait for the reply (or to go on without it)", T, || {
        let waiting = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("update: waiting for the requests under way to be answered");
        (waiting || update.try_wait().unwrap().is_some()).then_some(())
    });
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap_or_else(|e| panic!("the reply was cut short by the update: {e}"));
    let reply: Response = serde_json::from_slice(&body).unwrap();
    assert!(matches!(reply, Response::Show { .. }), "{reply:?}");
    assert!(update.wait().unwrap().success());
    let new = ping(&h);
    assert_eq!((new.pid, new.exec_generation), (old.pid, 1));
}

#[test]
fn a_log_file_that_cannot_be_opened_again_after_an_update_does_not_kill_the_app() {
    let h = TestHome::new();
    h.ok(&["start", fixture("ticker.py").to_str().unwrap(), "--name", "ticker"]);
    let app = h.wait_status("ticker", Status::Online, T);
    let pid = app.instances[0].pid.unwrap();
    let (out, _) = app.log_files[0].clone();
    wait_for("the first lines", T, || std::fs::metadata(&out).ok().filter(|m| m.len() > 0));
    // The old image writes on to its open (now unlinked) file; the new one finds a directory
    // where the file was.
    std::fs::remove_file(&out).unwrap();
    std::fs::create_dir(&out).unwrap();
    h.ok(&["update"]);
    let written = || {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        io.lines().find_map(|l| l.strip_prefix("wchar: ")?.parse::<u64>().ok())
    };
    let at = written().expect("the app is gone after the update (its output pipe was closed?)");
    wait_for("the app to write on", T, || {
        assert!(pid_alive(pid), "the app died after the update (its output pipe was closed?)");
        (written()? > at + 1_000).then_some(())
    });
    let i = h.app("ticker").instances[0].clone();
    assert_eq!((i.pid, i.restarts), (Some(pid), 0));
    let log = std::fs::read_to_string(h.home.join("daemon.log")).unwrap();
    assert!(log.contains("cannot open the log;"), "{log}");
}
