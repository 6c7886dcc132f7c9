//! What a command takes from where it was typed: the current directory and this shell's
//! environment, the config file the directory holds, and targets as typed (a config file
//! standing for its apps).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::config::{self, ResolveContext};
use crate::protocol::Target;

pub(super) fn shell_env() -> BTreeMap<String, String> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

pub(super) fn resolve_context() -> Result<ResolveContext> {
    Ok(ResolveContext {
        cwd: std::env::current_dir().context("cannot read the current directory")?,
        env: shell_env(),
    })
}

/// What `herder start` with no target looks for, in this order.
pub(super) const DEFAULT_CONFIG_FILES: &[&str] = &[
    "herder.toml",
    "ecosystem.config.js",
    "ecosystem.config.cjs",
    "ecosystem.config.mjs",
    "ecosystem.json",
    "ecosystem.yaml",
    "ecosystem.yml",
];

pub(super) fn targets(v: &[String]) -> Vec<Target> {
    v.iter().map(|s| Target::parse(s)).collect()
}

/// [`targets`], where a config file stands for the apps it defines (PM2's `pm2 stop
/// ecosystem.config.js`); its warnings are `start`'s and `validate`'s to print.
pub(super) fn file_targets(v: &[String]) -> Result<std::result::Result<Vec<Target>, config::ConfigErrors>> {
    let mut out = Vec::new();
    for t in v {
        let path = Path::new(t);
        if !(config::is_config_file(path) && path.is_file()) {
            out.push(Target::parse(t));
            continue;
        }
        match config::load(path, &config::LoadOptions::default(), &resolve_context()?) {
            Ok(loaded) => out.extend(loaded.specs.into_iter().map(|s| Target::Name(s.name))),
            Err(errors) => return Ok(Err(errors)),
        }
    }
    Ok(Ok(out))
}
