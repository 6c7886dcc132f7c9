//! The `http` mode: an HTTP/1.1 and HTTP/2 (h2c, or ALPN over TLS) reverse proxy on hyper.
//!
//! Each request goes to the member the strategy picks, over a kept-alive HTTP/1.1 connection
//! to the instance's loopback port from its thread's cache ([`super::upstream`]). Bodies
//! stream both ways frame by frame, with nothing buffered, so each server-sent event reaches
//! the client as the instance writes it.
//! Timeouts are separate: connecting, the answer's first byte, and the idle time between two
//! frames of a body (`stream_idle_timeout` for `text/event-stream` and upgraded connections,
//! `idle_timeout` for the rest). An `Upgrade` (WebSocket and any other) passes through once the
//! instance answers 101.
//!
//! A request that failed before any byte reached an instance (its connect failed) is sent to
//! another one when its method is idempotent; one that went out on a kept-alive connection the
//! instance closed before answering is sent again once when it is idempotent and has no body.
//! Otherwise the client gets 502 (broken instance), 504 (timed out) or 503 with `Retry-After`
//! (no instance ready), each with a short body naming the app.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::pick::hash;
use super::threads::{self, Open, Serve};
use super::upstream::{ClientBody, ConnectError, Return, Sender, Sending, Taken, Upstreams};
use super::{Balancer, Claim, Phase, Silence};
use crate::protocol::spec::{BalancerSpec, Strategy};

/// What the client gets back: an instance's body, watched, or the balancer's own.
pub type ResBody = BoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serve the balancer on `listener` (and the connections a previous image of the daemon
/// handed over, each with the bytes it had read) until `phase` changes; then stop accepting
/// and let the connections finish as [`Phase`] says.
///
/// The balancer runs on threads of its own ([`super::threads`]), each passing its
/// connections' requests over its own keep-alive connections to the instances: a request is
/// read, sent on and answered on one thread.
pub fn serve(
    balancer: Arc<Balancer>,
    listener: std::net::TcpListener,
    adopted: Vec<(OwnedFd, Vec<u8>)>,
    phase: watch::Receiver<Phase>,
) {
    threads::serve(balancer, listener, adopted, phase, |balancer, open| {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(HEADER_READ);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // A client that went away without a word (a laptop closed, a NAT that forgot it) is
        // found by its unanswered ping.
        http2.timer(TokioTimer::new()).keep_alive_interval(H2_PING).keep_alive_timeout(H2_PING_ANSWER);
        let proxy = Arc::new(Proxy::new(balancer.clone(), open.clone()));
        Arc::new(Server { proxy, http1, http2 })
    });
}

/// What serves a connection: the proxy, and hyper's builders for TLS (HTTP/1.1 or HTTP/2 by
/// ALPN) and for HTTP/2 in clear.
struct Server {
    proxy: Arc<Proxy>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Serve for Server {
    fn serve(
        this: &Arc<Server>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        read: Bytes,
        phase: watch::Receiver<Phase>,
        counted: Open,
    ) {
        tokio::spawn(client(this.clone(), stream, peer, read, phase, counted));
    }
}

/// How long a client may take to send a request's headers (the first ones too: a connection
/// that sends nothing for this long is closed).
const HEADER_READ: Duration = Duration::from_secs(30);

/// How often an idle HTTP/2 client is pinged, and how long its answer may take.
const H2_PING: Duration = Duration::from_secs(60);
const H2_PING_ANSWER: Duration = Duration::from_secs(20);

/// The bytes that begin every HTTP/2 connection without TLS.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// One client connection: TLS, HTTP/2 in clear, or HTTP/1.
async fn client(
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    read: Bytes,
    phase: watch::Receiver<Phase>,
    counted: Open,
) {
    let b = server.proxy.balancer.clone();
    let mut phase = phase;
    let limit = Duration::from_millis(b.pool().spec.idle_timeout_ms);
    match b.tls.as_ref().map(|c| c.acceptor()) {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE, acceptor.accept(Paced::new(stream, limit))).await {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    served(&server, tls, peer, true, h2, phase).await
                }
                Ok(Err(e)) => tracing::debug!(app = %b.app, %peer, error = %e, "TLS handshake"),
                Err(_) => tracing::debug!(app = %b.app, %peer, "TLS handshake timed out"),
            }
        }
        None if !read.is_empty() => {
            http1(&server, Prefixed { read, stream: Paced::new(stream, limit) }, peer, phase).await
        }
        None => {
            let opening = tokio::select! {
                opening = tokio::time::timeout(HEADER_READ, is_h2(&stream)) => opening.ok(),
                told = super::stopping(&mut phase) => {
                    // Nothing read from it yet: for `herder update`, handed over as it is.
                    if told == Phase::HandingOver {
                        hand_over(&b, &stream, Vec::new());
                    }
                    return;
                }
            };
            match opening {
                Some(true) => served(&server, Paced::new(stream, limit), peer, false, true, phase).await,
                Some(false) => {
                    http1(&server, Prefixed { read, stream: Paced::new(stream, limit) }, peer, phase).await
                }
                None => tracing::debug!(app = %b.app, %peer, "the client sent nothing: closed"),
            }
        }
    }
    drop(counted);
}

