//! The only module that names wasmtime types. It owns the wasmtime `Engine` (pooling allocator,
//! epoch ticker, compiled-component cache), loads components into pre-instantiated
//! [`Component`]s, reads their optional `config` export, and runs one invocation in a fresh
//! instance with its budgets: [`Engine::invoke`].
//!
//! Budgets are enforced twice: an epoch deadline callback traps a guest spinning in wasm code
//! (and yields to the executor every tick, so one spinning guest cannot starve a thread), and a
//! tokio timeout around the whole call stops a guest parked in a host call.

mod outbound;
mod stdio;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::{Linker, ResourceTable, Val};
use wasmtime::{PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::OutboundRule;

/// Bytes of each pooled memory, and of each table, kept resident between instances. With the
/// `PAGEMAP_SCAN` ioctl (Linux 6.7+) only the pages an instance dirtied are reset, by copying
/// the image back, instead of `madvise` + a page fault (and a TLB-shootdown IPI across cores)
/// per page on the next request. Measured with `wrk -c16` (release, 2 cores): hello 10k → 15k
/// req/s, js-hello 1.4k → 2.6k. Without the ioctl wasmtime memsets the whole prefix instead,
/// which made memset a third of the profile at 1 MiB: the fallback keeps the old 128 KiB.
const KEEP_RESIDENT_MEMORY: usize = 8 << 20;
const KEEP_RESIDENT_TABLE: usize = 1 << 20;
const KEEP_RESIDENT_FALLBACK: usize = 128 << 10;

/// How often the epoch ticks; a spinning guest is stopped within one tick of its deadline.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A response body streaming out of a guest.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// An error while streaming a guest's response body.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

/// Engine-wide settings, fixed at startup.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances that may exist at once (sync cap + background cap + headroom).
    pub instance_slots: u32,
    /// The largest memory cap of any function, in bytes.
    pub max_memory: u64,
    /// Meter fuel (required when any function sets a fuel cap).
    pub fuel: bool,
    /// Directory of the compiled-component cache; `None` disables caching.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator (falls back to on-demand when it cannot reserve memory).
    /// Only benchmarks turn it off, to compare.
    pub pooling: bool,
    /// Epoch interruption. Only benchmarks turn it off, to measure its cost: without it a
    /// guest spinning in wasm is stopped only by the host timeout dropping the call.
    pub epoch: bool,
}

impl EngineOptions {
    /// The options `serve` uses: pooling and epochs on.
    pub fn new(
        instance_slots: u32,
        max_memory: u64,
        fuel: bool,
        cache_dir: Option<PathBuf>,
    ) -> EngineOptions {
        EngineOptions {
            instance_slots,
            max_memory,
            fuel,
            cache_dir,
            pooling: true,
            epoch: true,
        }
    }
}

/// The wasmtime engine, the linker with WASI + WASI HTTP, and the epoch ticker.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<State>,
    fuel: bool,
    pooling: bool,
    epoch: bool,
    cache: Option<wasmtime::Cache>,
}

/// What a component declares through its `config` export, if it has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// `background`.
    pub background: Option<bool>,
    /// `paths`.
    pub paths: Vec<String>,
    /// `methods`.
    pub methods: Vec<String>,
    /// `timeout-ms`.
    pub timeout: Option<Duration>,
    /// `memory-mb`, in bytes.
    pub memory: Option<u64>,
}

/// A compiled, linked, pre-instantiated component.
#[derive(Clone)]
pub struct Component {
    pre: ProxyPre<State>,
    /// The settings from its `config` export; `None` when it has none.
    pub declared: Option<Declared>,
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a valid component, or it imports what fnhost does not provide.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Compiler or linker message.
        reason: String,
    },
}

