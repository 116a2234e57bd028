//! A connection's clock: how long a client may take to send a request head
//! (`header_timeout`), and how long a keep-alive connection may sit idle between requests
//! (`idle_timeout`). hyper has one timer for both (it starts its header timer as soon as it
//! waits for the next request); this tells them apart by watching the socket: the first byte
//! after a response starts a head, the request reaching fnhost ends it.
//!
//! [`Clocked`] wraps the stream and notes activity; [`ConnClock::expired`] resolves when the
//! connection has overstayed, and the caller drops it.

use std::io;
use std::pin::Pin;
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
    /// Wakes [`ConnClock::expired`] when the phase changes (its deadline with it).
    changed: tokio::sync::Notify,
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
            changed: tokio::sync::Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, phase: u8) {
        self.since.store(self.now(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
        self.changed.notify_one();
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

    /// Resolves once the connection has spent longer than allowed sending a head, or idle.
    pub async fn expired(&self) {
        loop {
            let since = self.base + Duration::from_millis(self.since.load(Ordering::Relaxed));
            let deadline = match self.phase.load(Ordering::Relaxed) {
                HEAD => since + self.header_timeout,
                IDLE => since + self.idle_timeout,
                // Busy: the request's own budgets apply; look again later.
                _ => Instant::now() + self.header_timeout.min(self.idle_timeout),
            };
            if Instant::now() >= deadline && self.phase.load(Ordering::Relaxed) != BUSY {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {},
                () = self.changed.notified() => {},
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn heads_and_idle_time_have_their_own_limits() {
        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        let start = Instant::now();
        clock.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2), "no head at all");

        // Watched from the start, as a connection is.
        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        let watch = tokio::spawn({
            let clock = clock.clone();
            async move { clock.expired().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        clock.request_started();
        tokio::time::sleep(Duration::from_secs(30)).await;
        clock.request_answered();
        let answered = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        clock.wrote();
        watch.await.unwrap();
        assert_eq!(
            answered.elapsed(),
            Duration::from_secs(6),
            "idle from the last byte written; a busy request is never cut"
        );

        let clock = ConnClock::new(Duration::from_secs(2), Duration::from_secs(5));
        clock.request_started();
        clock.request_answered();
        tokio::time::sleep(Duration::from_secs(4)).await;
        clock.read();
        let head = Instant::now();
        clock.read();
        clock.expired().await;
        assert_eq!(head.elapsed(), Duration::from_secs(2), "a slow next head");
    }
}
