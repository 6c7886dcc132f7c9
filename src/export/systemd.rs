//! systemd: units for the host herder runs on. A service unit per app (`<app>.service`, or the
//! template `<app>@.service` whose instances `<app>@0` … carry the instance number in `%i`), a
//! socket unit for the ports of an app in cluster mode, a timer for `cron_restart`, and the
//! environment files the units read (secret-looking values, per-instance values).
//!
//! | herder | systemd |
//! | --- | --- |
//! | program, args (as resolved here) | `ExecStart=` (absolute, quoted; `%` → `%%`, `$` → `$$`) |
//! | `cwd`, `user`, `group` | `WorkingDirectory=`, `User=`, `Group=` |
//! | `env` | `Environment=`; secret-looking values in `EnvironmentFile=%E/herder/<app>.env` |
//! | `instances` | a template unit, `HERDER_INSTANCE=%i` and the `instance_var` |
//! | `increment_var` | `EnvironmentFile=%E/herder/<app>@%i.env`, one file per instance |
//! | `autorestart`, `stop_exit_codes` | `Restart=always`/`no`, `RestartPreventExitStatus=`, `SuccessExitStatus=` |
//! | `restart_delay`, `exp_backoff_restart_delay` | `RestartSec=`, `RestartSteps=`/`RestartMaxDelaySec=` (systemd 254+) |
//! | `max_restarts`, `min_uptime` | `StartLimitBurst=`, `StartLimitIntervalSec=` |
//! | `wait_ready`, `listen_timeout` | `Type=notify`, `TimeoutStartSec=` (else `Type=exec`) |
//! | `watchdog` | `WatchdogSec=` |
//! | `kill_signal`, `kill_timeout` | `KillSignal=`, `TimeoutStopSec=`, `KillMode=control-group` |
//! | `memory_limit`, `max_memory_restart`, `cpu_limit` | `MemoryMax=` (+ `MemorySwapMax=0`), `MemoryHigh=`, `CPUQuota=` |
//! | cluster ports | `<app>.socket` / `<app>@.socket`: `ListenStream=`, `FileDescriptorName=`, `ReusePort=` |
//! | `cron_restart`, `cron_timezone` | `<app>-restart.timer` (`OnCalendar=`) and a oneshot `systemctl try-restart` |

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::{
    header, herder_only, note, placeholder, secs_ceil, split_env, AppExport, File, Note, Options, Target,
};
use crate::protocol::spec::{BACKOFF_MAX_MS, DEFAULT_NAMESPACE};
use crate::protocol::AppSpec;

/// The first systemd with `RestartSteps=` and `RestartMaxDelaySec=`.
const RESTART_STEPS_SINCE: u32 = 254;

/// Variables systemd sets itself for socket activation and notification: herder leaves the
/// app's own values of them out too.
const MANAGER_VARS: &[&str] =
    &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The units of one app, for the systemd of this machine.
pub fn app(spec: &AppSpec, opts: &Options) -> AppExport {
    units(spec, opts, installed_version())
}

/// The systemd version of this machine, from `systemctl --version` (`HERDER_SYSTEMCTL`
/// replaces the program, as for `herder startup`); none without systemd.
fn installed_version() -> Option<u32> {
    static VERSION: OnceLock<Option<u32>> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let systemctl = std::env::var("HERDER_SYSTEMCTL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "systemctl".into());
        let out = std::process::Command::new(systemctl).arg("--version").output().ok()?;
        out.status.success().then(|| parse_version(&String::from_utf8_lossy(&out.stdout))).flatten()
    })
}

/// `252` of `systemd 252 (252.38-1~deb12u1)`.
fn parse_version(text: &str) -> Option<u32> {
    let mut words = text.lines().next()?.split_whitespace();
    (words.next()? == "systemd").then_some(())?;
    words.next()?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The units of `spec` for systemd `version` (none: not known here).
pub(crate) fn units(spec: &AppSpec, opts: &Options, version: Option<u32>) -> AppExport {
    let mut app = App::new(spec, opts);
    let name = app.name.clone();
    let service = app.unit("service");
    let socket = (!spec.sockets.is_empty()).then(|| app.unit("socket"));
    let mut unit = Section::new("Unit");
    let mut svc = Section::new("Service");

    unit.set("Description", specifiers(&format!("herder app `{}`{}", spec.name, source_of(spec))));
    // The socket an instance gets: its own one in the reuseport group, as under herder.
    let own_socket = socket.as_ref().map(|s| s.replace("@.", "@%i."));
    match &own_socket {
        Some(s) => {
            unit.set("After", format!("network.target {s}"));
            unit.set("Requires", s.clone());
        }
        None => unit.set("After", "network.target"),
    }

    // What starts and when it is up.
    let node = is_node(spec);
    let notify = spec.wait_ready && !node;
    svc.set("Type", if notify { "notify" } else { "exec" });
    if spec.wait_ready {
        if node {
            app.note(
                "wait_ready",
                "is not exported for a Node app: `process.send('ready')` is herder's IPC channel, which systemd does not open; the unit is Type=exec (up once started). An app that sends READY=1 to $NOTIFY_SOCKET can be Type=notify",
            );
        } else {
            svc.set("TimeoutStartSec", span(spec.listen_timeout_ms.max(1)));
        }
    }
    if notify || spec.watchdog_ms.is_some() {
        // herder takes notify messages from any process of the app, not only the main one.
        svc.set("NotifyAccess", "all");
    }
    if let Some(ms) = spec.watchdog_ms {
        svc.set("WatchdogSec", span(ms.max(1)));
    }
    let command: Vec<String> =
        std::iter::once(&spec.program).chain(&spec.args).map(|a| exec_arg(a)).collect();
    svc.set("ExecStart", command.join(" "));
    svc.set("WorkingDirectory", specifiers(&spec.cwd.display().to_string()));
    if let Some(u) = &spec.user {
        svc.set("User", specifiers(u));
    }
    if let Some(g) = &spec.group {
        svc.set("Group", specifiers(g));
    }

    let preload = socket.as_ref().filter(|_| node).map(|_| format!("{name}-node-cluster.js"));
    app.environment(&mut svc, &service, preload.as_deref());
    if spec.logs.disable {
        svc.set("StandardOutput", "null");
        svc.set("StandardError", "null");
    }
    restart_policy(spec, version, &mut unit, &mut svc, &mut app.notes);

    // Stopping: the signal to every process of the app, then SIGKILL past the timeout.
    svc.comment("herder signals the app's whole process tree, then kills what is left");
    svc.set("KillMode", "control-group");
    svc.set("KillSignal", spec.kill_signal.clone());
    // 0 would turn the timeout off, where herder kills at once.
    svc.set("TimeoutStopSec", span(spec.kill_timeout_ms.max(1)));
    app.limits(&mut svc);

    if let Some(socket) = &socket {
        let for_service = if app.template { format!("{name}@N.service") } else { service.clone() };
        let (text, socket_notes) = socket_unit(spec, &for_service, app.template)?;
        app.notes.extend(socket_notes);
        app.file(socket, text);
        if let Some(p) = &preload {
            let text = format!(
                "// herder export systemd: app `{}`: herder's Node preload, which makes `server.listen(port)` use the\n// socket systemd passes. Install as /etc/herder/{p}.\n{}",
                spec.name,
                crate::supervisor::sockets::NODE_PRELOAD
            );
            app.file(p, text);
        }
    }
    let timer = app.cron_restart();
    other_notes(spec, &mut app.notes);
    let hints = app.install_hints(&service, socket.is_some(), timer);

    let mut install = Section::new("Install");
    install.set("WantedBy", "multi-user.target");
    let mut head = header(spec, Target::Systemd, &app.notes);
    head.extend(hints);
    let text = render(&head, &[unit, svc, install]);
    app.files.insert(0, File { name: service, app: spec.name.clone(), text });
    Ok((app.files, app.notes))
}

/// One app being exported: what is known of it, and its files and notes so far.
struct App<'a> {
    spec: &'a AppSpec,
    opts: &'a Options,
    /// Its name in unit names.
    name: String,
    /// A template unit, for several instances.
    template: bool,
    /// How many instances.
    count: u32,
    files: Vec<File>,
    notes: Vec<Note>,
}

