//! `herder metrics`: the Prometheus text once, or `--listen` / `--off` for the daemon's endpoint.

use anyhow::{bail, Result};

use super::args::MetricsArgs;
use super::output::{expect_ok, out};
use crate::client;
use crate::paths::Paths;
use crate::protocol::{Request, Response};

pub(super) async fn metrics(paths: &Paths, a: MetricsArgs) -> Result<i32> {
    let req = Request::Metrics { listen: a.listen.clone(), off: a.off };
    let Response::Metrics { text, listen } = expect_ok(client::call(paths, &req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    match (&a.listen, a.off, listen) {
        (Some(_), _, Some(addr)) => out(&format!("metrics served at http://{addr}/metrics\n"))?,
        (_, true, _) => out("metrics endpoint stopped\n")?,
        _ => out(&text)?,
    }
    Ok(0)
}
