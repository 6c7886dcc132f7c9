//! The balancer's threads, for the http and the tcp mode alike: one event loop each (as
//! nginx's workers), each accepting on the public socket and serving its connections itself,
//! so that a request (or a message, in tcp mode) is read, sent on and answered on one thread,
//! and the daemon's own work never waits on the balancer's, nor the other way round.
//!
//! A connection goes to the thread serving the fewest: the one that accepted it hands it over
//! when another serves fewer (one thread would otherwise take a burst of connections whole,
//! and carry their load alone). A thread ends once its connections have.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::{Balancer, Phase};

/// What a balancer's thread does with each client connection it serves.
pub trait Serve: Send + Sync + 'static {
    /// Start serving `stream` from `peer` on the thread's runtime: `read` is what an earlier
    /// image of the daemon read from it and did not serve; `counted` is held until it ends.
    fn serve(
        this: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        read: Bytes,
        phase: watch::Receiver<Phase>,
        counted: Open,
    );
}

/// Serve the balancer on `listener` (and the connections a previous image of the daemon
/// handed over, each with the bytes it had read) until `phase` changes; then stop accepting
/// and let the connections finish as [`Phase`] says. Each thread serves its connections with
/// what `make` gives it (called on the thread, with its count of connections).
pub fn serve<S, M>(
    balancer: Arc<Balancer>,
    listener: std::net::TcpListener,
    adopted: Vec<(OwnedFd, Vec<u8>)>,
    phase: watch::Receiver<Phase>,
    make: M,
) where
    S: Serve,
    M: Fn(&Arc<Balancer>, &Arc<AtomicUsize>) -> Arc<S> + Clone + Send + 'static,
{
    let n = workers();
    let (threads, mut inboxes) = Threads::new(n);
    *balancer.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads.open.clone();
    let mut adopted: Vec<Vec<_>> = {
        let mut shares: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for (i, a) in adopted.into_iter().enumerate() {
            shares[i % n].push(a);
        }
        shares
    };
    for me in (0..n).rev() {
        let inbox = inboxes.pop().expect("an inbox per thread");
        let mine = adopted.pop().unwrap_or_default();
        let listener = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(app = %balancer.app, error = %e, "a thread of the balancer cannot use its socket");
                // Its share of the connections handed over goes to the next thread.
                if let Some(next) = adopted.last_mut() {
                    next.extend(mine);
                }
                continue;
            }
        };
        let (b, phase, all, make) = (balancer.clone(), phase.clone(), threads.clone(), make.clone());
        let accepting = super::Accepting::new(&balancer);
        let spawned = std::thread::Builder::new().name(format!("balancer-{me}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(app = %b.app, error = %e, "a thread of the balancer cannot start");
                    return;
                }
            };
            runtime.block_on(async move {
                let server = make(&b, &all.open[me]);
                let this = Thread { me, threads: all.clone(), inbox };
                if let Err(e) = accept(b.clone(), listener, mine, phase, this, server).await {
                    tracing::error!(app = %b.app, error = %e, "the balancer stopped accepting");
                }
                drop(accepting);
                // The connections finish (within `drain_timeout`, or handed over).
                let open = &all.open[me];
                loop {
                    let closed = b.closed.notified();
                    if open.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    closed.await;
                }
            });
        });
        if let Err(e) = spawned {
            tracing::error!(app = %balancer.app, error = %e, "a thread of the balancer cannot start");
        }
    }
}

/// The balancer's threads: one per CPU, four at most.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

/// The balancer's threads as each sees the others: how many connections each serves, and
/// where to hand it one.
struct Threads {
    /// Each thread's connections, counted from their accept until they end.
    open: Vec<Arc<AtomicUsize>>,
    /// Where each thread takes connections handed to it.
    handed: Vec<mpsc::UnboundedSender<Handed>>,
}

/// A connection one thread accepted for another, counted in the other's figure.
struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    counted: Open,
}

impl Threads {
    fn new(n: usize) -> (Arc<Threads>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        let (handed, inboxes) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..n).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        (Arc::new(Threads { open, handed }), inboxes)
    }

    /// The thread to serve a new connection: of those that take connections (started, and
    /// still accepting), the one serving the fewest, `me` among equals.
    fn least(&self, me: usize) -> usize {
        let mut best = (self.open[me].load(Ordering::Relaxed), me);
        for (i, open) in self.open.iter().enumerate() {
            let n = open.load(Ordering::Relaxed);
            if n < best.0 && !self.handed[i].is_closed() {
                best = (n, i);
            }
        }
        best.1
    }
}

/// One of the balancer's threads, in its accept loop.
struct Thread {
    me: usize,
    threads: Arc<Threads>,
    inbox: mpsc::UnboundedReceiver<Handed>,
}

