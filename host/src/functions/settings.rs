//! The settings merge, pure: every setting of one function from its three sources —
//! `[functions.NAME]` in fnhost.toml, then the component's `config` export, then `[defaults]`
//! and the built-in defaults (the `-background` suffix being the last word on the mode).

use std::sync::Arc;
use std::time::Duration;

use super::Mode;
use crate::config::pattern::Pattern;
use crate::config::rate::{Aggregate, RateAction, RateLimitConfig};
use crate::config::schedule::{Overlap, Schedule};
use crate::config::{self, FunctionConfig, OutboundRule, StatusAccess, defaults};
use crate::engine::{Declared, World};

/// Where a function answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Route patterns, parsed once.
    pub patterns: Vec<Pattern>,
    /// Allowed methods (upper case); empty = all.
    pub methods: Vec<String>,
    /// Paths the patterns leave to other routes (`excluded_path`).
    pub excluded: Vec<Pattern>,
}

/// What one invocation (or background attempt) may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget.
    pub timeout: Duration,
    /// Linear-memory cap in bytes.
    pub memory: u64,
    /// Largest request body in bytes.
    pub max_body: u64,
    /// Fuel cap, when metered.
    pub fuel: Option<u64>,
    /// Outbound requests in flight at once.
    pub max_outbound: usize,
    /// Guest output logged per invocation, in bytes.
    pub max_log: u64,
    /// Requests one instance serves in turn (1: a fresh instance each).
    pub reuse: u32,
    /// Requests one instance serves at once (1: one after another).
    pub instance_concurrency: u32,
    /// Durable steps one background invocation may record.
    pub max_steps: u32,
    /// Bytes one recorded step may hold.
    pub max_step_size: u64,
}

/// What the guest sees of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Environment variables (and only these).
    pub env: Arc<[(String, String)]>,
    /// Outbound HTTP allow-list.
    pub outbound: Arc<[OutboundRule]>,
    /// The bundled directory the guest sees as `/`, read-only, and its size cap.
    pub files: Option<(Arc<std::path::Path>, u64)>,
}

/// What happens after a failed background attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delays before each retry; their count + 1 is the number of attempts.
    pub delays: Vec<Duration>,
    /// Count a 5xx answer as a failed attempt.
    pub on_5xx: bool,
}

impl RetryPolicy {
    /// Attempts an invocation gets in all: one, then one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len() + 1).unwrap_or(u32::MAX)
    }
}

/// Where background outcomes are POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Destinations {
    /// For successful invocations.
    pub on_success: Option<http::Uri>,
    /// For exhausted invocations.
    pub on_failure: Option<http::Uri>,
}

/// Every setting of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Sync or background.
    pub mode: Mode,
    /// Where it answers.
    pub routes: Routes,
    /// What one invocation may use.
    pub limits: Limits,
    /// What the guest sees.
    pub sandbox: Sandbox,
    /// Retries.
    pub retry: RetryPolicy,
    /// Destinations.
    pub destinations: Destinations,
    /// When it runs on its own, if it does.
    pub schedule: Option<Schedule>,
    /// What a tick does while its previous run is unfinished.
    pub overlap: Overlap,
    /// Background attempts of it at once on one node, when capped.
    pub concurrency: Option<usize>,
    /// Who may read its invocations' status resources.
    pub access: Access,
    /// Requests per client (or domain) and window, when limited.
    pub rate_limit: Option<RateLimitConfig>,
    /// How long a background invocation may wait for an attempt before it expires.
    pub max_event_age: Option<Duration>,
    /// Among due background invocations, higher first (a point counts as a minute waited).
    pub priority: i32,
    /// Events that start it (background functions only).
    pub events: Vec<String>,
}

/// Who may read a function's background results (`status`, `invoke_token`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// Public (the id is the capability) or behind a token.
    pub status: StatusAccess,
    /// The function's own bearer token for its status resources, besides the admin token.
    pub invoke_token: Option<Arc<str>>,
}

