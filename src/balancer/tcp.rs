//! The `tcp` mode: a layer-4 proxy for databases and other servers that do not speak HTTP.
//! Each client connection goes to the member the strategy picks (`round_robin` or
//! `least_conn`; the hash strategies hash the client's address); a failed connect is tried on
//! another member, since nothing reached the first. Bytes then pass both ways until both
//! sides have closed, or neither sends for `stream_idle_timeout`: small messages copied through
//! a buffer of the thread's, bulk zero-copy (splice(2) through a pipe per direction).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::pick::hash;
use super::threads::{self, Open, Serve};
use super::{Balancer, Phase};
use crate::protocol::spec::Strategy;

/// Serve the balancer on `listener` until `phase` changes; connections under way go on until
/// they end or `drain_timeout` passes. It runs on threads of its own ([`super::threads`]), as
/// the http mode does: each connection's bytes pass on the thread that serves it.
pub fn serve(balancer: Arc<Balancer>, listener: std::net::TcpListener, phase: watch::Receiver<Phase>) {
    threads::serve(balancer, listener, Vec::new(), phase, |balancer, _| Arc::new(Relaying(balancer.clone())));
}

/// What a thread of the tcp mode serves its connections with.
struct Relaying(Arc<Balancer>);

impl Serve for Relaying {
    fn serve(
        this: &Arc<Relaying>,
        stream: TcpStream,
        peer: SocketAddr,
        _read: bytes::Bytes,
        mut phase: watch::Receiver<Phase>,
        counted: Open,
    ) {
        let b = this.0.clone();
        tokio::spawn(async move {
            super::finish_within(proxy(&b, stream, peer.ip()), &b, &mut phase).await;
            drop(counted);
        });
    }
}

async fn proxy(b: &Arc<Balancer>, mut client: TcpStream, peer: std::net::IpAddr) {
    let started = Instant::now();
    let pool = b.pool();
    let spec = pool.spec.clone();
    let key = match spec.strategy {
        Strategy::RoundRobin | Strategy::LeastConn => None,
        _ => Some(match peer {
            std::net::IpAddr::V4(a) => hash(&a.octets()),
            std::net::IpAddr::V6(a) => hash(&a.octets()),
        }),
    };
    let mut tried = Vec::new();
    let (chosen, mut upstream) = loop {
        let Some(chosen) = b.choose(&pool, key, &tried) else {
            b.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(app = %b.app, "no instance is ready: connection closed");
            return;
        };
        let connect = Duration::from_millis(spec.connect_timeout_ms);
        match tokio::time::timeout(connect, TcpStream::connect(chosen.addr)).await {
            Ok(Ok(s)) => break (chosen, s),
            Ok(Err(e)) if super::short_of_resources(&e) => {
                // Not the instance's doing, and another would fare no better.
                b.short_of_resources(chosen.slot, &e);
                return;
            }
            Ok(Err(e)) => {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    b.refused(&chosen);
                }
                tracing::debug!(app = %b.app, slot = chosen.slot, error = %e, "connect")
            }
            Err(_) => tracing::debug!(app = %b.app, slot = chosen.slot, "connect timed out"),
        }
        b.failed(&pool, &chosen);
        b.stats.retries.fetch_add(1, Ordering::Relaxed);
        tried.push(chosen.index);
    };
    let _ = upstream.set_nodelay(true);
    b.succeeded(&chosen);
    b.stats.observe(started.elapsed());
    chosen.claim.state.stats.answered(200);
    let idle = Duration::from_millis(spec.stream_idle_timeout_ms);
    match Relay::new() {
        Ok(relay) => relay.run(&mut client, &mut upstream, idle).await,
        Err(e) => {
            tracing::debug!(app = %b.app, error = %e, "no pipe for splice(2): bytes copied through user space");
            pipe(&mut client, &mut upstream, idle).await;
        }
    }
}

