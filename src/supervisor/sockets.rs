//! The listening sockets of an app in cluster mode. The app's coordinator binds them and
//! holds them for the app's life (across restarts, reloads and `herder update`): for each port,
//! one socket per instance slot in one reuseport group ([`crate::process::listen`]), which the
//! kernel spreads connections over. The instance of a slot, whatever its generation, inherits
//! that slot's sockets at 3, 4 … with `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` and
//! `HERDER_LISTEN_PORTS` (their ports, for the Node preload); Node apps get a preload that makes
//! their own `listen(port)` use them ([`NODE_PRELOAD`]).

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::process::{listen, ports};
use crate::protocol::spec::SocketSpec;

/// The preload Node apps in cluster mode get (`--require` in `NODE_OPTIONS`).
pub const NODE_PRELOAD: &str = include_str!("node_cluster.js");

/// One port of an app: a socket per instance slot.
#[derive(Debug)]
pub struct Listener {
    pub spec: SocketSpec,
    pub fds: Vec<OwnedFd>,
    /// Bound because an instance asked for the port at run time (a Node app's `listen` on a
    /// port it was not given): kept while the app lives, across reloads and `herder update`.
    pub learned: bool,
}

impl Listener {
    /// The socket of slot `slot` (the last one for a slot past the group, which does not
    /// happen: the group grows before its instances start).
    pub fn of_slot(&self, slot: usize) -> Option<BorrowedFd<'_>> {
        self.fds.get(slot).or(self.fds.last()).map(|f| f.as_fd())
    }
}

/// The sockets an app's instances inherit, shared by its coordinator (which binds, steers and
/// closes them) and its instances (which pass them on at each start); and, behind a balancer,
/// the loopback ports its instances listen on.
#[derive(Debug, Default)]
pub struct Sockets {
    listeners: Mutex<Arc<Vec<Listener>>>,
    /// The ports of the instances behind the balancer.
    ports: Mutex<BTreeSet<u16>>,
    /// The slots new connections go to, as last steered (none yet: the first `n`), for a port
    /// learned later.
    steered: Mutex<Option<Vec<u32>>>,
    /// How the kernel spreads new connections over them, as last steered.
    spread: Mutex<Option<listen::Spread>>,
}

impl Sockets {
    pub fn new(listeners: Vec<Listener>) -> Arc<Sockets> {
        Arc::new(Sockets { listeners: Mutex::new(Arc::new(listeners)), ..Sockets::default() })
    }

    /// The sockets now.
    pub fn get(&self) -> Arc<Vec<Listener>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace them; the old ones close once no start uses them any more.
    pub fn set(&self, listeners: Vec<Listener>) {
        *self.listeners.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(listeners);
    }

