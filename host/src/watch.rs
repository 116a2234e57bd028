//! `--watch`: file changes (notify, debounced) → rebuild what changed (`fnhost dev`) → reload
//! the functions, routes, settings, CORS and rules, swapped in whole. A request or background
//! attempt under way keeps the version it started with; the next one gets the new one. What
//! fails to build or load leaves the previous version serving.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::builder::{self, Project};
use crate::config::Config;
use crate::config::cors::Policies;
use crate::config::redirects::Rules;
use crate::engine::Engine;
use crate::functions::{self, FunctionTable};
use crate::http::App;

/// Quiet time after a change before acting on it.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What to watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The functions directory (`NAME.wasm`): reloaded when its files change.
    pub functions: PathBuf,
    /// The site file, if any: settings, routes, CORS and rules reloaded when it changes.
    pub config_file: Option<PathBuf>,
    /// `fnhost dev`: the source tree whose projects are rebuilt into `functions`.
    pub sources: Option<PathBuf>,
}

/// Replaces what the running host serves.
pub struct Reloader {
    /// The engine loading components (its settings are fixed at startup).
    pub engine: Arc<Engine>,
    /// The app whose functions and edge are replaced.
    pub app: Arc<App>,
    /// The settings in force.
    pub config: Config,
    /// The engine's memory cap (from the startup settings).
    pub max_memory: u64,
}

impl Reloader {
    /// Loads the functions directory and the site file again and puts the result in force.
    /// A site file that does not parse, or a function that served before and now fails to
    /// load, keeps everything as it was (and says why).
    pub async fn reload(&mut self, watch: &Watch) {
        let started = Instant::now();
        let Some(config) = read_site_file(watch) else {
            return;
        };
        for key in restart_keys(&self.config, &config) {
            tracing::warn!("{key} changed: restart fnhost to apply it (the rest is reloaded)");
        }
        let old = self.app.table.current();
        let loaded = functions::load(
            &self.engine,
            &watch.functions,
            &config,
            self.max_memory,
            Some(&old),
        )
        .await;
        let table = match loaded {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(
                    "cannot read the functions directory {}: {e}",
                    watch.functions.display()
                );
                return;
            }
        };
        if !still_serving(&old, &table) {
            return;
        }
        let edge = Policies::from_config(&config)
            .map_err(anyhow::Error::from)
            .and_then(|cors| {
                let rules = config.redirects.iter().map(|r| r.0.clone());
                Ok((cors, Rules::load(&watch.functions, rules)?))
            });
        let (cors, rules) = match edge {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("{e:#}; still serving the previous settings");
                return;
            }
        };
        let changes = changes(&old, &table);
        let table = Arc::new(table);
        self.app.serve(table.clone(), cors, rules);
        self.config = config;
        let ms = started.elapsed().as_millis();
        for (name, change) in &changes {
            tracing::info!("{change} {name} in {ms} ms");
        }
        if changes.is_empty() {
            tracing::info!("reloaded settings and routes in {ms} ms");
        }
        print!("{}", functions::print_table(&table));
    }
}

/// The site file as it is now (none: the defaults); `None` (logged) when it does not parse.
fn read_site_file(watch: &Watch) -> Option<Config> {
    match &watch.config_file {
        Some(path) if path.is_file() => Config::load(path)
            .map_err(|e| tracing::error!("{e}; still serving the previous settings"))
            .ok(),
        _ => Some(Config::default()),
    }
}

/// Whether `new` may replace `old`: not when a function served before now fails to load
/// (each failure logged; a new function that fails is only reported).
fn still_serving(old: &FunctionTable, new: &FunctionTable) -> bool {
    let mut keep_old = false;
    for r in &new.rejected {
        let name = r.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if old.get(name).is_some() {
            keep_old = true;
            tracing::error!(
                "cannot reload {name}: {}; still serving its previous version",
                r.reason
            );
        } else {
            tracing::error!("cannot serve {}: {}", r.file.display(), r.reason);
        }
    }
    !keep_old
}

