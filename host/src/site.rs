//! The composition root: builds the engine, loads the functions, opens the queue, binds the
//! listener, starts the HTTP threads, the background worker and the deliveries, and drains
//! them on shutdown. Takes [`Options`] already validated by the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::background::{Worker, WorkerOptions};
use crate::config::cors::Policies;
use crate::config::redirects::Rules;
use crate::config::{Config, defaults};
use crate::deploys::{DeployLimits, Deploys};
use crate::engine::{Engine, EngineOptions};
use crate::functions;
use crate::http::App;
use crate::queue::{Backend, Queue, QueueSettings};

/// Validated `serve` settings.
pub struct Options {
    /// Directory holding `NAME.wasm`.
    pub dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The site file (defaults when there is none).
    pub config: Config,
    /// Compiled-component cache; `None` = off.
    pub cache_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    pub queue_url: String,
    /// Extra CA certificates (PEM) for guests' outbound HTTPS.
    pub outbound_ca: Option<PathBuf>,
    /// Every retry delay is multiplied by this (`fnhost dev --retry-scale`; 1 otherwise).
    pub retry_scale: f64,
    /// `--watch`: what to watch, to rebuild and reload on changes.
    pub watch: Option<crate::watch::Watch>,
    /// The admin token was made up for this run (`fnhost dev` on loopback without one): the
    /// dashboard's address is printed with it.
    pub dev_token: bool,
    /// `--deployed`: serve the queue's published deploy (and follow every publish), not `dir`.
    pub deployed: bool,
    /// This node's copies of deployed components (`DATA_DIR/deploys`).
    pub blob_dir: PathBuf,
}

impl Options {
    /// Synchronous and background invocations allowed at once.
    fn caps(&self) -> (usize, usize) {
        let server = &self.config.server;
        (
            server.max_concurrency.unwrap_or(defaults::MAX_CONCURRENCY),
            server
                .background_concurrency
                .unwrap_or(defaults::BACKGROUND_CONCURRENCY),
        )
    }
}

