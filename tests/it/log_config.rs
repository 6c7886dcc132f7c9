//! Log options from the config file, end to end with real apps: rotation, timestamps, JSON
//! lines, paths, dropping a stream, the rate limit, merged instances.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// The text of `path` and of its rotated files, oldest first.
fn all_text(path: &Path) -> String {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}.")))
        .collect();
    rotated.sort();
    rotated.push(path.to_path_buf());
    rotated.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
}

/// Wait until `read()` holds `n` lines (the app may exit before its pipe is drained).
fn wait_lines(what: &str, n: usize, read: impl Fn() -> String) -> String {
    wait_for(&format!("{n} lines in {what}"), T, || {
        let text = read();
        (text.lines().count() >= n).then_some(text)
    })
}

fn start_lines(h: &TestHome, name: &str, count: u32, extra: &str) {
    let text = format!(
        "[[apps]]\nname = \"{name}\"\nscript = \"{}\"\nargs = [\"{count}\", \"20\"]\nautorestart = false\n{extra}\n",
        fixture("lines.py").display()
    );
    let path = h.write(&format!("{name}.toml"), &text);
    h.ok(&["start", path.to_str().unwrap()]);
    h.wait_status(name, Status::Stopped, T);
}

#[test]
fn a_fast_writer_under_tiny_rotation_loses_and_splits_nothing() {
    let h = TestHome::new();
    start_lines(&h, "flood", 20_000, "log_max_size = \"4K\"\nlog_retain = 100000");
    let app = h.app("flood");
    let (out, err) = app.log_files[0].clone();
    for (path, stream) in [(&out, "out"), (&err, "err")] {
        let text = wait_lines(stream, 20_000, || all_text(path));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "{stream}: every line once");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(
                *line,
                format!("{stream} {i} {}", "x".repeat(20)),
                "{stream} line {i} whole and in order"
            );
        }
    }
    let rotated = std::fs::read_dir(out.parent().unwrap()).unwrap().count();
    assert!(
        rotated > 50,
        "rotation happened ({rotated} files: {:?})",
        std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>()
    );
}

#[test]
fn timestamps_json_paths_and_dev_null() {
    let h = TestHome::new();
    let custom = h.dir.path().join("custom-out.log");
    start_lines(
        &h,
        "stamped",
        3,
        &format!(
            "time = true\nlog_date_format = \"[at] YYYY\"\nout_file = \"{}\"\nerror_file = \"/dev/null\"",
            custom.display()
        ),
    );
    let text = wait_lines("the custom file", 3, || std::fs::read_to_string(&custom).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("at 2") && l.contains(" out ")), "{text}");
    assert_eq!(h.app("stamped").log_files[0].1, PathBuf::from("/dev/null"));

    start_lines(&h, "jsonl", 2, "log_type = \"json\"");
    let (out, _) = h.app("jsonl").log_files[0].clone();
    let text = wait_lines("the JSON log", 2, || std::fs::read_to_string(&out).unwrap_or_default());
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["app"], "jsonl");
    assert_eq!(first["stream"], "out");
    assert_eq!(first["instance"], 0);
    assert_eq!(first["message"], format!("out 0 {}", "x".repeat(20)));
    assert!(first["timestamp"].as_str().unwrap().len() >= 20);
}

#[test]
fn a_flood_past_the_rate_limit_keeps_the_limit_and_a_marker() {
    let h = TestHome::new();
    start_lines(&h, "limited", 500, "log_rate_limit = \"100/1h\"\nlog_rotate_interval = \"daily\"");
    let (out, _) = h.app("limited").log_files[0].clone();
    let text = wait_lines("the limited log", 101, || std::fs::read_to_string(&out).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 101, "the limit plus one marker");
    assert_eq!(lines[99], format!("out 99 {}", "x".repeat(20)));
    assert_eq!(lines[100], "… suppressed 400 lines (log_rate_limit)");
}

