//! Hooks: webhooks receive events promptly; a dead receiver never delays supervision.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A webhook receiver: each POST's JSON body and the time it arrived.
fn receiver() -> (u16, mpsc::Receiver<(serde_json::Value, u64)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            if tx.send((serde_json::from_slice(&body).unwrap(), now_ms())).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn webhooks_get_crash_restart_errored_and_health_events_within_a_second() {
    let h = TestHome::new();
    let (port, rx) = receiver();
    let dead_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[[apps]]\nname = \"crashy\"\nscript = \"{crash}\"\nargs = [\"5\"]\nmax_restarts = 1\n\
         [[apps.hooks]]\nevents = [\"exit\", \"restart\", \"errored\"]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n\n\
         [[apps]]\nname = \"sick\"\nscript = \"{idle}\"\nargs = [\"{tag}\"]\nkill_timeout = \"200ms\"\n\
         [[apps.health]]\ntcp = \"127.0.0.1:{dead_port}\"\ninterval = \"200ms\"\nfailure_threshold = 1\n\
         [[apps.hooks]]\nevents = [\"health\"]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n",
        crash = fixture("crash.sh").display(),
        idle = fixture("idle.sh").display(),
        tag = h.tag("sick"),
    );
    let cfg = h.write("hooks.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let mut got: Vec<(serde_json::Value, u64)> = Vec::new();
    wait_for("the hooks' POSTs", T, || {
        while let Ok(x) = rx.try_recv() {
            got.push(x);
        }
        let kinds = |app: &str| -> Vec<String> {
            got.iter()
                .filter(|(v, _)| v["app"] == app)
                .map(|(v, _)| v["kind"].as_str().unwrap().to_string())
                .collect()
        };
        let crashy = kinds("crashy");
        let sick = kinds("sick");
        (crashy.iter().filter(|k| *k == "exit").count() >= 2
            && crashy.contains(&"restart".to_string())
            && crashy.contains(&"errored".to_string())
            && sick.contains(&"health".to_string()))
        .then_some(())
    });
    for (event, arrived) in &got {
        let lag = arrived.saturating_sub(event["at_ms"].as_u64().unwrap());
        assert!(lag < 1000, "delivered {lag} ms after the event: {event}");
    }
    let health = got.iter().find(|(v, _)| v["kind"] == "health").unwrap();
    assert!(health.0["detail"].as_str().unwrap().contains("unhealthy"), "{}", health.0);
}

#[test]
fn a_dead_webhook_never_delays_restarts() {
    let h = TestHome::new();
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let text = format!(
        "[[apps]]\nname = \"crashy\"\nscript = \"{}\"\nargs = [\"3\"]\nmax_restarts = 3\n\
         [[apps.hooks]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\ntimeout = \"10s\"\nretries = 3\n",
        fixture("crash.sh").display()
    );
    let cfg = h.write("dead.toml", &text);
    let started = Instant::now();
    h.ok(&["start", cfg.to_str().unwrap()]);
    let app = h.wait_status("crashy", Status::Errored, T);
    assert_eq!(app.instances[0].restarts, 3);
    // Blocking on the hook would take 10 s per delivery; supervision did not wait for it.
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    drop(silent);
}

#[test]
fn a_bad_hook_is_a_config_error_with_its_place() {
    let h = TestHome::new();
    let text = "[[apps]]\nname = \"x\"\nscript = \"sleep\"\nargs = [\"10\"]\n[[apps.hooks]]\nevents = [\"exited\"]\nwebhook = \"http://127.0.0.1:1/\"\n";
    let cfg = h.write("badhook.toml", text);
    let err = h.fails(&["start", cfg.to_str().unwrap()]);
    assert!(
        err.contains("badhook.toml:6:") && err.contains("unknown event `exited`") && err.contains("`exit`"),
        "{err}"
    );
    assert!(h.list().is_empty());
}
