//! The accepted range of every numeric setting of `fnhost.toml`, and the checks of the secrets
//! it holds; both run when the file is loaded, so a value that would abort the process, make
//! every call fail or quietly turn a protection off is refused with its key, its value and what
//! is accepted. The README's "Limits and hardening" table mirrors [`BOUNDS`].

use std::time::Duration;

use super::{ByteSize, Config, FunctionConfig, Humantime};

const KB: u64 = 1024;
const MB: u64 = 1024 * KB;
const GB: u64 = 1024 * MB;

/// The bounds, and why: each is stated once here.
pub mod bounds {
    use super::{Duration, GB, KB, MB};

    /// HTTP threads (and as many background worker threads). A thread per core is the design;
    /// 256 covers the largest machines, while 100,000 made the process abort (each thread a
    /// runtime with its own stacks).
    pub const THREADS: (u64, u64) = (1, 256);
    /// Synchronous invocations at once: each holds an instance slot reserved up front.
    pub const MAX_CONCURRENCY: (u64, u64) = (1, 10_000);
    /// Background attempts at once: each holds an instance slot reserved up front.
    pub const BACKGROUND_CONCURRENCY: (u64, u64) = (1, 10_000);
    /// Open connections (each a file descriptor).
    pub const MAX_CONNECTIONS: (u64, u64) = (1, 1_000_000);
    /// Interrupted attempts before an invocation is dead.
    pub const MAX_INTERRUPTIONS: (u64, u64) = (1, 1_000);
    /// Background attempts of one function at once, per node.
    pub const CONCURRENCY: (u64, u64) = (1, 10_000);
    /// Outbound requests in flight per instance.
    pub const MAX_OUTBOUND: (u64, u64) = (1, 1_024);
    /// Requests one warm instance serves before it is dropped (its memory only grows).
    pub const REUSE: (u64, u64) = (1, 1_000_000);
    /// Requests one instance serves at once (`wasmtime serve` defaults to 16).
    pub const INSTANCE_CONCURRENCY: (u64, u64) = (1, 1_000);
    /// Retries after a failed attempt (`retry_delays` entries).
    pub const RETRIES: (u64, u64) = (0, 100);
    /// Fuel per invocation: 0 would fail every call.
    pub const FUEL: (u64, u64) = (1, u64::MAX);
    /// Linear memory per instance: one wasm page at least, and no more than a 32-bit memory
    /// can address (4 GB); 0 made every call fail.
    pub const MEMORY: (u64, u64) = (64 * KB, 4 * GB);
    /// A synchronous request body, held in memory while the guest runs.
    pub const MAX_BODY: (u64, u64) = (0, GB);
    /// A background request body: stored in the queue and held in memory by its batch.
    pub const BACKGROUND_MAX_BODY: (u64, u64) = (0, 64 * MB);
    /// A function's bundled files together: opened read-only, walked once at load.
    pub const MAX_FILES: (u64, u64) = (0, 4 * GB);
    /// Guest output logged per invocation.
    pub const MAX_LOG: (u64, u64) = (0, GB);
    /// A background function's priority: minutes of waiting it counts as (so the lowest
    /// waits at most 100 minutes behind the highest).
    pub const PRIORITY: (i32, i32) = (-50, 50);
    /// Steps one invocation records: each a row read back on every re-run.
    pub const MAX_STEPS: (u64, u64) = (1, 100_000);
    /// One step's result: stored in the queue and held in memory while the guest reads it.
    pub const MAX_STEP_SIZE: (u64, u64) = (0, 16 * MB);
    /// A deploy's components together, streamed to disk then stored in the queue database.
    pub const MAX_DEPLOY: (u64, u64) = (KB, 16 * GB);
    /// One component of a deploy.
    pub const MAX_COMPONENT: (u64, u64) = (KB, 4 * GB);
    /// Deploys kept: at least the one before the published one, to roll back to.
    pub const KEEP_DEPLOYS: (u64, u64) = (2, 100_000);
    /// The background lease: renewed every third, so shorter than a second is all heartbeat.
    pub const LEASE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
}