/// Whether the client opens with HTTP/2's preface (h2c with prior knowledge); waits for its
/// first bytes.
async fn is_h2(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 || buf[..n] != H2_PREFACE[..n] || n == H2_PREFACE.len() {
            return n == H2_PREFACE.len() && buf == *H2_PREFACE;
        }
        // A prefix of the preface so far (peek does not wait for more): look again soon.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Give a client connection to the next image of the daemon (`herder update`), with the bytes
/// read from it and not served yet.
fn hand_over(b: &Balancer, stream: &tokio::net::TcpStream, unread: Vec<u8>) {
    match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => b.handed.lock().unwrap_or_else(|e| e.into_inner()).push((fd, unread)),
        Err(e) => tracing::warn!(app = %b.app, error = %e, "a connection cannot be handed over"),
    }
}

/// Serve a TLS connection (HTTP/1.1 with hyper's upgrades, or HTTP/2) or an HTTP/2 one in
/// clear; when the balancer stops, finish the requests under way (for up to `drain_timeout`)
/// and close.
async fn served<I>(
    server: &Arc<Server>,
    io: I,
    peer: SocketAddr,
    tls: bool,
    h2: bool,
    mut phase: watch::Receiver<Phase>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let asked = Arc::new(AtomicBool::new(false));
    let mut conn = connection(server, io, peer, tls, h2, &asked);
    // HTTP/2 has no timer of hyper's on a client that opens and asks nothing.
    let silence = tokio::time::sleep(HEADER_READ);
    tokio::pin!(silence);
    let mut watching = true;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = super::stopping(&mut phase) => break,
            _ = &mut silence, if watching => {
                watching = false;
                if !asked.load(Ordering::Relaxed) {
                    tracing::debug!(app = %server.proxy.balancer.app, %peer, "the client asked nothing: closed");
                    conn.as_mut().shut_down();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                    return;
                }
            }
        }
    }
    conn.as_mut().shut_down();
    let limit = Duration::from_millis(server.proxy.balancer.pool().spec.drain_timeout_ms);
    let _ = tokio::time::timeout(limit, conn).await;
}

/// A hyper connection being served, of either version.
type Conn = Pin<Box<dyn Graceful<Output = hyper::Result<()>> + Send>>;

/// `asked`: set at the first request.
fn connection<I>(
    server: &Server,
    io: I,
    peer: SocketAddr,
    tls: bool,
    h2: bool,
    asked: &Arc<AtomicBool>,
) -> Conn
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = server.proxy.clone();
    let peer = Arc::new(Peer::new(peer));
    let asked = asked.clone();
    let service = hyper::service::service_fn(move |req| -> BoxedAnswer {
        asked.store(true, Ordering::Relaxed);
        let (proxy, peer) = (proxy.clone(), peer.clone());
        Box::pin(async move { Ok(proxy.handle(req, &peer, tls, None).await) })
    });
    let io = TokioIo::new(io);
    match h2 {
        true => Box::pin(server.http2.serve_connection(io, service)),
        false => Box::pin(server.http1.serve_connection(io, service).with_upgrades()),
    }
}

