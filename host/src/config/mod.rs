//! `fnhost.toml`: the site file. Owns parsing and validation of every key, and nothing else —
//! no I/O beyond [`Config::load`], no runtime types. Errors name the file, the line and column,
//! the key and what would have been accepted.

pub mod cors;
pub mod pattern;
pub mod ranges;
pub mod rate;
pub mod redirects;
pub mod schedule;
pub mod telemetry;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use values::{
    ByteSize, CorsOrigin, CorsToken, Humantime, Method, OneOrMany, OutboundRule, RoutePath, Url,
};

/// Built-in defaults, stated once (the README's limits table mirrors these).
pub mod defaults {
    use std::time::Duration;

    /// Wall-clock budget of a synchronous invocation.
    pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
    /// Wall-clock budget of one background attempt.
    pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    /// Linear memory one instance may grow to.
    pub const MEMORY: u64 = 1024 * 1024 * 1024;
    /// Largest request body a synchronous function accepts.
    pub const SYNC_MAX_BODY: u64 = 6 * 1024 * 1024;
    /// Largest request body a background function accepts (it is stored durably).
    pub const BACKGROUND_MAX_BODY: u64 = 256 * 1024;
    /// Synchronous invocations running at once before `503`.
    pub const MAX_CONCURRENCY: usize = 64;
    /// Background attempts running at once.
    pub const BACKGROUND_CONCURRENCY: usize = 32;
    /// Delays before the second and third attempt of a failed background invocation.
    pub const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(120)];
    /// Where `serve` listens.
    pub const LISTEN: &str = "127.0.0.1:8888";
    /// Where the embedded queue lives, relative to the working directory.
    pub const DATA_DIR: &str = ".fnhost";
    /// Lease on a claimed background attempt.
    pub const LEASE: Duration = Duration::from_secs(30);
    /// Wall-clock budget of a scheduled run (Netlify's).
    pub const SCHEDULED_TIMEOUT: Duration = Duration::from_secs(30);
    /// Time running background attempts get to finish after SIGTERM.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// Time a client has to send a request's head.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
    /// Time a keep-alive connection may sit idle between requests.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Time a client has to send a request body.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Connections open at once; more wait in the listen backlog.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Interrupted attempts (host died, lease lost) after which an invocation is dead.
    pub const MAX_INTERRUPTIONS: u32 = 5;
    /// Outbound requests one instance may have in flight.
    pub const MAX_OUTBOUND: usize = 16;
    /// Requests per instance: a fresh instance for each.
    pub const REUSE: u32 = 1;
    pub const INSTANCE_CONCURRENCY: u32 = 1;
    /// `max_files`: the bundled files of one function together.
    pub const MAX_FILES: u64 = 64 * 1024 * 1024;
    /// Bytes of guest output (stdout + stderr) logged per invocation.
    pub const MAX_LOG: u64 = 1024 * 1024;
    /// Durable steps one background invocation may record.
    pub const MAX_STEPS: u32 = 1_000;
    /// Bytes one recorded step may hold.
    pub const MAX_STEP_SIZE: u64 = 256 * 1024;
    /// How long finished invocations, their results and delivered records are kept.
    pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    /// `server.max_deploy`: the components of one deploy together.
    pub const MAX_DEPLOY: u64 = 512 * 1024 * 1024;
    /// `server.max_component`: one component of a deploy.
    pub const MAX_COMPONENT: u64 = 128 * 1024 * 1024;
    /// `server.keep_deploys`.
    pub const KEEP_DEPLOYS: u32 = 50;
}

/// A problem with `fnhost.toml`, pointing at the place in the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}{location}: {message}")]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// `:line:column` when known, else empty.
    pub location: String,
    /// What is wrong, naming the key or value and what would be accepted.
    pub message: String,
}

/// The whole site file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How the host runs: listen address, directories, caps, admin token.
    #[serde(default)]
    pub server: ServerConfig,
    /// Settings every function starts from.
    #[serde(default)]
    pub defaults: FunctionConfig,
    /// Per-function tables, `[functions.NAME]`.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
    /// Site-wide CORS policy, `[cors]` (see [`cors`]).
    pub cors: Option<CorsConfig>,
    /// `[[redirects]]`: rules tried after those of `FUNCTIONS_DIR/_redirects`.
    #[serde(default)]
    pub redirects: Vec<Redirect>,
    /// `[telemetry]`: traces over OTLP (the `OTEL_*` environment variables win).
    #[serde(default)]
    pub telemetry: telemetry::TelemetryConfig,
}

