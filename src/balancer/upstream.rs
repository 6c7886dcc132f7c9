//! One balancer thread's connections to the instances: HTTP/1.1 client connections on hyper,
//! kept alive per instance address and reused by the thread's requests (as nginx's `keepalive`
//! cache in each worker). A connection is taken for one request and given back once the
//! answer's body has been read to its end; one left idle for [`IDLE`] is closed.
//!
//! Every request of a thread is served on that thread, so the cache is the thread's own: its
//! lock is never contended, and a request finds the connection its thread's previous request
//! left without any hand-off between threads.
//!
//! A new connection goes over the instance's Unix socket where it serves one (the hop): the
//! abstract socket `herder-hop-<port>` that herder's Node preload opens beside the app's own
//! `listen(PORT)` (see `supervisor/node_cluster.js`). A Unix socket costs both sides less
//! than loopback TCP. The hop is taken only from a listener of the instance's own user (its
//! credentials, as the kernel records them), and an instance without one is reached on its
//! port, as any other; its absence is remembered for [`HOP_RETRY`], after which a kept
//! connection opened on the port is replaced by the hop if the instance serves one by then.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// What goes to an instance: the client's body, or none (a request sent again).
pub type UpBody = Either<Sending, Empty<Bytes>>;

/// The client's body on its way to an instance: frames pass as they come; it says when it has
/// been sent whole (the wait for the answer starts then), and one the client leaves silent for
/// `idle` is given up. Its errors are [`ClientBody`]: the client's doing, not the instance's.
pub struct Sending {
    body: Incoming,
    idle: super::Silence,
    sent: Arc<tokio::sync::Notify>,
}

/// The client's body did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum ClientBody {
    #[error("the client's request body broke off: {0}")]
    Broke(hyper::Error),
    #[error("the client's request body stopped coming for {0:?}")]
    Silent(Duration),
}

impl Sending {
    /// The body, and what is told once it has been sent whole.
    pub fn new(body: Incoming, idle: Duration) -> (Sending, Arc<tokio::sync::Notify>) {
        let sent = Arc::new(tokio::sync::Notify::new());
        (Sending { body, idle: super::Silence::new(idle), sent: sent.clone() }, sent)
    }

    pub fn into_inner(self) -> Incoming {
        self.body
    }
}

impl Body for Sending {
    type Data = Bytes;
    type Error = ClientBody;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBody>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.reset();
                if frame.is_none() || this.body.is_end_stream() {
                    this.sent.notify_one();
                }
                Poll::Ready(frame.map(|f| f.map_err(ClientBody::Broke)))
            }
            Poll::Pending => match this.idle.poll_over(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(ClientBody::Silent(this.idle.limit())))),
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

/// A connection to an instance, ready to send one request.
pub type Sender = http1::SendRequest<UpBody>;

/// How long an idle connection to an instance is kept.
pub const IDLE: Duration = Duration::from_secs(60);

/// How often idle connections are looked over.
const SWEEP: Duration = Duration::from_secs(10);

/// How long an instance found without a hop is reached on its port before the hop is tried
/// again (its server may open it later than its port).
pub const HOP_RETRY: Duration = Duration::from_secs(1);

/// The abstract Unix socket an instance on loopback `port` serves on beside it, where it
/// does (the Node preload opens it under the same name).
pub fn hop_name(port: u16) -> String {
    format!("herder-hop-{port}")
}

/// A thread's kept-alive connections, by instance address.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<Vec<(SocketAddr, Vec<Kept>)>>,
    /// Instances (address and process) found without a hop, until when that holds.
    no_hop: Mutex<Vec<(SocketAddr, u32, Instant)>>,
}

struct Kept {
    sender: Sender,
    since: Instant,
    hop_due: Option<Instant>,
}

/// A connection taken for a request.
pub struct Taken {
    pub sender: Sender,
    /// Whether it carried a request before: the instance may have closed it as this one went
    /// out (its keep-alive timeout, or its stop), which a fresh connection rules out.
    pub reused: bool,
    /// Opened on the instance's port because its hop was not found: when to look for the hop
    /// again (at a reuse from then on), to replace it if found. Until then a reuse looks for
    /// nothing.
    pub hop_due: Option<Instant>,
}

/// Why no connection to an instance could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0}: {1}")]
    Refused(SocketAddr, std::io::Error),
    #[error("connecting to {0}: no answer within {1:?}")]
    TimedOut(SocketAddr, Duration),
    #[error("connecting to {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

