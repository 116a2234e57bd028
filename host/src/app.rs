//! The application: the function table, the engine and the limits, and the handling of one
//! HTTP request — route, check, invoke, answer. Transport-agnostic: `server` feeds it requests.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;

use crate::engine::{Body, Engine, InvokeContext, Outcome};
use crate::error::{ApiError, INVOCATION_ID};
use crate::functions::{Function, FunctionTable, Mode};
use crate::queue::{NewInvocation, Queue};
use crate::router::Match;

/// Request headers fnhost sets for the guest; the same names from a client are removed.
pub mod guest_headers {
    /// Route parameters, `application/x-www-form-urlencoded`.
    pub const PARAMS: &str = "fnhost-params";
    /// The invocation id.
    pub const INVOCATION_ID: &str = "fnhost-invocation-id";
    /// Attempt number of a background invocation, from 1.
    pub const ATTEMPT: &str = "fnhost-attempt";
    /// The function's name.
    pub const FUNCTION: &str = "fnhost-function";
}

/// Where fnhost's own endpoints live.
pub const API_PREFIX: &str = "/.fnhost";

/// Everything needed to answer requests.
pub struct App {
    /// The engine running guests.
    pub engine: Arc<Engine>,
    /// Loaded functions and their routes.
    pub table: Arc<FunctionTable>,
    /// The durable queue of background invocations.
    pub queue: Queue,
    /// Bearer token of the admin endpoints; `None` turns them off.
    admin_token: Option<String>,
    /// Permits for synchronous invocations.
    sync_permits: Arc<Semaphore>,
}

impl App {
    /// Builds the app; `max_concurrency` caps synchronous invocations in flight.
    pub fn new(
        engine: Arc<Engine>,
        table: Arc<FunctionTable>,
        queue: Queue,
        admin_token: Option<String>,
        max_concurrency: usize,
    ) -> App {
        App {
            engine,
            table,
            queue,
            admin_token,
            sync_permits: Arc::new(Semaphore::new(max_concurrency)),
        }
    }

    /// Answers one request. Never fails: errors become responses.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.try_handle(req).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn try_handle<B>(&self, req: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_string();
        if let Some(rest) = path.strip_prefix(API_PREFIX) {
            return crate::api::handle(self, req.method(), rest, req.uri().query(), req.headers())
                .await;
        }
        let (function, params) = match self.table.router.route(req.method().as_str(), &path) {
            Match::Found(f, params) => (f.clone(), params),
            Match::MethodNotAllowed(allow) => {
                return Err(ApiError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allow,
                });
            }
            Match::NotFound => return Err(ApiError::NotFound(path)),
        };
        let id = new_invocation_id();
        match function.mode {
            Mode::Sync => self.invoke_sync(&function, req, &params, id).await,
            Mode::Background => self.accept_background(&function, req, id).await,
        }
    }

    async fn invoke_sync<B>(
        &self,
        function: &Arc<Function>,
        req: Request<B>,
        params: &[(String, String)],
        id: String,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let permit = self
            .sync_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy)?;
        let req = read_body(req, function.max_body).await?;
        let req = guest_request(req, &function.name, params, &id, None);
        let ctx = invoke_context(function, &id);
        let running = self.engine.invoke(&function.component, req, &ctx, permit);
        match running.response.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => {
                tracing::warn!(
                    function = function.name,
                    id,
                    "guest answered with error code {code}"
                );
                Err(ApiError::FunctionFailed { id })
            }
            Err(_no_response) => match running.outcome.await {
                Ok(Outcome::Timeout) => Err(ApiError::Timeout { id }),
                Ok(Outcome::Completed { .. }) => {
                    tracing::warn!(
                        function = function.name,
                        id,
                        "guest returned without setting a response"
                    );
                    Err(ApiError::FunctionFailed { id })
                }
                Ok(Outcome::Trap(_)) | Err(_) => Err(ApiError::FunctionFailed { id }),
            },
        }
    }
}

