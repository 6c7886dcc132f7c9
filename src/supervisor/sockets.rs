//! The listening sockets of an app in cluster mode. The app's coordinator binds them once and
//! holds them for the app's life (across restarts, reloads and `herder update`); every
//! instance inherits them at 3, 4 … with `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` and
//! `HERDER_LISTEN_PORTS` (their ports, for the Node preload), and Node apps get a preload that
//! makes their own `listen(port)` use them ([`NODE_PRELOAD`]).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::process::{listen, ports};
use crate::protocol::spec::SocketSpec;

/// The preload Node apps in cluster mode get (`--require` in `NODE_OPTIONS`).
pub const NODE_PRELOAD: &str = include_str!("node_cluster.js");

/// One bound socket.
#[derive(Debug)]
pub struct Listener {
    pub spec: SocketSpec,
    pub fd: OwnedFd,
}

/// The sockets an app's instances inherit, shared by its coordinator (which binds and closes
/// them) and its instances (which pass them on at each start).
#[derive(Debug, Default)]
pub struct Sockets(Mutex<Arc<Vec<Listener>>>);

impl Sockets {
    pub fn new(listeners: Vec<Listener>) -> Arc<Sockets> {
        Arc::new(Sockets(Mutex::new(Arc::new(listeners))))
    }

    /// The sockets now.
    pub fn get(&self) -> Arc<Vec<Listener>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace them; the old ones close once no start uses them any more.
    pub fn set(&self, listeners: Vec<Listener>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(listeners);
    }

    /// The sockets for `wanted`: those already bound are kept, the others bound; `Err` names
    /// the port that could not be (and who holds it). Nothing changes until [`Sockets::set`].
    pub fn prepare(&self, app: &str, wanted: &[SocketSpec]) -> Result<Vec<Listener>, String> {
        let now = self.get();
        let mut next = Vec::with_capacity(wanted.len());
        for spec in wanted {
            let fd = match now.iter().find(|l| l.spec.host == spec.host && l.spec.port == spec.port) {
                Some(kept) => kept.fd.try_clone().map_err(|e| format!("app `{app}`: {e}"))?,
                None => bind_one(app, spec)?,
            };
            next.push(Listener { spec: spec.clone(), fd });
        }
        Ok(next)
    }

    /// [`Sockets::prepare`], then [`Sockets::set`].
    pub fn bind(&self, app: &str, wanted: &[SocketSpec]) -> Result<(), String> {
        let next = self.prepare(app, wanted)?;
        self.set(next);
        Ok(())
    }
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
        let e = sockets.bind("web", &[spec(port)]).unwrap_err();
        assert!(e.contains(&format!("port 127.0.0.1:{port} is taken by pid {}", std::process::id())), "{e}");
        assert!(sockets.get().is_empty(), "nothing changed");
        drop(taken);
        sockets.bind("web", &[spec(port)]).unwrap();
        let first = listen::local_port(&sockets.get()[0].fd);
        sockets.bind("web", &[spec(port)]).unwrap();
        assert_eq!(listen::local_port(&sockets.get()[0].fd), first, "the same port, still bound");
        sockets.bind("web", &[]).unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "closed once unused");
    }
}
