//! Readiness and health: the systemd notify protocol server ([`notify`]); probes
//! ([`probe`]), scheduled restarts ([`cron`]), file watching ([`watch`]) and hooks ([`hooks`]).

pub mod cron;
pub mod hooks;
pub mod notify;
pub mod probe;
pub mod watch;
