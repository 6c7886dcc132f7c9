//! Other supervisors on this machine, found in `/proc`: PM2 God daemons and the apps under
//! them, supervisord, herder daemons of other `HERDER_HOME`s, and processes that already
//! listen on the ports herder's apps want. Two supervisors that run the same app restart it
//! against each other and fight over its port (the "two daemons" incident PM2 users know);
//! `herder doctor` lists them and `herder start` warns, without blocking the start.
//!
//! How each is recognised:
//! - a PM2 daemon by the title PM2 gives it, `PM2 v<version>: God Daemon (<PM2_HOME>)` (or a
//!   `node …/pm2/lib/Daemon.js` command line before it sets it); its apps are its children,
//!   named by the `name` and `pm_exec_path` PM2 exports into their environment (`pm2_env` in
//!   cluster mode);
//! - supervisord by its program name; its programs are its children, named by
//!   `SUPERVISOR_PROCESS_NAME`;
//! - a herder daemon by `herder daemon` / `herder run`, its home by `HERDER_HOME` in its
//!   environment (else the `daemon.lock` it holds open); its apps by `HERDER_APP`;
//! - a port holder from the LISTEN sockets of `/proc/net/tcp` and `tcp6`, mapped to a process
//!   through the socket inodes of `/proc/<pid>/fd`.
//!
//! A process is this herder's own when it is its daemon, descends from it, or carries its
//! `HERDER_HOME` (apps keep it across the daemon's crash recovery). Environments of other
//! users' processes are unreadable without root: what cannot be read is left out, never
//! guessed.
//!
//! [`procfs`] reads the processes, [`supervisors`] finds the other supervisors and what they
//! share with herder, [`ports`] the held ports; [`found`] is what they find, and its wording.

mod found;
mod ports;
mod procfs;
mod supervisors;

pub use found::{Own, Peers, Wanted};

use crate::paths::Paths;
use crate::protocol::AppSpec;

/// Reads the machine: everything of [`Peers`] for herder's `apps`.
pub fn scan(own: &Own, apps: &[Wanted]) -> Peers {
    let procs = procfs::processes();
    let mut peers = supervisors::find(&procs, &procfs::environ, own, apps);
    peers.ports = ports::port_holders(&procs, own, apps);
    peers
}

/// Before `herder start`: warn (on stderr) about other supervisors running the same apps and
/// about ports already held elsewhere. Never fails the start.
pub fn warn_before_start(paths: &Paths, specs: &[AppSpec]) {
    let apps: Vec<Wanted> = specs.iter().map(Wanted::of).collect();
    for w in scan(&Own::of(paths), &apps).start_warnings() {
        eprintln!("{w}");
    }
}
