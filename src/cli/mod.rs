//! The command line: clap definitions, one function per command, rendering in [`render`].

mod doctor;
pub mod inspect;
pub(crate) mod logs;
mod peers;
pub mod pm2_flags;
mod pm2_verbs;
pub(crate) mod render;
mod report;
mod startup;
mod update;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::client::{self, Client};
use crate::config::{self, Overrides, ResolveContext};
use crate::paths::Paths;
use crate::protocol::{AppInfo, OnExisting, Request, Response, Target};

#[derive(Debug, Parser)]
#[command(
    name = "herder",
    version,
    about = "A process manager for production services",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start apps from a script, a command string or a config file (or start existing apps)
    #[command(alias = "startOrRestart")]
    Start(Box<StartArgs>),
    /// Stop apps (they stay in the list)
    Stop(Targets),
    /// Restart apps
    Restart(RestartArgs),
    /// Stop apps and remove them from the list
    #[command(visible_alias = "del")]
    Delete(Targets),
    /// List every app with its state
    #[command(visible_aliases = ["ls", "status", "l", "ps"])]
    List(ListArgs),
    /// Show everything about one app
    #[command(visible_aliases = ["describe", "desc", "info"])]
    Show(ShowArgs),
    /// Send a signal to each instance's main process
    #[command(visible_alias = "sendSignal")]
    Signal(SignalArgs),
    /// Zero the restart counters
    Reset(Targets),
    /// Check that the daemon runs (starting it if needed) and print its pid and version
    Ping(JsonFlag),
    /// Check a config file and report every error in it (nothing is started)
    Validate(ValidateArgs),
    /// Write a commented herder.toml to start from
    #[command(alias = "ecosystem")]
    Init(InitArgs),
    /// Print the herder.toml equivalent to a config file (a PM2 ecosystem file, YAML, JSON)
    Convert(ConvertArgs),
    /// Print the last lines of apps' logs, then follow new lines
    #[command(visible_alias = "log")]
    Logs(logs::LogsArgs),
    /// Stream supervision events (start, exit, restart, errored, ready, health, watchdog,
    /// memory, oom)
    Events(JsonFlag),
    /// Print metrics in the Prometheus text format, or serve them over HTTP (`--listen`)
    Metrics(MetricsArgs),
    /// Empty the apps' current log files (every app's without a target)
    Flush(FlushArgs),
    /// Reopen every log file (after an external logrotate moved them)
    #[command(visible_alias = "reloadLogs")]
    ReloadLogs,
    /// A terminal dashboard: apps, CPU and memory sparklines, live logs, keys to restart/stop
    #[command(visible_aliases = ["dashboard", "dash"], alias = "imonit")]
    Monit,
    /// What this machine offers herder (cgroups, subreaper, pidfd, notify sockets, node,
    /// python3) and what degrades without it
    Doctor(JsonFlag),
    /// Stop every app, then the daemon
    Kill,
    /// Replace the daemon's program with the installed binary, in place: same pid, apps untouched
    #[command(alias = "updatePM2")]
    Update(JsonFlag),
    /// Record every app (spec and environment) in dump.json, for `resurrect` and boot
    #[command(visible_alias = "dump")]
    Save(SaveArgs),
    /// Start the apps of dump.json that are not running
    Resurrect,
    /// Write and enable a systemd unit that runs herder at boot
    Startup(startup::StartupArgs),
    /// Disable and remove the unit `startup` wrote
    Unstartup(startup::UnstartupArgs),
    /// Run apps in the foreground, for containers: output on stdout, PID 1 duties
    Run(RunArgs),
    /// PM2's `jlist`: every instance as PM2's JSON process record (herder's own is `list --json`)
    Jlist,
    /// PM2's `prettylist`: `jlist`'s records laid out as Node's util.inspect prints them
    Prettylist,
    /// Print an app's environment, a `KEY: value` line each (secret values masked)
    Env(EnvArgs),
    /// Print the pid of each instance of an app (of every app without a name); 0 when it does
    /// not run
    Pid(PidArgs),
    /// Print the ids of the apps of that name, as PM2 does (`[ 0 ]`)
    Id(IdArgs),
    /// A report to attach to a bug report: versions, doctor, the apps, the daemon log's tail
    Report,
    /// Print a completion script for a shell (`herder completion bash > /etc/bash_completion.d/herder`)
    Completion(CompletionArgs),
    /// Run the daemon in the foreground
    Daemon(DaemonArgs),
    /// Print what a daemon checks before it executes this binary (`herder update`)
    #[command(hide = true)]
    HandoverCheck,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// App name or id
    pub target: String,
    /// Print secret-looking values instead of `********`
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct PidArgs {
    /// App name (default: every app)
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// App name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Save even an empty list (replacing the saved apps with none)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Start the apps of dump.json once ready (for boot)
    #[arg(long)]
    pub resurrect: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file (default: this directory's herder.toml or ecosystem.config.js …)
    pub file: Option<String>,
    /// Start only these apps (by name)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Apply each app's `env_<name>`
    #[arg(long = "env", value_name = "NAME")]
    pub env_name: Option<String>,
    /// Stop and exit once no app is left running (all stopped, done or errored); the exit
    /// code is 1 if one is errored
    #[arg(long)]
    pub exit_when_empty: bool,
}

#[derive(Debug, Args)]
pub struct Targets {
    /// App names, ids, namespaces, `all`, or a config file (its apps)
    #[arg(required = true)]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// App names, ids or namespaces (default: every app)
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Order rows by id, name, namespace, pid, uptime, restarts, status, cpu or mem,
    /// optionally `:asc` or `:desc` (`--sort cpu:desc`)
    #[arg(long, value_name = "FIELD[:DIR]")]
    pub sort: Option<String>,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve them at http://ADDR/metrics from now on (loopback only; a bare port means
    /// 127.0.0.1); kept across daemon restarts
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Stop serving them
    #[arg(long, conflicts_with = "listen")]
    pub off: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// App name or id
    pub target: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Print secret-looking env values (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*KEY*` …) instead of
    /// `********`
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// A signal name (`SIGUSR2`, `USR2`) or number
    pub signal: String,
    #[arg(required = true)]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Replace the apps' environment with this shell's (variables missing here are removed)
    #[arg(short = 'a', long)]
    pub update_env: bool,
    /// With a config file: restart only these apps (by name)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// With a config file: apply each app's `env_<name>`
    #[arg(long = "env", value_name = "NAME")]
    pub env_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The config file (herder.toml, .yaml, .json, ecosystem.config.js …)
    pub file: String,
    /// Check with the apps' `env_<name>` applied
    #[arg(long = "env", value_name = "NAME")]
    pub env_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write it
    #[arg(default_value = "herder.toml")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The config file to convert (e.g. ecosystem.config.js)
    pub file: String,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// A script, a command string, a config file (herder.toml, ecosystem.config.js …), or
    /// existing apps; none: the config file of this directory
    pub targets: Vec<String>,
    /// App name (default: the script's file name)
    #[arg(short, long)]
    pub name: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    /// Program that runs the script (default: chosen by extension; `none` runs it directly)
    #[arg(long)]
    pub interpreter: Option<String>,
    /// Working directory of the app
    #[arg(long)]
    pub cwd: Option<String>,
    /// Number of instances (N, `max`, or negative for CPUs − n)
    #[arg(short, long, allow_hyphen_values = true)]
    pub instances: Option<String>,
    /// Delay before an automatic restart (ms or `2s`)
    #[arg(long)]
    pub restart_delay: Option<String>,
    /// First delay of an exponential restart backoff (ms or `100ms`)
    #[arg(long)]
    pub exp_backoff_restart_delay: Option<String>,
    /// Unstable runs in a row before the app is `errored`
    #[arg(long)]
    pub max_restarts: Option<String>,
    /// A run shorter than this is unstable (ms or `1s`)
    #[arg(long)]
    pub min_uptime: Option<String>,
    /// Do not restart the app when it exits
    #[arg(long)]
    pub no_autorestart: bool,
    /// Time from the stop signal to killing what is left (ms or `5s`)
    #[arg(short = 'k', long)]
    pub kill_timeout: Option<String>,
    /// Signal that asks the app to stop (default SIGTERM)
    #[arg(long)]
    pub kill_signal: Option<String>,
    /// Exit codes that stop the app instead of restarting it
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub stop_exit_codes: Vec<String>,
    /// With a config file: start only these apps (by name)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// With a config file: apply each app's `env_<name>` (`--env production`); with a script:
    /// set a variable (`--env NODE_ENV=production`, repeatable)
    #[arg(long = "env", value_name = "NAME|KEY=VALUE")]
    pub env: Vec<String>,
    /// With a config file: restart running apps with the file's and this shell's environment
    /// (always so); with app names: restart them with this shell's environment
    #[arg(short = 'a', long)]
    pub update_env: bool,
    /// Restart the app when its memory (RSS of its process tree) exceeds this (`300M`, `1G`)
    #[arg(long, value_name = "SIZE")]
    pub max_memory_restart: Option<String>,
    /// Restart the app at these times (cron: `"0 3 * * *"`, seconds first with 6 fields)
    #[arg(short = 'c', long = "cron-restart", visible_alias = "cron", value_name = "EXPR")]
    pub cron_restart: Option<String>,
    /// Arguments for the interpreter, before the script (`--node-args="--max-old-space-size=512"`)
    #[arg(long, visible_alias = "node-args", allow_hyphen_values = true, value_name = "ARGS")]
    pub interpreter_args: Option<String>,
    /// The variable that holds the instance number (default NODE_APP_INSTANCE)
    #[arg(long, value_name = "NAME")]
    pub instance_var: Option<String>,
    /// Inherit nothing from this shell's environment, or (with names) leave out the variables
    /// whose name contains one of them
    #[arg(long, num_args = 0..=1, value_delimiter = ',', value_name = "NAMES")]
    pub filter_env: Option<Vec<String>>,
    /// The port the app listens on: sets `PORT`
    #[arg(long)]
    pub port: Option<String>,
    /// Add the app as `stopped`, without starting it
    #[arg(long)]
    pub no_autostart: bool,
    /// Run the app as this user (a name or uid; the daemon must run as root)
    #[arg(long = "uid", visible_alias = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Run the app with this group (a name or gid; default the user's primary group)
    #[arg(long = "gid", visible_alias = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// Write the app's pid to this file while it runs (`-<n>` added per instance when several)
    #[arg(short = 'p', long = "pid", value_name = "PATH")]
    pub pid_file: Option<String>,
    /// Run in the foreground instead of under the daemon, as `herder run` does (for containers)
    #[arg(long)]
    pub no_daemon: bool,
    /// stdout log file (`/dev/null` drops it)
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
    /// stderr log file (`/dev/null` drops it)
    #[arg(short = 'e', long = "error")]
    pub error: Option<String>,
    /// A log file for both streams (without a path: `logs/<name>.log`)
    #[arg(short = 'l', long = "log", num_args = 0..=1, default_missing_value = "")]
    pub log: Option<String>,
    /// One log file for all instances
    #[arg(long)]
    pub merge_logs: bool,
    /// Prefix each log line with the time
    #[arg(long)]
    pub time: bool,
    /// Format of that time, in dayjs tokens (`YYYY-MM-DD HH:mm:ss Z`)
    #[arg(long)]
    pub log_date_format: Option<String>,
    /// `json` for one JSON object per line
    #[arg(long)]
    pub log_type: Option<String>,
    /// Discard the app's output
    #[arg(long)]
    pub disable_logs: bool,
    /// Online only after the app says it is ready (`READY=1` on `NOTIFY_SOCKET`)
    #[arg(long)]
    pub wait_ready: bool,
    /// How long to wait for that (ms or `5s`; default 3 s)
    #[arg(long)]
    pub listen_timeout: Option<String>,
    /// Restart when files change: the app's directory, or `--watch=src,lib`
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = ".", value_name = "PATHS")]
    pub watch: Option<String>,
    /// Leave these out of `--watch` (a name or a glob; repeatable)
    #[arg(long, value_name = "PATTERN")]
    pub ignore_watch: Vec<String>,
    /// How long files must be quiet before the restart (ms or `1s`)
    #[arg(long)]
    pub watch_delay: Option<String>,
    /// Stop a Node app with the IPC message 'shutdown' instead of a signal
    #[arg(long)]
    pub shutdown_with_message: bool,
    /// Start the script even when an app of that name exists or it already runs: the app
    /// gets this command and these flags and is restarted
    #[arg(short, long)]
    pub force: bool,
    /// Arguments for the app, after `--`
    #[arg(last = true)]
    pub args: Vec<String>,
}

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

/// Run a client command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    if let Cmd::HandoverCheck = cli.command {
        out(&(serde_json::to_string(&crate::daemon::image::check_report())? + "\n"))?;
        return Ok(0);
    }
    let paths = Paths::from_env().context("cannot find herder's home")?;
    match cli.command {
        Cmd::Daemon(a) => {
            run_daemon(a.resurrect)?;
            return Ok(0);
        }
        Cmd::Run(a) => return run_foreground(paths, a),
        Cmd::Start(a) if a.no_daemon => return start_foreground(paths, a),
        Cmd::Startup(a) => return startup::startup(&a),
        Cmd::Completion(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "herder", &mut text);
            out(&String::from_utf8_lossy(&text))?;
            return Ok(0);
        }
        Cmd::Unstartup(a) => return startup::unstartup(&a),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(dispatch(&paths, cli.command))
}

fn targets(v: &[String]) -> Vec<Target> {
    v.iter().map(|s| Target::parse(s)).collect()
}

/// [`targets`], where a config file stands for the apps it defines (PM2's `pm2 stop
/// ecosystem.config.js`); its warnings are `start`'s and `validate`'s to print.
fn file_targets(v: &[String]) -> Result<std::result::Result<Vec<Target>, config::ConfigErrors>> {
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

/// Print `text` to stdout; a closed pipe (`herder list | head`) is not an error.
/// `-s/--silent`: successful commands print nothing on stdout.
static SILENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Parse the command line, PM2's flags included (see [`pm2_flags`]): the parsed command, or
/// why a flag is refused.
pub fn parse(args: Vec<std::ffi::OsString>) -> std::result::Result<Cli, String> {
    let read = pm2_flags::read(args)?;
    for note in &read.notes {
        eprintln!("note: {note}");
    }
    if read.no_color {
        // Read by `logs`; set before any thread starts.
        std::env::set_var("NO_COLOR", "1");
    }
    SILENT.store(read.silent, std::sync::atomic::Ordering::Relaxed);
    let verb = read.args.get(1).and_then(|v| v.to_str()).map(str::to_string);
    if let Some(why) = verb.as_deref().and_then(pm2_verbs::refusal) {
        return Err(why);
    }
    match Cli::try_parse_from(&read.args) {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprint!("{}", with_full_usage(&e.render().to_string(), verb.as_deref()));
            std::process::exit(e.exit_code());
        }
    }
}

/// clap's error with the command's whole usage line: clap shows the flags just typed in it
/// (`Usage: herder show --json <TARGET>`), which reads as if they were the only ones.
fn with_full_usage(error: &str, verb: Option<&str>) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    let usage = match verb.and_then(|v| cmd.find_subcommand_mut(v)) {
        Some(sub) => sub.render_usage().to_string(),
        None => cmd.render_usage().to_string(),
    };
    error
        .lines()
        .map(|l| if l.starts_with("Usage: ") { usage.trim_end() } else { l })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn out(text: &str) -> Result<()> {
    if SILENT.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Turn a daemon error into a CLI error.
fn expect_ok(resp: Response) -> Result<Response> {
    match resp {
        Response::Error(e) => Err(anyhow!("{}", e.message)),
        other => Ok(other),
    }
}

async fn dispatch(paths: &Paths, cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Start(args) => start(paths, args).await,
        Cmd::Stop(t) => match file_targets(&t.targets)? {
            Ok(targets) => act(paths, Request::Stop { targets }).await,
            Err(errors) => config_failed(&errors),
        },
        Cmd::Restart(a) => restart(paths, a).await,
        Cmd::Delete(t) => match file_targets(&t.targets)? {
            Ok(targets) => act(paths, Request::Delete { targets }).await,
            Err(errors) => config_failed(&errors),
        },
        Cmd::Signal(a) => {
            act(paths, Request::Signal { signal: a.signal, targets: targets(&a.targets) }).await
        }
        Cmd::Reset(t) => match file_targets(&t.targets)? {
            Ok(targets) => act(paths, Request::Reset { targets }).await,
            Err(errors) => config_failed(&errors),
        },
        Cmd::List(f) => {
            let sort = f.sort.as_deref().map(render::SortKey::parse).transpose().map_err(|e| anyhow!(e))?;
            let req = if f.json { Request::List } else { Request::ListBrief };
            let Response::List { mut apps } = expect_ok(client::call(paths, &req).await?)? else {
                bail!("unexpected answer from the daemon");
            };
            if let Some(key) = sort {
                key.sort(&mut apps);
            }

            if f.json {
                out(&(serde_json::to_string_pretty(&apps)? + "\n"))?;
            } else {
                out(&render::table(&apps))?;
            }
            Ok(0)
        }
        Cmd::Show(a) => {
            let Response::Show { mut app } =
                expect_ok(client::call(paths, &Request::Show { target: Target::parse(&a.target) }).await?)?
            else {
                bail!("unexpected answer from the daemon");
            };
            if !a.show_secrets {
                *app = app.masked();
            }
            if a.json {
                out(&(serde_json::to_string_pretty(&app)? + "\n"))?;
            } else {
                out(&render::show(&app))?;
            }
            Ok(0)
        }
        Cmd::Ping(f) => {
            let Response::Pong(info) = expect_ok(client::call(paths, &Request::Ping).await?)? else {
                bail!("unexpected answer from the daemon");
            };
            if f.json {
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
                    render::duration(info.uptime_ms),
                    info.apps
                ))?;
            }
            Ok(0)
        }
        Cmd::Logs(a) => logs::logs(paths, a).await,
        Cmd::Events(f) => events(paths, f.json).await,
        Cmd::Metrics(a) => {
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
        Cmd::Flush(a) => logs::flush(paths, a.targets).await,
        Cmd::ReloadLogs => logs::reload(paths).await,
        Cmd::Monit => crate::tui::run(paths).await,
        Cmd::Doctor(f) => doctor::doctor(paths, f.json).await,
        Cmd::Kill => kill(paths).await,
        Cmd::Update(f) => update::update(paths, f.json).await,
        Cmd::Validate(a) => validate(&a),
        Cmd::Init(a) => init(&a),
        Cmd::Convert(a) => convert(&a),
        Cmd::Save(a) => save(paths, a.force).await,
        Cmd::Resurrect => resurrect(paths).await,
        Cmd::Jlist => pm2_verbs::jlist(paths, false).await,
        Cmd::Prettylist => pm2_verbs::jlist(paths, true).await,
        Cmd::Env(a) => pm2_verbs::env(paths, &a.target, a.show_secrets).await,
        Cmd::Pid(a) => pm2_verbs::pid(paths, a.name.as_deref()).await,
        Cmd::Id(a) => pm2_verbs::id(paths, &a.name).await,
        Cmd::Report => report::report(paths).await,
        Cmd::Daemon(_)
        | Cmd::Run(_)
        | Cmd::Startup(_)
        | Cmd::Unstartup(_)
        | Cmd::Completion(_)
        | Cmd::HandoverCheck => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// Send a request that acts on apps and print the apps it touched.
async fn act(paths: &Paths, req: Request) -> Result<i32> {
    match expect_ok(client::call(paths, &req).await?)? {
        Response::Done { apps } => print_done(&req, &apps)?,
        Response::Started { started, restarted } => print_started(&started, &restarted)?,
        _ => {}
    }
    Ok(0)
}

/// What `start` did: `started `a`, `b`` and `restarted `c`` lines, then the table of them all.
fn print_started(started: &[AppInfo], restarted: &[AppInfo]) -> Result<()> {
    let names =
        |apps: &[AppInfo]| apps.iter().map(|a| format!("`{}`", a.spec.name)).collect::<Vec<_>>().join(", ");
    let mut text = String::new();
    let (added, started): (Vec<AppInfo>, Vec<AppInfo>) =
        started.iter().cloned().partition(|a| !a.spec.autostart);
    if !started.is_empty() {
        text.push_str(&format!("started {}\n", names(&started)));
    }
    if !added.is_empty() {
        text.push_str(&format!(
            "added {} as stopped (autostart is off; `herder start <name>` starts it)\n",
            names(&added)
        ));
    }
    if !restarted.is_empty() {
        text.push_str(&format!("restarted {}\n", names(restarted)));
    }
    let mut all: Vec<AppInfo> = started.iter().chain(&added).chain(restarted).cloned().collect();
    all.sort_by_key(|a| a.id);
    text.push_str(&render::table(&all));
    out(&text)
}

fn print_done(req: &Request, apps: &[AppInfo]) -> Result<()> {
    let verb = match req {
        Request::Stop { .. } => "stopped",
        Request::Restart { .. } => "restarted",
        Request::Delete { .. } => "deleted",
        Request::Signal { .. } => "signalled",
        Request::Reset { .. } => "reset",
        _ => "done",
    };
    let names: Vec<String> = apps.iter().map(|a| format!("`{}`", a.spec.name)).collect();
    let mut text = format!("{verb} {}\n", names.join(", "));
    if !matches!(req, Request::Delete { .. }) {
        text.push_str(&render::table(apps));
    }
    out(&text)
}

/// `herder events`: print events as they happen, one per line, until interrupted.
async fn events(paths: &Paths, json: bool) -> Result<i32> {
    let mut c = Client::connect(paths, true).await?;
    c.send(&Request::Events).await?;
    loop {
        let next = match c.next().await {
            Err(client::ClientError::Closed) if update::replaced_in_place(paths, c.daemon_pid).await => {
                bail!("{}", update::STREAM_ENDED_BY_UPDATE)
            }
            next => next?,
        };
        match next {
            Response::Event(e) => {
                let line = if json { serde_json::to_string(&e)? } else { render::event(&e) };
                out(&(line + "\n"))?;
            }
            Response::Error(e) => bail!("{}", e.message),
            _ => {}
        }
    }
}

async fn kill(paths: &Paths) -> Result<i32> {
    let mut c = match Client::connect(paths, false).await {
        Ok(c) => c,
        Err(client::ClientError::NoDaemon { .. }) => {
            out("no daemon is running\n")?;
            return Ok(0);
        }
        // A daemon of another version cannot be asked; SIGTERM makes any version stop its
        // apps and exit.
        Err(client::ClientError::VersionMismatch { pid, daemon, .. }) => {
            // SAFETY: kill(2) on the pid the daemon reported in the handshake.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if !client::wait_gone(pid, Duration::from_secs(60)).await {
                bail!("the herder {daemon} daemon (pid {pid}) did not stop after SIGTERM");
            }
            out(&format!("stopped the herder {daemon} daemon (pid {pid}) and its apps\n"))?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let pid = c.daemon_pid;
    let resp = expect_ok(c.request(&Request::Kill).await?)?;
    drop(c);
    let n = match resp {
        Response::Done { apps } => apps.len(),
        _ => 0,
    };
    // Wait for the daemon to be gone, so that the next command starts a fresh one.
    if !client::wait_gone(pid, Duration::from_secs(10)).await {
        bail!("the daemon (pid {pid}) stopped its apps but is still running");
    }
    out(&format!("stopped {n} app(s) and the daemon (pid {pid})\n"))?;
    Ok(0)
}

/// `herder save [--force]`.
async fn save(paths: &Paths, force: bool) -> Result<i32> {
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
async fn resurrect(paths: &Paths) -> Result<i32> {
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

/// `herder run [config]`: the daemon in the foreground with the config's apps.
fn run_foreground(paths: Paths, a: RunArgs) -> Result<i32> {
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
    let opts = config::LoadOptions { env_name: a.env_name, only: a.only };
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

fn shell_env() -> BTreeMap<String, String> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn resolve_context() -> Result<ResolveContext> {
    Ok(ResolveContext {
        cwd: std::env::current_dir().context("cannot read the current directory")?,
        env: shell_env(),
    })
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
        let opts =
            config::LoadOptions { env_name: env_name_of(&a.env, "a config file")?, only: a.only.clone() };
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
                    || apps
                        .iter()
                        .any(|x| x.spec.name == *t || x.id.to_string() == *t || x.spec.namespace == *t)
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

async fn start(paths: &Paths, mut a: Box<StartArgs>) -> Result<i32> {
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
        let Response::List { apps: listed } = expect_ok(client.request(&Request::ListBrief).await?)? else {
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
                let req = Request::Restart { targets: targets(&a.targets), env: Some(shell_env()) };
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
fn start_foreground(paths: Paths, mut a: Box<StartArgs>) -> Result<i32> {
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

/// `herder restart`: a config file's apps are resolved again from it; apps that were started
/// from a config file are resolved again from theirs (env, `env_file` and the shell included,
/// with the `--env` they were started with); other apps restart with their recorded spec, or
/// the shell's environment with `--update-env`.
async fn restart(paths: &Paths, a: RestartArgs) -> Result<i32> {
    if let [file] = a.targets.as_slice() {
        if config::is_config_file(Path::new(file)) {
            let ctx = resolve_context()?;
            let opts = config::LoadOptions { env_name: a.env_name.clone(), only: a.only.clone() };
            return match config::load(Path::new(file), &opts, &ctx) {
                Ok(loaded) => {
                    print_warnings(&loaded.warnings);
                    act(paths, Request::Start { specs: loaded.specs, existing: OnExisting::Restart }).await
                }
                Err(errors) => config_failed(&errors),
            };
        }
    }
    if !a.only.is_empty() || a.env_name.is_some() {
        bail!("`--only` and `--env` select apps and environments of a config file\nhint: herder restart ecosystem.config.js --env production");
    }
    let env = a.update_env.then(shell_env);
    let plain = Request::Restart { targets: targets(&a.targets), env: env.clone() };

    let mut c = Client::connect(paths, true).await?;
    let Response::List { apps } = expect_ok(c.request(&Request::List).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    // The apps each target names, as the daemon resolves them: id, then name, then namespace.
    let mut selected: Vec<&AppInfo> = Vec::new();
    for t in &a.targets {
        let found: Vec<&AppInfo> = if t == "all" {
            apps.iter().collect()
        } else if let Some(app) =
            apps.iter().find(|x| x.id.to_string() == *t).or_else(|| apps.iter().find(|x| x.spec.name == *t))
        {
            vec![app]
        } else {
            apps.iter().filter(|x| x.spec.namespace == *t).collect()
        };
        if found.is_empty() {
            // The daemon says which target is unknown.
            drop(c);
            return act(paths, plain).await;
        }
        for app in found {
            if !selected.iter().any(|s| s.id == app.id) {
                selected.push(app);
            }
        }
    }
    let from_file = |x: &AppInfo| x.spec.source.as_ref().is_some_and(|f| f.is_file());
    if !selected.iter().any(|x| from_file(x)) {
        drop(c);
        return act(paths, plain).await;
    }
    // Load each file once (with the `--env` its apps were started with), all before any restart.
    let ctx = resolve_context()?;
    let mut specs = Vec::new();
    // Each file with the `--env` it is loaded with, and the apps it gives.
    type LoadedFile = ((std::path::PathBuf, Option<String>), Vec<crate::protocol::AppSpec>);
    let mut loaded: Vec<LoadedFile> = Vec::new();
    for app in selected.iter().filter(|x| from_file(x)) {
        let key = (app.spec.source.clone().unwrap_or_default(), app.spec.env_name.clone());
        if !loaded.iter().any(|(k, _)| *k == key) {
            let opts = config::LoadOptions { env_name: key.1.clone(), only: Vec::new() };
            match config::load(&key.0, &opts, &ctx) {
                // Its warnings were printed by the command that was given the file (`start`,
                // `restart <file>`, `validate`); a restart by name does not repeat them.
                Ok(l) => {
                    loaded.push((key.clone(), l.specs));
                }
                Err(errors) => return config_failed(&errors),
            }
        }
        let file_specs = &loaded.iter().find(|(k, _)| *k == key).expect("loaded above").1;
        match file_specs.iter().find(|s| s.name == app.spec.name) {
            Some(spec) => specs.push(spec.clone()),
            None => bail!(
                "`{}` is no longer in {}\nhint: restore it there, or `herder delete {}`",
                app.spec.name,
                key.0.display(),
                app.spec.name
            ),
        }
    }
    let others: Vec<String> = selected.iter().filter(|x| !from_file(x)).map(|x| x.id.to_string()).collect();
    let mut done = Vec::new();
    let req = Request::Start { specs, existing: OnExisting::Restart };
    if let Response::Started { started, restarted } = expect_ok(c.request(&req).await?)? {
        done.extend(started.into_iter().chain(restarted));
    }
    if !others.is_empty() {
        let req = Request::Restart { targets: targets(&others), env };
        if let Response::Done { apps } = expect_ok(c.request(&req).await?)? {
            done.extend(apps);
        }
    }
    print_done(&plain, &done)?;
    Ok(0)
}

/// What `herder start` with no target looks for, in this order.
const DEFAULT_CONFIG_FILES: &[&str] = &[
    "herder.toml",
    "ecosystem.config.js",
    "ecosystem.config.cjs",
    "ecosystem.config.mjs",
    "ecosystem.json",
    "ecosystem.yaml",
    "ecosystem.yml",
];

/// Print warnings about a config (options herder ignores), one per line, on stderr.
fn print_warnings(warnings: &[config::ConfigError]) {
    for w in warnings {
        eprintln!("{}", w.as_warning());
    }
}

/// `herder validate <file>`: every error of the file, or a summary of its apps.
fn validate(a: &ValidateArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    let opts = config::LoadOptions { env_name: a.env_name.clone(), only: Vec::new() };
    match config::load(Path::new(&a.file), &opts, &ctx) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            let names: Vec<String> = loaded
                .specs
                .iter()
                .map(|s| {
                    if s.instances == 1 {
                        format!("`{}`", s.name)
                    } else {
                        format!("`{}` ×{}", s.name, s.instances)
                    }
                })
                .collect();
            out(&format!("{}: ok, {} app(s): {}\n", a.file, names.len(), names.join(", ")))?;
            Ok(0)
        }
        Err(errors) => config_failed(&errors),
    }
}

/// `herder init [file]`: a commented herder.toml, never over an existing file.
fn init(a: &InitArgs) -> Result<i32> {
    use std::fs::OpenOptions;
    // PM2's `ecosystem simple` asks for its short template: herder has one.
    let file = if a.file == "simple" { "herder.toml" } else { a.file.as_str() };
    let a = &InitArgs { file: file.to_string() };
    let path = Path::new(&a.file);
    let file = OpenOptions::new().write(true).create_new(true).open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; herder init does not overwrite it\nhint: give another path: herder init apps.toml", a.file)
        }
        Err(e) => return Err(anyhow!("cannot create {}: {e}", a.file)),
    };
    file.write_all(config::INIT_TEMPLATE.as_bytes()).with_context(|| format!("cannot write {}", a.file))?;
    out(&format!("wrote {}; edit it, then run `herder start {}`\n", a.file, a.file))?;
    Ok(0)
}

/// `herder convert <file>`: the equivalent herder.toml on stdout.
fn convert(a: &ConvertArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    match config::convert_file(Path::new(&a.file), &ctx) {
        Ok((text, warnings)) => {
            print_warnings(&warnings);
            out(&text)?;
            Ok(0)
        }
        Err(errors) => config_failed(&errors),
    }
}

/// Print every config error (each already says `error:`) and fail; nothing was sent.
fn config_failed(errors: &config::ConfigErrors) -> Result<i32> {
    print_warnings(&errors.warnings);
    eprint!("{errors}");
    if !errors.to_string().ends_with('\n') {
        eprintln!();
    }
    Ok(1)
}