/// Loads and serves until Ctrl-C or SIGTERM; with `list_only`, prints the function table and
/// returns (failure when a function could not be loaded).
pub fn serve(opts: Options, list_only: bool) -> anyhow::Result<ExitCode> {
    // The control runtime: loading, the queue writer, the background worker, deliveries and
    // signals. HTTP requests are served on their own threads (see `spawn_http`).
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if list_only && opts.deployed {
        anyhow::bail!(
            "`fnhost list` lists a directory; `fnhost deploys show ID` lists a deploy's functions"
        );
    }
    if list_only {
        let (_, table) = control.block_on(load(&opts))?;
        return Ok(if table.rejected.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    // One process owns an embedded queue: refuse to touch it while another holds it.
    let _owner = match embedded_queue_file(&opts.queue_url) {
        Some(db) => Some(lock_embedded_queue(&db)?),
        None => None,
    };
    // Bound before anything starts, so a port in use changes nothing.
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    // Background attempts run here, a thread per core (claims and outcomes stay on the
    // control runtime, which owns the queue's connections).
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads(&opts.config.server))
        .thread_name("fnhost-bg")
        .enable_all()
        .build()?;
    crate::metrics::install();
    let traces = crate::telemetry::init(&opts.config.telemetry, control.handle())?;
    let site = control.block_on(start(&opts, background.handle().clone()))?;
    let http = spawn_http(
        listener.try_clone()?,
        site.app.clone(),
        site.shutdown.clone(),
        &opts.config.server,
    )?;
    if let Some(to) = traces {
        println!("traces: exporting to {to}");
    }
    announce(&opts, listener.local_addr()?)?;
    drop(listener);
    control.block_on(drain(site, http));
    // Every attempt has ended or been handed back by now.
    background.shutdown_timeout(Duration::from_secs(1));
    control.block_on(crate::telemetry::flush(Duration::from_secs(5)));
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The startup lines after the function table: retry scaling, the dashboard, and the bound
/// address (tests and scripts read it from `listening on`).
fn announce(opts: &Options, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    if opts.retry_scale != 1.0 {
        println!(
            "retry delays scaled by {} (--retry-scale): a 1m delay waits {:?}",
            opts.retry_scale,
            Duration::from_secs(60).mul_f64(opts.retry_scale)
        );
    }
    match &opts.config.server.admin_token {
        Some(token) if opts.dev_token => println!(
            "dashboard: http://{addr}/.fnhost/ui/#token={token} (a token made up for this run; \
             set server.admin_token to choose one)"
        ),
        Some(_) => println!("dashboard: http://{addr}/.fnhost/ui/ (sign in with the admin token)"),
        None => {
            println!("no dashboard: set server.admin_token in fnhost.toml to turn on /.fnhost/ui/")
        }
    }
    println!("listening on http://{addr}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM (or a shutdown from inside), then drains: the HTTP threads
/// finish their requests while the queue writer, on this runtime, keeps committing (a
/// background POST in flight still gets its whole answer); the worker gives running attempts
/// their grace; the delivery loop finishes the POST under way (10 s at most) and hands back
/// what it took and has not sent.
async fn drain(site: Site, http: Vec<std::thread::JoinHandle<()>>) {
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutdown requested"),
        () = site.shutdown.cancelled() => {},
    }
    site.shutdown.cancel();
    let http = tokio::task::spawn_blocking(move || {
        for t in http {
            let _ = t.join();
        }
    });
    let _ = tokio::join!(site.worker, http);
    let mut deliveries = site.deliveries;
    if tokio::time::timeout(Duration::from_secs(12), &mut deliveries)
        .await
        .is_err()
    {
        deliveries.abort();
    }
}

/// The database file of an embedded (`sqlite://PATH`) queue URL.
fn embedded_queue_file(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    (!path.is_empty() && !path.starts_with(':')).then(|| PathBuf::from(path))
}

/// Takes the exclusive lock `QUEUE.lock` beside the queue file (released when the process
/// ends, however it ends) and writes this process's id into it. A second fnhost on the same
/// data dir stops here, naming the holder, before it touches anything.
fn lock_embedded_queue(db: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = db.with_extension("lock");
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("pid {pid}"),
            };
            anyhow::bail!(
                "the data dir {} is in use by another fnhost ({holder}): one process owns an \
                 embedded queue; stop that one first, or give this one its own --data-dir \
                 (several hosts share work through PostgreSQL)",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// What `start` brings up.
struct Site {
    app: Arc<App>,
    worker: tokio::task::JoinHandle<()>,
    deliveries: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

/// Builds the engine from the node's settings.
fn engine(opts: &Options) -> anyhow::Result<(Arc<Engine>, EngineOptions)> {
    let (sync_cap, bg_cap) = opts.caps();
    let (max_memory, fuel) = functions::engine_needs(&opts.config);
    // + the instances kept idle for reuse (`reuse`), bounded process-wide.
    let slots =
        u32::try_from(sync_cap + bg_cap + 4 + crate::engine::IDLE_SLOTS).unwrap_or(u32::MAX);
    let mut engine_options = EngineOptions::new(slots, max_memory, fuel, opts.cache_dir.clone());
    engine_options.outbound_ca = opts.outbound_ca.clone();
    let engine = Arc::new(Engine::new(&engine_options)?);
    if engine_options.pooling && !engine.pooling() {
        // Said on stdout beside the table, not only in the log: every instance is now slower.
        println!(
            "warning: the pooling allocator cannot reserve {slots} instances of up to {} MB \
             each; instances are allocated on demand (slower). Lower the largest `memory` or \
             server.max_concurrency / background_concurrency to get it back.",
            max_memory >> 20
        );
    }
    Ok((engine, engine_options))
}

/// Builds the engine and loads the functions of the directory, printing the table.
async fn load(opts: &Options) -> anyhow::Result<(Arc<Engine>, functions::FunctionTable)> {
    let (engine, engine_options) = engine(opts)?;
    let started = std::time::Instant::now();
    let max_memory = engine_options.max_memory;
    let table = functions::load(&engine, &opts.dir, &opts.config, max_memory, None)
        .await
        .with_context(|| format!("cannot read the functions directory {}", opts.dir.display()))?;
    print!("{}", functions::print_table(&table));
    for r in &table.rejected {
        tracing::error!("cannot serve {}: {}", r.file.display(), r.reason);
    }
    let cache = match engine.cache_stats() {
        Some((hits, misses)) => format!("{hits} from cache, {misses} compiled"),
        None => "cache off".to_string(),
    };
    tracing::info!(
        "loaded {} function(s) from {} in {:.0} ms ({cache}; pooling allocator: {} (reset: {}), fuel metering: {})",
        table.functions.len(),
        opts.dir.display(),
        started.elapsed().as_secs_f64() * 1e3,
        engine.pooling(),
        engine.reset_mode(),
        engine_options.fuel,
    );
    Ok((engine, table))
}

/// The engine and the first table: the directory's, or with `--deployed` none yet (the
/// follower loads the published deploy before the listener is announced).
async fn first_table(opts: &Options) -> anyhow::Result<(Arc<Engine>, functions::FunctionTable)> {
    if !opts.deployed {
        return load(opts).await;
    }
    let (engine, _) = engine(opts)?;
    Ok((engine, functions::FunctionTable::empty()))
}

/// Loads the functions, opens the queue, starts the background work and builds the app.
async fn start(opts: &Options, background: tokio::runtime::Handle) -> anyhow::Result<Site> {
    let (engine, table) = first_table(opts).await?;
    let queue = open_queue(opts).await?;
    let deploys = open_deploys(opts, &engine, &queue)?;
    let table = Arc::new(functions::LiveTable::new(table));
    let shutdown = CancellationToken::new();
    let worker = Arc::new(Worker::new(
        queue.clone(),
        engine.clone(),
        table.clone(),
        deploys.clone(),
        worker_options(opts),
    ));
    if queue.backend() == Backend::Sqlite {
        // One process owns an embedded queue: whatever it left running was cut off.
        worker.recover().await;
    }
    let worker = tokio::spawn(worker.run(shutdown.clone(), background));
    let deliveries = spawn_background_loops(opts, &deploys, &shutdown);
    let app = Arc::new(build_app(
        opts,
        engine,
        table,
        queue.clone(),
        deploys.clone(),
        shutdown.clone(),
    )?);
    if queue.backend() == Backend::Postgres {
        // Several nodes share the queue: they share rate-limit counts too (functions' and
        // rules', as served at each round).
        let served = {
            let app = app.clone();
            move || -> Arc<dyn crate::functions::rate::SharedLimits> { app.served() }
        };
        tokio::spawn(crate::background::rates::share_loop(
            queue,
            served,
            shutdown.clone(),
        ));
    }
    follow_changes(opts, &app, deploys, &shutdown).await;
    Ok(Site {
        app,
        worker,
        deliveries,
        shutdown,
    })
}

/// This node's side of deploys (its copies of components in `opts.blob_dir`).
fn open_deploys(
    opts: &Options,
    engine: &Arc<Engine>,
    queue: &Queue,
) -> anyhow::Result<Arc<Deploys>> {
    let deploys = Deploys::new(
        engine.clone(),
        queue.clone(),
        opts.blob_dir.clone(),
        functions::engine_needs(&opts.config),
        DeployLimits::of(&opts.config.server),
    )
    .with_context(|| format!("cannot create {}", opts.blob_dir.display()))?;
    Ok(Arc::new(deploys))
}

/// Starts what changes the functions served, and their schedules: with `--deployed` the
/// published deploy now and the follower of every publish; else the directory's schedules (until
/// shutdown) and, with `--watch`, the reloader.
async fn follow_changes(
    opts: &Options,
    app: &Arc<App>,
    deploys: Arc<Deploys>,
    shutdown: &CancellationToken,
) {
    let mut schedules = crate::follow::Schedules::new(app.queue.clone(), shutdown.clone());
    if opts.deployed {
        deploys.set_following();
        first_deploy(app, &deploys, &mut schedules).await;
        let follow = crate::follow::run(app.clone(), deploys, schedules, shutdown.clone());
        tokio::spawn(follow);
        return;
    }
    // Dropping the handle leaves the schedules running.
    schedules.restart(app.table.current().functions.clone());
    if let Some(watch) = &opts.watch {
        let reloader = crate::watch::Reloader {
            engine: app.engine.clone(),
            app: app.clone(),
            config: opts.config.clone(),
            max_memory: functions::engine_needs(&opts.config).0,
        };
        tokio::spawn(crate::watch::run(reloader, watch.clone(), shutdown.clone()));
    }
}

/// `--deployed`: the deploy published now, in force before the listener is announced (a node
/// started after a publish serves it from its first request).
async fn first_deploy(app: &App, deploys: &Deploys, schedules: &mut crate::follow::Schedules) {
    let published = match deploys.queue().published().await {
        Ok(Some(p)) => p,
        Ok(None) => {
            println!(
                "no deploy is published yet: serving nothing until `fnhost deploy` (--deployed)"
            );
            return;
        }
        Err(e) => {
            tracing::error!("cannot read the published deploy: {e}; retrying every second");
            return;
        }
    };
    let loaded = match deploys.load(&published.deploy).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve deploy {}: {e:#}", published.deploy);
            return;
        }
    };
    crate::follow::swap(app, schedules, &loaded);
    println!("serving deploy {}", published.deploy);
    print!("{}", functions::print_table(&loaded.table));
}

/// Opens the queue with the node's settings.
async fn open_queue(opts: &Options) -> anyhow::Result<Queue> {
    let server_cfg = &opts.config.server;
    let settings = QueueSettings {
        idempotency_ttl: (server_cfg.idempotency_ttl)
            .map_or(crate::queue::IDEMPOTENCY_TTL, |d| d.0),
    };
    Queue::open_with(&opts.queue_url, settings)
        .await
        .with_context(|| format!("cannot open the queue {}", opts.queue_url))
}

/// The background worker's settings from `[server]`.
fn worker_options(opts: &Options) -> WorkerOptions {
    let server = &opts.config.server;
    WorkerOptions {
        concurrency: opts.caps().1,
        lease: server.lease.map_or(defaults::LEASE, |d| d.0),
        grace: server
            .shutdown_grace
            .map_or(defaults::SHUTDOWN_GRACE, |d| d.0),
        max_interruptions: server
            .max_interruptions
            .unwrap_or(defaults::MAX_INTERRUPTIONS),
        retry_scale: opts.retry_scale,
    }
}

/// Starts the retention purge and the destination deliveries; the last one's handle (shutdown
/// waits for it).
fn spawn_background_loops(
    opts: &Options,
    deploys: &Arc<Deploys>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let queue = deploys.queue();
    let server = &opts.config.server;
    let retention = server.retention.map_or(defaults::RETENTION, |d| d.0);
    let keep_deploys = server.keep_deploys.unwrap_or(defaults::KEEP_DEPLOYS);
    tokio::spawn(crate::background::retention::purge_loop(
        deploys.clone(),
        retention,
        keep_deploys,
        shutdown.clone(),
    ));
    tokio::spawn(crate::background::destinations::deliver_loop(
        queue.clone(),
        shutdown.clone(),
    ))
}

/// The per-request handler, with the site's CORS policies and rules.
fn build_app(
    opts: &Options,
    engine: Arc<Engine>,
    table: Arc<functions::LiveTable>,
    queue: Queue,
    deploys: Arc<Deploys>,
    shutdown: CancellationToken,
) -> anyhow::Result<App> {
    let server = &opts.config.server;
    let (cors, redirects) = if opts.deployed {
        // The deploy's own, once one is in force.
        (Policies::default(), Rules::default())
    } else {
        let cors = Policies::from_config(&opts.config)?;
        let more = opts.config.redirects.iter().map(|r| r.0.clone());
        (cors, Rules::load(&opts.dir, more)?)
    };
    let body_timeout = server.body_timeout.map_or(defaults::BODY_TIMEOUT, |d| d.0);
    let sync_cap = opts.caps().0;
    let auth = crate::http::auth::Auth::new(server.admin_token.clone())
        .with_deploy_token(server.deploy_token.clone())
        .with_event_tokens(server.event_tokens.clone());
    let app = App::new(engine, table, queue, auth, sync_cap, body_timeout, shutdown);
    let trusted = (server.trusted_proxies.iter()).map(|p| p.0).collect();
    Ok(app
        .with_edge(cors, redirects)
        .with_deploys(deploys)
        .with_edge_of(
            crate::http::client::TrustedProxies::new(trusted),
            server.site.clone(),
        ))
}

/// Starts the HTTP threads: one single-threaded runtime per thread (`server.threads`, one per
/// core by default), each serving the connections its lane hands it, so a request, its
/// instance and its response stay on one thread; and the acceptor.
fn spawn_http(
    listener: std::net::TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
    server: &crate::config::ServerConfig,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    const DRAIN: Duration = Duration::from_secs(30);
    let limits = crate::http::server::ConnLimits {
        header_timeout: server
            .header_timeout
            .map_or(defaults::HEADER_TIMEOUT, |d| d.0),
        idle_timeout: server.idle_timeout.map_or(defaults::IDLE_TIMEOUT, |d| d.0),
    };
    let mut handles = Vec::new();
    let mut lanes = Vec::new();
    for i in 0..threads(server) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (lane, receiver) = crate::http::server::lane();
        lanes.push(lane);
        let app = app.clone();
        let serve = move || {
            rt.block_on(crate::http::server::serve_handoffs(
                receiver, app, limits, DRAIN,
            ))
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("fnhost-http-{i}"))
                .spawn(serve)?,
        );
    }
    let max_connections = server.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
    handles.push(spawn_acceptor(listener, lanes, max_connections, shutdown)?);
    Ok(handles)
}

/// A small runtime of its own accepts and hands each connection to the least busy lane.
fn spawn_acceptor(
    listener: std::net::TcpListener,
    lanes: Vec<crate::http::server::Lane>,
    max_connections: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let accept = move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    let stop = shutdown.cancelled_owned();
                    crate::http::server::accept_balanced(l, lanes, max_connections, stop).await
                }
                Err(e) => tracing::error!("cannot register the listener: {e}"),
            }
        })
    };
    Ok(std::thread::Builder::new()
        .name("fnhost-accept".into())
        .spawn(accept)?)
}

/// Threads per runtime that serves (HTTP) or runs attempts: `server.threads`, else one per
/// core.
fn threads(server: &crate::config::ServerConfig) -> usize {
    server
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
