//! Instances kept between requests (`reuse = N`, synchronous WASI 0.3 functions only): an
//! instance that served a request and ended cleanly — its handler returned and no task of
//! its own is left — goes back to its function's pool and serves the next request, up to N
//! in all. Each request is still its own invocation: a new id, a fresh budget, fuel and log
//! allowance, its own outbound slots (`call::Engine::rearm`). An instance that trapped or was
//! stopped at a budget is never kept; nor is one once the pool is full.
//!
//! Idle instances hold pooling-allocator slots: each holds an [`IdlePlace`], within the bounds
//! per function and per process (`idle`).

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime_wasi_http::p3::bindings::Service;

use super::idle::IdlePlace;
use super::shared;
use super::state::State;

/// One function's pool of instances that may serve again.
#[derive(Clone)]
pub struct Warm(Arc<Pool>);

struct Pool {
    /// Requests one instance serves in all.
    reuse: u32,
    /// Requests one instance serves at once (`instance_concurrency`); above 1, the function's
    /// instances are `shared` workers rather than idle stores.
    at_once: usize,
    idle: Mutex<Vec<(Idle, IdlePlace)>>,
    /// The function's idle instances, kept or shared (what its `IdlePlace`s count).
    idle_count: Arc<AtomicUsize>,
    workers: shared::Workers,
}

/// An instance between requests, with the number it has served.
pub(super) struct Idle {
    pub(super) store: Store<State>,
    pub(super) service: Service,
    pub(super) served: u32,
}

impl Warm {
    /// A pool for a function whose instances serve `reuse` requests each, `at_once` at a
    /// time.
    pub fn new(reuse: u32, at_once: u32) -> Warm {
        Warm(Arc::new(Pool {
            reuse,
            at_once: usize::try_from(at_once).unwrap_or(usize::MAX).max(1),
            idle: Mutex::new(Vec::new()),
            idle_count: Arc::default(),
            workers: shared::Workers::default(),
        }))
    }

    /// Requests one instance serves at once.
    pub(super) fn at_once(&self) -> usize {
        self.0.at_once
    }

    /// Hands `job` to one of the function's shared instances with room, or to a new one.
    pub(super) fn share(
        &self,
        job: shared::Job,
        start: impl FnOnce() -> shared::Start,
    ) -> (shared::Ending, bool) {
        self.0.workers.dispatch(
            job,
            (self.0.at_once, self.0.reuse),
            &self.0.idle_count,
            start,
        )
    }

    /// An idle instance, if one is kept.
    pub(super) fn take(&self) -> Option<Idle> {
        self.idle().pop().map(|(idle, _place)| idle)
    }

    /// Keeps an instance that has served `served` requests, when it may serve more and there
    /// is room; drops it otherwise.
    pub(super) fn put(&self, idle: Idle) {
        if idle.served >= self.0.reuse {
            return;
        }
        if let Some(place) = IdlePlace::take(&self.0.idle_count) {
            self.idle().push((idle, place));
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(Idle, IdlePlace)>> {
        self.0.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
