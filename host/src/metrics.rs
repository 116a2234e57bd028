//! Prometheus metrics: every metric fnhost exports is named, described and recorded here (the
//! `metrics` crate's macros, rendered by `metrics-exporter-prometheus` at `/.fnhost/metrics`).
//! Recording is a no-op until [`install`] has run (library tests, `fnhost list`).
//!
//! Labels take only values fnhost chooses (function names from the table, fixed words), so the
//! number of series is bounded by the functions served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets for durations, in seconds: 0.5 ms to 15 min.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];

/// Invocations (sync requests and background attempts) by function, mode and outcome.
pub const INVOCATIONS: &str = "fnhost_invocations_total";
/// Wall-clock time of invocations, instantiation included.
pub const DURATION: &str = "fnhost_invocation_duration_seconds";
/// Time to instantiate a component.
pub const INSTANTIATION: &str = "fnhost_instantiation_duration_seconds";
/// Invocations running now, by mode.
pub const IN_FLIGHT: &str = "fnhost_invocations_in_flight";
/// Requests fnhost refused itself, by reason.
pub const REJECTIONS: &str = "fnhost_rejections_total";
/// Invocations stopped at a limit, by function, mode and limit.
pub const STOPS: &str = "fnhost_limit_stops_total";
/// Requests a function's `rate_limit` stopped, by function and action.
pub const RATE_LIMITED: &str = "fnhost_rate_limited_total";
/// Requests a `[[redirects]]` rule's `rate_limit` stopped, by rule (its `from`) and action.
pub const RULE_RATE_LIMITED: &str = "fnhost_rule_rate_limited_total";
/// Schedule ticks not run, by function and reason (`paused`, `overlap`).
pub const SCHEDULE_SKIPPED: &str = "fnhost_schedule_skipped_total";
/// Background attempts that failed and were scheduled again.
pub const RETRIES: &str = "fnhost_retries_total";
/// Background invocations that failed for the last time.
pub const DEAD: &str = "fnhost_background_dead_total";
/// Background invocations not run: claimed past their `max_event_age`.
pub const EXPIRED: &str = "fnhost_background_expired_total";
/// Background attempts that ended sleeping or waiting (`fnhost:function/steps`).
pub const SUSPENSIONS: &str = "fnhost_background_suspensions_total";
/// Events received, and the waiting invocations they woke.
pub const EVENTS: &str = "fnhost_events_total";
/// Waiting invocations woken by an event.
pub const WAKES: &str = "fnhost_event_wakes_total";
/// Stored background invocations by state.
pub const QUEUE: &str = "fnhost_queue_invocations";
/// Destination deliveries attempted, by outcome.
pub const DELIVERIES: &str = "fnhost_deliveries_total";
/// Whether the queue's writes are failing now (1) or not (0), read at each scrape.
pub const QUEUE_FAILING: &str = "fnhost_queue_failing";
/// Fuel burnt, when metering is on.
pub const FUEL: &str = "fnhost_fuel_consumed_total";
/// The deploy this node serves: 1 for its id, 0 for those it served before (an info metric:
/// join on it rather than labelling every series with the deploy).
pub const DEPLOY: &str = "fnhost_deploy_info";
/// The functions served, with the WASI HTTP world each speaks: 1 while served, 0 once gone.
pub const FUNCTION: &str = "fnhost_function_info";
/// Spans the collector accepted.
pub const SPANS_EXPORTED: &str = "fnhost_trace_spans_exported_total";
/// Spans that never reached the collector, by reason (`queue_full`, `export_failed`).
pub const SPANS_DROPPED: &str = "fnhost_trace_spans_dropped_total";

/// Installs the process-wide recorder (once; later calls do nothing) and describes every
/// metric.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed: then this handle renders nothing.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /.fnhost/metrics stays empty"
            );
        }
        describe();
        describe_traces();
        handle
    });
}

