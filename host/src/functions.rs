//! The function table: discovers `DIR/NAME.wasm`, loads each through the engine, and resolves
//! every setting from its three sources — `[functions.NAME]` in fnhost.toml, then the
//! component's `config` export, then `[defaults]` and the built-in defaults (the `-background`
//! suffix being the last word on the mode).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Config, FunctionConfig, OutboundRule, defaults};
use crate::engine::{self, Declared, Engine};
use crate::router::{Pattern, Router};

/// How a function is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers the request itself.
    Sync,
    /// Acknowledged with `202`, run detached, retried.
    Background,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sync => "sync",
            Mode::Background => "background",
        })
    }
}

/// A loaded function with every setting resolved.
pub struct Function {
    /// `NAME` of `NAME.wasm`.
    pub name: String,
    /// The component file.
    pub file: PathBuf,
    /// The loaded component.
    pub component: engine::Component,
    /// Sync or background.
    pub mode: Mode,
    /// Route patterns it answers at.
    pub routes: Vec<String>,
    /// Allowed methods; empty = all.
    pub methods: Vec<String>,
    /// Budget of one invocation (or background attempt).
    pub timeout: Duration,
    /// Linear-memory cap in bytes.
    pub memory: u64,
    /// Largest request body in bytes.
    pub max_body: u64,
    /// Fuel cap, when metered.
    pub fuel: Option<u64>,
    /// Environment the guest sees.
    pub env: Arc<[(String, String)]>,
    /// Outbound allow-list.
    pub outbound: Arc<[OutboundRule]>,
    /// Delays before each retry of a failed background attempt.
    pub retry_delays: Vec<Duration>,
    /// Count a 5xx answer as a failed background attempt.
    pub retry_on_5xx: bool,
    /// Destination for successful background invocations.
    pub on_success: Option<http::Uri>,
    /// Destination for exhausted background invocations.
    pub on_failure: Option<http::Uri>,
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function {:?}", self.name)
    }
}

/// A `.wasm` that could not be served, and why.
#[derive(Debug)]
pub struct Rejected {
    /// The file.
    pub file: PathBuf,
    /// The reason, naming the file.
    pub reason: String,
}

/// Every function found, the routes to them, and the files that failed.
pub struct FunctionTable {
    /// Loaded functions, by name.
    pub functions: Vec<Arc<Function>>,
    /// Routes to them.
    pub router: Router<Arc<Function>>,
    /// Files that failed to load or route.
    pub rejected: Vec<Rejected>,
}

/// Settings the engine must know before any component is loaded.
pub fn engine_needs(config: &Config) -> (u64, bool) {
    let tables = std::iter::once(&config.defaults).chain(config.functions.values());
    let max_memory = tables
        .clone()
        .filter_map(|f| f.memory.map(|m| m.0))
        .fold(defaults::MEMORY, u64::max);
    let fuel = tables.clone().any(|f| f.fuel.is_some());
    (max_memory, fuel)
}

