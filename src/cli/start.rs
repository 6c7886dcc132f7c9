//! `herder start` (and PM2's `startOrRestart`): a script, a command string, a config file's
//! apps, or apps the daemon has; with `--no-daemon`, in the foreground as `herder run`.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use clap::Parser as _;

use super::args::StartArgs;
use super::context::{resolve_context, shell_env, targets, DEFAULT_CONFIG_FILES};
use super::output::{act, config_failed, expect_ok, print_started, print_warnings};
use super::peers;
use crate::client::Client;
use crate::config::{self, Overrides, ResolveContext};
use crate::paths::Paths;
use crate::protocol::{AppInfo, OnExisting, Request, Response};

/// What `herder start` was asked for.
enum StartPlan {
    /// The apps of a config file (started if missing, restarted if running).
    File { specs: Vec<crate::protocol::AppSpec>, source: String },
    /// One script or command with the flags.
    Script(Box<crate::protocol::AppSpec>),
    /// Apps the daemon has, by name, id or namespace.
    Existing,
}

/// `--env` of `start`: one environment name for a config file.
fn env_name_of(env: &[String], what: &str) -> Result<Option<String>> {
    match env {
        [] => Ok(None),
        [name] if !name.contains('=') => Ok(Some(name.clone())),
        [pair] => bail!(
            "`--env {pair}`: with {what}, `--env` names an environment (`--env production` applies each app's `env_production`)\nhint: set variables in the file's `env`, or in the shell that runs herder"
        ),
        many => bail!("`--env` names one environment of the file (got {})", many.join(", ")),
    }
}

/// Read what `herder start` names: `Ok(Err(code))` when that failed and was reported.
fn plan_start(
    a: &mut StartArgs,
    ctx: &ResolveContext,
    daemon_apps: Option<&[AppInfo]>,
) -> Result<Result<StartPlan, i32>> {
    // No target: the config file of this directory, as PM2 starts `ecosystem.config.js`.
    if a.targets.is_empty() {
        let file = DEFAULT_CONFIG_FILES.iter().find(|f| ctx.cwd.join(f).is_file()).ok_or_else(|| {
            anyhow!(
                "no config file here to start\nhint: give a script or a config file, or create one of {} (`herder init`)",
                DEFAULT_CONFIG_FILES.join(", ")
            )
        })?;
        a.targets.push(file.to_string());
    }
    let first = a.targets[0].clone();
    let first_path = ctx.cwd.join(&first);
    // A config file: every app in it, validated before anything is sent.
    if a.targets.len() == 1 && config::is_config_file(Path::new(&first)) {
        if !first_path.is_file() {
            bail!("config file {} not found", first_path.display());
        }
        let opts = config::LoadOptions {
            env_name: env_name_of(&a.env, "a config file")?,
            only: a.only.clone(),
            ..Default::default()
        };
        return Ok(match config::load(Path::new(&first), &opts, ctx) {
            Ok(loaded) => {
                print_warnings(&loaded.warnings);
                Ok(StartPlan::File { specs: loaded.specs, source: first })
            }
            Err(errors) => Err(config_failed(&errors)?),
        });
    }
    if !a.only.is_empty() {
        bail!("`--only` selects apps of a config file\nhint: herder start ecosystem.config.js --only api,worker");
    }
    // A script file or a command string.
    let is_command = a.targets.len() == 1 && (first_path.is_file() || first.contains(char::is_whitespace));
    if !is_command {
        if let Some(apps) = daemon_apps {
            let all_known = a.targets.iter().all(|t| {
                t == "all"
                    || apps.iter().any(|x| {
                        x.spec.name == *t
                            || x.id.to_string() == *t
                            || x.instances.iter().any(|i| i.id.is_some_and(|id| id.to_string() == *t))
                            || x.spec.namespace == *t
                    })
            });
            if all_known {
                if !a.env.is_empty() {
                    bail!("`--env` applies to a script or a config file, not to apps that exist\nhint: `herder restart {} --update-env` restarts them with this shell's environment", a.targets.join(" "));
                }
                return Ok(Ok(StartPlan::Existing));
            }
        }
        if let ([_, paths], Some(_)) = (a.targets.as_slice(), &a.watch) {
            bail!("`herder start` takes one script or config file (got {}: is `{paths}` what `--watch` should watch?)\nhint: give the paths with `=`: --watch={paths}", a.targets.len());
        }
        if a.targets.len() > 1 {
            bail!("`herder start` takes one script or config file (got {})\nhint: quote a command with arguments: herder start \"python3 -m http.server\"", a.targets.len());
        }
    }
    Ok(match config::from_command(&first, &start_overrides(a), ctx) {
        Ok(spec) => Ok(StartPlan::Script(Box::new(spec))),
        Err(errors) => Err(config_failed(&errors)?),
    })
}

