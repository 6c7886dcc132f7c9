//! Health probes: liveness restarts a hung app; readiness gates `online`.

use std::time::{Duration, Instant};

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_hung_http_app_is_restarted_by_its_liveness_probe() {
    let h = TestHome::new();
    let port = free_port();
    let hang = h.dir.path().join("hang");
    let text = format!(
        "[[apps]]\nname = \"web\"\nscript = \"{}\"\nargs = [\"{port}\", \"{}\"]\nkill_timeout = \"300ms\"\n\
         [[apps.health]]\nkind = \"liveness\"\nhttp = \"http://127.0.0.1:{port}/health\"\n\
         interval = \"200ms\"\ntimeout = \"200ms\"\nfailure_threshold = 2\ninitial_delay = \"1s\"\n",
        fixture("health_server.py").display(),
        hang.display()
    );
    let cfg = h.write("web.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    // Healthy: the probe passes and nothing is restarted.
    let app = wait_for("a passing probe", T, || {
        let a = h.app("web");
        (a.instances[0].probes.first()?.successes >= 2).then_some(a)
    });
    assert_eq!(app.instances[0].restarts, 0);
    let old = app.instances[0].pid;

    std::fs::write(&hang, "").unwrap();
    let hung_at = Instant::now();
    let app = wait_for("the liveness restart", T, || {
        let a = h.app("web");
        (a.instances[0].restarts >= 1).then_some(a)
    });
    // interval × failure_threshold + kill_timeout = 700 ms; generous slack for a loaded
    // machine, but bounded.
    assert!(hung_at.elapsed() < Duration::from_secs(8), "restarted after {:?}", hung_at.elapsed());
    let reason = app.instances[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("liveness probe `http http://127.0.0.1:"), "{reason}");
    assert!(!old.is_some_and(pid_alive), "the hung process is gone");
    let shown = h.ok(&["show", "web"]);
    assert!(shown.contains("liveness probe"), "{shown}");
}

#[test]
fn a_readiness_probe_keeps_an_app_launching_until_it_passes() {
    let h = TestHome::new();
    let port = free_port();
    let text = format!(
        "[[apps]]\nname = \"late\"\nscript = \"python3\"\nargs = [\"-c\", \"import os,socket,time\\nwhile not os.path.exists('go'): time.sleep(0.01)\\ns=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(100000)\"]\n\
         [[apps.health]]\nkind = \"readiness\"\ntcp = \"127.0.0.1:{port}\"\ninterval = \"100ms\"\n",
    );
    let cfg = h.write("late.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let app = wait_for("a failing readiness probe", T, || {
        let a = h.app("late");
        (a.instances[0].probes.first()?.failures >= 2).then_some(a)
    });
    assert_eq!(app.instances[0].status, Status::Launching);
    std::fs::write(h.dir.path().join("go"), "").unwrap();
    let app = h.wait_status("late", Status::Online, T);
    assert!(app.instances[0].probes[0].healthy);
    assert_eq!(app.instances[0].restarts, 0);
}

#[test]
fn a_bad_probe_is_a_config_error_with_its_place() {
    let h = TestHome::new();
    let text = "[[apps]]\nname = \"x\"\nscript = \"sleep\"\nargs = [\"10\"]\n[[apps.health]]\nhttp = \"ftp://nope\"\nintervall = \"1s\"\n";
    let cfg = h.write("bad.toml", text);
    let err = h.fails(&["start", cfg.to_str().unwrap()]);
    assert!(err.contains("bad.toml:6:") && err.contains("not an http:// URL"), "{err}");
    assert!(err.contains("bad.toml:7:") && err.contains("did you mean `interval`"), "{err}");
    assert!(h.list().is_empty());
}
