//! The JSON API under `/api/`: the CLI's verbs on apps (each sent to the daemon's own handler,
//! as the CLI's requests are), their CPU and memory over the last hour, and streams of events,
//! figures and log lines as server-sent events. Described by `/api/openapi.json`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::{error, json, Body, MAX_BODY};
use crate::daemon::{handlers, Daemon};
use crate::protocol::{self, AppInfo, ErrorKind, ErrorReply, Request as Req, Response as Resp, Target};

const OPENAPI: &str = include_str!("assets/openapi.json");

/// The most instances the API scales an app to (the CLI has no such bound).
pub const MAX_SCALE: u32 = 16;

/// How often an idle stream sends a comment, so that a client gone away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) async fn route(d: &Arc<Daemon>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let method = req.method().clone();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let app = || parts.get(1).and_then(|p| percent_decode(p)).filter(|n| !n.is_empty());
    match parts[..] {
        ["openapi.json"] if get => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(super::full(OPENAPI))
            .unwrap_or_default(),
        ["apps"] if get => match handlers::handle(d, Req::List).await {
            Resp::List { apps, .. } => {
                json(StatusCode::OK, &apps.iter().map(AppInfo::masked).collect::<Vec<_>>())
            }
            other => failed(other),
        },
        ["events"] if get => events(d),
        ["stats"] if get => stats(d),
        ["apps", _, ..] if app().is_none() => {
            error(StatusCode::BAD_REQUEST, "the app's name is not valid percent-encoded UTF-8")
        }
        ["apps", _] if get => {
            match handlers::handle(d, Req::Show { target: target(&app().unwrap_or_default()) }).await {
                Resp::Show { app } => json(StatusCode::OK, &app.masked()),
                other => failed(other),
            }
        }
        ["apps", _, "history"] if get => history(d, &app().unwrap_or_default()),
        ["apps", _, "logs"] if get => logs(d, &app().unwrap_or_default()),
        ["apps", _, verb @ ("restart" | "reload" | "stop" | "start")] if post => {
            let targets = vec![target(&app().unwrap_or_default())];
            let req = match verb {
                "restart" => Req::Restart { targets, env: None, specs: Vec::new() },
                "reload" => Req::Reload { targets, env: None, specs: Vec::new() },
                "stop" => Req::Stop { targets },
                _ => Req::StartExisting { targets },
            };
            done(handlers::handle(d, req).await)
        }
        ["apps", _, "scale"] if post => {
            let count = match scale_count(req.into_body()).await {
                Ok(c) => c,
                Err(e) => return e,
            };
            done(handlers::handle(d, Req::Scale { target: target(&app().unwrap_or_default()), count }).await)
        }
        ["apps"]
        | ["events"]
        | ["stats"]
        | ["openapi.json"]
        | ["apps", _]
        | ["apps", _, "history" | "logs"] => method_not_allowed("GET"),
        ["apps", _, "restart" | "reload" | "stop" | "start" | "scale"] => method_not_allowed("POST"),
        _ => error(StatusCode::NOT_FOUND, &format!("no route `{path}`: see /api/openapi.json")),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow} here"));
    res.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    res
}

/// An app's name as the CLI reads it; `all` is every app, as there.
fn target(name: &str) -> Target {
    Target::parse(name)
}

/// `%XX` decoded (a path segment's: `+` stays); `None` when that is not UTF-8 or an escape is broken.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The status of a failed request: the client's mistake is a 4xx, the daemon's a 5xx.
fn failed(resp: Resp) -> Response<Body> {
    match resp {
        Resp::Error(ErrorReply { kind, message }) => {
            let status = match kind {
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                ErrorKind::Updating => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &message)
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer from the daemon"),
    }
}

/// The apps a verb acted on, masked.
fn done(resp: Resp) -> Response<Body> {
    match resp {
        Resp::Done { apps, .. } | Resp::Scaled { apps, .. } => json(
            StatusCode::OK,
            &serde_json::json!({ "apps": apps.iter().map(AppInfo::masked).collect::<Vec<_>>() }),
        ),
        Resp::Started { started, restarted } => {
            let apps: Vec<AppInfo> = started.iter().chain(&restarted).map(AppInfo::masked).collect();
            json(StatusCode::OK, &serde_json::json!({ "apps": apps }))
        }
        other => failed(other),
    }
}

/// The count of `{"count": 3}` (a number, or its digits in a string), from 1 to
/// [`MAX_SCALE`]: an absolute count, so that no run of requests grows an app without bound.
async fn scale_count(body: Incoming) -> Result<String, Response<Body>> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB or broken")),
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&format!("the body is not JSON such as {{\"count\": 3}}: {e}")))?;
    let count = match value.get("count") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    match count {
        Some(n) if (1..=u64::from(MAX_SCALE)).contains(&n) => Ok(n.to_string()),
        _ => Err(bad(&format!(
            "`count` must be a number of instances from 1 to {MAX_SCALE}, e.g. {{\"count\": 3}}"
        ))),
    }
}

#[derive(Serialize)]
struct Point {
    at_ms: u64,
    cpu_percent: f32,
    memory_bytes: u64,
}

#[derive(Serialize)]
struct InstanceHistory {
    index: u32,
    points: Vec<Point>,
}

