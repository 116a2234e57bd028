//! The application: the function table, the engine and the limits, and the handling of one
//! HTTP request — route, check, invoke, answer. Transport-agnostic: `server` feeds it requests.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::cors::Policies;
use crate::engine::{Body, Engine, InvokeContext, Outcome};
use crate::error::{ApiError, INVOCATION_ID};
use crate::functions::{Function, FunctionTable, Mode};
use crate::queue::{NewInvocation, Queue};
use crate::redirects::{Action, Rules};
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
    /// CORS policies (`[cors]`, `[functions.NAME.cors]`); empty = none.
    cors: Policies,
    /// `_redirects` and `[[redirects]]` rules.
    redirects: Rules,
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
            cors: Policies::default(),
            redirects: Rules::default(),
        }
    }

    /// Adds the site's CORS policies and its rewrite/redirect/proxy rules (`DIR/_redirects`,
    /// then `[[redirects]]`). A bad `_redirects` line is an error naming the file and line.
    pub fn with_edge(
        mut self,
        config: &crate::config::Config,
        dir: &std::path::Path,
    ) -> anyhow::Result<App> {
        self.cors = Policies::from_config(config)
            .map_err(|e| anyhow::anyhow!("fnhost.toml: {}: {}", e.key, e.message))?;
        self.redirects = Rules::load(dir, config.redirects.iter().map(|r| r.0.clone()))?;
        for rule in self.redirects.iter() {
            if rule.status == 200 && rule.to().starts_with("https://") {
                tracing::warn!(
                    "redirect {} -> {}: https proxy not supported, it will answer 502",
                    rule.from(),
                    rule.to()
                );
            }
        }
        if !self.redirects.is_empty() {
            tracing::info!("{} redirect rule(s)", self.redirects.iter().count());
        }
        Ok(self)
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

    async fn try_handle<B>(&self, mut req: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut path = req.uri().path().to_string();
        // Rules never apply to fnhost's own endpoints; a rewrite is routed once, not re-ruled.
        if !path.starts_with(API_PREFIX) && !self.redirects.is_empty() {
            let routed = || {
                !matches!(
                    self.table.router.route(req.method().as_str(), &path),
                    Match::NotFound
                )
            };
            match self.redirects.resolve(&path, req.uri().query(), routed) {
                None => {}
                Some(Action::Redirect { status, location }) => {
                    return Ok(redirect_response(status, &location));
                }
                Some(Action::Proxy(url)) => {
                    return Ok(crate::redirects::proxy::forward(
                        req,
                        &url,
                        crate::redirects::proxy::TIMEOUT,
                    )
                    .await);
                }
                Some(Action::Rewrite(target)) => {
                    *req.uri_mut() = target.parse().map_err(|_| {
                        ApiError::BadRequest(format!("rewrite produced a bad path {target:?}"))
                    })?;
                    path = req.uri().path().to_string();
                }
            }
        }
        let origin = crate::cors::request_origin(req.headers()).map(str::to_string);
        let preflight =
            crate::cors::preflight_method(req.method(), req.headers()).map(str::to_string);
        if let Some(rest) = path.strip_prefix(API_PREFIX) {
            if let (Some(origin), false) = (&origin, self.cors.is_empty()) {
                return Ok(self
                    .api_with_cors(&req, rest, origin, preflight.as_deref())
                    .await);
            }
            return crate::api::handle(self, req.method(), rest, req.uri().query(), req.headers())
                .await;
        }
        if let (Some(method), Some(origin), false) = (&preflight, &origin, self.cors.is_empty()) {
            if let Some(resp) = self.preflight(&path, method, origin, req.headers())? {
                return Ok(resp);
            }
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
        // CORS, in one place: refuse a foreign origin the policy does not allow before anything
        // runs or is stored; add the missing Access-Control-* headers to whatever is answered.
        let policy = self.cors.for_function(&function.name);
        if let (Some(policy), Some(origin)) = (policy, &origin) {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            if !policy.allowed(origin) && !crate::cors::same_origin(origin, host) {
                tracing::info!(
                    function = function.name,
                    origin,
                    "refused: origin not allowed by the CORS policy"
                );
                let mut resp = crate::error::text(
                    http::StatusCode::FORBIDDEN,
                    format!("origin {origin} is not allowed\n"),
                );
                resp.headers_mut()
                    .insert(http::header::VARY, HeaderValue::from_static("Origin"));
                return Ok(resp);
            }
        }
        let id = new_invocation_id();
        let answered = match function.mode {
            Mode::Sync => self
                .invoke_sync(&function, req, &params, id)
                .await
                .map(|r| (r, false)),
            Mode::Background => self
                .accept_background(&function, req, id)
                .await
                .map(|r| (r, true)),
        };
        let (mut resp, ours) = match answered {
            Ok(answered) => answered,
            Err(e) => (e.into_response(), true),
        };
        if let (Some(policy), Some(origin)) = (policy, &origin) {
            // The function's own Access-Control-* headers win; fnhost fills in the rest.
            let expose: &[&str] = if ours {
                &[INVOCATION_ID, "location"]
            } else {
                &[]
            };
            policy.decorate(resp.headers_mut(), origin, expose);
        }
        Ok(resp)
    }

    /// Answers a CORS preflight for a function route without invoking anything. `None` when
    /// the route's function has no policy: then its `OPTIONS` reaches it, as on Netlify.
    fn preflight(
        &self,
        path: &str,
        method: &str,
        origin: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Response<Body>>, ApiError> {
        let policy = match self.table.router.route(method, path) {
            Match::Found(f, _) => match self.cors.for_function(&f.name) {
                Some(p) => p,
                None => return Ok(None),
            },
            // The route does not take that method: a refusal, unless no site-wide policy
            // speaks for the route (then the usual 405 answers).
            Match::MethodNotAllowed(_) => match self.cors.site() {
                Some(_) => return Ok(Some(no_content(crate::cors::refused_preflight()))),
                None => return Ok(None),
            },
            Match::NotFound => return Err(ApiError::NotFound(path.to_string())),
        };
        let requested = headers
            .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok());
        Ok(Some(no_content(
            policy.preflight(origin, method, requested),
        )))
    }

    /// `/.fnhost{rest}` for a request with an `Origin`: the status resource carries the CORS
    /// headers of its invocation's function (else the site-wide policy); preflights for it are
    /// answered here.
    async fn api_with_cors<B>(
        &self,
        req: &Request<B>,
        rest: &str,
        origin: &str,
        preflight: Option<&str>,
    ) -> Response<Body> {
        let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let policy = match segments.as_slice() {
            ["invocations", id] => {
                let function = self
                    .queue
                    .status(id)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| s.function);
                function
                    .as_deref()
                    .and_then(|f| self.cors.for_function(f))
                    .or(self.cors.site())
            }
            _ => None,
        };
        let Some(policy) = policy else {
            return crate::api::handle(self, req.method(), rest, req.uri().query(), req.headers())
                .await
                .unwrap_or_else(ApiError::into_response);
        };
        if let Some(method) = preflight {
            let requested = req
                .headers()
                .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
                .and_then(|v| v.to_str().ok());
            return no_content(policy.preflight(origin, method, requested));
        }
        let mut resp =
            crate::api::handle(self, req.method(), rest, req.uri().query(), req.headers())
                .await
                .unwrap_or_else(ApiError::into_response);
        policy.decorate(resp.headers_mut(), origin, &[INVOCATION_ID]);
        resp
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

/// `204 No Content` with `headers` (a preflight answer).
fn no_content(headers: http::HeaderMap) -> Response<Body> {
    let mut resp = Response::new(crate::error::full(Bytes::new()));
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    resp.headers_mut().extend(headers);
    resp
}

/// A redirect rule's answer.
fn redirect_response(status: u16, location: &str) -> Response<Body> {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::FOUND);
    let mut resp = crate::error::text(status, format!("Redirecting to {location}\n"));
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
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

/// How long a client may take to send a request body.
const READ_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the whole body, refusing more than `limit` bytes with `413`.
pub async fn read_body<B>(req: Request<B>, limit: u64) -> Result<Request<Bytes>, ApiError>
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
    let give_up = tokio::time::Instant::now() + READ_BODY_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(give_up, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::BadRequest(format!(
                    "request body not received within {READ_BODY_TIMEOUT:?}"
                )));
            }
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