impl App {
    /// Checks and durably stores a background request, then answers `202`.
    async fn accept_background<B>(
        &self,
        function: &Function,
        req: Request<B>,
        id: String,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let req = read_body(req, function.max_body).await?;
        let (parts, body) = req.into_parts();
        let idempotency_key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| {
                !k.as_str().starts_with("fnhost-") && !HOP_BY_HOP.contains(&k.as_str())
            })
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let inv = NewInvocation {
            id: id.clone(),
            function: function.name.clone(),
            idempotency_key,
            method: parts.method.to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            headers,
            body: body.to_vec(),
            max_attempts: u32::try_from(function.retry_delays.len() + 1).unwrap_or(u32::MAX),
        };
        let enqueued = self.queue.enqueue(inv).await.map_err(|e| {
            tracing::error!(function = function.name, id, "cannot enqueue: {e}");
            ApiError::Internal { id: id.clone() }
        })?;
        let id = enqueued.id();
        let mut resp = with_id(
            crate::error::text(http::StatusCode::ACCEPTED, String::new()),
            id,
        );
        resp.headers_mut().remove(http::header::CONTENT_TYPE);
        if let Ok(v) = HeaderValue::from_str(&status_path(id)) {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        Ok(resp)
    }

    /// Whether the request carries the admin token. `Err` when admin is off or the token is wrong.
    pub fn check_admin(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.admin_token else {
            return Err(ApiError::NotFound(
                "admin endpoints are off (no admin_token configured)".into(),
            ));
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The status resource of an invocation.
pub fn status_path(id: &str) -> String {
    format!("{API_PREFIX}/invocations/{id}")
}

/// The per-invocation settings the engine needs.
pub fn invoke_context(function: &Function, id: &str) -> InvokeContext {
    InvokeContext {
        id: id.into(),
        function: function.name.as_str().into(),
        timeout: function.timeout,
        memory: function.memory,
        fuel: function.fuel,
        env: function.env.clone(),
        outbound: function.outbound.clone(),
    }
}

/// Reads the whole body, refusing more than `limit` bytes with `413`.
pub async fn read_body<B>(req: Request<B>, limit: u64) -> Result<Request<Bytes>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let (parts, body) = req.into_parts();
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Err(e) => return Err(ApiError::BadRequest(format!("cannot read body: {e}"))),
    };
    Ok(Request::from_parts(parts, bytes))
}

/// The request as the guest sees it: client `fnhost-*` headers removed, ours added.
pub fn guest_request(
    mut req: Request<Bytes>,
    function: &str,
    params: &[(String, String)],
    id: &str,
    attempt: Option<u32>,
) -> Request<Bytes> {
    let headers = req.headers_mut();
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("fnhost-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(guest_headers::INVOCATION_ID, id);
    set(guest_headers::FUNCTION, function);
    if let Some(n) = attempt {
        set(guest_headers::ATTEMPT, &n.to_string());
    }
    if !params.is_empty() {
        set(guest_headers::PARAMS, &encode_form(params));
    }
    req
}

/// `application/x-www-form-urlencoded` encoding of pairs.
fn encode_form(pairs: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// 128 random bits, hex: unguessable, so a status URL is its own capability.
pub fn new_invocation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Adds the invocation-id header to a response fnhost writes.
pub fn with_id(mut resp: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(INVOCATION_ID, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_form_encoded() {
        let p = vec![
            ("id".to_string(), "42".to_string()),
            ("*".to_string(), "a b/c".to_string()),
        ];
        assert_eq!(encode_form(&p), "id=42&%2A=a%20b%2Fc");
    }

    #[test]
    fn client_cannot_spoof_fnhost_headers() {
        let req = Request::builder()
            .header("fnhost-attempt", "99")
            .header("fnhost-invocation-id", "forged")
            .body(Bytes::new())
            .unwrap();
        let req = guest_request(req, "f", &[], "real", None);
        assert_eq!(req.headers()["fnhost-invocation-id"], "real");
        assert!(req.headers().get("fnhost-attempt").is_none());
    }
}