impl Upstreams {
    /// A new cache, looked over every few seconds on the calling thread's runtime (the task
    /// ends with the runtime).
    pub fn new() -> Arc<Upstreams> {
        let upstreams = Arc::new(Upstreams::default());
        let weak = Arc::downgrade(&upstreams);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP).await;
                match weak.upgrade() {
                    Some(u) => u.sweep(Instant::now()),
                    None => return,
                }
            }
        });
        upstreams
    }

    /// A connection to the instance on `addr` that can take a request: the one last given
    /// back, else a new one (within `connect_timeout`), over the hop of process `hop` where it
    /// serves one (`None`: on its port only).
    pub async fn take(
        &self,
        addr: SocketAddr,
        hop: Option<u32>,
        connect_timeout: Duration,
    ) -> Result<Taken, ConnectError> {
        if let Some(kept) = self.kept(addr) {
            // Opened on the port while the instance's hop was not there (its server opens the
            // hop just after its port): the hop, where it is found now, takes its place.
            let mut hop_due = kept.hop_due;
            if let (Some(due), Some(pid)) = (hop_due, hop) {
                let now = Instant::now();
                if due <= now {
                    if let Some(stream) = self.hop(addr, pid) {
                        if let Ok(sender) = handshake(addr, stream).await {
                            return Ok(Taken { sender, reused: false, hop_due: None });
                        }
                    }
                    hop_due = Some(now + HOP_RETRY);
                }
            }
            return Ok(Taken { sender: kept.sender, reused: true, hop_due });
        }
        if let Some(stream) = hop.and_then(|pid| self.hop(addr, pid)) {
            return Ok(Taken { sender: handshake(addr, stream).await?, reused: false, hop_due: None });
        }
        let sender = match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                handshake(addr, stream).await?
            }
            Ok(Err(e)) => return Err(ConnectError::Refused(addr, e)),
            Err(_) => return Err(ConnectError::TimedOut(addr, connect_timeout)),
        };
        let hop_due = hop.filter(|pid| *pid != 0).map(|_| Instant::now() + HOP_RETRY);
        Ok(Taken { sender, reused: false, hop_due })
    }

    /// A connection to the hop of the instance on `addr`, process `pid` (0: not known), if it
    /// serves one now from a listener of its own user; else `None`, remembered for
    /// [`HOP_RETRY`].
    fn hop(&self, addr: SocketAddr, pid: u32) -> Option<tokio::net::UnixStream> {
        if pid == 0 {
            return None;
        }
        let now = Instant::now();
        {
            let mut no_hop = self.no_hop.lock().unwrap_or_else(|e| e.into_inner());
            no_hop.retain(|(_, _, until)| *until > now);
            if no_hop.iter().any(|(a, p, _)| *a == addr && *p == pid) {
                return None;
            }
        }
        match connect_hop(addr.port(), pid) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::trace!(%addr, pid, error = %e, "no hop: its port is used");
                let mut no_hop = self.no_hop.lock().unwrap_or_else(|e| e.into_inner());
                no_hop.push((addr, pid, now + HOP_RETRY));
                None
            }
        }
    }

    /// The most recently kept connection to `addr` that can take a request now. Closed ones
    /// are dropped; one still finishing its last answer stays for later.
    fn kept(&self, addr: SocketAddr) -> Option<Kept> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (_, list) = idle.iter_mut().find(|(a, _)| *a == addr)?;
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(k) = list.pop() {
            if k.sender.is_ready() {
                found = Some(k);
                break;
            }
            if !k.sender.is_closed() {
                busy.push(k);
            }
        }
        list.extend(busy.into_iter().rev());
        found
    }

    /// Keep a connection whose last answer was read to its end.
    pub fn give_back(&self, addr: SocketAddr, sender: Sender, hop_due: Option<Instant>) {
        if sender.is_closed() {
            return;
        }
        let kept = Kept { sender, since: Instant::now(), hop_due };
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, list)) => list.push(kept),
            None => idle.push((addr, vec![kept])),
        }
    }

    /// Close the connections idle for [`IDLE`] and forget the closed ones (an instance that
    /// stopped, or closed them on its keep-alive timeout).
    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for (_, list) in idle.iter_mut() {
            list.retain(|k| !k.sender.is_closed() && now.duration_since(k.since) < IDLE);
        }
        idle.retain(|(_, list)| !list.is_empty());
    }

    /// Connections kept now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().unwrap().iter().map(|(_, l)| l.len()).sum()
    }
}

