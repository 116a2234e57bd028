//! Per-store state: WASI, WASI HTTP, the resource table, the memory limiter, the outbound
//! hooks and whose invocation the guest's output is — the same for a 0.2 and a 0.3 call —
//! and, in an instance serving several requests at once, which request each guest task is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use wasmtime::component::{GuestTaskId, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{outbound, stdio};
use crate::body::Body;

/// Where the guest's response goes once it sets one (or the error code it answers with).
pub(super) type Respond = oneshot::Sender<Result<http::Response<Body>, String>>;

/// Per-store state.
pub(super) struct State {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: Capped,
    pub(super) hooks: outbound::Hooks,
    /// Whose invocation the guest's output lines belong to.
    pub(super) log: stdio::SharedTag,
    /// In an instance serving several requests at once: each guest task's request.
    pub(super) tasks: Tasks,
    /// A background attempt's durable steps (`fnhost:function/steps`); none otherwise.
    pub(super) steps: Option<Arc<dyn crate::workflow::StepStore>>,
}

/// The store's limits, noting when the memory cap refused a growth (the trap that follows is
/// counted as a memory-cap stop).
pub(super) struct Capped {
    pub(super) limits: StoreLimits,
    pub(super) memory_refused: bool,
}

impl ResourceLimiter for Capped {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_refused = true;
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Whose invocation a guest task is: what host calls made on its behalf use.
pub(super) struct TaskCtx {
    pub(super) tag: Arc<stdio::Tag>,
    pub(super) hooks: outbound::Hooks,
    pub(super) deadline: Instant,
}

/// The guest tasks of a shared store, each with its request's context.
#[derive(Default)]
pub(super) struct Tasks {
    pub(super) by_task: HashMap<GuestTaskId, Arc<TaskCtx>>,
    /// The task whose tag and hooks the store holds now.
    pub(super) current: Option<GuestTaskId>,
    /// The latest deadline of the requests this instance took.
    pub(super) latest: Option<Instant>,
}

impl Tasks {
    /// Notes `task` as `ctx`'s, forgetting tasks whose deadline has passed (host calls they
    /// still make are tagged as the instance's).
    pub(super) fn register(&mut self, task: GuestTaskId, ctx: Arc<TaskCtx>) {
        let now = Instant::now();
        self.by_task.retain(|_, ctx| ctx.deadline > now);
        self.latest = self.latest.max(Some(ctx.deadline));
        self.by_task.insert(task, ctx);
        // A task id is reused once its task is gone: the next host call must switch.
        if self.current == Some(task) {
            self.current = None;
        }
    }
}
