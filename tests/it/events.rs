//! `herder events`: the stream of supervision events.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn events_stream_start_exit_restart_and_errored() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let (follower, rx) = follow_events(&h);
    h.ok(&[
        "start",
        fixture("crash.sh").to_str().unwrap(),
        "--name",
        "crashy",
        "--max-restarts",
        "1",
        "--",
        "4",
    ]);
    let mut got: Vec<serde_json::Value> = Vec::new();
    wait_for("the errored event", T, || {
        while let Ok(v) = rx.try_recv() {
            got.push(v);
        }
        got.last().is_some_and(|v| v["kind"] == "errored").then_some(())
    });
    drop(follower);
    let kinds: Vec<&str> = got.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "exit", "restart", "start", "exit", "errored"], "{got:?}");
    assert_eq!(got[1]["app"], "crashy");
    assert_eq!(got[1]["exit"]["code"], 4);
    assert!(got[5]["detail"].as_str().unwrap().contains("unstable"));
}

#[test]
fn the_daemon_notices_an_events_client_hanging_up() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let mut follower = h.cmd(&["events"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for("the follower to subscribe", T, || (followers(&h)? == 1).then_some(()));
    follower.kill().unwrap();
    follower.wait().unwrap();
    wait_for("the daemon to drop it", T, || (followers(&h)? == 0).then_some(()));
}

#[test]
fn cron_restart_every_two_seconds_shows_in_events() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let (follower, rx) = follow_events(&h);
    let text = format!(
        "[[apps]]\nname = \"cronned\"\nscript = \"{}\"\nargs = [\"{}\"]\ncron_restart = \"*/2 * * * * *\"\ncron_timezone = \"UTC\"\n",
        fixture("idle.sh").display(),
        h.tag("cronned")
    );
    let cfg = h.write("cron.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let mut restarts: Vec<u64> = Vec::new();
    wait_for("three scheduled restarts", T, || {
        while let Ok(v) = rx.try_recv() {
            if v["kind"] == "restart" && v["detail"].as_str().unwrap_or_default().contains("cron_restart") {
                restarts.push(v["at_ms"].as_u64().unwrap());
            }
        }
        (restarts.len() >= 3).then_some(())
    });
    drop(follower);
    // On even seconds: two seconds apart (give or take the machine's scheduling).
    for w in restarts.windows(2) {
        let gap = w[1] - w[0];
        assert!((1000..=3000).contains(&gap), "gaps of about 2 s: {restarts:?}");
    }
    assert!(h.app("cronned").instances[0].restarts >= 3);
}
