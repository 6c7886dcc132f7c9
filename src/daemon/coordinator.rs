//! One owner per app: a task (an actor) that holds the app's spec and its instances, one per
//! slot, and carries out every change to them one at a time: start, stop, restart, a new spec
//! or count, signals, delete, and the replacement of an instance by the next generation of its
//! slot (the step of a rolling reload). Two requests on one app never interleave across their
//! awaits; requests on different apps run side by side.
//!
//! Readers (`list`, `show`, metrics, `state.json`) read the registry's view of the app, which
//! the coordinator writes after each change; they never wait on it. During a replacement the
//! view holds both processes of the slot (the new one among `others` until it takes the slot,
//! then the old one there until it has stopped), so that a daemon that dies half-way leaves
//! both in `state.json` and the next one ends both.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;

use super::Daemon;
use crate::protocol::{AppSpec, InstanceInfo, Status};
use crate::supervisor::sockets::{Listener, Sockets};
use crate::supervisor::{InstanceHandle, InstanceId};

/// A cloneable handle to an app's coordinator.
#[derive(Clone)]
pub struct Coordinator {
    inbox: Arc<Inbox>,
}

/// The requests waiting for the coordinator. A queue that allocates only when requests wait,
/// rather than a channel, which allocates a block of slots up front: an idle app costs a few
/// hundred bytes.
#[derive(Default)]
struct Inbox {
    ops: std::sync::Mutex<VecDeque<Op>>,
    ready: Notify,
}

impl Inbox {
    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push_back(op);
        self.ready.notify_one();
    }

    async fn next(&self) -> Op {
        loop {
            if let Some(op) = self.ops.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                return op;
            }
            self.ready.notified().await;
        }
    }
}

/// Which slots a request acts on: `None` is every slot.
pub type Slots = Option<Vec<usize>>;

enum Op {
    /// Start the instances that do not run, restart those that do; says whether any ran.
    Start(Slots, oneshot::Sender<bool>),
    Stop(Slots, oneshot::Sender<()>),
    /// Restart the instances, every one with this spec from now on when given.
    Restart(Option<Arc<AppSpec>>, Slots, oneshot::Sender<()>),
    /// Take this spec, its instance count and these sockets (bound for it by the caller), and
    /// (re)start every instance with it; says whether any ran.
    Apply(Arc<AppSpec>, Vec<Listener>, oneshot::Sender<bool>),
    /// Send a signal to each instance's main process: how many got it, and why the others did
    /// not.
    Signal(i32, Slots, oneshot::Sender<(usize, Vec<String>)>),
    Reset(Slots, oneshot::Sender<()>),
    /// Replace each instance in turn by the next generation of its slot, once that one is
    /// ready; `Err` names the instance that was not, and leaves the rest as they were.
    Replace(Option<(Arc<AppSpec>, Vec<Listener>)>, Slots, oneshot::Sender<Result<(), String>>),
    /// Take this spec, which differs only in the balancer's own settings: the balancer serves
    /// with them, the instances run on untouched.
    Retune(Arc<AppSpec>, oneshot::Sender<()>),
    /// Change the number of instances, the others untouched: new ones start, the last ones
    /// stop. Answers the count before and after.
    Scale(Scale, oneshot::Sender<(u32, u32)>),
    /// Stop every instance and end.
    Delete(oneshot::Sender<()>),
}

/// `herder scale`: a count, or a change of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    To(u32),
    By(i64),
}

