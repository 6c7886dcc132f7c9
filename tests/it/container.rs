//! `herder run`: the foreground mode for containers. Prefixed output on stdout, orphans
//! reaped, SIGTERM/SIGINT stop every app gracefully and set the exit code, `herder list` works
//! from another shell; once as PID 1 of a new PID namespace (`unshare`), once as a plain
//! child.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// The quick start's web app listens on 127.0.0.1:8787: one test at a time runs it.
static QUICKSTART: Mutex<()> = Mutex::new(());

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml")
}

/// A running `herder run`, its output collected as it comes.
struct Run {
    child: Child,
    /// The pid of herder itself (seen from here): the child, or under `unshare` its child.
    herder: u32,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    (text, reader)
}

/// Children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn cmdline_has(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

/// Whether this machine can make a PID namespace. When it cannot, the test fails unless
/// `HERDER_TEST_NO_UNSHARE` says why it may be skipped.
fn unshare_or_reason() -> Result<(), String> {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    match std::env::var("HERDER_TEST_NO_UNSHARE") {
        Ok(reason) if !reason.is_empty() => Err(reason),
        _ => panic!(
            "`unshare --pid --fork --mount-proc` does not work here (it needs root and util-linux), so \
             herder cannot be tested as PID 1.\nSet HERDER_TEST_NO_UNSHARE=<why> to skip this test knowingly."
        ),
    }
}

impl Run {
    fn start(h: &TestHome, args: &[&str], namespaced: bool) -> Run {
        let mut cmd = if namespaced {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", BIN, "run"]);
            c
        } else {
            let mut c = Command::new(BIN);
            c.arg("run");
            c
        };
        cmd.args(args)
            .env("HERDER_HOME", &h.home)
            .current_dir(h.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        let herder = if namespaced {
            let unshare = child.id();
            wait_for("unshare to start herder", T, || children(unshare).first().copied())
        } else {
            child.id()
        };
        Run { child, herder, stdout, stderr, readers: vec![out_reader, err_reader] }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_stdout(&self, what: &str) {
        wait_for(&format!("`{what}` on stdout"), T, || self.stdout().contains(what).then_some(()))
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.herder as i32, sig) };
    }

    /// Wait for the exit; panics with the output after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let Some(status) = poll(timeout, || self.child.try_wait().unwrap()) else {
            let _ = self.child.kill();
            panic!(
                "herder run did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
        };
        // The readers take the last lines (unless something else holds the pipes).
        poll(Duration::from_secs(5), || self.readers.iter().all(|r| r.is_finished()).then_some(()));
        status
    }
}

