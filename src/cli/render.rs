//! Human output: the app table of `list` (and of every command that changes apps) and the
//! detail view of `show`.

use std::fmt::Write as _;

use crate::human::{bytes, duration};
use crate::protocol::{now_ms, AppInfo, ExitRecord, InstanceInfo, Status};

/// The name of the user the daemon runs as (the client's, which the socket requires). Read
/// from the environment or /etc/passwd, not through NSS, which may try network services.
pub(super) fn user() -> String {
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
    match &i.last_exit {
        Some(e) if e.oom_killed => "oom-killed".into(),
        Some(ExitRecord { memory_restart: Some(limit), .. }) => format!("memory > {}", bytes(*limit)),
        Some(e) => e.reason.to_string(),
        None => "-".into(),
    }
}

fn cpu(i: &InstanceInfo) -> String {
    i.cpu_percent.map(|c| format!("{c:.0}%")).unwrap_or_else(|| "-".into())
}

/// `list --sort field[:asc|desc]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    field: SortField,
    descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    Id,
    Name,
    Namespace,
    Pid,
    Uptime,
    Restarts,
    Status,
    Cpu,
    Mem,
}

impl SortKey {
    pub fn parse(text: &str) -> Result<SortKey, String> {
        let (field, dir) = text.split_once(':').unwrap_or((text, "asc"));
        let field = match field.trim().to_ascii_lowercase().as_str() {
            "id" => SortField::Id,
            "name" => SortField::Name,
            "namespace" => SortField::Namespace,
            "pid" => SortField::Pid,
            "uptime" => SortField::Uptime,
            "restarts" | "restart" => SortField::Restarts,
            "status" => SortField::Status,
            "cpu" => SortField::Cpu,
            "mem" | "memory" => SortField::Mem,
            other => {
                return Err(format!(
                    "`--sort`: unknown field `{other}`\nhint: one of id, name, namespace, pid, uptime, restarts, status, cpu, mem"
                ))
            }
        };
        let descending = match dir.trim() {
            "asc" => false,
            "desc" => true,
            other => return Err(format!("`--sort`: unknown direction `{other}`\nhint: `asc` or `desc`")),
        };
        Ok(SortKey { field, descending })
    }

