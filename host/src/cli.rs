//! The command line: raw arguments are validated into [`ServeOptions`] before anything runs.
//! `main` is `run() -> anyhow::Result<ExitCode>`; errors print with their whole chain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, RuntimeKind, defaults};
use crate::engine::{Engine, EngineOptions};
use crate::functions;
use crate::queue::{Backend, Queue};
use crate::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "fnhost",
    version,
    about = "Serve WebAssembly components (WASI HTTP) as serverless functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Directory holding NAME.wasm files [default: functions, or server.functions in fnhost.toml]
    dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8888]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Site file [default: ./fnhost.toml when present]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cache of compiled components [default: $XDG_CACHE_HOME/fnhost or ~/.cache/fnhost]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh instead of using the cache
    #[arg(long)]
    no_cache: bool,
    /// Directory of the embedded queue database [default: .fnhost]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Queue URL, sqlite://PATH or postgres://... [default: sqlite in the data dir]
    #[arg(long)]
    queue: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the functions in DIR over HTTP
    Serve(ServeArgs),
    /// Build every function under DIR (Rust crates, function.toml projects) into OUT/NAME.wasm
    Build {
        /// Directory to search for function crates
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to put the components
        #[arg(long, default_value = "functions")]
        out: PathBuf,
    },
    /// Build the functions under DIR, then serve those that built (like `netlify dev`)
    Dev {
        /// Directory to search for function crates
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to put the components
        #[arg(long, default_value = ".fnhost/functions")]
        out: PathBuf,
        /// Address to listen on [default: 127.0.0.1:8888]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Site file [default: DIR/fnhost.toml, else ./fnhost.toml, when present]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Cache of compiled components [default: $XDG_CACHE_HOME/fnhost or ~/.cache/fnhost]
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// List the functions in DIR with their mode and routes, without serving
    List(ServeArgs),
    /// Show the status of a background invocation
    Status {
        /// Invocation id (from the 202's fnhost-invocation-id header)
        id: String,
        /// The fnhost to ask
        #[arg(long, default_value = "http://127.0.0.1:8888")]
        url: String,
    },
    /// List background invocations (admin endpoint: needs the admin token)
    Invocations {
        /// Only this function's
        #[arg(long)]
        function: Option<String>,
        /// Only in this state (queued, running, retrying, succeeded, dead, cancelled)
        #[arg(long)]
        state: Option<String>,
        /// The fnhost to ask
        #[arg(long, default_value = "http://127.0.0.1:8888")]
        url: String,
        /// Admin token [default: $FNHOST_ADMIN_TOKEN]
        #[arg(long, env = "FNHOST_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Entry point of the `fnhost` binary.
pub fn main() -> ExitCode {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // wasmtime builds an error value while dropping every store; under `RUST_BACKTRACE=1`
        // (common on developer machines) each one captured a backtrace: 2 % of a `wrk -c64`
        // profile, 12.2k vs 15.0k req/s. Panics still print backtraces (`RUST_BACKTRACE`);
        // set `RUST_LIB_BACKTRACE=1` to get them in errors too.
        // SAFETY: first thing in `main`, before any other thread exists. (The one `unsafe` in
        // fnhost: `set_var` races only with other threads reading the environment.)
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RUST_LIB_BACKTRACE", "0")
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("FNHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(ServeOptions::from_args(args)?, false),
        Command::List(args) => serve(ServeOptions::from_args(args)?, true),
        Command::Build { dir, out } => {
            let report = crate::builder::build(&dir, &out)?;
            for file in &report.built {
                println!("{}", file.display());
            }
            report.into_result()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            dir,
            out,
            listen,
            config,
            cache_dir,
        } => {
            let report = crate::builder::build(&dir, &out)?;
            if report.built.is_empty() {
                report.into_result()?;
                return Ok(ExitCode::FAILURE);
            }
            for (project, e) in &report.failed {
                // Serve what did build: one function's missing tool should not stop the rest.
                tracing::warn!(
                    "skipping {} ({}): {e:#}",
                    project.name,
                    project.dir.display()
                );
                // Never serve an older build of it as if it were current.
                let _ = std::fs::remove_file(out.join(format!("{}.wasm", project.name)));
            }
            let config = config.or_else(|| Some(dir.join("fnhost.toml")).filter(|p| p.is_file()));
            let args = ServeArgs {
                dir: Some(out),
                listen,
                config,
                cache_dir,
                no_cache: false,
                data_dir: None,
                queue: None,
            };
            serve(ServeOptions::from_args(args)?, false)
        }
        Command::Status { id, url } => {
            let url = format!(
                "{}{}",
                url.trim_end_matches('/'),
                crate::app::status_path(&id)
            );
            print_get(&url, None)
        }
        Command::Invocations {
            function,
            state,
            url,
            token,
        } => {
            let mut url = format!(
                "{}{}/invocations?limit=1000",
                url.trim_end_matches('/'),
                crate::app::API_PREFIX
            );
            for (k, v) in [("function", function), ("state", state)] {
                if let Some(v) = v {
                    url.push_str(&format!("&{k}={v}"));
                }
            }
            print_get(&url, token.as_deref())
        }
    }
}

fn print_get(url: &str, token: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(crate::client::get(url, token))?;
    print!("{body}");
    if status == 200 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {url} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// Validated `serve` settings.
struct ServeOptions {
    dir: PathBuf,
    listen: SocketAddr,
    config: Config,
    cache_dir: Option<PathBuf>,
    queue_url: String,
}

impl ServeOptions {
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

    fn from_args(args: ServeArgs) -> anyhow::Result<ServeOptions> {
        let (config, base) = match args.config {
            Some(path) => (Config::load(&path)?, parent(&path)),
            None if Path::new("fnhost.toml").is_file() => {
                (Config::load(Path::new("fnhost.toml"))?, PathBuf::from("."))
            }
            None => (Config::default(), PathBuf::from(".")),
        };
        let dir = args
            .dir
            .or_else(|| config.server.functions.as_ref().map(|d| base.join(d)))
            .unwrap_or_else(|| PathBuf::from("functions"));
        let listen = match args.listen.or(config.server.listen) {
            Some(addr) => addr,
            None => defaults::LISTEN.parse().expect("valid default address"),
        };
        let cache_dir = if args.no_cache {
            None
        } else {
            let dir = args
                .cache_dir
                .or_else(|| config.server.cache_dir.as_ref().map(|d| base.join(d)))
                .or_else(default_cache_dir);
            // wasmtime's cache wants an absolute path.
            dir.map(|d| {
                std::path::absolute(&d).with_context(|| format!("bad cache dir {}", d.display()))
            })
            .transpose()?
        };
        let queue_url = match args.queue.or_else(|| config.server.queue.clone()) {
            Some(url) => url,
            None => {
                let data_dir = args
                    .data_dir
                    .or_else(|| config.server.data_dir.as_ref().map(|d| base.join(d)))
                    .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
                std::fs::create_dir_all(&data_dir).with_context(|| {
                    format!("cannot create the data dir {}", data_dir.display())
                })?;
                format!("sqlite://{}", data_dir.join("queue.db").display())
            }
        };
        Ok(ServeOptions {
            dir,
            listen,
            config,
            cache_dir,
            queue_url,
        })
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("fnhost"))
}

fn serve(opts: ServeOptions, list_only: bool) -> anyhow::Result<ExitCode> {
    // The control runtime: loading, the queue writer, the background worker, deliveries and
    // signals. HTTP requests are served on their own threads (see `spawn_http`).
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if list_only {
        let (_, table) = control.block_on(load(&opts))?;
        return Ok(if table.rejected.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let site = control.block_on(start(&opts))?;
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    let server_cfg = &opts.config.server;
    let threads = server_cfg
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let http = spawn_http(
        listener.try_clone()?,
        site.app.clone(),
        site.shutdown.clone(),
        threads,
        server_cfg.runtime.unwrap_or_default(),
    )?;
    // Tests and scripts read the bound address from this line.
    println!("listening on http://{}", listener.local_addr()?);
    use std::io::Write as _;
    std::io::stdout().flush()?;
    drop(listener);
    control.block_on(async {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutdown requested"),
            () = site.shutdown.cancelled() => {},
        }
        site.shutdown.cancel();
        let _ = site.worker.await;
        site.deliveries.abort();
    });
    for t in http {
        let _ = t.join();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// What `start` brings up.
struct Site {
    app: Arc<App>,
    worker: tokio::task::JoinHandle<()>,
    deliveries: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

/// Builds the engine and loads the functions, printing the table.
async fn load(opts: &ServeOptions) -> anyhow::Result<(Arc<Engine>, functions::FunctionTable)> {
    let (sync_cap, bg_cap) = opts.caps();
    let (max_memory, fuel) = functions::engine_needs(&opts.config);
    let slots = u32::try_from(sync_cap + bg_cap + 4).unwrap_or(u32::MAX);
    let engine = Arc::new(Engine::new(&EngineOptions::new(
        slots,
        max_memory,
        fuel,
        opts.cache_dir.clone(),
    ))?);
    let started = std::time::Instant::now();
    let table = functions::load(&engine, &opts.dir, &opts.config, max_memory)
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
        fuel,
    );
    Ok((engine, table))
}

/// Loads the functions, opens the queue and starts the background worker.
async fn start(opts: &ServeOptions) -> anyhow::Result<Site> {
    let (engine, table) = load(opts).await?;
    let server_cfg = &opts.config.server;
    let (sync_cap, bg_cap) = opts.caps();
    let queue = Queue::open(&opts.queue_url)
        .await
        .with_context(|| format!("cannot open the queue {}", opts.queue_url))?;
    if queue.backend() == Backend::Sqlite {
        // One process owns an embedded queue: whatever it left running was cut off.
        let n = queue.requeue_expired(true).await?;
        if n > 0 {
            tracing::warn!(
                "re-queued {n} background invocation(s) interrupted by the last shutdown"
            );
        }
    }
    let table = Arc::new(table);
    let shutdown = CancellationToken::new();
    let worker = Arc::new(Worker::new(
        queue.clone(),
        engine.clone(),
        table.clone(),
        WorkerOptions {
            concurrency: bg_cap,
            lease: server_cfg.lease.map_or(defaults::LEASE, |d| d.0),
            grace: server_cfg
                .shutdown_grace
                .map_or(defaults::SHUTDOWN_GRACE, |d| d.0),
        },
    ));
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let deliveries = tokio::spawn(crate::destinations::deliver_loop(
        queue.clone(),
        shutdown.clone(),
    ));
    let app = Arc::new(
        App::new(
            engine,
            table,
            queue,
            server_cfg.admin_token.clone(),
            sync_cap,
        )
        .with_edge(&opts.config, &opts.dir)?,
    );
    Ok(Site {
        app,
        worker,
        deliveries,
        shutdown,
    })
}

/// Starts the HTTP threads. Per core (the default): one single-threaded runtime per thread,
/// each accepting on the shared listener, so a request, its instance and its response stay on
/// one thread. Shared: one multi-threaded runtime (work stealing), kept for comparison.
fn spawn_http(
    listener: std::net::TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
    threads: usize,
    runtime: RuntimeKind,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    const DRAIN: Duration = Duration::from_secs(30);
    // The runtimes serving connections, each fed by one lane: one per core, or one shared
    // multi-threaded runtime whose scheduler spreads the connections' tasks over its workers.
    let runtimes = match runtime {
        RuntimeKind::PerCore => (0..threads.max(1))
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?,
        RuntimeKind::Shared => vec![
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?,
        ],
    };
    let mut handles = Vec::new();
    let mut lanes = Vec::new();
    for (i, rt) in runtimes.into_iter().enumerate() {
        let (lane, receiver) = crate::server::lane();
        lanes.push(lane);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("fnhost-http-{i}"))
                .spawn(move || {
                    rt.block_on(crate::server::serve_handoffs(
                        receiver,
                        app,
                        shutdown.cancelled_owned(),
                        DRAIN,
                    ))
                })?,
        );
    }
    // A small runtime of its own accepts and hands each connection to the least busy lane.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    handles.push(
        std::thread::Builder::new()
            .name("fnhost-accept".into())
            .spawn(move || {
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            crate::server::accept_balanced(l, lanes, shutdown.cancelled_owned())
                                .await
                        }
                        Err(e) => tracing::error!("cannot register the listener: {e}"),
                    }
                })
            })?,
    );
    Ok(handles)
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
