//! How one attempt counts: what running the guest gave ([`Executed`]), why an attempt failed
//! ([`AttemptFailure`]), and the [`Finish`] the queue records — success, a retry after the
//! policy's delay, the last failure, or (past `max_event_age`) not run at all.

use std::sync::Arc;
use std::time::Duration;

use super::retry::{self, Next};
use crate::functions::{Function, RetryPolicy};
use crate::invocation::Failure;
use crate::queue::{Claimed, Finish, GuestLine, StoredResult};
use crate::telemetry::Trace;

/// What running the guest gave: the function it ran (`None`: not loaded here), its answer or
/// why it failed, and what it printed.
pub(super) struct Executed {
    pub(super) function: Option<Arc<Function>>,
    pub(super) result: Result<StoredResult, AttemptFailure>,
    pub(super) logs: Vec<GuestLine>,
}

/// Why an attempt failed; turned into text once, where the outcome is stored.
#[derive(Debug)]
pub(super) enum AttemptFailure {
    /// The function is not loaded on this host.
    NotLoaded(String),
    /// The stored request no longer makes a request.
    BadRequest(String),
    /// The guest failed: trapped, over its budget, no response.
    Guest(Failure),
    /// Claimed after `max_event_age` had passed since it was accepted: not run.
    Expired {
        /// The function's `max_event_age`.
        age: Duration,
        /// How long it had waited.
        waited: Duration,
    },
}

impl std::fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptFailure::NotLoaded(name) => {
                write!(f, "function {name:?} is not loaded on this host")
            }
            AttemptFailure::BadRequest(why) => write!(f, "stored request is invalid: {why}"),
            AttemptFailure::Guest(failure) => failure.fmt(f),
            AttemptFailure::Expired { age, waited } => write!(
                f,
                "not run: waited {} for an attempt, past max_event_age = {}",
                humantime::format_duration(Duration::from_secs(waited.as_secs())),
                humantime::format_duration(*age)
            ),
        }
    }
}

impl Executed {
    /// An attempt that failed before the guest ran.
    pub(super) fn failed(function: Option<Arc<Function>>, error: AttemptFailure) -> Executed {
        Executed {
            function,
            result: Err(error),
            logs: Vec::new(),
        }
    }
}

/// How an attempt counts: success, or a failure retried after the policy's delay, or the last
/// failure. A 5xx answer is a failure only when the policy says so; without a loaded function
/// the default delays apply.
pub(super) fn finish_for(
    claim: &Claimed,
    policy: Option<&RetryPolicy>,
    result: Result<StoredResult, AttemptFailure>,
    now: i64,
    scale: f64,
) -> Finish {
    let (error, result) = match result {
        Ok(r) if policy.is_some_and(|p| p.on_5xx) && r.status.is_some_and(|s| s >= 500) => {
            (format!("function answered {}", r.status.unwrap_or(500)), r)
        }
        Ok(r) => return Finish::Succeeded(r),
        Err(e @ AttemptFailure::Expired { .. }) => {
            return Finish::Expired {
                error: e.to_string(),
                result: StoredResult::default(),
            };
        }
        Err(AttemptFailure::Guest(Failure::Suspended(suspension))) => {
            return Finish::Suspended {
                suspension,
                result: StoredResult::default(),
            };
        }
        Err(e) => (e.to_string(), StoredResult::default()),
    };
    let delays = policy.map_or(&crate::config::defaults::RETRY_DELAYS[..], |p| &p.delays);
    let next = if claim.attempt >= claim.max_attempts {
        Next::Dead
    } else {
        retry::after_failure(claim.attempt, delays)
    };
    match next {
        Next::RetryAfter(d) => Finish::Retry {
            error,
            result,
            run_at: now + i64::try_from(d.mul_f64(scale).as_millis()).unwrap_or(i64::MAX / 2),
        },
        Next::Dead => Finish::Dead { error, result },
    }
}

/// Why `claim` must not run: accepted longer ago than its function's `max_event_age` (checked
/// at every attempt, as Lambda's `MaximumEventAgeInSeconds` is).
pub(super) fn expired(function: &Function, claim: &Claimed, now: i64) -> Option<AttemptFailure> {
    if claim.suspensions > 0 {
        // It slept or waited on purpose: its age says nothing about a backlog.
        return None;
    }
    let age = function.settings.max_event_age?;
    let waited = Duration::from_millis(u64::try_from(now - claim.created_at).unwrap_or(0));
    (waited > age).then_some(AttemptFailure::Expired { age, waited })
}

