//! Instances that serve several requests at once (`instance_concurrency = M` > 1, synchronous
//! WASI 0.3 functions): each such instance is a worker task that owns its store and runs one
//! `run_concurrent` event loop, into which requests are handed as they come — at most M
//! answering at once, N (`reuse`) in all — the way `wasmtime serve` serves 0.3 components.
//!
//! Each request stays its own invocation although its guest task shares the store:
//! - its **log tag** (id, `max_log`, capture) and **outbound hooks** (`max_outbound` slots,
//!   the id in denial lines, the trace) are found from the guest task making a host call: a
//!   call hook looks up the root of `async_call_stack` (the `handle` call) and switches the
//!   store's tag and hooks to that request's before the host function runs;
//! - its **budget**: the epoch callback traps a task spinning past its own deadline (which
//!   ends the instance: wasm cannot stop one task alone), and a request not answered by its
//!   deadline gets `504` while the instance stops taking requests and ends once the others
//!   are done or past their deadlines.
//!
//! A trap ends the instance and every request in it. Work a handler spawned after answering
//! goes on in the instance; the instance ends when it has served N requests and that work is
//! done, or at the latest deadline of the requests it served.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use wasmtime::component::{Accessor, GuestTaskId};
use wasmtime::{AsContextMut, CallHook, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

use super::idle::IdlePlace;
use super::service::{answer, push_request};
use super::state::{Respond, State, TaskCtx};
use super::verdict::{DeadlineExceeded, Outcome, outcome_of, stopped_by};
use crate::metrics::{self, Ended};

/// One request for a shared instance: what it needs to run and report.
pub(super) struct Job {
    pub(super) request: http::Request<Bytes>,
    pub(super) respond: Respond,
    pub(super) task: Arc<TaskCtx>,
    /// Resolves when the handler has answered (in time).
    pub(super) answered: oneshot::Sender<()>,
}

/// How a worker is doing, as the dispatcher and the callers see it.
#[derive(Default)]
pub(super) struct Load {
    /// Requests handed in and not answered yet.
    in_flight: AtomicUsize,
    /// Requests handed in, in all.
    taken: AtomicU32,
}

impl Load {
    /// Reserves room for one more request: fewer than `at_once` in flight, `total` in all.
    fn reserve(&self, at_once: usize, total: u32) -> bool {
        let taken = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < total).then_some(n + 1)
            });
        if taken.is_err() {
            return false;
        }
        let room = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < at_once).then_some(n + 1)
            });
        if room.is_err() {
            self.taken.fetch_sub(1, Ordering::AcqRel);
        }
        room.is_ok()
    }

    fn unreserve(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running shared instance, as its function's pool holds it.
struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    load: Arc<Load>,
    ended: Ending,
}

/// What a new shared instance starts from.
pub(super) struct Start {
    pub(super) store: Store<State>,
    pub(super) pre: ServicePre<State>,
    pub(super) function: Arc<str>,
    /// Whether the engine interrupts by epoch (the per-task deadline check).
    pub(super) epoch: bool,
}

/// A function's shared instances.
#[derive(Default)]
pub(super) struct Workers {
    running: Mutex<Vec<Worker>>,
}

/// How the instance a job went to ended, once it has: what a request it did not answer
/// reports.
pub(super) type Ending = watch::Receiver<Option<(Outcome, Ended)>>;

