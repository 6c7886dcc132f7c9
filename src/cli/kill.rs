//! `herder kill`: stop every app, then the daemon, and wait for it to be gone.

use std::time::Duration;

use anyhow::{bail, Result};

use super::output::{expect_ok, out};
use crate::client::{self, Client};
use crate::paths::Paths;
use crate::protocol::{Request, Response};

pub(super) async fn kill(paths: &Paths) -> Result<i32> {
    let mut c = match Client::connect(paths, false).await {
        Ok(c) => c,
        Err(client::ClientError::NoDaemon { .. }) => {
            out("no daemon is running\n")?;
            return Ok(0);
        }
        // A daemon of another version cannot be asked; SIGTERM makes any version stop its
        // apps and exit.
        Err(client::ClientError::VersionMismatch { pid, daemon, .. }) => {
            // SAFETY: kill(2) on the pid the daemon reported in the handshake.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if !client::wait_gone(pid, Duration::from_secs(60)).await {
                bail!("the herder {daemon} daemon (pid {pid}) did not stop after SIGTERM");
            }
            out(&format!("stopped the herder {daemon} daemon (pid {pid}) and its apps\n"))?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let pid = c.daemon_pid;
    let resp = expect_ok(c.request(&Request::Kill).await?)?;
    drop(c);
    let n = match resp {
        Response::Done { apps, .. } => apps.len(),
        _ => 0,
    };
    // Wait for the daemon to be gone, so that the next command starts a fresh one.
    if !client::wait_gone(pid, Duration::from_secs(10)).await {
        bail!("the daemon (pid {pid}) stopped its apps but is still running");
    }
    out(&format!("stopped {n} app(s) and the daemon (pid {pid})\n"))?;
    Ok(0)
}
