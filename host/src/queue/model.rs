//! What the queue stores and hands out: invocation and delivery states (enums, turned into text
//! only at the SQL and JSON edges), the records passed in and out, and their row mapping.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Result;

/// Where an invocation is in its life.
///
/// `queued → running → succeeded | retrying | dead | expired | sleeping | waiting`,
/// `retrying | sleeping | waiting → running` (when due), `waiting → queued` (its event came),
/// `queued | retrying | sleeping | waiting → cancelled` (admin), `dead → queued` (admin
/// replay); an
/// interrupted `running` goes back to `queued` or `retrying` without counting the attempt. An
/// attempt claimed past the function's `max_event_age` does not run: `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationState {
    /// Accepted, waiting for its first attempt.
    Queued,
    /// An attempt holds a lease on it.
    Running,
    /// An attempt failed; the next is due at `run_at`.
    Retrying,
    /// An attempt succeeded (end state).
    Succeeded,
    /// Every attempt failed (end state; an admin may replay it).
    Dead,
    /// Cancelled by an admin while waiting (end state).
    Cancelled,
    /// Claimed past its function's `max_event_age`, so not run (end state: its age would
    /// only pass again, so it is not replayed).
    Expired,
    /// An attempt slept (`fnhost:function/steps`): it runs again at `run_at`.
    Sleeping,
    /// An attempt waits for an event: it runs again when one comes, or at `run_at`.
    Waiting,
}

impl InvocationState {
    /// Every state, in life order.
    pub const ALL: [InvocationState; 9] = [
        InvocationState::Queued,
        InvocationState::Running,
        InvocationState::Retrying,
        InvocationState::Sleeping,
        InvocationState::Waiting,
        InvocationState::Succeeded,
        InvocationState::Dead,
        InvocationState::Cancelled,
        InvocationState::Expired,
    ];

    /// The text stored in the database and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationState::Queued => "queued",
            InvocationState::Running => "running",
            InvocationState::Retrying => "retrying",
            InvocationState::Succeeded => "succeeded",
            InvocationState::Dead => "dead",
            InvocationState::Cancelled => "cancelled",
            InvocationState::Expired => "expired",
            InvocationState::Sleeping => "sleeping",
            InvocationState::Waiting => "waiting",
        }
    }

    /// An end state: succeeded, dead, cancelled or expired (a dead one may still be
    /// replayed).
    pub fn has_ended(self) -> bool {
        matches!(
            self,
            InvocationState::Succeeded
                | InvocationState::Dead
                | InvocationState::Cancelled
                | InvocationState::Expired
        )
    }

    /// Waiting for an attempt (queued, retrying, sleeping or waiting).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            InvocationState::Queued
                | InvocationState::Retrying
                | InvocationState::Sleeping
                | InvocationState::Waiting
        )
    }
}

impl fmt::Display for InvocationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state name (from a query string or a row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown state {0:?}: expected queued, running, retrying, sleeping, waiting, succeeded, dead, \
     cancelled or expired"
)]
pub struct UnknownState(pub String);

impl FromStr for InvocationState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        InvocationState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Where a destination delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Due (now or after a backoff).
    Pending,
    /// The destination answered 2xx.
    Delivered,
    /// Given up after the last try.
    Failed,
}

impl DeliveryState {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// How one delivery attempt went, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryAttempt {
    /// The destination answered 2xx.
    Delivered,
    /// It did not; try again at `retry_at` (ms, this host's clock), or never (`None`).
    Failed {
        /// What went wrong.
        error: String,
        /// When to try again.
        retry_at: Option<i64>,
    },
}

impl DeliveryAttempt {
    /// The delivery's state after this attempt.
    pub fn state(&self) -> DeliveryState {
        match self {
            DeliveryAttempt::Delivered => DeliveryState::Delivered,
            DeliveryAttempt::Failed {
                retry_at: Some(_), ..
            } => DeliveryState::Pending,
            DeliveryAttempt::Failed { retry_at: None, .. } => DeliveryState::Failed,
        }
    }
}