impl Workers {
    /// Hands `job` to a running instance with room, or to a new one made from `start` (which
    /// serves up to `total` requests, `at_once` at a time, and waits for work only with a place
    /// counted in `idle`); says whether it made one.
    pub(super) fn dispatch(
        &self,
        mut job: Job,
        (at_once, total): (usize, u32),
        idle: &Arc<AtomicUsize>,
        start: impl FnOnce() -> Start,
    ) -> (Ending, bool) {
        let mut workers = self.running.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| !w.jobs.is_closed());
        for worker in workers.iter() {
            if !worker.load.reserve(at_once, total) {
                continue;
            }
            match worker.jobs.send(job) {
                Ok(()) => return (worker.ended.clone(), false),
                Err(mpsc::error::SendError(back)) => {
                    worker.load.unreserve();
                    job = back;
                }
            }
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let load = Arc::new(Load::default());
        load.reserve(at_once, total);
        let (end_tx, ended) = watch::channel(None);
        let first_deadline = job.task.deadline;
        let _ = jobs.send(job);
        let mut start = start();
        // Until its first request is registered, instantiation runs on that request's budget.
        start.store.data_mut().tasks.latest = Some(first_deadline);
        let idle = idle.clone();
        tokio::spawn(run(start, rx, (load.clone(), idle), total, end_tx));
        workers.push(Worker {
            jobs,
            load,
            ended: ended.clone(),
        });
        (ended, true)
    }
}

/// One shared instance: instantiates, serves what it is handed, then waits (up to the
/// latest deadline) for the work its handlers left, and says how it ended.
async fn run(
    Start {
        mut store,
        pre,
        function,
        epoch,
    }: Start,
    jobs: mpsc::UnboundedReceiver<Job>,
    (load, idle): (Arc<Load>, Arc<AtomicUsize>),
    total: u32,
    end: watch::Sender<Option<(Outcome, Ended)>>,
) {
    attribute_host_calls(&mut store, epoch);
    let instantiating = Instant::now();
    let served = match pre.instantiate_async(&mut store).await {
        Ok(service) => {
            metrics::instantiated(&function, instantiating.elapsed());
            let serving = store.run_concurrent(async |accessor| {
                serve_all(accessor, &service, jobs, (&load, &idle), total).await
            });
            serving.await.and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    let ended = match served {
        // A request the instance did not answer ran out of time.
        Ok(()) => (Outcome::Timeout, Ended::Timeout),
        Err(e) => {
            let ended = stopped_by(&e, store.data().limits.memory_refused);
            tracing::warn!(function = &*function, "shared instance ended: {e:#}");
            (outcome_of(&e), ended)
        }
    };
    let _ = end.send(Some(ended));
}

/// How a request handed to a shared instance ended: answered by `answered`, else however its
/// instance ended (a trap, a budget stop), else out of time at `deadline`.
pub(super) async fn outcome(
    answered: oneshot::Receiver<()>,
    mut ending: Ending,
    deadline: Instant,
) -> (Outcome, Ended) {
    let timeout = || (Outcome::Timeout, Ended::Timeout);
    match tokio::time::timeout_at(deadline.into(), answered).await {
        Ok(Ok(())) => (Outcome::Completed { fuel_used: None }, Ended::Completed),
        Err(_elapsed) => timeout(),
        // Given up at its deadline by the instance (whose timer may fire before this one):
        // out of time, whatever the instance ends with afterwards.
        Ok(Err(_dropped)) if Instant::now() >= deadline => timeout(),
        Ok(Err(_dropped)) => {
            let ended = ending.wait_for(Option::is_some);
            match tokio::time::timeout_at(deadline.into(), ended).await {
                Ok(Ok(ended)) => ended.clone().unwrap_or_else(timeout),
                _ => timeout(),
            }
        }
    }
}

/// The event loop's driver: takes jobs while there is room, runs each, and once no more may
/// come (N taken, an expiry, no idle place, or the pool gone) waits for the work the
/// handlers left.
async fn serve_all(
    accessor: &Accessor<State>,
    service: &Service,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    (load, idle_count): (&Load, &Arc<AtomicUsize>),
    total: u32,
) -> wasmtime::Result<()> {
    let mut running = FuturesUnordered::new();
    let mut received = 0u32;
    let mut idle: Option<IdlePlace> = None;
    loop {
        if running.is_empty() && idle.is_none() && !jobs.is_closed() {
            // Waiting for work holds a pool slot: only while the idle bounds leave room.
            idle = IdlePlace::take(idle_count);
            if idle.is_none() {
                jobs.close();
            }
        }
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => {
                    idle = None;
                    received += 1;
                    if received >= total {
                        jobs.close(); // what is already queued is still received
                    }
                    running.push(serve_one(accessor, service, job));
                }
                None if running.is_empty() => break,
                None => {
                    if let Some(answered) = running.next().await {
                        settle(answered?, load, &mut jobs);
                    }
                }
            },
            Some(answered) = running.next() => settle(answered?, load, &mut jobs),
        }
    }
    let latest = accessor.with(|mut access| access.get().tasks.latest);
    let left = std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx));
    match latest {
        Some(latest) => tokio::time::timeout_at(latest.into(), left)
            .await
            .map_err(|_| wasmtime::Error::msg("work after the answer ran past the budget")),
        None => {
            left.await;
            Ok(())
        }
    }
}