/// `[server]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address `serve` listens on.
    pub listen: Option<SocketAddr>,
    /// Directory holding `NAME.wasm`, relative to the config file.
    pub functions: Option<PathBuf>,
    /// Where the queue database lives, relative to the config file.
    pub data_dir: Option<PathBuf>,
    /// Where compiled components are cached.
    pub cache_dir: Option<PathBuf>,
    /// Synchronous invocations at once; more get `503`.
    pub max_concurrency: Option<usize>,
    /// Background attempts at once.
    pub background_concurrency: Option<usize>,
    /// Bearer token for the admin endpoints; without one they are off.
    pub admin_token: Option<String>,
    /// Queue URL: `sqlite://PATH` or `postgres://…` [default: sqlite in data_dir].
    pub queue: Option<String>,
    /// Lease on a claimed background attempt; heartbeats renew it every third.
    pub lease: Option<Humantime>,
    /// How long running background attempts may finish after SIGTERM.
    pub shutdown_grace: Option<Humantime>,
    /// HTTP threads [default: one per core].
    pub threads: Option<usize>,
    /// Time to send a request head.
    pub header_timeout: Option<Humantime>,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Option<Humantime>,
    /// Time to send a request body; past it, `408`.
    pub body_timeout: Option<Humantime>,
    /// Connections open at once; more wait in the backlog.
    pub max_connections: Option<usize>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Option<Humantime>,
    /// Interrupted attempts after which an invocation is dead.
    pub max_interruptions: Option<u32>,
    /// How long finished invocations are kept before they are purged.
    pub retention: Option<Humantime>,
    /// PEM file of CA certificates trusted for guests' outbound HTTPS besides the Mozilla
    /// roots, relative to the config file.
    pub outbound_ca: Option<PathBuf>,
    /// Serve the published deploy of the queue (and follow every publish) instead of a
    /// functions directory.
    pub deployed: Option<bool>,
    /// A bearer token that may create and publish deploys (besides the admin token).
    pub deploy_token: Option<String>,
    /// Per event name, a bearer token that may send that event (`POST /.fnhost/events/NAME`)
    /// and nothing else, besides the admin token.
    #[serde(default)]
    pub event_tokens: BTreeMap<String, String>,
    /// Largest deploy accepted: all its new components together.
    pub max_deploy: Option<ByteSize>,
    /// Largest component accepted in a deploy.
    pub max_component: Option<ByteSize>,
    /// Deploys kept (besides the published one and any an unfinished invocation runs).
    pub keep_deploys: Option<u32>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed when they name the client
    /// [default: none: the client is the connection's peer].
    #[serde(default)]
    pub trusted_proxies: Vec<rate::TrustedProxy>,
    /// The site's name, passed to guests as `fnhost-site` (Netlify's `context.site.name`).
    pub site: Option<String>,
    /// How log lines are written: `text` (default) or `json`, one object a line
    /// (`FNHOST_LOG_FORMAT` wins).
    pub log_format: Option<telemetry::LogFormat>,
}