impl<'a> App<'a> {
    fn new(spec: &'a AppSpec, opts: &'a Options) -> App<'a> {
        let mut app = App {
            spec,
            opts,
            name: unit_name(&spec.name),
            template: spec.instances_max || spec.instances > 1,
            count: if spec.instances_max { opts.cpus.max(1) } else { spec.instances.max(1) },
            files: Vec::new(),
            notes: herder_only(spec, Target::Systemd),
        };
        if app.name != spec.name {
            let message =
                format!("is `{}` in unit names: systemd takes letters, digits and `:_.-` there", app.name);
            app.note("name", message);
        }
        app
    }

    fn note(&mut self, key: &str, message: impl Into<String>) {
        self.notes.push(note(self.spec, key, message));
    }

    fn file(&mut self, name: &str, text: String) {
        self.files.push(File { name: name.to_string(), app: self.spec.name.clone(), text });
    }

    /// The name of its unit of `kind` (`service`, `socket`): `<app>.kind`, or `<app>@.kind`.
    fn unit(&self, kind: &str) -> String {
        if self.template {
            format!("{}@.{kind}", self.name)
        } else {
            format!("{}.{kind}", self.name)
        }
    }

    /// The environment: the file's, then what herder adds per instance; secret-looking values
    /// in an environment file of their own, values that differ per instance in one per
    /// instance.
    fn environment(&mut self, svc: &mut Section, service: &str, preload: Option<&str>) {
        let spec = self.spec;
        let name = self.name.clone();
        let instance = if self.template { "%i" } else { "0" };
        let per_instance = self.per_instance_env();
        let mut herder_vars: Vec<(String, String)> =
            vec![("HERDER_APP".into(), specifiers(&spec.name)), ("HERDER_INSTANCE".into(), instance.into())];
        let instance_var =
            if spec.instance_var.is_empty() { "NODE_APP_INSTANCE" } else { spec.instance_var.as_str() };
        if instance_var != "HERDER_INSTANCE" && env_name_ok(instance_var) {
            herder_vars.push((instance_var.into(), instance.into()));
        }
        if !spec.sockets.is_empty() {
            let ports: Vec<String> = spec.sockets.iter().map(|s| s.port.to_string()).collect();
            herder_vars.push(("HERDER_LISTEN_PORTS".into(), ports.join(":")));
            if !spec.env.contains_key("PORT") {
                herder_vars.push(("PORT".into(), ports[0].clone()));
            }
            if let Some(file) = preload {
                let require = format!("--require %E/herder/{file}");
                let options = match spec.env.get("NODE_OPTIONS").filter(|o| !o.trim().is_empty()) {
                    Some(own) => format!("{} {require}", specifiers(own)),
                    None => require,
                };
                herder_vars.push(("NODE_OPTIONS".into(), options));
            }
        }
        let (plain, secret) = split_env(spec);
        let overridden = |k: &str| {
            MANAGER_VARS.contains(&k)
                || herder_vars.iter().any(|(h, _)| h == k)
                || per_instance.first().is_some_and(|vars| vars.iter().any(|(p, _)| p == k))
        };
        let invalid: Vec<&str> =
            spec.env.keys().filter(|k| !overridden(k) && !env_name_ok(k)).map(String::as_str).collect();
        if !invalid.is_empty() {
            self.note(
                "env",
                format!(
                    "variables {} are not exported: systemd takes names of letters, digits and `_` that do not start with a digit",
                    invalid.join(", ")
                ),
            );
        }
        let kept = |k: &str| !overridden(k) && env_name_ok(k);
        for (k, v) in plain.iter().filter(|(k, _)| kept(k)) {
            svc.set("Environment", quote_env(&format!("{k}={}", specifiers(v))));
        }
        for (k, v) in &herder_vars {
            // Values herder makes hold specifiers (`%i`, `%E`) on purpose.
            svc.set("Environment", quote_env(&format!("{k}={v}")));
        }

        let secret: Vec<(&String, &String)> = secret.iter().filter(|(k, _)| kept(k)).collect();
        if !secret.is_empty() {
            let file = format!("{name}.env");
            svc.set("EnvironmentFile", format!("%E/herder/{file}"));
            let keys: Vec<&str> = secret.iter().map(|(k, _)| k.as_str()).collect();
            let include = self.opts.include_secrets;
            self.note(
                "env",
                format!(
                    "secret-looking values ({}) are in `{file}`{}, not in the unit (which every user can read): install it as /etc/herder/{file}, mode 0600",
                    keys.join(", "),
                    if include { "" } else { " as placeholders to fill in" }
                ),
            );
            let mut text = comment_block(&[
                format!(
                    "herder export systemd: app `{}`: secret-looking values, read by {service}",
                    spec.name
                ),
                format!("install as /etc/herder/{file}, owned by root, mode 0600"),
            ]);
            for (k, v) in secret {
                let value = if include { v.clone() } else { placeholder(k) };
                let _ = writeln!(text, "{k}={}", env_file_value(&value));
            }
            self.file(&file, text);
        }
        if !per_instance.is_empty() {
            svc.set("EnvironmentFile", format!("%E/herder/{name}@%i.env"));
            for (n, vars) in per_instance.iter().enumerate() {
                let mut text = comment_block(&[
                    format!(
                        "herder export systemd: app `{}`: instance {n}, read by {name}@{n}.service",
                        spec.name
                    ),
                    format!("install as /etc/herder/{name}@{n}.env"),
                ]);
                for (k, v) in vars {
                    let _ = writeln!(text, "{k}={}", env_file_value(v));
                }
                self.file(&format!("{name}@{n}.env"), text);
            }
        }
    }

    /// Variables that differ per instance (`increment_var`, a balanced app's `PORT`), one list
    /// per instance; empty when none does.
    fn per_instance_env(&mut self) -> Vec<Vec<(String, String)>> {
        let spec = self.spec;
        if !self.template {
            return Vec::new();
        }
        let mut vars: Vec<(String, i64)> = Vec::new();
        if let Some(var) = spec.increment_var.as_deref().filter(|v| !v.is_empty()) {
            let start = spec.env.get(var).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
            vars.push((var.to_string(), start));
            let message = format!(
                "`{var}` is in a file per instance, {}@N.env (from {start} up): install them in /etc/herder/",
                self.name
            );
            self.note("increment_var", message);
        }
        if let Some(b) = &spec.balancer {
            if !vars.iter().any(|(v, _)| v == "PORT") {
                // herder gives each instance a loopback port of its own, free ones when the app
                // has no `port` of its own: numbered here from the public port up.
                let first = b.backend_port.unwrap_or(b.listen.port.saturating_add(1));
                vars.push(("PORT".into(), i64::from(first)));
                let message = format!(
                    "instances listen on PORT {first} … {} (in {}@N.env){}",
                    i64::from(first) + i64::from(self.count) - 1,
                    self.name,
                    if b.backend_port.is_some() {
                        ""
                    } else {
                        ", numbered from the public port up where herder picks free ones"
                    }
                );
                self.note("balancer", message);
            }
        }
        if vars.is_empty() {
            return Vec::new();
        }
        (0..self.count)
            .map(|n| vars.iter().map(|(k, start)| (k.clone(), (start + i64::from(n)).to_string())).collect())
            .collect()
    }

    /// Limits, on the unit's cgroup as herder sets them on the instance's.
    fn limits(&mut self, svc: &mut Section) {
        let spec = self.spec;
        if let Some(m) = spec.memory_limit {
            svc.set("MemoryMax", m.to_string());
            // herder counts swap in the limit: none is allowed beyond it.
            svc.set("MemorySwapMax", "0");
            // The kernel kills one process; the app stops only when that is its main process.
            svc.set("OOMPolicy", "continue");
        }
        if let Some(m) = spec.max_memory_restart {
            svc.set("MemoryHigh", m.to_string());
            self.note(
                "max_memory_restart",
                "is MemoryHigh=: past it systemd throttles the app and reclaims its memory instead of restarting it",
            );
        }
        if let Some(c) = spec.cpu_limit_millis {
            svc.set("CPUQuota", cpu_quota(c));
        }
    }

    /// The timer of `cron_restart` and its oneshot service; the timer's name.
    fn cron_restart(&mut self) -> Option<String> {
        let expr = self.spec.cron_restart.as_ref()?;
        match on_calendar(expr, self.spec.cron_timezone.as_deref()) {
            Ok(calendars) => {
                let (timer, service) = restart_timer(self.spec, &self.name, self.template, expr, &calendars);
                let name = format!("{}-restart.timer", self.name);
                self.file(&name, timer);
                self.file(&format!("{}-restart.service", self.name), service);
                Some(name)
            }
            Err(why) => {
                let message =
                    format!("`{expr}` is not exported: {why}; write the timer's OnCalendar= by hand");
                self.note("cron_restart", message);
                None
            }
        }
    }

    /// Comments saying where the files go and which units to enable (a template's instances
    /// by number).
    fn install_hints(&mut self, service: &str, socket: bool, timer: Option<String>) -> Vec<String> {
        let name = self.name.clone();
        let mut enable = Vec::new();
        if self.template {
            let count = self.count;
            if socket {
                enable.extend((0..count).map(|n| format!("{name}@{n}.socket")));
            }
            enable.extend((0..count).map(|n| format!("{name}@{n}.service")));
            let message = format!(
                "{} is the template unit {service}: enable its instances {name}@0 … {name}@{}",
                if self.spec.instances_max {
                    format!("= \"max\" ({count}, the CPU count of this machine)")
                } else {
                    format!("= {count}")
                },
                count - 1
            );
            self.note("instances", message);
        } else {
            if socket {
                enable.push(format!("{name}.socket"));
            }
            enable.push(service.to_string());
        }
        enable.extend(timer);
        let (to_etc, to_units): (Vec<&str>, Vec<&str>) = self
            .files
            .iter()
            .map(|f| f.name.as_str())
            .partition(|f| f.ends_with(".env") || f.ends_with(".js"));
        vec![
            format!(
                "install: {service}{} in /etc/systemd/system/{}",
                to_units.iter().map(|f| format!(" {f}")).collect::<String>(),
                if to_etc.is_empty() {
                    String::new()
                } else {
                    format!(", {} in /etc/herder/", to_etc.join(" "))
                }
            ),
            format!("then: systemctl daemon-reload && systemctl enable --now {}", enable.join(" ")),
        ]
    }
}

