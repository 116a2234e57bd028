//! Scheduled functions: each tick of a function's `schedule` becomes one durable invocation
//! through the queue (so status, lists and destinations see it) — `POST`, body
//! `{"next_run": "<RFC 3339>"}`, headers `fnhost-event: schedule` and `x-nf-event: schedule`.
//!
//! A tick is stored with its time in a column of its own, unique per function ([`Dedup::Tick`]:
//! no client's `Idempotency-Key` can collide with it), so every node may enqueue it and one
//! invocation is stored (exactly one per tick across nodes). At startup the latest tick missed
//! while no node ran is enqueued once (a tick that did run makes it a no-op); a function never
//! scheduled before has nothing to catch up.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::functions::Function;
use crate::ids::new_id;
use crate::queue::{Dedup, Enqueued, NewInvocation, Queue};

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
        enqueue(&queue, &function, tick, schedule.next_after(tick)).await;
    }
}

/// The key, request and body of one tick.
pub fn tick_invocation(
    function: &Function,
    tick: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
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
        ],
        body: serde_json::json!({ "next_run": next_run })
            .to_string()
            .into_bytes(),
        max_attempts: u32::try_from(function.settings.retry.delays.len() + 1).unwrap_or(u32::MAX),
        deploy: function.deploy.as_deref().map(str::to_string),
    }
}

/// Enqueues one tick; `true` when this call stored it (not another node, not earlier).
async fn enqueue(
    queue: &Queue,
    function: &Function,
    tick: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> bool {
    match queue.enqueue(tick_invocation(function, tick, next)).await {
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
