//! Traces (OpenTelemetry over OTLP): a server span per request, its children (instantiate,
//! the guest's run, each outbound request), and for a background invocation one span per
//! attempt in the trace of the request that was acknowledged — on whichever node runs it,
//! since the trace context travels in the stored request's `traceparent`. Every
//! `opentelemetry` type stays in this module; the rest of fnhost holds a [`Trace`].
//!
//! Off unless an endpoint is configured: then every [`Trace`] is empty and costs nothing.

mod export;
pub mod logging;
pub mod setup;

use std::borrow::Cow;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::telemetry::TelemetryConfig;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static RUNNING: Mutex<Option<(SdkTracerProvider, export::Stop)>> = Mutex::new(None);

/// Turns traces on when `config` or the `OTEL_*` environment asks for them; export runs on
/// `runtime`. What it exports to, for the startup line; `None` when traces are off.
pub fn init(
    config: &TelemetryConfig,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Option<String>> {
    let Some(resolved) = setup::resolve(config, |name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    if TRACER.get().is_some() {
        return Ok(None);
    }
    let started = setup::start(&resolved, config, runtime)?;
    let _ = TRACER.set(started.tracer);
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((started.provider, started.stop));
    let to = resolved
        .endpoint
        .unwrap_or_else(|| "the OTEL_EXPORTER_OTLP endpoint".into());
    Ok(Some(format!("{} ({:?})", to, resolved.protocol)))
}

/// Sends the spans still queued, waiting at most `within`; at shutdown.
pub async fn flush(within: Duration) {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((provider, stop)) = running {
        stop.flush(within).await;
        drop(provider);
    }
}

/// What set off a trace's work (`faas.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A client's HTTP request.
    Http,
    /// A schedule's tick.
    Timer,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Timer => "timer",
        }
    }
}

/// A span under way, or nothing when traces are off. Clones are the same span; it ends at
/// [`Trace::end`] (or when the last clone is dropped). A span the sampler left out records
/// nothing and has no children — its context is still propagated (W3C `traceparent`, flags
/// `00`), so the caller's decision reaches the guest and upstreams.
#[derive(Clone, Default)]
pub struct Trace {
    cx: Option<Context>,
    recording: bool,
}

impl Trace {
    /// No span.
    pub fn none() -> Trace {
        Trace::default()
    }

    fn of(cx: Context) -> Trace {
        let recording = cx.span().is_recording();
        Trace {
            cx: Some(cx),
            recording,
        }
    }

    /// Whether this span records (traces on, sampled): callers skip building attributes
    /// otherwise.
    pub fn is_on(&self) -> bool {
        self.recording
    }