#[test]
fn merged_instances_share_one_file_and_a_combined_file_gets_both_streams() {
    let h = TestHome::new();
    start_lines(&h, "merged", 50, "instances = 2\nmerge_logs = true\nlog_file = true");
    let app = h.app("merged");
    assert_eq!(app.log_files[0], app.log_files[1], "both instances write the same files");
    let out = wait_lines("the merged file", 100, || {
        std::fs::read_to_string(&app.log_files[0].0).unwrap_or_default()
    });
    assert_eq!(out.lines().count(), 100, "50 lines from each instance");
    let combined = h.home.join("logs/merged.log");
    let both =
        wait_lines("the combined file", 200, || std::fs::read_to_string(&combined).unwrap_or_default());
    assert_eq!(both.lines().count(), 200);
    assert!(both.lines().all(|l| l.starts_with("out ") || l.starts_with("err ")), "no line cut in two");
}

/// Unmounts a test's tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_never_stops_the_app_or_the_daemon_and_logging_resumes() {
    let h = TestHome::new();
    let small = h.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .output()
        .unwrap();
    if !mounted.status.success() {
        // Mounting needs root (CI runs as root); say so rather than pass silently.
        panic!("cannot mount a tmpfs for the disk-full test: {}", String::from_utf8_lossy(&mounted.stderr));
    }
    let _mount = Mount(small.clone());
    let log = small.join("app.log");
    let text = format!(
        "[[apps]]\nname = \"ticker\"\nscript = \"{}\"\nout_file = \"{}\"\nlog_max_size = 0\n",
        fixture("ticker.py").display(),
        log.display()
    );
    let cfg = h.write("ticker.toml", &text);
    h.ok(&["start", cfg.to_str().unwrap()]);
    let pid = h.wait_status("ticker", Status::Online, T).instances[0].pid;
    wait_for("the first lines", T, || (std::fs::metadata(&log).ok()?.len() > 0).then_some(()));

    // Fill the file system.
    let filler = small.join("filler");
    let _ = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=4k")
        .output();
    let show =
        || -> serde_json::Value { serde_json::from_str(&h.ok(&["show", "ticker", "--json"])).unwrap() };
    let err = wait_for("show to report the write error", T, || {
        let v = show();
        let errors = v["log_errors"].as_array()?.clone();
        errors.first().map(|e| e["message"].as_str().unwrap_or_default().to_string())
    });
    assert!(err.contains("No space"), "{err}");
    assert!(h.ok(&["show", "ticker"]).contains("No space"), "the human view shows it too");
    let app = h.app("ticker");
    assert_eq!(app.instances[0].status, Status::Online);
    assert_eq!(app.instances[0].pid, pid, "the app kept running");
    assert!(h.ok(&["ping"]).contains("pong"));

    // Free the space: writing resumes and the error clears.
    std::fs::remove_file(&filler).unwrap();
    let before = std::fs::metadata(&log).unwrap().len();
    wait_for("new lines after space was freed", T, || {
        let grown = std::fs::metadata(&log).ok()?.len() > before + 100;
        // An empty list is left out of the JSON.
        let cleared = show()["log_errors"].as_array().is_none_or(Vec::is_empty);
        (grown && cleared).then_some(())
    });
    let tail = std::fs::read_to_string(&log).unwrap();
    assert!(tail.lines().all(|l| l.starts_with("tick ")), "no half line was written");
}

#[test]
fn pm2_log_flags_on_start() {
    let h = TestHome::new();
    let out = h.dir.path().join("flags-out.log");
    h.ok(&[
        "start",
        fixture("lines.py").to_str().unwrap(),
        "--name",
        "flags",
        "--no-autorestart",
        "-o",
        out.to_str().unwrap(),
        "-e",
        "/dev/null",
        "--log-date-format",
        "[ts]YYYY",
        "--",
        "3",
        "0",
    ]);
    let text = wait_lines("the -o file", 3, || std::fs::read_to_string(&out).unwrap_or_default());
    assert!(text.lines().all(|l| l.starts_with("ts2") && l.contains(" out ")), "{text}");
    let err = h.fails(&["start", fixture("lines.py").to_str().unwrap(), "--log-type", "xml"]);
    assert!(err.contains("--log-type") && err.contains("xml"), "{err}");
}
