//! Durable steps of background invocations (`fnhost:function/steps`): why an attempt ended
//! suspended, and the [`StepStore`] the engine
//! reads and writes steps through (the queue, behind it). A leaf shared by the engine (which
//! ends the attempt), the queue (which stores the state) and the background workers.

use std::fmt;

use futures::future::BoxFuture;

/// The longest event name (and key).
pub const MAX_EVENT_NAME: usize = 256;

/// Whether `name` can name an event, as fnhost.toml's `events` and the path of
/// `POST /.fnhost/events/NAME` both take it: 1 to 256 bytes, no `/`, `?`, `#` or control
/// character.
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && !name.contains(['/', '?', '#'])
        && !name.chars().any(char::is_control)
}

/// Why an attempt ended without an answer, to run again later: it sleeps or waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspension {
    /// `sleep-until`: run again at `until_ms`.
    Sleep { step: String, until_ms: i64 },
    /// `wait-for-event`: run again when an `event` with `key` sent at or after `since_ms`
    /// arrives, or at `until_ms`.
    Wait {
        step: String,
        event: String,
        key: String,
        since_ms: i64,
        until_ms: i64,
    },
}

impl Suspension {
    /// When the invocation runs again at the latest (ms since the epoch).
    pub fn until_ms(&self) -> i64 {
        match self {
            Suspension::Sleep { until_ms, .. } | Suspension::Wait { until_ms, .. } => *until_ms,
        }
    }
}

impl fmt::Display for Suspension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = crate::ids::rfc3339_ms(self.until_ms());
        match self {
            Suspension::Sleep { step, .. } => write!(f, "sleeping until {at} (step {step:?})"),
            Suspension::Wait {
                step, event, key, ..
            } => write!(
                f,
                "waiting for event {event:?} with key {key:?} until {at} (step {step:?})"
            ),
        }
    }
}

/// Step `name`'s record, as stored: `Some(value)` for a result (`put`, an event's payload, a
/// sleep's wake time), `None` for a wait that timed out.
pub type Recorded = Option<Vec<u8>>;

/// Where one background invocation's steps are kept, for the attempt under way.
pub trait StepStore: Send + Sync {
    /// Step `name`'s record, if there is one.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Recorded>>>;
    /// Records step `name`, committed before it resolves; the record that stands (the first
    /// of a name is kept), or `Err(why)` when a limit refuses it.
    fn put<'a>(
        &'a self,
        name: &'a str,
        value: Recorded,
    ) -> BoxFuture<'a, anyhow::Result<Result<Recorded, String>>>;
    /// When the wait this invocation was suspended in began and when it times out (ms since
    /// the epoch), if that wait is step `name`'s.
    fn waiting(&self, name: &str) -> Option<(i64, i64)>;
}
