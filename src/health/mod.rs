//! Readiness and health: the systemd notify protocol server ([`notify`]); probes, watchdogs
//! and triggers come next.

pub mod cron;
pub mod hooks;
pub mod notify;
pub mod probe;