/// `[defaults]` and `[functions.NAME]`: every key optional; unset keys fall through to the
/// function's own `config` export, then to the built-in defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Run as a background function.
    pub background: Option<bool>,
    /// Routes replacing `/.netlify/functions/NAME`.
    #[serde(default, alias = "paths")]
    pub path: OneOrMany<RoutePath>,
    /// Paths the routes leave to other functions (or to `404`), as Netlify's `excludedPath`.
    #[serde(default, alias = "excluded_paths")]
    pub excluded_path: OneOrMany<RoutePath>,
    /// Requests one client (or domain) may make per window; more get `429` or a rewrite.
    pub rate_limit: Option<rate::RateLimitConfig>,
    /// Allowed methods; empty = all.
    #[serde(default, alias = "methods")]
    pub method: OneOrMany<Method>,
    /// Wall-clock budget of one invocation or attempt.
    pub timeout: Option<Humantime>,
    /// Budget of background attempts when set in `[defaults]` (`timeout` there is the sync one).
    pub background_timeout: Option<Humantime>,
    /// Linear-memory cap of one instance.
    pub memory: Option<ByteSize>,
    /// Largest accepted request body.
    pub max_body: Option<ByteSize>,
    /// Largest accepted body for background functions when set in `[defaults]`.
    pub background_max_body: Option<ByteSize>,
    /// Fuel (roughly wasm instructions) one invocation may burn; turns fuel metering on.
    pub fuel: Option<u64>,
    /// Outbound requests one instance may have in flight; more get an error value.
    pub max_outbound: Option<usize>,
    /// Requests one instance of a synchronous WASI 0.3 function serves, one after another,
    /// before it is dropped [default 1: a fresh instance per request].
    pub reuse: Option<u32>,
    /// Requests one instance of a synchronous WASI 0.3 function serves at once (at most
    /// `reuse`) [default 1: one after another].
    pub instance_concurrency: Option<u32>,
    /// Guest output (stdout + stderr) logged per invocation; the rest is dropped.
    pub max_log: Option<ByteSize>,
    /// Durable steps one background invocation may record (`fnhost:function/steps`).
    pub max_steps: Option<u32>,
    /// Bytes one recorded step may hold.
    pub max_step_size: Option<ByteSize>,
    /// Environment variables the guest sees (and only these).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A directory bundled with the function: the guest sees it, read-only, as `/` (relative
    /// to the site file, made absolute by [`Config::load`]) [default: no files].
    pub files: Option<PathBuf>,
    /// The bundled files together, checked at load.
    pub max_files: Option<ByteSize>,
    /// Outbound HTTP destinations, `scheme://host[:port]`; `*` as host or port matches any.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<OutboundRule>,
    /// Delays between background attempts; its length + 1 is the attempt count.
    pub retry_delays: Option<Vec<Humantime>>,
    /// Count a 5xx answer from a background function as a failed attempt.
    pub retry_on_5xx: Option<bool>,
    /// Where background outcomes are POSTed.
    pub on_success: Option<Url>,
    /// Where exhausted background invocations are POSTed.
    pub on_failure: Option<Url>,
    /// A background invocation not started within this age of its acceptance is not run: it
    /// ends `expired` (and goes to `on_failure`) [default: no limit].
    pub max_event_age: Option<Humantime>,
    /// Among due background invocations, higher first: each point counts as a minute of
    /// waiting (−50 to +50) [default 0].
    pub priority: Option<i32>,
    /// Events (`POST /.fnhost/events/NAME`) that start this background function: one
    /// invocation per event, its payload as the body [default: none].
    pub events: Option<Vec<String>>,
    /// `[functions.NAME.cors]`: merged key by key over `[cors]`.
    pub cors: Option<CorsConfig>,
    /// When the function runs on its own (cron in UTC, or `@daily` and the like).
    pub schedule: Option<schedule::Schedule>,
    /// The zone `schedule` is read in [default: UTC].
    pub schedule_tz: Option<schedule::Zone>,
    /// What a tick does while the previous run is unfinished [default: skip].
    pub overlap: Option<schedule::Overlap>,
    /// Background attempts of this function running at once on one node [default: no cap
    /// beyond `server.background_concurrency`].
    pub concurrency: Option<usize>,
    /// Who may read a background invocation's status resource: anyone holding its id
    /// (`public`, the default) or only a request bearing the admin token or `invoke_token`.
    pub status: Option<StatusAccess>,
    /// A bearer token that reads this function's status resources when `status = "token"`.
    pub invoke_token: Option<String>,
}

/// `status`: who may read a background invocation's status resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusAccess {
    /// Whoever holds the invocation id (128 random bits, told only to the client that got the
    /// `202`).
    #[default]
    Public,
    /// Only with `Authorization: Bearer` the admin token or the function's `invoke_token`.
    Token,
}

/// `[cors]` and `[functions.NAME.cors]`; resolved and validated by [`cors`].
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`"https://app.example.com"`), or `"*"`.
    pub allowed_origins: Option<toml::Spanned<OneOrMany<CorsOrigin>>>,
    /// Methods a preflight may ask for, or `"*"`.
    pub allowed_methods: Option<OneOrMany<CorsToken>>,
    /// Request headers a preflight may ask for, or `"*"` [default: whatever it asks for].
    pub allowed_headers: Option<OneOrMany<CorsToken>>,
    /// Response headers the page may read.
    pub exposed_headers: Option<OneOrMany<CorsToken>>,
    /// Allow cookies and HTTP auth (never with `"*"` origins).
    pub allow_credentials: Option<toml::Spanned<bool>>,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<Humantime>,
}

