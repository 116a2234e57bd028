//! Background work: the worker — claim → run → classify → finish (retry, succeed or
//! dead-letter), as a chain of short steps — with its pure [`retry`] policy and the
//! [`destinations`] its outcomes are delivered to.
//!
//! The worker runs up to its concurrency cap of attempts at once on a runtime with a thread per
//! core, keeps each lease alive with a heartbeat (a lost lease stops the guest at once),
//! re-queues expired leases, and on shutdown gives running attempts a grace period before
//! handing them back. Outcomes are group-committed by the queue's writer, each with the claim
//! of its slot's next invocation.

use crate::telemetry::{Trace, Trigger};
use std::sync::Arc;
use std::time::Duration;

mod caps;
pub mod destinations;
mod lease;
mod outcome;
pub mod rates;
pub mod retention;
pub mod retry;
pub mod scheduler;
mod steps;
mod sweep;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::deploys::Deploys;
use crate::engine::Engine;
use crate::functions::router::Match;
use crate::functions::{FunctionTable, LiveTable};
use crate::invocation;
use crate::logs::Capture;
use crate::queue::{Claimed, Finish, GuestLine, Queue, StoredResult, now_ms};
use lease::{AbortOnDrop, heartbeat};
use outcome::{AttemptFailure, Executed, expired, finish_for};

/// Stored response bodies are cut at this size.
pub const RESULT_CAP: usize = 256 * 1024;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Attempts at once.
    pub concurrency: usize,
    /// Lease length; heartbeats every third of it.
    pub lease: Duration,
    /// How long running attempts may go on after shutdown starts.
    pub grace: Duration,
    /// Interruptions (host died, lease lost) after which an invocation is dead.
    pub max_interruptions: u32,
    /// Every retry delay is multiplied by this (`fnhost dev --retry-scale`).
    pub retry_scale: f64,
}

/// Runs background invocations from the queue.
pub struct Worker {
    queue: Queue,
    engine: Arc<Engine>,
    /// The functions in force (a reload replaces them; an attempt keeps the version it began
    /// with).
    table: Arc<LiveTable>,
    /// Every deploy's functions: an invocation runs on the deploy it was accepted under.
    deploys: Arc<Deploys>,
    /// Per-function caps (`concurrency`): a permit per running attempt of that function.
    caps: caps::Caps,
    /// Woken when a capped function's attempt ends (its waiting work may be claimable now).
    cap_freed: tokio::sync::Notify,
    owner: String,
    opts: WorkerOptions,
}

impl Worker {
    /// A worker over `table`'s functions.
    pub fn new(
        queue: Queue,
        engine: Arc<Engine>,
        table: Arc<LiveTable>,
        deploys: Arc<Deploys>,
        opts: WorkerOptions,
    ) -> Worker {
        let owner = format!("{}-{}", std::process::id(), &crate::ids::new_id()[..8]);
        Worker {
            queue,
            engine,
            table,
            deploys,
            caps: caps::Caps::default(),
            cap_freed: tokio::sync::Notify::new(),
            owner,
            opts,
        }
    }

    /// The functions at their concurrency cap on this node: not to be claimed now.
    fn at_cap(&self) -> Vec<String> {
        self.caps.full()
    }

    /// The cap of `function` under the settings in force (none: uncapped).
    fn cap_of(&self, function: &str) -> Option<Arc<Semaphore>> {
        let limit = self.table.current().get(function)?.settings.concurrency;
        self.caps.of(function, limit)
    }

    /// A running permit for `claim`'s function (`Some(None)`: it has no cap); `None` when it
    /// is at its cap: the claim raced past the skip list and is handed back unstarted.
    async fn admit(&self, claim: &Claimed) -> Option<Option<OwnedSemaphorePermit>> {
        let Some(cap) = self.cap_of(&claim.function) else {
            return Some(None);
        };
        if let Ok(permit) = cap.clone().try_acquire_owned() {
            return Some(Some(permit));
        }
        if let Err(e) = self.queue.release(claim).await {
            tracing::error!(
                id = claim.id,
                "cannot hand back a claim over its function's cap: {e}"
            );
        }
        None
    }

