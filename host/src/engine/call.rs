//! One invocation: a fresh store and instance of a pre-instantiated component, the request
//! handed in, the response handed out as soon as the guest sets it, and the outcome once the
//! guest is done or stopped. The WASI 0.2 call is here; the 0.3 one is in `service`, inside
//! the same store, budgets and accounting.
//!
//! Budgets are enforced twice: an epoch deadline callback traps a guest spinning in wasm code
//! (and yields to the executor every tick, so one spinning guest cannot starve a thread), and a
//! tokio timeout around the whole call stops a guest parked in a host call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{Component, Engine, Pre, outbound, service, stdio};
use crate::body::{Body, BodyError};
use crate::config::OutboundRule;
use crate::metrics::{self, Ended};

/// What a call of a guest is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A synchronous invocation.
    Sync,
    /// One attempt of a background invocation.
    Background,
    /// Reading a component's `config` export at load.
    Describe,
}

impl CallKind {
    /// The `mode` label of its metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Sync => "sync",
            CallKind::Background => "background",
            CallKind::Describe => "describe",
        }
    }
}

/// Everything one invocation needs besides the request.
#[derive(Clone)]
pub struct InvokeContext {
    /// Invocation id, for logs.
    pub id: Arc<str>,
    /// Function name, for logs and metrics.
    pub function: Arc<str>,
    /// What the call is for (the `mode` label of its metrics).
    pub kind: CallKind,
    /// Wall-clock budget of the whole call, instantiation included.
    pub timeout: Duration,
    /// Linear-memory cap in bytes.
    pub memory: u64,
    /// Fuel cap; `None` = unmetered (or unlimited when the engine meters fuel).
    pub fuel: Option<u64>,
    /// Environment the guest sees.
    pub env: Arc<[(String, String)]>,
    /// Outbound HTTP allow-list.
    pub outbound: Arc<[OutboundRule]>,
    /// Outbound requests in flight at once; more get `connection-limit-reached`.
    pub max_outbound: usize,
    /// Bytes of stdout + stderr logged; the rest is dropped after one "truncated" line.
    pub max_log: u64,
    /// Where the guest's output lines are kept too (a background attempt's, stored with it).
    pub capture: Option<crate::logs::Capture>,
    /// The deploy the function belongs to, for logs (none when served from a directory).
    pub deploy: Option<Arc<str>>,
}

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
}

/// An invocation under way: the guest's response (once it sets one) and how it ended.
pub struct Running {
    /// Resolves when the guest sets its response; closed if it ends without setting one.
    pub response: oneshot::Receiver<Result<http::Response<Body>, String>>,
    /// Resolves when the guest is done (or stopped).
    pub outcome: tokio::task::JoinHandle<Outcome>,
}

/// Marker error raised by the epoch callback when the deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock budget exceeded")]
struct DeadlineExceeded;

/// Per-store state.
pub(super) struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: Capped,
    hooks: outbound::Hooks,
}

/// The store's limits, noting when the memory cap refused a growth (the trap that follows is
/// counted as a memory-cap stop).
struct Capped {
    limits: StoreLimits,
    memory_refused: bool,
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

impl Engine {
    pub(super) fn store(&self, ctx: &InvokeContext, deadline: Instant) -> Store<State> {
        let mut wasi = WasiCtx::builder();
        let log = stdio::LogBudget::new(ctx.max_log);
        let stream = |name| {
            let (function, id) = (ctx.function.clone(), ctx.id.clone());
            stdio::LogStream::new(name, function, id, log.clone(), ctx.capture.clone())
                .in_deploy(ctx.deploy.clone())
        };
        wasi.stdout(stream("stdout"))
            .stderr(stream("stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (k, v) in ctx.env.iter() {
            wasi.env(k, v);
        }
        let state = State {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: Capped {
                limits: StoreLimitsBuilder::new()
                    .memory_size(usize::try_from(ctx.memory).unwrap_or(usize::MAX))
                    .trap_on_grow_failure(true)
                    .build(),
                memory_refused: false,
            },
            hooks: outbound::Hooks::new(
                ctx.outbound.clone(),
                ctx.function.clone(),
                ctx.id.clone(),
                ctx.max_outbound,
                self.tls.clone(),
            ),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        if self.fuel {
            store
                .set_fuel(ctx.fuel.unwrap_or(u64::MAX))
                .expect("fuel is enabled on this engine");
        }
        if self.epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if Instant::now() >= deadline {
                    Err(wasmtime::Error::new(DeadlineExceeded))
                } else {
                    Ok(UpdateDeadline::Yield(1))
                }
            });
        }
        store
    }

