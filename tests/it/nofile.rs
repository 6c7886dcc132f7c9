//! The open file limit: the daemon raises its own soft limit so that many instances fit, the
//! apps keep the limit herder was started with, and an accept loop out of descriptors waits
//! instead of spinning.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// `herder ping` (which starts the daemon) under the open file limit `soft`:`hard`.
fn ping_with_nofile(h: &TestHome, soft: u64, hard: u64) {
    let mut c = h.cmd(&["ping"]);
    // SAFETY: setrlimit(2) in the child before exec.
    unsafe {
        c.pre_exec(move || {
            let l = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The soft and hard `Max open files` of `pid`.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut n = line["Max open files".len()..].split_whitespace().map(|v| v.parse().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn twenty_instances_start_under_a_soft_limit_of_64_and_the_apps_keep_it() {
    let h = TestHome::new();
    let hard = 4096.min(nofile_of(std::process::id()).1);
    let script =
        h.write("nofile.sh", "#!/bin/sh\necho \"nofile $(ulimit -Sn) $(ulimit -Hn)\"\nexec sleep 100000\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    ping_with_nofile(&h, 64, hard);
    let daemon = h.daemon_pid().unwrap();
    assert_eq!(nofile_of(daemon), (hard, hard), "the daemon raised its soft limit");

    h.ok(&["start", script.to_str().unwrap(), "--name", "many", "-i", "20"]);
    let app = h.wait_status("many", Status::Online, T);
    assert_eq!(app.instances.len(), 20);
    assert!(open_fds(daemon) > 64, "the test needs more than 64 descriptors: {}", open_fds(daemon));
    for i in &app.instances {
        assert_eq!(nofile_of(i.pid.unwrap()), (64, hard), "instance {} got the original limit", i.index);
    }
    for (out, _) in &app.log_files {
        wait_for("the instance's line", T, || {
            let text = std::fs::read_to_string(out).ok()?;
            text.contains(&format!("nofile 64 {hard}")).then_some(())
        });
    }

    // An update in place remembers the original limit: a restarted app gets it still.
    h.ok(&["update"]);
    assert_eq!(nofile_of(daemon), (hard, hard));
    h.ok(&["restart", "many"]);
    let app = h.wait_status("many", Status::Online, T);
    for i in &app.instances {
        assert_eq!(nofile_of(i.pid.unwrap()), (64, hard), "instance {} after the update", i.index);
    }
}

#[test]
fn the_metrics_endpoint_out_of_descriptors_waits_and_serves_again() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let h = TestHome::new();
    // No room to raise: the hard limit is low too.
    ping_with_nofile(&h, 48, 48);
    let said = h.ok(&["metrics", "--listen", "127.0.0.1:0"]);
    let addr =
        said.trim().strip_prefix("metrics served at http://").unwrap().strip_suffix("/metrics").unwrap();
    // Connections that send nothing hold a descriptor of the daemon each, until it runs out.
    let held: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let log = || std::fs::read_to_string(h.home.join("daemon.log")).unwrap_or_default();
    let failed = "cannot accept connections; trying again every 100 ms";
    wait_for("the accept failure in daemon.log", T, || log().contains(failed).then_some(()));
    drop(held);
    wait_for("the endpoint to answer again", T, || {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(T)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.starts_with("HTTP/1.1 200").then_some(())
    });
    let log = log();
    assert_eq!(log.matches(failed).count(), 1, "one line per streak of failures:\n{log}");
    assert!(log.contains("accepting connections again"), "{log}");
}