impl Coordinator {
    /// Start the coordinator of app `id`, owning `slots` (instance `i` at index `i`).
    pub fn spawn(
        d: &Arc<Daemon>,
        id: u32,
        spec: Arc<AppSpec>,
        slots: Vec<InstanceHandle>,
        sockets: Arc<Sockets>,
        ids: Vec<u32>,
    ) -> Coordinator {
        let inbox = Arc::new(Inbox::default());
        let next_generation = slots.iter().map(|h| h.info().generation + 1).max().unwrap_or(0);
        let owner = Owner {
            daemon: Arc::downgrade(d),
            id,
            spec,
            slots,
            ids,
            others: Vec::new(),
            next_generation,
            sockets,
        };
        tokio::spawn(owner.run(inbox.clone()));
        Coordinator { inbox }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Op) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.inbox.push(make(tx));
        rx.await.ok()
    }

    pub async fn start(&self, slots: Slots) -> bool {
        self.ask(|r| Op::Start(slots, r)).await.unwrap_or(false)
    }

    pub async fn stop(&self, slots: Slots) {
        self.ask(|r| Op::Stop(slots, r)).await;
    }

    pub async fn restart(&self, spec: Option<Arc<AppSpec>>, slots: Slots) {
        self.ask(|r| Op::Restart(spec, slots, r)).await;
    }

    pub async fn apply(&self, spec: Arc<AppSpec>, sockets: Vec<Listener>) -> bool {
        self.ask(|r| Op::Apply(spec, sockets, r)).await.unwrap_or(false)
    }

    pub async fn signal(&self, sig: i32, slots: Slots) -> (usize, Vec<String>) {
        self.ask(|r| Op::Signal(sig, slots, r)).await.unwrap_or_default()
    }

    pub async fn reset(&self, slots: Slots) {
        self.ask(|r| Op::Reset(slots, r)).await;
    }

    /// Replace the instances in turn, with this spec and these sockets from now on when given.
    pub async fn replace(
        &self,
        spec: Option<(Arc<AppSpec>, Vec<Listener>)>,
        slots: Slots,
    ) -> Result<(), String> {
        self.ask(|r| Op::Replace(spec, slots, r)).await.unwrap_or_else(|| Err("the app is gone".into()))
    }

    /// A spec that differs only in the balancer's own settings (see `Op::Retune`).
    pub async fn retune(&self, spec: Arc<AppSpec>) {
        self.ask(|r| Op::Retune(spec, r)).await;
    }

    /// The count before and after.
    pub async fn scale(&self, scale: Scale) -> Option<(u32, u32)> {
        self.ask(|r| Op::Scale(scale, r)).await
    }

    pub async fn delete(&self) {
        self.ask(Op::Delete).await;
    }
}

/// The coordinator's own state.
struct Owner {
    daemon: Weak<Daemon>,
    id: u32,
    spec: Arc<AppSpec>,
    /// The instance of each slot.
    slots: Vec<InstanceHandle>,
    /// The id of each slot's instance (PM2's `pm_id`).
    ids: Vec<u32>,
    /// Instances in no slot that still run: a replacement coming up, or the one it replaced
    /// going down.
    others: Vec<InstanceHandle>,
    /// The generation of the next replacement of any slot.
    next_generation: u32,
    /// The app's listening sockets, shared with its instances.
    sockets: Arc<Sockets>,
}

/// Run `f` on each of `handles` at once and wait for all of them.
async fn each<F, Fut>(handles: &[InstanceHandle], f: F)
where
    F: Fn(InstanceHandle) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = JoinSet::new();
    for h in handles {
        set.spawn(f(h.clone()));
    }
    while set.join_next().await.is_some() {}
}

fn runs(h: &InstanceHandle) -> bool {
    h.info().status.is_running()
}

/// See [`Owner::steer`]; crash recovery steers the same way once it started the instances.
pub(crate) fn steer_running(sockets: &Sockets, app: &str, slots: &[InstanceHandle], leaving: &[usize]) {
    let staying = || (0..slots.len()).filter(|i| !leaving.contains(i));
    let mut live: Vec<u32> = staying()
        .filter(|i| {
            let status = slots[*i].info().status;
            status.is_running() || status == Status::WaitingRestart
        })
        .map(|i| i as u32)
        .collect();
    if live.is_empty() {
        live = staying().map(|i| i as u32).collect();
    }
    if live.is_empty() {
        sockets.steer(app, slots.len());
    } else {
        sockets.steer_to(app, &live);
    }
}

impl Owner {
    /// Carry out requests until the app is deleted.
    async fn run(mut self, inbox: Arc<Inbox>) {
        loop {
            let op = inbox.next().await;
            // Boxed: the idle task then holds a pointer, not the state of the largest request
            // (a few KB per app, for as long as the app exists).
            if !Box::pin(self.handle(op)).await {
                return;
            }
        }
    }