/// ` of <file>`, for descriptions.
fn source_of(spec: &AppSpec) -> String {
    spec.source.as_ref().map(|s| format!(" of {}", s.display())).unwrap_or_default()
}

/// Notes on the keys systemd has nothing for.
fn other_notes(spec: &AppSpec, notes: &mut Vec<Note>) {
    if !spec.health.is_empty() {
        notes.push(note(
            spec,
            "health",
            "probes are not exported: systemd has no probes; `watchdog` (WatchdogSec=, the app pinging systemd) is the nearest",
        ));
    }
    if let Some(b) = &spec.balancer {
        notes.push(note(
            spec,
            "balancer",
            format!(
                "is not exported: systemd has no balancer; put a proxy (an nginx `upstream`) on {} in front of the instances' ports",
                b.listen.address()
            ),
        ));
    }
    if !spec.autostart {
        notes.push(note(spec, "autostart", "= false: leave the units disabled and start them when wanted"));
    }
    if spec.namespace != DEFAULT_NAMESPACE {
        notes.push(note(
            spec,
            "namespace",
            format!("`{}` is not exported: systemd has no group of units by that name", spec.namespace),
        ));
    }
    if spec.image.is_some() {
        notes.push(note(spec, "image", "is not used: the unit runs the program on this host"));
    }
}