/// A request answered (or expired): one less in flight; an expiry stops the instance taking
/// more.
fn settle(in_time: bool, load: &Load, jobs: &mut mpsc::UnboundedReceiver<Job>) {
    load.in_flight.fetch_sub(1, Ordering::AcqRel);
    if !in_time {
        jobs.close();
    }
}

/// Runs one request's `handle` as its own guest task; `false` when its deadline passed first
/// (its caller answers `504`; the task is left to the instance's end).
async fn serve_one(
    accessor: &Accessor<State>,
    service: &Service,
    job: Job,
) -> wasmtime::Result<bool> {
    let Job {
        request,
        respond,
        task,
        answered,
    } = job;
    let deadline = task.deadline;
    let (resource, io) = push_request(accessor, request)?;
    let handle = service.wasi_http_handler().func_handle();
    let call = accessor.with(|mut access| {
        let call = handle.start_call_concurrent(access.as_context_mut(), (resource,))?;
        access.get().tasks.register(call.task(), task);
        wasmtime::Result::<_>::Ok(call)
    })?;
    let finished = handle.finish_call_concurrent(accessor, call);
    let Ok(returned) = tokio::time::timeout_at(deadline.into(), finished).await else {
        return Ok(false);
    };
    let (returned,) = returned?;
    let _ = respond.send(answer(accessor, returned, io)?);
    let _ = answered.send(());
    Ok(true)
}

/// The root guest task of the call under way (the `handle` call a host call is made for).
fn root_task(store: &mut StoreContextMut<'_, State>) -> Option<GuestTaskId> {
    store.async_call_stack().ok()?.last()
}

/// Installs the call hook that gives each host call its request's log tag and outbound
/// hooks, and the epoch callback that stops a task spinning past its own deadline.
fn attribute_host_calls(store: &mut Store<State>, epoch: bool) {
    store.call_hook(|mut store, hook| {
        if matches!(hook, CallHook::CallingHost)
            && let Some(root) = root_task(&mut store)
        {
            let state = store.data_mut();
            if state.tasks.current != Some(root)
                && let Some(ctx) = state.tasks.by_task.get(&root).cloned()
            {
                state.tasks.current = Some(root);
                *state.log.lock().unwrap_or_else(|e| e.into_inner()) = ctx.tag.clone();
                state.hooks = ctx.hooks.clone();
            }
        }
        Ok(())
    });
    if !epoch {
        return;
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut store| {
        // A task not registered (instantiation, which runs as a task of its own, or one past
        // its deadline and forgotten) runs until the latest deadline of the instance's requests.
        let own = root_task(&mut store).and_then(|root| {
            let tasks = &store.data().tasks;
            tasks.by_task.get(&root).map(|ctx| ctx.deadline)
        });
        let tasks = &store.data().tasks;
        match own.or(tasks.latest) {
            Some(deadline) if Instant::now() >= deadline => {
                Err(wasmtime::Error::new(DeadlineExceeded))
            }
            _ => Ok(UpdateDeadline::Yield(1)),
        }
    });
}
