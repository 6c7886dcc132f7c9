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
}

impl Sockets {
    pub fn new(listeners: Vec<Listener>) -> Arc<Sockets> {
        Arc::new(Sockets { listeners: Mutex::new(Arc::new(listeners)), ports: Mutex::default() })
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
        let mut next = Vec::with_capacity(wanted.len());
        for spec in wanted {
            let kept = now.iter().find(|l| l.spec.host == spec.host && l.spec.port == spec.port);
            let mut fds = Vec::new();
            if let Some(kept) = kept {
                for fd in &kept.fds {
                    fds.push(fd.try_clone().map_err(|e| format!("app `{app}`: {e}"))?);
                }
            } else if let Some(why) = taken(app, spec) {
                return Err(why);
            }
            while fds.len() < slots.max(1) {
                fds.push(bind_one(app, spec)?);
            }
            next.push(Listener { spec: spec.clone(), fds });
        }
        Ok(next)
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
            next.push(Listener { spec: l.spec.clone(), fds });
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
        for l in self.get().iter() {
            if let Some(first) = l.fds.first() {
                if let Err(e) = listen::steer_to(first, slots) {
                    tracing::warn!(app, port = l.spec.port, error = %e, "connections are spread by the kernel's own hash");
                }
            }
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
            })
            .collect();
        self.set(next);
    }
}

/// An error if another process already listens on the port of `spec`: joining a reuseport
/// group of another program of the same user would share its connections.
pub fn taken(app: &str, spec: &SocketSpec) -> Option<String> {
    let (pid, command) = ports::holder_of(spec.port)?;
    Some(format!(
        "app `{app}`: port {} is taken by pid {pid} (`{command}`)\nhint: stop that process, or give the app another `port`",
        spec.address()
    ))
}

/// Bind one socket, or say why not in the user's words.
pub fn bind_one(app: &str, spec: &SocketSpec) -> Result<OwnedFd, String> {
    listen::bind(spec.host.as_deref(), spec.port).map_err(|e| {
        let port = spec.address();
        match (e.kind(), ports::holder_of(spec.port)) {
            (std::io::ErrorKind::AddrInUse, Some((pid, command))) => format!(
                "app `{app}`: port {port} is taken by pid {pid} (`{command}`)\nhint: stop that process, or give the app another `port`"
            ),
            (std::io::ErrorKind::AddrInUse, None) => format!(
                "app `{app}`: port {port} is taken by another process\nhint: `ss -ltnp 'sport = :{}'` names it; or give the app another `port`",
                spec.port
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
}