/// CPU and memory of each instance of `name` over the last hour.
fn history(d: &Daemon, name: &str) -> Response<Body> {
    let now = protocol::now_ms();
    let reg = d.registry();
    let ids = match reg.resolve(&[target(name)]) {
        Ok(ids) => ids,
        Err(e) => return failed(Resp::Error(e)),
    };
    let [id] = ids[..] else {
        return error(StatusCode::BAD_REQUEST, &format!("`{name}` matches {} apps; name one", ids.len()));
    };
    let Some(app) = reg.apps.get(&id) else { return error(StatusCode::NOT_FOUND, "the app is gone") };
    let instances: Vec<InstanceHistory> = app
        .instances
        .iter()
        .enumerate()
        .map(|(i, h)| InstanceHistory {
            index: i as u32,
            points: h
                .usage_hour(now)
                .into_iter()
                .map(|p| Point { at_ms: p.at_ms, cpu_percent: p.cpu_percent, memory_bytes: p.memory_bytes })
                .collect(),
        })
        .collect();
    let bucket_ms = crate::process::usage::HOUR_BUCKET_MS;
    json(
        StatusCode::OK,
        &serde_json::json!({ "app": app.spec().name, "bucket_ms": bucket_ms, "instances": instances }),
    )
}

/// A stream of server-sent events fed by `rx`.
struct Events(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A server-sent event named `name` holding `data` as JSON.
fn sse(name: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_default();
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Start a stream: `feed` sends its events on the channel until the client goes (a send
/// fails).
fn stream<F, Fut>(feed: F) -> Response<Body>
where
    F: FnOnce(mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let first = tx.clone();
    tokio::spawn(async move {
        // The head goes out at once: a client sees the stream open before the first event.
        let _ = first.send(Bytes::from_static(b": open\n\n")).await;
    });
    tokio::spawn(feed(tx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(BodyExt::boxed(Events(rx)))
        .unwrap_or_default()
}

/// Wait for the next item of `rx`, sending a keep-alive comment while there is none; `None`
/// once the client has gone.
async fn next_or_keepalive<T: Clone>(
    rx: &mut broadcast::Receiver<T>,
    tx: &mpsc::Sender<Bytes>,
) -> Option<Result<T, u64>> {
    loop {
        tokio::select! {
            got = rx.recv() => return match got {
                Ok(v) => Some(Ok(v)),
                Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(n)),
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = tokio::time::sleep(KEEPALIVE) => {
                tx.send(Bytes::from_static(b": keep-alive\n\n")).await.ok()?;
            }
            _ = tx.closed() => return None,
        }
    }
}

/// `/api/events`: every supervision event, as `herder events` streams them.
fn events(d: &Arc<Daemon>) -> Response<Body> {
    let mut rx = d.ctx.events.subscribe();
    stream(move |tx| async move {
        while let Some(got) = next_or_keepalive(&mut rx, &tx).await {
            let frame = match got {
                Ok(event) => sse("event", &event),
                Err(n) => sse("lagged", &serde_json::json!({ "skipped": n })),
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    })
}

/// `/api/stats`: every app and instance (status, pid, CPU, memory…), at once and then after
/// each sample.
fn stats(d: &Arc<Daemon>) -> Response<Body> {
    let d = Arc::downgrade(d);
    stream(move |tx| async move {
        let mut tick = tokio::time::interval(crate::daemon::sample_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => return,
            }
            let Some(daemon) = d.upgrade() else { return };
            let apps = match handlers::handle(&daemon, Req::List).await {
                Resp::List { apps, .. } => apps.iter().map(AppInfo::masked).collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            drop(daemon);
            if tx
                .send(sse("stats", &serde_json::json!({ "at_ms": protocol::now_ms(), "apps": apps })))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

#[derive(Serialize)]
struct Line<'a> {
    instance: u32,
    stream: &'a str,
    at_ms: u64,
    text: String,
}

/// `/api/apps/{app}/logs`: the app's lines from now on, as the daemon's log followers see
/// them.
fn logs(d: &Arc<Daemon>, name: &str) -> Response<Body> {
    let app = {
        let reg = d.registry();
        match reg.resolve(&[target(name)]) {
            Ok(ids) if ids.len() == 1 => reg.apps.get(&ids[0]).map(|a| a.spec().name.clone()),
            Ok(ids) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("`{name}` matches {} apps; name one", ids.len()),
                )
            }
            Err(e) => return failed(Resp::Error(e)),
        }
    };
    let Some(app) = app else { return error(StatusCode::NOT_FOUND, "the app is gone") };
    let mut rx = d.ctx.logs.subscribe();
    stream(move |tx| async move {
        while let Some(got) = next_or_keepalive(&mut rx, &tx).await {
            let frames: Vec<Bytes> = match got {
                Ok(ev) if *ev.app == *app => String::from_utf8_lossy(&ev.lines)
                    .lines()
                    .map(|l| {
                        let line = Line {
                            instance: ev.instance,
                            stream: ev.stream.as_str(),
                            at_ms: ev.at_ms,
                            text: l.to_string(),
                        };
                        sse("line", &line)
                    })
                    .collect(),
                Ok(_) => continue,
                Err(n) => vec![sse("lagged", &serde_json::json!({ "skipped": n }))],
            };
            for f in frames {
                if tx.send(f).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(percent_decode("my%20app").as_deref(), Some("my app"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"), "a path keeps its plus signs");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("%2"), None);
    }

    #[test]
    fn the_openapi_document_is_json_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for route in [
            "/api/apps",
            "/api/apps/{app}",
            "/api/apps/{app}/history",
            "/api/apps/{app}/logs",
            "/api/apps/{app}/restart",
            "/api/apps/{app}/reload",
            "/api/apps/{app}/stop",
            "/api/apps/{app}/start",
            "/api/apps/{app}/scale",
            "/api/events",
            "/api/stats",
            "/api/openapi.json",
        ] {
            assert!(doc["paths"][route].is_object(), "{route} is not described");
        }
    }
}
