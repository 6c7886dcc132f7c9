//! Test harness: a temporary `HERDER_HOME` driving the real `herder` binary, and a wait-for
//! helper with a deadline (never a fixed sleep).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use herder::protocol::{AppInfo, Status};

pub const BIN: &str = env!("CARGO_BIN_EXE_herder");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Poll `f` until it returns `Some`, with a deadline; panics naming `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Poll `f` until it returns `Some` or `timeout` passes (`None`), backing off from 2 ms to
/// 100 ms; for clean-ups and callers that report a timeout their own way.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead for our purposes.
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of processes whose command line contains `needle`, leaving out those whose parent's
/// does too: a shell's child between its fork and its exec is the same app, not a second copy.
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    let found = pids_with_arg_all(needle);
    let ppid = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    found.iter().copied().filter(|&p| !ppid(p).is_some_and(|pp| found.contains(&pp))).collect()
}

fn pids_with_arg_all(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != me && pid_alive(p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// A temporary herder home; its daemon is killed on drop.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::Builder::new().prefix("herder-test-").tempdir().unwrap();
        let home = dir.path().join("home");
        TestHome { dir, home }
    }

    /// A unique tag for this test's processes.
    pub fn tag(&self, what: &str) -> String {
        format!("{}-{what}", self.dir.path().file_name().unwrap().to_string_lossy())
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env("HERDER_HOME", &self.home).current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and expect success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "herder {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon.log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.home.join("daemon.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run and expect failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "herder {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn list(&self) -> Vec<AppInfo> {
        serde_json::from_str(&self.ok(&["list", "--json"])).unwrap()
    }

    pub fn app(&self, name: &str) -> AppInfo {
        self.list().into_iter().find(|a| a.spec.name == name).unwrap_or_else(|| panic!("no app `{name}`"))
    }

    /// Wait until every instance of `name` has `status`; returns the app.
    /// Wait until every instance of `name` has `status`; on timeout, the panic says what the
    /// instances were last seen as, and the daemon log's end.
    pub fn wait_status(&self, name: &str, status: Status, timeout: Duration) -> AppInfo {
        let mut seen = None;
        poll(timeout, || {
            let app = self.list().into_iter().find(|a| a.spec.name == name)?;
            if app.instances.iter().all(|i| i.status == status) {
                return Some(app);
            }
            seen = Some(app.instances.iter().map(|i| (i.status, i.reason.clone(), i.restarts)).collect::<Vec<_>>());
            None
        })
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(self.home.join("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out after {timeout:?} waiting for `{name}` to be {status}; last seen (status, reason, restarts): {seen:?}\ndaemon.log:\n{}",
                tail.join("\n")
            )
        })
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.home.join("daemon.pid")).ok()?.trim().parse().ok()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill"]).output();
        if let Some(pid) = self.daemon_pid() {
            // A daemon in a PID namespace (`herder run` as PID 1) records its pid there: never
            // kill the host's pid 1, nor anything that is not a herder.
            let is_herder = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(b"herder")))
                .unwrap_or(false);
            if pid > 1 && is_herder && pid_alive(pid) {
                // SAFETY: kill(2) on the test's own daemon.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// Start `forker` (tests/fixtures/mainpid.py), which forks and names the child with
/// `MAINPID=`, and wait until it said so. Returns the file that lets the parent exit, the
/// parent's pid and the child's.
pub fn start_forker(h: &TestHome) -> (PathBuf, u32, u32) {
    let go = h.dir.path().join("go");
    h.ok(&["start", fixture("mainpid.py").to_str().unwrap(), "--name", "forker", "--", go.to_str().unwrap()]);
    let app = wait_for("the hand-over status", Duration::from_secs(20), || {
        let a = h.app("forker");
        a.instances[0].status_text.as_deref()?.starts_with("handed over to").then_some(a)
    });
    let first = app.instances[0].pid.unwrap();
    let child = app.instances[0].status_text.as_deref().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    (go, first, child)
}

/// Clients streaming events right now, as `ping --json` counts them.
pub fn followers(h: &TestHome) -> Option<u64> {
    let info: serde_json::Value = serde_json::from_str(&h.ok(&["ping", "--json"])).ok()?;
    info["event_followers"].as_u64()
}

/// A `herder events --json` client, killed when dropped.
pub struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `herder events --json` and wait until the daemon counts it; its events arrive on
/// the receiver.
pub fn follow_events(h: &TestHome) -> (Follower, mpsc::Receiver<serde_json::Value>) {
    let mut child = h.cmd(&["events", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let follower = Follower(child);
    wait_for("the follower to subscribe", Duration::from_secs(20), || (followers(h)? >= 1).then_some(()));
    (follower, rx)
}

/// `systemd-analyze`, which the tests of units need: when it is missing they fail unless
/// `HERDER_TEST_NO_SYSTEMD_ANALYZE` says why they may be skipped (`.ci/run` installs it).
pub fn analyzer_or_reason() -> Result<(), String> {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    match std::env::var("HERDER_TEST_NO_SYSTEMD_ANALYZE") {
        Ok(reason) if !reason.is_empty() => Err(reason),
        _ => panic!(
            "`systemd-analyze` is not installed (apt-get install systemd), so the units cannot be verified.\n\
             Set HERDER_TEST_NO_SYSTEMD_ANALYZE=<why> to skip this test knowingly."
        ),
    }
}
