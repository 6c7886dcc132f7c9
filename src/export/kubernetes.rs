//! Kubernetes: per app a Deployment, a Service for its ports, a ConfigMap and a Secret for its
//! environment, and with `--cron-jobs` a CronJob that restarts the Deployment on
//! `cron_restart`. Each is a file of its own (`<app>.deployment.yaml` …), so that `kubectl
//! apply -f DIR` takes them all and a team can drop the ones it does not want.
//!
//! | herder | Kubernetes |
//! | --- | --- |
//! | `image` / `--image` | `containers[0].image` (required) |
//! | script, args, interpreter | `command` (the program), `args`, relative to the image's working directory |
//! | `instances` (`"max"`: this machine's CPU count) | `spec.replicas` (`autostart = false`: 0) |
//! | `namespace` (not `default`) | label `app.kubernetes.io/part-of` |
//! | balancer `listen`, cluster ports, `PORT` | `ports[].containerPort` and a Service |
//! | `env` | a ConfigMap (`envFrom`), secret-looking values in a Secret (`envFrom`) |
//! | `[[apps.health]]` http / tcp / exec | `httpGet` / `tcpSocket` / `exec` of the readiness or liveness probe |
//! | `wait_ready` + `listen_timeout` | a `startupProbe` |
//! | `memory_limit`, `cpu_limit` | `resources.limits` |
//! | `kill_timeout` | `terminationGracePeriodSeconds` (rounded up) |
//! | `kill_signal` (not SIGTERM) | `lifecycle.preStop` that sends it |
//! | numeric `user`, `group` | `securityContext.runAsUser`, `runAsGroup` |
//! | `cron_restart`, `cron_timezone` (`--cron-jobs`) | a CronJob running `kubectl rollout restart`, its ServiceAccount, Role and RoleBinding |
//! | balancer `ip_hash` | Service `sessionAffinity: ClientIP` |
//!
//! Choices where Kubernetes offers more than one way:
//! - `max_memory_restart` is a note, not a memory request. A request is what the scheduler
//!   reserves for a pod, the memory it normally needs; herder's figure is a ceiling to restart
//!   above, which reserved as a request would book each node for the worst case. Nothing in
//!   Kubernetes restarts a pod gracefully on its memory use; `memory_limit` is the hard limit.
//! - A `kill_signal` other than SIGTERM is sent by a `preStop` hook (`kill -<SIG> 1` through
//!   `sh`, then waiting for the app to end), since the kubelet sends SIGTERM only after the hook
//!   returns: the app gets its own signal and the whole grace period, as under herder, and a
//!   note says the image needs `sh`. The `lifecycle.stopSignal` field of recent releases is
//!   behind a feature gate, so it is not written.
//! - The startup probe is a copy of the first readiness probe (else the first probe), whose
//!   `failureThreshold` covers `listen_timeout`: the app's ready signal has no counterpart.
//! - Object names are the app's name as a DNS label starting with a letter (a Service's name
//!   must); the CronJob's is at most 52 characters, as Kubernetes requires.
//!
//! What Kubernetes cannot express is a [`Note`]: herder's own features (see
//! [`herder_only`]), the restart policy's limits and delays (Kubernetes always restarts, with
//! its own backoff), watchdogs, exit codes that stop the app, names for `user`/`group`, the
//! balancer's strategies and settings, herder's shared cluster sockets.

use std::collections::BTreeMap;

use super::yaml::Node;
use super::{
    container_command, dns_label, header, herder_only, note, placeholder, secs_ceil, split_env, AppExport,
    File, Note, Options, Target,
};
use crate::protocol::spec::{BalancerMode, ProbeCheck, ProbeKind, ProbeSpec, Strategy};
use crate::protocol::AppSpec;

/// The label that ties an app's pods to its Deployment and Service.
const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label for herder's `namespace`.
const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The image the restart CronJob runs `kubectl` from.
pub const KUBECTL_IMAGE: &str = "registry.k8s.io/kubectl:v1.33.0";
/// Kubernetes limits a CronJob's name to 52 characters (its Jobs add a suffix).
const CRONJOB_NAME_MAX: usize = 52;

/// The files of one app: a Deployment, and a Service, ConfigMap, Secret and CronJob as they
/// apply; or why it cannot be exported (no image).
pub fn app(spec: &AppSpec, opts: &Options) -> AppExport {
    let objects = objects(spec, opts)?;
    let mut files = Vec::new();
    for (suffix, docs) in &objects.files {
        // The Deployment's file carries every note; the others say what they are.
        let mut comments = if *suffix == "deployment" {
            header(spec, Target::Kubernetes, &objects.notes)
        } else {
            header(spec, Target::Kubernetes, &[])
        };
        comments.extend(objects.comments.get(suffix).cloned().unwrap_or_default());
        let text = docs
            .iter()
            .enumerate()
            .map(|(i, d)| d.document(if i == 0 { &comments } else { &[] }))
            .collect::<Vec<_>>()
            .join("---\n");
        files.push(File { name: format!("{}.{suffix}.yaml", spec.name), app: spec.name.clone(), text });
    }
    Ok((files, objects.notes))
}

/// What an app becomes before it is written: per file (by its suffix, in the order they are
/// applied) its documents, comments of the files besides the header, and the notes.
struct Objects {
    files: Vec<(&'static str, Vec<Node>)>,
    comments: BTreeMap<&'static str, Vec<String>>,
    notes: Vec<Note>,
}

/// One port of the app: its name, the port its container listens on, the Service's port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    container: u16,
    service: u16,
}

/// The app being exported and the notes it gathers.
struct App<'a> {
    spec: &'a AppSpec,
    name: String,
    /// This machine's CPU count, for `instances = "max"`.
    cpus: u32,
    notes: Vec<Note>,
}

impl App<'_> {
    fn note(&mut self, key: &str, message: impl Into<String>) {
        self.notes.push(note(self.spec, key, message));
    }

    fn labels(&self) -> Node {
        let mut labels = Node::map().with(NAME_LABEL, self.name.as_str());
        if self.spec.namespace != crate::protocol::spec::DEFAULT_NAMESPACE {
            labels.set(PART_OF_LABEL, dns_label(&self.spec.namespace, 63));
        }
        labels
    }

    fn metadata(&self, name: &str) -> Node {
        Node::map().with("name", name).with("labels", self.labels())
    }
}

