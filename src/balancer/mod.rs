//! The balancer in front of an app's instances (`[apps.balancer]` in `http` or `tcp` mode):
//! the daemon listens on the public address and passes each request (or, in `tcp` mode, each
//! connection) to one instance, each of which listens on a loopback port of its own.
//!
//! The pool's members are the instances of the app's slots, as its coordinator publishes them;
//! whether one can take a request is read from its state at each pick: `online` (ready, after
//! its ready signal and readiness probes) with no readiness probe failing since, with a port,
//! and not taken out for failures
//! (nginx's `max_fails` within `fail_timeout`). A replacement joins when it takes its slot;
//! the instance it replaces gets no new request and its coordinator waits for the requests
//! under way on it ([`Front::drain`]) before stopping it.
//!
//! Parts: [`pick`] (the strategies), [`http`] (the proxy on hyper), [`tcp`] (the layer-4
//! proxy), [`tls`] (HTTPS with certificates re-read on `reload-certs`), [`stats`] (what the
//! metrics endpoint and `show` report).

pub mod access;
pub mod http;
pub mod pick;
pub mod stats;
pub mod tcp;
mod threads;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::logs::file::Rotation;
use crate::protocol::spec::{BalancerMode, BalancerSpec, SocketSpec};
use crate::protocol::{InstanceInfo, Status};
use pick::{Candidate, Picker};
use stats::Stats;

/// One instance in the pool.
#[derive(Clone)]
pub struct Member {
    pub slot: u32,
    pub generation: u32,
    info: watch::Receiver<InstanceInfo>,
    pub state: Arc<MemberState>,
}

/// What the balancer keeps of one instance across changes of the pool.
#[derive(Debug, Default)]
pub struct MemberState {
    /// Requests (and streams) under way on it.
    pub active: AtomicU32,
    /// Failures since `window` began (`max_fails` within `fail_timeout`).
    fails: Mutex<(u32, Option<Instant>)>,
    /// Whether `fails` counts any: a good answer then takes its lock to end the run (and
    /// otherwise leaves it alone, the common case).
    failing: AtomicBool,
    /// Taken out until then (ms since the balancer started), after `max_fails` failures.
    down_until_ms: AtomicU64,
    /// The pid of the process that last answered: failures of a process that has not answered
    /// yet (still starting, or restarted) do not take the instance out.
    answered_pid: AtomicU32,
    /// The pid of the process seen accepting connections on the instance's port (0: none yet;
    /// see [`watch_listening`]). While another instance can take a request, one whose process
    /// has not been seen accepting gets none: it would be refused.
    listening_pid: AtomicU32,
    /// It left the pool: a request that picked it from a pool read just before must not go
    /// there (its drain may have seen nothing under way and stopped it).
    left: AtomicBool,
    /// Told when its process refused a connection: [`watch_listening`] looks again.
    refused: Notify,
    pub stats: stats::MemberStats,
}

