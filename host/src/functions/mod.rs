//! The function table: discovers `DIR/NAME.wasm`, loads each through the engine, resolves its
//! settings ([`settings`]: fnhost.toml over the component's `config` export over the defaults)
//! and routes to it ([`router`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, defaults};
use crate::engine::{self, Engine};

mod files;
pub mod rate;
pub mod router;
mod settings;

use router::{DuplicateRoute, Router};
pub use settings::{Access, Destinations, Limits, RetryPolicy, Routes, Sandbox, Settings};

/// How a function is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers the request itself.
    Sync,
    /// Acknowledged with `202`, run detached, retried.
    Background,
}

impl Mode {
    /// `sync` or `background`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Background => "background",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// Mode, routes, limits, sandbox, retries and destinations, resolved.
    pub settings: Settings,
    /// The file as it was loaded (a reload reuses the component while this is unchanged).
    pub fingerprint: Option<Fingerprint>,
    /// The deploy it belongs to; `None` when served from a directory. (Shared: every
    /// invocation of a deployed function passes it on.)
    pub deploy: Option<Arc<str>>,
    /// Its instances kept between requests, when it reuses them (`reuse` > 1).
    pub warm: Option<engine::Warm>,
    /// Its rate limit's counters on this node, when it has one (a reload starts them afresh).
    pub rate: Option<rate::RateLimiter>,
}

/// A component file's size and modification time: what tells a reload it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    /// The file's fingerprint now; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Fingerprint> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// The function table in force, replaced as a whole by a reload (`--watch`): a request or an
/// attempt takes the current table once and keeps its functions until it is done, so it
/// finishes on the version it started with.
pub struct LiveTable(arc_swap::ArcSwap<FunctionTable>);

impl LiveTable {
    /// Starts with `table`.
    pub fn new(table: FunctionTable) -> LiveTable {
        LiveTable(arc_swap::ArcSwap::from_pointee(table))
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<FunctionTable> {
        self.0.load_full()
    }

    /// Puts `table` in force for every later request and attempt.
    pub fn replace(&self, table: Arc<FunctionTable>) {
        self.0.store(table);
    }
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
    /// The deploy these functions are; `None` when served from a directory.
    pub deploy: Option<String>,
}

impl FunctionTable {
    /// No functions (a node waiting for its first deploy).
    pub fn empty() -> FunctionTable {
        FunctionTable {
            functions: Vec::new(),
            router: Router::default(),
            rejected: Vec::new(),
            deploy: None,
        }
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Function>> {
        self.functions.iter().find(|f| f.name == name)
    }
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
        if path.extension().is_some_and(|e| e == "wasm")
            && path.is_file()
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
        {
            found.push((name.to_string(), path.clone()));
        }
    }
    found.sort();
    Ok(found)
}

/// The component of `name` at `path`: the one `previous` loaded when the file is unchanged
/// since, else compiled (or read from the cache); with the file's fingerprint.
async fn load_component<'a>(
    engine: &Engine,
    name: &'a String,
    path: &'a PathBuf,
    previous: Option<&FunctionTable>,
) -> (
    &'a String,
    &'a PathBuf,
    Option<Fingerprint>,
    Result<engine::Component, engine::LoadError>,
) {
    let fingerprint = Fingerprint::of(path);
    let unchanged = previous
        .and_then(|t| t.get(name))
        .filter(|f| f.file == *path && fingerprint.is_some() && f.fingerprint == fingerprint);
    let loaded = match unchanged {
        Some(f) => Ok(f.component.clone()),
        None => engine.load(path).await,
    };
    (name, path, fingerprint, loaded)
}

/// Loads every function in `dir` (concurrently) and builds the routing table. A file that
/// fails is reported in `rejected`; the others are still served. A component whose file is
/// unchanged since `previous` loaded it is reused (its settings are resolved afresh).
pub async fn load(
    engine: &Engine,
    dir: &Path,
    config: &Config,
    max_memory: u64,
    previous: Option<&FunctionTable>,
) -> std::io::Result<FunctionTable> {
    let files = discover(dir)?;
    for name in config.functions.keys() {
        if !files.iter().any(|(n, _)| n == name) {
            tracing::warn!(
                "fnhost.toml configures [functions.{name}] but {}/{name}.wasm does not exist",
                dir.display()
            );
        }
    }
    let sources = Sources {
        files: &files,
        deploy: None,
    };
    Ok(load_files(engine, sources, config, max_memory, previous).await)
}

