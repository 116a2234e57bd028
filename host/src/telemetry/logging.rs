//! The host log on stderr: `text` (human-readable) or `json` (one object a line: `timestamp`,
//! `level`, `target`, `message`, and the fields a line carries — `function`, `id`, `attempt`,
//! `stream`, `deploy`, `trace_id`). `FNHOST_LOG_FORMAT` wins over `[server] log_format`; the
//! level comes from `FNHOST_LOG` (default `info`).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::telemetry::LogFormat;

/// Starts the log in `format` (the site file's), unless `FNHOST_LOG_FORMAT` names another.
/// Lines go to stderr from a thread of their own through a bounded queue: a serving thread
/// never blocks on a slow or stalled stderr (lines are dropped when the queue is full). The
/// guard flushes what is queued when it is dropped.
pub fn init(format: LogFormat) -> WorkerGuard {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_env("FNHOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match env_format().unwrap_or(format) {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    guard
}

/// `[server] log_format` of the site file at `path`, read before anything else so the first
/// line is already in that format; text when the file or the key is missing or unreadable
/// (the full parse reports what is wrong).
pub fn format_in(path: &Path) -> LogFormat {
    #[derive(serde::Deserialize, Default)]
    struct Site {
        #[serde(default)]
        server: Server,
    }
    #[derive(serde::Deserialize, Default)]
    struct Server {
        log_format: Option<LogFormat>,
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Site>(&text).ok())
        .and_then(|site| site.server.log_format)
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_file_s_format_is_read_before_the_log_starts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fnhost.toml");
        assert_eq!(format_in(&file), LogFormat::Text, "no file: text");
        std::fs::write(
            &file,
            "[server]\nlog_format = \"json\"\n[defaults]\ntimeout = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(format_in(&file), LogFormat::Json);
        std::fs::write(&file, "[server]\nlog_format = \"xml\"\n").unwrap();
        assert_eq!(
            format_in(&file),
            LogFormat::Text,
            "the full parse reports it"
        );
    }
}
