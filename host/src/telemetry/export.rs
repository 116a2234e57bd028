//! The span queue between fnhost's threads and the collector: a span that ends is handed to
//! a bounded channel without waiting; one task on the control runtime drains it in batches
//! through the OTLP exporter. A collector that is down or slow costs the spans that do not
//! fit (counted in `fnhost_trace_spans_dropped_total`), never a request's time.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// Spans sent to the collector in one request, at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);

/// The processor the tracer provider calls when a span ends.
#[derive(Debug)]
pub(super) struct Queued {
    tx: mpsc::Sender<SpanData>,
}

/// Ends the export task: what is queued is sent first (within `timeout` of the collector).
pub(super) struct Stop {
    tx: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Stop {
    /// Flushes the queue and stops, waiting at most `within`.
    pub(super) async fn flush(self, within: Duration) {
        let _ = self.tx.send(());
        let _ = tokio::time::timeout(within, self.done).await;
    }
}

/// A processor holding at most `capacity` spans, and the task on `runtime` exporting them.
pub(super) fn start<E>(
    exporter: E,
    capacity: usize,
    timeout: Duration,
    runtime: &tokio::runtime::Handle,
) -> (Queued, Stop)
where
    E: SpanExporter + 'static,
{
    let (tx, rx) = mpsc::channel(capacity);
    let (stop_tx, stop_rx) = oneshot::channel();
    let done = runtime.spawn(export_loop(exporter, rx, stop_rx, timeout));
    (Queued { tx }, Stop { tx: stop_tx, done })
}

impl SpanProcessor for Queued {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            crate::metrics::spans_dropped("queue_full");
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: oneshot::Receiver<()>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n == 0,
            _ = &mut stop => true,
        };
        if !stopping && batch.len() < BATCH {
            // Let the batch fill for up to LINGER (or until stop).
            let fill = async {
                loop {
                    let room = BATCH - batch.len();
                    if room == 0 || rx.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            };
            tokio::select! {
                () = fill => {},
                () = tokio::time::sleep(LINGER) => {},
                _ = &mut stop => {},
            }
        }
        if stopping {
            rx.close();
            while let Ok(span) = rx.try_recv() {
                batch.push(span);
            }
        }
        send(&exporter, &mut batch, timeout).await;
        if stopping {
            return;
        }
    }
}

/// Sends `batch` (emptying it), counting what reached the collector and what did not.
async fn send<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, timeout: Duration) {
    while !batch.is_empty() {
        let chunk: Vec<SpanData> = batch.drain(..batch.len().min(BATCH)).collect();
        let n = chunk.len() as u64;
        match tokio::time::timeout(timeout, exporter.export(chunk)).await {
            Ok(Ok(())) => crate::metrics::spans_exported(n),
            Ok(Err(e)) => {
                tracing::debug!("trace export failed: {e}");
                crate::metrics::spans_failed(n);
            }
            Err(_) => {
                tracing::debug!("trace export took longer than {timeout:?}");
                crate::metrics::spans_failed(n);
            }
        }
    }
}