/// A hyper connection that can be asked to finish what is under way and close.
trait Graceful: Future {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: Future,
    S: hyper::service::HttpService<Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    Self: Future,
    S: hyper::service::HttpService<Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// An upgrade the instance accepted (101), for the connection to carry out once hyper has
/// written the answer.
type PendingUpgrade = Arc<Mutex<Option<(hyper::upgrade::OnUpgrade, Held, Duration)>>>;

type BoxedAnswer = Pin<Box<dyn Future<Output = Result<Response<ResBody>, Infallible>> + Send>>;

/// Serve an HTTP/1 connection in clear. Built so that it can be taken apart between two
/// requests: an upgrade is carried out here on the client's own socket, and for `herder
/// update` the connection, once its request under way is answered, is kept open and unread
/// for the next image ([`Phase::HandingOver`]).
async fn http1(server: &Arc<Server>, io: Prefixed, peer: SocketAddr, mut phase: watch::Receiver<Phase>) {
    let b = server.proxy.balancer.clone();
    let upgrade: PendingUpgrade = Arc::default();
    let service = {
        let (proxy, upgrade, peer) = (server.proxy.clone(), upgrade.clone(), Arc::new(Peer::new(peer)));
        hyper::service::service_fn(move |req| -> BoxedAnswer {
            let (proxy, upgrade, peer) = (proxy.clone(), upgrade.clone(), peer.clone());
            Box::pin(async move { Ok(proxy.handle(req, &peer, false, Some(upgrade)).await) })
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .serve_connection(TokioIo::new(io), service);
    let mut told = Phase::Serving;
    // Once the balancer stops, the answer under way (a stream's too) has until `drain_timeout`.
    let deadline = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(deadline);
    let ended = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            p = super::stopping(&mut phase), if told == Phase::Serving => {
                told = p;
                Pin::new(&mut conn).graceful_shutdown();
                let drain = Duration::from_millis(b.pool().spec.drain_timeout_ms);
                deadline.as_mut().reset(tokio::time::Instant::now() + drain);
            }
            _ = &mut deadline, if told == Phase::Stopping => {
                tracing::debug!(app = %b.app, %peer, "the balancer stopped and drain_timeout passed: closed");
                return;
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(app = %b.app, %peer, error = %e, "client connection");
        // An answer may have gone out before the error (hyper's own 4xx for a bad request
        // does): closed as any other.
        linger(conn.into_parts().io.into_inner().stream.io).await;
        return;
    }
    let parts = conn.into_parts();
    // What hyper read and did not serve came before what it had not read yet of the bytes
    // given with the connection.
    let (io, read) = (parts.io.into_inner(), parts.read_buf);
    let pending = upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((instance, held, idle)) = pending {
        let Ok(instance) = instance.await else { return };
        // A tunnel's silences are a stream's, either way.
        let stream = Paced::new(io.stream.io, idle);
        let mut client = Prefixed { read: read.into_iter().chain(io.read).collect(), stream };
        let mut instance = TokioIo::new(instance);
        // A tunnel too ends at most `drain_timeout` after the balancer stops.
        super::finish_within(super::tcp::pipe(&mut client, &mut instance, idle), &b, &mut phase).await;
        drop(held);
        return;
    }
    if told == Phase::HandingOver {
        let mut unread = read.to_vec();
        unread.extend_from_slice(&io.read);
        hand_over(&b, &io.stream.io, unread);
        // Dropped without a shutdown: a connection handed over stays open in its copy.
        return;
    }
    linger(io.stream.io).await;
}

/// How long a closing connection is read from and what it sends thrown away, at most, and how
/// long each read waits (nginx's `lingering_time` and `lingering_timeout`).
const LINGER: Duration = Duration::from_secs(30);
const LINGER_READ: Duration = Duration::from_secs(5);

/// Close a client's connection without losing the answer it was sent: a socket closed with
/// bytes unread (a request body the instance answered without reading, say a 401 or a 413
/// before an upload) is reset by the kernel, and the reset takes with it whatever of the
/// answer the client had not read yet. So the sending side is shut first, and what the client
/// still sends is read and thrown away until it closes too, or for [`LINGER`] at most. A
/// client that closed first costs one read.
async fn linger(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + LINGER;
    let mut sink = vec![0u8; 16 * 1024];
    while let Ok(Ok(n)) =
        tokio::time::timeout_at(until.min(tokio::time::Instant::now() + LINGER_READ), stream.read(&mut sink))
            .await
    {
        if n == 0 {
            return;
        }
    }
}

/// A client's socket, with the bytes read from it before and not yet served.
struct Prefixed {
    read: Bytes,
    stream: Paced<tokio::net::TcpStream>,
}

/// A client's connection whose writes wait at most `limit` for the client to read: one that
/// reads nothing of an answer for that long is given up (its request's claim on the instance
/// with it). The timer runs only while a write waits.
struct Paced<T> {
    io: T,
    waiting: Silence,
}

impl<T> Paced<T> {
    fn new(io: T, limit: Duration) -> Paced<T> {
        Paced { io, waiting: Silence::new(limit) }
    }

    /// A write's outcome: one that goes through ends the wait, one that waits counts it.
    fn paced<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.waiting.reset();
            return polled;
        }
        match self.waiting.poll_over(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {:?}", self.waiting.limit()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Paced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Paced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.paced(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.paced(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            let head = self.read.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The request path of one thread: the balancer, and the thread's connections to the
/// instances.
struct Proxy {
    balancer: Arc<Balancer>,
    upstreams: Arc<Upstreams>,
    /// The thread's count of client connections, which an upgraded connection that left
    /// hyper (a tunnel) stays in.
    open: Arc<AtomicUsize>,
}

/// A client as the instances are told of it: its address, and that address as a header value
/// (made once per connection).
struct Peer {
    addr: SocketAddr,
    ip: HeaderValue,
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        let ip = HeaderValue::from_str(&addr.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        Peer { addr, ip }
    }
}

impl Proxy {
    fn new(balancer: Arc<Balancer>, open: Arc<AtomicUsize>) -> Proxy {
        Proxy { balancer, upstreams: Upstreams::new(), open }
    }

    /// Answer one request. `upgrade`: where an HTTP/1 connection in clear takes an upgrade the
    /// instance accepted (see [`http1`]); without it, hyper's upgrades are used.
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        tls: bool,
        upgrade_slot: Option<PendingUpgrade>,
    ) -> Response<ResBody> {
        let Some(log) = &self.balancer.access else {
            return self.forward(req, peer, tls, upgrade_slot).await.0;
        };
        let started = Instant::now();
        let method = req.method().clone();
        let target = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.to_string());
        let version = req.version();
        let (res, instance) = self.forward(req, peer, tls, upgrade_slot).await;
        log.record(&super::access::Entry {
            client: peer.addr.ip(),
            method: method.as_str(),
            target: &target,
            version: match version {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: res.status().as_u16(),
            instance,
            took: started.elapsed(),
        });
        res
    }

    /// Pass the request on: the answer, and the slot of the instance that gave it.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        tls: bool,
        upgrade_slot: Option<PendingUpgrade>,
    ) -> (Response<ResBody>, Option<u32>) {
        let b = &self.balancer;
        if let Some((status, why)) = not_passed_on(&req) {
            return (own(&b.app, status, &why), None);
        }
        let started = Instant::now();
        let pool = b.pool();
        let spec = &pool.spec;
        let key = key(spec, &req, peer.addr.ip());
        let wants_upgrade = wants_upgrade(&req);
        let client_upgrade = (wants_upgrade && upgrade_slot.is_none()).then(|| hyper::upgrade::on(&mut req));
        let idempotent = idempotent(req.method());
        // Sent again after it went out on a kept-alive connection the instance closed.
        let resendable = idempotent && req.body().is_end_stream() && !wants_upgrade;
        let (mut parts, body) = req.into_parts();
        forwarded(spec, &mut parts.headers, &parts.uri, parts.version, peer, tls, wants_upgrade);
        let uri = origin_form(&parts.uri);
        let mut body = Some(body);
        let mut tried: Vec<usize> = Vec::new();
        let (mut resent, mut unsent) = (false, 0);
        let connect_timeout = Duration::from_millis(spec.connect_timeout_ms);
        let first_byte = Duration::from_millis(spec.first_byte_timeout_ms);
        loop {
            let Some(chosen) = b.choose(&pool, key, &tried) else {
                b.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                let why = if tried.is_empty() { "no instance is ready" } else { "no instance answered" };
                return (own(&b.app, StatusCode::SERVICE_UNAVAILABLE, why), None);
            };
            let Taken { mut sender, reused, hop_due } = match self
                .upstreams
                .take(chosen.addr, spec.unix_hop.then_some(chosen.pid), connect_timeout)
                .await
            {
                Ok(t) => t,
                Err(ConnectError::Refused(_, e)) if super::short_of_resources(&e) => {
                    // Not the instance's doing, and another would fare no better.
                    b.short_of_resources(chosen.slot, &e);
                    b.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    let why = format!("the balancer cannot open a connection to an instance now ({e})");
                    return (own(&b.app, StatusCode::SERVICE_UNAVAILABLE, &why), Some(chosen.slot));
                }
                Err(e) => {
                    // Nothing reached the instance: an idempotent request goes to another.
                    if matches!(e, ConnectError::Refused(..)) {
                        b.refused(&chosen);
                    }
                    b.failed(&pool, &chosen);
                    if idempotent {
                        tracing::debug!(app = %b.app, slot = chosen.slot, error = %e, "retrying on another instance");
                        b.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tried.push(chosen.index);
                        continue;
                    }
                    tracing::debug!(app = %b.app, slot = chosen.slot, error = %e, "bad gateway");
                    return (self.connect_failed(&e), Some(chosen.slot));
                }
            };
            // A copy for sending again, only where that may be needed.
            let kept = (resendable && reused && !resent).then(|| parts.headers.clone());
            // A body to send is watched (an empty one is sent as none).
            let (up_body, sent) = match body.take().filter(|b| !b.is_end_stream()) {
                Some(b) => {
                    let (b, sent) = Sending::new(b, Duration::from_millis(spec.idle_timeout_ms));
                    (Either::Left(b), Some(sent))
                }
                None => (Either::Right(Empty::new()), None),
            };
            let mut up = Request::new(up_body);
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri.clone();
            *up.headers_mut() = std::mem::take(&mut parts.headers);
            *up.version_mut() = Version::HTTP_11;
            // The instance has `first_byte_timeout` to answer from when it has the whole request:
            // a long upload is not its delay.
            let answered = sender.try_send_request(up);
            let waited = async {
                if let Some(sent) = &sent {
                    sent.notified().await;
                }
                tokio::time::sleep(first_byte).await;
            };
            let answered = tokio::select! {
                answered = answered => Ok(answered),
                () = waited => Err(()),
            };
            match answered {
                Ok(Ok(mut res)) => {
                    b.stats.observe(started.elapsed());
                    chosen.claim.state.stats.answered(res.status().as_u16());
                    b.succeeded(&chosen);
                    if res.status() == StatusCode::SWITCHING_PROTOCOLS && wants_upgrade {
                        let instance_side = hyper::upgrade::on(&mut res);
                        let idle = Duration::from_millis(spec.stream_idle_timeout_ms);
                        // The connection now belongs to the upgrade; its sender is kept with
                        // it until the tunnel ends.
                        let held = Held { _claim: chosen.claim, _sender: sender };
                        match (client_upgrade, upgrade_slot) {
                            (Some(client_side), _) => {
                                let counted = Open::new(b, &self.open);
                                tokio::spawn(tunnel(client_side, instance_side, held, idle, counted));
                            }
                            (None, Some(slot)) => {
                                *slot.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some((instance_side, held, idle));
                            }
                            (None, None) => {}
                        }
                        let (parts, _) = res.into_parts();
                        let res = Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed());
                        return (res, Some(chosen.slot));
                    }
                    let slot = chosen.slot;
                    let back =
                        Return { upstreams: self.upstreams.clone(), addr: chosen.addr, sender, hop_due };
                    return (answer(res, chosen.claim, spec, back), Some(slot));
                }
                Ok(Err(mut e)) => {
                    // Not written at all (the connection closed as it was taken): sent on a
                    // fresh connection, body and all, whatever its method.
                    if let Some(req) = e.take_message() {
                        if unsent < 2 {
                            unsent += 1;
                            let (p, returned) = req.into_parts();
                            parts.headers = p.headers;
                            body = match returned {
                                Either::Left(b) => Some(b.into_inner()),
                                Either::Right(_) => None,
                            };
                            continue;
                        }
                    }
                    let e = e.into_error();
                    // A kept-alive connection the instance closed as the request went out (its
                    // idle timeout, or its stop): nothing was answered, and an idempotent
                    // request without a body is sent again, once, on a fresh connection (as
                    // browsers and nginx do). Not a failure of the instance.
                    if let Some(headers) = kept.filter(|_| closed_unanswered(&e)) {
                        tracing::debug!(app = %b.app, slot = chosen.slot, error = %e, "a kept-alive connection closed: sent again");
                        b.stats.retries.fetch_add(1, Ordering::Relaxed);
                        parts.headers = headers;
                        resent = true;
                        continue;
                    }
                    // The client's body broke off or went silent: not the instance's failure.
                    if let Some(why) =
                        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ClientBody>())
                    {
                        tracing::debug!(app = %b.app, slot = chosen.slot, error = %why, "the request's body did not arrive");
                        let (status, text) = match why {
                            ClientBody::Silent(_) => {
                                (StatusCode::REQUEST_TIMEOUT, "the request's body stopped coming")
                            }
                            ClientBody::Broke(_) => (StatusCode::BAD_REQUEST, "the request's body broke off"),
                        };
                        return (own(&b.app, status, text), Some(chosen.slot));
                    }
                    b.failed(&pool, &chosen);
                    tracing::debug!(app = %b.app, slot = chosen.slot, error = ?e, "bad gateway");
                    b.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
                    return (
                        own(&b.app, StatusCode::BAD_GATEWAY, "its instance did not answer"),
                        Some(chosen.slot),
                    );
                }
                Err(_) => {
                    b.failed(&pool, &chosen);
                    b.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    let res = own(&b.app, StatusCode::GATEWAY_TIMEOUT, "its instance did not answer in time");
                    return (res, Some(chosen.slot));
                }
            }
        }
    }

    /// The answer to a request that could not be sent, or sent again, after a failed connect:
    /// 504 when the connect timed out, else 502.
    fn connect_failed(&self, e: &ConnectError) -> Response<ResBody> {
        let b = &self.balancer;
        match e {
            ConnectError::TimedOut(..) => {
                b.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                own(&b.app, StatusCode::GATEWAY_TIMEOUT, "its instance did not take the connection in time")
            }
            _ => {
                b.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
                own(&b.app, StatusCode::BAD_GATEWAY, "its instance refused the connection")
            }
        }
    }
}

/// What an upgraded connection holds on to while it lasts: the claim on the instance, and the
/// connection's sender.
struct Held {
    _claim: Claim,
    _sender: Sender,
}

/// Why a request is answered by the balancer rather than passed on, if it is: `CONNECT` (a
/// tunnel to anywhere is not an instance's business, and an instance that drops it would be
/// counted as failing), a transfer coding other than `chunked` (passed on, the body would
/// lose it), more than one `Host` (RFC 9112 3.2: a 400).
fn not_passed_on<B>(req: &Request<B>) -> Option<(StatusCode, String)> {
    if req.method() == Method::CONNECT {
        return Some((StatusCode::NOT_IMPLEMENTED, "CONNECT is not passed to its instances".into()));
    }
    let headers = req.headers();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let codings = value.to_str().unwrap_or("?");
        if let Some(other) = codings.split(',').map(str::trim).find(|c| !c.eq_ignore_ascii_case("chunked")) {
            return Some((
                StatusCode::NOT_IMPLEMENTED,
                format!("the transfer coding `{other}` is not supported"),
            ));
        }
    }
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some((StatusCode::BAD_REQUEST, "the request has more than one Host header".into()));
    }
    None
}

