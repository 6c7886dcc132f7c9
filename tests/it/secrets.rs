//! Secret-looking env values never reach an output in clear: `list`, `show` and their
//! `--json`, and events hide them; `show --show-secrets` shows them on purpose.

use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "tok-5ecret-value";

fn start_app(h: &TestHome) {
    // The secret is in the env, in an argument and in a probe's command, which fails so that a
    // `health` event names it.
    let file = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"api\"\nscript = \"{}\"\nargs = [\"--token={SECRET}\"]\n\
             env = {{ API_TOKEN = \"{SECRET}\", PORT = \"8080\" }}\n\
             [[apps.health]]\nkind = \"liveness\"\nexec = \"false {SECRET}\"\ninterval = \"100ms\"\n",
            fixture("idle.sh").display()
        ),
    );
    h.ok(&["start", file.to_str().unwrap()]);
}

#[test]
fn list_and_show_mask_secrets_in_text_and_json_unless_asked() {
    let h = TestHome::new();
    start_app(&h);
    wait_for("the app to run", T, || h.app("api").instances[0].pid);
    for args in [&["show", "api"][..], &["show", "api", "--json"], &["list", "--json"], &["list"]] {
        let out = h.ok(args);
        assert!(!out.contains(SECRET), "`herder {}` prints the secret:\n{out}", args.join(" "));
    }
    let json: serde_json::Value = serde_json::from_str(&h.ok(&["show", "api", "--json"])).unwrap();
    assert_eq!(json["spec"]["env"]["API_TOKEN"], "********");
    assert_eq!(json["spec"]["env"]["PORT"], "8080", "other values are shown");
    assert_eq!(json["spec"]["args"][0], "--token=********");
    let text = h.ok(&["show", "api"]);
    assert!(text.contains("API_TOKEN  ********"), "{text}");

    for args in [&["show", "api", "--show-secrets"][..], &["show", "api", "--json", "--show-secrets"]] {
        let out = h.ok(args);
        assert!(out.contains(SECRET), "`herder {}` hides the secret:\n{out}", args.join(" "));
    }
}

#[test]
fn events_never_carry_a_secret() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let (follower, rx) = follow_events(&h);
    start_app(&h);
    let health = wait_for("the failing probe's health event", T, || {
        rx.recv_timeout(Duration::from_millis(200)).ok().filter(|e| e["kind"] == "health")
    });
    let detail = health["detail"].as_str().unwrap();
    assert!(detail.contains("false ********"), "the detail names the probe, masked: {detail}");
    assert!(!detail.contains(SECRET), "{detail}");
    drop(follower);
}
