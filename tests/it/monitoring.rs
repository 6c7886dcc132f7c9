//! Monitoring and limits: CPU and memory of the whole process tree, `max_memory_restart`,
//! `memory_limit` (kernel OOM kill shown as `oom-killed`), `list --sort`.

use std::time::Duration;

use herder::protocol::{InstanceInfo, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

fn instance(h: &TestHome, name: &str) -> InstanceInfo {
    h.app(name).instances[0].clone()
}

/// Every `allocated <n> MB` line the app logged, over all its runs.
fn allocated_mb(h: &TestHome, name: &str) -> Vec<u32> {
    std::fs::read_to_string(h.home.join(format!("logs/{name}-0.out.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("allocated ")?.strip_suffix(" MB")?.parse().ok())
        .collect()
}

#[test]
fn max_memory_restart_restarts_a_growing_app_soon_after_it_crosses() {
    let h = TestHome::new();
    // The app grows 40 MB/s past 60 MB; the daemon samples every 250 ms.
    let text = format!(
        "[[apps]]\nname = \"leak\"\nscript = \"{}\"\nargs = [\"40\", \"400\"]\nmax_memory_restart = \"60M\"\nkill_timeout = \"1s\"\n",
        fixture("grow.py").display()
    );
    let cfg = h.write("leak.toml", &text);
    let out =
        h.cmd(&["start", cfg.to_str().unwrap()]).env("HERDER_SAMPLE_INTERVAL", "250ms").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = h.wait_status("leak", Status::Online, T).instances[0].pid.unwrap();
    let i = wait_for("the memory restart", T, || {
        let i = instance(&h, "leak");
        (i.restarts >= 1).then_some(i)
    });
    assert_ne!(i.pid, Some(first));
    assert!(!pid_alive(first));
    // Graceful: the stop signal ended it, not the kernel and not a crash.
    let exit = i.last_exit.clone().unwrap();
    assert!(!exit.oom_killed, "{exit:?}");
    assert_eq!(exit.reason, herder::protocol::ExitReason::Signal(libc::SIGTERM), "{exit:?}");
    assert_eq!(exit.memory_restart, Some(60 * 1024 * 1024), "the exit says why: {exit:?}");
    let table = h.ok(&["list"]);
    assert!(table.contains("memory > 60.0mb"), "list's last exit names the limit:\n{table}");
    // Crossed 60 MB of allocations (plus the interpreter's ~10 MB) and was stopped within a few
    // 250 ms samples: at 40 MB/s, well before 60 + 40 MB.
    let peak = allocated_mb(&h, "leak").into_iter().max().unwrap();
    assert!((40..100).contains(&peak), "the first run reached {peak} MB");
}

#[test]
fn max_memory_restart_below_the_apps_baseline_ends_errored_instead_of_restarting_forever() {
    let h = TestHome::new();
    // The interpreter alone is over 5 MB: every run is restarted as soon as it is measured.
    let text = format!(
        "[[apps]]\nname = \"fat\"\nscript = \"{}\"\nargs = [\"1\", \"1\"]\nmax_memory_restart = \"5M\"\nmax_restarts = 2\nkill_timeout = \"1s\"\n",
        fixture("grow.py").display()
    );
    let cfg = h.write("fat.toml", &text);
    let out =
        h.cmd(&["start", cfg.to_str().unwrap()]).env("HERDER_SAMPLE_INTERVAL", "50ms").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let i = h.wait_status("fat", Status::Errored, T).instances[0].clone();
    assert_eq!((i.restarts, i.unstable_restarts), (2, 3), "{i:?}");
    let reason = i.reason.unwrap_or_default();
    assert!(reason.contains("3 unstable runs") && reason.contains("max_memory_restart"), "{reason}");
    assert!(i.pid.is_none());
}

#[test]
fn memory_limit_gets_the_app_oom_killed_and_restarted() {
    let h = TestHome::new();
    let text = format!(
        "[[apps]]\nname = \"hog\"\nscript = \"{}\"\nargs = [\"100\", \"400\"]\nmemory_limit = \"60M\"\nmax_restarts = 50\n",
        fixture("grow.py").display()
    );
    let cfg = h.write("hog.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let i = wait_for("an OOM kill", T, || {
        let i = instance(&h, "hog");
        i.last_exit.as_ref().is_some_and(|e| e.oom_killed).then_some(i)
    });
    assert_eq!(i.last_exit.unwrap().reason, herder::protocol::ExitReason::Signal(libc::SIGKILL));
    let table = h.ok(&["list"]);
    assert!(table.contains("oom-killed"), "{table}");
    // A counter of its own, which does not depend on the last exits kept in the history.
    assert!(i.oom_kills >= 1 && i.oom_kills as usize >= i.history.iter().filter(|e| e.oom_killed).count());
    let metrics = h.ok(&["metrics"]);
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herder_app_oom_kills_total{")?.split_once("} ")?.1.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(counted >= 1.0, "{metrics}");
    wait_for("the restart after the OOM kill", T, || (instance(&h, "hog").restarts >= 1).then_some(()));
    let peak = allocated_mb(&h, "hog").into_iter().max().unwrap();
    assert!(peak < 60, "the kernel let it allocate {peak} MB");
}

/// CPU time of `pid` so far, in seconds, read from /proc by the test itself.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).map(|x| x.parse().unwrap()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1]) as f64 / hz
}

#[test]
fn a_busy_loop_reads_about_one_core() {
    let h = TestHome::new();
    h.ok(&["start", fixture("busy.py").to_str().unwrap(), "--name", "spin"]);
    let pid = h.wait_status("spin", Status::Online, T).instances[0].pid.unwrap();
    // The machine running the tests may be busy: compare herder's figure with what the
    // process really got over the same sample interval, measured here from /proc.
    let next_sample = |after: Option<f64>| {
        wait_for("a new sample", T, || {
            let i = instance(&h, "spin");
            let secs = i.cpu_seconds?;
            (Some(secs) != after)
                .then(|| (secs, i.cpu_percent, cpu_seconds_of(pid), std::time::Instant::now()))
        })
    };
    wait_for("a reading that matches the process's real share", T, || {
        let (secs, _, own0, t0) = next_sample(None);
        let (_, reported, own1, t1) = next_sample(Some(secs));
        let real = (own1 - own0) / (t1 - t0).as_secs_f64() * 100.0;
        let reported = f64::from(reported?);
        // A share this size cannot be matched by a reading stuck at zero.
        (real >= 20.0 && (reported - real).abs() <= 15.0).then_some(())
    });
    let table = h.ok(&["list"]);
    assert!(table.contains('%'), "{table}");
}

fn family_memory(no_cgroup: bool) {
    let h = TestHome::new();
    let mut cmd = h.cmd(&["start", fixture("family.py").to_str().unwrap(), "--name", "fam", "--", "30"]);
    if no_cgroup {
        cmd.env("HERDER_NO_CGROUP", "1");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let i = wait_for("the children's memory", T, || {
        let i = instance(&h, "fam");
        (i.processes == Some(4) && i.memory_bytes? >= 3 * 30 * 1024 * 1024).then_some(i)
    });
    // Three children of 30 MB and a parent: not one process's figure.
    assert!(i.memory_bytes.unwrap() < 400 * 1024 * 1024, "{:?}", i.memory_bytes);
    let shown = h.ok(&["show", "fam"]);
    assert!(shown.contains("processes") && shown.contains("memory history"), "{shown}");
}

#[test]
fn an_app_with_three_children_reports_their_memory_together() {
    family_memory(false);
}

#[test]
fn the_tree_is_summed_without_cgroups_too() {
    family_memory(true);
}

#[test]
fn list_sorts_and_shows_the_columns() {
    let h = TestHome::new();
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "b-idle", "--", &h.tag("b")]);
    h.ok(&["start", fixture("family.py").to_str().unwrap(), "--name", "a-fam", "--", "20"]);
    wait_for("memory figures", T, || {
        let apps = h.list();
        apps.iter().all(|a| a.instances[0].memory_bytes.is_some()).then_some(())
    });
    let names = |args: &[&str]| -> Vec<String> {
        let table = h.ok(args);
        table.lines().skip(1).filter_map(|l| l.split('│').nth(1).map(|c| c.trim().to_string())).collect()
    };
    assert_eq!(names(&["list", "--sort", "name"]), ["a-fam", "b-idle"]);
    assert_eq!(names(&["list", "--sort", "name:desc"]), ["b-idle", "a-fam"]);
    wait_for("the family's memory", T, || {
        (names(&["list", "--sort", "mem:desc"]) == ["a-fam", "b-idle"]).then_some(())
    });
    let header = h.ok(&["list"]).lines().next().unwrap().to_string();
    for col in
        ["id", "name", "namespace", "mode", "pid", "uptime", "status", "cpu", "mem", "user", "watching"]
    {
        assert!(header.contains(col), "{header}");
    }
    let err = h.fails(&["list", "--sort", "colour"]);
    assert!(err.contains("unknown field `colour`"), "{err}");
}

#[test]
fn bad_limits_name_their_place() {
    let h = TestHome::new();
    let cfg = h.write(
        "bad.toml",
        "[[apps]]\nname = \"x\"\nscript = \"sleep\"\ncpu_limit = \"lots\"\nmemory_limit = \"1k\"\n",
    );
    let err = h.fails(&["start", cfg.to_str().unwrap()]);
    assert!(err.contains("bad.toml:4:") && err.contains("invalid CPU limit"), "{err}");
    assert!(err.contains("bad.toml:5:") && err.contains("too small"), "{err}");
}

#[test]
fn cpu_limit_holds_a_busy_loop_to_its_share() {
    let h = TestHome::new();
    let text = format!(
        "[[apps]]\nname = \"capped\"\nscript = \"{}\"\ncpu_limit = \"30%\"\n",
        fixture("busy.py").display()
    );
    let cfg = h.write("capped.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    h.wait_status("capped", Status::Online, T);
    // Several readings in a row near 30% (never a full core) show the kernel's quota at work.
    let mut streak = 0;
    wait_for("readings held near 30%", T, || {
        let cpu = instance(&h, "capped").cpu_percent?;
        assert!(cpu < 60.0, "a 30% limit let it use {cpu}%");
        streak = if (10.0..=45.0).contains(&cpu) { streak + 1 } else { 0 };
        (streak >= 3).then_some(())
    });
}