/// The components of a table: `(NAME, file)` pairs, and the deploy they are (if any).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// `NAME` and its component file.
    pub files: &'a [(String, PathBuf)],
    /// The deploy they make up.
    pub deploy: Option<&'a str>,
}

/// [`load`] from a list of files (a directory's, or a deploy's components).
pub async fn load_files(
    engine: &Engine,
    sources: Sources<'_>,
    config: &Config,
    max_memory: u64,
    previous: Option<&FunctionTable>,
) -> FunctionTable {
    let loads =
        (sources.files.iter()).map(|(name, path)| load_component(engine, name, path, previous));
    let results = futures::future::join_all(loads).await;
    let deploy: Option<Arc<str>> = sources.deploy.map(Arc::from);
    let mut table = FunctionTable {
        functions: Vec::new(),
        router: Router::default(),
        rejected: Vec::new(),
        deploy: sources.deploy.map(str::to_string),
    };
    for (name, path, fingerprint, loaded) in results {
        let function = loaded.map_err(|e| e.to_string()).and_then(|component| {
            let declared = component.declared.clone().unwrap_or_default();
            let table_cfg = config.functions.get(name.as_str());
            let world = component.world();
            settings::resolve(
                name,
                world,
                &declared,
                table_cfg,
                &config.defaults,
                max_memory,
            )
            .and_then(files::checked)
            .map(|settings| {
                let (reuse, at_once) =
                    (settings.limits.reuse, settings.limits.instance_concurrency);
                let rate = settings.rate_limit.as_ref().map(rate::RateLimiter::new);
                Arc::new(Function {
                    rate,
                    name: name.clone(),
                    file: path.clone(),
                    component,
                    settings,
                    fingerprint,
                    deploy: deploy.clone(),
                    warm: (reuse > 1).then(|| engine::Warm::new(reuse, at_once)),
                })
            })
            .map_err(|reason| format!("{}: {reason}", path.display()))
        });
        let added = function.and_then(|f| {
            add_routes(&mut table.router, &f).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(f)
        });
        match added {
            Ok(f) => table.functions.push(f),
            Err(reason) => table.rejected.push(Rejected {
                file: path.clone(),
                reason,
            }),
        }
    }
    table
}

fn add_routes(router: &mut Router<Arc<Function>>, f: &Arc<Function>) -> Result<(), DuplicateRoute> {
    for pattern in &f.settings.routes.patterns {
        router.add_excluding(
            pattern.clone(),
            f.settings.routes.methods.clone(),
            f.settings.routes.excluded.clone().into(),
            f.clone(),
        )?;
    }
    Ok(())
}

/// The startup table: name, mode, WASI HTTP world, routes, methods.
pub fn print_table(table: &FunctionTable) -> String {
    let mut out = String::new();
    let width = table
        .functions
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(4)
        .max(8);
    out.push_str(&format!(
        "{:<width$}  {:<10}  {:<13}  ROUTES\n",
        "FUNCTION", "MODE", "WORLD"
    ));
    for f in &table.functions {
        let methods = if f.settings.routes.methods.is_empty() {
            String::new()
        } else {
            format!(" [{}]", f.settings.routes.methods.join(","))
        };
        let patterns: Vec<&str> = f
            .settings
            .routes
            .patterns
            .iter()
            .map(|p| p.as_str())
            .collect();
        let schedule = match &f.settings.schedule {
            Some(s) => format!(
                "  schedule {}{}",
                s.as_str(),
                s.next_after(chrono::Utc::now())
                    .map(|t| format!(
                        " (next {})",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        out.push_str(&format!(
            "{:<width$}  {:<10}  {:<13}  {}{methods}{schedule}\n",
            f.name,
            f.settings.mode.to_string(),
            f.component.world().as_str(),
            patterns.join(", ")
        ));
    }
    for r in &table.rejected {
        out.push_str(&format!("FAILED  {}\n", r.reason));
    }
    out
}
