//! `herder doctor`: its report is well formed and true of this machine.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;

const IDS: &[&str] = &[
    "home",
    "daemon",
    "cgroup-v2",
    "cgroup-memory",
    "cgroup-cpu",
    "cgroup-pids",
    "clone-into-cgroup",
    "subreaper",
    "pidfd",
    "notify-socket",
    "inotify",
    "node",
    "python3",
    "other-supervisors",
];

fn doctor(h: &TestHome, no_cgroup: bool) -> (Option<i32>, Value) {
    let mut c = h.cmd(&["doctor", "--json"]);
    if no_cgroup {
        c.env("HERDER_NO_CGROUP", "1");
    } else {
        c.env_remove("HERDER_NO_CGROUP");
    }
    let out = c.output().unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), v)
}

fn get<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check `{id}`"))
}

fn level<'a>(report: &'a Value, id: &str) -> &'a str {
    get(report, id)["level"].as_str().unwrap()
}

/// `(major, minor)` of the running kernel.
fn kernel() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut p = r.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse().unwrap_or(0));
    (p.next().unwrap(), p.next().unwrap())
}

fn version_of(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn doctor_reports_every_check_and_the_facts_of_this_machine() {
    let h = TestHome::new();
    let (code, r) = doctor(&h, false);
    assert_eq!(code, Some(0), "{r:#}");
    let ids: Vec<&str> = r["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, IDS);
    for c in r["checks"].as_array().unwrap() {
        let lvl = c["level"].as_str().unwrap();
        assert!(["ok", "degraded", "missing"].contains(&lvl), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        // Every non-ok check says what degrades; ok ones say nothing.
        assert_eq!(c.get("degrades").is_some_and(|d| !d.as_str().unwrap().is_empty()), lvl != "ok", "{c}");
        assert_eq!(c["essential"], c["id"] == "home", "{c}");
    }
    // This machine: a new enough kernel, python3 and node installed (.ci/run sees to both).
    let k = kernel();
    assert_eq!(level(&r, "pidfd"), if k >= (5, 3) { "ok" } else { "missing" });
    if k >= (5, 7) {
        assert_eq!(level(&r, "clone-into-cgroup"), "ok", "{r:#}");
    }
    assert_eq!(level(&r, "inotify"), "ok");
    assert_eq!(level(&r, "notify-socket"), "ok", "{r:#}");
    for program in ["python3", "node"] {
        let v = version_of(program).unwrap_or_else(|| panic!("{program} must be installed here"));
        assert_eq!(level(&r, program), "ok");
        assert!(get(&r, program)["detail"].as_str().unwrap().contains(&v), "{r:#}");
    }
    // Nothing was started or created: the home does not exist yet and no daemon runs.
    assert_eq!(level(&r, "home"), "ok");
    assert_eq!(level(&r, "daemon"), "missing");
    assert!(!h.home.exists(), "doctor created {}", h.home.display());

    // With a daemon: its facts (pid, cgroup, subreaper) are reported.
    h.ok(&["ping"]);
    let pong: Value = serde_json::from_str(&h.ok(&["ping", "--json"])).unwrap();
    let (code, r) = doctor(&h, false);
    assert_eq!(code, Some(0));
    assert_eq!(level(&r, "daemon"), "ok");
    let detail = get(&r, "daemon")["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("pid {}", pong["pid"])), "{detail}");
    assert_eq!(
        level(&r, "cgroup-v2"),
        if pong["cgroup_root"].is_null() { "degraded" } else { "ok" },
        "{r:#}"
    );
    assert_eq!(level(&r, "subreaper"), if pong["subreaper"] == true { "ok" } else { "missing" });
    let limits = pong["limits"].as_str().unwrap();
    for (id, name) in [("cgroup-memory", "memory"), ("cgroup-cpu", "cpu")] {
        let unavailable = limits.contains(&format!("{name}: unavailable"));
        assert_eq!(level(&r, id), if unavailable { "missing" } else { "ok" }, "{limits}: {r:#}");
    }
    assert_eq!(level(&r, "home"), "ok");

    // The text form lists the same checks.
    let text = h.ok(&["doctor"]);
    for id in IDS {
        assert!(text.contains(id), "{text}");
    }
    assert!(text.contains(" ok, "), "{text}");
}

#[test]
fn doctor_shows_cgroups_degraded_under_herder_no_cgroup() {
    let h = TestHome::new();
    let (code, r) = doctor(&h, true);
    assert_eq!(code, Some(0));
    for id in ["cgroup-v2", "cgroup-memory", "cgroup-cpu", "cgroup-pids"] {
        assert_eq!(level(&r, id), "degraded", "{r:#}");
        assert!(get(&r, id)["detail"].as_str().unwrap().contains("HERDER_NO_CGROUP"), "{r:#}");
    }
    // A daemon started that way has no cgroup, and doctor says so from the daemon.
    let out = h.cmd(&["ping"]).env("HERDER_NO_CGROUP", "1").output().unwrap();
    assert!(out.status.success());
    let (_, r) = doctor(&h, false);
    for id in ["cgroup-v2", "cgroup-memory", "cgroup-cpu", "cgroup-pids"] {
        assert_eq!(level(&r, id), "degraded", "{r:#}");
        assert!(get(&r, id)["detail"].as_str().unwrap().contains("HERDER_NO_CGROUP"), "{r:#}");
    }
}

#[test]
fn doctor_fails_when_the_home_is_unusable() {
    let h = TestHome::new();
    let file = h.write("not-a-dir", "");
    let out = Command::new(BIN).args(["doctor", "--json"]).env("HERDER_HOME", &file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(level(&r, "home"), "missing");
    assert!(get(&r, "home")["detail"].as_str().unwrap().contains("not a directory"), "{r:#}");
}

#[test]
fn doctor_flags_a_home_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let h = TestHome::new();
    std::fs::create_dir(&h.home).unwrap();
    std::fs::set_permissions(&h.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, r) = doctor(&h, false);
    assert_eq!(code, Some(0), "a loose mode is not fatal");
    assert_eq!(level(&r, "home"), "degraded", "{r:#}");
    assert!(get(&r, "home")["detail"].as_str().unwrap().contains("0755"), "{r:#}");
}
