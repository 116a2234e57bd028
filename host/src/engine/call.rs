//! One invocation: a fresh store and instance of a pre-instantiated component, the request
//! handed in, the response handed out as soon as the guest sets it, and the outcome once the
//! guest is done or stopped. The WASI 0.2 call is here; the 0.3 one is in `service`, inside
//! the same store, budgets and accounting.
//!
//! Budgets are enforced twice: an epoch deadline callback traps a guest spinning in wasm code
//! (and yields to the executor every tick, so one spinning guest cannot starve a thread), and a
//! tokio timeout around the whole call stops a guest parked in a host call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::Either;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use super::state::{Capped, Respond, State, TaskCtx, Tasks};
pub use super::verdict::Outcome;
use super::verdict::{DeadlineExceeded, outcome_of, stopped_by};
use super::warm::{Idle, Warm};
use super::{Component, Engine, Pre, outbound, service, shared, stdio};
use crate::body::{Body, BodyError};
use crate::config::OutboundRule;
use crate::metrics::{self, Ended};
use crate::telemetry::Trace;

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
    /// The function's pool of instances kept between requests (`reuse` > 1).
    pub warm: Option<Warm>,
    /// The directory the guest sees as `/`, read-only (`files`).
    pub files: Option<Arc<std::path::Path>>,
    /// The span of this run: instantiation and outbound requests are its children.
    pub trace: crate::telemetry::Trace,
    /// The background attempt's number, for logs.
    pub attempt: Option<u32>,
    /// The background invocation's durable steps (none for a synchronous call).
    pub steps: Option<Arc<dyn crate::workflow::StepStore>>,
}

/// An invocation under way: the guest's response (once it sets one) and how it ended.
pub struct Running {
    /// Resolves when the guest sets its response; closed if it ends without setting one.
    pub response: oneshot::Receiver<Result<http::Response<Body>, String>>,
    /// Resolves when the guest is done (or stopped).
    pub outcome: tokio::task::JoinHandle<Outcome>,
}

