//! `herder report`: what a bug report needs in one paste (PM2's `report`): versions of herder,
//! its daemon, the kernel and the interpreters, doctor's checks, the app table, and the tail of
//! the daemon's log. It starts no daemon: a report of a machine whose daemon is down says so.

use std::fmt::Write as _;

use anyhow::Result;

use super::output::out;
use super::{doctor, render};
use crate::client::Client;
use crate::human;
use crate::paths::Paths;
use crate::protocol::{Request, Response, PROGRAM_VERSION};

/// Lines of daemon.log in the report.
const LOG_LINES: usize = 40;

pub async fn report(paths: &Paths) -> Result<i32> {
    let mut s =
        String::from("herder report (paste it whole into the bug report; secret env values are masked)\n");
    let now = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string();
    let _ = writeln!(s, "date: {now}\n\n## versions");
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
    let _ = writeln!(s, "herder (this command): {PROGRAM_VERSION}, {exe}");
    let _ = writeln!(s, "kernel: {}", first_line("/proc/sys/kernel/osrelease"));
    let _ = writeln!(s, "system: {}", os_name());
    for program in ["node", "python3"] {
        let _ = writeln!(s, "{program}: {}", version_of(program));
    }

    let mut client = Client::connect(paths, false).await.ok();
    s.push_str("\n## daemon\n");
    let daemon = match &mut client {
        Some(c) => c.request(&Request::Ping).await.ok(),
        None => None,
    };
    match daemon {
        Some(Response::Pong(info)) => {
            let _ = writeln!(
                s,
                "herder daemon {} (pid {}) for {}, up {}, {} app(s), {} time(s) updated in place",
                info.version,
                info.pid,
                info.home.display(),
                human::duration(info.uptime_ms),
                info.apps,
                info.exec_generation
            );
        }
        _ => {
            let _ = writeln!(s, "no daemon runs for {}", paths.home.display());
        }
    }

    s.push_str("\n## doctor\n");
    s.push_str(&doctor::text(&doctor::gather(paths).await));

    if let Some(c) = &mut client {
        if let Ok(Response::List { apps, .. }) = c.request(&Request::List).await {
            s.push_str("\n## apps\n");
            s.push_str(&render::table(&apps));
        }
    }

    let log = paths.daemon_log();
    let _ = writeln!(s, "\n## the last {LOG_LINES} lines of {}", log.display());
    match std::fs::read(&log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(LOG_LINES)..] {
                let _ = writeln!(s, "{l}");
            }
        }
        Err(e) => {
            let _ = writeln!(s, "cannot read it: {e}");
        }
    }
    out(&s)?;
    Ok(0)
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `PRETTY_NAME` of /etc/os-release.
fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `program --version`'s first line, or why there is none.
fn version_of(program: &str) -> String {
    match std::process::Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Ok(o) => format!("`{program} --version` failed ({})", o.status),
        Err(_) => "not found in PATH".into(),
    }
}