/// Merges the three sources of settings for function `name`: its own table (`table`), what its
/// component declared, and the site's `[defaults]` (`site`). A declared memory above the
/// engine's cap (`max_memory`) is lowered to it. The error names the bad declared value.
pub fn resolve(
    name: &str,
    world: World,
    declared: &Declared,
    table: Option<&FunctionConfig>,
    site: &FunctionConfig,
    max_memory: u64,
) -> Result<Settings, String> {
    let empty = FunctionConfig::default();
    let from = Sources {
        name,
        world,
        declared,
        table: table.unwrap_or(&empty),
        site,
    };
    let mode = from.mode();
    let schedule = from.schedule()?;
    Ok(Settings {
        mode,
        routes: from.routes()?,
        limits: from.limits(mode, schedule.is_some(), max_memory)?,
        sandbox: from.sandbox(),
        retry: from.retry(schedule.is_some()),
        destinations: from.destinations(),
        schedule,
        overlap: (from.table.overlap.or(from.site.overlap)).unwrap_or_default(),
        concurrency: from.table.concurrency.or(from.site.concurrency),
        access: from.access(),
        rate_limit: from.rate_limit()?,
        max_event_age: from.max_event_age(mode)?,
        priority: from.table.priority.or(from.site.priority).unwrap_or(0),
        events: from.events(mode)?,
    })
}

/// The three sources of one function's settings, strongest first: its `[functions.NAME]`
/// table, its component's `config` export, the site's `[defaults]` (then the built-ins).
struct Sources<'a> {
    name: &'a str,
    world: World,
    table: &'a FunctionConfig,
    declared: &'a Declared,
    site: &'a FunctionConfig,
}