/// Open an HTTP/1.1 client connection on `io`, driven by a task of its own.
async fn handshake<T>(addr: SocketAddr, io: T) -> Result<Sender, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "connection to an instance");
        }
    });
    Ok(sender)
}

/// Connect to the hop of the instance on loopback `port`, process `pid`, without waiting (a
/// full backlog is an error, as no listener is): accepted only if its listener is of the
/// instance's user.
fn connect_hop(port: u16, pid: u32) -> std::io::Result<tokio::net::UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let name = hop_name(port);
    // Node binds an abstract name as the whole of `sun_path`, the name padded with zero bytes,
    // up to libuv 1.45; newer ones bind the name alone. Both are tried.
    let mut padded = [0u8; 107];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    let mut refused = None;
    let mut connected = None;
    for form in [name.as_bytes(), &padded[..]] {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new_abstract(form)?) {
            Ok(()) => {
                connected = Some(fd);
                break;
            }
            Err(e) => refused = Some(e),
        }
    }
    let Some(fd) = connected else {
        return Err(refused.map_or_else(|| std::io::Error::other("no hop"), std::io::Error::from));
    };
    let stream = tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?;
    let theirs = stream.peer_cred()?.uid();
    let instance = std::fs::metadata(format!("/proc/{pid}"))?.uid();
    if theirs != instance {
        return Err(std::io::Error::other(format!(
            "@{name} is served by uid {theirs}, not by the instance's uid {instance}"
        )));
    }
    Ok(stream)
}

/// A connection on its way back to its thread's cache once the answer's body ends.
pub struct Return {
    pub upstreams: Arc<Upstreams>,
    pub addr: SocketAddr,
    pub sender: Sender,
    pub hop_due: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::{Request, Response};

