//! `herder apply <config>`: converge on a config file, idempotently, and say what it did.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::args::ApplyArgs;
use super::context::{resolve_context, DEFAULT_CONFIG_FILES};
use super::output::{config_failed, expect_ok, out, print_warnings};
use super::render;
use crate::client;
use crate::config;
use crate::paths::Paths;
use crate::protocol::{Request, Response, StepAction};

pub(super) async fn apply(paths: &Paths, a: ApplyArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    let file = match a.file {
        Some(f) => f,
        None => DEFAULT_CONFIG_FILES
            .iter()
            .find(|f| ctx.cwd.join(f).is_file())
            .map(|f| f.to_string())
            .ok_or_else(|| {
                anyhow!("no config file here to apply\nhint: give one: herder apply herder.toml")
            })?,
    };
    let opts = config::LoadOptions { env_name: a.env_name, only: a.only, ..Default::default() };
    let loaded = match config::load(Path::new(&file), &opts, &ctx) {
        Ok(l) => l,
        Err(errors) => return config_failed(&errors),
    };
    print_warnings(&loaded.warnings);
    let source = loaded.specs.first().and_then(|s| s.source.clone()).unwrap_or_else(|| ctx.cwd.join(&file));
    let req = Request::Apply { specs: loaded.specs, source, prune: a.prune, dry_run: a.dry_run };
    let Response::Applied { plan, apps } = expect_ok(client::call(paths, &req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let mut text = String::new();
    if a.dry_run {
        text.push_str("plan (nothing was changed):\n");
    }
    for step in &plan {
        let verb = match (step.action, a.dry_run) {
            (StepAction::Start, false) => "started",
            (StepAction::Reload, false) => "reloaded",
            (StepAction::Retune, false) => "retuned the balancer of",
            (StepAction::Scale, false) => "scaled",
            (StepAction::Delete, false) => "deleted",
            (StepAction::Start, true) => "start",
            (StepAction::Reload, true) => "reload",
            (StepAction::Retune, true) => "retune the balancer of",
            (StepAction::Scale, true) => "scale",
            (StepAction::Delete, true) => "delete",
            (StepAction::Unchanged, _) => "unchanged",
        };
        let detail = step.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
        text.push_str(&format!("{verb} `{}`{detail}\n", step.app));
    }
    text.push_str(&render::table(&apps));
    out(&text)?;
    Ok(0)
}
