//! docker compose: one `compose.yaml` with a service per app (the project is compose's unit).
//!
//! | herder | compose |
//! | --- | --- |
//! | `image` / `--image` | `image` (required) |
//! | script, args | `command`, relative to the image's working directory |
//! | `instances` | `deploy.replicas` |
//! | `autorestart` | `restart: unless-stopped` / `"no"` |
//! | `kill_timeout`, `kill_signal` | `stop_grace_period`, `stop_signal` |
//! | `memory_limit`, `cpu_limit` | `deploy.resources.limits` |
//! | `env` | `environment` (secret-looking values as placeholders) |
//! | first http/tcp/exec probe | `healthcheck` (`start_period` from its delay or `listen_timeout`) |
//! | balancer `listen`, cluster ports, `PORT` | `ports` |
//! | `user`, `group` | `user` |

use super::yaml::Node;
use super::{
    container_command, header, herder_only, note, placeholder, ports, split_env, File, Note, Options,
    Refused, Target,
};
use crate::protocol::spec::{ProbeCheck, ProbeKind};
use crate::protocol::AppSpec;

/// The compose file of `specs`: its files (one), notes, and the apps it cannot take.
pub fn export(specs: &[AppSpec], opts: &Options) -> (Vec<File>, Vec<Note>, Vec<Refused>) {
    let mut services = Node::map();
    let mut notes = Vec::new();
    let mut refused = Vec::new();
    let mut comments = vec!["herder export compose".to_string()];
    for spec in specs {
        match service(spec, opts) {
            Ok((node, app_notes)) => {
                comments.extend(
                    header(spec, Target::Compose, &app_notes)
                        .into_iter()
                        .skip(1)
                        .map(|l| format!("{}: {l}", spec.name)),
                );
                services.set(&service_name(&spec.name), node);
                notes.extend(app_notes);
            }
            Err(message) => refused.push(Refused { app: spec.name.clone(), message }),
        }
    }
    let files = if services == Node::map() {
        Vec::new()
    } else {
        let doc = Node::map().with("services", services);
        vec![File { name: "compose.yaml".into(), app: String::new(), text: doc.document(&comments) }]
    };
    (files, notes, refused)
}

/// A compose service name: letters, digits, `-`, `_`, `.`.
fn service_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .collect();
    s.to_ascii_lowercase()
}

