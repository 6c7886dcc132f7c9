//! The command line as clap reads it: [`Cli`], the [`Cmd`] of each verb, and the arguments of
//! each. The code of a command is in its own file; [`super::parse`] adds PM2's flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Reload apps without downtime: in cluster mode each instance is replaced, one at a time,
    /// by a new one that is ready before the old one stops; other apps restart
    #[command(visible_alias = "gracefulReload")]
    Reload(RestartArgs),
    /// Converge on a config file: start its new apps, reload those whose spec changed, rescale
    /// those whose count changed, leave the others untouched (PM2's `startOrReload`)
    #[command(visible_aliases = ["startOrReload", "startOrGracefulReload"])]
    Apply(ApplyArgs),
    /// Change an app's number of instances live: `4`, `+2` or `-1` (new instances start on the
    /// same sockets, the last ones stop gracefully)
    Scale(ScaleArgs),
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
    /// Write a config's apps as Kubernetes manifests, a docker compose file or systemd units
    Export(ExportArgs),
    /// Print the last lines of apps' logs, then follow new lines
    #[command(visible_alias = "log")]
    Logs(LogsArgs),
    /// Stream supervision events (start, exit, restart, errored, ready, health, watchdog,
    /// memory, oom, disk …)
    Events(JsonFlag),
    /// Print metrics in the Prometheus text format, or serve them over HTTP (`--listen`)
    Metrics(MetricsArgs),
    /// Serve the web dashboard and its JSON API (`--listen`), stop it (`--off`), or say where
    /// it is; `--token` prints a login URL
    Web(WebArgs),
    /// Empty the apps' current log files (every app's without a target)
    Flush(FlushArgs),
    /// Reopen every log file (after an external logrotate moved them)
    #[command(visible_alias = "reloadLogs")]
    ReloadLogs,
    /// Read the balancers' TLS certificates and keys again (every app's without a target;
    /// also on SIGHUP to the daemon): new connections get the new ones, open ones go on
    ReloadCerts(OptionalTargets),
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
    Startup(StartupArgs),
    /// Disable and remove the unit `startup` wrote
    Unstartup(UnstartupArgs),
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
pub struct ApplyArgs {
    /// The config file (default: this directory's herder.toml or ecosystem.config.js …)
    pub file: Option<String>,
    /// Apply each app's `env_<name>`
    #[arg(long = "env", value_name = "NAME")]
    pub env_name: Option<String>,
    /// Only these apps of the file (by name)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Also delete the apps started from this file that it no longer lists
    #[arg(long)]
    pub prune: bool,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The engine: kubernetes, compose or systemd
    #[arg(value_enum)]
    pub target: ExportTarget,
    /// The config file (default: this directory's herder.toml or ecosystem.config.js …)
    pub file: Option<String>,
    /// Apply each app's `env_<name>`
    #[arg(long = "env", value_name = "NAME")]
    pub env_name: Option<String>,
    /// Only these apps of the file (by name)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Write one file per app and kind into this folder instead of printing them
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<std::path::PathBuf>,
    /// The container image of apps whose config names none (`image`)
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Write secret-looking values (`*TOKEN*`, `*PASSWORD*` …) instead of placeholders
    #[arg(long)]
    pub include_secrets: bool,
    /// Kubernetes: a CronJob that restarts the Deployment for `cron_restart`
    #[arg(long)]
    pub cron_jobs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportTarget {
    Kubernetes,
    Compose,
    Systemd,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// App name or id
    pub target: String,
    /// A number of instances (`4`), or a change of it (`+2`, `-1`)
    #[arg(allow_hyphen_values = true)]
    pub count: String,
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
pub struct StartupArgs {
    /// The init system: `systemd` (the only one for now)
    #[arg(default_value = "systemd")]
    pub platform: String,
    /// A unit of your own user (`systemctl --user`), which needs no root
    #[arg(long)]
    pub user: bool,
    /// For a system unit: run the daemon as this user (default: the one running this command)
    #[arg(long, value_name = "USER", conflicts_with = "user")]
    pub run_as: Option<String>,
    /// Write the unit into this folder instead of systemd's
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// Only write the unit file; print the `systemctl` commands instead of running them
    #[arg(long)]
    pub no_systemctl: bool,
}

#[derive(Debug, Args)]
pub struct UnstartupArgs {
    /// The init system: `systemd` (the only one for now)
    #[arg(default_value = "systemd")]
    pub platform: String,
    /// Remove the `--user` unit
    #[arg(long)]
    pub user: bool,
    /// The folder the unit was written to, if not systemd's
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// Only remove the unit file; print the `systemctl` commands instead of running them
    #[arg(long)]
    pub no_systemctl: bool,
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
pub struct OptionalTargets {
    /// App names, ids or namespaces; none: every app with a TLS balancer
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Targets {
    /// App names, ids, namespaces, `all`, or a config file (its apps)
    #[arg(required = true)]
    pub targets: Vec<String>,
}

/// PM2's default format of `--timestamp`.
const DEFAULT_TIMESTAMP: &str = "YYYY-MM-DD-HH:mm:ss";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// App names, ids, namespaces, or `all` (the default)
    pub targets: Vec<String>,
    /// Lines to show from the end of each log file
    #[arg(long, default_value_t = 15, value_name = "N")]
    pub lines: usize,
    /// Print the last lines and exit, without following
    #[arg(long, conflicts_with = "follow")]
    pub nostream: bool,
    /// Follow (the default; for habit's sake)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only stderr
    #[arg(long)]
    pub err: bool,
    /// Only stdout
    #[arg(long)]
    pub out: bool,
    /// One JSON object per line (timestamp, app, instance, stream, message)
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// The lines only: no `name|` prefixes, headers or colors
    #[arg(long)]
    pub raw: bool,
    /// Prefix each line with its time (`--timestamp=FORMAT` in dayjs tokens; default
    /// YYYY-MM-DD-HH:mm:ss)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = DEFAULT_TIMESTAMP, value_name = "FORMAT")]
    pub timestamp: Option<String>,
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
pub struct WebArgs {
    /// Serve it at http://ADDR/ from now on (127.0.0.1:9615 when no address is given; a
    /// bare port means 127.0.0.1; another address only when named, with a warning); kept
    /// across daemon restarts
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::web::DEFAULT_LISTEN)]
    pub listen: Option<String>,
    /// Stop serving it
    #[arg(long, conflicts_with_all = ["listen", "token"])]
    pub off: bool,
    /// Print a login URL holding the token (from `web.token` in the home, mode 0600)
    #[arg(long)]
    pub token: bool,
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