    /// Claims and runs until `shutdown` is cancelled, then waits up to the grace period for
    /// running attempts and hands back the rest. Attempts run on `runtime` (one thread per
    /// core); this loop stays on the caller's.
    ///
    /// A slot claims once here; from then on each finished attempt's outcome claims the slot's
    /// next invocation in the same group commit ([`Queue::finish_and_claim`]), so a busy slot
    /// costs no transaction of its own and never waits for this loop. Nothing is claimed
    /// beyond the free slots: a long attempt never holds back work another node could run.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, runtime: Handle) {
        let slots = Arc::new(Semaphore::new(self.opts.concurrency.max(1)));
        let stop = Stop {
            cut_off: CancellationToken::new(),
            shutdown: shutdown.clone(),
        };
        let mut running = tokio::task::JoinSet::new();
        let reaper = tokio::spawn(self.clone().reap(shutdown.clone()));
        loop {
            while running.try_join_next().is_some() {}
            // Register interest before looking, so a commit in between is not missed.
            let notified = self.queue.work_notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let free = slots.available_permits();
            // The leases run from when the claim statement began, at the latest.
            let claim_began = tokio::time::Instant::now();
            let claimed = self.claim_up_to(free).await;
            let idle = claimed.is_empty();
            for claim in claimed {
                // More than a capped function's free permits may come in one claim.
                let Some(permit) = self.admit(&claim).await else {
                    continue;
                };
                let slot = (slots.clone().try_acquire_owned())
                    .expect("claimed no more than the free slots");
                let slot_run =
                    self.clone()
                        .run_slot(claim, permit, claim_began, slot, stop.clone());
                running.spawn_on(slot_run, &runtime);
            }
            if !idle && slots.available_permits() > 0 {
                continue;
            }
            let wait = self.idle_wait(free).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = &mut notified => {},
                () = self.cap_freed.notified() => {},
                () = tokio::time::sleep(wait) => {},
                Some(_) = running.join_next(), if !running.is_empty() => {},
            }
        }
        self.drain(running, &stop.cut_off).await;
        reaper.abort();
    }

    /// Claims up to `free` due invocations, none of a function at its cap.
    async fn claim_up_to(&self, free: usize) -> Vec<Claimed> {
        if free == 0 {
            return Vec::new();
        }
        let skip = self.at_cap();
        match self
            .queue
            .claim(&self.owner, free, self.opts.lease, &skip)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("claiming background work failed: {e}");
                Vec::new()
            }
        }
    }

    /// How long the claim loop may sleep: until the next invocation is due (5 ms to 1 s), or
    /// 1 s when every slot is busy (a finished slot wakes the loop).
    async fn idle_wait(&self, free: usize) -> Duration {
        if free == 0 {
            return Duration::from_secs(1);
        }
        match self.queue.next_due(&self.at_cap()).await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0).clamp(5, 1000))
            }
            _ => Duration::from_secs(1),
        }
    }

    /// After shutdown: waits up to the grace period for running attempts, then cuts the rest
    /// off (each hands its claim back).
    async fn drain(&self, mut running: tokio::task::JoinSet<()>, cut_off: &CancellationToken) {
        if running.is_empty() {
            return;
        }
        tracing::info!(
            "waiting up to {:?} for {} background attempt(s)",
            self.opts.grace,
            running.len()
        );
        let drained = tokio::time::timeout(self.opts.grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            cut_off.cancel();
            while running.join_next().await.is_some() {}
        }
    }

    /// One slot: runs `claim`, then each next invocation its outcome's commit claimed, until
    /// the queue has none due (or shutdown comes).
    async fn run_slot(
        self: Arc<Self>,
        claim: Claimed,
        permit: Option<OwnedSemaphorePermit>,
        claim_began: tokio::time::Instant,
        _slot: OwnedSemaphorePermit,
        stop: Stop,
    ) {
        let (mut claim, mut permit, mut began) = (claim, permit, claim_began);
        loop {
            let Some((next, next_began)) = self.attempt(claim, permit, began, &stop).await else {
                return;
            };
            if stop.shutdown.is_cancelled() {
                // Claimed as shutdown began: not started, so handed back at once.
                if let Err(e) = self.queue.release(&next).await {
                    tracing::error!(id = next.id, "cannot hand back a claim not started: {e}");
                }
                return;
            }
            let Some(next_permit) = self.admit(&next).await else {
                return;
            };
            (claim, permit, began) = (next, next_permit, next_began);
        }
    }

    /// One attempt: run with a heartbeat, then record the outcome (fenced by the token), and
    /// unless shutdown has begun claim the slot's next invocation in the same commit.
    async fn attempt(
        &self,
        claim: Claimed,
        permit: Option<OwnedSemaphorePermit>,
        claim_began: tokio::time::Instant,
        stop: &Stop,
    ) -> Option<(Claimed, tokio::time::Instant)> {
        let trace = attempt_trace(&claim);
        let executed = self
            .run_leased(&claim, claim_began, &stop.cut_off, &trace)
            .await;
        // The guest is done: its function's cap has room again (for the next claim below too).
        if permit.is_some() {
            drop(permit);
            self.cap_freed.notify_one();
        }
        let executed = executed?;
        let delivery_for = executed.function.clone();
        let finish = self.judge(&claim, executed);
        outcome::traced(&trace, &finish, claim.attempt);
        let delivery = (delivery_for.as_deref())
            .and_then(|f| destinations::record_for(f, &claim, &finish, &trace));
        self.record(&claim, finish, delivery, stop.shutdown.is_cancelled())
            .await
    }

    /// Runs the guest while a heartbeat keeps the lease; `None` when the lease was lost or the
    /// shutdown grace ran out (then the claim is handed back).
    async fn run_leased(
        &self,
        claim: &Claimed,
        claim_began: tokio::time::Instant,
        cut_off: &CancellationToken,
        trace: &Trace,
    ) -> Option<Executed> {
        let lost = CancellationToken::new();
        // Stopped however this attempt ends, a panic included: a heartbeat outliving its
        // attempt would keep a dead attempt's lease alive.
        let _heartbeat = AbortOnDrop(
            tokio::spawn(heartbeat(
                self.queue.clone(),
                claim.clone(),
                self.opts.lease,
                claim_began,
                lost.clone(),
            ))
            .abort_handle(),
        );
        tokio::select! {
            r = self.execute(claim, trace) => Some(r),
            () = lost.cancelled() => {
                tracing::warn!(id = claim.id, "lease lost (taken over, or not renewable); stopping this attempt");
                None
            }
            () = cut_off.cancelled() => {
                match self.queue.release(claim).await {
                    Ok(_) => tracing::warn!(id = claim.id, "shutdown grace over; handed back for a later run"),
                    Err(e) => tracing::error!(id = claim.id, "cannot hand back after shutdown: {e}"),
                }
                None
            }
        }
    }

    /// How the attempt counts ([`finish_for`]), with what the guest printed.
    fn judge(&self, claim: &Claimed, executed: Executed) -> Finish {
        let Executed {
            function,
            result,
            logs,
        } = executed;
        let policy = function.as_deref().map(|f| &f.settings.retry);
        let mut finish = finish_for(claim, policy, result, now_ms(), self.opts.retry_scale);
        finish.result_mut().logs = logs;
        if let Some(error) = finish.error() {
            tracing::warn!(
                id = claim.id,
                function = claim.function,
                attempt = claim.attempt,
                "attempt failed: {error}"
            );
        }
        finish
    }

    /// Records the outcome (fenced by the claim's token) and, unless `shutting_down`, claims
    /// the slot's next invocation in the same commit; that claim and when it began.
    async fn record(
        &self,
        claim: &Claimed,
        finish: Finish,
        delivery: Option<crate::queue::NewDelivery>,
        shutting_down: bool,
    ) -> Option<(Claimed, tokio::time::Instant)> {
        let count: fn(&str) = match &finish {
            Finish::Succeeded(_) => |_| {},
            Finish::Retry { .. } => crate::metrics::retry,
            Finish::Dead { .. } => crate::metrics::dead,
            Finish::Expired { .. } => crate::metrics::expired,
            Finish::Suspended {
                suspension: crate::workflow::Suspension::Sleep { .. },
                ..
            } => |f| crate::metrics::suspended(f, false),
            Finish::Suspended { .. } => |f| crate::metrics::suspended(f, true),
        };
        let waits = matches!(
            &finish,
            Finish::Suspended {
                suspension: crate::workflow::Suspension::Wait { .. },
                ..
            }
        );
        let next_began = tokio::time::Instant::now();
        let written = if shutting_down {
            (self.queue.finish(claim, finish, delivery).await).map(|held| (held, None))
        } else {
            let (owner, lease, skip) = (&self.owner, self.opts.lease, self.at_cap());
            (self.queue)
                .finish_and_claim(claim, finish, delivery, owner, lease, skip)
                .await
        };
        match written {
            Ok((held, next)) => {
                if held {
                    count(&claim.function);
                    if waits {
                        self.catch_up(&claim.id).await;
                    }
                } else {
                    tracing::warn!(
                        id = claim.id,
                        "result discarded: the lease was taken over meanwhile"
                    );
                }
                next.map(|n| (n, next_began))
            }
            Err(e) => {
                tracing::error!(
                    id = claim.id,
                    "cannot record the outcome (it will run again): {e}"
                );
                None
            }
        }
    }

    /// Wakes `id` at once if its event was sent while the attempt that began the wait ran.
    async fn catch_up(&self, id: &str) {
        match self.queue.catch_up_waits(Some(id)).await {
            Ok(0) => {}
            Ok(_) => tracing::info!(id, "its event came while the wait began: woken"),
            Err(e) => tracing::warn!(
                id,
                "cannot check for an event already sent (the sweep will): {e}"
            ),
        }
    }

    /// The functions `claim` runs on: those of the deploy it was accepted under (retries
    /// included, whatever was published since), else the table served now.
    async fn table_for(&self, claim: &Claimed) -> anyhow::Result<Arc<FunctionTable>> {
        let current = self.table.current();
        match &claim.deploy {
            Some(d) if current.deploy.as_ref() != Some(d) => {
                Ok(self.deploys.load(d).await?.table.clone())
            }
            _ => Ok(current),
        }
    }

    /// Runs the guest and drains its response; with what it printed.
    async fn execute(&self, claim: &Claimed, trace: &Trace) -> Executed {
        let table = match self.table_for(claim).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(id = claim.id, "{e:#}");
                return Executed::failed(None, AttemptFailure::NotLoaded(claim.function.clone()));
            }
        };
        let Some(function) = table.get(&claim.function).cloned() else {
            let error = AttemptFailure::NotLoaded(claim.function.clone());
            return Executed::failed(None, error);
        };
        if let Some(expired) = expired(&function, claim, now_ms()) {
            return Executed::failed(Some(function), expired);
        }
        let request = match rebuild_request(claim) {
            Ok(r) => r,
            Err(e) => return Executed::failed(Some(function), AttemptFailure::BadRequest(e)),
        };
        let params = match table.router.route(&claim.method, request.uri().path()) {
            Match::Found(_, params, _) => params,
            _ => Vec::new(),
        };
        let capture = Capture::default();
        let limits = &function.settings.limits;
        let steps = steps::QueueSteps::for_claim(
            &self.queue,
            claim,
            (limits.max_steps, limits.max_step_size),
        );
        let mut running = invocation::start(
            &self.engine,
            &function,
            request,
            (&params, &claim.id),
            Some(invocation::Attempt {
                number: claim.attempt,
                capture: capture.clone(),
                steps,
            }),
            trace,
            (),
        );
        // The guest runs on a task of its own: when this attempt is abandoned (lease lost,
        // shutdown grace over) dropping this future must stop the guest too.
        let _stop_guest = AbortOnDrop(running.outcome.abort_handle());
        let budget = function.settings.limits.timeout;
        let result = match invocation::answer(&mut running, budget).await {
            Ok(resp) => {
                let stored = drain(resp).await;
                invocation::ended(&mut running, budget)
                    .await
                    .map(|()| stored)
            }
            Err(failure) => Err(failure),
        };
        let logs = capture
            .take()
            .into_iter()
            .map(|(at_ms, stream, line)| GuestLine {
                at_ms,
                stream: stream.to_string(),
                line,
            })
            .collect();
        Executed {
            function: Some(function),
            result: result.map_err(AttemptFailure::Guest),
            logs,
        }
    }
}

