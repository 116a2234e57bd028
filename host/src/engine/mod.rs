//! The only module that names wasmtime types. It owns the wasmtime `Engine` (pooling allocator,
//! epoch ticker, compiled-component cache) and loads components into pre-instantiated
//! [`Component`]s, reading their optional `config` export ([`describe`]).
//!
//! - [`call`]: one invocation in a fresh instance with its budgets ([`Engine::invoke`]);
//!   `service` is its WASI 0.3 (`wasi:http/service`) half.
//! - [`describe`]: the `config` export, read through typed bindings.
//! - `outbound`: the `send_request` hook checking the allow-list ([`egress`] is its pure policy).
//! - `stdio`: guest stdout/stderr into the host log.
//! - [`client`]: an HTTP client for fnhost's own outbound requests (destination deliveries).

pub mod call;
pub mod client;
pub mod describe;
pub mod egress;
mod idle;
mod outbound;
mod pinned;
mod service;
mod shared;
mod state;
mod stdio;
mod steps;
mod verdict;
mod warm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::PoolingAllocationConfig;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

pub use call::{CallKind, InvokeContext, Outcome, Running};
pub use describe::{Declared, DeclaredRateLimit};
pub use idle::MAX_IDLE_TOTAL as IDLE_SLOTS;
use state::State;
pub use warm::Warm;

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
    /// A PEM file of certificates trusted for guests' outbound HTTPS, besides the Mozilla
    /// roots.
    pub outbound_ca: Option<PathBuf>,
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
            outbound_ca: None,
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
    /// Trust for guests' outbound HTTPS.
    tls: std::sync::Arc<pinned::TlsClient>,
}

/// A compiled, linked, pre-instantiated component.
#[derive(Clone)]
pub struct Component {
    pre: Pre,
    /// The settings from its `config` export; `None` when it has none.
    pub declared: Option<Declared>,
}

/// A component pre-instantiated for the HTTP world it exports.
#[derive(Clone)]
enum Pre {
    /// `wasi:http/incoming-handler@0.2.x` (the `proxy` world).
    Proxy(ProxyPre<State>),
    /// `wasi:http/handler@0.3.x` (the `service` world).
    Service(ServicePre<State>),
}

/// Which WASI HTTP world a function speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// WASI 0.2: `wasi:http/proxy`, exporting `wasi:http/incoming-handler`.
    Proxy,
    /// WASI 0.3: `wasi:http/service`, exporting `wasi:http/handler`.
    Service,
}

impl World {
    /// How the table, the API, the dashboard and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Proxy => "wasi:http@0.2",
            World::Service => "wasi:http@0.3",
        }
    }
}

impl Component {
    /// The HTTP world the component exports.
    pub fn world(&self) -> World {
        match self.pre {
            Pre::Proxy(_) => World::Proxy,
            Pre::Service(_) => World::Service,
        }
    }

    fn instance_pre(&self) -> &wasmtime::component::InstancePre<State> {
        match &self.pre {
            Pre::Proxy(pre) => pre.instance_pre(),
            Pre::Service(pre) => pre.instance_pre(),
        }
    }
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
        Ok(Engine {
            linker: linker(&engine)?,
            engine,
            fuel: opts.fuel,
            pooling,
            epoch: opts.epoch,
            cache,
            tls: std::sync::Arc::new(pinned::TlsClient::new(opts.outbound_ca.as_deref())?),
        })
    }

    /// Compiled-component cache `(hits, misses)` so far; `None` when caching is off.
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.cache
            .as_ref()
            .map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// A connection for fnhost's own forwarding (`_redirects` proxy rules) to `host:port`:
    /// resolved here, TLS (the same trust as guests' HTTPS) when `https`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        https: bool,
        timeout: Duration,
    ) -> Result<Box<dyn pinned::Stream>, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        self.tls
            .connect(addr, https.then_some(bare), timeout)
            .await
            .map_err(|e| format!("cannot connect to {addr} ({host}): {e}"))
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
        let config_export = describe::find_config_export(&self.engine, &component);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("cannot link: {e:#}")))?;
        let pre = http_world(pre).map_err(invalid)?;
        let mut component = Component {
            pre,
            declared: None,
        };
        if let Some(name) = config_export {
            let declared = describe::describe(self, component.instance_pre(), &name)
                .await
                .map_err(|e| invalid(format!("its config export failed: {e:#}")))?;
            component.declared = Some(declared);
        }
        Ok(component)
    }
}

/// WASI and WASI HTTP, 0.2 and 0.3 side by side (as `wasmtime serve` links them): a component
/// imports the versions it was built against.
fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(to_anyhow)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(to_anyhow)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(to_anyhow)?;
    steps::add_to_linker(&mut linker).map_err(to_anyhow)?;
    Ok(linker)
}

/// The HTTP world a linked component exports: 0.3's `wasi:http/handler` first, then 0.2's
/// `wasi:http/incoming-handler` (the order `wasmtime serve` tries them in).
fn http_world(pre: wasmtime::component::InstancePre<State>) -> Result<Pre, String> {
    if let Ok(service) = ServicePre::new(pre.clone()) {
        return Ok(Pre::Service(service));
    }
    ProxyPre::new(pre).map(Pre::Proxy).map_err(|e| {
        format!(
            "exports neither wasi:http/handler@0.3.x (the wasi:http/service world) nor \
             wasi:http/incoming-handler@0.2.x (the wasi:http/proxy world): {e:#}"
        )
    })
}

/// Converts wasmtime's error into anyhow's, keeping the chain.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
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
