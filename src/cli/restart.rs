//! `herder restart` and `herder reload`, which resolve apps started from a config file again
//! from their file.

use std::path::Path;

use anyhow::{bail, Result};

use super::args::RestartArgs;
use super::context::{resolve_context, shell_env, targets};
use super::output::{act, config_failed, expect_ok, print_warnings};
use crate::client::{self, Client};
use crate::config;
use crate::paths::Paths;
use crate::protocol::{AppInfo, AppSpec, OnExisting, Request, Response, Target};

/// `herder restart` and `herder reload` (`reload`): a config file's apps are resolved again
/// from it; apps that were started from a config file are resolved again from theirs (env,
/// `env_file` and the shell included, with the `--env` they were started with), keeping the
/// count of instances they run (see [`keeping_count`]); other apps
/// keep their recorded spec, or take the shell's environment with `--update-env`. A restart of
/// a config file starts its apps that do not exist; a reload of one starts them too, then
/// reloads the others.
pub(super) async fn restart(paths: &Paths, a: RestartArgs, reload: bool) -> Result<i32> {
    let verb = if reload { "reload" } else { "restart" };
    if let [file] = a.targets.as_slice() {
        if config::is_config_file(Path::new(file)) {
            let ctx = resolve_context()?;
            let opts = config::LoadOptions {
                env_name: a.env_name.clone(),
                only: a.only.clone(),
                ..Default::default()
            };
            let loaded = match config::load(Path::new(file), &opts, &ctx) {
                Ok(loaded) => loaded,
                Err(errors) => return config_failed(&errors),
            };
            print_warnings(&loaded.warnings);
            if !reload {
                return act(paths, Request::Start { specs: loaded.specs, existing: OnExisting::Restart })
                    .await;
            }
            return reload_file(paths, loaded.specs).await;
        }
    }
    if !a.only.is_empty() || a.env_name.is_some() {
        bail!("`--only` and `--env` select apps and environments of a config file\nhint: herder {verb} ecosystem.config.js --env production");
    }
    let env = a.update_env.then(shell_env);
    let mut c = Client::connect(paths, true).await?;
    // The daemon says which apps the targets name (and which target names none).
    let Response::List { apps, .. } =
        expect_ok(c.request(&Request::Select { targets: targets(&a.targets) }).await?)?
    else {
        bail!("unexpected answer from the daemon");
    };
    // Each config file the apps were started from, read once (with the `--env` its apps were
    // started with), all before any restart.
    let from_file = |x: &AppInfo| x.spec.source.as_ref().is_some_and(|f| f.is_file());
    let mut specs = Vec::new();
    type LoadedFile = ((std::path::PathBuf, Option<String>), Vec<crate::protocol::AppSpec>);
    let mut loaded: Vec<LoadedFile> = Vec::new();
    for app in apps.iter().filter(|x| from_file(x)) {
        let key = (app.spec.source.clone().unwrap_or_default(), app.spec.env_name.clone());
        if !loaded.iter().any(|(k, _)| *k == key) {
            let opts =
                config::LoadOptions { env_name: key.1.clone(), only: Vec::new(), ..Default::default() };
            match config::load(&key.0, &opts, &resolve_context()?) {
                // Its warnings were printed by the command that was given the file (`start`,
                // `restart <file>`, `validate`); a restart by name does not repeat them.
                Ok(l) => loaded.push((key.clone(), l.specs)),
                Err(errors) => return config_failed(&errors),
            }
        }
        let file_specs = &loaded.iter().find(|(k, _)| *k == key).expect("loaded above").1;
        match file_specs.iter().find(|s| s.name == app.spec.name) {
            Some(spec) => specs.push(keeping_count(spec, &app.spec, &key.0)),
            None => bail!(
                "`{}` is no longer in {}\nhint: restore it there, or `herder delete {}`",
                app.spec.name,
                key.0.display(),
                app.spec.name
            ),
        }
    }
    drop(c);
    let targets = targets(&a.targets);
    let req = if reload {
        Request::Reload { targets, env, specs }
    } else {
        Request::Restart { targets, env, specs }
    };
    act(paths, req).await
}

/// The file's spec of a running app restarted or reloaded by name, with the count of instances
/// the app runs now: a count is changed by `scale` or `apply`, and a restart undoing a `scale`
/// unasked would be a silent change. Said when the file differs.
fn keeping_count(file: &AppSpec, running: &AppSpec, path: &Path) -> AppSpec {
    let mut spec = file.clone();
    if (spec.instances, spec.instances_max) != (running.instances, running.instances_max) {
        eprintln!(
            "note: `{name}` keeps its {n} instance{s} ({path} says {f}); `herder scale {name} {f}` or `herder apply {path}` changes the count",
            name = spec.name,
            n = running.instances,
            s = if running.instances == 1 { "" } else { "s" },
            path = path.display(),
            f = spec.instances,
        );
        (spec.instances, spec.instances_max) = (running.instances, running.instances_max);
    }
    spec
}

/// `herder reload <config file>`: its apps that do not exist start; the others reload with the
/// file's spec.
async fn reload_file(paths: &Paths, specs: Vec<crate::protocol::AppSpec>) -> Result<i32> {
    let Response::List { apps, .. } = expect_ok(client::call(paths, &Request::ListBrief).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let (known, new): (Vec<_>, Vec<_>) =
        specs.into_iter().partition(|s| apps.iter().any(|a| a.spec.name == s.name));
    if !new.is_empty() {
        act(paths, Request::Start { specs: new, existing: OnExisting::Refuse }).await?;
    }
    if known.is_empty() {
        return Ok(0);
    }
    let targets = known.iter().map(|s| Target::Name(s.name.clone())).collect();
    act(paths, Request::Reload { targets, env: None, specs: known }).await
}
