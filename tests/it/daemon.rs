//! One daemon per home, the socket's protection, the version handshake.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// Pids of `herder daemon` processes serving `home`.
fn daemons_of(home: &std::path::Path) -> Vec<u32> {
    let want = format!("HERDER_HOME={}", home.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| pid_alive(p))
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.len() >= 2 && args[0].ends_with(b"herder") && args[1] == b"daemon"
        })
        .filter(|p| {
            let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
        })
        .collect()
}

#[test]
fn twenty_concurrent_pings_leave_exactly_one_daemon() {
    let h = TestHome::new();
    let children: Vec<_> = (0..20)
        .map(|_| h.cmd(&["ping", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    let mut pids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a ping failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        pids.push(v["pid"].as_u64().unwrap() as u32);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "pings were answered by several daemons: {pids:?}");
    // Losing daemons exit at once; wait for them to be gone, then count.
    let daemons = wait_for("the losing daemons to exit", Duration::from_secs(10), || {
        let d = daemons_of(&h.home);
        (d.len() <= 1).then_some(d)
    });
    assert_eq!(daemons, pids, "exactly the daemon that answered is left");
}

#[test]
fn a_second_daemon_refuses_and_names_the_first() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let pid = h.daemon_pid().unwrap();
    let err = h.fails(&["daemon"]);
    assert!(err.contains(&format!("pid {pid}")), "message names the running daemon's pid: {err}");
    // The first daemon is unharmed.
    assert!(h.ok(&["ping"]).contains(&format!("pid {pid}")));
}

#[test]
fn a_stale_socket_is_replaced() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let pid = h.daemon_pid().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the daemon to die", Duration::from_secs(20), || (!pid_alive(pid)).then_some(()));
    assert!(h.home.join("herder.sock").exists(), "the killed daemon left its socket");
    let out = h.ok(&["ping"]);
    let new = h.daemon_pid().unwrap();
    assert_ne!(new, pid);
    assert!(out.contains(&format!("pid {new}")));
}

#[test]
fn socket_is_private_and_other_users_are_refused() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let sock = h.home.join("herder.sock");
    assert_eq!(mode(&h.home), 0o700);
    assert_eq!(mode(&sock), 0o600);

    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root, so the other-uid part of this test cannot switch users");
        return;
    }
    let connect_as_nobody = |path: &std::path::Path| {
        Command::new("python3")
            .arg("-c")
            .arg(
                "import os,socket,struct,sys\n\
                 os.setgid(65534); os.setuid(65534)\n\
                 s=socket.socket(socket.AF_UNIX)\n\
                 try:\n    s.connect(sys.argv[1])\n\
                 except PermissionError:\n    print('denied'); sys.exit(0)\n\
                 body=b'{\"protocol\":1,\"version\":\"0\"}'\n\
                 s.settimeout(5)\n\
                 try:\n    s.sendall(struct.pack('>I',len(body))+body); got=s.recv(4)\n\
                 except (BrokenPipeError, ConnectionResetError):\n    got=b''\n\
                 print('reply' if got else 'closed')\n",
            )
            .arg(path)
            .output()
            .unwrap()
    };
    // With the permissions as herder sets them, another uid cannot even reach the socket.
    let out = connect_as_nobody(&sock);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "denied",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Even with the permissions loosened by hand, the daemon's peer check drops the client.
    std::fs::set_permissions(&h.home, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = connect_as_nobody(&sock);
    std::fs::set_permissions(&h.home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "closed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_version_mismatch_is_reported_with_the_fix() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let mut s = UnixStream::connect(h.home.join("herder.sock")).unwrap();
    let body = br#"{"protocol":1,"version":"0.0.0-old"}"#;
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.contains("Mismatch"), "{reply}");
}

#[test]
fn kill_stops_the_daemon_and_a_new_command_starts_another() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let pid = h.daemon_pid().unwrap();
    let out = h.ok(&["kill"]);
    assert!(out.contains(&format!("pid {pid}")), "{out}");
    assert!(!pid_alive(pid));
    assert!(!h.home.join("herder.sock").exists());
    h.ok(&["ping"]);
    assert_ne!(h.daemon_pid().unwrap(), pid);
}

#[test]
fn a_daemon_of_another_version_is_named_and_kill_still_stops_it() {
    use std::io::BufRead;
    let h = TestHome::new();
    let mut old = Command::new("python3")
        .arg(fixture("old_daemon.py"))
        .arg(&h.home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(old.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let err = h.fails(&["ping"]);
    assert!(err.contains("runs herder 0.0.1") && err.contains("herder kill"), "{err}");
    let out = h.ok(&["kill"]);
    assert!(out.contains("0.0.1"), "{out}");
    let status = old.wait().unwrap();
    assert!(status.success(), "the old daemon exited on SIGTERM: {status}");
}

#[test]
fn a_daemon_started_while_a_killed_one_is_still_exiting_waits_for_its_lock() {
    let h = TestHome::new();
    // The killed daemon's main thread is a zombie already; its last thread lets go of the
    // lock a second later (as systemd's restart or a script may catch it).
    let mut holder = Command::new("python3")
        .arg(fixture("dying_holder.py"))
        .arg(&h.home)
        .arg("1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let pid = holder.id();
    wait_for("the holder's main thread to exit", Duration::from_secs(10), || (!pid_alive(pid)).then_some(()));
    let out = h.cmd(&["daemon"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let daemon =
        wait_for("the new daemon to serve", Duration::from_secs(20), || h.daemon_pid().filter(|&d| d != pid));
    assert!(h.ok(&["ping"]).contains(&format!("pid {daemon}")));
    h.ok(&["kill"]);
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    holder.wait().unwrap();
}

#[test]
fn kill_with_no_daemon_says_so_and_starts_none() {
    let h = TestHome::new();
    let out = h.run(&["kill"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no daemon is running"), "{text}");
    assert!(h.daemon_pid().is_none_or(|p| !pid_alive(p)), "kill started a daemon");
    assert!(!h.home.join("herder.sock").exists());
}