impl Engine {
    pub(super) fn store(&self, ctx: &InvokeContext, deadline: Instant) -> Store<State> {
        let mut wasi = WasiCtx::builder();
        let log: stdio::SharedTag = Arc::new(Mutex::new(Arc::new(log_tag(ctx))));
        wasi.stdout(stdio::LogStream::new("stdout", log.clone()))
            .stderr(stdio::LogStream::new("stderr", log.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (k, v) in ctx.env.iter() {
            wasi.env(k, v);
        }
        if let Some(dir) = &ctx.files
            && let Err(e) = wasi.preopened_dir(dir, "/", wasmtime_wasi::FsPerms::ReadOnly)
        {
            // Checked at load; gone since: the guest runs and finds no files.
            tracing::warn!(function = &*ctx.function, "files {}: {e:#}", dir.display());
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
            hooks: self.hooks(ctx),
            log,
            tasks: Tasks::default(),
            steps: ctx.steps.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store, ctx, deadline);
        store
    }

    /// Readies a kept instance's store for the next invocation: its log tag, outbound slots,
    /// fuel and deadline are this invocation's.
    fn rearm(&self, store: &mut Store<State>, ctx: &InvokeContext, deadline: Instant) {
        let state = store.data_mut();
        *state.log.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(log_tag(ctx));
        state.hooks = self.hooks(ctx);
        state.limits.memory_refused = false;
        state.steps = ctx.steps.clone();
        self.arm(store, ctx, deadline);
    }

    /// The fuel and the epoch deadline of one invocation.
    fn arm(&self, store: &mut Store<State>, ctx: &InvokeContext, deadline: Instant) {
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
    }

    fn hooks(&self, ctx: &InvokeContext) -> outbound::Hooks {
        outbound::Hooks::new(
            ctx.outbound.clone(),
            ctx.function.clone(),
            ctx.id.clone(),
            ctx.max_outbound,
            self.tls.clone(),
            ctx.trace.clone(),
        )
    }

    /// The store and instance an invocation runs in: a kept one when the function reuses
    /// instances and one is idle, else a new store (the instance is made inside the call).
    fn prepare(&self, component: &Component, ctx: &InvokeContext, deadline: Instant) -> Prepared {
        let pre = match &component.pre {
            Pre::Proxy(pre) => {
                let call = Call::Proxy(pre.clone());
                return Prepared {
                    store: self.store(ctx, deadline),
                    call,
                };
            }
            Pre::Service(pre) => pre.clone(),
        };
        let warm = ctx.warm.clone();
        let idle = warm.as_ref().and_then(Warm::take);
        let (store, kept, served) = match idle {
            Some(mut idle) => {
                self.rearm(&mut idle.store, ctx, deadline);
                (idle.store, Some(idle.service), idle.served)
            }
            None => (self.store(ctx, deadline), None, 0),
        };
        let call = Call::Service {
            pre,
            warm,
            kept,
            served,
        };
        Prepared { store, call }
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
        if let (Pre::Service(pre), Some(warm)) = (&component.pre, &ctx.warm)
            && warm.at_once() > 1
        {
            return self.invoke_shared(pre, warm, request, ctx, guard);
        }
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        let Prepared { mut store, call } = self.prepare(component, ctx, started + ctx.timeout);
        let fuel = self.fuel.then_some(ctx.fuel.unwrap_or(u64::MAX));
        let timeout = ctx.timeout;
        let (function, id, mode) = (ctx.function.clone(), ctx.id.clone(), ctx.kind.as_str());
        let trace = ctx.trace.clone();
        trace.set(
            "faas.coldstart",
            matches!(
                &call,
                Call::Service {
                    kept: None,
                    warm: Some(_),
                    ..
                }
            ),
        );
        let outcome = tokio::spawn(async move {
            let _guard = guard;
            let _in_flight = metrics::InFlight::start(mode);
            // Either, not a box: no allocation per request for the dispatch.
            let (running, warm) = match call {
                Call::Proxy(pre) => (
                    Either::Left(
                        proxy_call(&mut store, pre, request, tx, &function)
                            .map(|r| r.map(|()| None)),
                    ),
                    None,
                ),
                Call::Service {
                    pre,
                    warm,
                    kept,
                    served,
                } => {
                    let call = service::call(&mut store, pre, kept, request, tx, &function);
                    (
                        Either::Right(call.map(|r| r.map(Some))),
                        warm.map(|w| (w, served)),
                    )
                }
            };
            let result = tokio::time::timeout(timeout, running).await;
            let (outcome, ended, service) = judge(result, &store, fuel);
            let fuel_used = fuel.map(|f| f - store.get_fuel().unwrap_or(f));
            let ran = Ran {
                function: &function,
                id: &id,
                mode,
                trace: &trace,
            };
            ran.report(&outcome, ended, started.elapsed(), fuel_used);
            if let (Some((warm, served)), Some(service)) = (warm, service) {
                warm.put(Idle {
                    store,
                    service,
                    served: served + 1,
                });
            }
            outcome
        });
        Running {
            response: rx,
            outcome,
        }
    }
}

impl Engine {
    /// Starts one invocation in an instance that serves several at once (`shared`): its
    /// outcome is known when the handler answers, or from how its instance ended.
    fn invoke_shared<G: Send + 'static>(
        &self,
        pre: &ServicePre<State>,
        warm: &Warm,
        request: http::Request<Bytes>,
        ctx: &InvokeContext,
        guard: G,
    ) -> Running {
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        let deadline = started + ctx.timeout;
        let (answered, answered_rx) = oneshot::channel();
        let job = shared::Job {
            request,
            respond: tx,
            task: Arc::new(TaskCtx {
                tag: Arc::new(log_tag(ctx)),
                hooks: self.hooks(ctx),
                deadline,
            }),
            answered,
        };
        let (ending, cold) = warm.share(job, || shared::Start {
            store: self.store(ctx, deadline),
            pre: pre.clone(),
            function: ctx.function.clone(),
            epoch: self.epoch,
        });
        let (function, id, mode) = (ctx.function.clone(), ctx.id.clone(), ctx.kind.as_str());
        let trace = ctx.trace.clone();
        trace.set("faas.coldstart", cold);
        let outcome = tokio::spawn(async move {
            let _guard = guard;
            let _in_flight = metrics::InFlight::start(mode);
            let (outcome, ended) = shared::outcome(answered_rx, ending, deadline).await;
            let ran = Ran {
                function: &function,
                id: &id,
                mode,
                trace: &trace,
            };
            ran.report(&outcome, ended, started.elapsed(), None);
            outcome
        });
        Running {
            response: rx,
            outcome,
        }
    }
}

/// The store an invocation runs in, and how it is called.
struct Prepared {
    store: Store<State>,
    call: Call,
}

/// How an invocation is called.
enum Call {
    /// WASI 0.2, in a new instance.
    Proxy(ProxyPre<State>),
    /// WASI 0.3: in a new instance of `pre`, or in `kept` (which has served `served`
    /// requests) when the function reuses instances (`warm`, its pool).
    Service {
        pre: ServicePre<State>,
        warm: Option<Warm>,
        kept: Option<Service>,
        served: u32,
    },
}

/// How a call ended: its outcome, how the metrics count it, and the 0.3 instance it ran in
/// when it ended cleanly (the one a reusing function may keep).
fn judge<E>(
    result: Result<wasmtime::Result<Option<Service>>, E>,
    store: &Store<State>,
    fuel: Option<u64>,
) -> (Outcome, Ended, Option<Service>) {
    match result {
        Err(_elapsed) => (Outcome::Timeout, Ended::Timeout, None),
        Ok(Ok(service)) => (
            Outcome::Completed {
                fuel_used: fuel.map(|f| f - store.get_fuel().unwrap_or(0)),
            },
            Ended::Completed,
            service,
        ),
        Ok(Err(e)) => (
            outcome_of(&e),
            stopped_by(&e, store.data().limits.memory_refused),
            None,
        ),
    }
}

/// Whose invocation a store's output is now.
fn log_tag(ctx: &InvokeContext) -> stdio::Tag {
    stdio::Tag {
        function: ctx.function.clone(),
        id: ctx.id.clone(),
        budget: stdio::LogBudget::new(ctx.max_log),
        capture: ctx.capture.clone(),
        deploy: ctx.deploy.clone(),
        attempt: ctx.attempt,
        trace_id: ctx.trace.trace_id().map(Arc::from),
    }
}

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
    let span = store.data().hooks.trace().child("instantiate");
    let proxy = pre.instantiate_async(&mut *store).await?;
    span.end();
    metrics::instantiated(function, instantiating.elapsed());
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out)
        .await
}