/// What the hash strategies hash on, if the request offers it.
fn key(spec: &BalancerSpec, req: &Request<Incoming>, peer: IpAddr) -> Option<u64> {
    match &spec.strategy {
        Strategy::IpHash => {
            let client =
                spec.trust_forwarded.then(|| forwarded_client(req.headers())).flatten().unwrap_or(peer);
            Some(match client {
                IpAddr::V4(a) => hash(&a.octets()),
                IpAddr::V6(a) => hash(&a.octets()),
            })
        }
        Strategy::Header(name) => req.headers().get(name.as_str()).map(|v| hash(v.as_bytes())),
        Strategy::Cookie(name) => cookie(req.headers(), name).map(hash),
        Strategy::RoundRobin | Strategy::LeastConn => None,
    }
}

/// The client as the proxy in front says, for a balancer that trusts it: its `X-Real-IP`, else
/// the last address of `X-Forwarded-For`, the one that proxy added (those before it came from
/// the client, which may write anything there).
fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    let parse = |v: &HeaderValue| v.to_str().ok()?.trim().parse().ok();
    if let Some(ip) = headers.get(X_REAL_IP).and_then(parse) {
        return Some(ip);
    }
    let last = headers.get_all(X_FORWARDED_FOR).iter().next_back()?.to_str().ok()?;
    last.rsplit(',').next()?.trim().parse().ok()
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|&c| c == b';').find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let rest = pair.strip_prefix(name.as_bytes())?;
            rest.strip_prefix(b"=")
        })
    })
}

