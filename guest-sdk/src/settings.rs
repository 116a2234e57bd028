//! `Settings`: what a function declares about itself through the `fnhost:function/config`
//! export. A builder over the WIT record; `fnhost.toml` overrides anything declared here.

use crate::config_bindings::exports::fnhost::function::config as wit;

/// How a function wants to be run, returned from the `config` function given to
/// [`function!`](crate::function).
///
/// Every field starts unset (or empty), meaning "use `fnhost.toml`, then the built-in default".
///
/// ```
/// use fnhost_sdk::Settings;
///
/// let settings = Settings::new()
///     .path("/api/items/:id")
///     .method("get")
///     .timeout_ms(5_000);
/// assert_eq!(settings, Settings::new().path("/api/items/:id").method("GET").timeout_ms(5_000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    background: Option<bool>,
    paths: Vec<String>,
    methods: Vec<String>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u32>,
    schedule: Option<String>,
    excluded_paths: Vec<String>,
    rate_limit: Option<RateLimit>,
}

impl Settings {
    /// Settings with every field unset: the function runs with `fnhost.toml`'s values or the
    /// defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run as a background function: fnhost answers `202` at once, runs the function detached
    /// and retries it on failure.
    pub fn background(mut self, background: bool) -> Self {
        self.background = Some(background);
        self
    }

    /// Serve the function at `path` (repeatable) instead of `/.netlify/functions/NAME`.
    /// Segments may be `:param` (read with [`RequestExt::param`](crate::RequestExt::param));
    /// a trailing `*` matches the rest of the path.
    pub fn path(mut self, path: &str) -> Self {
        self.paths.push(path.to_owned());
        self
    }

    /// Accept this HTTP method (repeatable; upper-cased). With none, every method is accepted.
    pub fn method(mut self, method: &str) -> Self {
        self.methods.push(method.to_ascii_uppercase());
        self
    }

    /// Wall-clock budget for one invocation, in milliseconds.
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Linear-memory cap for one instance, in mebibytes.
    pub fn memory_mb(mut self, memory_mb: u32) -> Self {
        self.memory_mb = Some(memory_mb);
        self
    }

    /// Run on a schedule, like Netlify's `config.schedule`: 5-field cron in UTC
    /// (`"0 * * * *"`), a nickname (`"@yearly"`, `"@monthly"`, `"@weekly"`, `"@daily"`,
    /// `"@hourly"`) or fnhost's 6-field form with a leading seconds field. Each tick is one
    /// background invocation: a `POST` with the body `{"next_run": "<RFC 3339 UTC>"}` and the
    /// header `x-nf-event: schedule`, with a 30 s budget and no retries unless set. fnhost
    /// checks the expression when it loads the function and refuses a bad one.
    pub fn schedule(mut self, schedule: &str) -> Self {
        self.schedule = Some(schedule.to_owned());
        self
    }
}

impl Settings {
    /// Leave `path` to the next route (else `404`) although one of the function's paths matches
    /// it (repeatable; same syntax as [`path`](Self::path)), like Netlify's `excludedPath`.
    pub fn excluded_path(mut self, path: &str) -> Self {
        self.excluded_paths.push(path.to_owned());
        self
    }

    /// Limit how often one client may call the function, like Netlify's `config.rateLimit`:
    /// a limited request gets `429` with `Retry-After` (or the rewrite) before anything runs.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
}

/// A rate limit for [`Settings::rate_limit`]: at most `window_limit` requests per key in any
/// sliding window of `window_size_secs` seconds. The key is the client address and the
/// domain unless narrowed with [`aggregate_by_ip`](Self::aggregate_by_ip) or
/// [`aggregate_by_domain`](Self::aggregate_by_domain).
///
/// ```
/// use fnhost_sdk::{RateLimit, Settings};
///
/// // 100 requests a minute per client address; the rest are served /limited instead.
/// let settings = Settings::new().rate_limit(RateLimit::new(100, 60).aggregate_by_ip().rewrite("/limited"));
/// # let _ = settings;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    window_limit: u32,
    window_size_secs: u32,
    aggregate_by: Vec<wit::Aggregate>,
    rewrite: Option<String>,
}

impl RateLimit {
    /// `window_limit` requests (1 to 1,000,000) per `window_size_secs` seconds (1 to 3,600);
    /// fnhost refuses the function at load, naming the value, outside those ranges.
    pub fn new(window_limit: u32, window_size_secs: u32) -> Self {
        RateLimit {
            window_limit,
            window_size_secs,
            aggregate_by: Vec::new(),
            rewrite: None,
        }
    }

    /// Count by client address (see fnhost's `trusted_proxies`; IPv6 by /64).
    pub fn aggregate_by_ip(mut self) -> Self {
        self.aggregate_by.push(wit::Aggregate::Ip);
        self
    }

    /// Count by the request's domain (its `Host`, without the port).
    pub fn aggregate_by_domain(mut self) -> Self {
        self.aggregate_by.push(wit::Aggregate::Domain);
        self
    }

    /// Serve this path of the site to a limited request instead of `429`.
    pub fn rewrite(mut self, to: &str) -> Self {
        self.rewrite = Some(to.to_owned());
        self
    }
}

impl From<RateLimit> for wit::RateLimit {
    fn from(r: RateLimit) -> Self {
        wit::RateLimit {
            window_limit: r.window_limit,
            window_size_secs: r.window_size_secs,
            aggregate_by: r.aggregate_by,
            rewrite: r.rewrite,
        }
    }
}

impl From<Settings> for wit::Settings {
    fn from(s: Settings) -> Self {
        wit::Settings {
            background: s.background,
            paths: s.paths,
            methods: s.methods,
            timeout_ms: s.timeout_ms,
            memory_mb: s.memory_mb,
            schedule: s.schedule,
            excluded_paths: s.excluded_paths,
            rate_limit: s.rate_limit.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_leaves_everything_unset() {
        let wit: wit::Settings = Settings::new().into();
        assert_eq!(wit.background, None);
        assert!(wit.paths.is_empty() && wit.methods.is_empty());
        assert_eq!((wit.timeout_ms, wit.memory_mb), (None, None));
        assert_eq!(wit.schedule, None);
        assert!(wit.excluded_paths.is_empty() && wit.rate_limit.is_none());
    }

    #[test]
    fn builder_fills_the_record() {
        let wit: wit::Settings = Settings::new()
            .background(true)
            .path("/a")
            .path("/b/:id")
            .method("get")
            .method("Post")
            .timeout_ms(1500)
            .memory_mb(64)
            .schedule("@daily")
            .excluded_path("/a/health")
            .rate_limit(RateLimit::new(10, 60).aggregate_by_ip().rewrite("/slow"))
            .into();
        assert_eq!(wit.background, Some(true));
        assert_eq!(wit.paths, ["/a", "/b/:id"]);
        assert_eq!(wit.methods, ["GET", "POST"]);
        assert_eq!(wit.timeout_ms, Some(1500));
        assert_eq!(wit.memory_mb, Some(64));
        assert_eq!(wit.schedule.as_deref(), Some("@daily"));
        assert_eq!(wit.excluded_paths, ["/a/health"]);
        let limit = wit.rate_limit.unwrap();
        assert_eq!((limit.window_limit, limit.window_size_secs), (10, 60));
        assert!(matches!(
            limit.aggregate_by.as_slice(),
            [wit::Aggregate::Ip]
        ));
        assert_eq!(limit.rewrite.as_deref(), Some("/slow"));
    }
}
