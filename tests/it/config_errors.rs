//! Bad config files: a precise message, a non-zero exit, nothing started, running apps
//! untouched.

use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

fn check_rejected(h: &TestHome, file: &str, text: &str, expect: &[&str]) {
    let path = h.write(file, text);
    let err = h.fails(&["start", path.to_str().unwrap()]);
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in:\n{err}");
    }
}

#[test]
fn bad_configs_are_rejected_with_locations_and_running_apps_are_untouched() {
    let h = TestHome::new();
    let tag = h.tag("keep");
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "keep", "--", &tag]);
    let pid = h.wait_status("keep", Status::Online, Duration::from_secs(10)).instances[0].pid;

    let script = fixture("idle.sh");
    let script = script.to_str().unwrap();
    check_rejected(
        &h,
        "unknown.toml",
        &format!("[[apps]]\nname = \"keep\"\nscript = \"{script}\"\nmax_restart = 3\n"),
        &["unknown.toml:4:1", "max_restart", "max_restarts"],
    );
    check_rejected(
        &h,
        "type.toml",
        &format!("[[apps]]\nname = \"other\"\nscript = \"{script}\"\nautorestart = \"yes\"\n"),
        &["type.toml:4:15", "autorestart"],
    );
    check_rejected(
        &h,
        "duration.toml",
        &format!("[[apps]]\nname = \"other\"\nscript = \"{script}\"\nrestart_delay = \"10 parsecs\"\n"),
        &["duration.toml:4:17", "restart_delay"],
    );
    check_rejected(
        &h,
        "syntax.toml",
        &format!("[[apps]]\nname = \"other\nscript = \"{script}\"\n"),
        &["syntax.toml:2:"],
    );

    let apps = h.list();
    assert_eq!(apps.len(), 1, "nothing was started");
    assert_eq!(apps[0].spec.name, "keep");
    assert_eq!(apps[0].instances[0].pid, pid, "the running app was not restarted");
    assert_eq!(apps[0].instances[0].restarts, 0);
}

#[test]
fn bad_flags_name_the_flag() {
    let h = TestHome::new();
    let err = h.fails(&["start", fixture("idle.sh").to_str().unwrap(), "--restart-delay", "soon"]);
    assert!(err.contains("--restart-delay") && err.contains("soon"), "{err}");
    let err = h.fails(&["start", "./no-such-script.js"]);
    assert!(err.contains("no-such-script.js"), "{err}");
}

#[test]
fn a_config_file_starts_its_apps_and_restarts_them_when_started_again() {
    let h = TestHome::new();
    let script = fixture("idle.sh");
    let text = format!(
        "[[apps]]\nname = \"one\"\nscript = \"{s}\"\nargs = [\"{t1}\"]\nkill_timeout = \"2s\"\n\n\
         [[apps]]\nname = \"two\"\nscript = \"{s}\"\nargs = \"{t2}\"\nenv = {{ GREETING = \"hi\" }}\n",
        s = script.display(),
        t1 = h.tag("one"),
        t2 = h.tag("two"),
    );
    let path = h.write("herder.toml", &text);
    h.ok(&["start", path.to_str().unwrap()]);
    let one = h.wait_status("one", Status::Online, Duration::from_secs(10));
    let two = h.wait_status("two", Status::Online, Duration::from_secs(10));
    assert_eq!(one.spec.kill_timeout_ms, 2000);
    let shown: serde_json::Value = serde_json::from_str(&h.ok(&["show", "two", "--json"])).unwrap();
    assert_eq!(shown["spec"]["env"]["GREETING"], "hi");
    let environ = std::fs::read(format!("/proc/{}/environ", two.instances[0].pid.unwrap())).unwrap();
    assert!(environ.split(|b| *b == 0).any(|kv| kv == b"GREETING=hi"));
    // Starting the file again restarts the running apps instead of adding copies.
    h.ok(&["start", path.to_str().unwrap()]);
    let apps = h.list();
    assert_eq!(apps.len(), 2);
    let one2 = h.wait_status("one", Status::Online, Duration::from_secs(10));
    assert_ne!(one2.instances[0].pid, one.instances[0].pid);
    assert_eq!(pids_with_arg(&h.tag("one")).len(), 1);
}
