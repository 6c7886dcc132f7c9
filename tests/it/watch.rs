//! `watch`: edits restart the app once per burst; ignored paths do not. And
//! `shutdown_with_message`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herder::protocol::{AppInfo, Status};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// A project directory with a `.git` and a `node_modules`, and an app config watching it.
fn project(h: &TestHome, extra: &str) -> (PathBuf, PathBuf) {
    let proj = h.dir.path().join("proj");
    for d in ["node_modules/pkg", ".git", "src"] {
        std::fs::create_dir_all(proj.join(d)).unwrap();
    }
    std::fs::write(proj.join("config.txt"), "a\n").unwrap();
    let text = format!(
        "[[apps]]\nname = \"w\"\nscript = \"{}\"\ncwd = \"{}\"\nkill_timeout = \"2s\"\n{extra}\n",
        fixture("beat.py").display(),
        proj.display()
    );
    let cfg = h.write("w.toml", &text);
    (proj, cfg)
}

/// How many beats the app has logged so far.
fn beats(h: &TestHome) -> usize {
    std::fs::read_to_string(h.home.join("logs/w-0.out.log")).map(|t| t.lines().count()).unwrap_or(0)
}

/// Let the app log `n` more beats (50 ms each): time for any restart a change would cause to
/// have happened, measured by the app's own clock.
fn let_time_pass(h: &TestHome, n: usize) {
    let start = beats(h);
    wait_for("the app to keep beating", T, || (beats(h) >= start + n).then_some(()));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn online_pid(h: &TestHome) -> (AppInfo, u32) {
    let app = h.wait_status("w", Status::Online, T);
    let pid = app.instances[0].pid.unwrap();
    (app, pid)
}

#[test]
fn editing_a_watched_file_restarts_the_app_exactly_once() {
    let h = TestHome::new();
    let (proj, cfg) = project(&h, "watch = true");
    h.ok(&["start", cfg.to_str().unwrap()]);
    let (_, first) = online_pid(&h);
    let_time_pass(&h, 2);

    // Dependencies and version control change all the time: never a restart.
    write(&proj.join("node_modules/pkg/index.js"), "x");
    write(&proj.join(".git/HEAD"), "ref");
    std::fs::create_dir_all(proj.join("node_modules/other/lib")).unwrap();
    let_time_pass(&h, 10);
    let app = h.app("w");
    assert_eq!(
        (app.instances[0].pid, app.instances[0].restarts),
        (Some(first), 0),
        "an ignored edit restarted it"
    );

    // A burst of edits (an editor saving, a formatter rewriting): one restart.
    for i in 0..5 {
        write(&proj.join("config.txt"), &format!("{i}\n"));
    }
    write(&proj.join("src/new.txt"), "new");
    let second = wait_for("the restart", T, || {
        let a = h.app("w");
        let i = &a.instances[0];
        (i.status == Status::Online && i.pid.is_some_and(|p| p != first)).then_some(i.pid.unwrap())
    });
    assert!(!pid_alive(first), "the old process is gone");
    let_time_pass(&h, 10);
    let app = h.app("w");
    assert_eq!(app.instances[0].restarts, 1, "one burst, one restart");
    assert_eq!(app.instances[0].pid, Some(second));
    assert!(h.ok(&["list"]).contains("w"));
}

#[test]
fn watch_paths_ignore_patterns_and_new_directories() {
    let h = TestHome::new();
    let (proj, cfg) =
        project(&h, "watch = [\"src\"]\nignore_watch = [\"*.tmp\", \"generated\"]\nwatch_delay = 200");
    h.ok(&["start", cfg.to_str().unwrap()]);
    let (_, first) = online_pid(&h);

    // Outside `src`, or ignored inside it: nothing.
    write(&proj.join("config.txt"), "changed");
    write(&proj.join("src/scratch.tmp"), "x");
    std::fs::create_dir_all(proj.join("src/generated")).unwrap();
    write(&proj.join("src/generated/out.js"), "x");
    let_time_pass(&h, 10);
    assert_eq!(h.app("w").instances[0].pid, Some(first));

    // A directory created after the start is watched too.
    std::fs::create_dir_all(proj.join("src/lib")).unwrap();
    let second = wait_for("a restart for the new directory", T, || {
        let i = h.app("w").instances[0].clone();
        (i.status == Status::Online && i.pid.is_some_and(|p| p != first)).then_some(i.pid.unwrap())
    });
    let_time_pass(&h, 2);
    write(&proj.join("src/lib/mod.js"), "x");
    wait_for("a restart for a file in it", T, || {
        let i = h.app("w").instances[0].clone();
        (i.status == Status::Online && i.pid.is_some_and(|p| p != second)).then_some(())
    });
    assert_eq!(h.app("w").instances[0].restarts, 2);
}

#[test]
fn an_errored_app_is_started_again_when_its_code_is_fixed() {
    let h = TestHome::new();
    let proj = h.dir.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    write(&proj.join("app.py"), "raise SystemExit(3)\n");
    let text = format!(
        "[[apps]]\nname = \"w\"\nscript = \"app.py\"\ncwd = \"{}\"\nwatch = true\nmax_restarts = 1\n",
        proj.display()
    );
    let cfg = h.write("w.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    h.wait_status("w", Status::Errored, T);
    write(&proj.join("app.py"), "import time\nwhile True: time.sleep(1)\n");
    let app = h.wait_status("w", Status::Online, T);
    assert!(app.instances[0].pid.is_some());
}

#[test]
fn stop_ends_watching() {
    let h = TestHome::new();
    let (proj, cfg) = project(&h, "watch = true");
    h.ok(&["start", cfg.to_str().unwrap()]);
    online_pid(&h);
    h.ok(&["stop", "w"]);
    write(&proj.join("config.txt"), "changed");
    // Another app's clock measures the time a restart would have taken.
    h.ok(&["start", fixture("beat.py").to_str().unwrap(), "--name", "clock"]);
    h.wait_status("clock", Status::Online, T);
    let log = h.home.join("logs/clock-0.out.log");
    wait_for("the clock to tick", T, || {
        (std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0) >= 10).then_some(())
    });
    assert_eq!(h.app("w").instances[0].status, Status::Stopped);
}

#[test]
fn the_start_flags_set_watching() {
    let h = TestHome::new();
    let proj = h.dir.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    h.ok(&[
        "start",
        fixture("beat.py").to_str().unwrap(),
        "--name",
        "w",
        "--cwd",
        proj.to_str().unwrap(),
        "--watch",
        "--ignore-watch",
        "*.tmp",
        "--watch-delay",
        "150ms",
    ]);
    let app = h.app("w");
    assert_eq!(app.spec.watch, vec![proj.clone()]);
    assert_eq!(app.spec.ignore_watch, vec!["*.tmp".to_string()]);
    assert_eq!(app.spec.watch_delay_ms, 150);
    let (_, first) = online_pid(&h);
    write(&proj.join("a.txt"), "x");
    wait_for("a restart", T, || h.app("w").instances[0].pid.filter(|p| *p != first));
    let err = h.fails(&["start", "x.py", "--ignore-watch", "[oops"]);
    assert!(err.contains("--ignore-watch") && err.contains("not closed"), "{err}");
}

#[test]
fn bad_watch_settings_name_their_place() {
    let h = TestHome::new();
    let cfg = h
        .write("bad.toml", "[[apps]]\nname = \"x\"\nscript = \"sleep\"\nignore_watch = [\"a\", \"[z-a]\"]\n");
    let err = h.fails(&["start", cfg.to_str().unwrap()]);
    assert!(err.contains("bad.toml:4:") && err.contains("backwards"), "{err}");
    let cfg = h.write("bad2.toml", "[[apps]]\nname = \"x\"\nscript = \"sleep\"\nwatch = 3\n");
    let err = h.fails(&["start", cfg.to_str().unwrap()]);
    assert!(err.contains("bad2.toml:4:") && err.contains("watch"), "{err}");
}

#[test]
fn shutdown_with_message_stops_a_node_app_by_ipc() {
    let h = TestHome::new();
    let proof = h.dir.path().join("proof");
    let text = format!(
        "[[apps]]\nname = \"n\"\nscript = \"{}\"\nargs = [\"{}\"]\nshutdown_with_message = true\nkill_timeout = \"20s\"\n",
        fixture("shutdown_message.js").display(),
        proof.display()
    );
    let cfg = h.write("n.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    h.wait_status("n", Status::Online, T);
    let started = std::time::Instant::now();
    h.ok(&["stop", "n"]);
    // It ignores SIGTERM: only the message can have stopped it before `kill_timeout`.
    assert!(started.elapsed() < Duration::from_secs(15), "stop took {:?}", started.elapsed());
    assert_eq!(std::fs::read_to_string(&proof).unwrap(), "shutdown\n");
    let app = h.app("n");
    let exit = app.instances[0].last_exit.clone().unwrap();
    assert_eq!(exit.reason, herder::protocol::ExitReason::Code(0), "{exit:?}");
}

fn pid_changes_from(h: &TestHome, old: u32) -> u32 {
    wait_for("a restart", T, || {
        let i = h.app("w").instances[0].clone();
        (i.status == Status::Online && i.pid.is_some_and(|p| p != old)).then(|| i.pid.unwrap())
    })
}

#[test]
fn a_watched_directory_that_appears_later_or_comes_back_is_watched() {
    let h = TestHome::new();
    let (proj, cfg) = project(&h, "watch = [\"dist\"]");
    h.ok(&["start", cfg.to_str().unwrap()]);
    let (_, first) = online_pid(&h);
    // `dist` does not exist yet: its creation counts, and so do files in it afterwards.
    std::fs::create_dir(proj.join("dist")).unwrap();
    let second = pid_changes_from(&h, first);
    let_time_pass(&h, 3);
    write(&proj.join("dist/app.js"), "1");
    let third = pid_changes_from(&h, second);
    // A rebuild that removes the directory and writes it again (`rm -rf dist && tsc`).
    let_time_pass(&h, 3);
    std::fs::remove_dir_all(proj.join("dist")).unwrap();
    let fourth = pid_changes_from(&h, third);
    let_time_pass(&h, 3);
    std::fs::create_dir(proj.join("dist")).unwrap();
    let fifth = pid_changes_from(&h, fourth);
    let_time_pass(&h, 3);
    write(&proj.join("dist/app.js"), "2");
    pid_changes_from(&h, fifth);
}

#[test]
fn edits_before_a_requested_restart_do_not_restart_it_again() {
    let h = TestHome::new();
    let (proj, cfg) = project(&h, "watch = true\nwatch_delay = \"1500ms\"");
    h.ok(&["start", cfg.to_str().unwrap()]);
    let (_, first) = online_pid(&h);
    // A deploy: files change, then the operator restarts at once.
    write(&proj.join("config.txt"), "new");
    h.ok(&["restart", "w"]);
    let second = pid_changes_from(&h, first);
    // Longer than `watch_delay`, by the app's clock.
    let_time_pass(&h, 50);
    let i = h.app("w").instances[0].clone();
    assert_eq!((i.pid, i.restarts), (Some(second), 1), "the edit before the restart restarted it again");
}

#[test]
fn what_a_crashing_app_writes_does_not_restart_it_past_its_budget() {
    let h = TestHome::new();
    let proj = h.dir.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    // It leaves a crash report in its own directory each time it dies.
    write(&proj.join("app.py"), "open('crash-report.txt', 'a').write('boom\\n')\nraise SystemExit(1)\n");
    let text = format!(
        "[[apps]]\nname = \"w\"\nscript = \"app.py\"\ncwd = \"{}\"\nwatch = true\nmax_restarts = 3\nrestart_delay = \"300ms\"\n",
        proj.display()
    );
    let cfg = h.write("w.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let app = h.wait_status("w", Status::Errored, T);
    assert_eq!(app.instances[0].restarts, 3);
    // Another app's clock: time for any restart the reports could cause.
    h.ok(&["start", fixture("beat.py").to_str().unwrap(), "--name", "clock"]);
    let log = h.home.join("logs/clock-0.out.log");
    wait_for("the clock to tick", T, || {
        (std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0) >= 10).then_some(())
    });
    let app = h.app("w");
    assert_eq!((app.instances[0].status, app.instances[0].restarts), (Status::Errored, 3));
}