fn duration(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn service(spec: &AppSpec, opts: &Options) -> Result<(Node, Vec<Note>), String> {
    let image = spec.image.clone().or_else(|| opts.image.clone()).ok_or_else(|| {
        "compose needs an image: set `image` in the app's config, or pass `--image`".to_string()
    })?;
    let mut notes = herder_only(spec, Target::Compose);
    let mut s = Node::map().with("image", image).with("command", container_command(spec));

    let (plain, secret) = split_env(spec);
    let mut env = Node::map();
    for (k, v) in plain {
        env.set(&k, v);
    }
    for (k, v) in secret {
        env.set(&k, if opts.include_secrets { v } else { placeholder(&k) });
    }
    if let Some(b) = &spec.balancer {
        // Each replica serves the public port itself; compose or a proxy in front spreads.
        env.set("PORT", b.listen.port.to_string());
        notes.push(note(
            spec,
            "balancer",
            "is not exported: each replica listens on the public port; put compose's own or a proxy's balancing in front",
        ));
    }
    if env != Node::map() {
        s.set("environment", env);
    }

    let replicas = if spec.instances_max { opts.cpus.max(1) } else { spec.instances };
    if spec.instances_max {
        notes.push(note(
            spec,
            "instances",
            format!("= \"max\" is {replicas}, the CPU count of this machine"),
        ));
    }
    let published = ports(spec);
    if !published.is_empty() {
        // Several replicas cannot all publish one host port: publish the container's port only.
        let list: Vec<Node> = published
            .iter()
            .map(|p| Node::from(if replicas > 1 { p.to_string() } else { format!("{p}:{p}") }))
            .collect();
        if replicas > 1 {
            notes.push(note(
                spec,
                "instances",
                "with several replicas, each port is published on a host port docker picks (one fixed host port cannot take them all)",
            ));
        }
        s.set("ports", Node::List(list));
    }

    s.set("restart", if spec.autorestart { "unless-stopped" } else { "no" });
    if spec.autorestart {
        notes.push(note(
            spec,
            "max_restarts/min_uptime/restart_delay",
            "are not exported: docker restarts with its own growing delay and no limit",
        ));
    }
    s.set("stop_signal", spec.kill_signal.clone());
    s.set("stop_grace_period", duration(spec.kill_timeout_ms));

    let mut limits = Node::map();
    if let Some(m) = spec.memory_limit {
        limits.set("memory", format!("{m}b"));
    }
    if let Some(c) = spec.cpu_limit_millis {
        limits.set("cpus", format!("{}", f64::from(c) / 1000.0));
    }
    let mut deploy = Node::map().with("replicas", replicas);
    if limits != Node::map() {
        deploy.set("resources", Node::map().with("limits", limits));
    }
    s.set("deploy", deploy);
    if spec.max_memory_restart.is_some() {
        notes.push(note(
            spec,
            "max_memory_restart",
            "is not exported: compose does not restart on memory use; `memory_limit` becomes the hard limit",
        ));
    }

    if let Some((hc, hc_notes)) = healthcheck(spec) {
        s.set("healthcheck", hc);
        notes.extend(hc_notes);
    } else if spec.wait_ready {
        notes.push(note(
            spec,
            "wait_ready",
            "is not exported: compose has no ready signal; add a readiness probe",
        ));
    }
    if spec.watchdog_ms.is_some() {
        notes.push(note(
            spec,
            "watchdog",
            "is not exported: compose has no watchdog; a liveness probe does its work",
        ));
    }
    if spec.cron_restart.is_some() {
        notes.push(note(spec, "cron_restart", "is not exported: compose does not restart on a schedule"));
    }
    match (&spec.user, &spec.group) {
        (Some(u), Some(g)) => s.set("user", format!("{u}:{g}")),
        (Some(u), None) => s.set("user", u.clone()),
        (None, Some(_)) => notes.push(note(
            spec,
            "group",
            "without `user` is not exported: compose's `user` names a user first",
        )),
        (None, None) => {}
    }
    Ok((s, notes))
}

/// The first probe as a healthcheck (compose has one): http and tcp through a shell command,
/// exec as is.
fn healthcheck(spec: &AppSpec) -> Option<(Node, Vec<Note>)> {
    let probe = spec.health.first()?;
    let mut notes = Vec::new();
    let test = match &probe.check {
        ProbeCheck::Http(url) => {
            notes.push(note(
                spec,
                "health",
                "http probe: the healthcheck runs `curl` (or `wget`), which the image must have",
            ));
            Node::from(vec![
                "CMD-SHELL".to_string(),
                format!("curl -fsS -o /dev/null '{url}' || wget -q -O /dev/null '{url}'"),
            ])
        }
        ProbeCheck::Tcp(addr) => {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), ""));
            notes.push(note(
                spec,
                "health",
                "tcp probe: the healthcheck runs `nc -z`, which the image must have",
            ));
            Node::from(vec!["CMD-SHELL".to_string(), format!("nc -z {host} {port}")])
        }
        ProbeCheck::Exec(argv) => {
            Node::List(std::iter::once(Node::from("CMD")).chain(argv.iter().map(Node::from)).collect())
        }
    };
    if spec.health.len() > 1 {
        notes.push(note(
            spec,
            "health",
            "probes after the first are not exported: compose has one healthcheck",
        ));
    }
    if probe.kind == ProbeKind::Readiness {
        notes.push(note(
            spec,
            "health",
            "readiness probe: compose only marks the container unhealthy; it neither restarts it nor holds traffic",
        ));
    }
    let start = if spec.wait_ready {
        probe.initial_delay_ms.max(spec.listen_timeout_ms)
    } else {
        probe.initial_delay_ms
    };
    let mut hc = Node::map()
        .with("test", test)
        .with("interval", duration(probe.interval_ms))
        .with("timeout", duration(probe.timeout_ms))
        .with("retries", probe.failure_threshold);
    if start > 0 {
        hc.set("start_period", duration(start));
    }
    Some((hc, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        let mut s = AppSpec::new("web", "/usr/bin/node", "/srv/web".into());
        s.args = vec!["/srv/web/server.js".into(), "--port".into(), "3000".into()];
        s.interpreter = Some("node".into());
        s
    }

    #[test]
    fn an_app_without_an_image_is_refused_naming_the_flag() {
        let (files, _, refused) = export(&[spec()], &Options::default());
        assert!(files.is_empty());
        assert_eq!(refused[0].app, "web");
        assert!(refused[0].message.contains("--image"), "{}", refused[0].message);
    }

    #[test]
    fn a_service_has_the_command_relative_to_the_app_and_the_stop_settings() {
        let opts = Options { image: Some("web:1".into()), cpus: 4, ..Options::default() };
        let (files, notes, refused) = export(&[spec()], &opts);
        assert!(refused.is_empty());
        let text = &files[0].text;
        assert!(
            text.contains(
                "command:\n      - node\n      - server.js\n      - \"--port\"\n      - \"3000\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("stop_signal: SIGTERM\n") && text.contains("stop_grace_period: 5s\n"),
            "{text}"
        );
        assert!(text.contains("restart: unless-stopped\n"), "{text}");
        assert!(notes.iter().any(|n| n.key.starts_with("max_restarts")), "{notes:?}");
    }
}
