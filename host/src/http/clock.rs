//! A connection's clock: how long a client may take to send a request head
//! (`header_timeout`), and how long a keep-alive connection may sit idle between requests
//! (`idle_timeout`). hyper has one timer for both (it starts its header timer as soon as it
//! waits for the next request); this tells them apart by watching the socket: the first byte
//! after a response starts a head, the request reaching fnhost ends it.
//!
//! [`Clocked`] wraps the stream and notes activity; [`ConnClock::watch`] drives the
//! connection's future and stops it when it has overstayed. The activity is noted inside that
//! future's polls, so the watch re-reads its deadline after each poll: one timer, moved earlier
//! when needed and re-armed lazily when the deadline moved later (no task is woken per
//! request).

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// Where one connection is, and since when.
pub struct ConnClock {
    base: Instant,
    phase: AtomicU8,
    /// Milliseconds after `base` the phase began (or, when idle, the last byte moved).
    since: AtomicU64,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnClock {
    /// A new connection: it owes a request head from now.
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> Arc<ConnClock> {
        Arc::new(ConnClock {
            base: Instant::now(),
            phase: AtomicU8::new(HEAD),
            since: AtomicU64::new(0),
            header_timeout,
            idle_timeout,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, phase: u8) {
        self.since.store(self.now(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// A request head arrived: its handling is timed elsewhere (body, budget).
    pub fn request_started(&self) {
        self.set(BUSY);
    }

    /// The answer is on its way: the connection is idle until the client speaks again.
    pub fn request_answered(&self) {
        self.set(IDLE);
    }

    fn read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.set(HEAD);
        }
    }

    fn wrote(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// When the connection overstays, if nothing happens meanwhile; `None` while a request is
    /// being handled (its own budgets apply).
    fn deadline(&self) -> Option<Instant> {
        let since = self.base + Duration::from_millis(self.since.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            HEAD => Some(since + self.header_timeout),
            IDLE => Some(since + self.idle_timeout),
            _ => None,
        }
    }

    /// Drives `conn` (the connection, whose polls note its activity here) to its end, or
    /// returns `None` once the connection has spent longer than allowed sending a head, or
    /// idle.
    pub async fn watch<F: Future>(&self, conn: F) -> Option<F::Output> {
        let mut conn = pin!(conn);
        let busy_recheck = self.header_timeout.min(self.idle_timeout);
        let first = self
            .deadline()
            .unwrap_or_else(|| Instant::now() + busy_recheck);
        let mut timer = pin!(tokio::time::sleep_until(first));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            loop {
                let now = Instant::now();
                let due = match self.deadline() {
                    Some(deadline) if deadline <= now => return Poll::Ready(None),
                    Some(deadline) => deadline,
                    // Busy: look again later.
                    None => now + busy_recheck,
                };
                // Only an earlier deadline moves the timer now; a later one waits for it to fire.
                if due < timer.deadline() {
                    timer.as_mut().reset(due);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => timer.as_mut().reset(due),
                }
            }
        })
        .await
    }
}

/// A stream that reports its activity to a [`ConnClock`].
pub struct Clocked<S> {
    inner: S,
    clock: Arc<ConnClock>,
}

impl<S> Clocked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, clock: Arc<ConnClock>) -> Clocked<S> {
        Clocked { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Clocked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Clocked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never ends by itself (its activity is driven by `script`).
    async fn watched(clock: &ConnClock, script: impl Future<Output = ()>) -> Instant {
        let conn = async {
            script.await;
            std::future::pending::<()>().await
        };
        assert!(clock.watch(conn).await.is_none(), "only expiry ends it");
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn heads_and_idle_time_have_their_own_limits() {
        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        let start = Instant::now();
        let ended = watched(&clock, async {}).await;
        assert_eq!(ended - start, Duration::from_secs(2), "no head at all");

        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        let answered = std::cell::Cell::new(None);
        let ended = watched(&clock, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            clock.request_started();
            tokio::time::sleep(Duration::from_secs(30)).await;
            clock.request_answered();
            answered.set(Some(Instant::now()));
            tokio::time::sleep(Duration::from_secs(1)).await;
            clock.wrote();
        })
        .await;
        assert_eq!(
            ended - answered.get().unwrap(),
            Duration::from_secs(6),
            "idle from the last byte written; a busy request is never cut"
        );

        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        let head = std::cell::Cell::new(None);
        let ended = watched(&clock, async {
            clock.request_started();
            clock.request_answered();
            tokio::time::sleep(Duration::from_secs(4)).await;
            clock.read();
            head.set(Some(Instant::now()));
            clock.read();
        })
        .await;
        assert_eq!(
            ended - head.get().unwrap(),
            Duration::from_secs(2),
            "a slow next head: the deadline moved earlier than the idle one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_is_returned() {
        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        assert_eq!(clock.watch(async { 7 }).await, Some(7));
    }
}