/// Forwarding between two sockets. Bulk goes zero-copy: splice(2) moves the bytes from one
/// socket into a pipe and from the pipe into the other socket without copying them through user
/// space; one pipe per direction. A message of a few hundred bytes costs less copied (a read and
/// a write) than spliced, so each direction copies until a read fills [`COPY_CHUNK`], splices
/// while a splice moves at least that much, and copies again after.
struct Relay {
    to_upstream: (OwnedFd, OwnedFd),
    to_client: (OwnedFd, OwnedFd),
}

/// The most a splice moves at once (a pipe's default capacity).
const SPLICE_CHUNK: usize = 64 * 1024;

/// The most a copy moves at once; a transfer this large is bulk, spliced from then on.
const COPY_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where a copy passes through: one buffer per thread, none per connection.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; COPY_CHUNK]);
}

impl Relay {
    fn new() -> std::io::Result<Relay> {
        Ok(Relay { to_upstream: pipe2()?, to_client: pipe2()? })
    }

    /// Forward both ways until both directions ended (each end passed on as a shutdown of the
    /// other side's writing), one failed, or neither side sent anything for `idle`.
    async fn run(self, client: &mut TcpStream, upstream: &mut TcpStream, idle: Duration) {
        let start = Instant::now();
        let last = AtomicU64::new(0);
        let (client_r, client_w) = client.split();
        let (upstream_r, upstream_w) = upstream.split();
        let up = one_way(client_r, upstream_w, &self.to_upstream, &last, start);
        let down = one_way(upstream_r, client_w, &self.to_client, &last, start);
        let both = async {
            // Either direction failing ends the connection; an end of one waits for the other.
            if let Err(e) = tokio::try_join!(up, down) {
                tracing::debug!(error = %e, "tcp connection");
            }
        };
        tokio::pin!(both);
        loop {
            let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            let Some(wait) = idle.checked_sub(quiet).filter(|w| !w.is_zero()) else {
                return;
            };
            tokio::select! {
                _ = both.as_mut() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Move what `from` sends to `to` until `from` ends (then shut `to`'s writing): copied, or
/// through `pipe` once the transfer is bulk.
async fn one_way(
    mut from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    pipe: &(OwnedFd, OwnedFd),
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    let mut bulk = false;
    // What a copy read and the socket did not take at once (empty, unallocated, as a rule).
    let mut rest = Vec::new();
    loop {
        let n = match bulk {
            true => spliced(from.as_ref(), to.as_ref(), pipe).await?,
            false => copied(&mut from, to.as_ref(), &mut rest).await?,
        };
        if n == 0 {
            // SAFETY: shutdown(2) of a socket this task holds.
            unsafe { libc::shutdown(to.as_ref().as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        bulk = n >= COPY_CHUNK;
    }
}

/// One read from `from` through the thread's buffer, written to `to` whole; how many bytes (0:
/// `from` ended).
///
/// The read is tokio's `poll_read`, which takes a read that did not fill the buffer as the
/// socket drained: the next message is waited for, not tried for first (`try_read` would leave
/// the socket marked readable, and each message would cost a read that finds nothing).
async fn copied(from: &mut ReadHalf<'_>, to: &TcpStream, rest: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::ErrorKind::{WouldBlock, WriteZero};
    let n = std::future::poll_fn(|cx| {
        // Read and written at once: the buffer is the thread's, and is not held across a wait.
        SCRATCH.with_borrow_mut(|buf| {
            let mut read = tokio::io::ReadBuf::new(buf);
            std::task::ready!(std::pin::Pin::new(&mut *from).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            let mut done = 0;
            while done < n {
                match to.try_write(&buf[done..n]) {
                    Ok(0) => return Poll::Ready(Err(std::io::Error::from(WriteZero))),
                    Ok(m) => done += m,
                    Err(e) if e.kind() == WouldBlock => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            rest.extend_from_slice(&buf[done..n]);
            Poll::Ready(Ok(n))
        })
    })
    .await?;
    // The socket's buffer was full: the rest once it takes more.
    let mut sent = 0;
    while sent < rest.len() {
        to.writable().await?;
        match to.try_write(&rest[sent..]) {
            Ok(0) => return Err(std::io::Error::from(WriteZero)),
            Ok(m) => sent += m,
            Err(e) if e.kind() == WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    rest.clear();
    Ok(n)
}

/// One splice from `from` into the pipe and out of it to `to`, whole; how many bytes (0:
/// `from` ended).
async fn spliced(from: &TcpStream, to: &TcpStream, pipe: &(OwnedFd, OwnedFd)) -> std::io::Result<usize> {
    use tokio::io::Interest;
    let (pipe_r, pipe_w) = (pipe.0.as_raw_fd(), pipe.1.as_raw_fd());
    // Into the pipe, which is empty here: EAGAIN means the socket has nothing to read.
    let n = loop {
        from.readable().await?;
        match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe_w, SPLICE_CHUNK)) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    // Out of the pipe, whole: EAGAIN means the socket's buffer is full.
    let mut pending = n;
    while pending > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || splice(pipe_r, to.as_raw_fd(), pending)) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(m) => pending -= m,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// splice(2) of up to `len` bytes, without blocking on either end.
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: splice between two descriptors this process holds; no user memory involved.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A pipe (read end, write end), non-blocking and close-on-exec.
fn pipe2() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copy bytes both ways until either side is done or neither sends for `idle`.
pub async fn pipe<A, B>(a: &mut A, b: &mut B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Active { inner: a, last: last.clone(), start };
    let mut b = Active { inner: b, last: last.clone(), start };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024);
    tokio::pin!(copy);
    loop {
        let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        let Some(wait) = idle.checked_sub(quiet).filter(|w| !w.is_zero()) else {
            return;
        };
        tokio::select! {
            _ = copy.as_mut() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A stream that notes when it last read anything.
struct Active<'a, T> {
    inner: &'a mut T,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<'_, T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<'_, T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected sockets on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connected = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connected);
        (accepted.unwrap().0, connected.unwrap())
    }

    /// `len` bytes of a pattern that shows a byte lost, doubled or moved.
    fn pattern(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_messages_bulk_and_small_again_pass_whole_and_in_order_both_ways() {
        let (mut client, mut relay_client) = pair().await;
        let (mut relay_upstream, mut upstream) = pair().await;
        let relay = tokio::spawn(async move {
            Relay::new().unwrap().run(&mut relay_client, &mut relay_upstream, Duration::from_secs(30)).await
        });
        // Copied (small), spliced (bulk), copied again, each way; the far side reads each whole.
        let sizes = [100, 3 << 20, 200, 5 << 20, 50];
        let mut offset = 0;
        for &n in &sizes {
            let sent = pattern(offset, n);
            let (mut got_up, mut got_down) = (vec![0; n], vec![0; n]);
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = upstream.split();
            tokio::try_join!(
                async { cw.write_all(&sent).await },
                async { uw.write_all(&sent).await },
                async { ur.read_exact(&mut got_up).await.map(|_| ()) },
                async { cr.read_exact(&mut got_down).await.map(|_| ()) },
            )
            .unwrap();
            assert!(got_up == sent, "{n} bytes upstream arrived altered");
            assert!(got_down == sent, "{n} bytes to the client arrived altered");
            offset += n;
        }
        // Each side's end reaches the other, and the relay ends.
        client.shutdown().await.unwrap();
        assert_eq!(upstream.read(&mut [0; 16]).await.unwrap(), 0);
        upstream.shutdown().await.unwrap();
        assert_eq!(client.read(&mut [0; 16]).await.unwrap(), 0);
        tokio::time::timeout(Duration::from_secs(10), relay).await.unwrap().unwrap();
    }
}
