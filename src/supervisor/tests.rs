//! The actor's lifecycle as a table of (phase, event) → outcome, with a fake spawner (no
//! process is created) on tokio's paused clock: restart delays, backoff, deadlines and the
//! restart budget take no real time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::spawn::{Launch, SpawnError, Spawned};
use super::spawner::{BoxFuture, Spawner, Stop};
use super::{Context, InstanceHandle};
use crate::paths::Paths;
use crate::process::cgroup::Cgroup;
use crate::process::reaper::Reaper;
use crate::protocol::{AppSpec, ExitReason, InstanceInfo, Status};

/// Pids no real process has (over the kernel's `pid_max`).
const FIRST_PID: i32 = 5_000_000;

/// A spawner that starts nothing: each spawn gets a pid whose exit the test decides.
#[derive(Default)]
struct Fake {
    next: AtomicI32,
    exits: Mutex<HashMap<i32, oneshot::Sender<ExitReason>>>,
    /// When each process started, in order.
    spawns: Mutex<Vec<(i32, Instant)>>,
    /// Each stop: the pid and the signal it got.
    stops: Mutex<Vec<(i32, Option<i32>)>>,
    /// The notify socket the last start was given.
    notify: Mutex<Option<String>>,
    /// Spawns fail while set.
    failing: Mutex<Option<String>>,
}

impl Fake {
    /// The process `pid` exits on its own.
    fn exit(&self, pid: i32, reason: ExitReason) {
        let tx = self.exits.lock().unwrap().remove(&pid).expect("a live process");
        tx.send(reason).unwrap();
    }

    fn spawned(&self) -> Vec<i32> {
        self.spawns.lock().unwrap().iter().map(|(p, _)| *p).collect()
    }

    fn last(&self) -> i32 {
        *self.spawned().last().expect("a process was started")
    }
}

impl Spawner for Fake {
    fn spawn(&self, _ctx: &Context, launch: &Launch<'_>) -> Result<Spawned, SpawnError> {
        if let Some(why) = self.failing.lock().unwrap().clone() {
            return Err(SpawnError::new(&launch.spec.program, why));
        }
        let pid = FIRST_PID + self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, exit) = oneshot::channel();
        self.exits.lock().unwrap().insert(pid, tx);
        self.spawns.lock().unwrap().push((pid, Instant::now()));
        *self.notify.lock().unwrap() = launch.notify_socket.map(str::to_string);
        Ok(Spawned {
            pid,
            start_ticks: None,
            started: std::time::Instant::now(),
            exit,
            ipc: None,
            oom: None,
            limit_note: None,
            log_note: None,
            log_files: Vec::new(),
        })
    }

    fn stop<'a>(&'a self, stop: Stop, exited: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        self.stops.lock().unwrap().push((stop.pid, stop.signal));
        if let Some(tx) = self.exits.lock().unwrap().remove(&stop.pid) {
            let _ = tx.send(ExitReason::Signal(stop.signal.unwrap_or(libc::SIGKILL)));
        }
        exited
    }

    fn sweep(&self, _cgroup: Option<&Cgroup>, _marker: &str) -> bool {
        false
    }
}

struct Case {
    handle: InstanceHandle,
    fake: Arc<Fake>,
    _home: tempfile::TempDir,
}

impl Case {
    async fn new(shape: impl FnOnce(&mut AppSpec)) -> Case {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::new(home.path());
        std::fs::create_dir_all(paths.run_dir()).unwrap();
        let fake = Arc::new(Fake::default());
        let ctx = Arc::new(Context {
            paths,
            reaper: Reaper::start().unwrap(),
            cgroups: None,
            limits: Default::default(),
            logs: Arc::default(),
            events: tokio::sync::broadcast::channel(16).0,
            changed: Arc::default(),
            spawner: fake.clone(),
        });
        let mut spec = AppSpec::new("app", "/bin/true", home.path().to_path_buf());
        shape(&mut spec);
        let handle =
            InstanceHandle::spawn(ctx, super::InstanceId::new(0, 0, 0), Arc::new(spec), Arc::default());
        Case { handle, fake, _home: home }
    }

    /// Wait (on the paused clock) until the instance's state satisfies `f`.
    async fn until(&self, what: &str, f: impl Fn(&InstanceInfo) -> bool) -> InstanceInfo {
        let mut rx = self.handle.watch();
        let wait = async {
            loop {
                let info = rx.borrow_and_update().clone();
                if f(&info) {
                    return info;
                }
                rx.changed().await.expect("the actor runs");
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), wait)
            .await
            .unwrap_or_else(|_| panic!("never {what}: {:?}", self.handle.info()))
    }

    async fn status(&self, status: Status) -> InstanceInfo {
        self.until(status.as_str(), |i| i.status == status).await
    }

    async fn running(&self) -> InstanceInfo {
        self.until("running", |i| i.status == Status::Online && i.pid.is_some()).await
    }
}