/// The span of one attempt, in the trace its stored request names (the accepting request's,
/// or the tick's).
pub(super) fn attempt_trace(claim: &Claimed) -> Trace {
    let scheduled = (claim.headers.iter()).any(|(k, v)| k == "fnhost-event" && v == "schedule");
    let trigger = if scheduled {
        Trigger::Timer
    } else {
        Trigger::Http
    };
    Trace::attempt(
        &claim.headers,
        &claim.function,
        &claim.id,
        claim.attempt,
        trigger,
    )
}

/// What stops a slot: shutdown (no next claim), and the end of the shutdown grace (the
/// running attempt is handed back).
#[derive(Clone)]
struct Stop {
    cut_off: CancellationToken,
    shutdown: CancellationToken,
}

fn rebuild_request(claim: &Claimed) -> Result<http::Request<Bytes>, String> {
    let mut builder = http::Request::builder()
        .method(claim.method.as_str())
        .uri(claim.uri.as_str());
    for (k, v) in &claim.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Bytes::from(claim.body.clone()))
        .map_err(|e| e.to_string())
}

/// Reads the response, keeping at most [`RESULT_CAP`] bytes of body (the rest is drained so
/// the guest is never blocked writing).
async fn drain(resp: http::Response<crate::body::Body>) -> StoredResult {
    let (parts, mut body) = resp.into_parts();
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            let room = RESULT_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    StoredResult {
        status: Some(parts.status.as_u16()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: kept,
        logs: Vec::new(),
    }
}