/// Whether the client's error is a connection that closed before any answer came: hyper's
/// incomplete message, a request canceled as its connection closed, or the connection reset or
/// broken under it (an instance that stopped with the connection open).
fn closed_unanswered(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    // The error itself first, then its causes.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| has_token(v, "upgrade"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The headers of one hop, not passed on (RFC 9110 7.6.1), with those `Connection` names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The names `Connection` lists beyond those removed anyway (few answers list any).
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.is_empty() || HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str())) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    // One look over the few headers a message has, rather than a lookup of each name.
    while let Some(hop) = headers.keys().find(|k| HOP_BY_HOP.contains(k)).cloned() {
        headers.remove(hop);
    }
}

/// The request's headers as the instance sees them: one hop's headers stripped (kept for an
/// upgrade), `Host` set (from the authority for HTTP/2), and the client's address, scheme and
/// host in `X-Forwarded-For` (appended), `X-Real-IP`, `-Proto` and `-Host`. Unless the balancer
/// trusts them, what the client sent in these is replaced.
fn forwarded(
    spec: &BalancerSpec,
    headers: &mut HeaderMap,
    uri: &Uri,
    version: Version,
    peer: &Peer,
    tls: bool,
    upgrade: bool,
) {
    let kept_upgrade = upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    strip_hop_by_hop(headers);
    if let Some(u) = kept_upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // The target's authority, where it has one (HTTP/2, or the absolute form of HTTP/1, whose
    // `Host` a proxy replaces with it: RFC 9112 3.2.2).
    if let Some(v) = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
        headers.insert(header::HOST, v);
    }
    // HTTP/2 may carry the cookies in several fields, which HTTP/1.1 takes as one (RFC 9113
    // 8.2.3).
    if version == Version::HTTP_2 && headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, v);
        }
    }
    // Every line of it, in order: a proxy may add a line of its own rather than append.
    let prior: Vec<&str> = match spec.trust_forwarded {
        true => headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect(),
        false => Vec::new(),
    };
    let xff = match prior.is_empty() {
        true => Some(peer.ip.clone()),
        false => HeaderValue::from_str(&format!("{}, {}", prior.join(", "), peer.addr.ip())).ok(),
    };
    match xff {
        Some(v) => headers.insert(X_FORWARDED_FOR, v),
        None => headers.remove(X_FORWARDED_FOR),
    };
    let trusted = |headers: &HeaderMap, name: &HeaderName| spec.trust_forwarded && headers.contains_key(name);
    if !trusted(headers, &X_REAL_IP) {
        headers.insert(X_REAL_IP, peer.ip.clone());
    }
    if !trusted(headers, &X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if tls { "https" } else { "http" }));
    }
    if !trusted(headers, &X_FORWARDED_HOST) {
        match headers.get(header::HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    // An HTTP/1.0 request may have none; the instance is asked in HTTP/1.1, which needs one.
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    }
}

