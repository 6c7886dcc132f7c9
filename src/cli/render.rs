//! Human output: the app table of `list` (and of every command that changes apps) and the
//! detail view of `show`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::{AppInfo, InstanceInfo, Status};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `950ms`, `12s`, `5m`, `3h`, `2D`, as PM2 shows uptimes.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}D", s / 86400),
    }
}

pub fn bytes(b: u64) -> String {
    const K: u64 = 1024;
    match b {
        0..K => format!("{b}b"),
        K..=1_048_575 => format!("{:.1}kb", b as f64 / K as f64),
        1_048_576..=1_073_741_823 => format!("{:.1}mb", b as f64 / (K * K) as f64),
        _ => format!("{:.1}gb", b as f64 / (K * K * K) as f64),
    }
}

/// The name of the user the daemon runs as (the client's, which the socket requires). Read
/// from the environment or /etc/passwd, not through NSS, which may try network services.
fn user() -> String {
    // SAFETY: geteuid(2) has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if let Some(name) = std::env::var("USER").ok().filter(|n| !n.is_empty()) {
        return name;
    }
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn last_exit(i: &InstanceInfo) -> String {
    i.last_exit.as_ref().map(|e| e.reason.to_string()).unwrap_or_else(|| "-".into())
}

fn uptime(i: &InstanceInfo) -> String {
    match (i.status, i.started_at_ms) {
        (Status::Online | Status::Launching | Status::Stopping, Some(t)) => {
            duration(now_ms().saturating_sub(t))
        }
        _ => "0".into(),
    }
}

/// The app table: one row per instance.
pub fn table(apps: &[AppInfo]) -> String {
    if apps.is_empty() {
        return "no apps\nhint: start one with `herder start <script|config>`\n".into();
    }
    let header = [
        "id",
        "name",
        "namespace",
        "mode",
        "pid",
        "uptime",
        "↺",
        "status",
        "cpu",
        "mem",
        "user",
        "last exit",
    ];
    let user = user();
    let mut rows: Vec<[String; 12]> = Vec::new();
    for app in apps {
        for i in &app.instances {
            let name = if app.instances.len() > 1 {
                format!("{}:{}", app.spec.name, i.index)
            } else {
                app.spec.name.clone()
            };
            rows.push([
                app.id.to_string(),
                name,
                app.spec.namespace.clone(),
                "fork".into(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                uptime(i),
                i.restarts.to_string(),
                i.status.to_string(),
                "-".into(),
                i.memory_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                user.clone(),
                last_exit(i),
            ]);
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str(" │ ");
            }
            s.push_str(c);
            s.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    // What the apps say of themselves (`STATUS=`), and why anything is errored, under the table.
    for app in apps {
        for i in &app.instances {
            if let Some(text) = &i.status_text {
                let _ = writeln!(out, "{}: {text}", app.spec.name);
            }
        }
    }
    for app in apps {
        for i in &app.instances {
            if let Some(reason) = &i.reason {
                let _ = writeln!(out, "{}: {reason}", app.spec.name);
                if i.status == Status::Errored {
                    let _ = writeln!(out, "  hint: `herder restart {}` tries again", app.spec.name);
                }
            }
        }
    }
    out
}

/// One event, for people: `12:00:01.123 web:0 exit code 1 (after 50 ms)`.
pub fn event(e: &crate::protocol::Event) -> String {
    let ts = jiff::Timestamp::from_millisecond(e.at_ms as i64)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let mut s = format!("{ts} {}:{} {}", e.app, e.instance, e.kind);
    if let Some(exit) = &e.exit {
        let _ = write!(s, " {exit}");
    }
    if let Some(pid) = e.pid {
        let _ = write!(s, " pid {pid}");
    }
    if let Some(d) = &e.detail {
        let _ = write!(s, " ({d})");
    }
    s
}

/// Everything about one app.
pub fn show(app: &AppInfo) -> String {
    let s = &app.spec;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(out, "{k:>24}  {v}");
    };
    kv("name", s.name.clone());
    kv("id", app.id.to_string());
    kv("namespace", s.namespace.clone());
    kv("script", s.script.clone());
    kv(
        "exec",
        std::iter::once(s.program.as_str())
            .chain(s.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    );
    kv("interpreter", s.interpreter.clone().unwrap_or_else(|| "none".into()));
    kv("cwd", s.cwd.display().to_string());
    if let Some(src) = &s.source {
        kv("config", src.display().to_string());
    }
    kv("instances", s.instances.to_string());
    kv("autorestart", s.autorestart.to_string());
    kv("min_uptime", format!("{} ms", s.min_uptime_ms));
    kv("max_restarts", s.max_restarts.to_string());
    kv("restart_delay", format!("{} ms", s.restart_delay_ms));
    kv(
        "exp_backoff_restart_delay",
        s.exp_backoff_restart_delay_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "off".into()),
    );
    kv("stop_exit_codes", format!("{:?}", s.stop_exit_codes));
    kv("kill_signal", s.kill_signal.clone());
    kv("kill_timeout", format!("{} ms", s.kill_timeout_ms));
    for (i, (o, e)) in app.instances.iter().zip(&app.log_files) {
        let _ = writeln!(out, "\ninstance {}", i.index);
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(out, "{k:>24}  {v}");
        };
        kv("status", i.status.to_string());
        kv("pid", i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()));
        kv("uptime", uptime(i));
        kv("restarts", i.restarts.to_string());
        kv("unstable runs", i.unstable_restarts.to_string());
        kv("memory", i.memory_bytes.map(bytes).unwrap_or_else(|| "-".into()));
        kv("last exit", last_exit(i));
        if let Some(text) = &i.status_text {
            kv("app status", text.clone());
        }
        for p in &i.probes {
            let state = if p.healthy { "healthy" } else { "unhealthy" };
            let last = p.last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default();
            kv(
                &format!("{} probe", p.kind),
                format!("{} — {state}, {} failures in a row{last}", p.target, p.failures),
            );
        }
        if let Some(r) = &i.reason {
            kv("reason", r.clone());
        }
        kv("cgroup", i.cgroup.as_ref().map(|c| c.display().to_string()).unwrap_or_else(|| "none".into()));
        kv("out log", o.display().to_string());
        kv("err log", e.display().to_string());
        if !i.history.is_empty() {
            let h: Vec<String> = i
                .history
                .iter()
                .rev()
                .map(|x| format!("{} after {}", x.reason, duration(x.uptime_ms)))
                .collect();
            kv("recent exits", h.join(", "));
        }
    }
    if !app.log_errors.is_empty() {
        let _ = writeln!(
            out,
            "\nlog write errors (the app keeps running; lines are dropped until writes succeed)"
        );
        for e in &app.log_errors {
            let _ =
                writeln!(out, "{:>24}  {} ({} dropped)", e.path.display(), e.message, bytes(e.dropped_bytes));
        }
    }
    let _ = writeln!(out, "\nenv");
    for (k, v) in &s.env {
        let _ = writeln!(out, "{k:>24}  {}", mask(k, v));
    }
    out
}

/// Secret-looking values are masked in output.
pub fn mask(key: &str, value: &str) -> String {
    let k = key.to_ascii_uppercase();
    if ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL"].iter().any(|w| k.contains(w)) {
        "********".into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(950), "950ms");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(300_000), "5m");
        assert_eq!(duration(2 * 86_400_000), "2D");
        assert_eq!(bytes(512), "512b");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0mb");
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(mask("API_TOKEN", "abc"), "********");
        assert_eq!(mask("db_password", "x"), "********");
        assert_eq!(mask("PORT", "8080"), "8080");
    }
}