/// Everything one invocation needs besides the request.
#[derive(Clone)]
pub struct InvokeContext {
    /// Invocation id, for logs.
    pub id: Arc<str>,
    /// Function name, for logs.
    pub function: Arc<str>,
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
    /// The guest trapped (panic, unreachable, memory cap, ...); the detail is for logs only.
    Trap(String),
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
struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hooks: outbound::Hooks,
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
    /// Builds the engine and starts its epoch ticker thread.
    pub fn new(opts: &EngineOptions) -> anyhow::Result<Engine> {
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(opts.epoch)
            .consume_fuel(opts.fuel);
        let cache = match &opts.cache_dir {
            Some(dir) => {
                let mut cache = wasmtime::CacheConfig::new();
                cache.with_directory(dir);
                Some(wasmtime::Cache::new(cache).map_err(to_anyhow)?)
            }
            None => None,
        };
        config.cache(cache.clone());
        let mut pool = PoolingAllocationConfig::new();
        let slots = opts.instance_slots.max(1);
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(16))
            .total_memories(slots.saturating_mul(4))
            .total_tables(slots.saturating_mul(16))
            .total_stacks(slots)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .max_memory_size(usize::try_from(opts.max_memory).unwrap_or(usize::MAX))
            // Reset small memories, tables and stacks in place instead of returning their pages
            // to the kernel on every request: each `madvise` costs a TLB shootdown across cores.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(16);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
        } else {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_FALLBACK)
                .table_keep_resident(KEEP_RESIDENT_FALLBACK / 16);
        }
        let mut pooled = config.clone();
        pooled.allocation_strategy(pool);
        let pooled = if opts.pooling {
            wasmtime::Engine::new(&pooled)
        } else {
            Err(wasmtime::format_err!("disabled"))
        };
        let (engine, pooling) = match pooled {
            Ok(engine) => (engine, true),
            Err(e) if !opts.pooling => {
                tracing::debug!("pooling allocator off ({e})");
                (wasmtime::Engine::new(&config).map_err(to_anyhow)?, false)
            }
            Err(e) => {
                tracing::warn!("pooling allocator unavailable ({e}); allocating on demand");
                (wasmtime::Engine::new(&config).map_err(to_anyhow)?, false)
            }
        };
        if opts.epoch {
            spawn_epoch_ticker(&engine);
        }
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(to_anyhow)?;
        Ok(Engine {
            engine,
            linker,
            fuel: opts.fuel,
            pooling,
            epoch: opts.epoch,
            cache,
        })
    }

    /// Compiled-component cache `(hits, misses)` so far; `None` when caching is off.
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.cache
            .as_ref()
            .map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// How pooled memories are reset between instances: `"pagemap"` (only dirtied pages,
    /// copied back), `"madvise"` (the fallback), or `"none"` without pooling.
    pub fn reset_mode(&self) -> &'static str {
        match (
            self.pooling,
            PoolingAllocationConfig::is_pagemap_scan_available(),
        ) {
            (false, _) => "none",
            (true, true) => "pagemap",
            (true, false) => "madvise",
        }
    }

    /// Compiles (or loads from the cache) and links the component at `path`, then reads its
    /// `config` export. Compilation runs on a blocking thread.
    pub async fn load(&self, path: &Path) -> Result<Component, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let (engine, owned) = (self.engine.clone(), path.to_owned());
        let component = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&owned).map_err(|source| LoadError::Read {
                path: owned.clone(),
                source,
            })?;
            wasmtime::component::Component::from_binary(&engine, &bytes).map_err(|e| {
                LoadError::Invalid {
                    path: owned,
                    reason: format!("not a loadable WebAssembly component: {e:#}"),
                }
            })
        })
        .await
        .map_err(|e| invalid(format!("compiler thread failed: {e}")))??;
        let config_export = find_config_export(&self.engine, &component);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("cannot link: {e:#}")))?;
        let pre = ProxyPre::new(pre)
            .map_err(|e| invalid(format!("does not export wasi:http/incoming-handler: {e:#}")))?;
        let declared = match config_export {
            None => None,
            Some(name) => Some(
                self.describe(&pre, &name)
                    .await
                    .map_err(|e| invalid(format!("its config export failed: {e:#}")))?,
            ),
        };
        Ok(Component { pre, declared })
    }

    /// Calls the `config` export's `describe` once, in a throwaway instance with a short budget.
    async fn describe(&self, pre: &ProxyPre<State>, interface: &str) -> anyhow::Result<Declared> {
        let ctx = InvokeContext {
            id: "describe".into(),
            function: "describe".into(),
            timeout: Duration::from_secs(5),
            memory: 256 << 20,
            fuel: None,
            env: Arc::from(Vec::new()),
            outbound: Arc::from(Vec::new()),
        };
        let mut store = self.store(&ctx, Instant::now() + ctx.timeout);
        let call = async {
            let instance = pre.instance_pre().instantiate_async(&mut store).await?;
            let iface = instance
                .get_export_index(&mut store, None, interface)
                .ok_or_else(|| wasmtime::format_err!("no export {interface}"))?;
            let func_idx = instance
                .get_export_index(&mut store, Some(&iface), "describe")
                .ok_or_else(|| wasmtime::format_err!("{interface} has no `describe` function"))?;
            let func = instance
                .get_func(&mut store, func_idx)
                .ok_or_else(|| wasmtime::format_err!("`describe` is not a function"))?;
            let mut results = [Val::Bool(false)];
            func.call_async(&mut store, &[], &mut results).await?;
            wasmtime::Result::Ok(results)
        };
        let [settings] = tokio::time::timeout(ctx.timeout, call)
            .await
            .map_err(|_| anyhow::anyhow!("`describe` did not return within {:?}", ctx.timeout))?
            .map_err(to_anyhow)?;
        declared_from_val(settings)
    }

    fn store(&self, ctx: &InvokeContext, deadline: Instant) -> Store<State> {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdio::LogStream::stdout(
            ctx.function.clone(),
            ctx.id.clone(),
        ))
        .stderr(stdio::LogStream::stderr(
            ctx.function.clone(),
            ctx.id.clone(),
        ))
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
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(ctx.memory).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            hooks: outbound::Hooks::new(ctx.outbound.clone(), ctx.function.clone(), ctx.id.clone()),
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
        let (function, id) = (ctx.function.clone(), ctx.id.clone());
        let outcome = tokio::spawn(async move {
            let _guard = guard;
            let call = async {
                let (req, out) = {
                    let mut http = store.data_mut().http();
                    let req = http.new_incoming_request(
                        Scheme::Http,
                        request.map(http_body_util::Full::new),
                    )?;
                    let out = http.new_response_outparam_from_callback(move |result| {
                        let mapped = result
                            .map(|resp| {
                                resp.map(|body| {
                                    body.map_err(|e| BodyError(e.to_string())).boxed_unsync()
                                })
                            })
                            .map_err(|code| format!("{code:?}"));
                        let _ = tx.send(mapped);
                    })?;
                    (req, out)
                };
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            let outcome = match tokio::time::timeout(timeout, call).await {
                Err(_elapsed) => Outcome::Timeout,
                Ok(Ok(())) => Outcome::Completed {
                    fuel_used: fuel.map(|f| f - store.get_fuel().unwrap_or(0)),
                },
                Ok(Err(e)) => classify(&e),
            };
            log_outcome(&function, &id, &outcome, started.elapsed());
            outcome
        });
        Running {
            response: rx,
            outcome,
        }
    }
}