fn objects(spec: &AppSpec, opts: &Options) -> Result<Objects, String> {
    let image = spec.image.clone().or_else(|| opts.image.clone()).ok_or_else(|| {
        "a Deployment needs an image: set `image` in the app's config, or pass `--image`".to_string()
    })?;
    let mut app = App {
        spec,
        name: object_name(&spec.name),
        cpus: opts.cpus.max(1),
        notes: herder_only(spec, Target::Kubernetes),
    };
    let mut files: Vec<(&'static str, Vec<Node>)> = Vec::new();
    let mut comments: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();

    let ports = app_ports(&mut app);
    let env_name = format!("{}-env", app.name);
    let (config, secret, inline) = environment(&mut app, &ports, opts.include_secrets);
    let mut env_from = Vec::new();
    if let Some(data) = config {
        env_from.push(Node::map().with("configMapRef", Node::map().with("name", env_name.as_str())));
        let doc = Node::map()
            .with("apiVersion", "v1")
            .with("kind", "ConfigMap")
            .with("metadata", app.metadata(&env_name))
            .with("data", data);
        files.push(("configmap", vec![doc]));
    }
    if let Some(data) = secret {
        env_from.push(Node::map().with("secretRef", Node::map().with("name", env_name.as_str())));
        let doc = Node::map()
            .with("apiVersion", "v1")
            .with("kind", "Secret")
            .with("metadata", app.metadata(&env_name))
            .with("type", "Opaque")
            .with("stringData", data);
        files.push(("secret", vec![doc]));
        if !opts.include_secrets {
            comments.insert(
                "secret",
                vec!["secret-looking values are placeholders: set them here before applying, or export with `--include-secrets`".into()],
            );
        }
    }

    let deployment = deployment(&mut app, image, &ports, env_from, inline);
    files.push(("deployment", vec![deployment]));
    if let Some(service) = service(&mut app, &ports) {
        files.push(("service", vec![service]));
    }
    if let Some(docs) = restart_job(&mut app, opts.cron_jobs) {
        comments.insert(
            "cronjob",
            vec![format!(
                "`cron_restart` `{}`: a CronJob restarts the Deployment, as a ServiceAccount allowed to do only that",
                spec.cron_restart.as_deref().unwrap_or_default()
            )],
        );
        files.push(("cronjob", docs));
    }
    Ok(Objects { files, comments, notes: app.notes })
}

/// The name of an app's objects: its name as a DNS label that starts with a letter, which a
/// Service's name must.
fn object_name(app: &str) -> String {
    let label = dns_label(app, 63);
    if label.starts_with(|c: char| c.is_ascii_digit()) {
        dns_label(&format!("app-{label}"), 63)
    } else {
        label
    }
}

/// A port's name as Kubernetes wants it (an IANA service name: at most 15 lowercase letters,
/// digits and single `-`, at least one letter), else `port-<n>`.
fn port_name(candidate: &str, port: u16) -> String {
    let c = candidate.to_ascii_lowercase();
    let valid = !c.is_empty()
        && c.len() <= 15
        && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && c.chars().any(|ch| ch.is_ascii_lowercase())
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--");
    if valid {
        c
    } else {
        format!("port-{port}")
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.is_empty()
        || h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The ports of the app: the balancer's public port (the Service's) over the port each pod
/// listens on, else the cluster sockets, else a numeric `PORT`.
fn app_ports(app: &mut App) -> Vec<Port> {
    let spec = app.spec;
    let mut ports = Vec::new();
    let mut addresses = Vec::new();
    if let Some(b) = &spec.balancer {
        let fallback = match b.mode {
            BalancerMode::Http => "http",
            BalancerMode::Tcp => "tcp",
        };
        let container = b.backend_port.unwrap_or(b.listen.port);
        let name = if b.listen.name.parse::<u16>().is_ok() { fallback } else { b.listen.name.as_str() };
        ports.push(Port { name: port_name(name, container), container, service: b.listen.port });
        addresses.extend(b.listen.host.clone());
        balancer_notes(app);
    } else if !spec.sockets.is_empty() {
        for s in &spec.sockets {
            ports.push(Port { name: port_name(&s.name, s.port), container: s.port, service: s.port });
            addresses.extend(s.host.clone());
        }
        app.note(
            "port",
            "in cluster mode: the listening sockets herder binds and passes (`LISTEN_FDS`, descriptors 3, 4 …) are not exported: in a pod the app binds its port itself (`PORT` holds the first)",
        );
    } else if let Some(p) = spec.env.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()).filter(|p| *p > 0)
    {
        ports.push(Port { name: port_name("", p), container: p, service: p });
    }
    // An address of every interface is what a pod needs; another one is herder's to bind.
    for h in addresses.iter().filter(|h| !h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified())) {
        app.note(
            "port",
            format!("address `{h}` is not exported: a Service reaches a pod on the pod's own address, so the app must listen on every address of the pod"),
        );
    }
    ports
}

fn balancer_notes(app: &mut App) {
    let Some(b) = &app.spec.balancer else { return };
    app.note(
        "balancer",
        "is not exported: the Service spreads connections over the pods itself; herder's proxy settings (mode, timeouts, max_fails/fail_timeout, trust_forwarded) have no counterpart, a readiness probe takes a failing pod out",
    );
    match &b.strategy {
        Strategy::RoundRobin => {}
        Strategy::IpHash => {
            app.note("balancer.strategy", "`ip_hash` becomes the Service's `sessionAffinity: ClientIP`")
        }
        other => app.note(
            "balancer.strategy",
            format!("`{other}` is not exported: a Service picks a pod per connection (an Ingress or a service mesh can hash on headers and cookies)"),
        ),
    }
    if !b.weights.is_empty() || !b.backup.is_empty() {
        app.note("balancer.weights/backup", "are not exported: a Service's pods are all equal");
    }
    if b.tls.is_some() {
        app.note(
            "balancer.tls",
            "is not exported: terminate TLS at an Ingress or Gateway (the certificate goes in a Secret of type kubernetes.io/tls)",
        );
    }
    if b.access_log {
        app.note("balancer.access_log", "is not exported: an Ingress controller keeps access logs");
    }
}