/// The request's target as an instance is sent it: its path and query (an HTTP/2 request, or
/// one in absolute form, carries the scheme and host too, which `Host` says instead).
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return uri.clone();
    }
    match uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => Uri::from(p.clone()),
        _ => Uri::from_static("/"),
    }
}

/// The instance's answer as the client gets it: one hop's headers stripped, the body streamed
/// with its idle timer, the claim on the instance held until the body ends, and the connection
/// given back to its thread's cache if the body was read to its end.
fn answer(res: Response<Incoming>, claim: Claim, spec: &BalancerSpec, back: Return) -> Response<ResBody> {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let idle = Duration::from_millis(if stream { spec.stream_idle_timeout_ms } else { spec.idle_timeout_ms });
    let watched = Watched { body, idle: Silence::new(idle), ended: false, back: Some(back), _claim: claim };
    Response::from_parts(parts, watched.boxed())
}

/// The balancer's own answer: a short text naming the app.
fn own(app: &str, status: StatusCode, why: &str) -> Response<ResBody> {
    let text = format!(
        "{} {}: app `{app}`: {why} (herder)\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut res = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// An instance's body on its way to the client: frames pass as they come; a body that sends
/// nothing for `idle` is cut (the timer is armed only while the client waits for a frame).
struct Watched {
    body: Incoming,
    idle: Silence,
    /// The body gave its last frame.
    ended: bool,
    back: Option<Return>,
    _claim: Claim,
}

impl Drop for Watched {
    fn drop(&mut self) {
        // A connection whose answer was not read to its end cannot carry another request.
        if self.ended || self.body.is_end_stream() {
            if let Some(r) = self.back.take() {
                r.upstreams.give_back(r.addr, r.sender, r.hop_due);
            }
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.reset();
                this.ended = frame.is_none();
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => match this.idle.poll_over(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("the instance sent nothing within the idle timeout".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An upgraded connection (WebSocket…): bytes both ways until either side closes or neither
/// sends for `idle`; the claim on the instance (and its connection's sender) held as long.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    instance: hyper::upgrade::OnUpgrade,
    held: Held,
    idle: Duration,
    counted: Open,
) {
    let (client, instance) = match tokio::try_join!(client, instance) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut instance = TokioIo::new(instance);
    super::tcp::pipe(&mut client, &mut instance, idle).await;
    drop(held);
    drop(counted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; sid=xyz; b=2"));
        assert_eq!(cookie(&h, "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "si"), None);
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connect_other_transfer_codings_and_two_hosts_are_answered_by_the_balancer() {
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut r = Request::builder().method(method).uri("/");
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.body(()).unwrap()
        };
        let status = |r: &Request<()>| not_passed_on(r).map(|(s, _)| s.as_u16());
        assert_eq!(status(&req("CONNECT", &[])), Some(501));
        assert_eq!(status(&req("POST", &[("transfer-encoding", "gzip, chunked")])), Some(501));
        assert_eq!(status(&req("POST", &[("transfer-encoding", "chunked")])), None);
        assert_eq!(status(&req("GET", &[("host", "a"), ("host", "b")])), Some(400));
        assert_eq!(status(&req("GET", &[("host", "a")])), None);
    }

    #[test]
    fn the_host_is_the_target_s_authority_and_h2_cookies_are_one_line() {
        let spec =
            BalancerSpec::new(crate::protocol::spec::SocketSpec { name: "80".into(), host: None, port: 80 });
        let peer = Peer::new("10.0.0.7:5000".parse().unwrap());
        // The absolute form's authority replaces the `Host` sent with it.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        let uri: Uri = "http://b.example/x".parse().unwrap();
        forwarded(&spec, &mut h, &uri, Version::HTTP_11, &peer, false, false);
        assert_eq!(h[header::HOST], "b.example");
        assert_eq!(h["x-forwarded-host"], "b.example");
        // HTTP/1.0 without one: the instance gets one, and no X-Forwarded-Host.
        let mut h = HeaderMap::new();
        forwarded(&spec, &mut h, &"/x".parse().unwrap(), Version::HTTP_10, &peer, false, false);
        assert_eq!(h[header::HOST], "localhost");
        assert!(!h.contains_key("x-forwarded-host"));
        // HTTP/2's cookie fields joined; a trailer's announcement kept.
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
        forwarded(&spec, &mut h, &uri, Version::HTTP_2, &peer, false, false);
        let cookies: Vec<&HeaderValue> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        assert_eq!(h[header::TRAILER], "x-checksum");
    }

    #[test]
    fn forwarded_headers_replace_what_the_client_sent_unless_trusted() {
        let uri: Uri = "/x".parse().unwrap();
        let mut spec =
            BalancerSpec::new(crate::protocol::spec::SocketSpec { name: "80".into(), host: None, port: 80 });
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        let peer = Peer::new("10.0.0.7:5000".parse().unwrap());
        forwarded(&spec, &mut h, &uri, Version::HTTP_11, &peer, true, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-real-ip"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "example.com");

        spec.trust_forwarded = true;
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        let uri: Uri = "http://example.org/x".parse().unwrap();
        forwarded(&spec, &mut h, &uri, Version::HTTP_2, &peer, false, false);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.7");
        assert_eq!(h["x-real-ip"], "1.2.3.4");
        assert_eq!(h[header::HOST], "example.org");

        // Given on two lines (a proxy that adds its own): both kept, in order, on one.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        forwarded(&spec, &mut h, &uri, Version::HTTP_11, &peer, false, false);
        let lines: Vec<&HeaderValue> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(lines, ["6.6.6.6, 1.2.3.4, 10.0.0.7"]);
    }

    #[test]
    fn a_trusted_proxy_s_client_is_its_real_ip_else_the_address_it_added_last() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            forwarded_client(&h)
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(with(&[("x-forwarded-for", "6.6.6.6, 10.0.0.7")]), ip("10.0.0.7"));
        assert_eq!(
            with(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "10.0.0.7, 2001:db8::1")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            with(&[("x-forwarded-for", "6.6.6.6, 10.0.0.7"), ("x-real-ip", "10.0.0.9")]),
            ip("10.0.0.9")
        );
        assert_eq!(with(&[("x-forwarded-for", "6.6.6.6, junk"), ("x-real-ip", "junk")]), None);
        assert_eq!(with(&[]), None);
    }
}