    /// Starts one invocation of `component` in a fresh instance, on its own task. The task
    /// holds `guard` until the guest is done (a concurrency permit, typically).
    pub fn invoke<G: Send + 'static>(
        &self,
        component: &Component,
        request: http::Request<Bytes>,
        ctx: &InvokeContext,
        guard: G,
    ) -> Running {
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        let mut store = self.store(ctx, started + ctx.timeout);
        let pre = component.pre.clone();
        let fuel = self.fuel.then_some(ctx.fuel.unwrap_or(u64::MAX));
        let timeout = ctx.timeout;
        let (function, id, mode) = (ctx.function.clone(), ctx.id.clone(), ctx.kind.as_str());
        let outcome = tokio::spawn(async move {
            let _guard = guard;
            let _in_flight = metrics::InFlight::start(mode);
            let call = match pre {
                Pre::Proxy(pre) => proxy_call(&mut store, pre, request, tx, &function).boxed(),
                Pre::Service(pre) => service::call(&mut store, pre, request, tx, &function).boxed(),
            };
            let result = tokio::time::timeout(timeout, call).await;
            let (outcome, ended) = match result {
                Err(_elapsed) => (Outcome::Timeout, Ended::Timeout),
                Ok(Ok(())) => (
                    Outcome::Completed {
                        fuel_used: fuel.map(|f| f - store.get_fuel().unwrap_or(0)),
                    },
                    Ended::Completed,
                ),
                Ok(Err(e)) => (
                    outcome_of(&e),
                    stopped_by(&e, store.data().limits.memory_refused),
                ),
            };
            let took = started.elapsed();
            let fuel_used = fuel.map(|f| f - store.get_fuel().unwrap_or(f));
            metrics::invocation(&function, mode, ended, took, fuel_used);
            log_outcome(&function, &id, &outcome, took);
            outcome
        });
        Running {
            response: rx,
            outcome,
        }
    }
}

/// Where the guest's response goes once it sets one (or the error code it answers with).
pub(super) type Respond = oneshot::Sender<Result<http::Response<Body>, String>>;

/// A WASI 0.2 call: `wasi:http/incoming-handler.handle` with a response outparam.
async fn proxy_call(
    store: &mut Store<State>,
    pre: ProxyPre<State>,
    request: http::Request<Bytes>,
    respond: Respond,
    function: &Arc<str>,
) -> wasmtime::Result<()> {
    let (req, out) = {
        let mut http = store.data_mut().http();
        let req =
            http.new_incoming_request(Scheme::Http, request.map(http_body_util::Full::new))?;
        let out = http.new_response_outparam_from_callback(move |result| {
            let mapped = result
                .map(|resp| {
                    resp.map(|body| body.map_err(|e| BodyError(e.to_string())).boxed_unsync())
                })
                .map_err(|code| format!("{code:?}"));
            let _ = respond.send(mapped);
        })?;
        (req, out)
    };
    let instantiating = Instant::now();
    let proxy = pre.instantiate_async(&mut *store).await?;
    metrics::instantiated(function, instantiating.elapsed());
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out)
        .await
}

/// Whether `e` is (or wraps) the epoch callback's budget stop.
fn past_deadline(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| cause.is::<DeadlineExceeded>())
}

fn outcome_of(e: &wasmtime::Error) -> Outcome {
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
fn stopped_by(e: &wasmtime::Error, memory_refused: bool) -> Ended {
    if past_deadline(e) {
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

fn log_outcome(function: &str, id: &str, outcome: &Outcome, elapsed: Duration) {
    let ms = elapsed.as_secs_f64() * 1e3;
    match outcome {
        Outcome::Completed {
            fuel_used: Some(fuel),
        } => {
            tracing::info!(function, id, ms, fuel, "invocation completed")
        }
        // Per-request success lines are debug: at thousands of requests a second the log
        // write would cost more than the instance.
        Outcome::Completed { fuel_used: None } => {
            tracing::debug!(function, id, ms, "invocation completed")
        }
        Outcome::Timeout => tracing::warn!(function, id, ms, "invocation stopped: budget exceeded"),
        Outcome::Trap { detail, .. } => {
            tracing::warn!(function, id, ms, "invocation trapped: {detail}")
        }
    }
}
