//! The HTTP/1.1 front. [`accept_balanced`] accepts on a bound listener (so tests bind port 0)
//! and hands each connection to the [`Lane`] with the fewest open ones; [`serve_handoffs`]
//! serves a lane's connections on its runtime, handing each request to the [`App`]. When the
//! shutdown future resolves, accepting stops and each lane waits for its in-flight requests.
//!
//! With one runtime per core, a listener shared by the cores let whichever thread woke first
//! take a connection, and 16 keep-alive clients could end up 12 on one core and 4 on the other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::App;
use super::clock::{Clocked, ConnClock};

/// An accepted connection on its way to a lane; the permit counts it against
/// `max_connections` until it closes.
type Handoff = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// One core's share of the connections: where [`accept_balanced`] hands them over.
pub struct Lane {
    handoff: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
}

/// The receiving end of a [`Lane`], for [`serve_handoffs`].
pub struct LaneReceiver {
    handoff: mpsc::UnboundedReceiver<Handoff>,
    open: Arc<AtomicUsize>,
}

/// A lane and its receiving end.
pub fn lane() -> (Lane, LaneReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let open = Arc::new(AtomicUsize::new(0));
    (
        Lane {
            handoff: tx,
            open: open.clone(),
        },
        LaneReceiver { handoff: rx, open },
    )
}

/// Accepts until `shutdown` resolves, handing each connection to the lane with the fewest open
/// connections (ties go round-robin). At `max_connections` open, it stops accepting until one
/// closes (new ones wait in the listen backlog). Dropping the lanes at the end tells each core
/// to drain.
pub async fn accept_balanced(
    listener: TcpListener,
    lanes: Vec<Lane>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    // Connections keep being accepted for a moment after shutdown starts: a request already on
    // its way is read and answered `503` instead of meeting a closed socket.
    let shutdown = async {
        shutdown.await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut next = 0;
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let n = lanes.len();
        let lane = (0..n)
            .map(|i| &lanes[(next + i) % n])
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
            .expect("at least one lane");
        next = (next + 1) % n;
        lane.open.fetch_add(1, Ordering::Relaxed);
        if lane.handoff.send((stream, peer, permit)).is_err() {
            lane.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How long the front keeps accepting and reading requests after shutdown starts (they are
/// answered `503` with `Connection: close`; see [`App::handle`]), and then how long a lane
/// gives its newest connections to deliver their request before closing idle ones.
pub const LINGER: Duration = Duration::from_millis(250);

/// How long a connection may take over a request head, and sit idle between requests.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// From connecting, or the first byte after a response, to the whole head.
    pub header_timeout: Duration,
    /// From the last byte of a response to the first of the next request.
    pub idle_timeout: Duration,
}

/// Serves the connections handed to this lane (on the calling thread's runtime) until the
/// acceptor is gone, then drains for up to `drain`. A connection that overstays its
/// [`ConnLimits`] is closed.
pub async fn serve_handoffs(
    mut lane: LaneReceiver,
    app: Arc<App>,
    limits: ConnLimits,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    while let Some((stream, peer, permit)) = lane.handoff.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => serve_connection(
                stream,
                peer,
                &app,
                (&http, limits),
                &graceful,
                (lane.open.clone(), permit),
            ),
            Err(e) => {
                lane.open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!("cannot register the connection from {peer}: {e}");
            }
        }
    }
    // Graceful shutdown closes a connection that has not sent a request yet: give the last
    // ones handed over the time to send theirs (answered 503).
    tokio::time::sleep(LINGER).await;
    drain_connections(graceful, drain).await;
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection on its own task; `open` is decremented and the permit released when
/// it closes.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: &Arc<App>,
    (http, limits): (&http1::Builder, ConnLimits),
    graceful: &GracefulShutdown,
    (open, permit): (Arc<AtomicUsize>, OwnedSemaphorePermit),
) {
    // Without it, a guest writing its body in pieces stalls 40 ms per response (Nagle).
    let _ = stream.set_nodelay(true);
    let clock = ConnClock::new(limits.header_timeout, limits.idle_timeout);
    let app = app.clone();
    let timed = clock.clone();
    let service = service_fn(move |req| {
        let (app, timed) = (app.clone(), timed.clone());
        async move {
            timed.request_started();
            let resp = app.handle(req, peer).await;
            timed.request_answered();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = http.serve_connection(TokioIo::new(Clocked::new(stream, clock.clone())), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        match clock.watch(conn).await {
            Some(Err(e)) => tracing::debug!("connection from {peer}: {e}"),
            Some(Ok(())) => {}
            None => tracing::debug!(
                "connection from {peer} closed: request head too slow, or idle too long"
            ),
        }
        open.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    });
}

async fn drain_connections(graceful: GracefulShutdown, drain: Duration) {
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {drain:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keep_alive_connections_are_spread_evenly_over_the_lanes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (lanes, mut receivers): (Vec<_>, Vec<_>) = (0..2).map(|_| lane()).unzip();
        let stop = tokio_util::sync::CancellationToken::new();
        let acceptor = tokio::spawn(accept_balanced(
            listener,
            lanes,
            100,
            stop.clone().cancelled_owned(),
        ));
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut got = [0, 0];
        for _ in 0..8 {
            let [a, b] = &mut receivers[..] else {
                unreachable!()
            };
            tokio::select! {
                Some(_) = a.handoff.recv() => got[0] += 1,
                Some(_) = b.handoff.recv() => got[1] += 1,
            }
        }
        assert_eq!(got, [4, 4]);
        assert_eq!(receivers[0].open.load(Ordering::Relaxed), 4);

        // A lane whose connections closed gets the next ones first.
        receivers[0].open.store(0, Ordering::Relaxed);
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let handed = tokio::time::timeout(Duration::from_secs(5), receivers[0].handoff.recv());
            assert!(handed.await.expect("went to the busier lane").is_some());
        }
        stop.cancel();
        acceptor.await.unwrap();
        assert!(
            receivers[1].handoff.recv().await.is_none(),
            "lanes end with the acceptor"
        );
    }
}
