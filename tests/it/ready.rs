//! Readiness: the systemd notify protocol and `wait_ready`.

use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn a_notify_app_stays_launching_until_ready_then_goes_online_with_its_status() {
    let h = TestHome::new();
    let go = h.dir.path().join("go");
    h.ok(&[
        "start",
        fixture("notify_ready.py").to_str().unwrap(),
        "--name",
        "notified",
        "--wait-ready",
        "--listen-timeout",
        "30s",
        "--",
        go.to_str().unwrap(),
    ]);
    // Its first message arrives while it is still launching.
    let app = wait_for("the first STATUS", T, || {
        let a = h.app("notified");
        (a.instances[0].status_text.as_deref() == Some("warming up")).then_some(a)
    });
    assert_eq!(app.instances[0].status, Status::Launching);
    std::fs::write(&go, "").unwrap();
    h.wait_status("notified", Status::Online, T);
    let app = wait_for("the second STATUS", T, || {
        let a = h.app("notified");
        (a.instances[0].status_text.as_deref() == Some("Serving requests")).then_some(a)
    });
    assert_eq!(app.instances[0].restarts, 0);
    let table = h.ok(&["list"]);
    assert!(table.contains("online") && table.contains("notified: Serving requests"), "{table}");
}

#[test]
fn wait_ready_without_a_signal_is_a_failed_start_never_online() {
    let h = TestHome::new();
    let tag = h.tag("silent");
    h.ok(&[
        "start",
        fixture("idle.sh").to_str().unwrap(),
        "--name",
        "silent",
        "--wait-ready",
        "--listen-timeout",
        "300",
        "--max-restarts",
        "1",
        "--",
        &tag,
    ]);
    let mut seen = Vec::new();
    let app = wait_for("the failed starts to end errored", T, || {
        let a = h.app("silent");
        seen.push(a.instances[0].status);
        (a.instances[0].status == Status::Errored).then_some(a)
    });
    assert!(!seen.contains(&Status::Online), "never shown online: {seen:?}");
    let reason = app.instances[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("no ready signal within `listen_timeout` (300 ms)"), "{reason}");
    assert!(pids_with_arg(&tag).is_empty(), "the failed instance was stopped");
    assert!(h.ok(&["list"]).contains("no ready signal"));
}

