//! The control socket's limits (handshake deadline, idle limit, cap on connections), what a
//! client says when its daemon dies under a request, and daemon.log's mode.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herder::protocol::{encode_frame, Hello, Request, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// Start the daemon of `h` with `env` (a daemon takes its environment from the command that
/// starts it).
fn start_daemon(h: &TestHome, env: &[(&str, &str)]) {
    let out = h.cmd(&["ping"]).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn connect(h: &TestHome) -> UnixStream {
    let s = UnixStream::connect(h.home.join("herder.sock")).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

/// Read one frame as JSON; `None` at the end of the stream.
fn read_frame(s: &mut UnixStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => return None,
        Err(e) => panic!("reading a frame: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    Some(serde_json::from_slice(&body).unwrap())
}

/// Connect and send `Hello`; the daemon's answer (`Welcome`, `Refused`…) with the stream.
fn hello(h: &TestHome) -> (UnixStream, serde_json::Value) {
    let mut s = connect(h);
    // A refusal may come (and the connection close) before the `Hello` is written.
    let _ = s.write_all(&encode_frame(&Hello::current()).unwrap());
    let reply = read_frame(&mut s).expect("an answer to the handshake");
    (s, reply)
}

/// A connection past the handshake.
fn welcomed(h: &TestHome) -> UnixStream {
    let (s, reply) = hello(h);
    assert!(reply.get("Welcome").is_some(), "handshake answered {reply}");
    s
}

fn send(s: &mut UnixStream, req: &Request) {
    s.write_all(&encode_frame(req).unwrap()).unwrap();
}

/// Wait until the daemon closes `s` (a read finds the end of the stream), up to `within`; the
/// time that took.
fn closed_by_daemon(s: &mut UnixStream, within: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
            Ok(n) => panic!("the daemon sent {n} bytes instead of closing"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the daemon still held the connection after {:?}", start.elapsed())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading: {e}"),
        }
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn daemon_log(h: &TestHome) -> String {
    std::fs::read_to_string(h.home.join("daemon.log")).unwrap_or_default()
}

#[test]
fn a_connection_that_never_completes_the_handshake_is_closed_after_its_deadline() {
    let h = TestHome::new();
    start_daemon(&h, &[("HERDER_CONTROL_HANDSHAKE_TIMEOUT", "300ms")]);
    let start = Instant::now();
    let mut silent = connect(&h);
    // Half a length prefix: a frame begun and never finished is no handshake either.
    let mut partial = connect(&h);
    partial.write_all(&[0, 0]).unwrap();
    closed_by_daemon(&mut silent, T);
    closed_by_daemon(&mut partial, T);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "closed before the deadline: {:?}",
        start.elapsed()
    );
    // A client that says hello in time is served as ever.
    let mut s = welcomed(&h);
    send(&mut s, &Request::Ping);
    let pong = read_frame(&mut s).unwrap();
    assert!(pong.get("Pong").is_some(), "{pong}");
}

#[test]
fn an_idle_connection_is_closed_while_streams_and_a_long_request_are_not() {
    let h = TestHome::new();
    start_daemon(&h, &[("HERDER_CONTROL_IDLE_TIMEOUT", "500ms")]);
    let (_events, events) = follow_events(&h);
    let mut logs =
        h.cmd(&["logs", "--lines", "0"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let lines = {
        let out = logs.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let log_followers = || -> u64 {
        let v: serde_json::Value = serde_json::from_str(&h.ok(&["ping", "--json"])).unwrap();
        v["followers"].as_u64().unwrap()
    };
    wait_for("the log follower to be counted", T, || (log_followers() == 1).then_some(()));

    // A client that asked once and then says nothing is let go after the idle limit, twice
    // over: the streams have then been quiet for longer than two limits.
    for _ in 0..2 {
        let mut idle = welcomed(&h);
        send(&mut idle, &Request::Ping);
        assert!(read_frame(&mut idle).unwrap().get("Pong").is_some());
        let after = closed_by_daemon(&mut idle, T);
        assert!(after >= Duration::from_millis(450), "closed {after:?} after its answer, before the limit");
    }

    // The streams are still there: a new app's line and events reach them.
    let tag = h.tag("talker");
    h.ok(&["start", &format!("sh -c 'echo {tag}; exec sleep 100000'"), "--name", "talker"]);
    wait_for("the new app's line on `herder logs`", T, || {
        lines.recv_timeout(Duration::from_millis(100)).ok().filter(|l| l.contains(&tag))
    });
    wait_for("an event of the new app on `herder events`", T, || {
        events.recv_timeout(Duration::from_millis(100)).ok().filter(|e| e["app"] == "talker")
    });
    assert!(logs.try_wait().unwrap().is_none(), "`herder logs` ended");
    let _ = logs.kill();
    let _ = logs.wait();

    // A request served for longer than the idle limit is not idle: this stop waits out the
    // app's kill_timeout of 1.5 s.
    let pid_file = h.dir.path().join("stubborn.pid");
    let config = h.write(
        "stubborn.toml",
        &format!(
            "[[apps]]\nname = \"stubborn\"\nscript = \"{}\"\nargs = [\"{}\"]\nkill_timeout = \"1500ms\"\n",
            fixture("stubborn.py").display(),
            pid_file.display()
        ),
    );
    h.ok(&["start", config.to_str().unwrap()]);
    wait_for("the stubborn app", T, || pid_file.exists().then_some(()));
    h.wait_status("stubborn", Status::Online, T);
    let start = Instant::now();
    h.ok(&["stop", "stubborn"]);
    assert!(start.elapsed() >= Duration::from_millis(1500), "the stop took {:?}", start.elapsed());
}

#[test]
fn connections_past_the_cap_are_refused_clearly_until_some_close() {
    let h = TestHome::new();
    start_daemon(&h, &[("HERDER_CONTROL_MAX_CONNECTIONS", "3")]);
    // The command that started the daemon may hold its place for a moment after it exits.
    let mut held: Vec<UnixStream> = (0..3)
        .map(|_| {
            wait_for("a place under the cap", T, || {
                let (s, reply) = hello(&h);
                reply.get("Welcome").is_some().then_some(s)
            })
        })
        .collect();

    let before = daemon_log(&h).len();
    let (_, reply) = hello(&h);
    let message = reply["Refused"]["message"].as_str().unwrap_or_else(|| panic!("not refused: {reply}"));
    assert!(message.contains("too many connections"), "{message}");
    for _ in 0..3 {
        let out = h.run(&["ping"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a ping over the cap succeeded");
        assert!(err.contains("too many connections") && err.contains("limit is 3"), "{err}");
    }
    let log = daemon_log(&h)[before..].to_string();
    assert_eq!(
        log.matches("too many control connections").count(),
        1,
        "one line for a streak of refusals:\n{log}"
    );

    held.truncate(1);
    wait_for("commands to work again", T, || h.run(&["ping"]).status.success().then_some(()));
    let log = daemon_log(&h)[before..].to_string();
    let refused: Option<u32> = log
        .lines()
        .find(|l| l.contains("accepting control connections again"))
        .and_then(|l| l.split("refused=").nth(1)?.split_whitespace().next()?.parse().ok());
    assert!(refused.is_some_and(|n| n >= 4), "the end of the streak is noted with its count:\n{log}");
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