impl Thread {
    /// Serve a connection just accepted here, or hand it to the thread serving the fewest.
    fn place<S: Serve>(
        &self,
        b: &Arc<Balancer>,
        server: &Arc<S>,
        stream: TcpStream,
        peer: SocketAddr,
        phase: &watch::Receiver<Phase>,
    ) {
        let to = self.threads.least(self.me);
        let stream = match to == self.me {
            true => stream,
            false => match self.hand(b, to, stream, peer) {
                Some(back) => back,
                None => return,
            },
        };
        // Counted from here, not from the task's first run: `herder update` waits for every
        // connection to be handed over, and one accepted a moment before must not be missed
        // (it would be closed at the update, its request reset).
        let counted = Open::new(b, &self.threads.open[self.me]);
        S::serve(server, stream, peer, Bytes::new(), phase.clone(), counted);
    }

    /// Hand a connection to thread `to`; the connection back when that thread no longer takes
    /// any (it stopped accepting).
    fn hand(&self, b: &Arc<Balancer>, to: usize, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let lost =
            |e: std::io::Error| tracing::warn!(app = %b.app, %peer, error = %e, "a connection is lost");
        // Counted from here, in the other thread's figure, so that `herder update` and that
        // thread wait for it while it travels.
        let counted = Open::new(b, &self.threads.open[to]);
        let stream = stream.into_std().map_err(lost).ok()?;
        let back = self.threads.handed[to].send(Handed { stream, peer, counted }).err()?.0;
        TcpStream::from_std(back.stream).map_err(lost).ok()
    }

    /// Serve a connection another thread handed over.
    fn take<S: Serve>(&self, b: &Balancer, server: &Arc<S>, handed: Handed, phase: &watch::Receiver<Phase>) {
        let Handed { stream, peer, counted } = handed;
        match TcpStream::from_std(stream) {
            Ok(stream) => S::serve(server, stream, peer, Bytes::new(), phase.clone(), counted),
            Err(e) => {
                tracing::warn!(app = %b.app, %peer, error = %e, "a connection handed between threads is lost")
            }
        }
    }
}

/// A thread's accept loop: the connections handed over by an earlier image of the daemon
/// first, then those it accepts and those other threads hand it, until the balancer is told to
/// stop serving.
async fn accept<S: Serve>(
    balancer: Arc<Balancer>,
    listener: std::net::TcpListener,
    adopted: Vec<(OwnedFd, Vec<u8>)>,
    mut phase: watch::Receiver<Phase>,
    mut this: Thread,
    server: Arc<S>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    for (fd, read) in adopted {
        let stream = std::net::TcpStream::from(fd);
        let adopted = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream));
        match adopted {
            Ok(stream) => {
                let peer = stream.peer_addr().map_or(SocketAddr::from(([0, 0, 0, 0], 0)), super::canonical);
                let counted = Open::new(&balancer, &this.threads.open[this.me]);
                S::serve(&server, stream, peer, Bytes::from(read), phase.clone(), counted);
            }
            Err(e) => tracing::warn!(app = %balancer.app, error = %e, "a connection handed over is lost"),
        }
    }
    loop {
        tokio::select! {
            accepted = super::next_client(&balancer.app, &listener, &mut phase) => match accepted {
                Some((stream, peer)) => this.place(&balancer, &server, stream, peer, &phase),
                None => break,
            },
            Some(handed) = this.inbox.recv() => this.take(&balancer, &server, handed, &phase),
        }
    }
    // No thread hands this one a connection from now on (it serves it itself); those already
    // on their way are served.
    this.inbox.close();
    while let Ok(handed) = this.inbox.try_recv() {
        this.take(&balancer, &server, handed, &phase);
    }
    Ok(())
}

/// A client connection, counted from its accept until it ends (in the balancer's figures,
/// which `herder update` waits on, and in its thread's, which the thread waits on).
pub struct Open {
    balancer: Arc<Balancer>,
    open: Arc<AtomicUsize>,
}

impl Open {
    pub fn new(balancer: &Arc<Balancer>, open: &Arc<AtomicUsize>) -> Open {
        balancer.opened();
        open.fetch_add(1, Ordering::AcqRel);
        Open { balancer: balancer.clone(), open: open.clone() }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.balancer.closed_one();
        self.balancer.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_thread_serving_fewest_of_those_taking_connections() {
        let (threads, mut inboxes) = Threads::new(3);
        let set = |counts: [usize; 3]| {
            for (open, n) in threads.open.iter().zip(counts) {
                open.store(n, Ordering::Relaxed);
            }
        };
        set([2, 1, 2]);
        assert_eq!(threads.least(0), 1);
        set([1, 1, 1]);
        assert_eq!((threads.least(0), threads.least(2)), (0, 2), "the accepting thread among equals");
        set([3, 0, 1]);
        // A thread that stopped taking connections (closed its inbox) is passed over.
        inboxes[1].close();
        assert_eq!(threads.least(0), 2);
        inboxes[2].close();
        assert_eq!(threads.least(0), 0);
    }
}