    /// Carry out one request; false once the app is deleted.
    async fn handle(&mut self, op: Op) -> bool {
        {
            match op {
                Op::Start(slots, reply) => {
                    let picked = self.pick(&slots);
                    let ran = picked.iter().any(runs);
                    each(&picked, |h| async move {
                        if runs(&h) {
                            h.restart(None).await
                        } else {
                            h.start().await
                        }
                    })
                    .await;
                    self.steer(&[]);
                    let _ = reply.send(ran);
                }
                Op::Stop(slots, reply) => {
                    let picked = self.pick(&slots);
                    // No new connection for a slot whose instance stops: nothing would take it.
                    let leaving: Vec<usize> = picked.iter().map(|h| h.info().index as usize).collect();
                    self.steer(&leaving);
                    each(&picked, |h| async move { h.stop().await }).await;
                    let _ = reply.send(());
                }
                Op::Restart(spec, slots, reply) => {
                    if let Some(spec) = spec {
                        self.spec = spec;
                        self.publish();
                    }
                    let spec = self.spec.clone();
                    each(&self.pick(&slots), move |h| {
                        let spec = spec.clone();
                        async move { h.restart(Some(spec)).await }
                    })
                    .await;
                    self.steer(&[]);
                    let _ = reply.send(());
                }
                Op::Retune(spec, reply) => {
                    self.spec = spec;
                    self.publish();
                    let _ = reply.send(());
                }
                Op::Apply(spec, sockets, reply) => {
                    self.sockets.set(sockets);
                    self.sockets.steer(&spec.name, spec.instances as usize);
                    let ran = self.apply(spec).await;
                    self.sockets.shrink(self.slots.len());
                    self.steer(&[]);
                    let _ = reply.send(ran);
                }
                Op::Signal(sig, slots, reply) => {
                    let mut delivered = 0;
                    let mut failures = Vec::new();
                    for h in &self.pick(&slots) {
                        match h.signal(sig).await {
                            Ok(()) => delivered += 1,
                            Err(e) => failures.push(format!(
                                "`{}` instance {}: {e}",
                                self.spec.name,
                                h.info().index
                            )),
                        }
                    }
                    let _ = reply.send((delivered, failures));
                }
                Op::Reset(slots, reply) => {
                    each(&self.pick(&slots), |h| async move { h.reset().await }).await;
                    let _ = reply.send(());
                }
                Op::Replace(spec, slots, reply) => {
                    if let Some((mut spec, sockets)) = spec {
                        // A reload replaces the instances there: the count stays the one that
                        // runs (a config file's count comes by `scale` or `apply`), or the
                        // spec would disagree with the slots, and the next daemon after a
                        // crash would start the spec's count.
                        if spec.instances as usize != self.slots.len() {
                            Arc::make_mut(&mut spec).instances = self.slots.len() as u32;
                        }
                        self.spec = spec;
                        self.sockets.set(sockets);
                        self.sockets.steer(&self.spec.name, self.slots.len());
                        self.publish();
                    }
                    let result = self.replace_all(&slots).await;
                    self.steer(&[]);
                    let _ = reply.send(result);
                }
                Op::Scale(scale, reply) => {
                    let before = self.slots.len() as u32;
                    let after = match scale {
                        Scale::To(n) => n,
                        Scale::By(d) => (i64::from(before) + d).clamp(1, i64::from(u32::MAX)) as u32,
                    }
                    .max(1);
                    self.scale(after as usize).await;
                    let _ = reply.send((before, after));
                }
                Op::Delete(reply) => {
                    let all: Vec<InstanceHandle> = self.slots.iter().chain(&self.others).cloned().collect();
                    each(&all, |h| async move { h.shutdown().await }).await;
                    // The port is free once nothing of the app runs.
                    self.sockets.set(Vec::new());
                    let _ = reply.send(());
                    return false;
                }
            }
        }
        true
    }

    /// Write the app's view into the registry and have `state.json` written.
    fn publish(&self) {
        let Some(d) = self.daemon.upgrade() else { return };
        {
            let mut reg = d.registry();
            if let Some(app) = reg.apps.get_mut(&self.id) {
                if !Arc::ptr_eq(app.spec(), &self.spec) {
                    app.set_spec(self.spec.clone());
                }
                app.instances = self.slots.clone();
                app.others = self.others.clone();
                app.ids = self.ids.clone();
                app.sync_front(&d.ctx.paths.logs_dir());
            }
        }
        d.ctx.changed.notify_one();
    }

    /// Wait until the balancer (if the app has one) has no request under way on `h`, now out
    /// of its pool, for up to its `drain_timeout`.
    async fn drain(&self, h: &InstanceHandle) {
        let Some(d) = self.daemon.upgrade() else { return };
        let front = d.registry().apps.get(&self.id).map(|a| a.front.clone());
        if let Some(front) = front {
            let info = h.info();
            front.drain(info.index, info.generation).await;
        }
    }

