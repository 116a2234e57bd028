//! The command line: raw arguments and the site file are validated into [`site::Options`]
//! before anything runs; `status`, `invocations`, `invoke` and `retry` talk to a running
//! fnhost ([`client`], [`invoke`]); `new` writes a function project from a template ([`new`]).
//! `main` is `run() -> anyhow::Result<ExitCode>`; errors print with their whole chain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, defaults};
use crate::ids::{API_PREFIX, status_path};
use crate::site;

mod client;
mod deploy;
mod invoke;
mod new;
mod schedule;
mod send;

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
    /// Reload when a .wasm in DIR, fnhost.toml or _redirects changes (requests under way
    /// finish on the old version)
    #[arg(long)]
    watch: bool,
    /// Serve the deploy published in the queue, and follow every publish, instead of DIR
    /// [default: server.deployed]
    #[arg(long, conflicts_with_all = ["dir", "watch"])]
    deployed: bool,
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
        /// Multiply every background retry delay by F (0.01: a 1m delay waits 600 ms)
        #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = retry_scale)]
        retry_scale: f64,
        /// Rebuild what changed under DIR and reload it (requests under way finish on the old
        /// version; a failed build keeps the old one serving)
        #[arg(long)]
        watch: bool,
    },
    /// List the functions in DIR with their mode and routes, without serving
    List(ServeArgs),
    /// Upload DIR's functions and settings to a running fnhost as one deploy, and publish it
    Deploy(deploy::DeployArgs),
    /// List the deploys of a running fnhost (`deploys show ID`: one, against the published one)
    Deploys(deploy::DeploysArgs),
    /// Publish a deploy on every node (an older id rolls back)
    Publish(deploy::PublishArgs),
    /// Show the status of a background invocation
    Status {
        /// Invocation id (from the 202's fnhost-invocation-id header)
        id: String,
        /// The fnhost to ask
        #[arg(long, default_value = "http://127.0.0.1:8888")]
        url: String,
        /// The admin token or the function's invoke_token, where its results need one
        /// (`status = "token"`) [default: $FNHOST_ADMIN_TOKEN]
        #[arg(long, env = "FNHOST_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Create a function project from a template (Rust, JavaScript or Python)
    New(new::NewArgs),
    /// Call a function on a running fnhost and print its answer
    Invoke(invoke::InvokeArgs),
    /// Run an invocation waiting for a retry now (admin endpoint: needs the admin token)
    Retry(invoke::RetryArgs),
    /// Send an event: wakes the background invocations waiting for it with its key (admin)
    Send(send::SendArgs),
    /// Pause, resume, run now, or list the next runs of a scheduled function (admin)
    Schedule(schedule::ScheduleArgs),
    /// List background invocations (admin endpoint: needs the admin token)
    Invocations {
        /// Only this function's
        #[arg(long)]
        function: Option<String>,
        /// Only in this state (queued, running, retrying, succeeded, dead, cancelled, expired)
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
    let cli = Cli::parse();
    let format = crate::telemetry::logging::format_in(&site_file(&cli));
    let _flush_on_exit = crate::telemetry::logging::init(format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The site file a command reads (for the log format, before anything is logged).
fn site_file(cli: &Cli) -> PathBuf {
    let given = match &cli.command {
        Command::Serve(args) | Command::List(args) => args.config.clone(),
        Command::Dev { config, dir, .. } => config
            .clone()
            .or_else(|| Some(dir.join("fnhost.toml")).filter(|p| p.is_file())),
        _ => None,
    };
    given.unwrap_or_else(|| PathBuf::from("fnhost.toml"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => site::serve(options(args)?, false),
        Command::List(args) => site::serve(options(args)?, true),
        Command::Deploy(args) => deploy::deploy(args),
        Command::Deploys(args) => deploy::deploys(args),
        Command::Publish(args) => deploy::publish(args),
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
            retry_scale,
            watch,
        } => {
            let Some(args) = build_for_dev(&dir, out, listen, config, cache_dir, watch)? else {
                return Ok(ExitCode::FAILURE);
            };
            site::serve(dev_options(args, &dir, retry_scale)?, false)
        }
        Command::New(args) => new::run(args),
        Command::Invoke(args) => invoke::run(args),
        Command::Retry(args) => invoke::retry(args),
        Command::Send(args) => send::run(args),
        Command::Schedule(args) => schedule::run(args),
        Command::Status { id, url, token } => {
            let url = format!("{}{}", url.trim_end_matches('/'), status_path(&id));
            print_get(&url, token.as_deref())
        }
        Command::Invocations {
            function,
            state,
            url,
            token,
        } => {
            let mut url = format!(
                "{}{}/invocations?limit=100",
                url.trim_end_matches('/'),
                API_PREFIX
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

/// `fnhost dev`, first half: builds every project under `dir` into `out` and makes the
/// `serve` arguments for what did build; `None` when nothing did (the failures reported).
fn build_for_dev(
    dir: &std::path::Path,
    out: PathBuf,
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    watch: bool,
) -> anyhow::Result<Option<ServeArgs>> {
    let report = crate::builder::build(dir, &out)?;
    if report.built.is_empty() {
        report.into_result()?;
        return Ok(None);
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
    Ok(Some(ServeArgs {
        dir: Some(out),
        listen,
        config,
        cache_dir,
        no_cache: false,
        data_dir: None,
        queue: None,
        watch,
        deployed: false,
    }))
}

/// `fnhost dev`, second half: the options `serve` would take, plus the retry scale, a made-up
/// admin token on loopback (the dashboard on a developer's own machine, printed in its
/// address; never on a non-loopback listener), and the sources to watch.
fn dev_options(
    args: ServeArgs,
    dir: &std::path::Path,
    retry_scale: f64,
) -> anyhow::Result<site::Options> {
    let mut opts = options(args)?;
    opts.retry_scale = retry_scale;
    if opts.config.server.admin_token.is_none() && opts.listen.ip().is_loopback() {
        opts.config.server.admin_token = Some(crate::ids::new_id());
        opts.dev_token = true;
    }
    if let Some(w) = &mut opts.watch {
        // A site file created later in DIR is picked up too.
        w.config_file.get_or_insert_with(|| dir.join("fnhost.toml"));
        w.sources = Some(dir.to_owned());
    }
    Ok(opts)
}

fn print_get(url: &str, token: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(client::get(url, token))?;
    print!("{body}");
    if status == 200 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {url} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// The compiled-component cache: `--cache-dir`, else `server.cache_dir`, else the user's
/// cache directory; none with `--no-cache`. Absolute (wasmtime's cache wants that).
fn cache_dir(args: &ServeArgs, config: &Config, base: &Path) -> anyhow::Result<Option<PathBuf>> {
    if args.no_cache {
        return Ok(None);
    }
    let dir = (args.cache_dir.clone())
        .or_else(|| config.server.cache_dir.as_ref().map(|d| base.join(d)))
        .or_else(default_cache_dir);
    dir.map(|d| std::path::absolute(&d).with_context(|| format!("bad cache dir {}", d.display())))
        .transpose()
}

/// `--data-dir`, else `server.data_dir`, else `.fnhost` (created).
fn data_dir(args: &ServeArgs, config: &Config, base: &Path) -> anyhow::Result<PathBuf> {
    let data_dir = (args.data_dir.clone())
        .or_else(|| config.server.data_dir.as_ref().map(|d| base.join(d)))
        .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    Ok(data_dir)
}

/// `--queue`, else `server.queue`, else the embedded queue in the data dir.
fn queue_url(args: &ServeArgs, config: &Config, data_dir: &Path) -> String {
    match args.queue.clone().or_else(|| config.server.queue.clone()) {
        Some(url) => url,
        None => format!("sqlite://{}", data_dir.join("queue.db").display()),
    }
}

/// Validates raw `serve` arguments and the site file into [`site::Options`].
fn options(args: ServeArgs) -> anyhow::Result<site::Options> {
    let (config, base, config_file) = match args.config.clone() {
        Some(path) => (Config::load(&path)?, parent(&path), Some(path)),
        None if Path::new("fnhost.toml").is_file() => (
            Config::load(Path::new("fnhost.toml"))?,
            PathBuf::from("."),
            Some(PathBuf::from("fnhost.toml")),
        ),
        None => (Config::default(), PathBuf::from("."), None),
    };
    let dir = (args.dir.clone())
        .or_else(|| config.server.functions.as_ref().map(|d| base.join(d)))
        .unwrap_or_else(|| PathBuf::from("functions"));
    let listen = match args.listen.or(config.server.listen) {
        Some(addr) => addr,
        None => defaults::LISTEN.parse().expect("valid default address"),
    };
    let cache_dir = cache_dir(&args, &config, &base)?;
    let data_dir = data_dir(&args, &config, &base)?;
    let queue_url = queue_url(&args, &config, &data_dir);
    let deployed = args.deployed || config.server.deployed == Some(true);
    let outbound_ca = config.server.outbound_ca.as_ref().map(|p| base.join(p));
    let mut config = config;
    if let Some(ca) = &mut config.telemetry.certificate {
        *ca = base.join(&*ca);
    }
    let watch = args.watch.then(|| crate::watch::Watch {
        functions: dir.clone(),
        config_file,
        sources: None,
    });
    Ok(site::Options {
        watch,
        dir,
        listen,
        config,
        cache_dir,
        queue_url,
        outbound_ca,
        retry_scale: 1.0,
        dev_token: false,
        deployed,
        blob_dir: data_dir.join("deploys"),
    })
}

/// `--retry-scale`: a finite factor between 0 and 1000.
fn retry_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && (0.0..=1000.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "{text:?} is not a factor between 0 and 1000 (e.g. 0.01)"
        )),
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
