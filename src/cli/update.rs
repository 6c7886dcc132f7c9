//! `herder update`: have the daemon execute its binary again in place, and report the image
//! it ran before and the one it runs now.

use anyhow::{bail, Result};

use super::output::out;
use crate::client::{self, Client, ClientError};
use crate::human;
use crate::paths::Paths;
use crate::protocol::{ImageInfo, Request, Response, PROGRAM_VERSION};

/// A short description of an image: `herder 0.2.0 (build 1a2b3c4d5e6f, image 2)`.
fn describe(image: &ImageInfo) -> String {
    let build = image.build_id.as_deref().map(|b| &b[..b.len().min(12)]).unwrap_or("unknown");
    format!("herder {} (build {build}, image {})", image.version, image.generation)
}

pub(super) async fn update(paths: &Paths, json: bool) -> Result<i32> {
    let (mut c, version) = match Client::connect_for_update(paths).await {
        Ok(c) => c,
        Err(ClientError::NoDaemon { .. }) => {
            out(&format!("no daemon is running; the next command starts herder {PROGRAM_VERSION}\n"))?;
            return Ok(0);
        }
        Err(ClientError::VersionMismatch { pid, daemon, .. }) => bail!(
            "the daemon (pid {pid}) runs herder {daemon}, which cannot update itself in place\nhint: `herder kill` stops it and its apps; start them again with this herder"
        ),
        Err(e) => return Err(e.into()),
    };
    let pid = c.daemon_pid;
    let (from, to) = match c.request(&Request::Update).await {
        Ok(Response::Updated { pid: new_pid, from, to }) if new_pid == pid => (from, to),
        Ok(Response::Updated { pid: new_pid, .. }) => {
            bail!("the daemon answered from pid {new_pid}, not {pid}: it did not update in place")
        }
        Ok(Response::Error(e)) => bail!("cannot update the daemon: {}", e.message),
        Ok(_) => bail!("unexpected answer from the daemon"),
        Err(ClientError::Closed { .. }) => bail!(
            "the daemon (pid {pid}, herder {version}) closed the connection during the update\nhint: see {} and `herder ping`",
            paths.daemon_log().display()
        ),
        Err(e) => return Err(e.into()),
    };
    drop(c);
    // The new image serves requests: ask it as any command would.
    let info = if to.version == PROGRAM_VERSION {
        match client::call(paths, &Request::Ping).await? {
            Response::Pong(info) => Some(info),
            Response::Error(e) => bail!("the updated daemon does not answer: {}", e.message),
            _ => bail!("unexpected answer from the daemon"),
        }
    } else {
        None
    };
    if let Some(info) = &info {
        if info.pid != pid || info.exec_generation != to.generation {
            bail!(
                "the daemon answering now is pid {} (image {}), not the updated pid {pid} (image {})",
                info.pid,
                info.exec_generation,
                to.generation
            );
        }
    }
    if json {
        let v = serde_json::json!({ "pid": pid, "from": from, "to": to });
        out(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        let apps = info.as_ref().map(|i| format!(", {} app(s) untouched", i.apps)).unwrap_or_default();
        out(&format!(
            "updated the daemon (pid {pid}) in place{apps}\n  {} → {}\n",
            describe(&from),
            describe(&to)
        ))?;
        if let Some(i) = &info {
            out(&format!("  up {} since the daemon started\n", human::duration(i.uptime_ms)))?;
        }
        if to.version != PROGRAM_VERSION {
            out(&format!(
                "note: the daemon runs {} (herder {}), this is herder {PROGRAM_VERSION}\nhint: install this herder at {} and run `herder update` again\n",
                to.exe.display(),
                to.version,
                to.exe.display()
            ))?;
        }
    }
    Ok(0)
}

/// After a stream ended: whether the daemon `pid` still runs, in a new image (`herder update`)
/// rather than stopped. Its new image answers once it has taken over.
pub(super) async fn replaced_in_place(paths: &Paths, pid: u32) -> bool {
    match Client::connect(paths, false).await {
        Ok(c) => c.daemon_pid == pid,
        Err(ClientError::VersionMismatch { pid: p, .. }) => p == pid,
        Err(_) => false,
    }
}

/// What a stream (`logs -f`, `events`) says when the daemon was updated under it.
pub(super) const STREAM_ENDED_BY_UPDATE: &str =
    "the daemon was updated in place (`herder update`); run the command again to go on";
