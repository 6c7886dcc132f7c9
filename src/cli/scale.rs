//! `herder scale <app> <n|+n|-n>`: change an app's number of instances live.

use anyhow::{bail, Result};

use super::args::ScaleArgs;
use super::output::{expect_ok, out};
use super::render;
use crate::client;
use crate::paths::Paths;
use crate::protocol::{Request, Response, Target};

pub(super) async fn scale(paths: &Paths, a: ScaleArgs) -> Result<i32> {
    let req = Request::Scale { target: Target::parse(&a.target), count: a.count };
    let Response::Scaled { apps, before, after } = expect_ok(client::call(paths, &req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let name = apps.first().map(|a| a.spec.name.clone()).unwrap_or_default();
    let what = if after == before {
        format!("`{name}` has {after} instance(s) already")
    } else {
        format!("scaled `{name}` from {before} to {after} instance(s)")
    };
    out(&format!("{what}\n{}", render::table(&apps)))?;
    Ok(0)
}