/// `Restart=` and its companions. herder restarts on every exit (`autorestart`) except the
/// codes of `stop_exit_codes`, which are a normal stop: `Restart=always` with
/// `RestartPreventExitStatus=` says exactly that (`on-failure` would also leave down an app
/// stopped by SIGTERM or SIGINT from outside, which herder restarts), and `SuccessExitStatus=`
/// keeps such a stop from counting as a failure.
fn restart_policy(
    spec: &AppSpec,
    version: Option<u32>,
    unit: &mut Section,
    svc: &mut Section,
    notes: &mut Vec<Note>,
) {
    let codes: Vec<i32> = spec.stop_exit_codes.iter().copied().filter(|c| (0..=255).contains(c)).collect();
    if codes.len() < spec.stop_exit_codes.len() {
        notes.push(note(spec, "stop_exit_codes", "outside 0 … 255 are left out: no process exits with them"));
    }
    let nonzero: Vec<String> = codes.iter().filter(|c| **c != 0).map(i32::to_string).collect();
    if !spec.autorestart {
        svc.set("Restart", "no");
        if !nonzero.is_empty() {
            svc.set("SuccessExitStatus", nonzero.join(" "));
        }
        return;
    }
    svc.set("Restart", "always");
    if !codes.is_empty() {
        svc.set("RestartPreventExitStatus", codes.iter().map(i32::to_string).collect::<Vec<_>>().join(" "));
    }
    if !nonzero.is_empty() {
        svc.set("SuccessExitStatus", nonzero.join(" "));
    }
    match spec.exp_backoff_restart_delay_ms {
        None => svc.set("RestartSec", span(spec.restart_delay_ms)),
        Some(first) => {
            svc.set("RestartSec", span(first));
            let steps = backoff_steps(first);
            if steps > 0 {
                let lines =
                    [("RestartSteps", steps.to_string()), ("RestartMaxDelaySec", span(BACKOFF_MAX_MS))];
                match version {
                    Some(v) if v < RESTART_STEPS_SINCE => {
                        svc.comment(format!(
                            "exp_backoff_restart_delay: systemd {v} here has no RestartSteps= (254 and later); on one that has:"
                        ));
                        for (k, v) in lines {
                            svc.comment(format!("{k}={v}"));
                        }
                        notes.push(note(
                            spec,
                            "exp_backoff_restart_delay",
                            format!(
                                "is not exported: systemd {v} here has no RestartSteps= (254 and later), so every restart waits RestartSec={}; the lines are in the unit as comments",
                                span(first)
                            ),
                        ));
                    }
                    _ => {
                        svc.comment(format!(
                            "exp_backoff_restart_delay: ×1.5 a restart up to {}, in {steps} steps",
                            span(BACKOFF_MAX_MS)
                        ));
                        for (k, v) in lines {
                            svc.set(k, v);
                        }
                        notes.push(note(
                            spec,
                            "exp_backoff_restart_delay",
                            format!(
                                "is RestartSteps=/RestartMaxDelaySec= (systemd 254 and later{}): the delay starts again from RestartSec= only after a manual start, not after 30 s up",
                                if version.is_none() { "; older ones ignore them with a warning" } else { "" }
                            ),
                        ));
                    }
                }
            }
        }
    }
    let (burst, interval_ms) = start_limit(spec);
    unit.comment(format!(
        "max_restarts {} / min_uptime {}: {burst} starts within the time that many runs shorter than min_uptime take",
        spec.max_restarts,
        span(spec.min_uptime_ms)
    ));
    unit.set("StartLimitBurst", burst.to_string());
    unit.set("StartLimitIntervalSec", format!("{}s", secs_ceil(interval_ms)));
}

/// `StartLimitBurst=` and `StartLimitIntervalSec=` (ms) for herder's "more than `max_restarts`
/// runs shorter than `min_uptime` in a row": that many starts plus one (the first) within the
/// time they take when each run is unstable and each restart waits its delay. A `min_uptime`
/// of 0 never makes a run unstable: no limit (an interval of 0).
fn start_limit(spec: &AppSpec) -> (u32, u64) {
    let burst = spec.max_restarts.saturating_add(1);
    if spec.min_uptime_ms == 0 {
        return (burst, 0);
    }
    let mut delays = 0u64;
    let mut delay = None::<u64>;
    for _ in 1..burst.min(10_000) {
        let next = match (spec.exp_backoff_restart_delay_ms, delay) {
            (None, _) => spec.restart_delay_ms,
            (Some(first), None) => first,
            (Some(first), Some(prev)) => {
                ((prev as f64 * 1.5) as u64).min(BACKOFF_MAX_MS).max(first.min(BACKOFF_MAX_MS))
            }
        };
        delay = Some(next);
        delays = delays.saturating_add(next);
    }
    (burst, spec.min_uptime_ms.saturating_mul(u64::from(burst)).saturating_add(delays))
}

/// The steps systemd takes from `first` to herder's ceiling when each multiplies the delay by
/// at most 1.5, as herder's backoff does.
fn backoff_steps(first: u64) -> u32 {
    if first == 0 || first >= BACKOFF_MAX_MS {
        return 0;
    }
    ((BACKOFF_MAX_MS as f64 / first as f64).ln() / 1.5f64.ln()).ceil() as u32
}

/// `CPUQuota=` for thousandths of a CPU: a percentage, to a tenth.
fn cpu_quota(millis: u32) -> String {
    if millis % 10 == 0 {
        format!("{}%", millis / 10)
    } else {
        format!("{}.{}%", millis / 10, millis % 10)
    }
}

/// The socket unit of an app in cluster mode, and its notes. All ports go in one unit, so the
/// descriptors keep the order of `port` (3, 4 …) as under herder: systemd gives the sockets of
/// several units in no set order. Each instance of a template gets a socket unit of its own,
/// all bound to the port in one `SO_REUSEPORT` group, which the kernel spreads connections
/// over: herder's own layout (one socket per instance slot).
fn socket_unit(spec: &AppSpec, service: &str, template: bool) -> Result<(String, Vec<Note>), String> {
    let mut notes = Vec::new();
    let mut unit = Section::new("Unit");
    unit.set(
        "Description",
        specifiers(&format!("herder app `{}`{}: its listening sockets", spec.name, source_of(spec))),
    );
    let mut sock = Section::new("Socket");
    for s in &spec.sockets {
        sock.set("ListenStream", listen_address(spec, s, &mut notes)?);
    }
    // Accept=no: the instance takes the listening socket itself, as under herder.
    sock.set("Accept", "no");
    if template {
        sock.set("ReusePort", "yes");
    }
    match spec.sockets.as_slice() {
        [one] if fd_name_ok(&one.name) => sock.set("FileDescriptorName", one.name.clone()),
        [one] => notes.push(note(
            spec,
            "port",
            format!(
                "name `{}` is not passed in LISTEN_FDNAMES: systemd takes printable names without `:` there",
                one.name
            ),
        )),
        several => {
            let names: Vec<&str> = several.iter().map(|s| s.name.as_str()).collect();
            notes.push(note(
                spec,
                "port",
                format!(
                    "names ({}) are not passed in LISTEN_FDNAMES: systemd names every socket of one unit alike; the descriptors keep the order of `port` (3, 4 …) and HERDER_LISTEN_PORTS has their ports",
                    names.join(", ")
                ),
            ));
        }
    }
    let mut install = Section::new("Install");
    install.set("WantedBy", "sockets.target");
    let lines = vec![format!("herder export systemd: app `{}`: the sockets of its ports, passed to {service} as fd 3, 4 … (LISTEN_FDS)", spec.name)];
    Ok((render(&lines, &[unit, sock, install]), notes))
}