impl Sources<'_> {
    /// Background when any source says so, else when the name ends in `-background`.
    fn mode(&self) -> Mode {
        let background = self
            .table
            .background
            .or(self.declared.background)
            .or(self.site.background)
            .unwrap_or_else(|| self.name.ends_with("-background"));
        if background {
            Mode::Background
        } else {
            Mode::Sync
        }
    }

    /// Declared paths (the table's, else the export's), else the function's URL and everything
    /// under it, as on Netlify (Express-style apps); and the methods allowed.
    fn routes(&self) -> Result<Routes, String> {
        let export = |e: String| format!("config export: {e}");
        let patterns = if !self.table.path.0.is_empty() {
            self.table.path.0.iter().map(|p| p.0.clone()).collect()
        } else if !self.declared.paths.is_empty() {
            let parse = |p: &String| Pattern::parse(p).map_err(|e| export(e.to_string()));
            self.declared
                .paths
                .iter()
                .map(parse)
                .collect::<Result<_, _>>()?
        } else {
            vec![
                Pattern::parse(&format!("/.netlify/functions/{}/*", self.name))
                    .map_err(|e| format!("the file name makes no route: {e}"))?,
            ]
        };
        let methods = if !self.table.method.0.is_empty() {
            self.table.method.0.iter().map(|m| m.0.clone()).collect()
        } else {
            let parse = |m: &String| m.parse::<config::Method>().map(|m| m.0).map_err(export);
            self.declared
                .methods
                .iter()
                .map(parse)
                .collect::<Result<_, _>>()?
        };
        let own: Vec<Pattern> = if !self.table.excluded_path.0.is_empty() {
            self.table
                .excluded_path
                .0
                .iter()
                .map(|p| p.0.clone())
                .collect()
        } else {
            let parse =
                |p: &String| Pattern::parse(p).map_err(|e| export(format!("excluded-paths: {e}")));
            (self.declared.excluded_paths.iter())
                .map(parse)
                .collect::<Result<_, _>>()?
        };
        let excluded = (own.into_iter())
            .chain(self.site.excluded_path.0.iter().map(|p| p.0.clone()))
            .collect();
        Ok(Routes {
            patterns,
            methods,
            excluded,
        })
    }

    /// The table's schedule, else the export's (parsed here), in the table's zone, else the
    /// site's, else UTC.
    fn schedule(&self) -> Result<Option<Schedule>, String> {
        let schedule = match (&self.table.schedule, &self.declared.schedule) {
            (Some(s), _) => s.clone(),
            (None, Some(text)) => text
                .parse()
                .map_err(|e| format!("config export: schedule: {e}"))?,
            (None, None) => return Ok(None),
        };
        Ok(Some(
            match self.table.schedule_tz.or(self.site.schedule_tz) {
                Some(zone) => schedule.in_zone(zone.0),
                None => schedule,
            },
        ))
    }

    /// Budgets and caps. `[defaults]` has a timeout and a body limit for each mode; a
    /// scheduled function gets Netlify's 30 s unless a budget is set for it.
    fn limits(&self, mode: Mode, scheduled: bool, max_memory: u64) -> Result<Limits, String> {
        let (table, site) = (self.table, self.site);
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
        let builtin_timeout = if scheduled {
            defaults::SCHEDULED_TIMEOUT
        } else {
            builtin_timeout
        };
        let timeout = (table.timeout.map(|t| t.0))
            .or(self.declared.timeout)
            .or(site_timeout.map(|t| t.0))
            .unwrap_or(builtin_timeout);
        let max_body = table.max_body.or(site_body).map_or(builtin_body, |b| b.0);
        if mode == Mode::Background {
            config::ranges::background_body(self.name, max_body)?;
        }
        Ok(Limits {
            timeout,
            memory: self.memory(max_memory)?,
            max_body,
            fuel: table.fuel.or(site.fuel),
            max_outbound: (table.max_outbound.or(site.max_outbound))
                .unwrap_or(defaults::MAX_OUTBOUND),
            max_log: (table.max_log.or(site.max_log)).map_or(defaults::MAX_LOG, |b| b.0),
            reuse: self.reuse(mode)?,
            instance_concurrency: self.instance_concurrency(mode)?,
            max_steps: (table.max_steps.or(site.max_steps)).unwrap_or(defaults::MAX_STEPS),
            max_step_size: (table.max_step_size.or(site.max_step_size))
                .map_or(defaults::MAX_STEP_SIZE, |b| b.0),
        })
    }

    /// The table's rate limit, else the export's (checked here as fnhost.toml's are), else
    /// the site's.
    fn rate_limit(&self) -> Result<Option<RateLimitConfig>, String> {
        if let Some(limit) = &self.table.rate_limit {
            return Ok(Some(limit.clone()));
        }
        let Some(declared) = &self.declared.rate_limit else {
            return Ok(self.site.rate_limit.clone());
        };
        let aggregate_by = [(declared.by_ip, Aggregate::Ip)]
            .into_iter()
            .chain([(declared.by_domain, Aggregate::Domain)])
            .filter_map(|(on, by)| on.then_some(by))
            .collect();
        let limit = RateLimitConfig {
            window_limit: declared.window_limit.into(),
            window_size: config::Humantime(declared.window_size),
            aggregate_by,
            action: declared
                .rewrite
                .clone()
                .map_or(RateAction::RateLimit, RateAction::Rewrite),
        };
        limit.check("config export: rate-limit")?;
        Ok(Some(limit))
    }

    /// The events that start the function: a background function's only, each a name an
    /// event can have.
    fn events(&self, mode: Mode) -> Result<Vec<String>, String> {
        let events = self.table.events.clone().unwrap_or_default();
        if !events.is_empty() && mode == Mode::Sync {
            return Err(format!(
                "functions.{}.events: only a background function is started by events; this \
                 one is sync",
                self.name
            ));
        }
        if let Some(bad) = events.iter().find(|e| !crate::workflow::is_event_name(e)) {
            return Err(format!(
                "functions.{}.events: {bad:?} is not an event name (1 to 256 bytes, no '/', \
                 '?', '#' or control character)",
                self.name
            ));
        }
        Ok(events)
    }

    /// The event age: only a background function waits in the queue. Set for one function
    /// that does not, it is an error; set in `[defaults]`, it applies to those that do.
    fn max_event_age(&self, mode: Mode) -> Result<Option<Duration>, String> {
        match (self.table.max_event_age, mode) {
            (Some(_), Mode::Sync) => Err(format!(
                "functions.{}.max_event_age: only a background function waits in the queue; \
                 this one is sync",
                self.name
            )),
            (Some(age), Mode::Background) => Ok(Some(age.0)),
            (None, Mode::Background) => Ok(self.site.max_event_age.map(|a| a.0)),
            (None, Mode::Sync) => Ok(None),
        }
    }

    /// Requests per instance: only a synchronous WASI 0.3 function reuses instances. Set in
    /// `[defaults]`, `reuse` applies to those and leaves the others fresh; set for one function
    /// that cannot reuse, it is an error naming why.
    fn reuse(&self, mode: Mode) -> Result<u32, String> {
        let reusable = mode == Mode::Sync && self.world == World::Service;
        match (self.table.reuse, self.site.reuse) {
            (Some(n), _) if n > 1 && !reusable => Err(format!(
                "functions.{}.reuse = {n}: only a synchronous WASI 0.3 function reuses \
                 instances; this one is {} and speaks {}",
                self.name,
                mode,
                self.world.as_str()
            )),
            (Some(n), _) => Ok(n),
            (None, Some(n)) if reusable => Ok(n),
            _ => Ok(defaults::REUSE),
        }
    }

    /// Requests one instance serves at once: like `reuse`, only for a synchronous WASI 0.3
    /// function; at most `reuse`, and not with a fuel cap (interleaved requests cannot each be
    /// metered).
    fn instance_concurrency(&self, mode: Mode) -> Result<u32, String> {
        let reusable = mode == Mode::Sync && self.world == World::Service;
        let at_once = match (
            self.table.instance_concurrency,
            self.site.instance_concurrency,
        ) {
            (Some(m), _) if m > 1 && !reusable => {
                return Err(format!(
                    "functions.{}.instance_concurrency = {m}: only a synchronous WASI 0.3 \
                     function shares an instance; this one is {} and speaks {}",
                    self.name,
                    mode,
                    self.world.as_str()
                ));
            }
            (Some(m), _) => m,
            (None, Some(m)) if reusable => m,
            _ => return Ok(defaults::INSTANCE_CONCURRENCY),
        };
        let reuse = self.reuse(mode)?;
        if at_once > reuse {
            return Err(format!(
                "functions.{}: instance_concurrency = {at_once} is more than reuse = {reuse} \
                 (the requests one instance serves in all); set reuse = {at_once} or more",
                self.name
            ));
        }
        if at_once > 1 && (self.table.fuel.or(self.site.fuel)).is_some() {
            return Err(format!(
                "functions.{}: instance_concurrency = {at_once} with fuel: requests interleaved \
                 in one instance cannot each be metered; drop one of the two",
                self.name
            ));
        }
        Ok(at_once)
    }

    /// The memory cap; one declared by the component above the engine's cap is lowered to it.
    fn memory(&self, max_memory: u64) -> Result<u64, String> {
        let memory = (self.table.memory.map(|m| m.0))
            .or(self.declared.memory)
            .or(self.site.memory.map(|m| m.0))
            .unwrap_or(defaults::MEMORY);
        if memory < config::ranges::bounds::MEMORY.0 {
            return Err(format!(
                "memory of {memory} bytes is less than one wasm page (64KB)"
            ));
        }
        if self.table.memory.is_none() && memory > max_memory {
            tracing::warn!(
                "{}: declared memory {memory} bytes exceeds the engine's cap; using {max_memory}",
                self.name
            );
            return Ok(max_memory);
        }
        Ok(memory)
    }

    /// Environment (the table's variables over `[defaults]`') and the outbound allow-list
    /// (the table's, else `[defaults]`').
    fn sandbox(&self) -> Sandbox {
        let mut env = self.site.env.clone();
        env.extend(self.table.env.clone());
        let outbound = if self.table.allowed_outbound_hosts.is_empty() {
            &self.site.allowed_outbound_hosts
        } else {
            &self.table.allowed_outbound_hosts
        };
        let max_files =
            (self.table.max_files.or(self.site.max_files)).map_or(defaults::MAX_FILES, |b| b.0);
        Sandbox {
            env: env.into_iter().collect::<Vec<_>>().into(),
            outbound: outbound.clone().into(),
            files: (self.table.files.as_deref()).map(|dir| (Arc::from(dir), max_files)),
        }
    }

    /// Retry delays; a scheduled run is not retried unless the function's own `retry_delays`
    /// say so.
    fn retry(&self, scheduled: bool) -> RetryPolicy {
        let listed = |v: &Vec<config::Humantime>| v.iter().map(|d| d.0).collect();
        let delays = match (&self.table.retry_delays, scheduled) {
            (Some(v), _) => listed(v),
            (None, true) => Vec::new(),
            (None, false) => (self.site.retry_delays.as_ref())
                .map_or_else(|| defaults::RETRY_DELAYS.to_vec(), listed),
        };
        RetryPolicy {
            delays,
            on_5xx: (self.table.retry_on_5xx.or(self.site.retry_on_5xx)).unwrap_or(false),
        }
    }

    fn destinations(&self) -> Destinations {
        let url = |t: &Option<config::Url>, s: &Option<config::Url>| {
            t.clone().or_else(|| s.clone()).map(|u| u.0)
        };
        Destinations {
            on_success: url(&self.table.on_success, &self.site.on_success),
            on_failure: url(&self.table.on_failure, &self.site.on_failure),
        }
    }

    fn access(&self) -> Access {
        Access {
            status: self.table.status.or(self.site.status).unwrap_or_default(),
            invoke_token: (self.table.invoke_token.as_deref())
                .or(self.site.invoke_token.as_deref())
                .map(Arc::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const GB: u64 = 1 << 30;

    fn site(toml: &str) -> Config {
        Config::from_str(toml, Path::new("fnhost.toml")).unwrap()
    }

    fn merge(name: &str, declared: &Declared, toml: &str) -> Result<Settings, String> {
        let c = site(toml);
        resolve(
            name,
            World::Proxy,
            declared,
            c.functions.get(name),
            &c.defaults,
            GB,
        )
    }

    #[test]
    fn a_concurrency_cap_is_per_function_or_from_defaults_and_never_zero() {
        assert_eq!(
            merge("a-background", &Declared::default(), "")
                .unwrap()
                .concurrency,
            None
        );
        let toml = "[defaults]\nconcurrency = 4\n[functions.b-background]\nconcurrency = 1\n";
        assert_eq!(
            merge("a-background", &Declared::default(), toml)
                .unwrap()
                .concurrency,
            Some(4)
        );
        assert_eq!(
            merge("b-background", &Declared::default(), toml)
                .unwrap()
                .concurrency,
            Some(1)
        );
        let err = Config::from_str("[functions.c]\nconcurrency = 0\n", Path::new("fnhost.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("functions.c.concurrency = 0 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn events_and_priority_are_for_background_functions_and_checked() {
        let toml = "[defaults]\npriority = 3\n[functions.b-background]\nevents = [\"order.paid\"]\n\
                    priority = -7\n[functions.s]\nevents = [\"x\"]\n\
                    [functions.bad-background]\nevents = [\"a/b\"]\n";
        let of = |name: &str| merge(name, &Declared::default(), toml);
        let b = of("b-background").unwrap();
        assert_eq!((b.events, b.priority), (vec!["order.paid".to_string()], -7));
        assert_eq!(of("c-background").unwrap().priority, 3);
        let e = of("s").unwrap_err();
        assert!(
            e.contains("functions.s.events: only a background function"),
            "{e}"
        );
        let e = of("bad-background").unwrap_err();
        assert!(e.contains("\"a/b\" is not an event name"), "{e}");
        let e = Config::from_str("[defaults]\npriority = 51\n", Path::new("fnhost.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("defaults.priority = 51 is out of range: accepted from -50 to 50"),
            "{e}"
        );
    }

    #[test]
    fn an_event_age_is_for_background_functions_only() {
        let toml = "[defaults]\nmax_event_age = \"6h\"\n[functions.b-background]\nmax_event_age = \"1m\"\n\
                    [functions.s]\nmax_event_age = \"1m\"\n";
        let age = |name: &str| merge(name, &Declared::default(), toml).map(|s| s.max_event_age);
        assert_eq!(age("b-background"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(age("c-background"), Ok(Some(Duration::from_secs(6 * 3600))));
        assert_eq!(age("t"), Ok(None));
        let e = age("s").unwrap_err();
        assert!(
            e.contains("functions.s.max_event_age: only a background function"),
            "{e}"
        );
        let e = Config::from_str("[defaults]\nfiles = \"x\"\n", Path::new("fnhost.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("defaults.files: bundled files belong to one function"),
            "{e}"
        );
    }

    #[test]
    fn built_in_defaults_and_the_suffix() {
        let s = merge("hello", &Declared::default(), "").unwrap();
        assert_eq!(s.mode, Mode::Sync);
        assert_eq!(s.routes.patterns[0].as_str(), "/.netlify/functions/hello/*");
        let p = &s.routes.patterns[0];
        assert!(p.matches("/.netlify/functions/hello").is_some());
        assert!(p.matches("/.netlify/functions/hello/users/7").is_some());
        assert!(p.matches("/.netlify/functions/hello2").is_none());
        assert!(s.routes.methods.is_empty());
        assert_eq!(s.limits.timeout, defaults::SYNC_TIMEOUT);
        assert_eq!(s.limits.max_body, defaults::SYNC_MAX_BODY);
        assert_eq!(s.limits.memory, defaults::MEMORY);
        assert_eq!(s.retry.delays, defaults::RETRY_DELAYS.to_vec());

        let b = merge("report-background", &Declared::default(), "").unwrap();
        assert_eq!(b.mode, Mode::Background);
        assert_eq!(b.limits.timeout, defaults::BACKGROUND_TIMEOUT);
        assert_eq!(b.limits.max_body, defaults::BACKGROUND_MAX_BODY);
    }

    #[test]
    fn an_export_declares_excluded_paths_and_a_rate_limit_the_file_can_override() {
        let declared = Declared {
            excluded_paths: vec!["/api/health".into()],
            rate_limit: Some(crate::engine::DeclaredRateLimit {
                window_limit: 5,
                window_size: Duration::from_secs(10),
                by_ip: true,
                by_domain: false,
                rewrite: Some("/limited".into()),
            }),
            ..Declared::default()
        };
        let s = merge(
            "api",
            &declared,
            "[defaults]
excluded_path = \"/x\"\n",
        )
        .unwrap();
        let excluded: Vec<_> = s.routes.excluded.iter().map(|p| p.as_str()).collect();
        assert_eq!(excluded, ["/api/health", "/x"]);
        let limit = s.rate_limit.unwrap();
        assert_eq!(
            (
                limit.window_limit,
                limit.window(),
                limit.aggregate_by,
                limit.action
            ),
            (
                5,
                Duration::from_secs(10),
                vec![Aggregate::Ip],
                RateAction::Rewrite("/limited".into())
            )
        );
        let toml = "[functions.api]\nexcluded_path = \"/own\"\n\
                    rate_limit = { window_limit = 9, window_size = \"1m\" }\n";
        let s = merge("api", &declared, toml).unwrap();
        assert_eq!(s.routes.excluded[0].as_str(), "/own");
        assert_eq!(s.rate_limit.unwrap().window_limit, 9);

        let mut bad = declared.clone();
        bad.rate_limit.as_mut().unwrap().window_size = Duration::from_secs(7200);
        let e = merge("api", &bad, "").unwrap_err();
        assert!(
            e.contains("config export: rate-limit.window_size = 2h"),
            "{e}"
        );
        bad.rate_limit.as_mut().unwrap().window_size = Duration::from_secs(1);
        bad.rate_limit.as_mut().unwrap().rewrite = Some("http://elsewhere".into());
        let e = merge("api", &bad, "").unwrap_err();
        assert!(e.contains("config export: rate-limit.action"), "{e}");
        bad.excluded_paths = vec!["no-slash".into()];
        let e = merge("api", &bad, "").unwrap_err();
        assert!(e.contains("config export: excluded-paths:"), "{e}");
    }

    #[test]
    fn file_wins_over_export_and_export_over_suffix_and_site() {
        let declared = Declared {
            background: Some(false),
            paths: vec!["/declared".into()],
            methods: vec!["get".into()],
            timeout: Some(Duration::from_secs(3)),
            memory: Some(64 << 20),
            ..Declared::default()
        };
        // The export beats the `-background` suffix and `[defaults]`.
        let s = merge(
            "x-background",
            &declared,
            "[defaults]\ntimeout = \"9s\"\nbackground = true\n",
        )
        .unwrap();
        assert_eq!(s.mode, Mode::Sync);
        assert_eq!(s.routes.patterns[0].as_str(), "/declared");
        assert_eq!(s.routes.methods, ["GET"]);
        assert_eq!(s.limits.timeout, Duration::from_secs(3));
        assert_eq!(s.limits.memory, 64 << 20);
        // fnhost.toml beats the export, key by key.
        let s = merge(
            "x-background",
            &declared,
            "[functions.x-background]\nbackground = true\npath = \"/file\"\nmethod = \"POST\"\ntimeout = \"7s\"\n",
        )
        .unwrap();
        assert_eq!(s.mode, Mode::Background);
        assert_eq!(s.routes.patterns[0].as_str(), "/file");
        assert_eq!(s.routes.methods, ["POST"]);
        assert_eq!(s.limits.timeout, Duration::from_secs(7));
        assert_eq!(s.limits.memory, 64 << 20, "unset in the file: the export's");
    }

    #[test]
    fn site_defaults_fill_in_per_mode_and_tables_merge() {
        let toml = "[defaults]\ntimeout = \"2s\"\nbackground_timeout = \"1m\"\nmax_body = \"1KB\"\n\
                    background_max_body = \"2KB\"\nretry_delays = [\"1s\"]\nretry_on_5xx = true\n\
                    env = { A = \"site\", B = \"site\" }\non_failure = \"http://127.0.0.1:9/fail\"\n\
                    [functions.job-background]\nenv = { B = \"own\" }\n";
        let sync = merge("hello", &Declared::default(), toml).unwrap();
        assert_eq!(sync.limits.timeout, Duration::from_secs(2));
        assert_eq!(sync.limits.max_body, 1024);
        let bg = merge("job-background", &Declared::default(), toml).unwrap();
        assert_eq!(bg.limits.timeout, Duration::from_secs(60));
        assert_eq!(bg.limits.max_body, 2048);
        assert_eq!(bg.retry.delays, [Duration::from_secs(1)]);
        assert!(bg.retry.on_5xx);
        assert_eq!(
            &*bg.sandbox.env,
            [("A".into(), "site".into()), ("B".into(), "own".into())]
        );
        assert_eq!(
            bg.destinations.on_failure.unwrap().to_string(),
            "http://127.0.0.1:9/fail"
        );
        assert_eq!(bg.destinations.on_success, None);
    }

    #[test]
    fn a_scheduled_function_gets_30_s_and_no_retries_unless_set() {
        let s = merge(
            "report",
            &Declared::default(),
            "[functions.report]\nschedule = \"@daily\"\n",
        )
        .unwrap();
        assert_eq!(s.schedule.as_ref().map(|s| s.as_str()), Some("@daily"));
        assert_eq!(s.limits.timeout, Duration::from_secs(30));
        assert!(s.retry.delays.is_empty());
        let s = merge(
            "report",
            &Declared::default(),
            "[functions.report]\nschedule = \"@daily\"\ntimeout = \"2m\"\nretry_delays = [\"1s\"]\n",
        )
        .unwrap();
        assert_eq!(s.limits.timeout, Duration::from_secs(120));
        assert_eq!(s.retry.delays, [Duration::from_secs(1)]);
    }

    #[test]
    fn a_declared_schedule_applies_unless_the_file_sets_one() {
        let declared = Declared {
            schedule: Some("@hourly".into()),
            ..Declared::default()
        };
        let s = merge("report", &declared, "").unwrap();
        assert_eq!(s.schedule.as_ref().map(|s| s.as_str()), Some("@hourly"));
        assert_eq!(s.limits.timeout, Duration::from_secs(30));
        assert!(s.retry.delays.is_empty());
        let s = merge(
            "report",
            &declared,
            "[functions.report]\nschedule = \"*/2 * * * * *\"\n",
        )
        .unwrap();
        assert_eq!(s.schedule.unwrap().as_str(), "*/2 * * * * *");
        let bad = Declared {
            schedule: Some("every day".into()),
            ..Declared::default()
        };
        let e = merge("report", &bad, "").unwrap_err();
        assert!(
            e.starts_with("config export: schedule: invalid schedule \"every day\""),
            "{e}"
        );
    }

    #[test]
    fn declared_memory_is_capped_but_the_files_is_not() {
        let declared = Declared {
            memory: Some(2 * GB),
            ..Declared::default()
        };
        assert_eq!(merge("f", &declared, "").unwrap().limits.memory, GB);
        let c = site("[functions.f]\nmemory = \"2GB\"\n");
        let s = resolve(
            "f",
            World::Proxy,
            &declared,
            c.functions.get("f"),
            &c.defaults,
            2 * GB,
        )
        .unwrap();
        assert_eq!(s.limits.memory, 2 * GB);
    }

    #[test]
    fn a_bad_declared_value_is_named() {
        let bad_path = Declared {
            paths: vec!["nope".into()],
            ..Declared::default()
        };
        let e = merge("f", &bad_path, "").unwrap_err();
        assert!(e.starts_with("config export: invalid path \"nope\""), "{e}");
        let bad_method = Declared {
            methods: vec!["G T".into()],
            ..Declared::default()
        };
        assert!(
            merge("f", &bad_method, "")
                .unwrap_err()
                .contains("invalid method")
        );
    }
}