/// The attempt span's end: its outcome (`succeeded`, `retry`, `dead`, `expired`), the delay
/// before a retry, and the error of a failed attempt (its cause, never a body).
pub(super) fn traced(trace: &Trace, finish: &Finish, attempt: u32) {
    trace.set("fnhost.attempt", i64::from(attempt));
    let outcome = match finish {
        Finish::Succeeded(_) => "succeeded",
        Finish::Retry { run_at, .. } => {
            trace.set(
                "fnhost.retry_delay_ms",
                (run_at - crate::queue::now_ms()).max(0),
            );
            "retry"
        }
        Finish::Dead { .. } => "dead",
        Finish::Expired { .. } => "expired",
        Finish::Suspended { suspension, .. } => {
            trace.set("fnhost.suspended", suspension.to_string());
            "suspended"
        }
    };
    trace.set("fnhost.outcome", outcome);
    if let Some(error) = finish.error() {
        trace.fail(outcome, error.to_string());
    }
    trace.end();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn claim(attempt: u32, max_attempts: u32) -> Claimed {
        Claimed {
            id: "id".into(),
            function: "f".into(),
            attempt,
            max_attempts,
            token: 1,
            method: "POST".into(),
            uri: "/".into(),
            headers: vec![],
            body: vec![],
            deploy: None,
            created_at: 0,
            suspensions: 0,
            wait: None,
        }
    }

    fn answered(status: u16) -> Result<StoredResult, AttemptFailure> {
        Ok(StoredResult {
            status: Some(status),
            ..StoredResult::default()
        })
    }

    fn policy(on_5xx: bool) -> RetryPolicy {
        RetryPolicy {
            delays: vec![Duration::from_secs(1), Duration::from_secs(2)],
            on_5xx,
        }
    }

    #[test]
    fn an_answer_succeeds_even_a_5xx_unless_the_policy_retries_it() {
        let p = policy(false);
        assert!(matches!(
            finish_for(&claim(1, 3), Some(&p), answered(500), 0, 1.0),
            Finish::Succeeded(r) if r.status == Some(500)
        ));
        let p = policy(true);
        match finish_for(&claim(1, 3), Some(&p), answered(503), 1_000, 1.0) {
            Finish::Retry {
                error,
                run_at,
                result,
            } => {
                assert_eq!(error, "function answered 503");
                assert_eq!(run_at, 2_000);
                assert_eq!(result.status, Some(503), "the answer is kept");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_follow_the_delays_then_die() {
        let p = policy(false);
        let fail = || {
            Err::<StoredResult, _>(AttemptFailure::Guest(Failure::Trapped(
                "unreachable".into(),
            )))
        };
        assert!(matches!(
            finish_for(&claim(1, 3), Some(&p), fail(), 0, 1.0),
            Finish::Retry { run_at: 1_000, .. }
        ));
        assert!(matches!(
            finish_for(&claim(2, 3), Some(&p), fail(), 0, 1.0),
            Finish::Retry { run_at: 2_000, .. }
        ));
        match finish_for(&claim(3, 3), Some(&p), fail(), 0, 1.0) {
            Finish::Dead { error, .. } => assert_eq!(error, "trapped: unreachable"),
            other => panic!("{other:?}"),
        }
        // The row's max_attempts wins over a policy that grew since it was enqueued.
        assert!(matches!(
            finish_for(&claim(1, 1), Some(&p), fail(), 0, 1.0),
            Finish::Dead { .. }
        ));
    }

    #[test]
    fn retry_delays_scale_for_local_work() {
        let p = policy(false);
        let fail = || Err::<StoredResult, _>(AttemptFailure::Guest(Failure::NoResponse));
        assert!(matches!(
            finish_for(&claim(2, 3), Some(&p), fail(), 0, 0.01),
            Finish::Retry { run_at: 20, .. }
        ));
    }

    #[test]
    fn without_the_function_the_default_delays_apply() {
        let not_loaded = Err(AttemptFailure::NotLoaded("f".into()));
        match finish_for(&claim(1, 3), None, not_loaded, 0, 1.0) {
            Finish::Retry { run_at, .. } => assert_eq!(run_at, 60_000),
            other => panic!("{other:?}"),
        }
    }
}