/// A value of some key, shown as the file spells that kind of value.
#[derive(Clone, Copy)]
enum Value {
    Count(u64),
    Size(u64),
    Time(Duration),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Size(n) => f.write_str(&size(n)),
            Value::Time(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

/// `n` bytes as fnhost.toml would write it (`64KB`, `4GB`, `1000 bytes`).
fn size(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % GB == 0 => format!("{}GB", n / GB),
        n if n % MB == 0 => format!("{}MB", n / MB),
        n if n % KB == 0 => format!("{}KB", n / KB),
        n => format!("{n} bytes"),
    }
}

/// `key = value` refused unless within `lo..=hi`.
fn within(key: &str, value: Value, lo: Value, hi: Value) -> Result<(), String> {
    let inside = match (value, lo, hi) {
        (Value::Count(v), Value::Count(l), Value::Count(h))
        | (Value::Size(v), Value::Size(l), Value::Size(h)) => (l..=h).contains(&v),
        (Value::Time(v), Value::Time(l), Value::Time(h)) => (l..=h).contains(&v),
        _ => false,
    };
    if inside {
        return Ok(());
    }
    let accepted = match hi {
        Value::Count(u64::MAX) => format!("at least {lo}"),
        _ => format!("from {lo} to {hi}"),
    };
    Err(format!(
        "{key} = {value} is out of range: accepted {accepted}"
    ))
}

fn count(key: &str, value: Option<u64>, (lo, hi): (u64, u64)) -> Result<(), String> {
    value.map_or(Ok(()), |v| {
        within(key, Value::Count(v), Value::Count(lo), Value::Count(hi))
    })
}

/// A signed count (no unit).
fn signed(key: &str, value: Option<i32>, (lo, hi): (i32, i32)) -> Result<(), String> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(format!(
            "{key} = {v} is out of range: accepted from {lo} to {hi}"
        )),
        _ => Ok(()),
    }
}

fn bytes(key: &str, value: Option<ByteSize>, (lo, hi): (u64, u64)) -> Result<(), String> {
    value.map_or(Ok(()), |v| {
        within(key, Value::Size(v.0), Value::Size(lo), Value::Size(hi))
    })
}

fn usize_count(key: &str, value: Option<usize>, range: (u64, u64)) -> Result<(), String> {
    count(key, value.map(|v| v as u64), range)
}

/// `[server]`'s numbers, durations and the admin token. (`shutdown_grace` may be 0: running
/// attempts are handed back at once.)
pub fn server(config: &Config) -> Result<(), String> {
    let s = &config.server;
    usize_count("server.threads", s.threads, bounds::THREADS)?;
    usize_count(
        "server.max_concurrency",
        s.max_concurrency,
        bounds::MAX_CONCURRENCY,
    )?;
    usize_count(
        "server.background_concurrency",
        s.background_concurrency,
        bounds::BACKGROUND_CONCURRENCY,
    )?;
    usize_count(
        "server.max_connections",
        s.max_connections,
        bounds::MAX_CONNECTIONS,
    )?;
    count(
        "server.max_interruptions",
        s.max_interruptions.map(u64::from),
        bounds::MAX_INTERRUPTIONS,
    )?;
    if let Some(lease) = s.lease {
        let (lo, hi) = bounds::LEASE;
        within(
            "server.lease",
            Value::Time(lease.0),
            Value::Time(lo),
            Value::Time(hi),
        )?;
    }
    for (key, value) in [
        ("header_timeout", s.header_timeout),
        ("idle_timeout", s.idle_timeout),
        ("body_timeout", s.body_timeout),
        ("idempotency_ttl", s.idempotency_ttl),
        ("retention", s.retention),
    ] {
        positive(&format!("server.{key}"), value)?;
    }
    if let Some(token) = &s.admin_token {
        secret("server.admin_token", token)?;
    }
    if let Some(site) = &s.site {
        site_name(site)?;
    }
    if let Some(token) = &s.deploy_token {
        secret("server.deploy_token", token)?;
    }
    for (event, token) in &s.event_tokens {
        secret(&format!("server.event_tokens.{event:?}"), token)?;
    }
    bytes("server.max_deploy", s.max_deploy, bounds::MAX_DEPLOY)?;
    bytes(
        "server.max_component",
        s.max_component,
        bounds::MAX_COMPONENT,
    )?;
    count(
        "server.keep_deploys",
        s.keep_deploys.map(u64::from),
        bounds::KEEP_DEPLOYS,
    )?;
    Ok(())
}