/// What makes a new invocation the repeat of a stored one. The two never share a namespace:
/// each has its own column and unique index, so no client key, whatever its text, can stand
/// for a tick.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dedup {
    /// A client's `Idempotency-Key`, scoped to the function, remembered for
    /// `server.idempotency_ttl`.
    Key(String),
    /// A schedule tick (its time, RFC 3339 to the second): one invocation per function and
    /// tick, across nodes, for as long as the row is kept.
    Tick(String),
}

impl Dedup {
    /// The client key, if that is what this is.
    pub fn key(&self) -> Option<&str> {
        match self {
            Dedup::Key(k) => Some(k),
            Dedup::Tick(_) => None,
        }
    }

    /// The tick, if that is what this is.
    pub fn tick(&self) -> Option<&str> {
        match self {
            Dedup::Tick(t) => Some(t),
            Dedup::Key(_) => None,
        }
    }
}

/// A request to run, as accepted.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    /// Unguessable id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// What makes a repeat of this request store nothing: a client's key or a schedule tick.
    pub dedup: Option<Dedup>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The deploy it was accepted under (every attempt runs that one); `None` for a site
    /// served from a directory.
    pub deploy: Option<String>,
    /// Among due invocations, higher is claimed first (a point counts as a minute of waiting: `PRIORITY_MS` in the schema).
    pub priority: i32,
}

impl NewInvocation {
    /// The client's idempotency key, if it came with one.
    pub fn key(&self) -> Option<&str> {
        self.dedup.as_ref().and_then(Dedup::key)
    }

    /// The schedule tick it is, if it is one.
    pub fn tick(&self) -> Option<&str> {
        self.dedup.as_ref().and_then(Dedup::tick)
    }

    /// SHA-256 of method, path and query, and body: what makes a request "the same" for its
    /// idempotency key (headers may differ between a request and its retry).
    pub fn request_hash(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [self.method.as_bytes(), self.uri.as_bytes(), &self.body] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored now.
    New(String),
    /// The idempotency key was seen before with the same request: the earlier invocation's
    /// id; nothing stored.
    Existing(String),
    /// The idempotency key was seen before with another request: the earlier invocation's
    /// id; nothing stored.
    Conflict(String),
}

impl Enqueued {
    /// The invocation the key points at.
    pub fn id(&self) -> &str {
        match self {
            Enqueued::New(id) | Enqueued::Existing(id) | Enqueued::Conflict(id) => id,
        }
    }
}

/// An invocation claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Invocation id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// Fencing token of this claim.
    pub token: i64,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// The deploy it was accepted under, which this attempt must run.
    pub deploy: Option<String>,
    /// When it was accepted (ms since the epoch).
    pub created_at: i64,
    /// Attempts that ended sleeping or waiting so far (such an invocation is not judged by
    /// its age: it waited on purpose).
    pub suspensions: u32,
    /// The wait its last attempt ended in, if it waited: step, began, times out (ms).
    pub wait: Option<(String, i64, i64)>,
}

/// What a sweep of interrupted attempts did.
#[derive(Debug, Clone, Default)]
pub struct Interrupted {
    /// Invocations put back to wait for another attempt.
    pub requeued: u64,
    /// Invocations interrupted once too often: now dead.
    pub dead: Vec<Claimed>,
}

/// What one attempt produced, stored with its outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoredResult {
    /// Response status, if the function answered.
    pub status: Option<u16>,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body (capped).
    pub body: Vec<u8>,
    /// What the guest printed during the attempt (bounded by the caller), stored with it.
    #[serde(skip)]
    pub logs: Vec<GuestLine>,
}

/// One line a guest printed during an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestLine {
    /// When (ms since the epoch; RFC 3339 in views).
    #[serde(skip)]
    pub at_ms: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text.
    pub line: String,
}