    /// The loopback port of an instance behind the balancer: `held` (its port so far) while it
    /// suits `base`; else the first port from `base` up that no other instance of the app holds
    /// and that nothing listens on; else (no `base`) one the kernel picks as free.
    pub fn backend_port(&self, base: Option<u16>, held: Option<u16>) -> std::io::Result<u16> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = held.filter(|p| base.is_none_or(|b| *p >= b)) {
            ports.insert(p);
            return Ok(p);
        }
        if let Some(p) = held {
            ports.remove(&p);
        }
        let port = match base {
            Some(base) => (base..=u16::MAX)
                .filter(|p| !ports.contains(p))
                .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
                .ok_or_else(|| std::io::Error::other(format!("no free port from {base} up")))?,
            None => loop {
                let p = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
                if !ports.contains(&p) {
                    break p;
                }
            },
        };
        ports.insert(port);
        Ok(port)
    }

    /// An instance that held `port` is gone.
    pub fn release_port(&self, port: u16) {
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).remove(&port);
    }

    /// The sockets for `wanted` and `slots` instances: the groups already bound are kept (grown
    /// to `slots`), the others bound; `Err` names the port that could not be (and who holds it).
    /// Nothing changes until [`Sockets::set`].
    pub fn prepare(&self, app: &str, wanted: &[SocketSpec], slots: usize) -> Result<Vec<Listener>, String> {
        let now = self.get();
        let own = inodes(&now);
        let mut next = Vec::with_capacity(wanted.len());
        for spec in wanted {
            let kept = now.iter().find(|l| l.spec.host == spec.host && l.spec.port == spec.port);
            let mut fds = Vec::new();
            if let Some(kept) = kept {
                for fd in &kept.fds {
                    fds.push(fd.try_clone().map_err(|e| format!("app `{app}`: {e}"))?);
                }
            } else if let Some(why) = taken(app, spec, &own) {
                return Err(why);
            }
            while fds.len() < slots.max(1) {
                fds.push(bind_one(app, spec)?);
            }
            next.push(Listener { spec: spec.clone(), fds, learned: false });
        }
        // Ports the instances asked for stay: the instances of the new spec ask for them too.
        for l in now.iter().filter(|l| l.learned) {
            if next.iter().any(|n| n.spec.host == l.spec.host && n.spec.port == l.spec.port) {
                continue;
            }
            let mut fds = Vec::new();
            for fd in &l.fds {
                fds.push(fd.try_clone().map_err(|e| format!("app `{app}`: {e}"))?);
            }
            while fds.len() < slots.max(1) {
                fds.push(bind_one(app, &l.spec)?);
            }
            next.push(Listener { spec: l.spec.clone(), fds, learned: true });
        }
        Ok(next)
    }

    /// The socket of slot `slot` for the port an instance asked for (`listen` on a port the
    /// app was not given): the app's group for that port, bound now for `slots` slots (and
    /// steered as the others) if it has none yet. `Err` names the port that could not be bound
    /// and who holds it.
    pub fn learn(&self, app: &str, spec: &SocketSpec, slot: usize, slots: usize) -> Result<OwnedFd, String> {
        // One at a time: instances of one app ask for the same port at once.
        static LEARNING: Mutex<()> = Mutex::new(());
        let _one = LEARNING.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.get();
        let same =
            |l: &&Listener| l.spec.port == spec.port && (l.spec.host == spec.host || l.spec.host.is_none());
        if let Some(l) = now.iter().find(same) {
            let fd = l
                .of_slot(slot)
                .ok_or_else(|| format!("app `{app}`: port {} has no socket", spec.address()))?;
            return fd.try_clone_to_owned().map_err(|e| format!("app `{app}`: {e}"));
        }
        if let Some(why) = taken(app, spec, &inodes(&now)) {
            return Err(why);
        }
        let slots = now.iter().map(|l| l.fds.len()).max().unwrap_or(0).max(slots).max(slot + 1);
        let mut fds = Vec::with_capacity(slots);
        while fds.len() < slots {
            fds.push(bind_one(app, spec)?);
        }
        let fd = fds[slot].try_clone().map_err(|e| format!("app `{app}`: {e}"))?;
        let steered = self.steered.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let live = steered.unwrap_or_else(|| (0..slots as u32).collect());
        match listen::steer(&fds, &live) {
            Ok(how) => self.spread_is(app, how),
            Err(e) => {
                tracing::warn!(app, port = spec.port, error = %e, "connections are spread by the kernel's own hash")
            }
        }
        let mut next = Vec::with_capacity(now.len() + 1);
        for l in now.iter() {
            let mut kept = Vec::with_capacity(l.fds.len());
            for fd in &l.fds {
                kept.push(fd.try_clone().map_err(|e| format!("app `{app}`: {e}"))?);
            }
            next.push(Listener { spec: l.spec.clone(), fds: kept, learned: l.learned });
        }
        next.push(Listener { spec: spec.clone(), fds, learned: true });
        self.set(next);
        Ok(fd)
    }

    /// [`Sockets::prepare`], then [`Sockets::set`] and [`Sockets::steer`].
    pub fn bind(&self, app: &str, wanted: &[SocketSpec], slots: usize) -> Result<(), String> {
        let next = self.prepare(app, wanted, slots)?;
        self.set(next);
        self.steer(app, slots);
        Ok(())
    }

    /// Bind sockets for slots up to `slots`: they get no connection until [`Sockets::steer`]
    /// says so.
    pub fn grow(&self, app: &str, slots: usize) -> Result<(), String> {
        let now = self.get();
        let mut next = Vec::with_capacity(now.len());
        for l in now.iter() {
            let mut fds = Vec::with_capacity(slots);
            for fd in &l.fds {
                fds.push(fd.try_clone().map_err(|e| format!("app `{app}`: {e}"))?);
            }
            while fds.len() < slots {
                fds.push(bind_one(app, &l.spec)?);
            }
            next.push(Listener { spec: l.spec.clone(), fds, learned: l.learned });
        }
        self.set(next);
        Ok(())
    }

    /// New connections go to the sockets of the first `slots` slots only.
    pub fn steer(&self, app: &str, slots: usize) {
        self.steer_to(app, &(0..slots.max(1) as u32).collect::<Vec<u32>>());
    }

    /// New connections go to the sockets of these slots only.
    pub fn steer_to(&self, app: &str, slots: &[u32]) {
        *self.steered.lock().unwrap_or_else(|e| e.into_inner()) = Some(slots.to_vec());
        for l in self.get().iter() {
            match listen::steer(&l.fds, slots) {
                Ok(how) => self.spread_is(app, how),
                Err(e) => {
                    tracing::warn!(app, port = l.spec.port, error = %e, "connections are spread by the kernel's own hash")
                }
            }
        }
    }

    /// How new connections are spread over the instances, as last steered (none: no socket).
    pub fn spread(&self) -> Option<listen::Spread> {
        *self.spread.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spread_is(&self, app: &str, how: listen::Spread) {
        let before = self.spread.lock().unwrap_or_else(|e| e.into_inner()).replace(how);
        if before != Some(how) {
            tracing::info!(app, spread = how.describe(), "connections to the instances are spread");
        }
    }

    /// Connections waiting for the instance of slot `slot`.
    pub fn queued(&self, slot: usize) -> usize {
        self.get().iter().filter_map(|l| l.fds.get(slot)).map(listen::queued).sum()
    }

    /// Close the sockets of the slots from `slots` on (after [`Sockets::steer`] and the drain of
    /// their queues).
    pub fn shrink(&self, slots: usize) {
        let now = self.get();
        let next = now
            .iter()
            .map(|l| Listener {
                spec: l.spec.clone(),
                fds: l.fds.iter().take(slots.max(1)).filter_map(|f| f.try_clone().ok()).collect(),
                learned: l.learned,
            })
            .collect();
        self.set(next);
    }
}