/// The environment as the ConfigMap's data, the Secret's data, and the variables that neither
/// can hold (names outside `[-._a-zA-Z0-9]`), set on the container itself.
fn environment(
    app: &mut App,
    ports: &[Port],
    include_secrets: bool,
) -> (Option<Node>, Option<Node>, Vec<Node>) {
    let spec = app.spec;
    // The loader gives an export only what the file declares (no login variables of this
    // machine's accounts either).
    let (mut plain, secret) = split_env(spec);
    if let (Some(_), Some(p)) = (&spec.balancer, ports.first()) {
        // Herder gives each instance a port of its own behind its balancer; a pod has the port
        // to itself.
        plain.insert("PORT".into(), p.container.to_string());
    }
    let valid_key = |k: &str| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    let mut config = Node::map();
    let mut inline = Vec::new();
    for (k, v) in plain {
        if valid_key(&k) {
            config.set(&k, v);
        } else {
            inline.push(Node::map().with("name", k).with("value", v));
        }
    }
    let mut data = Node::map();
    for (k, v) in secret {
        if valid_key(&k) {
            data.set(&k, if include_secrets { v } else { placeholder(&k) });
        } else {
            app.note("env", format!("`{k}` is not exported: a Secret's keys are letters, digits, `-`, `.` and `_`; set it yourself"));
        }
    }
    let some = |n: Node| (n != Node::map()).then_some(n);
    (some(config), some(data), inline)
}

fn deployment(app: &mut App, image: String, ports: &[Port], env_from: Vec<Node>, env: Vec<Node>) -> Node {
    let spec = app.spec;
    let mut container = Node::map().with("name", app.name.as_str()).with("image", image);
    let mut command = container_command(spec);
    let args = command.split_off(1);
    container.set("command", command);
    if !args.is_empty() {
        container.set("args", args);
    }
    if !ports.is_empty() {
        let list: Vec<Node> = ports
            .iter()
            .map(|p| Node::map().with("name", p.name.as_str()).with("containerPort", p.container))
            .collect();
        container.set("ports", Node::List(list));
    }
    if !env_from.is_empty() {
        container.set("envFrom", Node::List(env_from));
    }
    if !env.is_empty() {
        container.set("env", Node::List(env));
    }
    if let Some(resources) = resources(app) {
        container.set("resources", resources);
    }
    for (key, probe) in probes(app, ports) {
        container.set(key, probe);
    }
    if let Some(lifecycle) = stop_signal(app) {
        container.set("lifecycle", lifecycle);
    }
    if let Some(security) = security_context(app) {
        container.set("securityContext", security);
    }
    restart_notes(app);

    let replicas = replicas(app);
    let pod = Node::map()
        .with("terminationGracePeriodSeconds", secs_ceil(spec.kill_timeout_ms))
        .with("containers", vec![container]);
    Node::map()
        .with("apiVersion", "apps/v1")
        .with("kind", "Deployment")
        .with("metadata", app.metadata(&app.name))
        .with(
            "spec",
            Node::map()
                .with("replicas", replicas)
                .with(
                    "selector",
                    Node::map().with("matchLabels", Node::map().with(NAME_LABEL, app.name.as_str())),
                )
                .with(
                    "template",
                    Node::map().with("metadata", Node::map().with("labels", app.labels())).with("spec", pod),
                ),
        )
}

fn replicas(app: &mut App) -> u32 {
    let spec = app.spec;
    let mut replicas = spec.instances;
    if spec.instances_max {
        replicas = app.cpus;
        app.note(
            "instances",
            format!("= \"max\" is {replicas}, the CPU count of this machine: set the replicas for the cluster's nodes"),
        );
    }
    if replicas > 1 || spec.instance_var != crate::protocol::spec::DEFAULT_INSTANCE_VAR {
        app.note(
            "instance_var",
            format!(
                "is not exported: a Deployment's pods have no instance number (`{}`, `HERDER_INSTANCE`); a StatefulSet's pods have an ordinal in their name",
                spec.instance_var
            ),
        );
    }
    if let Some(var) = &spec.increment_var {
        app.note(
            "increment_var",
            format!("is not exported: every pod gets the same `{var}` (each has an address of its own)"),
        );
    }
    if !spec.autostart {
        app.note(
            "autostart",
            format!("= false: replicas is 0 (registered, not running); scale it up with `kubectl scale deployment/{} --replicas={replicas}`", app.name),
        );
        return 0;
    }
    replicas
}

fn resources(app: &mut App) -> Option<Node> {
    let spec = app.spec;
    let mut limits = Node::map();
    if let Some(m) = spec.memory_limit {
        limits.set("memory", memory_quantity(m));
    }
    if let Some(c) = spec.cpu_limit_millis {
        limits.set("cpu", cpu_quantity(c));
    }
    if let Some(m) = spec.max_memory_restart {
        app.note(
            "max_memory_restart",
            format!(
                "({}) is not exported: Kubernetes does not restart a pod gracefully on its memory use, and a request would reserve the ceiling; `memory_limit` is the hard limit",
                memory_quantity(m)
            ),
        );
    }
    (limits != Node::map()).then(|| Node::map().with("limits", limits))
}