/// How an attempt ended, as the queue records it.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Done: `succeeded`.
    Succeeded(StoredResult),
    /// Failed; run again at this time: `retrying`.
    Retry {
        /// Why it failed.
        error: String,
        /// What it answered, if anything.
        result: StoredResult,
        /// When to run it again (ms).
        run_at: i64,
    },
    /// Failed for the last time: `dead`.
    Dead {
        /// Why it failed.
        error: String,
        /// What it answered, if anything.
        result: StoredResult,
    },
    /// Not run: claimed past the function's `max_event_age`: `expired`.
    Expired {
        /// Why it was not run.
        error: String,
        /// Empty: nothing ran.
        result: StoredResult,
    },
    /// Slept or waited: `sleeping` or `waiting`, due at the suspension's time; the attempt is
    /// not counted.
    Suspended {
        /// What it waits for.
        suspension: crate::workflow::Suspension,
        /// Empty: it did not answer.
        result: StoredResult,
    },
}

impl Finish {
    /// The state the invocation ends up in.
    pub fn state(&self) -> InvocationState {
        match self {
            Finish::Succeeded(_) => InvocationState::Succeeded,
            Finish::Retry { .. } => InvocationState::Retrying,
            Finish::Dead { .. } => InvocationState::Dead,
            Finish::Expired { .. } => InvocationState::Expired,
            Finish::Suspended {
                suspension: crate::workflow::Suspension::Sleep { .. },
                ..
            } => InvocationState::Sleeping,
            Finish::Suspended { .. } => InvocationState::Waiting,
        }
    }

    /// What the attempt produced.
    pub fn result(&self) -> &StoredResult {
        match self {
            Finish::Succeeded(r)
            | Finish::Retry { result: r, .. }
            | Finish::Dead { result: r, .. }
            | Finish::Expired { result: r, .. }
            | Finish::Suspended { result: r, .. } => r,
        }
    }

    /// What the attempt produced, to add to.
    pub fn result_mut(&mut self) -> &mut StoredResult {
        match self {
            Finish::Succeeded(r)
            | Finish::Retry { result: r, .. }
            | Finish::Dead { result: r, .. }
            | Finish::Expired { result: r, .. }
            | Finish::Suspended { result: r, .. } => r,
        }
    }

    /// Why the attempt failed (or did not run), if it did not succeed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Finish::Succeeded(_) | Finish::Suspended { .. } => None,
            Finish::Retry { error, .. }
            | Finish::Dead { error, .. }
            | Finish::Expired { error, .. } => Some(error),
        }
    }
}

/// A destination record to deliver, written in the same transaction as the outcome.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Where to POST it.
    pub url: String,
    /// The JSON record.
    pub payload: String,
    /// The W3C `traceparent` of the attempt that decided it (empty when traces are off).
    pub traceparent: String,
}

/// A delivery due now.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Delivery id.
    pub id: String,
    /// Invocation it reports.
    pub invocation_id: String,
    /// Where to POST.
    pub url: String,
    /// JSON record.
    pub payload: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The W3C `traceparent` its POST continues (empty: none).
    pub traceparent: String,
}

/// How one attempt ended, waiting for its batch: the claim it answers (id, fencing token),
/// and whether its worker wants the next due invocation claimed in the same transaction.
pub(super) struct EndedAttempt {
    pub id: String,
    pub token: i64,
    pub attempt: u32,
    pub finish: Finish,
    pub delivery: Option<NewDelivery>,
    pub next: Option<NextClaim>,
}

/// A claim to make for a worker after its outcome is written.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct NextClaim {
    pub owner: String,
    pub lease_ms: i64,
    /// Functions not to claim (at their concurrency cap on the worker's node).
    pub skip: Vec<String>,
}

/// What a written outcome reports: whether its claim still held, and the next claim made.
pub(super) type Written = (bool, Option<Claimed>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_text() {
        for state in InvocationState::ALL {
            assert_eq!(state.as_str().parse::<InvocationState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(
            "done".parse::<InvocationState>().unwrap_err().to_string(),
            "unknown state \"done\": expected queued, running, retrying, sleeping, waiting, \
             succeeded, dead, cancelled or expired"
        );
    }

    #[test]
    fn delivery_attempts_map_to_states() {
        assert_eq!(DeliveryAttempt::Delivered.state(), DeliveryState::Delivered);
        let failed = |retry_at| DeliveryAttempt::Failed {
            error: "503".into(),
            retry_at,
        };
        assert_eq!(failed(Some(1)).state(), DeliveryState::Pending);
        assert_eq!(failed(None).state(), DeliveryState::Failed);
    }
}