fn describe() {
    describe_counter!(
        INVOCATIONS,
        "Invocations (sync requests and background attempts) by function, mode and outcome \
         (completed, trapped, timeout, memory_cap)"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Wall-clock time of an invocation, instantiation included, by function and mode"
    );
    describe_histogram!(
        INSTANTIATION,
        Unit::Seconds,
        "Time to instantiate a component for one invocation, by function"
    );
    describe_gauge!(IN_FLIGHT, "Invocations running now, by mode");
    describe_counter!(
        REJECTIONS,
        "Requests fnhost answered itself instead of a function, by reason (body_too_large, \
         origin_not_allowed, overloaded, rate_limited, shutting_down, body_timeout, \
         queue_unavailable)"
    );
    describe_counter!(
        RULE_RATE_LIMITED,
        "Requests a [[redirects]] rule's rate_limit stopped, by rule (its from pattern) and action"
    );
    describe_counter!(
        SCHEDULE_SKIPPED,
        "Schedule ticks not run, by function and reason (paused: the schedule is paused; \
         overlap: the previous run was unfinished and overlap = \"skip\")"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests a function's rate_limit stopped before it ran, by function and action \
         (rate_limit: answered 429; rewrite: served the rewrite target)"
    );
    describe_gauge!(
        QUEUE_FAILING,
        "1 while the queue refuses writes (disk full, database down), else 0; /.fnhost/health \
         names the error"
    );
    describe_counter!(
        STOPS,
        "Invocations stopped at a limit, by function, mode and limit (time, fuel, memory)"
    );
    describe_background();
    describe_served();
}

/// The background queue's series.
fn describe_background() {
    describe_counter!(
        RETRIES,
        "Background attempts that failed and will run again, by function"
    );
    describe_counter!(
        DEAD,
        "Background invocations that failed for the last time, by function"
    );
    describe_counter!(
        EXPIRED,
        "Background invocations not run because they waited past their max_event_age, by \
         function"
    );
    describe_counter!(
        SUSPENSIONS,
        "Background attempts that ended sleeping or waiting (durable steps), by function and \
         kind (sleep, wait); no instance, slot or lease is held meanwhile"
    );
    describe_counter!(
        EVENTS,
        "Events received (POST /.fnhost/events/NAME), by whether they were new or a repeated \
         Idempotency-Key"
    );
    describe_counter!(WAKES, "Waiting invocations woken by an event");
    describe_gauge!(
        QUEUE,
        "Stored background invocations by state (read at each scrape)"
    );
    describe_counter!(
        DELIVERIES,
        "Destination deliveries attempted, by outcome (delivered, failed)"
    );
}

/// The series about what is served.
fn describe_served() {
    describe_counter!(
        FUEL,
        "Fuel burnt by invocations, by function (when metering is on)"
    );
    describe_gauge!(
        DEPLOY,
        "1 for the deploy this node serves, 0 for those it served before, by deploy id"
    );
    describe_gauge!(
        FUNCTION,
        "1 for each function served, by function and WASI HTTP world; 0 once no longer served"
    );
}

/// The exposition, or `None` before [`install`].
pub fn render() -> Option<String> {
    let handle = HANDLE.get()?;
    handle.run_upkeep();
    Some(handle.render())
}

/// How an invocation ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The handler returned.
    Completed,
    /// It trapped (not at a limit).
    Trapped,
    /// Stopped at its wall-clock budget.
    Timeout,
    /// Stopped when its fuel ran out.
    OutOfFuel,
    /// Trapped after its memory cap refused to grow its memory.
    MemoryCap,
    /// A background attempt slept or waited, to run again later (not a failure).
    Suspended,
}

impl Ended {
    /// The stop, as traces name it (`error.type`): `trapped`, `timeout`, `out_of_fuel`,
    /// `memory_cap`; `completed` otherwise.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Trapped => "trapped",
            Ended::Timeout => "timeout",
            Ended::OutOfFuel => "out_of_fuel",
            Ended::MemoryCap => "memory_cap",
            Ended::Suspended => "suspended",
        }
    }
}