#[tokio::test(start_paused = true)]
async fn idle_then_start_runs_the_process_and_it_is_online() {
    let c = Case::new(|_| {}).await;
    assert_eq!(c.handle.info().status, Status::Stopped);
    c.handle.start().await;
    let info = c.running().await;
    assert_eq!(info.pid, Some(c.fake.last() as u32));
    assert_eq!(info.restarts, 0);
    // A second start of a running instance changes nothing.
    c.handle.start().await;
    assert_eq!(c.fake.spawned().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn running_then_exit_waits_the_restart_delay_then_starts_again() {
    let c = Case::new(|s| s.restart_delay_ms = 2_000).await;
    c.handle.start().await;
    c.running().await;
    let first = c.fake.last();
    c.fake.exit(first, ExitReason::Code(1));
    let waiting = c.status(Status::WaitingRestart).await;
    assert_eq!(waiting.last_exit.unwrap().reason, ExitReason::Code(1));
    let exited_at = Instant::now();
    let info = c.until("restarted", |i| i.status == Status::Online && i.restarts == 1).await;
    let spawns = c.fake.spawns.lock().unwrap().clone();
    assert_eq!(spawns.len(), 2);
    assert_eq!(spawns[1].1 - exited_at, Duration::from_millis(2_000), "after exactly the delay");
    assert_eq!(info.pid, Some(spawns[1].0 as u32));
}

#[tokio::test(start_paused = true)]
async fn unstable_runs_past_max_restarts_make_it_errored_and_restart_brings_it_back() {
    let c = Case::new(|s| {
        s.max_restarts = 2;
        s.min_uptime_ms = 1_000;
    })
    .await;
    c.handle.start().await;
    for n in 1..=3 {
        c.until("a new run", |i| i.pid.is_some() && i.status == Status::Online).await;
        assert_eq!(c.fake.spawned().len(), n);
        c.fake.exit(c.fake.last(), ExitReason::Code(3));
        if n < 3 {
            c.until("the next run", |i| i.restarts == n as u32).await;
        }
    }
    let info = c.status(Status::Errored).await;
    assert!(info.reason.as_deref().unwrap_or("").contains("max_restarts"), "{:?}", info.reason);
    assert_eq!(c.fake.spawned().len(), 3, "no start after `errored`");
    c.handle.restart(None).await;
    let info = c.running().await;
    assert_eq!(info.unstable_restarts, 0, "a requested restart gives a fresh budget");
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_min_uptime_is_stable() {
    let c = Case::new(|s| {
        s.max_restarts = 1;
        s.min_uptime_ms = 1_000;
    })
    .await;
    c.handle.start().await;
    for n in 1..=4 {
        c.until("a run", |i| i.pid.is_some()).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        c.fake.exit(c.fake.last(), ExitReason::Code(1));
        c.until("the next run", |i| i.restarts == n).await;
    }
    assert_eq!(c.handle.info().unstable_restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_grows_by_half_each_time() {
    let c = Case::new(|s| {
        s.exp_backoff_restart_delay_ms = Some(100);
        s.max_restarts = 10;
    })
    .await;
    c.handle.start().await;
    let mut gaps = Vec::new();
    for n in 1..=3u32 {
        c.until("a run", |i| i.pid.is_some() && i.restarts == n - 1).await;
        c.fake.exit(c.fake.last(), ExitReason::Code(1));
        let exited = Instant::now();
        c.until("the next run", |i| i.restarts == n && i.pid.is_some()).await;
        gaps.push((c.fake.spawns.lock().unwrap().last().unwrap().1 - exited).as_millis());
    }
    assert_eq!(gaps, [100, 150, 225]);
}

#[tokio::test(start_paused = true)]
async fn exits_that_stop_the_app_instead_of_restarting_it() {
    // (autorestart, stop_exit_codes, exit) → status
    let table: &[(bool, &[i32], ExitReason, Status)] = &[
        (false, &[], ExitReason::Code(0), Status::Stopped),
        (false, &[], ExitReason::Code(1), Status::Errored),
        (true, &[0, 2], ExitReason::Code(2), Status::Stopped),
        (true, &[0, 2], ExitReason::Code(0), Status::Stopped),
    ];
    for &(autorestart, codes, exit, want) in table {
        let c = Case::new(|s| {
            s.autorestart = autorestart;
            s.stop_exit_codes = codes.to_vec();
        })
        .await;
        c.handle.start().await;
        c.running().await;
        c.fake.exit(c.fake.last(), exit);
        let info = c.status(want).await;
        assert_eq!(info.pid, None, "{autorestart} {codes:?} {exit}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(c.fake.spawned().len(), 1, "not restarted: {autorestart} {codes:?} {exit}");
    }
}

#[tokio::test(start_paused = true)]
async fn stop_sends_the_kill_signal_and_the_instance_ends_stopped() {
    let c = Case::new(|s| s.kill_signal = "SIGINT".into()).await;
    c.handle.start().await;
    c.running().await;
    let pid = c.fake.last();
    c.handle.stop().await;
    let info = c.handle.info();
    assert_eq!(info.status, Status::Stopped);
    assert_eq!(info.pid, None);
    assert_eq!(info.last_exit.unwrap().reason, ExitReason::Signal(libc::SIGINT));
    assert_eq!(*c.fake.stops.lock().unwrap(), [(pid, Some(libc::SIGINT))]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(c.fake.spawned().len(), 1, "a stopped app is not restarted");
}

#[tokio::test(start_paused = true)]
async fn commands_during_the_restart_delay() {
    let c = Case::new(|s| s.restart_delay_ms = 10_000).await;
    c.handle.start().await;
    c.running().await;
    c.fake.exit(c.fake.last(), ExitReason::Code(1));
    c.status(Status::WaitingRestart).await;
    // A signal has nothing to reach; the delay goes on.
    assert!(c.handle.signal(libc::SIGUSR1).await.unwrap_err().contains("waiting to restart"));
    c.handle.reset().await;
    assert_eq!(c.handle.info().status, Status::WaitingRestart);
    // Stop ends the wait: nothing starts when the delay would have ended.
    c.handle.stop().await;
    assert_eq!(c.handle.info().status, Status::Stopped);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(c.fake.spawned().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_stops_the_process_and_starts_a_new_one() {
    let c = Case::new(|_| {}).await;
    c.handle.start().await;
    c.running().await;
    let old = c.fake.last();
    c.handle.restart(None).await;
    let info = c.running().await;
    assert_ne!(info.pid, Some(old as u32));
    assert_eq!(info.restarts, 1);
    assert_eq!(c.fake.stops.lock().unwrap()[0], (old, Some(libc::SIGTERM)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_spawn_is_errored_with_the_reason() {
    let c = Case::new(|_| {}).await;
    *c.fake.failing.lock().unwrap() = Some("no such file or command".into());
    c.handle.start().await;
    let info = c.status(Status::Errored).await;
    assert!(info.reason.unwrap().contains("no such file or command"));
}

#[tokio::test(start_paused = true)]
async fn wait_ready_without_a_ready_signal_fails_the_start_at_the_deadline() {
    let c = Case::new(|s| {
        s.wait_ready = true;
        s.listen_timeout_ms = 3_000;
        s.restart_delay_ms = 60_000;
    })
    .await;
    c.handle.start().await;
    let launching = c.until("launching", |i| i.status == Status::Launching && i.pid.is_some()).await;
    let started = Instant::now();
    let info = c.status(Status::WaitingRestart).await;
    assert_eq!(Instant::now() - started, Duration::from_millis(3_000));
    assert!(info.reason.unwrap().contains("no ready signal within `listen_timeout`"));
    assert_eq!(c.fake.stops.lock().unwrap()[0].0, launching.pid.unwrap() as i32);
}

#[tokio::test(start_paused = true)]
async fn a_ready_notice_puts_a_launching_instance_online() {
    let c = Case::new(|s| {
        s.wait_ready = true;
        s.listen_timeout_ms = 3_000;
    })
    .await;
    c.handle.start().await;
    c.until("launching", |i| i.status == Status::Launching).await;
    let address = c.fake.notify.lock().unwrap().clone().expect("a notify socket");
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sock.send_to(b"READY=1", &address).unwrap();
    c.status(Status::Online).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(c.handle.info().status, Status::Online, "the deadline is gone");
    assert!(c.fake.stops.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_missed_watchdog_restarts_the_instance() {
    let c = Case::new(|s| s.watchdog_ms = Some(1_000)).await;
    c.handle.start().await;
    c.running().await;
    let address = c.fake.notify.lock().unwrap().clone().expect("a notify socket");
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    // Pings in time keep it running.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        sock.send_to(b"WATCHDOG=1", &address).unwrap();
    }
    tokio::task::yield_now().await;
    assert!(c.fake.stops.lock().unwrap().is_empty());
    let silent = Instant::now();
    c.until("restarted", |i| i.restarts == 1 && i.pid.is_some()).await;
    assert_eq!(Instant::now() - silent, Duration::from_millis(1_000), "one `watchdog` after the last ping");
    assert_eq!(c.fake.stops.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn over_max_memory_restart_restarts_gracefully_and_says_why() {
    let c = Case::new(|s| s.max_memory_restart = Some(100)).await;
    c.handle.start().await;
    c.running().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = c.fake.last();
    c.handle.memory_restart(pid, 500);
    let info = c.until("restarted", |i| i.restarts == 1 && i.pid.is_some()).await;
    assert_eq!(info.last_exit.unwrap().memory_restart, Some(100));
    assert_eq!(c.fake.stops.lock().unwrap()[0], (pid, Some(libc::SIGTERM)));
    // A sample of a process that is already gone does nothing.
    c.handle.memory_restart(pid, 500);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.fake.spawned().len(), 2);
}