    fn new_instance(&self, index: u32, generation: u32) -> Option<InstanceHandle> {
        let d = self.daemon.upgrade()?;
        let id = InstanceId::new(self.id, index, generation);
        Some(InstanceHandle::spawn(d.ctx.clone(), id, self.spec.clone(), self.sockets.clone()))
    }

    /// A new spec, and with it maybe a new count: instances past it stop (the highest index
    /// first), the others and the new ones (re)start with it. Says whether any ran.
    async fn apply(&mut self, spec: Arc<AppSpec>) -> bool {
        let ran = self.slots.iter().any(runs);
        self.spec = spec;
        let count = self.spec.instances as usize;
        let mut gone: Vec<InstanceHandle> = self.slots.drain(count.min(self.slots.len())..).collect();
        gone.reverse();
        self.grow(count);
        self.others.extend(gone.iter().cloned());
        self.publish();
        let spec = self.spec.clone();
        let mut set = JoinSet::new();
        for h in gone {
            set.spawn(async move { h.shutdown().await });
        }
        for h in self.slots.clone() {
            let spec = spec.clone();
            set.spawn(async move { h.restart(Some(spec)).await });
        }
        while set.join_next().await.is_some() {}
        self.others.retain(runs);
        self.publish();
        ran
    }

    /// Add slots (each with a new instance and a new id) up to `count`.
    fn grow(&mut self, count: usize) {
        self.ids.truncate(self.slots.len());
        let Some(d) = self.daemon.upgrade() else { return };
        for index in self.slots.len()..count {
            if let Some(h) = self.new_instance(index as u32, 0) {
                self.slots.push(h);
                let id = if index == 0 { self.id } else { d.registry().next_id() };
                self.ids.push(id);
            }
        }
    }

    /// The instances of `slots` (every one for `None`).
    fn pick(&self, slots: &Slots) -> Vec<InstanceHandle> {
        match slots {
            None => self.slots.clone(),
            Some(s) => s.iter().filter_map(|i| self.slots.get(*i).cloned()).collect(),
        }
    }

    /// Replace the instances of `slots` in turn (see [`Owner::replace`]).
    async fn replace_all(&mut self, slots: &Slots) -> Result<(), String> {
        let picked: Vec<usize> = match slots {
            None => (0..self.slots.len()).collect(),
            Some(s) => s.iter().copied().filter(|i| *i < self.slots.len()).collect(),
        };
        for index in picked {
            self.replace(index).await?;
        }
        Ok(())
    }

    /// `count` instances, those there untouched: new ones start (each ready before the next
    /// starts, so that a cluster's new instances join one by one), the last ones stop.
    async fn scale(&mut self, count: usize) {
        let start = self.slots.len();
        let name = self.spec.name.clone();
        if count > start {
            // The new slots' sockets get connections once their instances are ready.
            if let Err(e) = self.sockets.grow(&name, count) {
                tracing::error!(app = %name, error = %e, "the new instances get no sockets of their own");
            }
            self.grow(count);
            let mut spec = (*self.spec).clone();
            spec.instances = count as u32;
            self.spec = Arc::new(spec);
            self.publish();
            for h in &self.slots[start..] {
                h.start().await;
                let _ = ready(h, &self.spec).await;
            }
            self.steer(&[]);
        } else if count < start {
            // No new connection for the slots going away; what waits in their queues is
            // accepted by their instances before they stop.
            self.steer(&(count..start).collect::<Vec<usize>>());
            let drained = |s: &Sockets| (count..start).all(|slot| s.queued(slot) == 0);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let sockets = self.sockets.clone();
            crate::wait::until_async(
                Duration::from_secs(2),
                Duration::from_millis(2),
                Duration::from_millis(50),
                || drained(&sockets).then_some(()),
            )
            .await;
            let mut gone: Vec<InstanceHandle> = self.slots.drain(count..).collect();
            gone.reverse();
            self.ids.truncate(count);
            let mut spec = (*self.spec).clone();
            spec.instances = count as u32;
            self.spec = Arc::new(spec);
            self.others.extend(gone.iter().cloned());
            self.publish();
            for h in gone {
                self.drain(&h).await;
                h.shutdown().await;
            }
            self.others.retain(runs);
            self.sockets.shrink(count);
        }
        self.publish();
    }

    /// New connections go to the slots whose instances run or are coming back (not those
    /// stopped, errored, or in `leaving`): a socket that no instance accepts on would hold
    /// them forever. With none, to every slot, where they wait for an instance to start.
    fn steer(&self, leaving: &[usize]) {
        steer_running(&self.sockets, &self.spec.name, &self.slots, leaving);
    }

