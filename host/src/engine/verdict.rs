//! How a guest call ended, judged from what wasmtime returned: the [`Outcome`] a caller sees
//! and the way the metrics count it. Shared by the fresh, reused and shared-instance calls.

use crate::metrics::Ended;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned.
    Completed {
        /// Fuel burnt, when metered.
        fuel_used: Option<u64>,
    },
    /// Wall-clock budget (or fuel cap) exhausted.
    Timeout,
    /// The guest trapped (panic, unreachable, memory cap, ...): for logs and the stored error
    /// only, never a client.
    Trap {
        /// The root cause, one line (what a status resource shows).
        cause: String,
        /// The whole chain with the wasm backtrace folded in, one line (for the log).
        detail: String,
    },
    /// A background attempt slept or waited (`fnhost:function/steps`): it runs again later.
    Suspended(crate::workflow::Suspension),
}

/// Marker error raised by the epoch callback when the deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock budget exceeded")]
pub(super) struct DeadlineExceeded;

/// Whether `e` is (or wraps) the epoch callback's budget stop.
fn past_deadline(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| cause.is::<DeadlineExceeded>())
}

pub(super) fn outcome_of(e: &wasmtime::Error) -> Outcome {
    if let Some(super::steps::Suspended(s)) = e.chain().find_map(|c| c.downcast_ref()) {
        return Outcome::Suspended(s.clone());
    }
    if past_deadline(e)
        || matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::OutOfFuel)
        )
    {
        return Outcome::Timeout;
    }
    // One line: the chain, with the wasm backtrace folded in; the root cause is its last part.
    let debug = format!("{e:?}");
    let lines: Vec<&str> = debug
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Outcome::Trap {
        cause: lines.last().copied().unwrap_or_default().to_string(),
        detail: lines.join(" | "),
    }
}

/// How a failed call counts in the metrics: which limit stopped it, if one did.
pub(super) fn stopped_by(e: &wasmtime::Error, memory_refused: bool) -> Ended {
    if e.chain().any(|c| c.is::<super::steps::Suspended>()) {
        Ended::Suspended
    } else if past_deadline(e) {
        Ended::Timeout
    } else if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::OutOfFuel)
    ) {
        Ended::OutOfFuel
    } else if memory_refused {
        Ended::MemoryCap
    } else {
        Ended::Trapped
    }
}
