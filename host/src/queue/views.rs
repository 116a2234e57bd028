//! What the queue shows people: the status resource of an invocation, its detail view (the
//! dashboard's), recorded steps and stored events. Built from rows by the `rows` module.

use serde::{Deserialize, Serialize};

use super::model::InvocationState;

/// The status resource of an invocation (also what `fnhost status` and `invoke --wait` read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Invocation id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// Where it is in its life.
    pub state: InvocationState,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// RFC 3339 times.
    pub created_at: String,
    /// Start of the latest attempt.
    pub started_at: Option<String>,
    /// When it reached an end state.
    pub finished_at: Option<String>,
    /// When the next attempt is due (queued, retrying, sleeping: its wake time, waiting: its
    /// timeout).
    pub next_attempt_at: Option<String>,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
    /// What the function answered on its latest attempt.
    pub result: Option<ResultView>,
    /// The deploy it was accepted under (absent for a site served from a directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    /// What a `waiting` invocation waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitView>,
    /// The durable steps it recorded, oldest first (in the status of one invocation, not in
    /// lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepView>,
}

/// What a waiting invocation waits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitView {
    /// The step the event's payload is recorded as.
    pub step: String,
    /// The event's name.
    pub event: String,
    /// The key it must carry.
    pub key: String,
    /// When the wait times out (RFC 3339).
    pub until: String,
}

/// A stored response, for the status resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultView {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body, lossy UTF-8; left out of lists unless asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A stored event, as `GET /.fnhost/events/ID` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its key.
    pub key: String,
    /// Payload bytes.
    pub size: u64,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// The invocations it woke.
    pub woke: Vec<String>,
    /// The invocations it started (functions subscribed to it).
    pub started: Vec<String>,
}

/// One recorded step, for the status resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    /// Its name.
    pub name: String,
    /// When it was recorded (RFC 3339).
    pub at: String,
    /// Bytes recorded (0 for a wait that timed out).
    pub size: u64,
}

/// Everything stored about one invocation, for people (the dashboard's detail view).
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// What the status resource shows.
    pub status: Status,
    /// The request as received (credentials redacted).
    pub request: RequestView,
    /// Finished attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Destination deliveries.
    pub deliveries: Vec<DeliveryView>,
    /// What the guest printed, attempt by attempt.
    pub logs: Vec<LogView>,
}

/// A stored request; `authorization` and `cookie` values are shown as `[redacted]`.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body, lossy UTF-8, cut at [`DETAIL_BODY`] bytes.
    pub body: String,
}

/// Request bodies shown in a detail view are cut at this size.
pub const DETAIL_BODY: usize = 64 * 1024;

/// One finished attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// Its number (1 = first; a replay counts from 1 again).
    pub attempt: u32,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: String,
    /// `finished_at - started_at`.
    pub duration_ms: Option<i64>,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// One destination delivery.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    /// Where.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// POSTs tried.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

/// One stored line of guest output.
#[derive(Debug, Clone, Serialize)]
pub struct LogView {
    /// RFC 3339.
    pub at: String,
    /// The attempt that printed it.
    pub attempt: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text.
    pub line: String,
}