fn classify(e: &wasmtime::Error) -> Outcome {
    if e.is::<DeadlineExceeded>()
        || matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::OutOfFuel)
        )
    {
        Outcome::Timeout
    } else {
        // One line: the chain, with the wasm backtrace folded in.
        let detail = format!("{e:?}");
        Outcome::Trap(
            detail
                .split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" | "),
        )
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
        Outcome::Trap(detail) => tracing::warn!(function, id, ms, "invocation trapped: {detail}"),
    }
}

/// Converts wasmtime's error into anyhow's, keeping the chain.
fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// One thread for the whole process advances the epoch; it ends when the engine is dropped.
fn spawn_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("fnhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch ticker thread");
}

/// The name of the component's `fnhost:function/config` export, whatever its version.
fn find_config_export(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Option<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.split('@').next() == Some("fnhost:function/config"))
        .map(str::to_string)
}

fn declared_from_val(val: Val) -> anyhow::Result<Declared> {
    let Val::Record(fields) = val else {
        anyhow::bail!("`describe` returned {val:?}, expected a record")
    };
    let mut d = Declared::default();
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("background", Val::Option(v)) => d.background = v.and_then(|b| as_bool(&b)),
            ("paths", Val::List(items)) => d.paths = items.iter().filter_map(as_string).collect(),
            ("methods", Val::List(items)) => {
                d.methods = items
                    .iter()
                    .filter_map(as_string)
                    .map(|m| m.to_ascii_uppercase())
                    .collect()
            }
            ("timeout-ms", Val::Option(v)) => {
                d.timeout = v.and_then(|v| {
                    if let Val::U64(ms) = *v {
                        Some(Duration::from_millis(ms))
                    } else {
                        None
                    }
                })
            }
            ("memory-mb", Val::Option(v)) => {
                d.memory = v.and_then(|v| {
                    if let Val::U32(mb) = *v {
                        Some(u64::from(mb) << 20)
                    } else {
                        None
                    }
                })
            }
            // Fields added by a newer SDK are ignored, so old hosts run new guests.
            _ => {}
        }
    }
    Ok(d)
}

fn as_bool(v: &Val) -> Option<bool> {
    if let Val::Bool(b) = v { Some(*b) } else { None }
}

fn as_string(v: &Val) -> Option<String> {
    if let Val::String(s) = v {
        Some(s.clone())
    } else {
        None
    }
}

/// POSTs a JSON document to `url` with wasmtime-wasi-http's client (HTTP and HTTPS), for
/// destination deliveries; returns the status. `timeout` bounds connect, first byte and the
/// whole exchange.
pub async fn post_json(url: &http::Uri, json: String, timeout: Duration) -> Result<u16, String> {
    let authority = url
        .authority()
        .ok_or_else(|| format!("{url} has no host"))?
        .to_string();
    let request = http::Request::post(url.clone())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("fnhost/", env!("CARGO_PKG_VERSION")),
        )
        .body(
            http_body_util::Full::new(Bytes::from(json))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| e.to_string())?;
    let options = wasmtime_wasi_http::RequestOptions {
        connect_timeout: Some(timeout),
        first_byte_timeout: Some(timeout),
        between_bytes_timeout: Some(timeout),
    };
    let exchange = async {
        let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let drain = async {
            let _ = response.into_body().collect().await;
        };
        let _ = tokio::join!(drain, io);
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
