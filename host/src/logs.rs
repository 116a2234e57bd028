//! Guest output kept for people to read: each node's most recent lines (the dashboard's live
//! tail, [`recent`]) and, for a background attempt, a bounded [`Capture`] stored with the
//! invocation. The host log (stderr) still gets every line; this is a copy, bounded twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Lines the live tail keeps per node (all functions together).
pub const RECENT_LINES: usize = 2000;
/// Guest output stored per background attempt, in bytes; past it one `[truncated]` line.
pub const CAPTURE_BYTES: usize = 64 * 1024;

/// One line of guest output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    /// Order on this node, from 1.
    pub seq: u64,
    /// When it was written (ms since the epoch).
    #[serde(skip)]
    pub at_ms: i64,
    /// RFC 3339, for readers.
    pub at: String,
    /// The function that printed it.
    pub function: Arc<str>,
    /// The invocation that printed it.
    pub id: Arc<str>,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The text, without its newline.
    pub line: String,
}

static SEQ: AtomicU64 = AtomicU64::new(0);
static RECENT: Mutex<VecDeque<Line>> = Mutex::new(VecDeque::new());

/// A background attempt's output, bounded by [`CAPTURE_BYTES`].
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Captured>>);

/// What a [`Capture`] holds.
#[derive(Default)]
pub struct Captured {
    /// `(at_ms, stream, line)`, in order.
    pub lines: Vec<(i64, &'static str, String)>,
    bytes: usize,
    truncated: bool,
}

impl Capture {
    fn push(&self, at_ms: i64, stream: &'static str, line: &str) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.truncated {
            return;
        }
        if c.bytes + line.len() > CAPTURE_BYTES {
            c.truncated = true;
            c.lines.push((
                at_ms,
                stream,
                "[truncated: more output in the host log]".into(),
            ));
            return;
        }
        c.bytes += line.len();
        c.lines.push((at_ms, stream, line.to_string()));
    }

    /// The lines captured so far (taken out).
    pub fn take(&self) -> Vec<(i64, &'static str, String)> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).lines)
    }
}

/// Keeps one line of `function`'s invocation `id` (and in `capture`, when the attempt has one).
pub fn record(
    function: &Arc<str>,
    id: &Arc<str>,
    stream: &'static str,
    line: &str,
    capture: Option<&Capture>,
) {
    let at_ms = now_ms();
    if let Some(c) = capture {
        c.push(at_ms, stream, line);
    }
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let entry = Line {
        seq,
        at_ms,
        at: crate::ids::rfc3339_ms(at_ms),
        function: function.clone(),
        id: id.clone(),
        stream,
        line: line.to_string(),
    };
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == RECENT_LINES {
        recent.pop_front();
    }
    recent.push_back(entry);
}

/// Lines after `after` (of `function`, when given), oldest first, at most `limit`; and the
/// `seq` to ask after next time.
pub fn recent(function: Option<&str>, after: u64, limit: usize) -> (Vec<Line>, u64) {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let lines: Vec<Line> = recent
        .iter()
        .filter(|l| l.seq > after && function.is_none_or(|f| *l.function == *f))
        .take(limit)
        .cloned()
        .collect();
    let next = lines.last().map_or_else(
        || recent.back().map_or(after, |l| l.seq.max(after)),
        |l| l.seq,
    );
    (lines, next)
}

use crate::ids::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_stops_at_its_bound_with_one_marker() {
        let c = Capture::default();
        let line = "x".repeat(1000);
        for _ in 0..100 {
            c.push(1, "stdout", &line);
        }
        let lines = c.take();
        assert_eq!(lines.len(), CAPTURE_BYTES / 1000 + 1);
        assert!(lines.last().unwrap().2.starts_with("[truncated"));
    }

    #[test]
    fn the_tail_filters_by_function_and_resumes_after_a_seq() {
        let (f, g, id): (Arc<str>, Arc<str>, Arc<str>) =
            ("tail-f".into(), "tail-g".into(), "i".into());
        let (_, start) = recent(None, 0, usize::MAX);
        record(&f, &id, "stdout", "one", None);
        record(&g, &id, "stderr", "other", None);
        record(&f, &id, "stdout", "two", None);
        let (lines, next) = recent(Some("tail-f"), start, 100);
        let texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        let (none, again) = recent(Some("tail-f"), next, 100);
        assert!(none.is_empty());
        assert!(again >= next);
    }
}