    /// A server answering every request with "ok".
    async fn server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn get(addr: SocketAddr) -> Request<UpBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        req.headers_mut().insert(hyper::header::HOST, addr.to_string().parse().unwrap());
        req
    }

    #[tokio::test]
    async fn a_connection_given_back_is_reused_and_an_idle_one_is_closed() {
        let addr = server().await;
        let upstreams = Upstreams::new();
        let t = Duration::from_secs(5);
        let mut first = upstreams.take(addr, None, t).await.unwrap();
        assert!(!first.reused);
        let res = first.sender.send_request(get(addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        first.sender.ready().await.unwrap();
        upstreams.give_back(addr, first.sender, None);
        assert_eq!(upstreams.len(), 1);

        let mut second = upstreams.take(addr, None, t).await.unwrap();
        assert!(second.reused, "the connection given back is taken again");
        assert_eq!(upstreams.len(), 0);
        // While it is out, another request opens a connection of its own.
        let third = upstreams.take(addr, None, t).await.unwrap();
        assert!(!third.reused);
        let res = second.sender.send_request(get(addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        second.sender.ready().await.unwrap();
        upstreams.give_back(addr, second.sender, None);
        upstreams.give_back(addr, third.sender, None);
        assert_eq!(upstreams.len(), 2);

        upstreams.sweep(Instant::now());
        assert_eq!(upstreams.len(), 2, "recently used connections stay");
        upstreams.sweep(Instant::now() + IDLE);
        assert_eq!(upstreams.len(), 0, "connections idle for IDLE are closed");
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_while_kept_is_not_taken() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers one request per connection, kept alive by its words, then closes it.
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                });
            }
        });
        let upstreams = Upstreams::new();
        let t = Duration::from_secs(5);
        let mut first = upstreams.take(addr, None, t).await.unwrap();
        let res = first.sender.send_request(get(addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        // Ready for the next request, or already seen closed (then not kept at all).
        let _ = first.sender.ready().await;
        upstreams.give_back(addr, first.sender, None);
        // The server closed it once the answer was out: taken again at most until that is seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let taken = upstreams.take(addr, None, t).await.unwrap();
            if !taken.reused {
                break;
            }
            assert!(Instant::now() < deadline, "a closed connection is taken again and again");
            upstreams.give_back(addr, taken.sender, None);
            tokio::task::yield_now().await;
        }
    }

    /// Answer every request on `listener`'s connections with `body`.
    fn answer_with(listener: tokio::net::UnixListener, body: &'static str) {
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(body.as_bytes()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    /// Listen on abstract `name` (as given: the name alone, or padded).
    fn abstract_listener(name: &[u8]) -> tokio::net::UnixListener {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let std = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        std.set_nonblocking(true).unwrap();
        tokio::net::UnixListener::from_std(std).unwrap()
    }

    async fn body_of(taken: &mut Taken, addr: SocketAddr) -> Bytes {
        let res = taken.sender.send_request(get(addr)).await.unwrap();
        res.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_new_connection_takes_the_instance_s_hop_where_it_has_one() {
        let tcp = server().await;
        let me = std::process::id();
        let t = Duration::from_secs(5);
        let upstreams = Upstreams::new();
        // No hop: the port, and the hop is not looked for again at once.
        let mut taken = upstreams.take(tcp, Some(me), t).await.unwrap();
        assert_eq!(body_of(&mut taken, tcp).await, "ok");
        let hop = abstract_listener(hop_name(tcp.port()).as_bytes());
        answer_with(hop, "hop");
        let mut again = upstreams.take(tcp, Some(me), t).await.unwrap();
        assert_eq!(body_of(&mut again, tcp).await, "ok", "no hop for HOP_RETRY after none was found");
        // A hop of an instance not yet asked about is taken (the name alone, or padded as
        // older Node versions bind it).
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut padded = [0u8; 107];
        padded[..hop_name(other.port()).len()].copy_from_slice(hop_name(other.port()).as_bytes());
        answer_with(abstract_listener(&padded), "padded");
        let mut taken = upstreams.take(other, Some(me), t).await.unwrap();
        assert_eq!(body_of(&mut taken, other).await, "padded");
        // The same instance as another process of the same user (a new one on the same
        // port): asked again.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut taken = upstreams.take(tcp, Some(child.id()), t).await.unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(body_of(&mut taken, tcp).await, "hop");
        // Without a process to check its listener against, never.
        let mut taken = upstreams.take(tcp, Some(0), t).await.unwrap();
        assert_eq!(body_of(&mut taken, tcp).await, "ok");
        // Nor when the hop is not asked for (`unix_hop = false`).
        let mut taken = upstreams.take(tcp, None, t).await.unwrap();
        assert_eq!(body_of(&mut taken, tcp).await, "ok");
    }

    #[tokio::test]
    async fn a_connection_opened_for_want_of_a_hop_gives_way_to_the_hop_once_it_is_there() {
        let tcp = server().await;
        let me = std::process::id();
        let t = Duration::from_secs(5);
        let upstreams = Upstreams::new();
        let mut first = upstreams.take(tcp, Some(me), t).await.unwrap();
        assert!(first.hop_due.is_some());
        assert_eq!(body_of(&mut first, tcp).await, "ok");
        upstreams.give_back(tcp, first.sender, first.hop_due);
        answer_with(abstract_listener(hop_name(tcp.port()).as_bytes()), "hop");
        // Reused as it is while the hop's absence is remembered, then replaced by the hop.
        let deadline = Instant::now() + HOP_RETRY * 5;
        loop {
            let mut taken = upstreams.take(tcp, Some(me), t).await.unwrap();
            if body_of(&mut taken, tcp).await == "hop" {
                assert!(!taken.reused && taken.hop_due.is_none());
                break;
            }
            assert!(taken.reused, "the kept connection, not a new one on the port");
            assert!(Instant::now() < deadline, "the hop never took the kept connection's place");
            upstreams.give_back(tcp, taken.sender, taken.hop_due);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(upstreams.len(), 0, "the connection on the port is not kept beside the hop");
        // Connections that did not miss a hop are reused without looking for one.
        let mut plain = upstreams.take(tcp, None, t).await.unwrap();
        assert!(plain.hop_due.is_none());
        assert_eq!(body_of(&mut plain, tcp).await, "ok");
        upstreams.give_back(tcp, plain.sender, plain.hop_due);
        let mut again = upstreams.take(tcp, Some(me), t).await.unwrap();
        assert!(again.reused);
        assert_eq!(body_of(&mut again, tcp).await, "ok");
    }

    #[tokio::test]
    async fn a_refused_connect_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstreams = Upstreams::new();
        let e = upstreams.take(addr, None, Duration::from_secs(5)).await.err().unwrap();
        assert!(matches!(e, ConnectError::Refused(..)), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
