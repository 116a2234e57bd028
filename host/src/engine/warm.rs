//! Instances kept between requests (`reuse = N`, synchronous WASI 0.3 functions only): an
//! instance that served a request and ended cleanly — its handler returned and no task of
//! its own is left — goes back to its function's pool and serves the next request, up to N
//! in all. Each request is still its own invocation: a new id, a fresh budget, fuel and log
//! allowance, its own outbound slots (`call::Engine::rearm`). An instance that trapped or was
//! stopped at a budget is never kept; nor is one once the pool is full.
//!
//! Idle instances hold pooling-allocator slots, so they are bounded twice: [`MAX_IDLE`] per
//! function and [`MAX_IDLE_TOTAL`] in the process (the engine reserves that many slots more).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime_wasi_http::p3::bindings::Service;

use super::idle::{IDLE_TOTAL, MAX_IDLE, MAX_IDLE_TOTAL};
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
    idle: Mutex<Vec<Idle>>,
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
        self.0
            .workers
            .dispatch(job, (self.0.at_once, self.0.reuse), start)
    }

    /// An idle instance, if one is kept.
    pub(super) fn take(&self) -> Option<Idle> {
        let idle = self.idle().pop()?;
        IDLE_TOTAL.fetch_sub(1, Ordering::Relaxed);
        Some(idle)
    }

    /// Keeps an instance that has served `served` requests, when it may serve more and there
    /// is room; drops it otherwise.
    pub(super) fn put(&self, idle: Idle) {
        if idle.served >= self.0.reuse {
            return;
        }
        let mut kept = self.idle();
        if kept.len() >= MAX_IDLE {
            return;
        }
        let room = IDLE_TOTAL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_IDLE_TOTAL).then_some(n + 1)
        });
        if room.is_ok() {
            kept.push(idle);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.0.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let n = self.idle.get_mut().map_or(0, |v| v.len());
        IDLE_TOTAL.fetch_sub(n, Ordering::Relaxed);
    }
}