#[test]
fn an_app_that_stops_sending_watchdog_pings_is_restarted() {
    let h = TestHome::new();
    let hang = h.dir.path().join("hang");
    let text = format!(
        "[[apps]]\nname = \"dog\"\nscript = \"{}\"\nargs = [\"{}\"]\nwatchdog = \"1s\"\nkill_timeout = \"200ms\"\n",
        fixture("watchdog.py").display(),
        hang.display()
    );
    let cfg = h.write("dog.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    // It pings, so it is left alone: its status says so and it has not been restarted.
    let app = wait_for("the pinging status", T, || {
        let a = h.app("dog");
        (a.instances[0].status_text.as_deref() == Some("pinging")).then_some(a)
    });
    assert_eq!(app.instances[0].restarts, 0);
    let first = app.instances[0].pid;
    std::fs::write(&hang, "").unwrap();
    let app = wait_for("the hung app to be restarted", T, || {
        let a = h.app("dog");
        (a.instances[0].restarts >= 1).then_some(a)
    });
    assert!(
        app.instances[0].reason.as_deref().unwrap_or_default().contains("WATCHDOG=1"),
        "{:?}",
        app.instances[0]
    );
    assert!(!first.is_some_and(pid_alive), "the hung process is gone");
}

#[test]
fn a_node_app_calling_process_send_ready_goes_online_only_then() {
    let h = TestHome::new();
    let go = h.dir.path().join("go");
    h.ok(&[
        "start",
        fixture("ready.js").to_str().unwrap(),
        "--name",
        "noder",
        "--wait-ready",
        "--listen-timeout",
        "30s",
        "--",
        go.to_str().unwrap(),
    ]);
    // Running (node is up and polling) but not ready.
    let app = h.wait_status("noder", Status::Launching, T);
    let pid = app.instances[0].pid.unwrap();
    wait_for("node to run its script", T, || {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        cmd.windows(8).any(|w| w == b"ready.js").then_some(())
    });
    assert_eq!(h.app("noder").instances[0].status, Status::Launching);
    std::fs::write(&go, "").unwrap();
    let app = h.wait_status("noder", Status::Online, T);
    assert_eq!(app.instances[0].pid, Some(pid));
    assert_eq!(app.instances[0].restarts, 0);
}

#[test]
fn an_app_using_the_sd_notify_library_goes_online_when_it_says_ready() {
    let h = TestHome::new();
    let go = h.dir.path().join("go");
    h.ok(&[
        "start",
        fixture("notify_lib.sh").to_str().unwrap(),
        "--name",
        "lib",
        "--wait-ready",
        "--listen-timeout",
        "30s",
        "--",
        go.to_str().unwrap(),
    ]);
    let app = wait_for("the library's STATUS", T, || {
        let a = h.app("lib");
        (a.instances[0].status_text.as_deref() == Some("loading with libsystemd")).then_some(a)
    });
    assert_eq!(app.instances[0].status, Status::Launching);
    std::fs::write(&go, "").unwrap();
    h.wait_status("lib", Status::Online, T);
    let app = wait_for("the ready STATUS", T, || {
        let a = h.app("lib");
        (a.instances[0].status_text.as_deref() == Some("ready via libsystemd")).then_some(a)
    });
    assert_eq!(app.instances[0].restarts, 0);
}

#[test]
fn mainpid_hands_the_instance_over_to_the_named_process() {
    let h = TestHome::new();
    let (go, first, child) = start_forker(&h);
    std::fs::write(&go, "").unwrap();
    let app = wait_for("the new main pid", T, || {
        let a = h.app("forker");
        (a.instances[0].pid == Some(child)).then_some(a)
    });
    assert_eq!(app.instances[0].status, Status::Online);
    assert_eq!(app.instances[0].restarts, 0, "a hand-over is not a crash");
    assert!(!pid_alive(first));
    h.ok(&["stop", "forker"]);
    assert!(!pid_alive(child), "stop ends the new main process");
    assert_eq!(h.app("forker").instances[0].status, Status::Stopped);
}

#[test]
fn watchdog_pings_queued_while_the_daemon_did_not_run_win_over_the_expired_deadline() {
    let h = TestHome::new();
    let count = h.dir.path().join("count");
    // Pings every 10 ms (dropping those the full socket queue refuses) and counts its rounds.
    let pinger = h.write(
        "pinger.py",
        "import os, socket, sys, time\n\
         addr = os.environ['NOTIFY_SOCKET']\n\
         addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
         sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         sock.setblocking(False)\n\
         n = 0\n\
         while True:\n\
         \x20   n += 1\n\
         \x20   try:\n\
         \x20       sock.sendto(('WATCHDOG=1\\nSTATUS=ping %d' % n).encode(), addr)\n\
         \x20   except BlockingIOError:\n\
         \x20       pass\n\
         \x20   with open(sys.argv[1] + '.tmp', 'w') as f:\n\
         \x20       f.write(str(n))\n\
         \x20   os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n\
         \x20   time.sleep(0.01)\n",
    );
    let text = format!(
        "[[apps]]\nname = \"dog\"\nscript = \"{}\"\nargs = [\"{}\"]\nwatchdog = \"1s\"\nkill_timeout = \"200ms\"\n",
        pinger.display(),
        count.display()
    );
    let cfg = h.write("dog.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let rounds = || std::fs::read_to_string(&count).ok()?.parse::<u64>().ok();
    let pinged = |i: &herder::protocol::InstanceInfo| {
        i.status_text.as_deref()?.strip_prefix("ping ")?.parse::<u64>().ok()
    };
    // Under load the interpreter may start slower than the watchdog allows (a second here, so
    // that a loaded machine rarely sees it); what counts is that the pinging process, once it
    // pings, is not restarted.
    let (pid, restarts) = wait_for("the first pings", T, || {
        let i = h.app("dog").instances[0].clone();
        pinged(&i).and(i.pid).map(|p| (p, i.restarts))
    });
    let daemon = h.daemon_pid().unwrap();
    // Whatever happens, the daemon runs again before the home is dropped.
    struct Cont(u32);
    impl Drop for Cont {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the test's own daemon.
            unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
        }
    }
    let _cont = Cont(daemon);
    // Each round: the daemon stops (as while an update holds it still) long past the deadline,
    // with pings queued. When it runs again the deadline has expired, and the runtime may not
    // have seen the socket readable yet: the queued pings must still count.
    for round in 0..2 {
        let before = rounds().unwrap();
        // SAFETY: kill(2) on the test's own daemon.
        unsafe { libc::kill(daemon as i32, libc::SIGSTOP) };
        wait_for("the app to ping on for longer than the watchdog", T, || {
            (rounds()? >= before + 150).then_some(())
        });
        let resumed = rounds().unwrap();
        // SAFETY: as above.
        unsafe { libc::kill(daemon as i32, libc::SIGCONT) };
        let i = wait_for("the daemon to take the pings sent since", T, || {
            let i = h.app("dog").instances[0].clone();
            (i.restarts > restarts || i.pid != Some(pid) || pinged(&i)? >= resumed).then_some(i)
        });
        assert_eq!(
            (i.pid, i.restarts),
            (Some(pid), restarts),
            "round {round}: restarted by the watchdog: {i:?}"
        );
    }
}
