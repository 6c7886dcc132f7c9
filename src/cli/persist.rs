//! `herder save` and `herder resurrect`: the apps recorded in dump.json, and started again.

use anyhow::{bail, Result};

use super::output::{expect_ok, out};
use super::render;
use crate::client;
use crate::paths::Paths;
use crate::protocol::{Request, Response};

/// `herder save [--force]`.
pub(super) async fn save(paths: &Paths, force: bool) -> Result<i32> {
    let Response::Saved { path, apps, backup } =
        expect_ok(client::call(paths, &Request::Save { force }).await?)?
    else {
        bail!("unexpected answer from the daemon");
    };
    let names: Vec<String> = apps.iter().map(|n| format!("`{n}`")).collect();
    let mut text = format!("saved {} app(s) to {}", apps.len(), path.display());
    if !names.is_empty() {
        text.push_str(&format!(": {}", names.join(", ")));
    }
    text.push('\n');
    if let Some(b) = backup {
        text.push_str(&format!("the previous save is {}\n", b.display()));
    }
    out(&text)?;
    Ok(0)
}

/// `herder resurrect`: the saved apps that do not run are started.
pub(super) async fn resurrect(paths: &Paths) -> Result<i32> {
    let Response::Resurrected(report) = expect_ok(client::call(paths, &Request::Resurrect).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    if let Some(why) = &report.fallback {
        eprintln!("error: {why}");
        eprintln!("resurrecting from the previous save, {}, instead", report.source.display());
    }
    let mut text = String::new();
    if !report.skipped.is_empty() {
        let names: Vec<String> = report.skipped.iter().map(|n| format!("`{n}`")).collect();
        text.push_str(&format!("already there, left alone: {}\n", names.join(", ")));
    }
    let names: Vec<String> = report.apps.iter().map(|a| format!("`{}`", a.spec.name)).collect();
    if names.is_empty() {
        text.push_str(&format!("nothing to resurrect from {}\n", report.source.display()));
    } else {
        text.push_str(&format!("resurrected {} from {}\n", names.join(", "), report.source.display()));
        text.push_str(&render::table(&report.apps));
    }
    out(&text)?;
    Ok(0)
}
