//! `herder ping`: the daemon's pid, version, home and uptime (the daemon is started if needed).

use anyhow::{bail, Result};

use super::output::{expect_ok, out};
use crate::client;
use crate::human;
use crate::paths::Paths;
use crate::protocol::{Request, Response};

pub(super) async fn ping(paths: &Paths, json: bool) -> Result<i32> {
    let Response::Pong(info) = expect_ok(client::call(paths, &Request::Ping).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    if json {
        out(&(serde_json::to_string_pretty(&info)? + "\n"))?;
    } else {
        let updated = match info.exec_generation {
            0 => String::new(),
            n => format!(", updated in place {n} time(s)"),
        };
        out(&format!(
            "pong: herder daemon {} (pid {}) for {}, up {}, {} app(s){updated}\n",
            info.version,
            info.pid,
            info.home.display(),
            human::duration(info.uptime_ms),
            info.apps
        ))?;
    }
    Ok(0)
}
