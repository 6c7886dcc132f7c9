//! The web dashboard and its JSON API (`herder web`), served by the daemon on hyper's HTTP/1
//! server, off unless asked for.
//!
//! Access: every request names the listen address in its `Host` (421 otherwise: a DNS
//! rebinding page cannot reach it) and, when it has an `Origin`, that same origin (403); then
//! it carries the token (`Authorization: Bearer`, the token of `web.token` in the home, mode
//! 0600) or a session cookie that `/login?token=…` set (`HttpOnly`, `SameSite=Strict`),
//! else 401. A `POST` with the session cookie must also carry the session's CSRF token in
//! `X-CSRF-Token` and must not come from another site (`Sec-Fetch-Site`). Answers never hold
//! secrets: apps are masked as `show` masks them.

mod api;

use std::convert::Infallible;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::daemon::Daemon;
use crate::paths::Paths;

/// The address `herder web` listens on when none is named.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9615";

/// A body: whole, or a stream of server-sent events.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The running server, if any.
#[derive(Default)]
pub(crate) struct Endpoint {
    inner: Mutex<Option<Running>>,
}

struct Running {
    addr: SocketAddr,
    /// The listening socket (owned by the task), for `herder update`.
    fd: std::os::fd::RawFd,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Set to `true` to end every connection (streams included).
    stop: tokio::sync::watch::Sender<bool>,
    /// Set to `true` to stop accepting, the socket kept open.
    pause: tokio::sync::watch::Sender<bool>,
}

impl Endpoint {
    pub fn address(&self) -> Option<SocketAddr> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|r| r.addr)
    }

    /// Before `herder update` hands the dashboard over: stop accepting (connections wait in
    /// the socket's queue for the next image) and close the connections once their request is
    /// answered, for up to 2 s. [`Endpoint::resume`] undoes it if the update does not happen.
    pub async fn quiesce(&self) {
        let shared = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = inner.as_ref() else { return };
            let _ = r.pause.send(true);
            let _ = r.stop.send(true);
            r.shared.clone()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while shared.connections.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Serve again after [`Endpoint::quiesce`] (an update that did not happen).
    pub fn resume(&self) {
        if let Some(r) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = r.stop.send(false);
            let _ = r.pause.send(false);
        }
    }

    /// What `herder update` hands to the next image: the listening socket, and the sessions
    /// (cookie value, CSRF token), so that an open page stays logged in.
    pub fn handover(&self) -> Option<(std::os::fd::RawFd, Vec<(String, String)>)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = inner.as_ref()?;
        let sessions = r.shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Some((r.fd, sessions.iter().map(|s| (s.id.clone(), s.csrf.clone())).collect()))
    }

    /// Stop serving, and end the connections open (event streams included).
    pub fn stop(&self) {
        if let Some(r) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = r.stop.send(true);
            r.task.abort();
        }
    }
}

/// An address to listen on, and a warning when it is not a loopback one.
pub fn parse_listen(text: &str) -> Result<(SocketAddr, Option<String>), String> {
    let text = text.trim();
    let addr: SocketAddr = match text.parse() {
        Ok(a) => a,
        // A bare port means 127.0.0.1.
        Err(_) => match text.parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => return Err(format!("`{text}` is not an address such as {DEFAULT_LISTEN}")),
        },
    };
    let warning = (!addr.ip().is_loopback()).then(|| {
        format!(
            "the dashboard listens on {addr}, beyond this machine: anyone who can reach it and has the token controls the apps, over plain HTTP\nhint: keep it on 127.0.0.1 and reach it through an SSH tunnel or a TLS proxy"
        )
    });
    Ok((addr, warning))
}

/// The token's file in the home.
pub fn token_path(paths: &Paths) -> std::path::PathBuf {
    paths.home.join("web.token")
}