/// `ListenStream=` for a socket: the port (every address, IPv6 and IPv4), or its address and
/// port. systemd takes addresses, not names: a name is resolved here.
fn listen_address(
    spec: &AppSpec,
    s: &crate::protocol::spec::SocketSpec,
    notes: &mut Vec<Note>,
) -> Result<String, String> {
    let Some(host) = &s.host else {
        return Ok(s.port.to_string());
    };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, s.port).to_string());
    }
    use std::net::ToSocketAddrs;
    let found = (host.as_str(), s.port).to_socket_addrs().ok().and_then(|mut a| a.next());
    match found {
        Some(addr) => {
            notes.push(note(
                spec,
                "port",
                format!("`{}` listens on {addr}, the first address of `{host}` here: systemd takes addresses", s.address()),
            ));
            Ok(addr.to_string())
        }
        None => Err(format!(
            "port `{}`: `{host}` has no address here, and systemd's ListenStream= takes an address; give `port` as ADDRESS:PORT",
            s.address()
        )),
    }
}

/// The timer and the oneshot service that restart the app on its `cron_restart` schedule.
fn restart_timer(
    spec: &AppSpec,
    name: &str,
    template: bool,
    expr: &str,
    calendars: &[String],
) -> (String, String) {
    let target = if template { format!("{name}@*.service") } else { format!("{name}.service") };
    let mut unit = Section::new("Unit");
    unit.set(
        "Description",
        specifiers(&format!("herder app `{}`: restart on its cron_restart schedule {expr}", spec.name)),
    );
    let mut timer = Section::new("Timer");
    for c in calendars {
        timer.set("OnCalendar", specifiers(c));
    }
    // Cron fires on the second; systemd's default accuracy is a minute.
    timer.set("AccuracySec", "1s");
    let mut install = Section::new("Install");
    install.set("WantedBy", "timers.target");
    let head = vec![format!("herder export systemd: app `{}`: cron_restart = \"{expr}\"", spec.name)];
    let timer_text = render(&head, &[unit, timer, install]);

    let mut unit = Section::new("Unit");
    unit.set("Description", specifiers(&format!("herder app `{}`: restart it (cron_restart)", spec.name)));
    let mut svc = Section::new("Service");
    svc.set("Type", "oneshot");
    // try-restart: only what runs, as herder restarts only a running app.
    svc.set("ExecStart", format!("{} try-restart {}", exec_arg(&systemctl_path()), exec_arg(&target)));
    let svc_text = render(&head, &[unit, svc]);
    (timer_text, svc_text)
}

/// The absolute path of `systemctl` here, for the timer's `ExecStart=`.
fn systemctl_path() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join("systemctl"))
        .find(|p| p.is_absolute() && p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin/systemctl".into())
}

/// Whether `spec` runs under Node (its program or interpreter), as herder decides it.
fn is_node(spec: &AppSpec) -> bool {
    let base = |p: &str| {
        let b = p.rsplit('/').next().unwrap_or(p);
        b.starts_with("node") || matches!(b, "npm" | "npx" | "yarn" | "pnpm")
    };
    spec.interpreter.as_deref().is_some_and(base) || base(&spec.program)
}

// ---- Names, quoting, escaping ----

/// A unit name for an app: systemd takes ASCII letters, digits and `:_.-` (`@` marks
/// templates); anything else becomes `-`.
fn unit_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-') { c } else { '-' })
        .collect();
    if s.is_empty() {
        "app".into()
    } else {
        s
    }
}

/// Specifiers are `%x` in most values: a literal `%` is `%%`.
fn specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// C-style escapes for a double-quoted systemd word: `\\`, `\"`, control characters.
fn c_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// One word of `ExecStart=`: bare when plain, else double-quoted with C escapes; `%` (a
/// specifier) and `$` (a variable) doubled either way.
fn exec_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | '+' | '=' | ':' | ',' | '@' | '%' | '$')
        });
    let arg = arg.replace('%', "%%").replace('$', "$$");
    if plain {
        return arg;
    }
    let mut out = String::from("\"");
    c_escape(&arg, &mut out);
    out.push('"');
    out
}

/// An `Environment=` assignment, double-quoted with C escapes (`$` has no meaning there; `%`
/// is escaped by the caller, who may mean a specifier).
fn quote_env(assignment: &str) -> String {
    let mut out = String::from("\"");
    c_escape(assignment, &mut out);
    out.push('"');
    out
}

