//! Readiness and health: the systemd notify protocol server ([`notify`]); probes
//! ([`probe`]), scheduled restarts ([`cron`]), file watching ([`watch`]) and hooks ([`hooks`]);
//! the HTTP client that http probes and webhooks share (`http`).

pub mod cron;
pub mod hooks;
mod http;
pub mod notify;
pub mod probe;
pub mod watch;