    /// Tell `herder events` (and hooks) about a replacement of `h`'s slot.
    fn event(&self, h: &InstanceHandle, detail: String) {
        let Some(d) = self.daemon.upgrade() else { return };
        let info = h.info();
        let _ = d.ctx.events.send(crate::protocol::Event {
            at_ms: crate::protocol::now_ms(),
            kind: crate::protocol::EventKind::Reload,
            app: self.spec.name.clone(),
            instance: info.index,
            pid: info.pid,
            exit: None,
            detail: Some(detail),
        });
    }

    /// Start the next generation of slot `index`, wait until it is ready, give it the slot,
    /// then stop the one it replaces. A replacement that is not ready in time (or exits) is
    /// stopped, and the old instance keeps the slot.
    async fn replace(&mut self, index: usize) -> Result<(), String> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(new) = self.new_instance(index as u32, generation) else {
            return Err("the daemon is stopping".into());
        };
        self.others.push(new.clone());
        self.publish();
        new.start().await;
        let ready = ready(&new, &self.spec).await;
        if let Err(why) = ready {
            self.event(&new, format!("the replacement of instance {index} {why}"));
            new.shutdown().await;
            self.others.retain(|h| !h.same(&new));
            self.publish();
            return Err(format!(
                "`{}` instance {index}: its replacement {why}; the old one keeps serving",
                self.spec.name
            ));
        }
        let old = std::mem::replace(&mut self.slots[index], new.clone());
        let old_pid = old.info().pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        self.event(&new, format!("pid {old_pid} replaced by generation {generation}"));
        self.others.retain(|h| !h.same(&new));
        self.others.push(old.clone());
        self.publish();
        self.drain(&old).await;
        old.shutdown().await;
        self.others.retain(|h| !h.same(&old));
        self.publish();
        Ok(())
    }
}

/// Wait until a starting instance is ready: `online` (after its ready signal and readiness
/// probes, when it has them) within `listen_timeout`, and, when nothing tells its readiness,
/// still up `min_uptime` later.
async fn ready(h: &InstanceHandle, spec: &AppSpec) -> Result<(), String> {
    let mut rx = h.watch();
    let limit = Duration::from_millis(spec.listen_timeout_ms);
    let online = tokio::time::timeout(limit, async {
        loop {
            let info: InstanceInfo = rx.borrow_and_update().clone();
            match info.status {
                Status::Online => return Ok(info.pid),
                Status::Errored | Status::Stopped | Status::WaitingRestart => {
                    return Err(format!(
                        "did not start ({})",
                        info.reason.unwrap_or_else(|| info.status.to_string())
                    ))
                }
                Status::Launching | Status::Stopping => {}
            }
            if rx.changed().await.is_err() {
                return Err("ended".to_string());
            }
        }
    })
    .await
    .map_err(|_| format!("was not ready within `listen_timeout` ({} ms)", spec.listen_timeout_ms))??;
    if spec.balancer.is_some() {
        // Behind the balancer: ready once its own port accepts.
        return accepting(&mut rx, online, limit).await;
    }
    let told =
        spec.wait_ready || spec.health.iter().any(|p| p.kind == crate::protocol::spec::ProbeKind::Readiness);
    if told {
        return Ok(());
    }
    let settle = tokio::time::sleep(Duration::from_millis(spec.min_uptime_ms));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            _ = &mut settle => return Ok(()),
            changed = rx.changed() => {
                let info = rx.borrow_and_update().clone();
                if changed.is_err() || info.status != Status::Online || info.pid != online {
                    return Err(format!("exited within `min_uptime` ({} ms)", spec.min_uptime_ms));
                }
            }
        }
    }
}

/// Wait until the instance (process `pid`) accepts connections on its port, for up to `limit`.
async fn accepting(
    rx: &mut tokio::sync::watch::Receiver<InstanceInfo>,
    pid: Option<u32>,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let info = rx.borrow_and_update().clone();
        if info.status != Status::Online || info.pid != pid {
            return Err("exited before it accepted connections on its port".into());
        }
        if let Some(port) = info.port {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let port = info.port.map_or_else(|| "its port".to_string(), |p| format!("port {p}"));
            return Err(format!(
                "did not accept connections on {port} within `listen_timeout` ({} ms)",
                limit.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