impl Drop for Run {
    /// After a failed test: stop the apps too (a killed plain `herder run` would leave them
    /// running, the quick start's web server holding its port).
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        unsafe { libc::kill(self.herder as i32, libc::SIGTERM) };
        poll(Duration::from_secs(10), || self.child.try_wait().ok().flatten());
        unsafe { libc::kill(self.herder as i32, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The acceptance scenario: the quick start's apps in the foreground, prefixed output,
/// `herder list` from another shell, orphans of an app reaped, then `sig` stops every app
/// within its `kill_timeout` and herder exits 0.
fn quickstart_in_the_foreground(namespaced: bool, sig: i32) {
    let _one_at_a_time = QUICKSTART.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:8787") {
        panic!(
            "127.0.0.1:8787 is taken ({e}): the quick start's web app needs it; is a quick start running?"
        );
    }
    let h = TestHome::new();
    let mut run = Run::start(&h, &[quickstart().to_str().unwrap()], namespaced);

    run.wait_stdout("worker | worker: job 1 done");
    run.wait_stdout("web    | Serving HTTP on 127.0.0.1 port 8787");
    let out = run.stdout();
    assert!(out.lines().all(|l| l.starts_with("worker | ") || l.starts_with("web    | ")), "{out}");
    assert!(run.stderr().contains("herder | 2 app(s) of"), "{}", run.stderr());

    // Another shell, the same HERDER_HOME.
    let web = h.wait_status("web", Status::Online, T);
    h.wait_status("worker", Status::Online, T);
    assert_eq!(h.list().len(), 2);
    let ping = h.ok(&["ping"]);
    if namespaced {
        assert!(ping.contains("(pid 1)"), "herder is PID 1 of its namespace: {ping}");
    }

    // An app that leaves orphans: they are re-parented to herder, which reaps them.
    let done = h.dir.path().join("orphans.done");
    let release = h.dir.path().join("orphans.release");
    h.ok(&[
        "start",
        fixture("orphans.py").to_str().unwrap(),
        "--name",
        "orphans",
        "--",
        done.to_str().unwrap(),
        "5",
        release.to_str().unwrap(),
    ]);
    wait_for("the orphans to be made", T, || done.exists().then_some(()));
    let orphans = |herder: u32| -> Vec<u32> {
        children(herder).into_iter().filter(|p| cmdline_has(*p, "orphans.py")).collect()
    };
    // The fixture itself and its five orphans are all herder's children now.
    wait_for("the orphans to be herder's", T, || (orphans(run.herder).len() == 6).then_some(()));
    std::fs::write(&release, b"").unwrap();
    wait_for("the orphans to be reaped", T, || {
        let kids = children(run.herder);
        let zombies: Vec<u32> = kids.iter().copied().filter(|p| is_zombie(*p)).collect();
        (zombies.is_empty() && orphans(run.herder).len() == 1).then_some(())
    });
    assert_eq!(h.app("orphans").instances[0].status, Status::Online, "the app itself is untouched");
    assert_eq!(h.app("web").instances[0].pid, web.instances[0].pid, "supervision is not confused");

    let asked = Instant::now();
    run.signal(sig);
    let status = run.wait(T);
    let took = asked.elapsed();
    let (out, err) = (run.stdout(), run.stderr());
    assert_eq!(status.code(), Some(0), "every app stopped cleanly:\nstdout:\n{out}\nstderr:\n{err}");
    // The longest kill_timeout is the worker's (the default 5 s); nothing waited for it to run out.
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(out.contains("worker | worker: stopping"), "the worker stopped gracefully:\n{out}");
    let name = if sig == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
    assert!(err.contains(&format!("herder | {name}: stopping every app")), "{err}");
    assert!(err.contains("herder | exiting with 0"), "{err}");
    assert!(pids_with_arg("8787").is_empty(), "the web app is gone");
    assert!(pids_with_arg(done.to_str().unwrap()).is_empty(), "the orphans app is gone");
    assert!(!h.home.join("herder.sock").exists(), "the daemon is gone");
}

#[test]
fn run_as_pid_1_of_a_pid_namespace() {
    if let Err(reason) = unshare_or_reason() {
        eprintln!("skipped (HERDER_TEST_NO_UNSHARE): {reason}");
        return;
    }
    quickstart_in_the_foreground(true, libc::SIGTERM);
}

#[test]
fn run_as_a_plain_child_stops_on_sigint() {
    quickstart_in_the_foreground(false, libc::SIGINT);
}

#[test]
fn run_exits_1_when_an_app_had_to_be_killed() {
    let h = TestHome::new();
    let pid_file = h.dir.path().join("stubborn.pid");
    let config = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"stubborn\"\nscript = \"{}\"\nargs = [\"{}\"]\nkill_timeout = \"300ms\"\n",
            fixture("stubborn.py").display(),
            pid_file.display()
        ),
    );
    let mut run = Run::start(&h, &[config.to_str().unwrap()], false);
    wait_for("the stubborn app", T, || pid_file.exists().then_some(()));
    h.wait_status("stubborn", Status::Online, T);
    run.signal(libc::SIGTERM);
    let status = run.wait(T);
    let err = run.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("killed after their kill_timeout: stubborn:0"), "{err}");
}

#[test]
fn run_exit_when_empty_ends_with_the_apps() {
    let h = TestHome::new();
    let ok = h.write(
        "jobs.toml",
        "[[apps]]\nname = \"job\"\nscript = \"sh -c 'echo job finished'\"\nautorestart = false\n\n\
         [[apps]]\nname = \"other\"\nscript = \"sh -c 'sleep 0.3; echo other finished'\"\nautorestart = false\n",
    );
    let mut run = Run::start(&h, &[ok.to_str().unwrap(), "--exit-when-empty"], false);
    let status = run.wait(T);
    let (out, err) = (run.stdout(), run.stderr());
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("job    | job finished") && out.contains("other  | other finished"), "{out}");
    assert!(err.contains("no app is left running"), "{err}");

    let failing = h.write(
        "failing.toml",
        "[[apps]]\nname = \"bad\"\nscript = \"sh -c 'echo oops >&2; exit 3'\"\nautorestart = false\n",
    );
    let mut run = Run::start(&h, &[failing.to_str().unwrap(), "--exit-when-empty"], false);
    let status = run.wait(T);
    let err = run.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("bad    | oops"), "stderr lines go to stderr, prefixed: {err}");
    assert!(err.contains("errored: bad:0"), "{err}");
}

#[test]
fn run_refuses_a_home_whose_daemon_runs() {
    let h = TestHome::new();
    h.ok(&["ping"]);
    let pid = h.daemon_pid().unwrap();
    let mut run = Run::start(&h, &[quickstart().to_str().unwrap()], false);
    let status = run.wait(T);
    assert_eq!(status.code(), Some(1));
    assert!(run.stderr().contains(&format!("pid {pid}")), "{}", run.stderr());
    assert!(run.stdout().is_empty());
}
