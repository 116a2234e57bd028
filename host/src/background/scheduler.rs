//! Scheduled functions: each tick of a function's `schedule` becomes one durable invocation
//! through the queue (so status, lists and destinations see it) — `POST`, body
//! `{"next_run": "<RFC 3339>"}`, headers `fnhost-event: schedule` and `x-nf-event: schedule`.
//!
//! A tick is stored with its time in a column of its own, unique per function ([`Dedup::Tick`]:
//! no client's `Idempotency-Key` can collide with it), so every node may enqueue it and one
//! invocation is stored (exactly one per tick across nodes). At startup the latest tick missed
//! while no node ran is enqueued once (a tick that did run makes it a no-op); a function never
//! scheduled before has nothing to catch up.
//!
//! Before each tick the scheduler asks the queue whether the schedule is paused (a row every
//! node reads) and, with `overlap = "skip"` (the default), whether an earlier tick's run is
//! still queued, running or retrying: then the tick is skipped, logged and counted
//! (`fnhost_schedule_skipped_total{reason}`), not stored. An admin may also run it now
//! ([`run_now`]): one invocation like a tick's, outside the schedule.

use crate::telemetry::Trace;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::schedule::Overlap;
use crate::functions::Function;
use crate::ids::new_id;
use crate::queue::{Dedup, Enqueued, NewInvocation, Queue, QueueError};

/// Runs the schedules of `functions` until `shutdown`.
pub async fn run(queue: Queue, functions: Vec<Arc<Function>>, shutdown: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    for function in functions {
        if function.settings.schedule.is_some() {
            tasks.spawn(schedule_one(queue.clone(), function, shutdown.clone()));
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn schedule_one(queue: Queue, function: Arc<Function>, shutdown: CancellationToken) {
    let Some(schedule) = function.settings.schedule.clone() else {
        return;
    };
    match queue.latest_tick(&function.name).await {
        Ok(Some(_)) => {
            if let Some(missed) = schedule.latest_at_or_before(Utc::now())
                && due(&queue, &function, missed).await
                && enqueue(&queue, &function, missed, schedule.next_after(missed)).await
            {
                tracing::info!(
                    function = function.name,
                    "caught up the run missed at {} while no node ran",
                    missed.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(
            function = function.name,
            "cannot look for a missed tick: {e}"
        ),
    }
    loop {
        let Some(tick) = schedule.next_after(Utc::now()) else {
            tracing::warn!(
                function = function.name,
                "schedule {} has no next run",
                schedule.as_str()
            );
            return;
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {},
        }
        if due(&queue, &function, tick).await {
            enqueue(&queue, &function, tick, schedule.next_after(tick)).await;
        }
    }
}

/// Whether `tick` runs: not while the schedule is paused, nor (with `overlap = "skip"`) while
/// the previous run is unfinished. A queue that cannot answer does not stop the tick (its
/// enqueue will say what is wrong).
async fn due(queue: &Queue, function: &Function, tick: DateTime<Utc>) -> bool {
    let skip = |reason: &'static str, why: &str| {
        tracing::info!(function = function.name, "skipped the run of {tick}: {why}");
        crate::metrics::schedule_skipped(&function.name, reason);
        false
    };
    if queue.schedule_paused(&function.name).await.unwrap_or(false) {
        return skip("paused", "the schedule is paused");
    }
    if function.settings.overlap == Overlap::Skip
        && queue.has_unfinished(&function.name).await.unwrap_or(false)
    {
        return skip(
            "overlap",
            "the previous run is still queued, running or retrying (overlap = \"skip\")",
        );
    }
    true
}

/// Runs `function` now, outside its schedule (admin): one invocation like a tick's, whatever
/// `overlap` and a pause say; its id.
pub async fn run_now(queue: &Queue, function: &Function) -> Result<String, QueueError> {
    let now = Utc::now();
    let next = (function.settings.schedule.as_ref()).and_then(|s| s.next_after(now));
    let trace = tick_trace(function);
    let mut run = tick_invocation(function, now, next, &trace);
    // Not a tick: no tick key (the schedule's own tick at this second still runs).
    run.dedup = None;
    let id = run.id.clone();
    queue
        .enqueue(run)
        .await
        .inspect_err(|e| trace.fail("enqueue", e.to_string()))?;
    trace.end();
    tracing::info!(function = function.name, id, "run now (admin)");
    Ok(id)
}

/// The key, request and body of one tick.
pub fn tick_invocation(
    function: &Function,
    tick: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    trace: &Trace,
) -> NewInvocation {
    let next_run = next.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    NewInvocation {
        id: new_id(),
        function: function.name.clone(),
        dedup: Some(Dedup::Tick(
            tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )),
        method: "POST".into(),
        uri: format!("/.netlify/functions/{}", function.name),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("fnhost-event".into(), "schedule".into()),
            ("x-nf-event".into(), "schedule".into()),
        ]
        .into_iter()
        .chain(trace.headers())
        .collect(),
        body: serde_json::json!({ "next_run": next_run })
            .to_string()
            .into_bytes(),
        max_attempts: function.settings.retry.max_attempts(),
        deploy: function.deploy.as_deref().map(str::to_string),
        priority: function.settings.priority,
    }
}

/// A new trace for one tick (or run now) of `function`.
fn tick_trace(function: &Function) -> Trace {
    let cron = (function.settings.schedule.as_ref()).map_or("", |s| s.as_str());
    Trace::tick(&function.name, cron)
}

/// Enqueues one tick; `true` when this call stored it (not another node, not earlier).
async fn enqueue(
    queue: &Queue,
    function: &Function,
    tick: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> bool {
    let trace = tick_trace(function);
    let enqueued = queue
        .enqueue(tick_invocation(function, tick, next, &trace))
        .await;
    match &enqueued {
        Ok(Enqueued::New(id)) => trace.set("faas.invocation_id", id.clone()),
        Ok(_) => trace.set("fnhost.tick_taken_by_another_node", true),
        Err(e) => trace.fail("enqueue", e.to_string()),
    }
    trace.end();
    match enqueued {
        Ok(Enqueued::New(id)) => {
            tracing::info!(function = function.name, id, "scheduled run for {tick}");
            true
        }
        Ok(_) => {
            tracing::debug!(function = function.name, "tick {tick} already enqueued");
            false
        }
        Err(e) => {
            tracing::error!(
                function = function.name,
                "cannot enqueue the tick {tick}: {e}"
            );
            false
        }
    }
}
