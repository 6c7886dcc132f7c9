//! The command line: [`parse`] reads it (clap's definitions in [`args`], PM2's flags in
//! [`pm2_flags`]), [`run`] runs the command, each in its own file; what they print goes through
//! [`output`] and [`render`].

mod apply;
mod args;
mod config_cmds;
mod context;
mod doctor;
mod events;
mod export;
mod foreground;
pub mod inspect;
mod kill;
mod list;
mod logs;
mod metrics;
mod output;
mod peers;
mod persist;
mod ping;
pub mod pm2_flags;
mod pm2_verbs;
mod render;
mod report;
mod restart;
mod scale;
mod start;
mod startup;
mod update;
mod web;

pub use self::args::*;
pub use self::foreground::run_daemon;
#[doc(hidden)]
pub use self::start::script_spec;

use anyhow::{Context as _, Result};
use clap::Parser;

use self::context::{file_targets, targets};
use self::output::{act, config_failed, out};
use crate::paths::Paths;
use crate::protocol::Request;

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
    output::set_silent(read.silent);
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
        Cmd::Run(a) => return foreground::run_foreground(paths, a),
        Cmd::Start(a) if a.no_daemon => return start::start_foreground(paths, a),
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

async fn dispatch(paths: &Paths, cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Start(args) => start::start(paths, args).await,
        Cmd::Stop(t) => match file_targets(&t.targets)? {
            Ok(targets) => act(paths, Request::Stop { targets }).await,
            Err(errors) => config_failed(&errors),
        },
        Cmd::Restart(a) => restart::restart(paths, a, false).await,
        Cmd::Reload(a) => restart::restart(paths, a, true).await,
        Cmd::Scale(a) => scale::scale(paths, a).await,
        Cmd::Apply(a) => apply::apply(paths, a).await,
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
        Cmd::List(f) => list::list(paths, f).await,
        Cmd::Show(a) => list::show(paths, a).await,
        Cmd::Ping(f) => ping::ping(paths, f.json).await,
        Cmd::Logs(a) => logs::logs(paths, a).await,
        Cmd::Events(f) => events::events(paths, f.json).await,
        Cmd::Metrics(a) => metrics::metrics(paths, a).await,
        Cmd::Web(a) => web::web(paths, a).await,
        Cmd::Flush(a) => logs::flush(paths, a.targets).await,
        Cmd::ReloadLogs => logs::reload(paths).await,
        Cmd::ReloadCerts(t) => reload_certs(paths, targets(&t.targets)).await,
        Cmd::Monit => crate::tui::run(paths).await,
        Cmd::Doctor(f) => doctor::doctor(paths, f.json).await,
        Cmd::Kill => kill::kill(paths).await,
        Cmd::Update(f) => update::update(paths, f.json).await,
        Cmd::Validate(a) => config_cmds::validate(&a),
        Cmd::Init(a) => config_cmds::init(&a),
        Cmd::Convert(a) => config_cmds::convert(&a),
        Cmd::Export(a) => export::export(&a),
        Cmd::Save(a) => persist::save(paths, a.force).await,
        Cmd::Resurrect => persist::resurrect(paths).await,
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

/// `herder reload-certs [targets]`: what was loaded; non-zero when a certificate or key did
/// not load (that balancer keeps its old one).
async fn reload_certs(paths: &Paths, targets: Vec<crate::protocol::Target>) -> Result<i32> {
    let reply = output::expect_ok(crate::client::call(paths, &Request::ReloadCerts { targets }).await?)?;
    let crate::protocol::Response::Certs { loaded, failed } = reply else {
        anyhow::bail!("unexpected answer from the daemon");
    };
    let mut text = String::new();
    for line in &loaded {
        text.push_str(&format!("reloaded {line}\n"));
    }
    if loaded.is_empty() && failed.is_empty() {
        text.push_str("no app has a balancer with `tls`\n");
    }
    output::out(&text)?;
    for line in &failed {
        eprintln!("error: {line}");
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}