/// The dashboard's token: read from `web.token`, or made (32 random bytes from /dev/urandom,
/// in hex) and written there, mode 0600.
pub fn token(paths: &Paths) -> io::Result<String> {
    let path = token_path(paths);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = random_hex(32)?;
    crate::daemon::state::write_atomic(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compare secrets in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in browser: its cookie's value, and the CSRF token its page sends back.
struct Session {
    id: String,
    csrf: String,
}

/// Sessions kept; past it, the oldest is logged out.
const MAX_SESSIONS: usize = 32;

/// Connections served at once; past it, new ones are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// The longest request head read (hyper answers 431 past it).
const MAX_HEAD: usize = 16 * 1024;

/// The longest request body read (413 past it).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// What every connection shares.
pub(crate) struct Shared {
    addr: SocketAddr,
    token: String,
    sessions: Mutex<Vec<Session>>,
    connections: AtomicUsize,
}

impl Shared {
    /// Whether `host` (a `Host` header) names this server: its address, or `localhost` with
    /// its port when it listens on loopback; any IP literal with its port when it listens on
    /// every address.
    fn host_ok(&self, host: &str) -> bool {
        let port = self.addr.port();
        let Some((name, p)) = host.rsplit_once(':') else { return false };
        if p.parse::<u16>().ok() != Some(port) {
            return false;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
        if self.addr.ip().is_unspecified() {
            return ip.is_some() || name.eq_ignore_ascii_case("localhost");
        }
        ip == Some(self.addr.ip()) || (self.addr.ip().is_loopback() && name.eq_ignore_ascii_case("localhost"))
    }

    /// The session cookie's name. Cookies are kept per host, not per port: two dashboards
    /// on one host (two users' daemons) need a cookie each, or logging in to one logs out of
    /// the other.
    fn cookie_name(&self) -> String {
        format!("herder_session_{}", self.addr.port())
    }

    fn session(&self, cookies: &str) -> Option<String> {
        let name = self.cookie_name();
        let id = cookies.split(';').find_map(|c| c.trim().strip_prefix(name.as_str())?.strip_prefix('='))?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.iter().find(|s| same_secret(s.id.as_bytes(), id.as_bytes())).map(|s| s.csrf.clone())
    }

    fn new_session(&self) -> io::Result<Session> {
        let s = Session { id: random_hex(32)?, csrf: random_hex(16)? };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push(Session { id: s.id.clone(), csrf: s.csrf.clone() });
        Ok(s)
    }
}

/// Serve the dashboard on `addr` (replacing a server already running elsewhere).
pub(crate) async fn listen(daemon: &Arc<Daemon>, addr: SocketAddr) -> Result<SocketAddr, String> {
    if daemon.web.address() == Some(addr) {
        return Ok(addr);
    }
    let token = token(&daemon.ctx.paths).map_err(|e| format!("cannot read or write the token: {e}"))?;
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    serve(daemon, listener, token, Vec::new())
}

/// Serve the dashboard on a listening socket the previous image of the daemon served it on
/// (`herder update`), with its sessions.
pub(crate) fn adopt(
    daemon: &Arc<Daemon>,
    listener: std::net::TcpListener,
    sessions: Vec<(String, String)>,
) -> Result<SocketAddr, String> {
    let token = token(&daemon.ctx.paths).map_err(|e| format!("cannot read the token: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let sessions = sessions.into_iter().map(|(id, csrf)| Session { id, csrf }).collect();
    serve(daemon, listener, token, sessions)
}

/// Serve the dashboard on `listener`. Not async: the connections' futures (which reach the
/// daemon's handlers) are spawned, never part of the caller's.
fn serve(
    daemon: &Arc<Daemon>,
    listener: TcpListener,
    token: String,
    sessions: Vec<Session>,
) -> Result<SocketAddr, String> {
    use std::os::fd::AsRawFd;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let fd = listener.as_raw_fd();
    daemon.web.stop();
    let shared = Arc::new(Shared {
        addr: bound,
        token,
        sessions: Mutex::new(sessions),
        connections: AtomicUsize::new(0),
    });
    let kept = shared.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (pause, mut paused) = tokio::sync::watch::channel(false);
    let d = Arc::downgrade(daemon);
    let task = tokio::spawn(async move {
        let mut errors = crate::daemon::AcceptErrors::new("web dashboard");
        let mut http = http1::Builder::new();
        http.max_buf_size(MAX_HEAD.max(8192))
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        loop {
            // Paused for `herder update`: the socket stays open (the next image serves what
            // waits in its queue), nothing is accepted here.
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
            if shared.connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                continue;
            }
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let shared = shared.clone();
            let mut stopped = stopped.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let s = shared.clone();
                let service = service_fn(move |req| {
                    let (daemon, shared) = (daemon.clone(), s.clone());
                    async move { Ok::<_, Infallible>(answer(&daemon, &shared, req).await) }
                });
                let conn = http.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                let stopping = tokio::select! {
                    _ = conn.as_mut() => false,
                    r = stopped.wait_for(|s| *s) => r.is_ok(),
                };
                if stopping {
                    // The request under way is answered (an event stream, which never ends,
                    // is cut after a moment: the page reconnects), then the connection closes.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
                shared.connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    *daemon.web.inner.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(Running { addr: bound, fd, shared: kept, task, stop, pause });
    if bound.ip().is_loopback() {
        tracing::info!(%bound, "web dashboard listening");
    } else {
        tracing::warn!(%bound, "web dashboard listening beyond loopback: anyone who reaches it with the token controls the apps");
    }
    Ok(bound)
}

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON error: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(full(body))
        .unwrap_or_default()
}

fn page(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, kind)
        .header(header::CACHE_CONTROL, "no-store")
        .header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .body(full(body))
        .unwrap_or_default()
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const LOGIN: &str = include_str!("assets/login.html");

/// How a request proved who it is.
enum Auth {
    Token,
    /// A session cookie, with the session's CSRF token.
    Session(String),
}

async fn answer(daemon: &Arc<Daemon>, shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let host = text(header::HOST).to_string();
    if !shared.host_ok(&host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this server answers for {} only, not for `{host}`", shared.addr),
        );
    }
    let origin = text(header::ORIGIN);
    if !origin.is_empty() && origin != format!("http://{host}") {
        return error(StatusCode::FORBIDDEN, &format!("requests from `{origin}` are refused"));
    }
    let path = req.uri().path().to_string();
    if path == "/login" {
        return login(shared, req.uri().query().unwrap_or(""));
    }
    let bearer = text(header::AUTHORIZATION).strip_prefix("Bearer ").map(str::trim);
    let auth = match bearer {
        Some(t) if same_secret(t.as_bytes(), shared.token.as_bytes()) => Some(Auth::Token),
        Some(_) => None,
        None => shared.session(text(header::COOKIE)).map(Auth::Session),
    };
    let Some(auth) = auth else {
        return if path.starts_with("/api/") {
            error(StatusCode::UNAUTHORIZED, "the token is missing or wrong: send `Authorization: Bearer <token>` (`herder web --token` prints it)")
        } else {
            page(StatusCode::UNAUTHORIZED, "text/html; charset=utf-8", LOGIN)
        };
    };
    if req.method() == Method::POST {
        if let Auth::Session(csrf) = &auth {
            let site = text(header::HeaderName::from_static("sec-fetch-site"));
            let sent = text(header::HeaderName::from_static("x-csrf-token"));
            if matches!(site, "cross-site" | "same-site") || !same_secret(sent.as_bytes(), csrf.as_bytes()) {
                return error(
                    StatusCode::FORBIDDEN,
                    "a change needs this page's CSRF token (`X-CSRF-Token`)",
                );
            }
        }
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/" | "/index.html") => {
            let csrf = match &auth {
                Auth::Session(c) => c.as_str(),
                Auth::Token => "",
            };
            page(StatusCode::OK, "text/html; charset=utf-8", INDEX.replace("{{CSRF}}", csrf))
        }
        (&Method::GET, "/app.js") => page(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        (&Method::GET, "/app.css") => page(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        (_, p) if p.starts_with("/api/") => api::route(daemon, req).await,
        (&Method::GET, _) => error(StatusCode::NOT_FOUND, &format!("no page `{path}`")),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "only GET here"),
    }
}

/// `/login?token=…`: a good token gets a session cookie and goes to the page; anything else
/// gets the login form (401).
fn login(shared: &Shared, query: &str) -> Response<Body> {
    let given = query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(api::percent_decode);
    let Some(Some(given)) = given else {
        return page(StatusCode::UNAUTHORIZED, "text/html; charset=utf-8", LOGIN);
    };
    if !same_secret(given.trim().as_bytes(), shared.token.as_bytes()) {
        return page(StatusCode::UNAUTHORIZED, "text/html; charset=utf-8", LOGIN);
    }
    let Ok(session) = shared.new_session() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read /dev/urandom");
    };
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/")
        .header(
            header::SET_COOKIE,
            format!("{}={}; HttpOnly; SameSite=Strict; Path=/", shared.cookie_name(), session.id),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(full(""))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(addr: &str) -> Shared {
        Shared {
            addr: addr.parse().unwrap(),
            token: "t".repeat(64),
            sessions: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        }
    }

    #[test]
    fn listen_addresses_default_to_loopback_and_warn_beyond_it() {
        assert_eq!(parse_listen("9615").unwrap(), ("127.0.0.1:9615".parse().unwrap(), None));
        assert!(parse_listen("[::1]:9615").unwrap().1.is_none());
        let (addr, warning) = parse_listen("0.0.0.0:9615").unwrap();
        assert_eq!(addr, "0.0.0.0:9615".parse().unwrap());
        assert!(warning.unwrap().contains("beyond this machine"));
        assert!(parse_listen("nowhere").unwrap_err().contains("not an address"));
    }

    #[test]
    fn the_host_must_name_the_listen_address() {
        let s = shared("127.0.0.1:9615");
        assert!(s.host_ok("127.0.0.1:9615"));
        assert!(s.host_ok("localhost:9615"));
        assert!(!s.host_ok("evil.example:9615"));
        assert!(!s.host_ok("127.0.0.1:80"));
        assert!(!s.host_ok("127.0.0.1"));
        assert!(!s.host_ok(""));
        let any = shared("0.0.0.0:9615");
        assert!(any.host_ok("192.168.1.4:9615"));
        assert!(!any.host_ok("rebound.example:9615"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }

    #[test]
    fn sessions_are_found_by_cookie_and_capped() {
        let s = shared("127.0.0.1:9615");
        let first = s.new_session().unwrap();
        let cookie = format!("a=b; herder_session_9615={}", first.id);
        assert_eq!(s.session(&cookie), Some(first.csrf.clone()));
        assert_eq!(s.session("herder_session_9615=nope"), None);
        // Another dashboard's cookie on the same host, and one whose name only begins alike.
        assert_eq!(s.session(&format!("herder_session_9616={}", first.id)), None);
        assert_eq!(s.session(&format!("herder_session_96150={}", first.id)), None);
        for _ in 0..MAX_SESSIONS {
            s.new_session().unwrap();
        }
        assert_eq!(s.session(&cookie), None, "the oldest goes");
    }
}
