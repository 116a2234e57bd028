//! Guest stdout and stderr, line by line, into the host log — each line tagged with the function
//! name and the invocation id.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept whole; longer output is logged in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone)]
pub(super) struct LogStream {
    function: Arc<str>,
    id: Arc<str>,
    stream: &'static str,
}

impl LogStream {
    pub(super) fn stdout(function: Arc<str>, id: Arc<str>) -> LogStream {
        LogStream {
            function,
            id,
            stream: "stdout",
        }
    }
    pub(super) fn stderr(function: Arc<str>, id: Arc<str>) -> LogStream {
        LogStream {
            function,
            id,
            stream: "stderr",
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            target: self.clone(),
            buf: Vec::new(),
        })
    }
}

struct LineWriter {
    target: LogStream,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let t = &self.target;
        tracing::info!(target: "guest", function = &*t.function, id = &*t.id, stream = t.stream, "{}", text.trim_end_matches('\r'));
    }

    fn flush_lines(&mut self) {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let rest = self.buf.split_off(pos + 1);
            let line = std::mem::replace(&mut self.buf, rest);
            self.emit(&line[..line.len() - 1]);
        }
        if self.buf.len() >= MAX_LINE {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.buf.extend_from_slice(data);
        self.flush_lines();
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
