//! One balancer thread's connections to the instances: HTTP/1.1 client connections on hyper,
//! kept alive per instance address and reused by the thread's requests (as nginx's `keepalive`
//! cache in each worker). A connection is taken for one request and given back once the
//! answer's body has been read to its end; one left idle for [`IDLE`] is closed.
//!
//! Every request of a thread is served on that thread, so the cache is the thread's own: its
//! lock is never contended, and a request finds the connection its thread's previous request
//! left without any hand-off between threads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// What goes to an instance: the client's body, or none (a request sent again).
pub type UpBody = Either<Incoming, Empty<Bytes>>;

/// A connection to an instance, ready to send one request.
pub type Sender = http1::SendRequest<UpBody>;

/// How long an idle connection to an instance is kept.
pub const IDLE: Duration = Duration::from_secs(60);

/// How often idle connections are looked over.
const SWEEP: Duration = Duration::from_secs(10);

/// A thread's kept-alive connections, by instance address.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<Vec<(SocketAddr, Vec<Kept>)>>,
}

struct Kept {
    sender: Sender,
    since: Instant,
}

/// A connection taken for a request.
pub struct Taken {
    pub sender: Sender,
    /// Whether it carried a request before: the instance may have closed it as this one went
    /// out (its keep-alive timeout, or its stop), which a fresh connection rules out.
    pub reused: bool,
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

    /// A connection to `addr` that can take a request: the one last given back, else a new one
    /// (within `connect_timeout`).
    pub async fn take(&self, addr: SocketAddr, connect_timeout: Duration) -> Result<Taken, ConnectError> {
        if let Some(sender) = self.kept(addr) {
            return Ok(Taken { sender, reused: true });
        }
        let stream = match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Refused(addr, e)),
            Err(_) => return Err(ConnectError::TimedOut(addr, connect_timeout)),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "connection to an instance");
            }
        });
        Ok(Taken { sender, reused: false })
    }

    /// The most recently kept connection to `addr` that can take a request now. Closed ones
    /// are dropped; one still finishing its last answer stays for later.
    fn kept(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (_, list) = idle.iter_mut().find(|(a, _)| *a == addr)?;
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(k) = list.pop() {
            if k.sender.is_ready() {
                found = Some(k.sender);
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
    pub fn give_back(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let kept = Kept { sender, since: Instant::now() };
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

/// A connection on its way back to its thread's cache once the answer's body ends.
pub struct Return {
    pub upstreams: Arc<Upstreams>,
    pub addr: SocketAddr,
    pub sender: Sender,
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
        let mut first = upstreams.take(addr, t).await.unwrap();
        assert!(!first.reused);
        let res = first.sender.send_request(get(addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        first.sender.ready().await.unwrap();
        upstreams.give_back(addr, first.sender);
        assert_eq!(upstreams.len(), 1);

        let mut second = upstreams.take(addr, t).await.unwrap();
        assert!(second.reused, "the connection given back is taken again");
        assert_eq!(upstreams.len(), 0);
        // While it is out, another request opens a connection of its own.
        let third = upstreams.take(addr, t).await.unwrap();
        assert!(!third.reused);
        let res = second.sender.send_request(get(addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        second.sender.ready().await.unwrap();
        upstreams.give_back(addr, second.sender);
        upstreams.give_back(addr, third.sender);
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
        let mut first = upstreams.take(addr, t).await.unwrap();
        let res = first.sender.send_request(get(addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        // Ready for the next request, or already seen closed (then not kept at all).
        let _ = first.sender.ready().await;
        upstreams.give_back(addr, first.sender);
        // The server closed it once the answer was out: taken again at most until that is seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let taken = upstreams.take(addr, t).await.unwrap();
            if !taken.reused {
                break;
            }
            assert!(Instant::now() < deadline, "a closed connection is taken again and again");
            upstreams.give_back(addr, taken.sender);
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_refused_connect_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstreams = Upstreams::new();
        let e = upstreams.take(addr, Duration::from_secs(5)).await.err().unwrap();
        assert!(matches!(e, ConnectError::Refused(..)), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