/// Records one finished invocation of `function` in `mode` (`sync` or `background`).
pub fn invocation(
    function: &Arc<str>,
    mode: &'static str,
    ended: Ended,
    took: Duration,
    fuel: Option<u64>,
) {
    let (outcome, limit) = match ended {
        Ended::Completed => ("completed", None),
        Ended::Trapped => ("trapped", None),
        Ended::Timeout => ("timeout", Some("time")),
        Ended::OutOfFuel => ("timeout", Some("fuel")),
        Ended::MemoryCap => ("memory_cap", Some("memory")),
        Ended::Suspended => ("suspended", None),
    };
    // Labels share the name (a reference count), no copy per invocation.
    counter!(INVOCATIONS, "function" => function.clone(), "mode" => mode, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(DURATION, "function" => function.clone(), "mode" => mode)
        .record(took.as_secs_f64());
    if let Some(limit) = limit {
        counter!(STOPS, "function" => function.clone(), "mode" => mode, "limit" => limit)
            .increment(1);
    }
    if let Some(fuel) = fuel {
        counter!(FUEL, "function" => function.clone()).increment(fuel);
    }
    remember(
        function,
        took,
        !matches!(ended, Ended::Completed | Ended::Suspended),
    );
}

/// Invocations remembered per function for [`last_hour`] (the oldest go first).
pub const RECENT_PER_FUNCTION: usize = 4096;

/// Per function: when each recent invocation ended, how long it took, whether it failed.
static RECENT: Mutex<Option<HashMap<String, Window>>> = Mutex::new(None);

/// One function's recent invocations: when each ended, how long it took, whether it failed.
type Window = VecDeque<(Instant, Duration, bool)>;

fn remember(function: &str, took: Duration, failed: bool) {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let map = recent.get_or_insert_with(HashMap::new);
    let window = match map.get_mut(function) {
        Some(w) => w,
        None => map.entry(function.to_string()).or_default(),
    };
    if window.len() == RECENT_PER_FUNCTION {
        window.pop_front();
    }
    window.push_back((Instant::now(), took, failed));
}

/// A function's invocations on this node in the last hour (at most the last
/// [`RECENT_PER_FUNCTION`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LastHour {
    /// Invocations (sync requests and background attempts) that ended.
    pub invocations: usize,
    /// Of which did not complete (trapped, stopped at a limit).
    pub failures: usize,
    /// Median duration.
    pub p50_ms: Option<f64>,
    /// 99th percentile duration.
    pub p99_ms: Option<f64>,
}

/// [`LastHour`] for `function`.
pub fn last_hour(function: &str) -> LastHour {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(window) = recent.as_ref().and_then(|m| m.get(function)) else {
        return LastHour::default();
    };
    let since = Instant::now().checked_sub(Duration::from_secs(3600));
    let mut took: Vec<f64> = Vec::new();
    let mut failures = 0;
    for (at, d, failed) in window {
        if since.is_some_and(|s| *at < s) {
            continue;
        }
        took.push(d.as_secs_f64() * 1e3);
        failures += usize::from(*failed);
    }
    took.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((took.len() as f64 * q).ceil() as usize).saturating_sub(1);
        took.get(i).map(|ms| (ms * 100.0).round() / 100.0)
    };
    LastHour {
        invocations: took.len(),
        failures,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
    }
}

/// Records one instantiation.
pub fn instantiated(function: &Arc<str>, took: Duration) {
    metrics::histogram!(INSTANTIATION, "function" => function.clone()).record(took.as_secs_f64());
}