    /// Order `apps` (by their first instance for per-instance fields; sums for cpu and mem).
    pub fn sort(self, apps: &mut [AppInfo]) {
        use std::cmp::Ordering;
        let num = |a: &AppInfo| -> f64 {
            let first = a.instances.first();
            match self.field {
                SortField::Id => a.id as f64,
                SortField::Pid => first.and_then(|i| i.pid).unwrap_or(0) as f64,
                // Longest-running first reads best ascending: sort by start time, newest last.
                SortField::Uptime => -(first.and_then(|i| i.started_at_ms).unwrap_or(u64::MAX) as f64),
                SortField::Restarts => a.instances.iter().map(|i| i.restarts as f64).sum(),
                SortField::Cpu => a.instances.iter().filter_map(|i| i.cpu_percent).map(f64::from).sum(),
                SortField::Mem => a.instances.iter().filter_map(|i| i.memory_bytes).map(|b| b as f64).sum(),
                _ => 0.0,
            }
        };
        let text = |a: &AppInfo| -> String {
            match self.field {
                SortField::Name => a.spec.name.clone(),
                SortField::Namespace => a.spec.namespace.clone(),
                SortField::Status => a.instances.first().map(|i| i.status.to_string()).unwrap_or_default(),
                _ => String::new(),
            }
        };
        apps.sort_by(|a, b| {
            let o = text(a).cmp(&text(b)).then(num(a).partial_cmp(&num(b)).unwrap_or(Ordering::Equal));
            let o = o.then(a.id.cmp(&b.id));
            if self.descending {
                o.reverse()
            } else {
                o
            }
        });
    }
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
        "watching",
        "last exit",
    ];
    let user = user();
    let mut rows: Vec<[String; 13]> = Vec::new();
    for app in apps {
        for i in &app.instances {
            let name = if app.instances.len() > 1 {
                format!("{}:{}", app.spec.name, i.index)
            } else {
                app.spec.name.clone()
            };
            rows.push([
                i.id.unwrap_or(app.id).to_string(),
                name,
                app.spec.namespace.clone(),
                if app.spec.is_cluster() || app.spec.balancer.is_some() { "cluster" } else { "fork" }.into(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                uptime(i),
                i.restarts.to_string(),
                i.status.to_string(),
                cpu(i),
                i.memory_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                user.clone(),
                if app.spec.watch.is_empty() { "disabled" } else { "enabled" }.into(),
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
    // Events about the daemon itself (its home, a slow reader) name no app.
    let mut s = if e.app.is_empty() {
        format!("{ts} herder {}", e.kind)
    } else {
        format!("{ts} {}:{} {}", e.app, e.instance, e.kind)
    };
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
    // Rows first, so the label column can fit the longest label.
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut kv = |k: &str, v: String| rows.push((k.to_string(), v));
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
    if !s.sockets.is_empty() {
        let shown: Vec<String> = s
            .sockets
            .iter()
            .map(|k| {
                if k.name == k.port.to_string() {
                    k.address()
                } else {
                    format!("{} ({})", k.address(), k.name)
                }
            })
            .collect();
        let spread = app.spread.as_deref().map(|how| format!("; new connections {how}")).unwrap_or_default();
        kv("sockets", format!("{} (cluster mode: shared by every instance{spread})", shown.join(", ")));
    }
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
    let limit = |b: Option<u64>| b.map(bytes).unwrap_or_else(|| "none".into());
    kv("max_memory_restart", limit(s.max_memory_restart));
    kv("memory_limit", limit(s.memory_limit));
    kv(
        "cpu_limit",
        s.cpu_limit_millis.map(|m| format!("{} CPUs", m as f64 / 1000.0)).unwrap_or_else(|| "none".into()),
    );
    if !s.watch.is_empty() {
        let paths: Vec<String> = s.watch.iter().map(|p| p.display().to_string()).collect();
        kv("watch", paths.join(", "));
        if !s.ignore_watch.is_empty() {
            kv("ignore_watch", s.ignore_watch.join(", "));
        }
    }
    for (i, (o, e)) in app.instances.iter().zip(&app.log_files) {
        kv("", String::new());
        kv(&format!("instance {}", i.index), SECTION.into());
        kv("status", i.status.to_string());
        kv("pid", i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()));
        kv("uptime", uptime(i));
        kv("restarts", i.restarts.to_string());
        kv("unstable runs", i.unstable_restarts.to_string());
        kv("cpu", cpu(i));
        kv("memory", i.memory_bytes.map(bytes).unwrap_or_else(|| "-".into()));
        if let Some(n) = i.processes {
            kv("processes", n.to_string());
        }
        if let Some(secs) = i.cpu_seconds {
            kv("cpu time", format!("{secs:.2} s"));
        }
        if !i.usage_history.is_empty() {
            let cpu: Vec<f64> = i.usage_history.iter().map(|(c, _)| f64::from(*c)).collect();
            let mem: Vec<f64> = i.usage_history.iter().map(|(_, m)| *m as f64).collect();
            kv("cpu history", sparkline(&cpu));
            kv("memory history", sparkline(&mem));
        }
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
                .map(|x| {
                    let why = match x.memory_restart {
                        _ if x.oom_killed => "oom-killed".to_string(),
                        Some(limit) => format!("memory > {}", bytes(limit)),
                        None => x.reason.to_string(),
                    };
                    format!("{why} after {}", duration(x.uptime_ms))
                })
                .collect();
            kv("recent exits", h.join(", "));
        }
    }
    if let Some(b) = &app.balancer {
        kv("", String::new());
        kv("balancer", SECTION.into());
        kv("listen", format!("{} ({}, {})", b.listen, b.mode, b.strategy));
        let threads = match b.threads.len() {
            0 | 1 => String::new(),
            n => {
                let each: Vec<String> = b.threads.iter().map(|c| c.to_string()).collect();
                format!(" ({} over {n} threads)", each.join(" + "))
            }
        };
        kv("connections", format!("{}{threads}", b.connections));
        let requests: u64 = b.latency_counts.last().copied().unwrap_or(0);
        let mean = if requests > 0 { b.latency_sum_s / requests as f64 * 1000.0 } else { 0.0 };
        kv("requests", format!("{requests} (mean {mean:.2} ms to the answer's headers)"));
        kv(
            "own answers",
            format!(
                "{} retried elsewhere, {} × 503 (none ready), {} × 502, {} × 504",
                b.retries, b.unavailable, b.bad_gateway, b.timeouts
            ),
        );
        for m in &b.members {
            let state = match (m.up, m.down) {
                (true, _) => "in the pool",
                (false, true) => "out: failing",
                (false, false) => "out: not ready",
            };
            let port = m.port.map(|p| format!("port {p}")).unwrap_or_else(|| "no port".into());
            let mut notes = Vec::new();
            if m.weight != 1 {
                notes.push(format!("weight {}", m.weight));
            }
            if m.backup {
                notes.push("backup".to_string());
            }
            let notes = if notes.is_empty() { String::new() } else { format!(", {}", notes.join(", ")) };
            let [x1, x2, x3, x4, x5] = m.responses;
            kv(
                &format!("instance {}", m.slot),
                format!(
                    "{port}, {state}{notes}; {} under way; answers 1xx {x1} 2xx {x2} 3xx {x3} 4xx {x4} 5xx {x5}; {} failures",
                    m.active, m.failures
                ),
            );
        }
    }
    if !app.log_errors.is_empty() {
        kv("", String::new());
        kv(
            "log write errors (the app keeps running; lines are dropped until writes succeed)",
            SECTION.into(),
        );
        for e in &app.log_errors {
            kv(&e.path.display().to_string(), format!("{} ({} dropped)", e.message, bytes(e.dropped_bytes)));
        }
    }
    kv("", String::new());
    kv("env", SECTION.into());
    for (k, v) in s.env.iter() {
        kv(k, v.clone());
    }
    // Each section's label column fits its own longest label.
    let mut out = String::new();
    for section in rows.split(|(k, v)| k.is_empty() && v.is_empty()) {
        let width = section.iter().filter(|(_, v)| v != SECTION).map(|(k, _)| k.chars().count()).max();
        if !out.is_empty() {
            out.push('\n');
        }
        for (k, v) in section {
            if v == SECTION {
                let _ = writeln!(out, "{k}");
            } else {
                let _ = writeln!(out, "{k:>w$}  {v}", w = width.unwrap_or(0));
            }
        }
    }
    out
}

/// Marks a heading row in [`show`]'s rows.
const SECTION: &str = "\u{0}section";

/// `▁▂▄█`-style line of `values`, scaled to their maximum.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| if max <= 0.0 { BARS[0] } else { BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_label_column_fits_its_longest_label() {
        let mut spec = crate::protocol::AppSpec::new("web", "node", "/srv".into());
        spec.env =
            std::sync::Arc::new([("A_RATHER_LONG_VARIABLE_NAME_HERE".to_string(), "1".to_string())].into());
        let app = AppInfo {
            id: 0,
            spec,
            instances: Vec::new(),
            log_files: Vec::new(),
            log_errors: Vec::new(),
            balancer: None,
            spread: None,
        };
        let text = show(&app);
        let (fields, env) = text.split_once("\nenv\n").unwrap();
        assert!(fields.lines().any(|l| l.starts_with("exp_backoff_restart_delay  ")), "{text}");
        assert!(fields.lines().all(|l| l.find("  ").is_some_and(|c| l[..c].trim_start().len() <= 25)));
        assert!(fields.lines().all(|l| l.chars().nth(25) == Some(' ')), "one column:\n{fields}");
        assert_eq!(env.trim_end(), "A_RATHER_LONG_VARIABLE_NAME_HERE  1");
    }
}
