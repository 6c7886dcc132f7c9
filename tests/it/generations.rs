//! Two processes for one instance slot: an app's coordinator starts the next generation of a
//! slot beside the running one, gives it the slot once it is ready, then stops the old one.
//! `list`, `state.json` and crash recovery after `kill -9` of the daemon see exactly one
//! process of the slot once the swap is done, and recovery in the middle of it ends both and
//! runs the app once.

use std::path::Path;
use std::time::Duration;

use herder::paths::Paths;
use herder::protocol::{Request, Response, Status, Target};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// Ask the daemon to replace every instance of `app`, in a thread (the answer comes once the
/// swap is done).
fn reload(home: &Path, app: &str) -> std::thread::JoinHandle<Result<Response, herder::client::ClientError>> {
    let paths = Paths::new(home);
    let req = Request::Reload { targets: vec![Target::Name(app.to_string())], env: None, specs: Vec::new() };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(herder::client::call(&paths, &req))
    })
}

/// The instances `state.json` records for the first app: (index, generation, pid).
fn recorded(h: &TestHome) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(h.home.join("state.json")).unwrap_or_default();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return Vec::new() };
    v["apps"][0]["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    Some((i["index"].as_u64()?, i["generation"].as_u64().unwrap_or(0), i["pid"].as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An app in cluster mode (a socket the daemon holds, which its instances need not use) whose
/// replacement takes `min_uptime` (two seconds) to count as ready: long enough to see both
/// processes of its slot.
fn start(h: &TestHome, tag: &str) -> u32 {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[[apps]]\nname = \"slot\"\nscript = \"{}\"\nargs = [\"{tag}\"]\nmin_uptime = \"2s\"\nexec_mode = \"cluster\"\nport = {port}\n",
        fixture("idle.sh").display()
    );
    let cfg = h.write("slot.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    h.wait_status("slot", Status::Online, T).instances[0].pid.unwrap()
}

#[test]
fn a_slot_swapped_to_its_next_generation_is_one_process_in_list_state_and_recovery() {
    let h = TestHome::new();
    let tag = h.tag("slot");
    let old = start(&h, &tag);
    let swap = reload(&h.home, "slot");

    // Both generations run, and both are recorded, until the new one has stayed up.
    let both = wait_for("two processes for the slot", T, || {
        let pids = pids_with_arg(&tag);
        let rec = recorded(&h);
        (pids.len() == 2 && rec.len() == 2).then_some(rec)
    });
    let mut generations: Vec<u64> = both.iter().map(|(_, g, _)| *g).collect();
    generations.sort_unstable();
    assert_eq!(generations, [0, 1], "{both:?}");
    assert!(both.iter().all(|(i, ..)| *i == 0), "one slot: {both:?}");
    assert_eq!(h.list()[0].instances.len(), 1, "list shows the slot once");

    assert!(matches!(swap.join().unwrap().unwrap(), Response::Done { .. }));
    let app = h.app("slot");
    assert_eq!(app.instances.len(), 1);
    let new = app.instances[0].pid.unwrap();
    assert_ne!(new, old);
    assert_eq!(app.instances[0].generation, 1);
    assert_eq!(pids_with_arg(&tag), [new], "the old generation stopped");
    assert!(!pid_alive(old));
    assert_eq!(recorded(&h), [(0, 1, u64::from(new))], "state.json records the new one alone");

    // Recovery after `kill -9` of the daemon: the app runs once.
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(daemon)).then_some(()));
    let app = h.wait_status("slot", Status::Online, T);
    assert_eq!(app.instances.len(), 1);
    let running = wait_for("one process of the app", T, || {
        let pids = pids_with_arg(&tag);
        (pids.len() == 1).then_some(pids)
    });
    assert_eq!(running, [app.instances[0].pid.unwrap()]);
}

#[test]
fn a_daemon_killed_in_the_middle_of_a_swap_leaves_the_app_running_once() {
    let h = TestHome::new();
    let tag = h.tag("slot");
    start(&h, &tag);
    let swap = reload(&h.home, "slot");
    wait_for("two processes for the slot, both recorded", T, || {
        (pids_with_arg(&tag).len() == 2 && recorded(&h).len() == 2).then_some(())
    });
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(daemon)).then_some(()));
    assert!(swap.join().unwrap().is_err(), "the request was cut off with the daemon");
    let app = h.wait_status("slot", Status::Online, T);
    assert_eq!(app.instances.len(), 1);
    let pid = app.instances[0].pid.unwrap();
    let running = wait_for("one process of the app", T, || {
        let pids = pids_with_arg(&tag);
        (pids == [pid]).then_some(pids)
    });
    assert_eq!(running.len(), 1);
    wait_for("state.json to record the one process", T, || {
        (recorded(&h) == [(0, 0, u64::from(pid))]).then_some(())
    });
}

#[test]
fn a_replacement_that_exits_leaves_the_old_instance_serving() {
    let h = TestHome::new();
    let tag = h.tag("slot");
    let flag = h.dir.path().join("broken");
    // Runs while the flag file is absent; exits at once when it is there.
    let script = h.write(
        "app.sh",
        &format!("#!/bin/sh\n[ -e {} ] && exit 3\nexec sleep 100000 # $1\n", flag.display()),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[[apps]]\nname = \"slot\"\nscript = \"{}\"\nargs = [\"{tag}\"]\nexec_mode = \"cluster\"\nport = {port}\n",
        script.display()
    );
    h.ok(&["start", h.write("slot.toml", &text).to_str().unwrap()]);
    let old = h.wait_status("slot", Status::Online, T).instances[0].pid.unwrap();
    std::fs::write(&flag, "").unwrap();
    match reload(&h.home, "slot").join().unwrap().unwrap() {
        Response::Error(e) => {
            assert!(e.message.contains("`slot` instance 0"), "{}", e.message);
            assert!(e.message.contains("the old one keeps serving"), "{}", e.message);
        }
        other => panic!("the reload succeeded: {other:?}"),
    }
    let app = h.app("slot");
    assert_eq!((app.instances[0].pid, app.instances[0].status), (Some(old), Status::Online));
    assert_eq!(recorded(&h).len(), 1, "the failed replacement is gone from state.json");
}