/// A duration that must be longer than 0 (the parser already caps it at ten years).
fn positive(key: &str, value: Option<Humantime>) -> Result<(), String> {
    match value {
        Some(d) if d.0.is_zero() => Err(format!("{key}: must be longer than 0")),
        _ => Ok(()),
    }
}

/// A token compared with what clients send in `Authorization: Bearer …`: an empty or
/// blank one would turn the endpoints on with a token nothing can match, and characters a
/// header value cannot carry (or trims) could never match either.
pub fn secret(key: &str, token: &str) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err(format!(
            "{key}: must not be empty or blank (leave the key out to turn what it guards off)"
        ));
    }
    if token.trim() != token || !token.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "{key}: must be printable ASCII without leading or trailing spaces (a header \
             carries it)"
        ));
    }
    Ok(())
}

/// The numbers of one `[defaults]` or `[functions.NAME]` table (`table` names it).
pub fn function(table: &str, f: &FunctionConfig) -> Result<(), String> {
    let key = |k: &str| format!("{table}.{k}");
    bytes(&key("memory"), f.memory, bounds::MEMORY)?;
    bytes(&key("max_body"), f.max_body, bounds::MAX_BODY)?;
    bytes(
        &key("background_max_body"),
        f.background_max_body,
        bounds::BACKGROUND_MAX_BODY,
    )?;
    bytes(&key("max_log"), f.max_log, bounds::MAX_LOG)?;
    count(
        &key("max_steps"),
        f.max_steps.map(u64::from),
        bounds::MAX_STEPS,
    )?;
    bytes(
        &key("max_step_size"),
        f.max_step_size,
        bounds::MAX_STEP_SIZE,
    )?;
    bytes(&key("max_files"), f.max_files, bounds::MAX_FILES)?;
    count(&key("fuel"), f.fuel, bounds::FUEL)?;
    usize_count(&key("max_outbound"), f.max_outbound, bounds::MAX_OUTBOUND)?;
    count(&key("reuse"), f.reuse.map(u64::from), bounds::REUSE)?;
    count(
        &key("instance_concurrency"),
        f.instance_concurrency.map(u64::from),
        bounds::INSTANCE_CONCURRENCY,
    )?;
    usize_count(&key("concurrency"), f.concurrency, bounds::CONCURRENCY)?;
    if let Some(delays) = &f.retry_delays {
        let (lo, hi) = bounds::RETRIES;
        let n = delays.len() as u64;
        if !(lo..=hi).contains(&n) {
            return Err(format!(
                "{} has {n} entries: accepted at most {hi} retries",
                key("retry_delays")
            ));
        }
    }
    positive(&key("timeout"), f.timeout)?;
    positive(&key("background_timeout"), f.background_timeout)?;
    positive(&key("max_event_age"), f.max_event_age)?;
    signed(&key("priority"), f.priority, bounds::PRIORITY)?;
    if let Some(token) = &f.invoke_token {
        secret(&key("invoke_token"), token)?;
    }
    if let Some(limit) = &f.rate_limit {
        limit.check(&key("rate_limit"))?;
    }
    Ok(())
}