    /// The server span of a client's request, continuing the trace its `traceparent` names.
    pub fn request(method: &str, path: &str, headers: &http::HeaderMap) -> Trace {
        let Some(tracer) = TRACER.get() else {
            return Trace::none();
        };
        let parent = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &HeaderExtractor(headers));
        let span = tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        let trace = Trace::of(parent.with_span(span));
        // Built only once the sampler has kept the span; set under one lock.
        if let (Some(cx), true) = (&trace.cx, trace.recording) {
            cx.span().set_attributes([
                KeyValue::new("http.request.method", method_name(method)),
                KeyValue::new("url.path", path.to_string()),
                KeyValue::new("url.scheme", "http"),
            ]);
        }
        trace
    }

    /// The server span once its request is routed: named for the method and function, with
    /// the route, function, invocation and client (all set at once).
    pub fn routed(&self, method: &str, route: &str, function: &str, id: &str, client: String) {
        let (Some(cx), true) = (&self.cx, self.recording) else {
            return;
        };
        let span = cx.span();
        span.update_name(format!("{method} {function}"));
        span.set_attributes([
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new("faas.name", function.to_string()),
            KeyValue::new("faas.invocation_id", id.to_string()),
            KeyValue::new("faas.trigger", Trigger::Http.as_str()),
            KeyValue::new("client.address", client),
        ]);
    }

    /// A span that starts a trace: a schedule's tick of `function`.
    pub fn tick(function: &str, cron: &str) -> Trace {
        let Some(tracer) = TRACER.get() else {
            return Trace::none();
        };
        let span = tracer
            .span_builder(format!("tick {function}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("faas.name", function.to_string()),
                KeyValue::new("faas.trigger", Trigger::Timer.as_str()),
                KeyValue::new("faas.cron", cron.to_string()),
            ])
            .start_with_context(tracer, &Context::new());
        Trace::of(Context::new().with_span(span))
    }

    /// One attempt of a stored invocation: a span in the trace its stored `headers` name
    /// (the accepting span, which it links to), or a trace of its own.
    pub fn attempt(
        headers: &[(String, String)],
        function: &str,
        id: &str,
        attempt: u32,
        trigger: Trigger,
    ) -> Trace {
        let Some(tracer) = TRACER.get() else {
            return Trace::none();
        };
        let parent = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &PairsExtractor(headers));
        let accepted = parent.span().span_context().clone();
        let links = if accepted.is_valid() {
            vec![Link::with_context(accepted)]
        } else {
            Vec::new()
        };
        let span = tracer
            .span_builder(format!("attempt {function}"))
            .with_kind(SpanKind::Consumer)
            .with_links(links)
            .with_attributes([
                KeyValue::new("faas.name", function.to_string()),
                KeyValue::new("faas.invocation_id", id.to_string()),
                KeyValue::new("faas.trigger", trigger.as_str()),
                KeyValue::new("fnhost.attempt", i64::from(attempt)),
            ])
            .start_with_context(tracer, &parent);
        Trace::of(parent.with_span(span))
    }

    /// A destination delivery's POST to `url`: a client span in the trace `traceparent` names
    /// (the attempt that decided it), or a trace of its own.
    pub fn delivery(traceparent: &str, url: &str, attempt: u32) -> Trace {
        let Some(tracer) = TRACER.get() else {
            return Trace::none();
        };
        let stored = [("traceparent".to_string(), traceparent.to_string())];
        let parent = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &PairsExtractor(&stored));
        let full = url.split(['?', '#']).next().unwrap_or_default().to_string();
        let span = tracer
            .span_builder("deliver")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.full", full),
                KeyValue::new("fnhost.delivery_attempt", i64::from(attempt)),
            ])
            .start_with_context(tracer, &parent);
        Trace::of(parent.with_span(span))
    }

    /// A child span of this one (none when this is none).
    pub fn child(&self, name: impl Into<Cow<'static, str>>) -> Trace {
        self.child_of_kind(name, SpanKind::Internal)
    }

    /// A client span for an outbound request of the guest.
    pub fn outbound(&self, method: &str, scheme: &str, host: &str, port: u16, path: &str) -> Trace {
        if !self.recording {
            return self.clone();
        }
        let t = self.child_of_kind(method.to_string(), SpanKind::Client);
        t.set("http.request.method", method.to_string());
        t.set("server.address", host.to_string());
        t.set("server.port", i64::from(port));
        // No query string: it may carry tokens.
        t.set("url.full", format!("{scheme}://{host}:{port}{path}"));
        t
    }

    fn child_of_kind(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Trace {
        let (Some(cx), Some(tracer), true) = (&self.cx, TRACER.get(), self.recording) else {
            // Not recorded: the children are this span, for propagation.
            return self.clone();
        };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, cx);
        Trace::of(cx.with_span(span))
    }

    /// Sets an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let (Some(cx), true) = (&self.cx, self.recording) {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed: `error.type` and a description (never a body or a secret).
    pub fn fail(&self, error_type: &str, description: impl Into<Cow<'static, str>>) {
        if let (Some(cx), true) = (&self.cx, self.recording) {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", error_type.to_string()));
            span.set_status(Status::error(description));
        }
    }

    /// The answer's status: `http.response.status_code`, and a failure when it is a 5xx.
    pub fn status(&self, status: u16) {
        if !self.is_on() {
            return;
        }
        self.set("http.response.status_code", i64::from(status));
        if status >= 500 {
            self.fail(&status.to_string(), format!("answered {status}"));
        }
    }

    /// Ends the span (later calls do nothing).
    pub fn end(&self) {
        if let (Some(cx), true) = (&self.cx, self.recording) {
            cx.span().end();
        }
    }

    /// The W3C headers (`traceparent`, `tracestate`) naming this span as the parent.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out = PairsInjector(Vec::new());
        if let Some(cx) = &self.cx {
            TraceContextPropagator::new().inject_context(cx, &mut out);
        }
        out.0
    }

    /// The trace id (32 hex digits), when there is a span.
    pub fn trace_id(&self) -> Option<String> {
        let cx = self.cx.as_ref().filter(|_| self.recording)?;
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }
}

/// The span name of an HTTP method: no allocation for the usual ones.
fn method_name(method: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    match KNOWN.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_string()),
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct PairsExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct PairsInjector(Vec<(String, String)>);

impl Injector for PairsInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}