pub(super) async fn start(paths: &Paths, mut a: Box<StartArgs>) -> Result<i32> {
    let ctx = resolve_context()?;
    // Names of apps that exist are asked of the daemon only when the target may be one.
    let mut c = None;
    let mut apps = None;
    let one_file_or_command = |t: &str| {
        config::is_config_file(Path::new(t)) || ctx.cwd.join(t).is_file() || t.contains(char::is_whitespace)
    };
    let maybe_existing = match a.targets.as_slice() {
        [] => false,
        [one] => !one_file_or_command(one),
        _ => true,
    };
    if maybe_existing {
        let mut client = Client::connect(paths, true).await?;
        let Response::List { apps: listed, .. } = expect_ok(client.request(&Request::ListBrief).await?)?
        else {
            bail!("unexpected answer from the daemon");
        };
        apps = Some(listed);
        c = Some(client);
    }
    let plan = match plan_start(&mut a, &ctx, apps.as_deref())? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    match plan {
        StartPlan::File { specs, .. } => {
            peers::warn_before_start(paths, &specs);
            act(paths, Request::Start { specs, existing: OnExisting::Restart }).await
        }
        StartPlan::Script(spec) => {
            peers::warn_before_start(paths, std::slice::from_ref(&spec));
            let existing = if a.force { OnExisting::Replace } else { OnExisting::Refuse };
            act(paths, Request::Start { specs: vec![*spec], existing }).await
        }
        StartPlan::Existing => {
            let mut c = c.expect("connected to list the apps");
            if a.update_env {
                let req = Request::Restart {
                    targets: targets(&a.targets),
                    env: Some(shell_env()),
                    specs: Vec::new(),
                };
                return act(paths, req).await;
            }
            let req = Request::StartExisting { targets: targets(&a.targets) };
            if let Response::Started { started, restarted } = expect_ok(c.request(&req).await?)? {
                print_started(&started, &restarted)?;
            }
            Ok(0)
        }
    }
}

/// `herder start … --no-daemon`: the apps of a config file, or one script, in the foreground
/// as `herder run` runs them.
pub(super) fn start_foreground(paths: Paths, mut a: Box<StartArgs>) -> Result<i32> {
    let ctx = resolve_context()?;
    let (specs, source) = match plan_start(&mut a, &ctx, None)? {
        Err(code) => return Ok(code),
        Ok(StartPlan::File { specs, source }) => (specs, source),
        Ok(StartPlan::Script(spec)) => {
            let source = spec.script.clone();
            (vec![*spec], source)
        }
        Ok(StartPlan::Existing) => unreachable!("no daemon was asked"),
    };
    let foreground = crate::daemon::Foreground { specs, source, exit_when_empty: false };
    Ok(crate::daemon::run_with(
        paths,
        crate::daemon::Options { resurrect: false, foreground: Some(foreground) },
    )?)
}

/// `herder start <words…>` for one script or command string, read as `plan_start` reads it
/// short of the daemon: the flags (PM2's included) parsed and the app resolved in `ctx`;
/// `None` when the words are not such a `start`. For the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn script_spec(
    words: &[&str],
    ctx: &ResolveContext,
) -> Option<std::result::Result<crate::protocol::AppSpec, config::ConfigErrors>> {
    let args = ["herder", "start"].iter().chain(words).map(std::ffi::OsString::from).collect();
    let read = super::pm2_flags::read(args).ok()?;
    let super::Cli { command: super::Cmd::Start(a), .. } = super::Cli::try_parse_from(&read.args).ok()?
    else {
        return None;
    };
    let [script] = a.targets.as_slice() else { return None };
    Some(config::from_command(script, &start_overrides(&a), ctx))
}

/// The flags of `herder start` that shape one app.
fn start_overrides(a: &StartArgs) -> Overrides {
    Overrides {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        interpreter: a.interpreter.clone(),
        cwd: a.cwd.clone(),
        restart_delay: a.restart_delay.clone(),
        exp_backoff_restart_delay: a.exp_backoff_restart_delay.clone(),
        max_restarts: a.max_restarts.clone(),
        min_uptime: a.min_uptime.clone(),
        kill_timeout: a.kill_timeout.clone(),
        kill_signal: a.kill_signal.clone(),
        stop_exit_codes: (!a.stop_exit_codes.is_empty()).then(|| a.stop_exit_codes.clone()),
        no_autorestart: a.no_autorestart,
        instances: a.instances.clone(),
        out_file: a.output.clone(),
        error_file: a.error.clone(),
        log_file: a.log.clone(),
        merge_logs: a.merge_logs,
        time: a.time,
        log_date_format: a.log_date_format.clone(),
        log_type: a.log_type.clone(),
        disable_logs: a.disable_logs,
        wait_ready: a.wait_ready,
        listen_timeout: a.listen_timeout.clone(),
        watch: a.watch.as_ref().map(|w| w.split(',').map(str::to_string).collect()),
        ignore_watch: a.ignore_watch.clone(),
        watch_delay: a.watch_delay.clone(),
        shutdown_with_message: a.shutdown_with_message,
        max_memory_restart: a.max_memory_restart.clone(),
        cron_restart: a.cron_restart.clone(),
        interpreter_args: a.interpreter_args.clone(),
        instance_var: a.instance_var.clone(),
        filter_env: a.filter_env.clone(),
        env: a.env.clone(),
        port: a.port.clone(),
        no_autostart: a.no_autostart,
        user: a.user.clone(),
        group: a.group.clone(),
        pid_file: a.pid_file.clone(),
        args: a.args.clone(),
    }
}
