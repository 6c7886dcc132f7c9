//! What every command prints through: stdout (quiet under `--silent`, a closed pipe no error),
//! a daemon's error as the command's, the apps a request touched, and config errors.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, Result};

use super::render;
use crate::client;
use crate::config;
use crate::paths::Paths;
use crate::protocol::{AppInfo, Instances, Request, Response};

/// `-s/--silent`: successful commands print nothing on stdout.
static SILENT: AtomicBool = AtomicBool::new(false);

/// Set by [`super::parse`] from `-s/--silent`, before any command runs.
pub(super) fn set_silent(silent: bool) {
    SILENT.store(silent, Ordering::Relaxed);
}

/// Print `text` to stdout; a closed pipe (`herder list | head`) is not an error.
pub(super) fn out(text: &str) -> Result<()> {
    if SILENT.load(Ordering::Relaxed) {
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
pub(super) fn expect_ok(resp: Response) -> Result<Response> {
    match resp {
        Response::Error(e) => Err(anyhow!("{}", e.message)),
        other => Ok(other),
    }
}

/// Send a request that acts on apps and print the apps it touched.
pub(super) async fn act(paths: &Paths, req: Request) -> Result<i32> {
    match expect_ok(client::call(paths, &req).await?)? {
        Response::Done { apps, instances } => print_done(&req, &apps, &instances)?,
        Response::Started { started, restarted } => print_started(&started, &restarted)?,
        _ => {}
    }
    Ok(0)
}

/// What `start` did: `started `a`, `b`` and `restarted `c`` lines, then the table of them all.
pub(super) fn print_started(started: &[AppInfo], restarted: &[AppInfo]) -> Result<()> {
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

pub(super) fn print_done(req: &Request, apps: &[AppInfo], instances: &[Instances]) -> Result<()> {
    let verb = match req {
        Request::Stop { .. } => "stopped",
        Request::Restart { .. } => "restarted",
        Request::Reload { .. } => "reloaded",
        Request::Delete { .. } => "deleted",
        Request::Signal { .. } => "signalled",
        Request::Reset { .. } => "reset",
        _ => "done",
    };
    let names: Vec<String> = apps.iter().flat_map(|a| done_names(a, instances)).collect();
    let mut text = format!("{verb} {}\n", names.join(", "));
    if !matches!(req, Request::Delete { .. }) {
        text.push_str(&render::table(apps));
    }
    out(&text)
}

/// What a command did to `app`, named as `list` names it: the app, or the instances (`api:1`)
/// the daemon says it acted on (a target named them by their ids).
fn done_names(app: &AppInfo, instances: &[Instances]) -> Vec<String> {
    let name = &app.spec.name;
    match instances.iter().find(|i| i.app == *name) {
        Some(i) if !i.indexes.is_empty() => i.indexes.iter().map(|n| format!("`{name}:{n}`")).collect(),
        _ => vec![format!("`{name}`")],
    }
}

/// Print warnings about a config (options herder ignores), one per line, on stderr.
pub(super) fn print_warnings(warnings: &[config::ConfigError]) {
    for w in warnings {
        eprintln!("{}", w.as_warning());
    }
}

/// Print every config error (each already says `error:`) and fail; nothing was sent.
pub(super) fn config_failed(errors: &config::ConfigErrors) -> Result<i32> {
    print_warnings(&errors.warnings);
    eprint!("{errors}");
    if !errors.to_string().ends_with('\n') {
        eprintln!();
    }
    Ok(1)
}