/// What a reload did to each function: `reloaded`, `added` or `removed`.
fn changes(old: &FunctionTable, new: &FunctionTable) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for f in &new.functions {
        match old.get(&f.name) {
            None => out.push((f.name.clone(), "added")),
            Some(o) if o.fingerprint != f.fingerprint => out.push((f.name.clone(), "reloaded")),
            Some(_) => {}
        }
    }
    for f in &old.functions {
        if new.get(&f.name).is_none() {
            out.push((f.name.clone(), "removed"));
        }
    }
    out
}

/// Keys a reload cannot apply: the `[server]` table (listener, queue, runtimes, limits) and
/// what sizes the engine (memory cap, fuel metering).
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if format!("{:?}", old.server) != format!("{:?}", new.server) {
        keys.push("[server]");
    }
    if functions::engine_needs(old) != functions::engine_needs(new) {
        keys.push("the largest `memory` or the use of `fuel`");
    }
    let schedules = |c: &Config| {
        std::iter::once(&c.defaults)
            .chain(c.functions.values())
            .map(|f| format!("{:?}/{:?}", f.schedule, f.concurrency))
            .collect::<Vec<_>>()
    };
    if schedules(old) != schedules(new) {
        keys.push("a `schedule` or `concurrency`");
    }
    keys
}

/// Watches until `shutdown`: each debounced batch of changes rebuilds the projects it touched
/// (with `sources`) and reloads.
pub async fn run(mut reloader: Reloader, watch: Watch, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    // Kept alive for as long as the loop runs: dropping it stops the watching.
    let Some(_debouncer) = start_watching(&watch, tx) else {
        return;
    };
    let mut seen = Seen {
        sources: watch.sources.as_ref().map(|s| absolute(s)),
        config_file: watch.config_file.as_ref().map(|f| absolute(f)),
        functions_dir: absolute(&watch.functions),
        projects: match &watch.sources {
            Some(dir) => builder::find_projects(dir).unwrap_or_default(),
            None => Vec::new(),
        },
    };
    loop {
        let changed = tokio::select! {
            () = shutdown.cancelled() => return,
            batch = rx.recv() => match batch {
                Some(b) => b,
                None => return,
            },
        };
        let mut changed: BTreeSet<PathBuf> = changed.into_iter().collect();
        // Gather until the tree is quiet for one more debounce period: a save can reach the
        // debouncer as two batches (truncated, then written), and reloading between them would
        // read an empty site file and put the defaults in force for a moment.
        while let Ok(Some(more)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            changed.extend(more);
        }
        if seen.handle(&watch, &changed).await {
            reloader.reload(&watch).await;
        }
    }
}

type Debouncer = notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>;

/// Watches the sources (or the functions directory) and the site file's directory, sending
/// each debounced batch of changed paths to `tx`; `None` (logged) when it cannot.
fn start_watching(watch: &Watch, tx: mpsc::UnboundedSender<Vec<PathBuf>>) -> Option<Debouncer> {
    let debouncer = notify_debouncer_mini::new_debouncer(
        DEBOUNCE,
        move |events: notify_debouncer_mini::DebounceEventResult| match events {
            Ok(events) => {
                let _ = tx.send(events.into_iter().map(|e| e.path).collect());
            }
            Err(e) => tracing::warn!("file watching: {e}"),
        },
    );
    let mut debouncer = debouncer
        .map_err(|e| tracing::error!("cannot watch for changes: {e}"))
        .ok()?;
    let mut targets: Vec<(PathBuf, RecursiveMode)> = vec![match &watch.sources {
        Some(sources) => (sources.clone(), RecursiveMode::Recursive),
        None => (watch.functions.clone(), RecursiveMode::NonRecursive),
    }];
    if let Some(file) = &watch.config_file {
        // The directory, not the file: editors replace files by renaming over them.
        let dir = file.parent().filter(|p| !p.as_os_str().is_empty());
        targets.push((
            dir.unwrap_or(Path::new(".")).to_owned(),
            RecursiveMode::NonRecursive,
        ));
    }
    for (path, mode) in &targets {
        if let Err(e) = debouncer.watcher().watch(path, *mode) {
            tracing::error!("cannot watch {}: {e}", path.display());
            return None;
        }
    }
    let names: Vec<String> = targets
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    tracing::info!("watching {} for changes", names.join(", "));
    Some(debouncer)
}

