//! Guest stdout and stderr, line by line, into the host log — each line tagged with the function
//! name and the invocation id. Bounded: a line is cut at [`MAX_LINE`] bytes, and one
//! invocation's output at its `max_log` bytes (stdout and stderr together), after which a single
//! "truncated" line says so and the rest is dropped. The log writer itself never blocks a
//! serving thread (see `cli::main`: a non-blocking, lossy writer thread).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept whole; longer output is logged in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// What one invocation may still print, shared by its stdout and stderr.
pub(super) struct LogBudget {
    max: u64,
    left: AtomicU64,
    truncated: AtomicBool,
}

impl LogBudget {
    pub(super) fn new(max: u64) -> Arc<LogBudget> {
        Arc::new(LogBudget {
            max,
            left: AtomicU64::new(max),
            truncated: AtomicBool::new(false),
        })
    }

    /// Takes `n` bytes; `false` (and nothing taken) when they do not fit.
    fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// Whose output the lines are: one invocation's. An instance kept for reuse is retagged for
/// each request it serves (see [`LogStream`]).
pub(super) struct Tag {
    pub(super) function: Arc<str>,
    pub(super) id: Arc<str>,
    pub(super) budget: Arc<LogBudget>,
    /// Where a background attempt's lines are kept, too.
    pub(super) capture: Option<crate::logs::Capture>,
    /// The deploy of the function, logged with each line when there is one.
    pub(super) deploy: Option<Arc<str>>,
    /// The background attempt's number, logged with each line.
    pub(super) attempt: Option<u32>,
    /// The trace the invocation is part of, logged with each line when traces are on.
    pub(super) trace_id: Option<Arc<str>>,
}

/// The tag an instance's stdout and stderr share; replaced as a whole per request.
pub(super) type SharedTag = Arc<Mutex<Arc<Tag>>>;

#[derive(Clone)]
pub(super) struct LogStream {
    stream: &'static str,
    tag: SharedTag,
}

impl LogStream {
    /// The guest's `stream` (`stdout` or `stderr`), its lines tagged by `tag`.
    pub(super) fn new(stream: &'static str, tag: SharedTag) -> LogStream {
        LogStream { stream, tag }
    }

    fn tag(&self) -> Arc<Tag> {
        self.tag.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    /// A WASI 0.3 `write-via-stream`: made in the guest's host call, so it keeps the tag of
    /// that call's invocation (in an instance serving several at once, the calling task's)
    /// while its data arrives later.
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        let fixed = LogStream::new(self.stream, Arc::new(Mutex::new(self.tag())));
        Box::new(LineWriter {
            target: fixed,
            buf: Vec::new(),
        })
    }

    /// The WASI 0.2 stream, made once per instance (libc keeps it): it reads the tag as it
    /// writes, so a kept instance's lines follow the invocation it serves now.
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        let writer = LineWriter {
            target: self.clone(),
            buf: Vec::new(),
        };
        Box::new(wasmtime_wasi::p2::pipe::AsyncWriteStream::new(
            8192,
            Box::pin(writer),
        ))
    }
}

struct LineWriter {
    target: LogStream,
    /// The unfinished line.
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let (t, stream) = (self.target.tag(), self.target.stream);
        if !t.budget.take(line.len() as u64 + 1) {
            if !t.budget.truncated.swap(true, Ordering::Relaxed) {
                tracing::warn!(target: "guest", function = &*t.function, id = &*t.id, stream,
                    "log truncated: this invocation printed more than max_log ({} bytes); the rest is dropped",
                    t.budget.max);
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let (deploy, attempt, trace_id) = (t.deploy.as_deref(), t.attempt, t.trace_id.as_deref());
        tracing::info!(target: "guest", function = &*t.function, id = &*t.id, attempt, stream,
            deploy, trace_id, "{}", text);
        crate::logs::record(&t.function, &t.id, stream, text, t.capture.as_ref());
    }

    /// Emits every complete line of `buf + data` and keeps the rest: each byte is looked at
    /// once.
    fn write(&mut self, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            if self.buf.is_empty() {
                self.emit(&data[..pos]);
            } else {
                self.buf.extend_from_slice(&data[..pos]);
                let line = std::mem::take(&mut self.buf);
                self.emit(&line);
            }
            data = &data[pos + 1..];
        }
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while self.buf.len() - start >= MAX_LINE {
            self.emit(&self.buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        if start > 0 {
            self.buf.drain(..start);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.emit(&rest);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.emit(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_stops_at_max() {
        let budget = LogBudget::new(10);
        assert!(budget.take(4));
        assert!(budget.take(6));
        assert!(!budget.take(1));
        assert!(!budget.take(0) || budget.left.load(Ordering::Relaxed) == 0);
    }

    #[test]
    fn lines_are_split_and_long_ones_cut_without_rescanning() {
        let budget = LogBudget::new(u64::MAX);
        let tag = Tag {
            function: "f".into(),
            id: "id".into(),
            budget: budget.clone(),
            capture: None,
            deploy: None,
            attempt: None,
            trace_id: None,
        };
        let target = LogStream::new("stdout", Arc::new(Mutex::new(Arc::new(tag))));
        let mut w = LineWriter {
            target,
            buf: Vec::new(),
        };
        w.write(b"one\ntw");
        assert_eq!(w.buf, b"tw");
        w.write(b"o\nthree");
        assert_eq!(w.buf, b"three");
        w.write(&vec![b'x'; 2 * MAX_LINE + 5]);
        assert_eq!(w.buf.len(), 5 + 5, "two whole pieces logged, the rest kept");
        // Charged: "one\n", "two\n", two cut pieces (each + 1).
        let used = u64::MAX - budget.left.load(Ordering::Relaxed);
        assert_eq!(used, 4 + 4 + 2 * (MAX_LINE as u64 + 1));
    }
}