/// Counts an invocation in flight until dropped.
pub struct InFlight(&'static str);

impl InFlight {
    /// One more invocation running in `mode`.
    pub fn start(mode: &'static str) -> InFlight {
        gauge!(IN_FLIGHT, "mode" => mode).increment(1.0);
        InFlight(mode)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(IN_FLIGHT, "mode" => self.0).decrement(1.0);
    }
}

/// Records a request refused by fnhost itself.
pub fn rejected(reason: &'static str) {
    counter!(REJECTIONS, "reason" => reason).increment(1);
}

/// Records a request `function`'s rate limit stopped (`rate_limit` or `rewrite`).
pub fn rate_limited(function: &str, action: &'static str) {
    counter!(RATE_LIMITED, "function" => function.to_string(), "action" => action).increment(1);
}

/// Records a request the rate limit of the rule `from` stopped (`rate_limit` or `rewrite`).
pub fn rule_rate_limited(from: &str, action: &'static str) {
    counter!(RULE_RATE_LIMITED, "rule" => from.to_string(), "action" => action).increment(1);
}

/// Records a schedule tick of `function` that was not run, and why (`paused`, `overlap`).
pub fn schedule_skipped(function: &str, reason: &'static str) {
    counter!(SCHEDULE_SKIPPED, "function" => function.to_string(), "reason" => reason).increment(1);
}

/// Records a failed background attempt that runs again.
pub fn retry(function: &str) {
    counter!(RETRIES, "function" => function.to_string()).increment(1);
}

/// Records a background invocation that failed for the last time.
pub fn dead(function: &str) {
    counter!(DEAD, "function" => function.to_string()).increment(1);
}

/// Records a background attempt that ended sleeping (`wait: false`) or waiting.
pub fn suspended(function: &str, wait: bool) {
    let kind = if wait { "wait" } else { "sleep" };
    counter!(SUSPENSIONS, "function" => function.to_string(), "kind" => kind).increment(1);
}

/// Records an event received (`new`: not a repeat) and the invocations it woke.
pub fn event(new: bool, woke: usize) {
    let label = if new { "new" } else { "repeat" };
    counter!(EVENTS, "received" => label).increment(1);
    counter!(WAKES).increment(woke as u64);
}

/// Records a background invocation that expired before it ran.
pub fn expired(function: &str) {
    counter!(EXPIRED, "function" => function.to_string()).increment(1);
}

fn describe_traces() {
    describe_counter!(SPANS_EXPORTED, "Trace spans the OTLP collector accepted");
    describe_counter!(
        SPANS_DROPPED,
        "Trace spans that never reached the collector, by reason (queue_full: more spans \
         waiting than telemetry.max_queue; export_failed: the collector refused, failed or \
         timed out)"
    );
}

/// Records spans the collector accepted.
pub fn spans_exported(n: u64) {
    counter!(SPANS_EXPORTED).increment(n);
}

/// The counter of spans that never reached the collector for `reason` (`queue_full`,
/// `export_failed`): a handle, so counting a span is one atomic add.
pub fn spans_dropped(reason: &'static str) -> metrics::Counter {
    counter!(SPANS_DROPPED, "reason" => reason)
}

/// Records one delivery attempt (`delivered` or `failed`).
pub fn delivery(outcome: &'static str) {
    counter!(DELIVERIES, "outcome" => outcome).increment(1);
}

/// Sets the stored count of invocations in `state`.
pub fn queue_depth(state: &str, count: i64) {
    #[allow(clippy::cast_precision_loss)]
    gauge!(QUEUE, "state" => state.to_string()).set(count as f64);
}

/// Records the deploy this node serves now (`None`: a directory, or none published yet).
pub fn deploy_served(deploy: Option<&str>) {
    static SERVED: Mutex<Option<String>> = Mutex::new(None);
    let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = served.take() {
        gauge!(DEPLOY, "deploy" => previous).set(0.0);
    }
    if let Some(deploy) = deploy {
        gauge!(DEPLOY, "deploy" => deploy.to_string()).set(1.0);
        *served = Some(deploy.to_string());
    }
}

/// Records the functions served now, as `(name, world)`; those served before and gone drop
/// to 0.
pub fn functions_served<'a>(functions: impl IntoIterator<Item = (&'a str, &'static str)>) {
    static SERVED: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());
    let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    for (function, world) in served.drain(..) {
        gauge!(FUNCTION, "function" => function, "world" => world).set(0.0);
    }
    for (function, world) in functions {
        gauge!(FUNCTION, "function" => function.to_string(), "world" => world).set(1.0);
        served.push((function.to_string(), world));
    }
}

/// Records whether the queue's writes are failing now.
pub fn queue_failing(failing: bool) {
    gauge!(QUEUE_FAILING).set(if failing { 1.0 } else { 0.0 });
}
