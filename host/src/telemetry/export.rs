//! The span queue between fnhost's threads and the collector. A span that ends is pushed onto
//! a bounded buffer under a short lock — no channel send, no wake-up of another thread per
//! span; one task on the control runtime takes the buffer every second, or as soon as a
//! batch's worth is waiting, and sends it through the OTLP exporter. A collector that is down
//! or slow costs the spans that do not fit (counted in `fnhost_trace_spans_dropped_total`),
//! never a request's time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{Notify, oneshot};

/// Spans sent to the collector in one request, at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);

/// What the processor and the export task share.
#[derive(Debug)]
struct Shared {
    spans: Mutex<Vec<SpanData>>,
    capacity: usize,
    /// A batch's worth is waiting.
    batch_ready: Notify,
    /// `fnhost_trace_spans_dropped_total{reason="queue_full"}`.
    dropped: metrics::Counter,
}

/// The processor the tracer provider calls when a span ends.
#[derive(Debug)]
pub(super) struct Queued(Arc<Shared>);

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
    let shared = Arc::new(Shared {
        spans: Mutex::new(Vec::with_capacity(BATCH.min(capacity))),
        capacity,
        batch_ready: Notify::new(),
        dropped: crate::metrics::spans_dropped("queue_full"),
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    let done = runtime.spawn(export_loop(exporter, shared.clone(), stop_rx, timeout));
    (Queued(shared), Stop { tx: stop_tx, done })
}

impl SpanProcessor for Queued {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let waiting = {
            let mut spans = self.0.spans.lock().unwrap_or_else(|e| e.into_inner());
            if spans.len() >= self.0.capacity {
                None
            } else {
                spans.push(span);
                Some(spans.len())
            }
        };
        match waiting {
            None => self.0.dropped.increment(1),
            Some(BATCH) => self.0.batch_ready.notify_one(),
            Some(_) => {}
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
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    timeout: Duration,
) {
    loop {
        let stopping = tokio::select! {
            () = shared.batch_ready.notified() => false,
            () = tokio::time::sleep(LINGER) => false,
            _ = &mut stop => true,
        };
        // The next batch's room is made outside the lock, so spans ending meanwhile are pushed
        // without growing (and copying) the buffer.
        let mut batch = Vec::with_capacity(BATCH.min(shared.capacity));
        std::mem::swap(
            &mut batch,
            &mut *shared.spans.lock().unwrap_or_else(|e| e.into_inner()),
        );
        send(&exporter, batch, timeout).await;
        if stopping {
            return;
        }
    }
}

/// Sends `batch` in requests of at most [`BATCH`] spans, counting what reached the collector
/// and what did not.
async fn send<E: SpanExporter>(exporter: &E, mut batch: Vec<SpanData>, timeout: Duration) {
    while !batch.is_empty() {
        // A batch that fits one request goes as it is; a longer one (the queue grew while the
        // collector was slow) in requests of BATCH.
        let rest = batch.split_off(batch.len().min(BATCH));
        let chunk = std::mem::replace(&mut batch, rest);
        let n = chunk.len() as u64;
        match tokio::time::timeout(timeout, exporter.export(chunk)).await {
            Ok(Ok(())) => crate::metrics::spans_exported(n),
            Ok(Err(e)) => {
                tracing::debug!("trace export failed: {e}");
                crate::metrics::spans_dropped("export_failed").increment(n);
            }
            Err(_) => {
                tracing::debug!("trace export took longer than {timeout:?}");
                crate::metrics::spans_dropped("export_failed").increment(n);
            }
        }
    }
}