/// Watch an instance (for as long as the balancer keeps its state): each time it is online
/// with a new process, look for that process accepting on the instance's port (every 2 ms at
/// first, every 50 ms the longer it takes) and record it once it does.
async fn watch_listening(mut info: watch::Receiver<InstanceInfo>, state: std::sync::Weak<MemberState>) {
    'process: loop {
        let (online, pid, port) = {
            let i = info.borrow_and_update();
            (i.status == Status::Online, i.pid, i.port)
        };
        if let (true, Some(pid), Some(port)) = (online, pid, port) {
            let mut pause = Duration::from_millis(2);
            loop {
                match state.upgrade() {
                    Some(s) if s.listening_pid.load(Ordering::Relaxed) == pid => break,
                    Some(_) => {}
                    None => return,
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    if let Some(s) = state.upgrade() {
                        s.listening_pid.store(pid, Ordering::Relaxed);
                    }
                    break;
                }
                tokio::select! {
                    changed = info.changed() => match changed {
                        Ok(()) => continue 'process,
                        Err(_) => return,
                    },
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
        let Some(s) = state.upgrade() else { return };
        tokio::select! {
            changed = info.changed() => if changed.is_err() {
                return;
            },
            () = s.refused.notified() => {}
        }
    }
}

/// How long something may wait (a body for its next frame, a write for the client to read):
/// counted from the first wait since it last went on.
pub struct Silence {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Silence {
    pub fn new(limit: Duration) -> Silence {
        Silence { limit, timer: None }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// It went on: the next wait is counted afresh.
    pub fn reset(&mut self) {
        self.timer = None;
    }

    /// It waits: `Ready` once it has waited `limit`.
    pub fn poll_over(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let limit = self.limit;
        self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit))).as_mut().poll(cx)
    }
}

/// A member by slot and generation.
type Key = (u32, u32);

/// The pool at one moment: the spec, the members and the picker built for them.
pub struct Pool {
    pub spec: Arc<BalancerSpec>,
    pub members: Vec<Member>,
    picker: Picker,
}

/// One app's balancer: its pool (replaced as a whole when the instances or the spec change)
/// and its figures. The servers (http or tcp) hold it.
pub struct Balancer {
    pub app: String,
    pool: RwLock<Arc<Pool>>,
    /// Every member's state by (slot, generation), including those that left the pool and
    /// still have requests under way.
    states: Mutex<Vec<(Key, Arc<MemberState>)>>,
    /// Woken when a request ends while a [`Front::drain`] waits (`draining` of them).
    pub idle: Notify,
    draining: AtomicUsize,
    /// Woken when a client connection ends, for [`Front::hand_over`].
    pub closed: Notify,
    /// Idle connections kept for the next image of the daemon ([`Phase::HandingOver`]).
    pub handed: Mutex<Vec<(OwnedFd, Vec<u8>)>>,
    /// Accept loops still running: [`Front::hand_over`] waits for them to stop, so that no
    /// connection is accepted once it has counted the connections to hand over.
    accepting: AtomicUsize,
    pub stats: Stats,
    /// The client connections each of the balancer's threads serves ([`threads`]).
    pub threads: Mutex<Vec<Arc<AtomicUsize>>>,
    epoch: Instant,
    pub tls: Option<tls::Certs>,
    /// The access log, when `access_log` is on.
    pub access: Option<access::AccessLog>,
    /// Connects short of the daemon's resources, said at most every [`SAY_AGAIN`].
    short_said: Said,
    /// The most client connections open at once since freed memory was last given back.
    peak: AtomicUsize,
}

/// Client connections open at once from which, once most have closed, the memory they used is
/// given back to the system.
const TRIM_FROM: usize = 512;

/// An accept loop of the balancer, counted from before it starts until it has stopped.
pub struct Accepting(Arc<Balancer>);

impl Accepting {
    pub fn new(balancer: &Arc<Balancer>) -> Accepting {
        balancer.accepting.fetch_add(1, Ordering::AcqRel);
        Accepting(balancer.clone())
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

/// A [`Front::drain`] waiting, counted until it ends (or is given up), for [`Claim`]'s drop to
/// wake it.
struct Draining<'a>(&'a Balancer);

impl<'a> Draining<'a> {
    fn new(balancer: &'a Balancer) -> Draining<'a> {
        balancer.draining.fetch_add(1, Ordering::SeqCst);
        Draining(balancer)
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.0.draining.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request's claim on a member: counted as under way until dropped.
pub struct Claim {
    pub state: Arc<MemberState>,
    balancer: Arc<Balancer>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Both orders are SeqCst, as in `drain`: either it sees this request ended, or this
        // sees it waiting.
        self.state.active.fetch_sub(1, Ordering::SeqCst);
        if self.balancer.draining.load(Ordering::SeqCst) > 0 {
            self.balancer.idle.notify_waiters();
        }
    }
}

/// The member a request goes to.
pub struct Chosen {
    pub index: usize,
    pub slot: u32,
    /// The instance's process when it was chosen.
    pub pid: u32,
    pub addr: SocketAddr,
    pub claim: Claim,
}

impl Balancer {
    fn new(
        app: &str,
        spec: Arc<BalancerSpec>,
        tls: Option<tls::Certs>,
        access: Option<access::AccessLog>,
    ) -> Balancer {
        let picker = Picker::new(&spec.strategy, &[]);
        Balancer {
            app: app.to_string(),
            pool: RwLock::new(Arc::new(Pool { spec, members: Vec::new(), picker })),
            states: Mutex::default(),
            idle: Notify::new(),
            draining: AtomicUsize::new(0),
            closed: Notify::new(),
            handed: Mutex::default(),
            accepting: AtomicUsize::new(0),
            stats: Stats::default(),
            threads: Mutex::default(),
            epoch: Instant::now(),
            tls,
            access,
            short_said: Said::new(),
            peak: AtomicUsize::new(0),
        }
    }

    pub fn pool(&self) -> Arc<Pool> {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A client connection opened.
    pub fn opened(&self) {
        let now = self.stats.connections.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now.max(0) as usize, Ordering::Relaxed);
    }

    /// A client connection closed. Once three quarters of a peak of at least [`TRIM_FROM`] have,
    /// the memory they used goes back to the system: glibc keeps what a thread's arena freed
    /// (5,000 idle keep-alive connections left the daemon at 106 MB after they closed; 10 MB
    /// once given back).
    pub fn closed_one(&self) {
        let now = (self.stats.connections.fetch_sub(1, Ordering::AcqRel) - 1).max(0) as usize;
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= TRIM_FROM
            && now <= peak / 4
            && self.peak.compare_exchange(peak, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            give_back_freed_memory();
        }
    }

    /// A connect to an instance failed for want of the daemon's own resources: said once, then
    /// at most every [`SAY_AGAIN`] with the count since (each request would say it again).
    pub fn short_of_resources(&self, slot: u32, e: &std::io::Error) {
        if let Some(since) = self.short_said.due() {
            tracing::warn!(app = %self.app, slot, error = %e, not_said_since = since, "no connection to an instance: the daemon is short of resources");
        }
    }

    /// Replace the pool: these members (slot, generation, state channel) with this spec.
    fn set_pool(&self, spec: Arc<BalancerSpec>, members: Vec<(u32, u32, watch::Receiver<InstanceInfo>)>) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let members: Vec<Member> = members
            .into_iter()
            .map(|(slot, generation, info)| {
                let state = match states.iter().find(|(k, _)| *k == (slot, generation)) {
                    Some((_, s)) => {
                        s.left.store(false, Ordering::SeqCst);
                        s.clone()
                    }
                    None => {
                        let s = Arc::new(MemberState::default());
                        states.push(((slot, generation), s.clone()));
                        tokio::spawn(watch_listening(info.clone(), Arc::downgrade(&s)));
                        s
                    }
                };
                Member { slot, generation, info, state }
            })
            .collect();
        // Forget those that left and have nothing under way. Marked first, both SeqCst as in
        // `choose`: either a request counted on one is seen here (and the drain waits for it),
        // or that request sees the mark and goes elsewhere.
        states.retain(|(k, s)| {
            if members.iter().any(|m| (m.slot, m.generation) == *k) {
                return true;
            }
            s.left.store(true, Ordering::SeqCst);
            s.active.load(Ordering::SeqCst) > 0
        });
        let candidates: Vec<Candidate> = members.iter().map(|m| candidate(&spec, m, false)).collect();
        let picker = Picker::new(&spec.strategy, &candidates);
        *self.pool.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Pool { spec, members, picker });
    }

    /// The member to take a request, skipping those in `tried`; `None` when no instance can.
    pub fn choose(self: &Arc<Self>, pool: &Pool, key: Option<u64>, tried: &[usize]) -> Option<Chosen> {
        let now = self.now_ms();
        // On the stack for the usual few instances.
        const INLINE: usize = 16;
        let n = pool.members.len();
        let blank = Candidate { slot: 0, weight: 0, backup: false, active: 0, up: false };
        // Each member's port and process, and whether that process has been seen accepting.
        let (mut small, mut small_ports) = ([blank; INLINE], [(0u16, 0u32, false); INLINE]);
        let (mut large, mut large_ports) = (Vec::new(), Vec::new());
        let (candidates, ports) = if n <= INLINE {
            (&mut small[..n], &mut small_ports[..n])
        } else {
            large.resize(n, blank);
            large_ports.resize(n, (0, 0, false));
            (&mut large[..], &mut large_ports[..])
        };
        let mut listening = 0;
        for (i, m) in pool.members.iter().enumerate() {
            let info = m.info.borrow();
            let up = info.status == Status::Online
                && !info.unready
                && info.port.is_some()
                && m.state.down_until_ms.load(Ordering::Relaxed) <= now
                && !tried.contains(&i);
            let pid = info.pid.unwrap_or(0);
            let seen = m.state.listening_pid.load(Ordering::Relaxed) == pid;
            ports[i] = (info.port.unwrap_or(0), pid, seen);
            drop(info);
            candidates[i] = candidate(&pool.spec, m, up);
            listening += usize::from(up && seen);
        }
        // Those seen accepting, when any is: one just (re)started may not listen yet. When
        // none is, any that is online (its process may accept before it is seen to).
        if listening > 0 {
            for (c, (_, _, seen)) in candidates.iter_mut().zip(ports.iter()) {
                c.up &= *seen;
            }
        }
        loop {
            let index = pool.picker.pick(candidates, key)?;
            let m = &pool.members[index];
            m.state.active.fetch_add(1, Ordering::SeqCst);
            let claim = Claim { state: m.state.clone(), balancer: self.clone() };
            if m.state.left.load(Ordering::SeqCst) {
                // This pool is a moment old: that member has left since.
                drop(claim);
                candidates[index].up = false;
                continue;
            }
            return Some(Chosen {
                index,
                slot: m.slot,
                pid: ports[index].1,
                addr: SocketAddr::from(([127, 0, 0, 1], ports[index].0)),
                claim,
            });
        }
    }

    /// The instance's process refused a connection: it no longer listens (it closed its
    /// server). Out, while another can take requests, until it is seen accepting again.
    pub fn refused(&self, chosen: &Chosen) {
        let state = &chosen.claim.state;
        if state.listening_pid.swap(0, Ordering::Relaxed) == chosen.pid {
            state.refused.notify_one();
        }
    }

    /// A connect error, an error before the answer's headers, or a timeout: counted towards
    /// `max_fails`; the member is out for `fail_timeout` once they are reached. The only member
    /// of a pool is never taken out (as nginx ignores `max_fails` for an upstream of one
    /// server): with none left, every request would be refused rather than some.
    pub fn failed(&self, pool: &Pool, chosen: &Chosen) {
        let (spec, state) = (&pool.spec, &chosen.claim.state);
        state.stats.failures.fetch_add(1, Ordering::Relaxed);
        if spec.max_fails == 0
            || pool.members.len() == 1
            || state.answered_pid.load(Ordering::Relaxed) != chosen.pid
        {
            return;
        }
        let now = Instant::now();
        let window = Duration::from_millis(spec.fail_timeout_ms);
        let mut fails = state.fails.lock().unwrap_or_else(|e| e.into_inner());
        match fails.1 {
            Some(since) if now.duration_since(since) < window => fails.0 += 1,
            _ => *fails = (1, Some(now)),
        }
        state.failing.store(true, Ordering::Relaxed);
        if fails.0 >= spec.max_fails {
            *fails = (0, None);
            state.down_until_ms.store(self.now_ms() + spec.fail_timeout_ms, Ordering::Relaxed);
        }
    }

    /// A good answer ends the run of failures.
    pub fn succeeded(&self, chosen: &Chosen) {
        let state = &chosen.claim.state;
        if state.answered_pid.load(Ordering::Relaxed) != chosen.pid {
            state.answered_pid.store(chosen.pid, Ordering::Relaxed);
        }
        if state.failing.load(Ordering::Relaxed) {
            let mut fails = state.fails.lock().unwrap_or_else(|e| e.into_inner());
            *fails = (0, None);
            state.failing.store(false, Ordering::Relaxed);
        }
    }

    /// Requests under way on the instance of this slot and generation.
    pub fn active_on(&self, slot: u32, generation: u32) -> u32 {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states
            .iter()
            .find(|(k, _)| *k == (slot, generation))
            .map_or(0, |(_, s)| s.active.load(Ordering::Acquire))
    }

    /// What `show` and the metrics report.
    pub fn view(&self) -> crate::protocol::BalancerView {
        use crate::protocol::{BalancerView, MemberView};
        let pool = self.pool();
        let spec = &pool.spec;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let latency_counts = self
            .stats
            .latency
            .iter()
            .map(|n| {
                cumulative += load(n);
                cumulative
            })
            .collect();
        let members = pool
            .members
            .iter()
            .map(|m| {
                let info = m.info.borrow();
                let down = self.is_down(&m.state);
                MemberView {
                    slot: m.slot,
                    generation: m.generation,
                    port: info.port,
                    up: info.status == Status::Online
                        && !info.unready
                        && info.port.is_some()
                        && !down
                        && info.pid.is_some_and(|p| m.state.listening_pid.load(Ordering::Relaxed) == p),
                    down,
                    weight: spec.weight(m.slot),
                    backup: spec.backup.contains(&m.slot),
                    active: m.state.active.load(Ordering::Relaxed),
                    responses: std::array::from_fn(|i| load(&m.state.stats.responses[i])),
                    failures: load(&m.state.stats.failures),
                }
            })
            .collect();
        BalancerView {
            listen: spec.listen.address(),
            mode: match spec.mode {
                BalancerMode::Http if spec.tls.is_some() => "http (tls)".into(),
                BalancerMode::Http => "http".into(),
                BalancerMode::Tcp => "tcp".into(),
            },
            strategy: spec.strategy.to_string(),
            connections: self.stats.connections.load(Ordering::Relaxed),
            threads: (self.threads.lock().unwrap_or_else(|e| e.into_inner()).iter())
                .map(|open| i64::try_from(open.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
                .collect(),
            retries: load(&self.stats.retries),
            unavailable: load(&self.stats.unavailable),
            bad_gateway: load(&self.stats.bad_gateway),
            timeouts: load(&self.stats.timeouts),
            latency_le: stats::BUCKETS.to_vec(),
            latency_counts,
            latency_sum_s: load(&self.stats.latency_sum_us) as f64 / 1e6,
            members,
        }
    }

    /// Whether the member is out for failures now.
    pub fn is_down(&self, state: &MemberState) -> bool {
        state.down_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }
}

fn candidate(spec: &BalancerSpec, m: &Member, up: bool) -> Candidate {
    Candidate {
        slot: m.slot,
        weight: spec.weight(m.slot),
        backup: spec.backup.contains(&m.slot),
        active: m.state.active.load(Ordering::Relaxed),
        up,
    }
}

/// A running balancer: its listener (kept for `herder update`) and the server's stop switch.
struct Running {
    balancer: Arc<Balancer>,
    address: SocketSpec,
    mode: BalancerMode,
    listener: OwnedFd,
    phase: watch::Sender<Phase>,
}

/// What the servers of a balancer are to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Stop accepting; finish the requests under way (for up to `drain_timeout`) and close.
    Stopping,
    /// `herder update`: stop accepting; each HTTP/1 connection in clear finishes its request
    /// under way and is then kept open, unread, for the next image of the daemon
    /// ([`Balancer::handed`]); the others finish as for `Stopping`.
    HandingOver,
}

/// What a balancer hands to the next image of the daemon: its public socket and its idle
/// HTTP/1 connections, each with the bytes read from it and not yet served.
pub struct Handed {
    pub address: SocketSpec,
    pub listener: OwnedFd,
    pub connections: Vec<(OwnedFd, Vec<u8>)>,
}

/// The balancer of an app, if it has one, shared by the app's registry entry and its
/// coordinator. The public socket is bound when a spec is staged (so that a port that is
/// taken changes nothing) and served once the coordinator applies the spec.
#[derive(Default)]
pub struct Front {
    running: Mutex<Option<Running>>,
    /// A socket bound for a spec not applied yet.
    staged: Mutex<Option<(SocketSpec, OwnedFd)>>,
    /// Connections the previous image of the daemon handed over, served once the spec is.
    adopted: Mutex<Vec<(OwnedFd, Vec<u8>)>>,
    /// Balancers this one replaced (a new address, mode, certificate or access log) whose
    /// connections are still finishing: their requests under way count in [`Front::drain`].
    retired: Mutex<Vec<std::sync::Weak<Balancer>>>,
}

impl Front {
    pub fn get(&self) -> Option<Arc<Balancer>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|r| r.balancer.clone())
    }

    /// The public listening socket and its address (for `herder update`).
    pub fn listener(&self) -> Option<(SocketSpec, OwnedFd)> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let r = running.as_ref()?;
        Some((r.address.clone(), r.listener.try_clone().ok()?))
    }

    /// Bind the public socket of `spec` unless it is bound already; `Err` in the user's words
    /// (the port is taken, needs root…), and then nothing changed. The certificate and key are
    /// read too, so that a bad one is refused before anything changes.
    pub fn stage(&self, app: &str, spec: Option<&BalancerSpec>) -> Result<(), String> {
        self.bind_for(app, spec, true)
    }

    /// What [`Front::stage`] checks, with nothing kept (the socket is closed at once): for
    /// `herder apply --dry-run`.
    pub fn check(&self, app: &str, spec: Option<&BalancerSpec>) -> Result<(), String> {
        self.bind_for(app, spec, false)
    }

    /// Close the socket staged for a spec that will not be applied (the apply failed).
    pub fn unstage(&self) {
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn bind_for(&self, app: &str, spec: Option<&BalancerSpec>, keep: bool) -> Result<(), String> {
        let Some(spec) = spec else { return Ok(()) };
        if let Some(tls) = &spec.tls {
            tls::Certs::load(app, tls)?;
        }
        let same = |a: &SocketSpec| a.host == spec.listen.host && a.port == spec.listen.port;
        // The socket the balancer serves on now, which a new address replaces.
        let mut own = Vec::new();
        if let Some(r) = self.running.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if same(&r.address) {
                return Ok(());
            }
            own.extend(crate::process::listen::inode(&r.listener));
        }
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, fd)) = staged.as_ref() {
            if same(a) {
                return Ok(());
            }
            own.extend(crate::process::listen::inode(fd));
        }
        let fd = bind(app, &spec.listen, &own)?;
        if keep {
            *staged = Some((spec.listen.clone(), fd));
        }
        Ok(())
    }

    /// Take what the previous image of the daemon handed over (`herder update`): served once
    /// the spec is applied.
    pub fn adopt(&self, handed: Handed) {
        *self.staged.lock().unwrap_or_else(|e| e.into_inner()) = Some((handed.address, handed.listener));
        *self.adopted.lock().unwrap_or_else(|e| e.into_inner()) = handed.connections;
    }

    /// `herder update`: stop accepting, let the connections finish what is under way (for up
    /// to `limit`), and give up the listener and the idle HTTP/1 connections, still open. The
    /// balancer serves nothing afterwards until [`Front::resume`] (the update failed) or the
    /// process image is replaced.
    pub async fn hand_over(&self, limit: Duration) -> Option<Handed> {
        let (balancer, address, listener) = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let r = running.as_ref()?;
            let _ = r.phase.send(Phase::HandingOver);
            (r.balancer.clone(), r.address.clone(), r.listener.try_clone().ok()?)
        };
        // Every accept loop stopped first: a connection accepted after the count below would
        // be closed at the update, its request reset.
        let _ = tokio::time::timeout(limit, async {
            loop {
                let closed = balancer.closed.notified();
                if balancer.accepting.load(Ordering::Acquire) == 0
                    && balancer.stats.connections.load(Ordering::Acquire) <= 0
                {
                    return;
                }
                closed.await;
            }
        })
        .await;
        let connections = std::mem::take(&mut *balancer.handed.lock().unwrap_or_else(|e| e.into_inner()));
        Some(Handed { address, listener, connections })
    }

    /// The update failed: serve again, the handed connections included.
    pub fn resume(&self, handed: Handed) {
        let (app, pool, access) = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = running.take() else { return };
            let access = r.balancer.access.as_ref().map(|a| (a.path.clone(), a.rotation.clone()));
            (r.balancer.app.clone(), r.balancer.pool(), access)
        };
        let members = pool.members.iter().map(|m| (m.slot, m.generation, m.info.clone())).collect();
        self.adopt(handed);
        self.apply(&app, Some(&pool.spec), members, access);
    }

    /// Serve `spec` (starting, moving or changing the balancer), or stop serving (`None`).
    /// Its pool is then `members` (slot, generation, state channel of the instance of each
    /// slot), set before anything is served.
    /// `access`: where its access log goes and how it rotates, when `access_log` is on.
    pub fn apply(
        &self,
        app: &str,
        spec: Option<&BalancerSpec>,
        members: Vec<(u32, u32, watch::Receiver<InstanceInfo>)>,
        access: Option<(PathBuf, Rotation)>,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(spec) = spec else {
            if let Some(r) = running.take() {
                let _ = r.phase.send(Phase::Stopping);
            }
            return;
        };
        if let Some(r) = running.as_ref() {
            let pool = r.balancer.pool();
            if *pool.spec == *spec {
                let same = pool.members.len() == members.len()
                    && pool
                        .members
                        .iter()
                        .zip(&members)
                        .all(|(m, (s, g, _))| (m.slot, m.generation) == (*s, *g));
                if !same {
                    r.balancer.set_pool(pool.spec.clone(), members);
                }
                return;
            }
        }
        let spec = Arc::new(spec.clone());
        if let Some(r) = running.as_ref() {
            let same = r.address.host == spec.listen.host && r.address.port == spec.listen.port;
            let same_tls = r.balancer.tls.as_ref().map(|c| &c.spec) == spec.tls.as_ref();
            let same_log = r.balancer.access.is_some() == access.is_some();
            if same && r.mode == spec.mode && same_tls && same_log {
                r.balancer.set_pool(spec, members);
                return;
            }
        }
        let old = running.take();
        let same_address = |a: &SocketSpec| a.host == spec.listen.host && a.port == spec.listen.port;
        let staged =
            self.staged.lock().unwrap_or_else(|e| e.into_inner()).take().filter(|(a, _)| same_address(a));
        let listener = match (staged, &old) {
            (Some((_, fd)), _) => Ok(fd),
            (None, Some(r)) if same_address(&r.address) => r.listener.try_clone().map_err(|e| e.to_string()),
            (None, old) => {
                let own: Vec<u64> =
                    old.iter().filter_map(|r| crate::process::listen::inode(&r.listener)).collect();
                bind(app, &spec.listen, &own)
            }
        };
        let listener = match listener {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(app, error = %e, "the balancer cannot listen");
                *running = old;
                return;
            }
        };
        let certs = match spec.tls.as_ref().map(|t| tls::Certs::load(app, t)).transpose() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(app, error = %e, "the balancer's certificate");
                *running = old;
                return;
            }
        };
        let access =
            match access.map(|(path, rotation)| access::AccessLog::open(app, path, rotation)).transpose() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(app, error = %e, "the balancer serves without its access log");
                    None
                }
            };
        if let Some(r) = old {
            let _ = r.phase.send(Phase::Stopping);
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.retain(|b| b.strong_count() > 0);
            retired.push(Arc::downgrade(&r.balancer));
        }
        let balancer = Arc::new(Balancer::new(app, spec.clone(), certs, access));
        balancer.set_pool(spec.clone(), members);
        let (phase, watched) = watch::channel(Phase::Serving);
        let served = match listener.try_clone().map(std::net::TcpListener::from) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(app, error = %e, "the balancer's socket");
                return;
            }
        };
        match spec.mode {
            BalancerMode::Http => {
                let adopted = std::mem::take(&mut *self.adopted.lock().unwrap_or_else(|e| e.into_inner()));
                http::serve(balancer.clone(), served, adopted, watched)
            }
            BalancerMode::Tcp => tcp::serve(balancer.clone(), served, watched),
        }
        *running = Some(Running { balancer, address: spec.listen.clone(), mode: spec.mode, listener, phase });
    }

    /// Wait until the instance of this slot and generation, out of the pool, has no request
    /// under way, for up to the spec's `drain_timeout`.
    pub async fn drain(&self, slot: u32, generation: u32) {
        let Some(current) = self.get() else { return };
        let limit = Duration::from_millis(current.pool().spec.drain_timeout_ms);
        // The requests under way through the balancers this one replaced count too.
        let mut balancers: Vec<Arc<Balancer>> = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|b| b.upgrade())
            .collect();
        balancers.push(current);
        let _ = tokio::time::timeout(limit, async {
            for b in &balancers {
                let _waiting = Draining::new(b);
                loop {
                    let idle = b.idle.notified();
                    if b.active_on(slot, generation) == 0 {
                        break;
                    }
                    idle.await;
                }
            }
        })
        .await;
    }

    /// Re-read the certificate and key: `Ok` with what was loaded, or why not (the old ones
    /// stay).
    pub fn reload_certs(&self) -> Result<Option<String>, String> {
        let Some(b) = self.get() else { return Ok(None) };
        match &b.tls {
            Some(certs) => certs.reload(&b.app).map(Some),
            None => Ok(None),
        }
    }
}