/// A value of an `EnvironmentFile=`: single-quoted (taken as is), else double-quoted with
/// `\` before `"`, `\`, `` ` `` and `$`.
fn env_file_value(v: &str) -> String {
    if !v.contains('\'') {
        return format!("'{v}'");
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Names systemd takes in its environment: letters, digits and `_`, not starting with a digit.
fn env_name_ok(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Names systemd takes in `FileDescriptorName=`: printable ASCII without `:`, at most 255.
fn fd_name_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && n.chars().all(|c| c.is_ascii_graphic() && c != ':')
}

/// A time span for systemd: whole seconds as `Ns`, else milliseconds.
fn span(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

// ---- cron → OnCalendar ----

/// `OnCalendar=` values for a cron expression (5 fields, or 6 with seconds first; `@daily` …),
/// in `tz` when given. Cron matches a day when its day of month *or* its weekday matches (when
/// both are restricted), systemd when both do: such a schedule becomes two calendars.
fn on_calendar(expr: &str, tz: Option<&str>) -> Result<Vec<String>, String> {
    let expr = expr.trim();
    let expanded = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".into(),
        "@weekly" => "0 0 * * 0".into(),
        "@daily" | "@midnight" => "0 0 * * *".into(),
        "@hourly" => "0 * * * *".into(),
        s if s.starts_with('@') => return Err(format!("systemd has no counterpart of `{expr}`")),
        _ => expr.to_string(),
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        _ => return Err("it has neither 5 nor 6 fields".into()),
    };
    let sec = field(sec, 0, 59, &[])?;
    let min = field(rest[0], 0, 59, &[])?;
    let hour = field(rest[1], 0, 23, &[])?;
    let dom = field(rest[2], 1, 31, &[])?;
    const MONTHS: [&str; 12] =
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let month = field(rest[3], 1, 12, &MONTHS)?;
    let dow = weekdays(rest[4])?;
    let star = |f: &str| f == "*" || f == "?";
    let dom_star = star(rest[2]);
    let dow_star = star(rest[4]);
    // Cron tells a stepped `*` (`*/2`) in one of them apart in ways parsers differ on.
    if !dom_star && !dow_star && (rest[2].starts_with('*') || rest[4].starts_with('*')) {
        return Err(
            "a stepped `*` in the day of month or the weekday beside the other one is ambiguous".into()
        );
    }
    let tz = tz.map(|t| format!(" {t}")).unwrap_or_default();
    let one = |dow: &str, dom: &str| {
        let dow = if dow == "*" { String::new() } else { format!("{dow} ") };
        format!("{dow}*-{month}-{dom} {hour}:{min}:{sec}{tz}")
    };
    Ok(if !dom_star && !dow_star { vec![one("*", &dom), one(&dow, "*")] } else { vec![one(&dow, &dom)] })
}

/// One numeric cron field (`*`, `n`, `a-b`, `*/s`, `a/s`, `a-b/s`, lists of them; `names`
/// stand for `lo`, `lo+1` …) in systemd's calendar syntax.
fn field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<String, String> {
    if text == "*" || text == "?" {
        return Ok("*".into());
    }
    let num = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        let n = match names.iter().position(|n| *n == lower) {
            Some(i) => lo + i as u32,
            None => s.parse::<u32>().map_err(|_| format!("systemd has no counterpart of `{s}`"))?,
        };
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!("`{s}` is out of range"))
        }
    };
    let mut items = Vec::new();
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                (r, Some(s.parse::<u32>().ok().filter(|s| *s > 0).ok_or(format!("bad step in `{item}`"))?))
            }
            None => (item, None),
        };
        let (a, b) = match range {
            "*" | "?" => (lo, None),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, Some(num(b)?)),
                None => (num(r)?, None),
            },
        };
        match (b, step) {
            (None, None) => items.push(a.to_string()),
            (None, Some(s)) => items.push(format!("{a}/{s}")),
            (Some(b), None) if a <= b => items.push(format!("{a}..{b}")),
            (Some(b), Some(s)) if a <= b => items.extend((a..=b).step_by(s as usize).map(|n| n.to_string())),
            _ => return Err(format!("the range `{range}` runs backwards")),
        }
    }
    Ok(items.join(","))
}

/// The weekday field (0 or 7 is Sunday; names) as systemd's names.
fn weekdays(text: &str) -> Result<String, String> {
    const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    if text == "*" || text == "?" {
        return Ok("*".into());
    }
    let lower: Vec<String> = NAMES.iter().map(|n| n.to_ascii_lowercase()).collect();
    let names: Vec<&str> = lower.iter().map(String::as_str).collect();
    // Each item expanded to its days, in cron's numbering (7 is Sunday again).
    let spec = field(text, 0, 7, &names)?;
    let mut days = [false; 7];
    for item in spec.split(',') {
        let (a, b, s) = match (item.split_once(".."), item.split_once('/')) {
            (Some((a, b)), _) => (a.parse::<u32>().unwrap_or(0), b.parse::<u32>().unwrap_or(0), 1),
            (None, Some((a, s))) => (a.parse().unwrap_or(0), 7, s.parse().unwrap_or(1)),
            (None, None) => {
                let n = item.parse().unwrap_or(0);
                (n, n, 1)
            }
        };
        for d in (a..=b).step_by(s as usize) {
            days[(d % 7) as usize] = true;
        }
    }
    // systemd's week starts on Monday.
    let order = [1, 2, 3, 4, 5, 6, 0];
    Ok(order.iter().filter(|d| days[**d]).map(|d| NAMES[*d]).collect::<Vec<_>>().join(","))
}

// ---- Writing units ----

/// One `[Section]` of a unit: directives and comments, in order.
struct Section {
    name: &'static str,
    lines: Vec<String>,
}

impl Section {
    fn new(name: &'static str) -> Section {
        Section { name, lines: Vec::new() }
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.lines.push(format!("{key}={}", value.into()));
    }

    fn comment(&mut self, text: impl Into<String>) {
        self.lines.push(format!("# {}", text.into()));
    }
}

/// `lines` as `#` comments.
fn comment_block(lines: &[String]) -> String {
    lines.iter().map(|l| format!("# {}\n", l.replace('\n', " "))).collect()
}

