//! The host log on stderr: `text` (human-readable) or `json` (one object a line: `timestamp`,
//! `level`, `target`, `message`, and the fields a line carries — `function`, `id`, `attempt`,
//! `stream`, `deploy`, `trace_id`). `FNHOST_LOG_FORMAT` wins over `[server] log_format`; the
//! level comes from `FNHOST_LOG` (default `info`).

use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::telemetry::LogFormat;

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

static RELOAD: OnceLock<(reload::Handle<Boxed, Registry>, NonBlocking)> = OnceLock::new();

/// Starts the log in the format `FNHOST_LOG_FORMAT` names (text when unset). Lines go to
/// stderr from a thread of their own through a bounded queue: a serving thread never blocks
/// on a slow or stalled stderr (lines are dropped when the queue is full). The guard flushes
/// what is queued when it is dropped.
pub fn init() -> WorkerGuard {
    let filter = EnvFilter::try_from_env("FNHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let format = env_format().unwrap_or_default();
    let (layer, handle) = reload::Layer::new(layer(format, writer.clone()));
    let _ = RELOAD.set((handle, writer));
    tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .init();
    guard
}

/// Switches to `format` (the site file's `log_format`) unless `FNHOST_LOG_FORMAT` chose.
pub fn set_format(format: LogFormat) {
    if env_format().is_some() {
        return;
    }
    if let Some((handle, writer)) = RELOAD.get() {
        let _ = handle.reload(layer(format, writer.clone()));
    }
}

fn env_format() -> Option<LogFormat> {
    match std::env::var("FNHOST_LOG_FORMAT").ok()?.trim() {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        other => {
            eprintln!("FNHOST_LOG_FORMAT = {other:?}: expected text or json; writing text");
            Some(LogFormat::Text)
        }
    }
}

fn layer(format: LogFormat, writer: NonBlocking) -> Boxed {
    use std::io::IsTerminal as _;
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    }
}