/// The next client (nodelay set, an IPv4 client of a dual-stack socket as IPv4), or `None` once
/// the balancer is told to stop serving. A failed accept (out of fds or memory for a moment)
/// is said, and tried again after a pause.
async fn next_client(
    app: &str,
    listener: &tokio::net::TcpListener,
    phase: &mut watch::Receiver<Phase>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    // Out of descriptors, this loop would say it 20 times a second.
    let said = Said::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, canonical(peer)));
                }
                Err(e) => {
                    if let Some(since) = said.due() {
                        tracing::warn!(app, error = %e, not_said_since = since, "the balancer could not accept");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopping(phase) => return None,
        }
    }
}

/// Give the memory malloc holds free back to the system, on a thread of its own (it walks every
/// arena, a few milliseconds after a large peak: not on a balancer thread).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::spawn(|| {
        // SAFETY: malloc_trim(3) takes each arena's lock itself.
        unsafe { libc::malloc_trim(0) };
    });
}

/// How often a failure that repeats (an accept or a connect out of descriptors) is said again.
const SAY_AGAIN: Duration = Duration::from_secs(5);

/// A failure that repeats: said the first time, then at most every [`SAY_AGAIN`] with how many
/// times it was not said since (from any thread).
struct Said {
    epoch: Instant,
    /// When it was last said, ms since `epoch` plus one (0: never).
    at_ms: AtomicU64,
    since: AtomicU64,
}