/// A unit file: the comments at its head, then its sections.
fn render(head: &[String], sections: &[Section]) -> String {
    let mut out = comment_block(head);
    for s in sections {
        let _ = write!(out, "\n[{}]\n", s.name);
        for l in &s.lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::spec::SocketSpec;

    fn spec() -> AppSpec {
        let mut s = AppSpec::new("web", "/usr/bin/python3", "/srv/web".into());
        s.args = vec!["/srv/web/app.py".into(), "--port".into(), "3000".into()];
        s
    }

    fn export(spec: &AppSpec, version: Option<u32>) -> (Vec<File>, Vec<Note>) {
        units(spec, &Options { cpus: 4, ..Options::default() }, version).unwrap()
    }

    /// The values of `key` in the file named `name`.
    fn values(files: &[File], name: &str, key: &str) -> Vec<String> {
        let f = files.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no {name} in {files:?}"));
        f.text.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
    }

    #[test]
    fn exec_words_are_quoted_and_escaped() {
        assert_eq!(exec_arg("/usr/bin/node"), "/usr/bin/node");
        assert_eq!(exec_arg("--max-old-space-size=64"), "--max-old-space-size=64");
        assert_eq!(exec_arg("with space"), "\"with space\"");
        assert_eq!(exec_arg(""), "\"\"");
        assert_eq!(exec_arg("100%"), "100%%");
        assert_eq!(exec_arg("$HOME"), "$$HOME");
        assert_eq!(exec_arg("a \"b\" \\c"), r#""a \"b\" \\c""#);
        assert_eq!(exec_arg("echo $X; 50% done"), "\"echo $$X; 50%% done\"");
        // A lone `;` separates commands unless quoted.
        assert_eq!(exec_arg(";"), "\";\"");
        assert_eq!(exec_arg("a\nb\u{1}"), "\"a\\nb\\x01\"");
        assert_eq!(exec_arg("'single'"), "\"'single'\"");
    }

    #[test]
    fn environment_values_are_quoted_and_secrets_go_to_a_file() {
        let mut s = spec();
        s.env = std::sync::Arc::new(
            [
                ("GREETING", "a \"b\" 100% $x"),
                ("API_TOKEN", "t0k'en"),
                ("DB_PASSWORD", "pw"),
                ("bad-name", "x"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        );
        let (files, notes) = export(&s, Some(256));
        assert_eq!(
            values(&files, "web.service", "Environment")[0],
            r#""GREETING=a \"b\" 100%% $x""#,
            "{files:?}"
        );
        assert_eq!(values(&files, "web.service", "EnvironmentFile"), ["%E/herder/web.env"]);
        let env = &files.iter().find(|f| f.name == "web.env").unwrap().text;
        assert!(env.contains("API_TOKEN='<API_TOKEN: set the secret value here>'\n"), "{env}");
        assert!(!env.contains("t0k") && !files[0].text.contains("t0k"), "{env}");
        assert!(notes.iter().any(|n| n.key == "env" && n.message.contains("bad-name")), "{notes:?}");

        let opts = Options { include_secrets: true, cpus: 4, ..Options::default() };
        let (files, _) = units(&s, &opts, Some(256)).unwrap();
        let env = &files.iter().find(|f| f.name == "web.env").unwrap().text;
        assert!(env.contains("API_TOKEN=\"t0k'en\"\n") && env.contains("DB_PASSWORD='pw'\n"), "{env}");
        assert_eq!(env_file_value("a'b\"c$d\\"), r#""a'b\"c\$d\\""#);
    }

    #[test]
    fn the_restart_policy_maps_as_a_table() {
        type Case = (&'static str, fn(&mut AppSpec), &'static [(&'static str, &'static str)]);
        let cases: &[Case] = &[
            (
                "default: always, no delay, 17 starts in 17 s",
                |_| {},
                &[
                    ("Restart", "always"),
                    ("RestartSec", "0s"),
                    ("StartLimitBurst", "17"),
                    ("StartLimitIntervalSec", "17s"),
                ],
            ),
            (
                "the interval in whole seconds, rounded up",
                |s| s.exp_backoff_restart_delay_ms = Some(100),
                &[("StartLimitIntervalSec", "101s")],
            ),
            ("autorestart off", |s| s.autorestart = false, &[("Restart", "no")]),
            (
                "a clean exit stays down",
                |s| s.stop_exit_codes = vec![0],
                &[("Restart", "always"), ("RestartPreventExitStatus", "0")],
            ),
            (
                "listed codes are a normal stop",
                |s| s.stop_exit_codes = vec![0, 3, 300],
                &[("RestartPreventExitStatus", "0 3"), ("SuccessExitStatus", "3")],
            ),
            (
                "restart_delay and the limit",
                |s| {
                    s.restart_delay_ms = 1500;
                    s.max_restarts = 2;
                    s.min_uptime_ms = 2000;
                },
                &[("RestartSec", "1500ms"), ("StartLimitBurst", "3"), ("StartLimitIntervalSec", "9s")],
            ),
            ("min_uptime 0: no limit", |s| s.min_uptime_ms = 0, &[("StartLimitIntervalSec", "0s")]),
            (
                "exponential backoff",
                |s| s.exp_backoff_restart_delay_ms = Some(100),
                &[("RestartSec", "100ms"), ("RestartSteps", "13"), ("RestartMaxDelaySec", "15s")],
            ),
        ];
        for (what, change, want) in cases {
            let mut s = spec();
            change(&mut s);
            let (files, _) = export(&s, Some(256));
            for (key, value) in *want {
                assert_eq!(values(&files, "web.service", key), [*value], "{what}: {key}\n{}", files[0].text);
            }
        }
        let mut s = spec();
        s.autorestart = false;
        let (files, _) = export(&s, Some(256));
        assert!(values(&files, "web.service", "StartLimitBurst").is_empty(), "no limit without restarts");
    }

    #[test]
    fn backoff_lines_are_comments_where_systemd_lacks_them() {
        let mut s = spec();
        s.exp_backoff_restart_delay_ms = Some(100);
        let (files, notes) = export(&s, Some(252));
        let text = &files[0].text;
        assert!(values(&files, "web.service", "RestartSteps").is_empty(), "{text}");
        assert!(
            text.contains("# RestartSteps=13\n") && text.contains("# RestartMaxDelaySec=15s\n"),
            "{text}"
        );
        let n = notes.iter().find(|n| n.key == "exp_backoff_restart_delay").unwrap();
        assert!(n.message.contains("systemd 252"), "{n}");
        // Unknown: written, with the version they need named.
        let (files, notes) = export(&s, None);
        assert_eq!(values(&files, "web.service", "RestartSteps"), ["13"]);
        assert!(notes.iter().any(|n| n.message.contains("older ones ignore them")), "{notes:?}");
    }

    #[test]
    fn steps_grow_by_at_most_one_and_a_half() {
        for first in [1, 100, 1000, 9999, 14_999] {
            let n = backoff_steps(first);
            let factor = (BACKOFF_MAX_MS as f64 / first as f64).powf(1.0 / f64::from(n));
            assert!(factor <= 1.5 + 1e-9 && factor > 1.0, "{first}: {n} steps of ×{factor}");
        }
        assert_eq!(backoff_steps(15_000), 0);
        assert_eq!(backoff_steps(20_000), 0);
    }

    #[test]
    fn start_limit_counts_the_backoff_delays() {
        let mut s = spec();
        s.max_restarts = 3;
        s.min_uptime_ms = 1000;
        s.exp_backoff_restart_delay_ms = Some(1000);
        // 4 runs of 1 s and the delays 1, 1.5, 2.25 s.
        assert_eq!(start_limit(&s), (4, 4000 + 1000 + 1500 + 2250));
        s.max_restarts = u32::MAX;
        assert_eq!(start_limit(&s).0, u32::MAX);
    }

    #[test]
    fn readiness_watchdog_stop_and_limits() {
        let mut s = spec();
        s.wait_ready = true;
        s.listen_timeout_ms = 8000;
        s.watchdog_ms = Some(2500);
        s.kill_signal = "SIGINT".into();
        s.kill_timeout_ms = 12_000;
        s.memory_limit = Some(256 << 20);
        s.max_memory_restart = Some(200 << 20);
        s.cpu_limit_millis = Some(1505);
        s.user = Some("www-data".into());
        let (files, notes) = export(&s, Some(252));
        let v = |k| values(&files, "web.service", k);
        assert_eq!(v("Type"), ["notify"]);
        assert_eq!(v("TimeoutStartSec"), ["8s"]);
        assert_eq!(v("NotifyAccess"), ["all"]);
        assert_eq!(v("WatchdogSec"), ["2500ms"]);
        assert_eq!(v("KillSignal"), ["SIGINT"]);
        assert_eq!(v("TimeoutStopSec"), ["12s"]);
        assert_eq!(v("KillMode"), ["control-group"]);
        assert_eq!(v("MemoryMax"), [(256u64 << 20).to_string()]);
        assert_eq!(v("MemoryHigh"), [(200u64 << 20).to_string()]);
        assert_eq!(v("CPUQuota"), ["150.5%"]);
        assert_eq!(v("User"), ["www-data"]);
        assert_eq!(v("ExecStart"), ["/usr/bin/python3 /srv/web/app.py --port 3000"]);
        assert!(notes.iter().any(|n| n.key == "max_memory_restart"), "{notes:?}");

        // A Node app's ready signal is herder's IPC: Type=exec and a note.
        let mut s = AppSpec::new("api", "/usr/bin/node", "/srv/api".into());
        s.wait_ready = true;
        let (files, notes) = export(&s, Some(252));
        assert_eq!(values(&files, "api.service", "Type"), ["exec"]);
        assert!(notes.iter().any(|n| n.key == "wait_ready"), "{notes:?}");
    }

    #[test]
    fn instances_are_a_template_and_cluster_ports_a_socket_per_instance() {
        let mut s = AppSpec::new("api", "/usr/bin/node", "/srv/api".into());
        s.args = vec!["/srv/api/server.js".into()];
        s.instances = 3;
        s.sockets = vec![SocketSpec { name: "http".into(), host: Some("127.0.0.1".into()), port: 8080 }];
        let (files, notes) = export(&s, Some(252));
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["api@.service", "api@.socket", "api-node-cluster.js"]);
        let env = values(&files, "api@.service", "Environment");
        for want in [
            "\"HERDER_INSTANCE=%i\"",
            "\"NODE_APP_INSTANCE=%i\"",
            "\"HERDER_LISTEN_PORTS=8080\"",
            "\"PORT=8080\"",
            "\"NODE_OPTIONS=--require %E/herder/api-node-cluster.js\"",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
        }
        assert_eq!(values(&files, "api@.service", "Requires"), ["api@%i.socket"]);
        assert_eq!(values(&files, "api@.socket", "ListenStream"), ["127.0.0.1:8080"]);
        assert_eq!(values(&files, "api@.socket", "FileDescriptorName"), ["http"]);
        assert_eq!(values(&files, "api@.socket", "ReusePort"), ["yes"]);
        assert!(files[0]
            .text
            .contains("systemctl enable --now api@0.socket api@1.socket api@2.socket api@0.service"));
        assert!(
            notes.iter().any(|n| n.key == "instances" && n.message.contains("api@0 … api@2")),
            "{notes:?}"
        );

        // Two ports: one unit keeps their order; their names cannot all be passed.
        s.sockets.push(SocketSpec { name: "admin".into(), host: Some("::1".into()), port: 9090 });
        s.instances = 1;
        let (files, notes) = export(&s, Some(252));
        assert_eq!(values(&files, "api.socket", "ListenStream"), ["127.0.0.1:8080", "[::1]:9090"]);
        assert!(values(&files, "api.socket", "FileDescriptorName").is_empty());
        assert!(values(&files, "api.socket", "ReusePort").is_empty());
        assert!(notes.iter().any(|n| n.key == "port" && n.message.contains("http, admin")), "{notes:?}");
    }

    #[test]
    fn increment_var_is_a_file_per_instance() {
        let mut s = spec();
        s.instances = 2;
        s.increment_var = Some("PORT".into());
        s.env = std::sync::Arc::new([("PORT".to_string(), "4000".to_string())].into());
        let (files, notes) = export(&s, Some(252));
        assert_eq!(values(&files, "web@.service", "EnvironmentFile"), ["%E/herder/web@%i.env"]);
        assert!(!files[0].text.contains("PORT=4000\""), "PORT is per instance only:\n{}", files[0].text);
        assert_eq!(values(&files, "web@0.env", "PORT"), ["'4000'"]);
        assert_eq!(values(&files, "web@1.env", "PORT"), ["'4001'"]);
        assert!(notes.iter().any(|n| n.key == "increment_var"), "{notes:?}");
    }

    #[test]
    fn cron_schedules_become_calendars() {
        let cases: &[(&str, Option<&str>, &[&str])] = &[
            ("0 3 * * *", None, &["*-*-* 3:0:0"]),
            ("*/15 * * * *", None, &["*-*-* *:0/15:0"]),
            ("30 */2 * * 1-5", Some("Europe/Paris"), &["Mon,Tue,Wed,Thu,Fri *-*-* 0/2:30:0 Europe/Paris"]),
            ("0 0 1,15 * SUN", None, &["*-*-1,15 0:0:0", "Sun *-*-* 0:0:0"]),
            ("*/10 0 4 1-6/2 JAN,jul *", None, &["*-1,7-1,3,5 4:0:0/10"]),
            ("0 0 * * 5-7", None, &["Fri,Sat,Sun *-*-* 0:0:0"]),
            ("@weekly", None, &["Sun *-*-* 0:0:0"]),
            ("5 4 10-20/5 * *", None, &["*-*-10,15,20 4:5:0"]),
        ];
        for (expr, tz, want) in cases {
            assert_eq!(on_calendar(expr, *tz).unwrap(), *want, "{expr}");
        }
        for bad in ["0 0 L * *", "@reboot", "0 0 * *", "0 0 1 * 1#2", "0 0 */2 * MON"] {
            assert!(on_calendar(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_matches_the_day_of_month_or_the_weekday_as_the_calendars_do() {
        // herder's cron parser ORs a restricted day of month and weekday (Vixie's rule), which
        // is why such a schedule becomes two calendars.
        use std::str::FromStr;
        let cron = croner::Cron::from_str("0 0 1 * MON").unwrap();
        // Tuesday 2030-01-01 matches by its day, Monday 2030-01-07 by its weekday.
        let start: jiff02::Zoned = "2029-12-31T12:00:00+00:00[UTC]".parse().unwrap();
        let first = cron.find_next_occurrence(&start, false).unwrap();
        let second = cron.find_next_occurrence(&first, false).unwrap();
        assert_eq!((first.day(), second.day()), (1, 7));
    }

    #[test]
    fn a_cron_restart_is_a_timer_for_the_running_instances() {
        let mut s = spec();
        s.instances = 2;
        s.cron_restart = Some("0 3 * * *".into());
        s.cron_timezone = Some("UTC".into());
        let (files, _) = export(&s, Some(252));
        assert_eq!(values(&files, "web-restart.timer", "OnCalendar"), ["*-*-* 3:0:0 UTC"]);
        let exec = values(&files, "web-restart.service", "ExecStart");
        assert!(exec[0].ends_with("systemctl try-restart \"web@*.service\""), "{exec:?}");
        assert!(files[0].text.contains("web-restart.timer\n"), "{}", files[0].text);
    }

    #[test]
    fn names_and_versions() {
        assert_eq!(unit_name("my app/v2"), "my-app-v2");
        assert_eq!(unit_name("a.b_c:d-e"), "a.b_c:d-e");
        assert_eq!(parse_version("systemd 252 (252.38-1~deb12u1)\n+PAM"), Some(252));
        assert_eq!(parse_version("systemd 256~rc3 (256~rc3)"), Some(256));
        assert_eq!(parse_version("nothing"), None);
        assert_eq!(cpu_quota(500), "50%");
        assert_eq!(span(0), "0s");
    }
}