/// One `[[redirects]]` table: `from`, `to`, `status` (default 301), `force` — the fields of a
/// `_redirects` line — and, as netlify.toml allows, a `rate_limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect(pub redirects::Rule);

impl<'de> Deserialize<'de> for Redirect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            from: String,
            to: String,
            status: Option<u16>,
            #[serde(default)]
            force: bool,
            rate_limit: Option<rate::RateLimitConfig>,
        }
        let raw = Raw::deserialize(d)?;
        let mut rule =
            redirects::Rule::new(&raw.from, &raw.to, raw.status.unwrap_or(301), raw.force)
                .map_err(serde::de::Error::custom)?;
        if let Some(limit) = raw.rate_limit {
            let key = format!("[[redirects]] from = {:?}: rate_limit", raw.from);
            limit.check(&key).map_err(serde::de::Error::custom)?;
            rule.rate_limit = Some(limit);
        }
        Ok(Redirect(rule))
    }
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            location: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Config::from_str(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        for f in config.functions.values_mut() {
            if let Some(files) = &mut f.files {
                *files = base.join(&*files);
            }
        }
        Ok(config)
    }

    /// Parses the text of a site file; `file` only labels errors.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            ConfigError {
                file: file.to_owned(),
                location,
                message: hint(e.message().trim()),
            }
        })?;
        config.validate().map_err(|message| ConfigError {
            file: file.to_owned(),
            location: String::new(),
            message,
        })?;
        cors::Policies::from_config(&config).map_err(|e| ConfigError {
            file: file.to_owned(),
            location: e.span.map_or_else(String::new, |span| {
                let (line, col) = line_col(text, span.start);
                format!(":{line}:{col}")
            }),
            message: format!("{}: {}", e.key, e.message),
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        ranges::server(self)?;
        self.telemetry.check()?;
        for (table, f) in std::iter::once(("defaults".to_string(), &self.defaults)).chain(
            self.functions
                .iter()
                .map(|(n, f)| (format!("functions.{n}"), f)),
        ) {
            ranges::function(&table, f)?;
        }
        if self.defaults.files.is_some() {
            return Err(
                "defaults.files: bundled files belong to one function; set files in \
                 [functions.NAME]"
                    .into(),
            );
        }
        if self.defaults.schedule.is_some() {
            return Err(
                "defaults.schedule: schedules are per function; set it in [functions.NAME]".into(),
            );
        }
        if !self.defaults.path.0.is_empty() {
            return Err(
                "defaults.path: routes are per function; set it in [functions.NAME]".into(),
            );
        }
        self.check_status_tokens()?;
        for (name, f) in &self.functions {
            if f.background_timeout.is_some() || f.background_max_body.is_some() {
                return Err(format!(
                    "functions.{name}: `background_timeout` and `background_max_body` belong in \
                     [defaults]; in a function table use `timeout` and `max_body`"
                ));
            }
            for key in f.env.keys() {
                if key.is_empty() || key.contains('=') {
                    return Err(format!(
                        "functions.{name}.env: invalid variable name {key:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// `status = "token"` needs a token to read with: the function's `invoke_token` (or the
    /// one in `[defaults]`) or the admin token.
    fn check_status_tokens(&self) -> Result<(), String> {
        let tables = std::iter::once(("defaults".to_string(), &self.defaults)).chain(
            self.functions
                .iter()
                .map(|(n, f)| (format!("functions.{n}"), f)),
        );
        for (table, f) in tables {
            let status = f.status.or(self.defaults.status).unwrap_or_default();
            let token = f
                .invoke_token
                .as_ref()
                .or(self.defaults.invoke_token.as_ref());
            if status == StatusAccess::Token && token.is_none() && self.server.admin_token.is_none()
            {
                return Err(format!(
                    "{table}.status = \"token\" needs a token to read results with: set \
                     invoke_token there or server.admin_token"
                ));
            }
        }
        Ok(())
    }
}

/// Makes serde's wording friendlier where it names no alternative.
fn hint(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message} (check the spelling; see the README's fnhost.toml reference)")
    } else {
        message.to_string()
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_str(text, Path::new("fnhost.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            max_concurrency = 4
            [defaults]
            timeout = "2s"
            memory = "64MB"
            retry_delays = ["1s", "2s"]
            [functions.items]
            path = "/api/items/:id"
            method = ["get", "POST"]
            env = { A = "1" }
            allowed_outbound_hosts = ["http://127.0.0.1:8080", "https://*:*"]
            "#,
        )
        .unwrap();
        assert_eq!(c.server.max_concurrency, Some(4));
        assert_eq!(c.defaults.timeout, Some(Humantime(Duration::from_secs(2))));
        assert_eq!(c.defaults.memory, Some(ByteSize(64 << 20)));
        let items = &c.functions["items"];
        assert_eq!(items.path.0[0].0.as_str(), "/api/items/:id");
        assert_eq!(
            items.method.0,
            vec![Method("GET".into()), Method("POST".into())]
        );
        assert_eq!(items.allowed_outbound_hosts[0].port, Some(8080));
        assert_eq!(items.allowed_outbound_hosts[1].port, Some(0));
    }

    #[test]
    fn unknown_key_names_file_line_key_and_alternatives() {
        let e = parse("[functions.hello]\ntimout = \"1s\"\n").unwrap_err();
        assert!(
            e.starts_with("fnhost.toml:2:1: unknown field `timout`"),
            "{e}"
        );
        assert!(e.contains("`timeout`"), "{e}");
    }

    #[test]
    fn bad_duration_is_quoted() {
        let e = parse("[defaults]\ntimeout = \"10 sec\"\n").unwrap_err();
        assert!(e.contains("fnhost.toml:2:11"), "{e}");
        assert!(e.contains("invalid duration \"10 sec\""), "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(
            parse("[defaults]\nmemory = \"12 parsecs\"\n")
                .unwrap_err()
                .contains("invalid size")
        );
        assert!(
            parse("[functions.a]\npath = \"nope\"\n")
                .unwrap_err()
                .contains("must start with `/`")
        );
        assert!(
            parse("[functions.a]\nmethod = \"G T\"\n")
                .unwrap_err()
                .contains("invalid method")
        );
        assert!(
            parse("[functions.a]\nallowed_outbound_hosts = [\"example.com\"]\n")
                .unwrap_err()
                .contains("missing scheme")
        );
        assert!(
            parse("[server]\nmax_concurrency = 0\n")
                .unwrap_err()
                .contains("server.max_concurrency = 0 is out of range")
        );
        assert!(
            parse("[functions.a]\non_success = \"ftp://x\"\n")
                .unwrap_err()
                .contains("invalid URL")
        );
    }

    /// Regression: an absurd duration overflowed `n * 3600` (a panic at startup) or the clock
    /// arithmetic of a budget; a zero budget or lease made no sense.
    #[test]
    fn durations_are_range_checked() {
        let e = parse("[defaults]\ntimeout = \"99999999999999999999h\"\n").unwrap_err();
        assert!(e.contains("invalid duration"), "{e}");
        let e = parse("[defaults]\ntimeout = \"5124095576030431h\"\n").unwrap_err();
        assert!(
            e.contains("invalid duration") || e.contains("too long"),
            "{e}"
        );
        let e = parse("[server]\nretention = \"3651d\"\n").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = parse("[functions.a]\ntimeout = \"0s\"\n").unwrap_err();
        assert_eq!(e, "fnhost.toml: functions.a.timeout: must be longer than 0");
        let e = parse("[server]\nlease = \"0ms\"\n").unwrap_err();
        assert!(e.contains("server.lease = 0s is out of range"), "{e}");
        assert!(parse("[server]\nretention = \"3650d\"\n").is_ok());
    }

    #[test]
    fn a_bad_schedule_names_the_file_line_key_and_value() {
        let e = parse("[functions.report]\nschedule = \"61 * * * *\"\n").unwrap_err();
        assert!(e.starts_with("fnhost.toml:2:"), "{e}");
        assert!(e.contains("invalid schedule \"61 * * * *\""), "{e}");
        let e = parse("[defaults]\nschedule = \"@daily\"\n").unwrap_err();
        assert!(e.contains("defaults.schedule"), "{e}");
        assert!(parse("[functions.report]\nschedule = \"@daily\"\n").is_ok());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!("256KB".parse::<ByteSize>().unwrap().0, 256 * 1024);
        assert_eq!("1GB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!(
            "500ms".parse::<Humantime>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "2m".parse::<Humantime>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("m".parse::<Humantime>().is_err());
    }
}