impl Said {
    fn new() -> Said {
        Said { epoch: Instant::now(), at_ms: AtomicU64::new(0), since: AtomicU64::new(0) }
    }

    /// It happened again: `Some(times not said since)` when it is to be said now.
    fn due(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.at_ms.load(Ordering::Relaxed);
        if last != 0 && now - last < SAY_AGAIN.as_millis() as u64
            || self.at_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            self.since.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.since.swap(0, Ordering::Relaxed))
    }
}

/// Whether a connect failed for want of the daemon's own resources (descriptors, memory, local
/// ports), which says nothing of the instance: not counted as its failure.
pub fn short_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// An IPv4 client of a dual-stack socket as IPv4.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// Wait until the balancer is told to stop serving; what it is to do instead.
async fn stopping(phase: &mut watch::Receiver<Phase>) -> Phase {
    match phase.wait_for(|p| *p != Phase::Serving).await {
        Ok(p) => *p,
        Err(_) => Phase::Stopping,
    }
}

/// Run `work` to its end; once the balancer is told to stop, for at most its `drain_timeout`
/// (read then) more.
async fn finish_within<F: Future>(work: F, b: &Balancer, phase: &mut watch::Receiver<Phase>) {
    tokio::pin!(work);
    tokio::select! {
        _ = work.as_mut() => {}
        _ = stopping(phase) => {
            let limit = Duration::from_millis(b.pool().spec.drain_timeout_ms);
            let _ = tokio::time::timeout(limit, work).await;
        }
    }
}

/// Bind the public socket; `own`: the sockets (by inode) of the balancer it replaces, which
/// hold the port for the same app and so do not make it taken.
fn bind(app: &str, address: &SocketSpec, own: &[u64]) -> Result<OwnedFd, String> {
    use crate::supervisor::sockets;
    if let Some(why) = sockets::taken(app, address, own) {
        return Err(why);
    }
    sockets::bind_one(app, address)
}