/// Bytes as a Kubernetes quantity: `256Mi` when a whole number of MiB, else bytes.
fn memory_quantity(bytes: u64) -> String {
    const MI: u64 = 1024 * 1024;
    if bytes % MI == 0 {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

/// Thousandths of a CPU as a quantity: `2` for whole CPUs, else millicores (`500m`).
fn cpu_quantity(millis: u32) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// `http://host:port/path` as (scheme, host, port, path with its query).
fn split_url(url: &str) -> Option<(&'static str, String, u16, String)> {
    let (scheme, rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        ("HTTP", r, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("HTTPS", r, 443)
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = split_host_port(authority, default_port)?;
    Some((scheme, host, port, path))
}

/// `host:port`, `[v6]:port`, or a host alone (`default_port`).
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((s.to_string(), default_port)),
    }
}

/// The probes of the container by their field: the first readiness and the first liveness
/// probe, and a startup probe for `wait_ready`.
fn probes(app: &mut App, ports: &[Port]) -> Vec<(&'static str, Node)> {
    let spec = app.spec;
    let mut out = Vec::new();
    let mut rounded = false;
    let kinds = [
        (ProbeKind::Readiness, "readiness", "readinessProbe"),
        (ProbeKind::Liveness, "liveness", "livenessProbe"),
    ];
    for (kind, word, field) in kinds {
        let mut of_kind = spec.health.iter().filter(|p| p.kind == kind);
        let Some(first) = of_kind.next() else { continue };
        if of_kind.next().is_some() {
            app.note(
                "health",
                format!("{word} probes after the first are not exported: a container has one {field}"),
            );
        }
        let Some(mut node) = probe(app, first, ports) else { continue };
        rounded |=
            [first.interval_ms, first.timeout_ms, first.initial_delay_ms].iter().any(|ms| ms % 1000 != 0);
        if kind == ProbeKind::Liveness && first.success_threshold != 1 {
            app.note(
                "health",
                format!(
                    "liveness probe: `success_threshold` {} is 1: Kubernetes requires it of liveness probes",
                    first.success_threshold
                ),
            );
            node.set("successThreshold", 1u32);
        }
        out.push((field, node));
    }
    if rounded {
        app.note(
            "health",
            "durations under a second are rounded up: Kubernetes counts probes in whole seconds",
        );
    }
    if spec.wait_ready {
        let first =
            spec.health.iter().find(|p| p.kind == ProbeKind::Readiness).or_else(|| spec.health.first());
        match first.and_then(|p| probe(app, p, ports).map(|n| (p, n))) {
            Some((p, mut node)) => {
                let period = secs_ceil(p.interval_ms).max(1);
                let window = secs_ceil(spec.listen_timeout_ms).div_ceil(period);
                let threshold = window.max(u64::from(p.failure_threshold)).max(1);
                node.set("failureThreshold", threshold);
                node.set("successThreshold", 1u32);
                app.note(
                    "wait_ready",
                    format!(
                        "becomes a startupProbe (the {} probe, up to {} × {period} s for `listen_timeout` {} s): Kubernetes has no ready signal (`READY=1`, `process.send('ready')`)",
                        if p.kind == ProbeKind::Readiness { "readiness" } else { "first" },
                        threshold,
                        secs_ceil(spec.listen_timeout_ms),
                    ),
                );
                out.insert(0, ("startupProbe", node));
            }
            None => app.note(
                "wait_ready",
                "is not exported: Kubernetes has no ready signal (`READY=1`); add a readiness probe, which also becomes the startupProbe",
            ),
        }
    }
    if spec.watchdog_ms.is_some() {
        app.note(
            "watchdog",
            "is not exported: Kubernetes has no watchdog (`WATCHDOG=1`); a liveness probe does its work",
        );
    }
    out
}

/// One probe: its check and timings. `None` (with a note) for a URL it cannot read.
fn probe(app: &mut App, p: &ProbeSpec, ports: &[Port]) -> Option<Node> {
    let spec = app.spec;
    let check = match &p.check {
        ProbeCheck::Http(url) => {
            let Some((scheme, host, port, path)) = split_url(url) else {
                app.note("health", format!("http probe `{url}` is not exported: not an http:// URL"));
                return None;
            };
            let port = pod_port(app, port, ports);
            let get = Node::map().with("path", path).with("port", port);
            let get = if is_loopback(&host) { get } else { get.with("host", host) };
            ("httpGet", get.with("scheme", scheme))
        }
        ProbeCheck::Tcp(addr) => {
            let Some((host, port)) = split_host_port(addr, 0).filter(|(_, p)| *p > 0) else {
                app.note("health", format!("tcp probe `{addr}` is not exported: not host:port"));
                return None;
            };
            let port = pod_port(app, port, ports);
            let socket = Node::map().with("port", port);
            ("tcpSocket", if is_loopback(&host) { socket } else { socket.with("host", host) })
        }
        ProbeCheck::Exec(argv) => {
            // Paths under the app's folder are the image's working directory, as for its command.
            let mut s = spec.clone();
            s.program = argv.first().cloned().unwrap_or_default();
            s.args = argv.iter().skip(1).cloned().collect();
            ("exec", Node::map().with("command", container_command(&s)))
        }
    };
    let mut node = Node::map().with(check.0, check.1);
    if p.initial_delay_ms > 0 {
        node.set("initialDelaySeconds", secs_ceil(p.initial_delay_ms));
    }
    Some(
        node.with("periodSeconds", secs_ceil(p.interval_ms).max(1))
            .with("timeoutSeconds", secs_ceil(p.timeout_ms).max(1))
            .with("successThreshold", p.success_threshold.max(1))
            .with("failureThreshold", p.failure_threshold.max(1)),
    )
}

/// The port a probe reaches in the pod: the balancer's public port is the pod's own port there.
fn pod_port(app: &mut App, port: u16, ports: &[Port]) -> u16 {
    match ports.iter().find(|p| p.service == port && p.container != port) {
        Some(p) if app.spec.balancer.is_some() => {
            app.note(
                "health",
                format!(
                    "a probe of the balancer's port {port} checks the pod's port {} (no balancer in the pod)",
                    p.container
                ),
            );
            p.container
        }
        _ => port,
    }
}

/// The stop signal: Kubernetes sends SIGTERM; another signal is sent by a `preStop` hook.
fn stop_signal(app: &mut App) -> Option<Node> {
    let signal = app.spec.kill_signal.clone();
    if signal == "SIGTERM" || signal == "TERM" {
        return None;
    }
    let short = signal.strip_prefix("SIG").unwrap_or(&signal);
    // The hook waits for the app to end: the kubelet sends SIGTERM as soon as it returns.
    let script = format!("kill -{short} 1; while kill -0 1 2>/dev/null; do sleep 1; done");
    app.note(
        "kill_signal",
        format!("{signal} is sent by a preStop hook (`kill -{short} 1` through `sh` and `sleep`, which the image must have; the app must be the container's process 1): Kubernetes stops containers with SIGTERM"),
    );
    let exec = Node::map().with("command", vec!["sh".to_string(), "-c".into(), script]);
    Some(Node::map().with("preStop", Node::map().with("exec", exec)))
}

fn security_context(app: &mut App) -> Option<Node> {
    let spec = app.spec;
    let mut ctx = Node::map();
    for (key, field, value) in [("user", "runAsUser", &spec.user), ("group", "runAsGroup", &spec.group)] {
        let Some(v) = value else { continue };
        match v.trim().parse::<u32>() {
            Ok(id) => ctx.set(field, id),
            Err(_) => app.note(
                key,
                format!("`{v}` is not exported: Kubernetes takes numeric ids only (`securityContext.{field}`); write the id, or set the image's USER"),
            ),
        }
    }
    (ctx != Node::map()).then_some(ctx)
}

/// The restart policy: Kubernetes restarts a Deployment's containers always, with its own
/// backoff.
fn restart_notes(app: &mut App) {
    let spec = app.spec;
    if !spec.autorestart {
        app.note(
            "autorestart",
            "= false is not exported: a Deployment always restarts its pods; run the app as a Job (`restartPolicy: Never`) instead",
        );
        return;
    }
    app.note(
        "max_restarts/min_uptime",
        "are not exported: Kubernetes restarts a crashed container without a limit, with its own backoff (10 s doubling to 5 min, CrashLoopBackOff)",
    );
    if spec.restart_delay_ms > 0 {
        app.note("restart_delay", "is not exported: Kubernetes waits its own backoff before a restart");
    }
    if spec.exp_backoff_restart_delay_ms.is_some() {
        app.note(
            "exp_backoff_restart_delay",
            "is not exported: Kubernetes' backoff is its own (10 s doubling to 5 min)",
        );
    }
    if !spec.stop_exit_codes.is_empty() {
        app.note(
            "stop_exit_codes",
            "are not exported: a Deployment restarts its containers whatever their exit code (a Job's `podFailurePolicy` can act on them)",
        );
    }
}

fn service(app: &mut App, ports: &[Port]) -> Option<Node> {
    if ports.is_empty() {
        return None;
    }
    let list: Vec<Node> = ports
        .iter()
        .map(|p| {
            Node::map()
                .with("name", p.name.as_str())
                .with("port", p.service)
                .with("targetPort", p.container)
                .with("protocol", "TCP")
        })
        .collect();
    let mut spec = Node::map().with("selector", Node::map().with(NAME_LABEL, app.name.as_str()));
    if app.spec.balancer.as_ref().is_some_and(|b| b.strategy == Strategy::IpHash) {
        spec.set("sessionAffinity", "ClientIP");
    }
    spec.set("ports", Node::List(list));
    Some(
        Node::map()
            .with("apiVersion", "v1")
            .with("kind", "Service")
            .with("metadata", app.metadata(&app.name))
            .with("spec", spec),
    )
}

/// `cron_restart` as a Kubernetes schedule: 5 fields (a 6-field expression whose seconds are
/// `0` loses them) or a macro; `None` for what Kubernetes' cron cannot read (seconds, `L`,
/// `W`, `#`).
fn schedule(expr: &str) -> Option<String> {
    let e = expr.trim();
    if let Some(macro_name) = e.strip_prefix('@') {
        let m = macro_name.to_ascii_lowercase();
        return ["yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"]
            .contains(&m.as_str())
            .then(|| format!("@{m}"));
    }
    let fields: Vec<&str> = e.split_whitespace().collect();
    let fields = match fields.len() {
        5 => &fields[..],
        6 if fields[0] == "0" => &fields[1..],
        _ => return None,
    };
    const NAMES: [&str; 19] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", "SUN", "MON",
        "TUE", "WED", "THU", "FRI", "SAT",
    ];
    let plain = |part: &str| {
        part.is_empty()
            || part == "*"
            || part == "?"
            || part.chars().all(|c| c.is_ascii_digit())
            || NAMES.contains(&part.to_ascii_uppercase().as_str())
    };
    let readable = fields.iter().enumerate().all(|(i, f)| {
        f.split([',', '-', '/']).all(|part| {
            // Kubernetes counts weekdays 0–6.
            plain(part) && !(i == 4 && part.parse::<u32>().is_ok_and(|d| d > 6))
        })
    });
    readable.then(|| fields.join(" "))
}

/// `cron_restart`: a note, or with `--cron-jobs` a CronJob that rolls the Deployment, with the
/// ServiceAccount, Role and RoleBinding it runs as.
fn restart_job(app: &mut App, cron_jobs: bool) -> Option<Vec<Node>> {
    let spec = app.spec;
    let expr = spec.cron_restart.as_deref()?;
    if !cron_jobs {
        app.note(
            "cron_restart",
            format!("`{expr}` is not exported: Kubernetes does not restart on a schedule; `--cron-jobs` writes a CronJob that runs `kubectl rollout restart`"),
        );
        return None;
    }
    let Some(schedule) = schedule(expr) else {
        app.note(
            "cron_restart",
            format!("`{expr}` is not exported: a CronJob's schedule has 5 fields without seconds, `L`, `W` or `#`"),
        );
        return None;
    };
    let zone =
        spec.cron_timezone.clone().or_else(|| jiff02::tz::TimeZone::system().iana_name().map(str::to_string));
    let name = format!("{}-restart", dns_label(&app.name, CRONJOB_NAME_MAX - "-restart".len()));
    app.note(
        "cron_restart",
        format!(
            "`{expr}` is a CronJob ({}) running `kubectl rollout restart deployment/{}` from {KUBECTL_IMAGE}, as the ServiceAccount {name}: the pods are replaced one by one{}",
            if let Some(z) = &zone { format!("`{schedule}` in {z}") } else { format!("`{schedule}` in the cluster's time zone") },
            app.name,
            if spec.cron_timezone.is_none() && zone.is_some() { " (this machine's time zone; `cron_timezone` sets another)" } else { "" },
        ),
    );
    let account = Node::map()
        .with("apiVersion", "v1")
        .with("kind", "ServiceAccount")
        .with("metadata", app.metadata(&name));
    let role = Node::map()
        .with("apiVersion", "rbac.authorization.k8s.io/v1")
        .with("kind", "Role")
        .with("metadata", app.metadata(&name))
        .with(
            "rules",
            vec![Node::map()
                .with("apiGroups", vec!["apps"])
                .with("resources", vec!["deployments"])
                .with("resourceNames", vec![app.name.as_str()])
                .with("verbs", vec!["get", "patch"])],
        );
    let binding = Node::map()
        .with("apiVersion", "rbac.authorization.k8s.io/v1")
        .with("kind", "RoleBinding")
        .with("metadata", app.metadata(&name))
        .with(
            "roleRef",
            Node::map()
                .with("apiGroup", "rbac.authorization.k8s.io")
                .with("kind", "Role")
                .with("name", name.as_str()),
        )
        .with("subjects", vec![Node::map().with("kind", "ServiceAccount").with("name", name.as_str())]);
    let container = Node::map().with("name", "kubectl").with("image", KUBECTL_IMAGE).with(
        "command",
        vec!["kubectl".to_string(), "rollout".into(), "restart".into(), format!("deployment/{}", app.name)],
    );
    let pod = Node::map()
        .with("serviceAccountName", name.as_str())
        .with("restartPolicy", "OnFailure")
        .with("containers", vec![container]);
    let mut cron = Node::map().with("schedule", schedule);
    if let Some(z) = zone {
        cron.set("timeZone", z);
    }
    let cron = cron.with("concurrencyPolicy", "Forbid").with(
        "jobTemplate",
        Node::map().with(
            "spec",
            Node::map().with("backoffLimit", 2u32).with("template", Node::map().with("spec", pod)),
        ),
    );
    let job = Node::map()
        .with("apiVersion", "batch/v1")
        .with("kind", "CronJob")
        .with("metadata", app.metadata(&name))
        .with("spec", cron);
    Some(vec![account, role, binding, job])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::spec::{BalancerSpec, SocketSpec};

    fn spec() -> AppSpec {
        let mut s = AppSpec::new("Web_API", "/usr/bin/node", "/srv/web".into());
        s.args = vec!["/srv/web/server.js".into(), "--port".into(), "3000".into()];
        s.interpreter = Some("node".into());
        s.image = Some("web:1".into());
        s
    }

    fn opts() -> Options {
        Options { cpus: 6, ..Options::default() }
    }

    fn with_env(mut s: AppSpec, vars: &[(&str, &str)]) -> AppSpec {
        s.env = std::sync::Arc::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        s
    }

    /// The node at `path` (`spec.template.0.name`: keys, and list indexes).
    fn at<'a>(node: &'a Node, path: &str) -> &'a Node {
        path.split('.').fold(node, |n, key| {
            let found = match (n, key.parse::<usize>()) {
                (Node::List(items), Ok(i)) => items.get(i),
                _ => n.get(key),
            };
            found.unwrap_or_else(|| panic!("no `{key}` of `{path}` in {n:?}"))
        })
    }

    fn int(n: &Node) -> i64 {
        match n {
            Node::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn string(n: &Node) -> &str {
        match n {
            Node::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn file<'a>(o: &'a Objects, suffix: &str) -> &'a [Node] {
        &o.files.iter().find(|(s, _)| *s == suffix).unwrap_or_else(|| panic!("no {suffix} file")).1
    }

    fn container(o: &Objects) -> &Node {
        at(&file(o, "deployment")[0], "spec.template.spec.containers.0")
    }

    fn keys(o: &Objects) -> Vec<&str> {
        o.notes.iter().map(|n| n.key.as_str()).collect()
    }

    #[test]
    fn an_app_without_an_image_is_refused_naming_the_flag() {
        let mut s = spec();
        s.image = None;
        let err = app(&s, &opts()).unwrap_err();
        assert!(err.contains("--image") && err.contains("`image`"), "{err}");
        let (files, _) = app(&s, &Options { image: Some("x:2".into()), ..opts() }).unwrap();
        assert!(files[0].text.contains("image: \"x:2\""), "{}", files[0].text);
    }

    #[test]
    fn a_plain_app_is_a_deployment_with_its_command_and_stop_settings() {
        let o = objects(&spec(), &opts()).unwrap();
        assert_eq!(o.files.iter().map(|(s, _)| *s).collect::<Vec<_>>(), ["deployment"]);
        let d = &file(&o, "deployment")[0];
        assert_eq!(string(at(d, "metadata.name")), "web-api");
        assert_eq!(string(at(d, "spec.selector.matchLabels").get(NAME_LABEL).unwrap()), "web-api");
        assert_eq!(at(d, "spec.template.metadata.labels"), at(d, "metadata.labels"));
        assert_eq!(int(at(d, "spec.replicas")), 1);
        assert_eq!(int(at(d, "spec.template.spec.terminationGracePeriodSeconds")), 5);
        let c = container(&o);
        assert_eq!(at(c, "command"), &Node::from(vec!["node"]));
        assert_eq!(at(c, "args"), &Node::from(vec!["server.js", "--port", "3000"]));
        assert!(c.get("lifecycle").is_none() && c.get("ports").is_none() && c.get("envFrom").is_none());
        assert!(keys(&o).contains(&"max_restarts/min_uptime"), "{:?}", o.notes);
        assert!(!keys(&o).contains(&"instance_var"), "{:?}", o.notes);
    }

    #[test]
    fn files_are_named_after_the_app_and_start_with_its_header_and_notes() {
        let mut s = with_env(spec(), &[("PORT", "3000")]);
        s.watch = vec!["/srv/web/src".into()];
        let (files, notes) = app(&s, &opts()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Web_API.configmap.yaml", "Web_API.deployment.yaml", "Web_API.service.yaml"]);
        for f in &files {
            assert!(f.text.starts_with("# herder export kubernetes: app `Web_API`\n"), "{}", f.text);
        }
        assert!(files[1].text.contains("# note: `watch` is not exported"), "{}", files[1].text);
        assert!(notes.iter().any(|n| n.key == "watch"));
    }

    #[test]
    fn instances_max_is_the_cpu_count_with_a_note_and_autostart_false_is_no_replica() {
        let mut s = spec();
        s.instances = 6;
        s.instances_max = true;
        let o = objects(&s, &opts()).unwrap();
        assert_eq!(int(at(&file(&o, "deployment")[0], "spec.replicas")), 6);
        let n = o.notes.iter().find(|n| n.key == "instances").unwrap();
        assert!(n.message.contains("6, the CPU count of this machine"), "{n}");
        assert!(keys(&o).contains(&"instance_var"), "{:?}", o.notes);

        s.autostart = false;
        let o = objects(&s, &opts()).unwrap();
        assert_eq!(int(at(&file(&o, "deployment")[0], "spec.replicas")), 0);
        // Stopped, its other notes still hold.
        let ks = keys(&o);
        assert!(ks.contains(&"autostart") && ks.contains(&"instance_var"), "{:?}", o.notes);
        let n = o.notes.iter().find(|n| n.key == "autostart").unwrap();
        assert!(n.message.contains("--replicas=6"), "{n}");
    }

    #[test]
    fn env_goes_to_a_configmap_and_secrets_to_a_secret_as_placeholders() {
        let s = with_env(spec(), &[("NODE_ENV", "production"), ("API_TOKEN", "t0k"), ("MY VAR", "1")]);
        let o = objects(&s, &opts()).unwrap();
        let cm = &file(&o, "configmap")[0];
        assert_eq!(string(at(cm, "metadata.name")), "web-api-env");
        assert_eq!(at(cm, "data"), &Node::map().with("NODE_ENV", "production"));
        let secret = &file(&o, "secret")[0];
        assert_eq!(string(at(secret, "stringData.API_TOKEN")), placeholder("API_TOKEN"));
        let c = container(&o);
        assert_eq!(string(at(c, "envFrom.0.configMapRef.name")), "web-api-env");
        assert_eq!(string(at(c, "envFrom.1.secretRef.name")), "web-api-env");
        // A name a ConfigMap cannot hold is set on the container.
        assert_eq!(string(at(c, "env.0.name")), "MY VAR");

        let o = objects(&s, &Options { include_secrets: true, ..opts() }).unwrap();
        assert_eq!(string(at(&file(&o, "secret")[0], "stringData.API_TOKEN")), "t0k");
    }

    #[test]
    fn probes_map_to_their_kind_with_thresholds_and_wait_ready_adds_a_startup_probe() {
        let mut s = spec();
        let mut ready =
            ProbeSpec::new(ProbeKind::Readiness, ProbeCheck::Http("http://127.0.0.1:3000/ready?x=1".into()));
        ready.interval_ms = 7_000;
        ready.timeout_ms = 1_500;
        ready.failure_threshold = 4;
        ready.success_threshold = 2;
        ready.initial_delay_ms = 3_000;
        let mut live = ProbeSpec::new(
            ProbeKind::Liveness,
            ProbeCheck::Exec(vec!["/srv/web/bin/check".into(), "-q".into()]),
        );
        live.success_threshold = 3;
        let tcp = ProbeSpec::new(ProbeKind::Liveness, ProbeCheck::Tcp("db.internal:5432".into()));
        s.health = vec![live, ready, tcp];
        s.wait_ready = true;
        s.listen_timeout_ms = 60_000;
        let o = objects(&s, &opts()).unwrap();
        let c = container(&o);
        let r = at(c, "readinessProbe");
        assert_eq!(string(at(r, "httpGet.path")), "/ready?x=1");
        assert_eq!(int(at(r, "httpGet.port")), 3000);
        assert_eq!(string(at(r, "httpGet.scheme")), "HTTP");
        assert!(at(r, "httpGet").get("host").is_none(), "{r:?}");
        assert_eq!(
            [at(r, "periodSeconds"), at(r, "timeoutSeconds"), at(r, "failureThreshold")].map(int),
            [7, 2, 4]
        );
        assert_eq!([at(r, "successThreshold"), at(r, "initialDelaySeconds")].map(int), [2, 3]);
        let l = at(c, "livenessProbe");
        assert_eq!(at(l, "exec.command"), &Node::from(vec!["./bin/check", "-q"]));
        assert_eq!(int(at(l, "successThreshold")), 1);
        // The readiness probe, long enough for `listen_timeout`: 60 s at 7 s a try is 9 tries.
        let st = at(c, "startupProbe");
        assert_eq!(at(st, "httpGet"), at(r, "httpGet"));
        assert_eq!(
            [at(st, "failureThreshold"), at(st, "successThreshold"), at(st, "periodSeconds")].map(int),
            [9, 1, 7]
        );
        let messages: Vec<String> = o.notes.iter().map(|n| n.to_string()).collect();
        for want in [
            "`health` liveness probe: `success_threshold` 3",
            "`health` liveness probes after the first",
            "`health` durations under a second",
            "`wait_ready` becomes a startupProbe",
        ] {
            assert!(messages.iter().any(|m| m.contains(want)), "no {want:?} in {messages:#?}");
        }
    }

    #[test]
    fn probe_hosts_are_kept_only_when_not_loopback() {
        let mut s = spec();
        s.health = vec![
            ProbeSpec::new(ProbeKind::Readiness, ProbeCheck::Http("http://example.com/health".into())),
            ProbeSpec::new(ProbeKind::Liveness, ProbeCheck::Tcp("[::1]:9000".into())),
        ];
        let o = objects(&s, &opts()).unwrap();
        let c = container(&o);
        assert_eq!(string(at(c, "readinessProbe.httpGet.host")), "example.com");
        assert_eq!(int(at(c, "readinessProbe.httpGet.port")), 80);
        assert_eq!(at(c, "livenessProbe.tcpSocket"), &Node::map().with("port", 9000u16));
        assert!(c.get("startupProbe").is_none());

        s.health.clear();
        s.wait_ready = true;
        s.watchdog_ms = Some(10_000);
        let o = objects(&s, &opts()).unwrap();
        assert!(container(&o).get("startupProbe").is_none());
        let ks = keys(&o);
        assert!(ks.contains(&"wait_ready") && ks.contains(&"watchdog"), "{:?}", o.notes);
    }

    #[test]
    fn urls_and_addresses_split() {
        assert_eq!(split_url("http://a:81/x"), Some(("HTTP", "a".into(), 81, "/x".into())));
        assert_eq!(split_url("http://a"), Some(("HTTP", "a".into(), 80, "/".into())));
        assert_eq!(split_url("http://[::1]:8080?q#f"), Some(("HTTP", "::1".into(), 8080, "/?q".into())));
        assert_eq!(split_url("https://u@h/p"), Some(("HTTPS", "h".into(), 443, "/p".into())));
        assert_eq!(split_url("http://a:x/"), None);
        assert_eq!(split_url("ftp://a/"), None);
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("[::1]"));
        assert!(is_loopback("0.0.0.0") && !is_loopback("10.0.0.1") && !is_loopback("db"));
    }

    #[test]
    fn limits_grace_signal_and_user() {
        let mut s = spec();
        s.memory_limit = Some(256 * 1024 * 1024);
        s.cpu_limit_millis = Some(500);
        s.max_memory_restart = Some(200 * 1024 * 1024);
        s.kill_timeout_ms = 1_600;
        s.kill_signal = "SIGINT".into();
        s.user = Some("1000".into());
        s.group = Some("staff".into());
        let o = objects(&s, &opts()).unwrap();
        let c = container(&o);
        assert_eq!(
            at(c, "resources"),
            &Node::map().with("limits", Node::map().with("memory", "256Mi").with("cpu", "500m"))
        );
        assert_eq!(
            int(at(&file(&o, "deployment")[0], "spec.template.spec.terminationGracePeriodSeconds")),
            2
        );
        let hook = at(c, "lifecycle.preStop.exec.command");
        assert_eq!(string(at(hook, "0")), "sh");
        assert!(string(at(hook, "2")).starts_with("kill -INT 1;"), "{hook:?}");
        assert_eq!(at(c, "securityContext"), &Node::map().with("runAsUser", 1000u32));
        let ks = keys(&o);
        for k in ["kill_signal", "group", "max_memory_restart"] {
            assert!(ks.contains(&k), "no {k} in {:?}", o.notes);
        }
        assert_eq!(
            (memory_quantity(1000), cpu_quantity(2000), cpu_quantity(1500)),
            ("1000".into(), "2".into(), "1500m".into())
        );
    }

    #[test]
    fn restart_policy_details_are_noted() {
        let mut s = spec();
        s.autorestart = false;
        assert_eq!(keys(&objects(&s, &opts()).unwrap()), ["autorestart"]);
        s.autorestart = true;
        s.restart_delay_ms = 500;
        s.exp_backoff_restart_delay_ms = Some(100);
        s.stop_exit_codes = vec![0];
        assert_eq!(
            keys(&objects(&s, &opts()).unwrap()),
            ["max_restarts/min_uptime", "restart_delay", "exp_backoff_restart_delay", "stop_exit_codes"]
        );
    }

    #[test]
    fn a_balancer_is_a_service_on_its_public_port_to_the_pods_port() {
        let mut s = with_env(spec(), &[("PORT", "3000")]);
        let mut b = BalancerSpec::new(SocketSpec { name: "8080".into(), host: None, port: 8080 });
        b.backend_port = Some(3000);
        b.strategy = Strategy::IpHash;
        s.balancer = Some(b);
        s.instances = 3;
        s.health =
            vec![ProbeSpec::new(ProbeKind::Readiness, ProbeCheck::Http("http://127.0.0.1:8080/".into()))];
        let o = objects(&s, &opts()).unwrap();
        let svc = &file(&o, "service")[0];
        assert_eq!(string(at(svc, "spec.sessionAffinity")), "ClientIP");
        assert_eq!(
            at(svc, "spec.ports.0"),
            &Node::map()
                .with("name", "http")
                .with("port", 8080u16)
                .with("targetPort", 3000u16)
                .with("protocol", "TCP")
        );
        assert_eq!(string(at(svc, "spec.selector").get(NAME_LABEL).unwrap()), "web-api");
        let c = container(&o);
        assert_eq!(int(at(c, "ports.0.containerPort")), 3000);
        assert_eq!(int(at(c, "readinessProbe.httpGet.port")), 3000);
        assert_eq!(string(at(&file(&o, "configmap")[0], "data.PORT")), "3000");
        let ks = keys(&o);
        for k in ["balancer", "balancer.strategy", "health", "instance_var"] {
            assert!(ks.contains(&k), "no {k} in {:?}", o.notes);
        }
    }

    #[test]
    fn cluster_sockets_are_ports_with_valid_names_and_a_note() {
        let mut s = spec();
        s.sockets = vec![
            SocketSpec { name: "8000".into(), host: None, port: 8000 },
            SocketSpec { name: "admin".into(), host: Some("127.0.0.1".into()), port: 9090 },
        ];
        let o = objects(&s, &opts()).unwrap();
        let svc = &file(&o, "service")[0];
        assert_eq!(string(at(svc, "spec.ports.0.name")), "port-8000");
        assert_eq!(string(at(svc, "spec.ports.1.name")), "admin");
        assert_eq!(o.notes.iter().filter(|n| n.key == "port").count(), 2, "{:?}", o.notes);
        assert_eq!(port_name("Very-Long-Port-Name", 1), "port-1");
        assert_eq!(port_name("a--b", 2), "port-2");
        assert_eq!(object_name("3d"), "app-3d");
    }

    #[test]
    fn cron_restart_is_a_note_or_a_cronjob_with_the_rights_it_needs() {
        let mut s = spec();
        s.cron_restart = Some("0 30 3 * * *".into());
        s.cron_timezone = Some("Europe/Paris".into());
        let o = objects(&s, &opts()).unwrap();
        assert!(o.files.iter().all(|(f, _)| *f != "cronjob"));
        assert!(o.notes.iter().any(|n| n.key == "cron_restart" && n.message.contains("--cron-jobs")));

        let o = objects(&s, &Options { cron_jobs: true, ..opts() }).unwrap();
        let docs = file(&o, "cronjob");
        let kinds: Vec<&str> = docs.iter().map(|d| string(at(d, "kind"))).collect();
        assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding", "CronJob"]);
        let job = &docs[3];
        assert_eq!(string(at(job, "spec.schedule")), "30 3 * * *");
        assert_eq!(string(at(job, "spec.timeZone")), "Europe/Paris");
        let pod = at(job, "spec.jobTemplate.spec.template.spec");
        assert_eq!(string(at(pod, "serviceAccountName")), "web-api-restart");
        assert_eq!(string(at(pod, "containers.0.command.3")), "deployment/web-api");
        assert_eq!(at(&docs[1], "rules.0.resourceNames"), &Node::from(vec!["web-api"]));
        assert_eq!(string(at(&docs[2], "roleRef.name")), "web-api-restart");

        s.name = "x".repeat(60);
        let o = objects(&s, &Options { cron_jobs: true, ..opts() }).unwrap();
        assert!(string(at(&file(&o, "cronjob")[3], "metadata.name")).len() <= CRONJOB_NAME_MAX);

        s.cron_restart = Some("*/10 * * * * *".into());
        let o = objects(&s, &Options { cron_jobs: true, ..opts() }).unwrap();
        assert!(o.files.iter().all(|(f, _)| *f != "cronjob"));
        assert!(o.notes.iter().any(|n| n.key == "cron_restart" && n.message.contains("5 fields")));
    }

    #[test]
    fn schedules_kubernetes_can_read() {
        for (expr, want) in [
            ("0 3 * * *", Some("0 3 * * *")),
            ("0 0 3 * * MON-FRI", Some("0 3 * * MON-FRI")),
            ("@Daily", Some("@daily")),
            ("*/5 * * * *", Some("*/5 * * * *")),
            ("15 * * * * *", None),
            ("0 0 L * *", None),
            ("0 0 * * 5#3", None),
            ("0 0 * * 7", None),
            ("@reboot", None),
        ] {
            assert_eq!(schedule(expr).as_deref(), want, "{expr}");
        }
    }
}
