//! Answering one request with a function: run it now (synchronous) or store it durably and
//! acknowledge it (background); and reading a request body within its limits.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::App;
use super::error::ApiError;
use crate::body::{Body, full};
use crate::functions::Function;
use crate::ids::{headers, status_path};
use crate::invocation::{self, Failure};
use crate::queue::{Dedup, Enqueued, NewInvocation, QueueError};
use crate::telemetry::Trace;

/// The W3C trace context headers.
const W3C: [&str; 2] = ["traceparent", "tracestate"];

impl App {
    /// Runs a synchronous invocation and answers with the guest's response. The slot is
    /// taken once the body has been read (a slow upload holds a connection, never a slot);
    /// the guest holds it until it is done.
    pub(super) async fn invoke_sync<B>(
        &self,
        function: &Arc<Function>,
        req: Request<B>,
        params: &[(String, String)],
        id: String,
        trace: &Trace,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let req = read_body(req, function.settings.limits.max_body, self.body_timeout).await?;
        let permit = self
            .sync_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy)?;
        let mut running = invocation::start(
            &self.engine,
            function,
            req,
            (params, &id),
            None,
            trace,
            permit,
        );
        match invocation::answer(&mut running, function.settings.limits.timeout).await {
            Ok(resp) => Ok(resp),
            Err(Failure::Timeout(_)) => Err(ApiError::Timeout { id }),
            // The engine logged a trap already; the rest is news to the log.
            Err(Failure::Trapped(_)) => Err(ApiError::FunctionFailed { id }),
            Err(failure) => {
                tracing::warn!(function = function.name, id, "{failure}");
                Err(ApiError::FunctionFailed { id })
            }
        }
    }

    /// Checks and durably stores a background request, then answers `202`.
    pub(super) async fn accept_background<B>(
        &self,
        function: &Function,
        req: Request<B>,
        id: String,
        trace: &Trace,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let req = read_body(req, function.settings.limits.max_body, self.body_timeout).await?;
        let inv = to_store(function, req, id.clone(), trace);
        let enqueued = self.queue.enqueue(inv).await.map_err(|e| match e {
            // Shutting down: refused, not lost; the client may retry elsewhere or later.
            QueueError::WriterGone => ApiError::Busy,
            // Disk full, database down: nothing was stored; the client should come back.
            e if e.is_unavailable() => {
                tracing::warn!(function = function.name, "refused: cannot enqueue: {e}");
                ApiError::QueueUnavailable
            }
            e => {
                tracing::error!(function = function.name, id, "cannot enqueue: {e}");
                ApiError::Internal { id: id.clone() }
            }
        })?;
        if let Enqueued::Conflict(_) = &enqueued {
            return Err(ApiError::IdempotencyConflict);
        }
        Ok(accepted(enqueued.id()))
    }
}

/// The server span, once the request is routed: which function and route, which invocation.
pub(super) fn routed_span(
    trace: &Trace,
    (method, pattern): (&http::Method, &str),
    function: &crate::functions::Function,
    id: &str,
    client: std::net::IpAddr,
) {
    if !trace.is_on() {
        return;
    }
    trace.routed(
        method.as_str(),
        pattern,
        &function.name,
        id,
        client.to_string(),
    );
}

/// The span of a `_redirects` rule that applied (it ends when dropped: after a proxied answer).
pub(super) fn rule_span(trace: &Trace, action: &super::rules::Action) -> EndOnDrop {
    if !trace.is_on() {
        return EndOnDrop(Trace::none());
    }
    let span = trace.child("rule");
    let kind = match action {
        super::rules::Action::Redirect { status, .. } => {
            span.set("http.response.status_code", i64::from(*status));
            "redirect"
        }
        super::rules::Action::Proxy(_) => "proxy",
        super::rules::Action::Rewrite(_) => "rewrite",
    };
    span.set("fnhost.rule.action", kind);
    EndOnDrop(span)
}

/// A span that ends when this is dropped.
pub(super) struct EndOnDrop(Trace);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The request as stored: its idempotency key, method, path and query, body, and headers
/// less the hop-by-hop ones (the edge has set fnhost's own: only the client address).
fn to_store(function: &Function, req: Request<Bytes>, id: String, trace: &Trace) -> NewInvocation {
    let (parts, body) = req.into_parts();
    let dedup = (parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok()))
    .map(|key| Dedup::Key(key.to_string()));
    let kept = |name: &str| {
        (!name.starts_with(headers::PREFIX) || headers::EDGE.contains(&name))
            && !HOP_BY_HOP.contains(&name)
    };
    // Traced: the stored request names the accepting span as its parent, so every attempt,
    // on whichever node, joins its trace.
    let w3c = trace.headers();
    let traced = !w3c.is_empty();
    let kept = |name: &str| kept(name) && !(traced && W3C.contains(&name));
    let headers = (parts.headers.iter())
        .filter(|(k, _)| kept(k.as_str()))
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .chain(w3c)
        .collect();
    NewInvocation {
        id,
        function: function.name.clone(),
        dedup,
        method: parts.method.to_string(),
        uri: (parts.uri.path_and_query())
            .map_or("/", |p| p.as_str())
            .to_string(),
        headers,
        body: body.to_vec(),
        max_attempts: function.settings.retry.max_attempts(),
        deploy: function.deploy.as_deref().map(str::to_string),
        priority: function.settings.priority,
    }
}

/// `202 Accepted`, empty, with the invocation id and the `Location` of its status resource.
pub(super) fn accepted(id: &str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    for (name, value) in [
        (headers::INVOCATION_ID, id.to_string()),
        (http::header::LOCATION.as_str(), status_path(id)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// Headers that describe one connection, not the request; not stored.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Reads the whole body, refusing more than `limit` bytes with `413` and a body still not
/// received after `timeout` with `408`.
pub async fn read_body<B>(
    req: Request<B>,
    limit: u64,
    timeout: std::time::Duration,
) -> Result<Request<Bytes>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // An over-limit body is still read (and dropped) up to this much, so the client, which is
    // busy sending, gets the 413 instead of a reset connection.
    const DRAIN_CAP: u64 = 16 * 1024 * 1024;
    const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit.max(DRAIN_CAP)) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let (parts, body) = req.into_parts();
    let mut body = std::pin::pin!(body);
    let mut kept = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let mut drain_until = None;
    // A client that stalls mid-body is not allowed to hold a slot for long.
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        let frame = match tokio::time::timeout_at(give_up, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(ApiError::RequestTimeout { after: timeout }),
        };
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("cannot read body: {}", e.into())))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen <= limit {
            kept.extend_from_slice(&data);
            continue;
        }
        let until = *drain_until.get_or_insert_with(|| std::time::Instant::now() + DRAIN_TIME);
        if seen > DRAIN_CAP || std::time::Instant::now() > until {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(Request::from_parts(parts, kept.freeze()))
}