/// `server.site`: sent to functions in a header, so 1 to 255 printable ASCII characters.
fn site_name(site: &str) -> Result<(), String> {
    let printable = site.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if site.trim().is_empty() || site.len() > 255 || !printable {
        return Err(format!(
            "server.site = {site:?}: expected a name of 1 to 255 printable ASCII characters \
             (it is sent to functions in a header)"
        ));
    }
    Ok(())
}

/// A background function's `max_body` (its mode is known only once its settings are merged).
pub fn background_body(name: &str, max_body: u64) -> Result<(), String> {
    let (lo, hi) = bounds::BACKGROUND_MAX_BODY;
    within(
        &format!("functions.{name}.max_body (a background function)"),
        Value::Size(max_body),
        Value::Size(lo),
        Value::Size(hi),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn refused(text: &str) -> String {
        Config::from_str(text, Path::new("site/fnhost.toml"))
            .map(|_| ())
            .expect_err(text)
            .to_string()
    }

    /// Regression (security item 4): `threads = 100000` aborted the process, `memory = "0MB"`
    /// failed every call, `fuel = 0` timed every call out, `admin_token = ""` turned the admin
    /// API on with a token nothing matches, `memory = "100000GB"` quietly dropped pooling.
    #[test]
    fn each_bad_setting_is_refused_with_file_key_value_and_range() {
        for (text, says) in [
            (
                "[server]\nthreads = 100000\n",
                "site/fnhost.toml: server.threads = 100000 is out of range: accepted from 1 to 256",
            ),
            (
                "[defaults]\nmemory = \"0MB\"\n",
                "site/fnhost.toml: defaults.memory = 0 is out of range: accepted from 64KB to 4GB",
            ),
            (
                "[functions.big]\nmemory = \"100000GB\"\n",
                "site/fnhost.toml: functions.big.memory = 100000GB is out of range: accepted from 64KB to 4GB",
            ),
            (
                "[functions.cpu]\nfuel = 0\n",
                "site/fnhost.toml: functions.cpu.fuel = 0 is out of range: accepted at least 1",
            ),
            (
                "[server]\nmax_concurrency = 0\n",
                "site/fnhost.toml: server.max_concurrency = 0 is out of range: accepted from 1 to 10000",
            ),
            (
                "[server]\nlease = \"100ms\"\n",
                "site/fnhost.toml: server.lease = 100ms is out of range: accepted from 1s to 1h",
            ),
            (
                "[defaults]\nbackground_max_body = \"1GB\"\n",
                "site/fnhost.toml: defaults.background_max_body = 1GB is out of range: accepted from 0 to 64MB",
            ),
            (
                "[functions.a]\nmax_outbound = 0\n",
                "site/fnhost.toml: functions.a.max_outbound = 0 is out of range: accepted from 1 to 1024",
            ),
            (
                "[functions.a]\ninstance_concurrency = 1001\n",
                "site/fnhost.toml: functions.a.instance_concurrency = 1001 is out of range: accepted from 1 to 1000",
            ),
        ] {
            assert_eq!(refused(text), says, "{text}");
        }
    }

    #[test]
    fn a_blank_or_unsendable_token_is_refused() {
        for token in ["", "   ", " padded", "tab\tin"] {
            let e = refused(&format!("[server]\nadmin_token = {token:?}\n"));
            assert!(
                e.starts_with("site/fnhost.toml: server.admin_token: must"),
                "{e}"
            );
        }
        let e = refused("[functions.a]\ninvoke_token = \"\"\n");
        assert!(
            e.contains("functions.a.invoke_token: must not be empty"),
            "{e}"
        );
        assert!(
            Config::from_str("[server]\nadmin_token = \"s3cret-t0ken\"\n", Path::new("f")).is_ok()
        );
    }

    #[test]
    fn values_at_the_bounds_are_accepted() {
        let ok = "[server]\nthreads = 256\nlease = \"1s\"\n[defaults]\nmemory = \"4GB\"\nfuel = 1\n\
                  [functions.a]\nmemory = \"64KB\"\nmax_log = \"0\"\n";
        Config::from_str(ok, Path::new("f")).unwrap();
    }
}
