//! Metrics: the apps' and the daemon's figures in the Prometheus text format (version 0.0.4),
//! for `herder metrics` and an opt-in HTTP endpoint (`herder metrics --listen`, or
//! `HERDER_METRICS_LISTEN` in the daemon's environment).
//!
//! The endpoint is served by hyper (HTTP/1.1) on the daemon's runtime: `GET` or `HEAD` of
//! `/metrics` (and `/`) answer the text, another path 404, another method 405; one request per
//! connection, its head at most 16 KiB (431 past it), 10 s to read and answer it. It answers
//! from the sampler's figures, so a scrape never reads /proc for the apps.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Daemon;
use crate::protocol::{AppInfo, Status};

/// The running endpoint, if any.
#[derive(Default)]
pub(crate) struct Endpoint {
    inner: Mutex<Option<Running>>,
}

struct Running {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// The listening socket (owned by the task), for `herder update`.
    fd: std::os::fd::RawFd,
    /// Set to `true` to stop accepting, the socket kept open.
    pause: tokio::sync::watch::Sender<bool>,
    /// Connections being answered.
    open: Arc<AtomicUsize>,
}

impl Endpoint {
    pub fn address(&self) -> Option<SocketAddr> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|r| r.addr)
    }

    /// The listening socket's descriptor, for `herder update`.
    pub fn listener_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|r| r.fd)
    }

    /// Before `herder update` hands the socket over: stop accepting (scrapes wait in the
    /// socket's queue for the next image) and let the scrapes under way be answered, for up to
    /// 2 s. [`Endpoint::resume`] undoes it if the update does not happen.
    pub async fn quiesce(&self) {
        let open = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = inner.as_ref() else { return };
            let _ = r.pause.send(true);
            r.open.clone()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Accept again after [`Endpoint::quiesce`].
    pub fn resume(&self) {
        if let Some(r) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = r.pause.send(false);
        }
    }

    /// Stop serving.
    pub fn stop(&self) {
        if let Some(r) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            r.task.abort();
        }
    }
}

/// Parse and check an address for the endpoint: loopback only, since it has no
/// authentication.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        // A bare port means 127.0.0.1.
        Err(_) => match text.parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => return Err(format!("`{text}` is not an address such as 127.0.0.1:9209")),
        },
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the metrics endpoint has no authentication\nhint: listen on 127.0.0.1 and let a local agent or a proxy expose it"
        ));
    }
    Ok(addr)
}

/// Serve the metrics on `addr` (replacing an endpoint already running).
pub(crate) async fn listen(daemon: &Arc<Daemon>, addr: SocketAddr) -> Result<SocketAddr, String> {
    if daemon.metrics.address() == Some(addr) {
        return Ok(addr);
    }
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    serve(daemon, listener)
}