/// What the watch loop knows of the tree: where things are, and the projects found so far.
struct Seen {
    sources: Option<PathBuf>,
    config_file: Option<PathBuf>,
    functions_dir: PathBuf,
    projects: Vec<Project>,
}

impl Seen {
    /// Rebuilds what a batch of `changed` paths touched; whether a reload is due (the site
    /// file, `_redirects` or a component changed).
    async fn handle(&mut self, watch: &Watch, changed: &BTreeSet<PathBuf>) -> bool {
        let in_functions = |p: &PathBuf| p.parent() == Some(self.functions_dir.as_path());
        let settings = changed.iter().any(|p| {
            Some(p) == self.config_file.as_ref()
                || (in_functions(p) && p.file_name().is_some_and(|n| n == "_redirects"))
        });
        let mut components = self.sources.is_none() && changed.iter().any(in_functions);
        if let (Some(root), Some(dir)) = (&self.sources, &watch.sources) {
            let config_file = self.config_file.as_ref();
            let edited: Vec<&PathBuf> = changed
                .iter()
                .filter(|p| {
                    (p.strip_prefix(root))
                        .is_ok_and(|rel| builder::is_source(rel) && Some(*p) != config_file)
                })
                .collect();
            if !edited.is_empty() {
                components |= rebuild(dir, &watch.functions, &mut self.projects, &edited).await;
            }
        }
        settings || components
    }
}

/// Rebuilds the projects `edited` touched (and projects that appeared), removes the components
/// of projects that disappeared. `true` when the functions directory changed.
async fn rebuild(
    sources: &Path,
    out: &Path,
    projects: &mut Vec<Project>,
    edited: &[&PathBuf],
) -> bool {
    let found = match builder::find_projects(sources) {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(
                "cannot look for functions under {}: {e:#}",
                sources.display()
            );
            return false;
        }
    };
    let to_build = touched(&found, projects, edited);
    let mut changed = false;
    for gone in projects
        .iter()
        .filter(|p| !found.iter().any(|f| f.name == p.name))
    {
        let file = out.join(format!("{}.wasm", gone.name));
        if std::fs::remove_file(&file).is_ok() {
            tracing::info!(
                "{} is gone from {}: removing it",
                gone.name,
                absolute(sources).display()
            );
            changed = true;
        }
    }
    *projects = found;
    for project in to_build {
        let started = Instant::now();
        let (out, name) = (out.to_owned(), project.name.clone());
        let built =
            tokio::task::spawn_blocking(move || builder::build_project(&project, &out, None)).await;
        match built {
            Ok(Ok(_)) => {
                tracing::info!("rebuilt {name} in {} ms", started.elapsed().as_millis());
                changed = true;
            }
            Ok(Err(_)) => tracing::error!(
                "{name} did not build (the error is above); still serving its previous version"
            ),
            Err(e) => tracing::error!("building {name} panicked: {e}"),
        }
    }
    changed
}

/// The projects of `found` to build: new ones, and those an `edited` file belongs to (the
/// deepest project containing the file: a crate nested in another is its own).
fn touched(found: &[Project], known: &[Project], edited: &[&PathBuf]) -> Vec<Project> {
    let dirs: Vec<PathBuf> = found.iter().map(|p| absolute(&p.dir)).collect();
    let owns = |dir: &PathBuf, path: &PathBuf| {
        path.starts_with(dir)
            && !dirs
                .iter()
                .any(|o| o != dir && o.starts_with(dir) && path.starts_with(o))
    };
    found
        .iter()
        .zip(&dirs)
        .filter(|(project, dir)| {
            !known.iter().any(|p| p.name == project.name)
                || edited.iter().any(|path| owns(dir, path))
        })
        .map(|(project, _)| project.clone())
        .collect()
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}