/// An error if another process already listens on the port of `spec` at an address that
/// conflicts with it (see [`ports::conflict`]): joining a reuseport group of another program of
/// the same user would share its connections. `own`: the sockets of the app itself (by inode),
/// which the new ones replace, and which do not count.
pub fn taken(app: &str, spec: &SocketSpec, own: &[u64]) -> Option<String> {
    let (pid, command) = ports::holder_conflicting(spec.host.as_deref(), spec.port, own)?;
    Some(format!(
        "app `{app}`: port {} is taken by pid {pid} (`{command}`)\nhint: stop that process, or give the app another `port`",
        spec.address()
    ))
}

/// The inodes of the sockets of `listeners`.
fn inodes(listeners: &[Listener]) -> Vec<u64> {
    listeners.iter().flat_map(|l| &l.fds).filter_map(listen::inode).collect()
}

/// Bind one socket, or say why not in the user's words.
pub fn bind_one(app: &str, spec: &SocketSpec) -> Result<OwnedFd, String> {
    listen::bind(spec.host.as_deref(), spec.port).map_err(|e| {
        let port = spec.address();
        match (e.kind(), ports::holder_conflicting(spec.host.as_deref(), spec.port, &[])) {
            (std::io::ErrorKind::AddrInUse, Some((pid, command))) => format!(
                "app `{app}`: port {port} is taken by pid {pid} (`{command}`)\nhint: stop that process, or give the app another `port`"
            ),
            (std::io::ErrorKind::AddrInUse, None) => format!(
                "app `{app}`: port {port} is taken by another process\nhint: `ss -ltnp 'sport = :{}'` names it; or give the app another `port`",
                spec.port
            ),
            (std::io::ErrorKind::AddrNotAvailable, _) => format!(
                "app `{app}`: cannot listen on {port}: {} is not an address of this machine\nhint: use one of its addresses (`ip -brief address` lists them), 127.0.0.1 or 0.0.0.0",
                spec.host.as_deref().unwrap_or("the address")
            ),
            (std::io::ErrorKind::PermissionDenied, _) => format!(
                "app `{app}`: port {port} needs root (ports under 1024)\nhint: use a port of 1024 or more, or run herder as root"
            ),
            _ => format!("app `{app}`: cannot listen on port {port}: {e}"),
        }
    })
}

