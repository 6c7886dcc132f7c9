//! The daemon in this process: `herder daemon`, and `herder run` (a config file's apps, output
//! on stdout, for containers).

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};

use super::args::RunArgs;
use super::context::{resolve_context, DEFAULT_CONFIG_FILES};
use super::output::{config_failed, print_warnings};
use crate::config;
use crate::paths::Paths;

/// `herder daemon [--resurrect]`: run the daemon of `HERDER_HOME` in the foreground.
pub fn run_daemon(resurrect: bool) -> Result<()> {
    use std::io::IsTerminal;
    let paths = Paths::from_env().context("cannot find herder's home")?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "herder daemon (pid {}) for {}; its log is {}",
            std::process::id(),
            paths.home.display(),
            paths.daemon_log().display()
        );
    }
    crate::daemon::run_with(paths, crate::daemon::Options { resurrect, foreground: None })?;
    Ok(())
}

/// `herder run [config]`: the daemon in the foreground with the config's apps.
pub(super) fn run_foreground(paths: Paths, a: RunArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    let file = match a.file {
        Some(f) => f,
        None => DEFAULT_CONFIG_FILES.iter().find(|f| ctx.cwd.join(f).is_file()).map(|f| f.to_string()).ok_or_else(
            || {
                anyhow!(
                    "no config file here to run\nhint: give one (`herder run herder.toml`), or create one of {} (`herder init`)",
                    DEFAULT_CONFIG_FILES.join(", ")
                )
            },
        )?,
    };
    if !ctx.cwd.join(&file).is_file() {
        bail!("config file {} not found", ctx.cwd.join(&file).display());
    }
    let opts = config::LoadOptions { env_name: a.env_name, only: a.only, ..Default::default() };
    let loaded = match config::load(Path::new(&file), &opts, &ctx) {
        Ok(l) => l,
        Err(errors) => return config_failed(&errors),
    };
    print_warnings(&loaded.warnings);
    let foreground =
        crate::daemon::Foreground { specs: loaded.specs, source: file, exit_when_empty: a.exit_when_empty };
    let code = crate::daemon::run_with(
        paths,
        crate::daemon::Options { resurrect: false, foreground: Some(foreground) },
    )?;
    Ok(code)
}