/// Serve the metrics on `listener` (bound here, or by an earlier image of the daemon).
pub(crate) fn serve(daemon: &Arc<Daemon>, listener: TcpListener) -> Result<SocketAddr, String> {
    use std::os::fd::AsRawFd;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let fd = listener.as_raw_fd();
    daemon.metrics.stop();
    let d = Arc::downgrade(daemon);
    let (pause, mut paused) = tokio::sync::watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    let task = tokio::spawn(async move {
        let mut errors = super::AcceptErrors::new("metrics endpoint");
        let mut http = http1::Builder::new();
        // One request per connection, as a scrape every few seconds needs no more; the head
        // in the case its writers are used to (some scrapers' tests match it exactly).
        http.keep_alive(false).title_case_headers(true).max_header_size(MAX_HEAD);
        loop {
            // Paused for `herder update`: the socket stays open, the next image answers what
            // waits in its queue.
            if *paused.borrow_and_update() {
                if paused.wait_for(|p| !*p).await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            let stream = tokio::select! {
                s = errors.next(&listener) => s,
                _ = paused.changed() => continue,
            };
            let Some(daemon) = d.upgrade() else { return };
            let service = service_fn(move |req| {
                let answer = answer(&daemon, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let open = counted.clone();
            open.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    *daemon.metrics.inner.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(Running { addr: bound, task, fd, pause, open });
    tracing::info!(%bound, "metrics endpoint listening");
    Ok(bound)
}

/// The longest request head read (hyper answers 431 past it).
const MAX_HEAD: usize = 16 * 1024;

/// How long a connection may stay open, its request read and answered.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);

fn answer<B>(daemon: &Daemon, req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics" | "/") => {
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render(daemon))
        }
        (&Method::GET | &Method::HEAD, _) => {
            (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics\n".into())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".into()),
    };
    let mut res = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, kind)
        .header(header::CONTENT_LENGTH, body.len());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        res = res.header(header::ALLOW, "GET, HEAD");
    }
    // HEAD: the head GET would get, its Content-Length included; hyper sends no body.
    let body = if req.method() == Method::HEAD { Bytes::new() } else { Bytes::from(body) };
    res.body(Full::new(body)).unwrap_or_default()
}

/// A label value escaped as the text format wants (`\`, `"` and newlines).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A metric family: its help, type and samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        let value = if value.is_finite() { value } else { 0.0 };
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Every metric, in the text format.
pub(crate) fn render(daemon: &Daemon) -> String {
    let apps: Vec<AppInfo> = daemon.registry().apps.values().map(|a| a.brief_info()).collect();
    let now_ms = crate::protocol::now_ms();
    let mut out = String::with_capacity(512 + apps.len() * 1024);
    let labels = |a: &AppInfo, index: u32| {
        format!(
            "app=\"{}\",namespace=\"{}\",id=\"{}\",index=\"{index}\"",
            esc(&a.spec.name),
            esc(&a.spec.namespace),
            a.id
        )
    };
    type Get = fn(&crate::protocol::InstanceInfo, u64) -> Option<f64>;
    let per_instance: [(&str, &str, &str, Get); 7] = [
        ("herder_app_up", "gauge", "1 when the instance is online, else 0.", |i, _| {
            Some(if i.status == Status::Online { 1.0 } else { 0.0 })
        }),
        (
            "herder_app_restarts_total",
            "counter",
            "Restarts of the instance since it was added or reset.",
            |i, _| Some(i.restarts as f64),
        ),
        (
            "herder_app_cpu_seconds_total",
            "counter",
            "CPU time used by the instance's current process tree, in seconds (starts over with a new process).",
            |i, _| i.cpu_seconds,
        ),
        (
            "herder_app_cpu_ratio",
            "gauge",
            "CPU use over the last sample interval, in cores (1 = one full core).",
            |i, _| i.cpu_percent.map(|c| f64::from(c) / 100.0),
        ),
        (
            "herder_app_memory_bytes",
            "gauge",
            "Resident memory of the instance's whole process tree, in bytes.",
            |i, _| i.memory_bytes.map(|b| b as f64),
        ),
        ("herder_app_processes", "gauge", "Processes in the instance's tree.", |i, _| {
            i.processes.map(f64::from)
        }),
        ("herder_app_uptime_seconds", "gauge", "Seconds since the instance's process started.", |i, now| {
            i.pid.and(i.started_at_ms).map(|t| now.saturating_sub(t) as f64 / 1000.0)
        }),
    ];
    for (name, kind, help, get) in per_instance {
        let mut f = Family::new(&mut out, name, kind, help);
        for a in &apps {
            for i in &a.instances {
                if let Some(v) = get(i, now_ms) {
                    f.sample(name, &labels(a, i.index), v);
                }
            }
        }
    }
    {
        let name = "herder_app_socket_queued";
        let mut f = Family::new(
            &mut out,
            name,
            "gauge",
            "Connections waiting in the accept queue of the instance's sockets (cluster mode).",
        );
        let reg = daemon.registry();
        for a in apps.iter().filter(|a| !a.spec.sockets.is_empty()) {
            let Some(app) = reg.apps.get(&a.id) else { continue };
            for i in &a.instances {
                f.sample(name, &labels(a, i.index), app.sockets.queued(i.index as usize) as f64);
            }
        }
    }
    balancer_metrics(daemon, &apps, &mut out);
    {
        let name = "herder_app_status";
        let mut f = Family::new(&mut out, name, "gauge", "1 for the instance's current status.");
        for a in &apps {
            for i in &a.instances {
                f.sample(name, &format!("{},status=\"{}\"", labels(a, i.index), i.status), 1.0);
            }
        }
    }
    {
        let name = "herder_app_oom_kills_total";
        let mut f = Family::new(
            &mut out,
            name,
            "counter",
            "Kernel OOM kills of the instance since it was added or reset.",
        );
        for a in &apps {
            for i in &a.instances {
                f.sample(name, &labels(a, i.index), i.oom_kills as f64);
            }
        }
    }
    // The daemon itself.
    let uptime = daemon.started.elapsed().as_secs_f64();
    // Its own process only: a walk of its descendants would count every app.
    let (cpu, rss) =
        crate::process::usage::own().map_or((0.0, 0.0), |r| (r.cpu_us as f64 / 1e6, r.rss as f64));
    let daemon_series: [(&str, &str, &str, f64); 6] = [
        ("herder_daemon_uptime_seconds", "gauge", "Seconds since the daemon started.", uptime),
        ("herder_daemon_apps", "gauge", "Apps the daemon supervises.", apps.len() as f64),
        (
            "herder_daemon_instances",
            "gauge",
            "Instances the daemon supervises.",
            apps.iter().map(|a| a.instances.len()).sum::<usize>() as f64,
        ),
        ("herder_daemon_cpu_seconds_total", "counter", "CPU time used by the daemon, in seconds.", cpu),
        ("herder_daemon_memory_bytes", "gauge", "Resident memory of the daemon, in bytes.", rss),
        (
            "herder_daemon_log_followers",
            "gauge",
            "Clients following logs right now.",
            daemon.followers.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, v) in daemon_series {
        Family::new(&mut out, name, kind, help).sample(name, "", v);
    }
    let name = "herder_build_info";
    Family::new(&mut out, name, "gauge", "The daemon's version.").sample(
        name,
        &format!("version=\"{}\"", esc(crate::protocol::PROGRAM_VERSION)),
        1.0,
    );
    out
}

/// The balancers' figures: per app, and per instance in its pool.
fn balancer_metrics(daemon: &Daemon, apps: &[AppInfo], out: &mut String) {
    let views: Vec<(&AppInfo, crate::protocol::BalancerView)> = {
        let reg = daemon.registry();
        apps.iter().filter_map(|a| Some((a, reg.apps.get(&a.id)?.front.get()?.view()))).collect()
    };
    if views.is_empty() {
        return;
    }
    let app_label =
        |a: &AppInfo| format!("app=\"{}\",namespace=\"{}\"", esc(&a.spec.name), esc(&a.spec.namespace));
    let member_label = |a: &AppInfo, slot: u32| format!("{},index=\"{slot}\"", app_label(a));
    type PerApp = fn(&crate::protocol::BalancerView) -> f64;
    let per_app: [(&str, &str, &str, PerApp); 5] = [
        ("herder_balancer_connections", "gauge", "Client connections open on the balancer.", |b| {
            b.connections as f64
        }),
        (
            "herder_balancer_retries_total",
            "counter",
            "Requests sent again to another instance after a failed connect.",
            |b| b.retries as f64,
        ),
        (
            "herder_balancer_unavailable_total",
            "counter",
            "Requests answered 503 by the balancer: no instance ready.",
            |b| b.unavailable as f64,
        ),
        (
            "herder_balancer_bad_gateway_total",
            "counter",
            "Requests answered 502 by the balancer: the instance failed before answering.",
            |b| b.bad_gateway as f64,
        ),
        (
            "herder_balancer_timeouts_total",
            "counter",
            "Requests answered 504 by the balancer: no answer within `first_byte_timeout`.",
            |b| b.timeouts as f64,
        ),
    ];
    for (name, kind, help, get) in per_app {
        let mut f = Family::new(out, name, kind, help);
        for (a, b) in &views {
            f.sample(name, &app_label(a), get(b));
        }
    }
    {
        let name = "herder_balancer_thread_connections";
        let help = "Client connections each of the balancer's threads serves.";
        let mut f = Family::new(out, name, "gauge", help);
        for (a, b) in &views {
            for (thread, n) in b.threads.iter().enumerate() {
                f.sample(name, &format!("{},thread=\"{thread}\"", app_label(a)), *n as f64);
            }
        }
    }
    {
        let name = "herder_balancer_response_seconds";
        let mut f = Family::new(out, name, "histogram", "Time from a request to its answer's headers.");
        for (a, b) in &views {
            let bounds = b.latency_le.iter().map(f64::to_string).chain(["+Inf".to_string()]);
            for (le, n) in bounds.zip(&b.latency_counts) {
                f.sample(&format!("{name}_bucket"), &format!("{},le=\"{le}\"", app_label(a)), *n as f64);
            }
            let count = b.latency_counts.last().copied().unwrap_or(0);
            f.sample(&format!("{name}_sum"), &app_label(a), b.latency_sum_s);
            f.sample(&format!("{name}_count"), &app_label(a), count as f64);
        }
    }
    {
        let name = "herder_balancer_responses_total";
        let mut f = Family::new(
            out,
            name,
            "counter",
            "Answers of each instance through the balancer, by status class.",
        );
        for (a, b) in &views {
            for m in &b.members {
                for (class, n) in m.responses.iter().enumerate() {
                    let labels = format!("{},class=\"{}xx\"", member_label(a, m.slot), class + 1);
                    f.sample(name, &labels, *n as f64);
                }
            }
        }
    }
    type PerMember = fn(&crate::protocol::MemberView) -> f64;
    let per_member: [(&str, &str, &str, PerMember); 3] = [
        (
            "herder_balancer_upstream_failures_total",
            "counter",
            "Connect errors, errors before the answer and timeouts of the instance.",
            |m| m.failures as f64,
        ),
        (
            "herder_balancer_active_requests",
            "gauge",
            "Requests and streams under way on the instance.",
            |m| f64::from(m.active),
        ),
        (
            "herder_balancer_member_up",
            "gauge",
            "1 when the instance takes requests (ready, not out for failures), else 0.",
            |m| if m.up { 1.0 } else { 0.0 },
        ),
    ];
    for (name, kind, help, get) in per_member {
        let mut f = Family::new(out, name, kind, help);
        for (a, b) in &views {
            for m in &b.members {
                f.sample(name, &member_label(a, m.slot), get(m));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_loopback_only() {
        assert_eq!(parse_listen("127.0.0.1:9209").unwrap(), "127.0.0.1:9209".parse().unwrap());
        assert_eq!(parse_listen("9300").unwrap(), "127.0.0.1:9300".parse().unwrap());
        assert_eq!(parse_listen("[::1]:9209").unwrap(), "[::1]:9209".parse().unwrap());
        assert!(parse_listen("0.0.0.0:9209").unwrap_err().contains("not a loopback address"));
        assert!(parse_listen("localhost:x").unwrap_err().contains("not an address"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