/// Whose invocation ended, for its report.
struct Ran<'a> {
    function: &'a Arc<str>,
    id: &'a str,
    mode: &'static str,
    trace: &'a Trace,
}

impl Ran<'_> {
    /// How the invocation ended, in the metrics, the log and its run span.
    fn report(&self, outcome: &Outcome, ended: Ended, took: Duration, fuel_used: Option<u64>) {
        metrics::invocation(self.function, self.mode, ended, took, fuel_used);
        log_outcome(self.function, self.id, outcome, took, self.trace);
        traced(self.trace, outcome, ended);
    }
}

fn log_outcome(function: &str, id: &str, outcome: &Outcome, elapsed: Duration, trace: &Trace) {
    let ms = elapsed.as_secs_f64() * 1e3;
    // Formatted only for a line that is written.
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let trace_id = (debug || !matches!(outcome, Outcome::Completed { fuel_used: None }))
        .then(|| trace.trace_id())
        .flatten();
    let trace_id = trace_id.as_deref();
    match outcome {
        Outcome::Completed {
            fuel_used: Some(fuel),
        } => {
            tracing::info!(function, id, trace_id, ms, fuel, "invocation completed")
        }
        // Per-request success lines are debug: at thousands of requests a second the log
        // write would cost more than the instance.
        Outcome::Completed { fuel_used: None } => {
            tracing::debug!(function, id, trace_id, ms, "invocation completed")
        }
        Outcome::Timeout => {
            tracing::warn!(
                function,
                id,
                trace_id,
                ms,
                "invocation stopped: budget exceeded"
            )
        }
        Outcome::Trap { detail, .. } => {
            tracing::warn!(function, id, trace_id, ms, "invocation trapped: {detail}")
        }
        Outcome::Suspended(s) => {
            tracing::info!(function, id, trace_id, ms, "invocation suspended: {s}")
        }
    }
}

/// The run span's end: fuel used, or why the guest was stopped (its cause, never a body).
fn traced(trace: &Trace, outcome: &Outcome, ended: Ended) {
    match outcome {
        Outcome::Completed { fuel_used } => {
            if let Some(fuel) = fuel_used {
                trace.set("fnhost.fuel_used", i64::try_from(*fuel).unwrap_or(i64::MAX));
            }
        }
        Outcome::Timeout => trace.fail(ended.as_str(), "budget exceeded"),
        Outcome::Trap { cause, .. } => trace.fail(ended.as_str(), cause.clone()),
        Outcome::Suspended(s) => trace.set("fnhost.suspended", s.to_string()),
    }
    trace.end();
}