/// The `.wasm` files in `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                found.push((name.to_string(), path.clone()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Loads every function in `dir` (concurrently) and builds the routing table. A file that
/// fails is reported in `rejected`; the others are still served.
pub async fn load(
    engine: &Engine,
    dir: &Path,
    config: &Config,
    max_memory: u64,
) -> std::io::Result<FunctionTable> {
    let files = discover(dir)?;
    let loads = files
        .iter()
        .map(|(name, path)| async move { (name, path, engine.load(path).await) });
    let results = futures::future::join_all(loads).await;

    let mut table = FunctionTable {
        functions: Vec::new(),
        router: Router::default(),
        rejected: Vec::new(),
    };
    for (name, path, loaded) in results {
        let component = match loaded {
            Ok(c) => c,
            Err(e) => {
                table.rejected.push(Rejected {
                    file: path.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let file_cfg = config.functions.get(name.as_str());
        let function = match resolve(
            name,
            path,
            component,
            file_cfg,
            &config.defaults,
            max_memory,
        ) {
            Ok(f) => Arc::new(f),
            Err(reason) => {
                table.rejected.push(Rejected {
                    file: path.clone(),
                    reason: format!("{}: {reason}", path.display()),
                });
                continue;
            }
        };
        if let Err(e) = add_routes(&mut table.router, &function) {
            table.rejected.push(Rejected {
                file: path.clone(),
                reason: format!("{}: {e}", path.display()),
            });
            continue;
        }
        table.functions.push(function);
    }
    for name in config.functions.keys() {
        if !files.iter().any(|(n, _)| n == name) {
            tracing::warn!(
                "fnhost.toml configures [functions.{name}] but {}/{name}.wasm does not exist",
                dir.display()
            );
        }
    }
    Ok(table)
}

fn add_routes(
    router: &mut Router<Arc<Function>>,
    f: &Arc<Function>,
) -> Result<(), crate::router::RouteError> {
    for route in &f.routes {
        router.add(Pattern::parse(route)?, f.methods.clone(), f.clone())?;
    }
    Ok(())
}

/// Merges the three sources of settings for one function.
fn resolve(
    name: &str,
    file: &Path,
    component: engine::Component,
    table: Option<&FunctionConfig>,
    site: &FunctionConfig,
    max_memory: u64,
) -> Result<Function, String> {
    let empty = FunctionConfig::default();
    let table = table.unwrap_or(&empty);
    let declared = component.declared.clone().unwrap_or_default();
    let Declared {
        background,
        paths,
        methods,
        timeout,
        memory,
    } = declared;

    let background = table
        .background
        .or(background)
        .or(site.background)
        .unwrap_or_else(|| name.ends_with("-background"));
    let mode = if background {
        Mode::Background
    } else {
        Mode::Sync
    };

    let routes: Vec<String> = if !table.path.0.is_empty() {
        table.path.0.iter().map(|p| p.0.clone()).collect()
    } else if !paths.is_empty() {
        for p in &paths {
            p.parse::<config::RoutePath>()
                .map_err(|e| format!("config export: {e}"))?;
        }
        paths
    } else {
        vec![format!("/.netlify/functions/{name}")]
    };
    let methods: Vec<String> = if !table.method.0.is_empty() {
        table.method.0.iter().map(|m| m.0.clone()).collect()
    } else {
        for m in &methods {
            m.parse::<config::Method>()
                .map_err(|e| format!("config export: {e}"))?;
        }
        methods
    };

    let (site_timeout, builtin_timeout, site_body, builtin_body) = match mode {
        Mode::Sync => (
            site.timeout,
            defaults::SYNC_TIMEOUT,
            site.max_body,
            defaults::SYNC_MAX_BODY,
        ),
        Mode::Background => (
            site.background_timeout,
            defaults::BACKGROUND_TIMEOUT,
            site.background_max_body,
            defaults::BACKGROUND_MAX_BODY,
        ),
    };
    let timeout = table
        .timeout
        .map(|t| t.0)
        .or(timeout)
        .or(site_timeout.map(|t| t.0))
        .unwrap_or(builtin_timeout);
    let mut memory = table
        .memory
        .map(|m| m.0)
        .or(memory)
        .or(site.memory.map(|m| m.0))
        .unwrap_or(defaults::MEMORY);
    if table.memory.is_none() && memory > max_memory {
        tracing::warn!(
            "{name}: declared memory {memory} bytes exceeds the engine's cap; using {max_memory}"
        );
        memory = max_memory;
    }
    let max_body = table.max_body.or(site_body).map_or(builtin_body, |b| b.0);

    let mut env = site.env.clone();
    env.extend(table.env.clone());
    let outbound = if table.allowed_outbound_hosts.is_empty() {
        site.allowed_outbound_hosts.clone()
    } else {
        table.allowed_outbound_hosts.clone()
    };
    let retry_delays = table
        .retry_delays
        .as_ref()
        .or(site.retry_delays.as_ref())
        .map_or_else(
            || defaults::RETRY_DELAYS.to_vec(),
            |v| v.iter().map(|d| d.0).collect(),
        );

    Ok(Function {
        name: name.to_string(),
        file: file.to_owned(),
        component,
        mode,
        routes,
        methods,
        timeout,
        memory,
        max_body,
        fuel: table.fuel.or(site.fuel),
        env: env.into_iter().collect::<Vec<_>>().into(),
        outbound: outbound.into(),
        retry_delays,
        retry_on_5xx: table.retry_on_5xx.or(site.retry_on_5xx).unwrap_or(false),
        on_success: table
            .on_success
            .clone()
            .or_else(|| site.on_success.clone())
            .map(|u| u.0),
        on_failure: table
            .on_failure
            .clone()
            .or_else(|| site.on_failure.clone())
            .map(|u| u.0),
    })
}

/// The startup table: name, mode, routes, methods.
pub fn print_table(table: &FunctionTable) -> String {
    let mut out = String::new();
    let width = table
        .functions
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(4)
        .max(8);
    out.push_str(&format!("{:<width$}  {:<10}  ROUTES\n", "FUNCTION", "MODE"));
    for f in &table.functions {
        let methods = if f.methods.is_empty() {
            String::new()
        } else {
            format!(" [{}]", f.methods.join(","))
        };
        out.push_str(&format!(
            "{:<width$}  {:<10}  {}{methods}\n",
            f.name,
            f.mode.to_string(),
            f.routes.join(", ")
        ));
    }
    for r in &table.rejected {
        out.push_str(&format!("FAILED  {}\n", r.reason));
    }
    out
}