/// Write the Node preload into `dir` (once per content), readable by every user; its path.
pub fn node_preload(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // Instances of one app start at once: one writer at a time.
    static WRITING: Mutex<()> = Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let path = dir.join("node-cluster.js");
    if std::fs::read(&path).ok().as_deref() != Some(NODE_PRELOAD.as_bytes()) {
        let tmp = dir.join(format!("node-cluster.js.{}", std::process::id()));
        std::fs::write(&tmp, NODE_PRELOAD)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16) -> SocketSpec {
        SocketSpec { name: port.to_string(), host: Some("127.0.0.1".into()), port }
    }

    #[test]
    fn sockets_already_bound_are_kept_and_a_taken_port_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let sockets = Sockets::default();
        let e = sockets.bind("web", &[spec(port)], 2).unwrap_err();
        assert!(e.contains(&format!("port 127.0.0.1:{port} is taken by pid {}", std::process::id())), "{e}");
        assert!(sockets.get().is_empty(), "nothing changed");
        drop(taken);
        sockets.bind("web", &[spec(port)], 2).unwrap();
        assert_eq!(sockets.get()[0].fds.len(), 2, "one socket per slot");
        let first = listen::local_port(&sockets.get()[0].fds[0]);
        sockets.grow("web", 3).unwrap();
        assert_eq!(sockets.get()[0].fds.len(), 3);
        assert_eq!(listen::local_port(&sockets.get()[0].fds[2]), first, "the same port");
        sockets.shrink(1);
        assert_eq!(sockets.get()[0].fds.len(), 1);
        sockets.bind("web", &[], 1).unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "closed once unused");
    }

    #[test]
    fn a_port_asked_for_is_bound_once_for_every_slot_and_kept_by_a_new_spec() {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (given, asked) = (free(), free());
        let sockets = Sockets::default();
        sockets.bind("web", &[spec(given)], 2).unwrap();
        let first = sockets.learn("web", &spec(asked), 0, 2).unwrap();
        assert_eq!(listen::local_port(&first), Some(asked));
        let now = sockets.get();
        assert_eq!(now.len(), 2);
        assert!(now[1].learned && !now[0].learned);
        assert_eq!(now[1].fds.len(), 2, "a socket per slot, as for the ports given");
        // The second slot asks: its own socket of the same group, nothing bound again.
        let second = sockets.learn("web", &spec(asked), 1, 2).unwrap();
        assert_eq!(listen::local_port(&second), Some(asked));
        assert_eq!(sockets.get().len(), 2);
        // A new spec (reload, apply) keeps the port asked for, grown to its slots.
        let next = sockets.prepare("web", &[spec(given)], 3).unwrap();
        assert_eq!(next.len(), 2);
        assert!(next[1].learned && next[1].fds.len() == 3);
        // A port taken by another process is refused, naming it; nothing changes.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = sockets.learn("web", &spec(port), 0, 2).unwrap_err();
        assert!(e.contains(&format!("is taken by pid {}", std::process::id())), "{e}");
        assert_eq!(sockets.get().len(), 2);
    }

    #[test]
    fn a_port_is_taken_only_at_an_address_that_conflicts_and_never_by_the_app_s_own_socket() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let at = |host: Option<&str>| SocketSpec { name: port.to_string(), host: host.map(Into::into), port };
        assert!(taken("web", &at(Some("127.0.0.2")), &[]).is_none(), "another address");
        assert!(taken("web", &at(Some("::1")), &[]).is_none(), "another family");
        let e = taken("web", &at(None), &[]).expect("every address takes 127.0.0.1 too");
        assert!(e.contains(&format!("port {port} is taken by pid {}", std::process::id())), "{e}");
        assert!(taken("web", &at(Some("127.0.0.1")), &[]).is_some());
        // Narrowed by the app that holds the port: its own socket is being replaced.
        let sockets = Sockets::default();
        drop(holder);
        sockets.bind("web", &[at(None)], 1).unwrap();
        let next = sockets.prepare("web", &[at(Some("127.0.0.1"))], 1).unwrap();
        assert_eq!(next[0].spec.host.as_deref(), Some("127.0.0.1"));
        // An address this machine does not have: the bind says so, naming the app.
        let e = bind_one("web", &SocketSpec { name: "x".into(), host: Some("10.99.99.99".into()), port })
            .unwrap_err();
        assert!(e.contains("app `web`: cannot listen on 10.99.99.99:"), "{e}");
        assert!(e.contains("10.99.99.99 is not an address of this machine"), "{e}");
    }
}
