//! The HTTP side: one request through fnhost's chain, transport-agnostic (`server` feeds it):
//! `_redirects` rules → fnhost's own endpoints | CORS preflight → route → invoke or enqueue →
//! CORS headers. Errors become responses in one place ([`error`]).
//!
//! - [`server`]: the acceptor and per-core lanes (the socket side).
//! - [`dispatch`]: running a function or enqueueing it; reading a body within limits.
//! - [`api`]: fnhost's own endpoints under `/.fnhost`; [`auth`]: who may ask them what.
//! - [`cors`], [`rules`], [`proxy`]: CORS policies, `_redirects` rules, proxied forwards.
//! - [`error`]: every error fnhost answers itself, turned into a response.

pub mod api;
pub mod auth;
pub mod client;
pub mod clock;
pub mod cors;
pub mod deploys;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod proxy;
pub mod rules;
pub mod schedules;
pub mod server;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use tokio::sync::Semaphore;

use crate::body::Body;
use crate::config::cors::Policies;
use crate::config::redirects::Rules;
use crate::engine::Engine;
use crate::functions::router::Match;
use crate::functions::{FunctionTable, LiveTable, Mode};
use crate::ids::{headers::INVOCATION_ID, new_id, own_path};
use crate::queue::Queue;
use crate::telemetry::Trace;
use error::ApiError;
use rules::Action;

/// Everything needed to answer requests: the per-request handler.
pub struct App {
    /// The engine running guests.
    pub engine: Arc<Engine>,
    /// Loaded functions and their routes (replaced by a reload).
    pub table: Arc<LiveTable>,
    /// The durable queue of background invocations.
    pub queue: Queue,
    /// Who may use the admin endpoints (the admin token; none turns them off).
    pub auth: auth::Auth,
    /// Cancelled when the host starts shutting down: new requests are refused (`503`).
    shutdown: tokio_util::sync::CancellationToken,
    /// Time a client has to send a request body.
    body_timeout: std::time::Duration,
    /// Permits for synchronous invocations.
    sync_permits: Arc<Semaphore>,
    /// The functions with their CORS policies and rules, replaced together by a reload or a
    /// publish: a request never sees new functions with old rules.
    served: arc_swap::ArcSwap<Served>,
    /// Deploys: made, listed and published through `/.fnhost/deploys`.
    pub deploys: Option<Arc<crate::deploys::Deploys>>,
    /// Whose forwarding headers name the client.
    trusted: client::TrustedProxies,
    /// `[server] site`, passed to guests as `fnhost-site`.
    site: Option<String>,
}

/// The functions served and what the site says about requests before they run: one value, so
/// one load gives a request a consistent pair.
pub struct Served {
    /// The function table (the same one `App::table` holds).
    pub table: Arc<FunctionTable>,
    /// CORS policies and rules.
    pub edge: Edge,
}

/// What the site file and `_redirects` say about requests before a function runs.
#[derive(Default)]
pub struct Edge {
    /// CORS policies (`[cors]`, `[functions.NAME.cors]`); empty = none.
    pub cors: Policies,
    /// `_redirects` and `[[redirects]]` rules.
    pub redirects: Rules,
    /// The rate limit of each rule that has one, by the rule's index.
    pub rule_limits: Vec<Option<crate::functions::rate::RateLimiter>>,
}

impl App {
    /// Builds the app; `max_concurrency` caps synchronous invocations in flight.
    pub fn new(
        engine: Arc<Engine>,
        table: Arc<LiveTable>,
        queue: Queue,
        auth: auth::Auth,
        max_concurrency: usize,
        body_timeout: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> App {
        let first = table.current();
        App {
            shutdown,
            engine,
            table,
            queue,
            auth,
            body_timeout,
            sync_permits: Arc::new(Semaphore::new(max_concurrency)),
            served: arc_swap::ArcSwap::from_pointee(Served {
                table: first,
                edge: Edge::default(),
            }),
            deploys: None,
            trusted: client::TrustedProxies::default(),
            site: None,
        }
    }

    /// Believes the forwarding headers of these proxies (`[server] trusted_proxies`) and
    /// names the site (`[server] site`) to guests.
    pub fn with_edge_of(mut self, trusted: client::TrustedProxies, site: Option<String>) -> App {
        self.trusted = trusted;
        self.site = site;
        self
    }

    /// The headers the edge sets on a request from `peer` whose client is `client`.
    fn edge_headers(
        &self,
        peer: std::net::IpAddr,
        client: std::net::IpAddr,
        headers: &http::HeaderMap,
    ) -> Vec<(&'static str, String)> {
        let mut set = vec![(crate::ids::headers::CLIENT_IP, client.to_string())];
        if let Some(site) = &self.site {
            set.push((crate::ids::headers::SITE, site.clone()));
        }
        set.extend(self.trusted.geo(peer, headers));
        set
    }

    /// Adds the deploy endpoints.
    pub fn with_deploys(mut self, deploys: Arc<crate::deploys::Deploys>) -> App {
        self.deploys = Some(deploys);
        self
    }

    /// Adds the site's CORS policies and its rewrite/redirect/proxy rules, both resolved and
    /// validated by the caller (see `site`).
    pub fn with_edge(self, cors: Policies, redirects: Rules) -> App {
        self.serve(self.table.current(), cors, redirects);
        self
    }

    /// Puts `table` with its CORS policies and rules in force for every later request and
    /// attempt (a reload, a publish), in one swap for requests.
    pub fn serve(&self, table: Arc<FunctionTable>, cors: Policies, redirects: Rules) {
        if !redirects.is_empty() {
            tracing::info!("{} redirect rule(s)", redirects.iter().count());
        }
        self.table.replace(table.clone());
        crate::metrics::functions_served(
            table
                .functions
                .iter()
                .map(|f| (f.name.as_str(), f.component.world().as_str())),
        );
        let rule_limits = (redirects.iter())
            .map(|r| {
                r.rate_limit
                    .as_ref()
                    .map(crate::functions::rate::RateLimiter::new)
            })
            .collect();
        let edge = Edge {
            cors,
            redirects,
            rule_limits,
        };
        self.served.store(Arc::new(Served { table, edge }));
    }

    /// What requests are served with now (the table, CORS, rules and their limiters).
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Answers one request. Never fails: errors become responses. Once shutdown has started a
    /// new request is refused with `503` and `Connection: close`; those already in flight
    /// finish.
    pub async fn handle<B>(&self, req: Request<B>, peer: std::net::SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.shutdown.is_cancelled() {
            crate::body::drain(req.into_body()).await;
            return ApiError::ShuttingDown.into_response();
        }
        let trace = Trace::request(req.method().as_str(), req.uri().path(), req.headers());
        let resp = match self.try_handle(req, peer.ip(), &trace).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        // The span ends with the response head; a streamed body may run on.
        trace.status(resp.status().as_u16());
        trace.end();
        resp
    }

    /// The chain: checks → `_redirects` rules → fnhost's own API | CORS preflight → route →
    /// origin check → run or enqueue → CORS headers.
    async fn try_handle<B>(
        &self,
        req: Request<B>,
        peer: std::net::IpAddr,
        trace: &Trace,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // This request keeps the functions and rules in force now, whatever a reload does.
        let served = self.served.load_full();
        let (table, edge) = (&served.table, &served.edge);
        check_host(&req)?;
        // `.`, `..` and empty segments mean different things to different servers: refused
        // before anything matches or forwards the path.
        rules::check_path(req.uri().path()).map_err(ApiError::BadRequest)?;
        let req = match self.apply_rules(table, edge, req, peer, trace).await? {
            Ruled::Pass(req) => req,
            Ruled::Answered(resp) => return Ok(resp),
        };
        if let Some(rest) = own_path(req.uri().path()).map(str::to_string) {
            return self.own_api(edge, req, &rest).await;
        }
        let origin = cors::request_origin(req.headers()).map(str::to_string);
        let preflight = cors::preflight_method(req.method(), req.headers()).map(str::to_string);
        let path = req.uri().path();
        if let (Some(method), Some(origin), false) = (&preflight, &origin, edge.cors.is_empty())
            && let Some(resp) =
                preflight_answer(table, &edge.cors, path, method, origin, req.headers())?
        {
            return Ok(resp);
        }
        let routed = route(table, &req)?;
        let client = self.trusted.client(peer, req.headers());
        // A limited request's 429 carries the routed function's CORS headers: a page can read it.
        let routed_policy = edge.cors.for_function(&routed.0.name);
        let ((function, params, pattern), req) = match limit(table, routed, req, client) {
            Ok(passed) => passed,
            Err(e) => return Ok(decorated(e.into_response(), routed_policy, &origin, true)),
        };
        let edge_set = self.edge_headers(peer, client, req.headers());
        let req = crate::invocation::from_client(req, &edge_set);
        let id = new_id();
        dispatch::routed_span(trace, (req.method(), pattern), &function, &id, client);
        // CORS, in one place: refuse a foreign origin the policy does not allow before anything
        // runs or is stored; add the missing Access-Control-* headers to whatever is answered.
        let policy = edge.cors.for_function(&function.name);
        if let (Some(policy), Some(origin)) = (policy, &origin) {
            check_origin(policy, origin, &req, &function.name).inspect_err(|_| {
                trace
                    .child("cors")
                    .fail("origin_not_allowed", "origin not allowed");
            })?;
        }
        let answered = match function.settings.mode {
            Mode::Sync => self.invoke_sync(&function, req, &params, id, trace).await,
            Mode::Background => self.accept_background(&function, req, id, trace).await,
        };
        // fnhost's own answers (a 202, an error) expose its headers; a function's are its own.
        let ours = function.settings.mode == Mode::Background || answered.is_err();
        let resp = answered.unwrap_or_else(ApiError::into_response);
        Ok(decorated(resp, policy, &origin, ours))
    }

    /// The site's `_redirects` rules, applied to a path that is not fnhost's own: a redirect or
    /// a proxied answer ends the request; a rewrite changes its path (routed once, not ruled
    /// again).
    async fn apply_rules<B>(
        &self,
        table: &FunctionTable,
        edge: &Edge,
        mut req: Request<B>,
        peer: std::net::IpAddr,
        trace: &Trace,
    ) -> Result<Ruled<B>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // No allocation on the common path: a site without rules, or fnhost's own paths.
        if edge.redirects.is_empty() || own_path(req.uri().path()).is_some() {
            return Ok(Ruled::Pass(req));
        }
        let path = req.uri().path().to_string();
        let routed = || {
            !matches!(
                table.router.route(req.method().as_str(), &path),
                Match::NotFound
            )
        };
        let resolved = rules::resolve_indexed(&edge.redirects, &path, req.uri().query(), routed);
        let resolved = match resolved {
            Some((index, action)) => Some(self.rule_limit(edge, index, peer, &req, action)?),
            None => None,
        };
        let _span = resolved
            .as_ref()
            .map(|action| dispatch::rule_span(trace, action));
        match resolved {
            None => Ok(Ruled::Pass(req)),
            Some(Action::Redirect { status, location }) => {
                if rules::is_off_site(&location) {
                    return Err(ApiError::BadRequest(format!(
                        "the redirect rule for {path} would leave the site"
                    )));
                }
                Ok(Ruled::Answered(error::redirect(status, &location)))
            }
            Some(Action::Proxy(url)) => Ok(Ruled::Answered(
                proxy::forward(&self.engine, req, &url, proxy::TIMEOUT).await?,
            )),
            Some(Action::Rewrite(target)) => {
                *req.uri_mut() = target.parse().map_err(|_| {
                    ApiError::BadRequest(format!("rewrite produced a bad path {target:?}"))
                })?;
                Ok(Ruled::Pass(req))
            }
        }
    }

    /// The action of rule `index` once past its rate limit, if it has one: the rule's own, the
    /// limit's rewrite, or `429`.
    fn rule_limit<B>(
        &self,
        edge: &Edge,
        index: usize,
        peer: std::net::IpAddr,
        req: &Request<B>,
        action: Action,
    ) -> Result<Action, ApiError> {
        use crate::functions::rate::Verdict;
        let Some(Some(limiter)) = edge.rule_limits.get(index) else {
            return Ok(action);
        };
        let client = self.trusted.client(peer, req.headers());
        let host = (req.headers().get(http::header::HOST)).and_then(|h| h.to_str().ok());
        let now = u64::try_from(crate::queue::now_ms()).unwrap_or(0);
        let rule = edge
            .redirects
            .iter()
            .nth(index)
            .map_or("", |r| r.from.as_str());
        match limiter.check(client, host, now) {
            Verdict::Pass => Ok(action),
            Verdict::Limited { retry_after } => {
                crate::metrics::rule_rate_limited(rule, "rate_limit");
                Err(ApiError::RateLimited { retry_after })
            }
            Verdict::Rewrite(to) => {
                crate::metrics::rule_rate_limited(rule, "rewrite");
                Ok(Action::Rewrite(to))
            }
        }
    }

    /// `/.fnhost{rest}`: deploys (which stream their bodies), else fnhost's bodiless API, with
    /// CORS when the request has an `Origin` and the site a policy.
    async fn own_api<B>(
        &self,
        edge: &Edge,
        req: Request<B>,
        rest: &str,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(deploys) = rest.strip_prefix("/deploys")
            && (deploys.is_empty() || deploys.starts_with('/'))
        {
            return deploys::handle(self, req, deploys).await;
        }
        if let Some(events) = rest.strip_prefix("/events") {
            return events::handle(self, req, events).await;
        }
        let origin = cors::request_origin(req.headers());
        match (origin, edge.cors.is_empty()) {
            (Some(origin), false) => {
                let preflight = cors::preflight_method(req.method(), req.headers());
                Ok(self
                    .api_with_cors(&edge.cors, &req, rest, origin, preflight)
                    .await)
            }
            _ => api::handle(self, req.method(), rest, req.uri().query(), req.headers()).await,
        }
    }

    /// `/.fnhost{rest}` for a request with an `Origin`: the status resource carries the CORS
    /// headers of its invocation's function (else the site-wide policy); preflights for it are
    /// answered here.
    async fn api_with_cors<B>(
        &self,
        cors: &Policies,
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
                    .and_then(|f| cors.for_function(f))
                    .or(cors.site())
            }
            _ => None,
        };
        let Some(policy) = policy else {
            return api::handle(self, req.method(), rest, req.uri().query(), req.headers())
                .await
                .unwrap_or_else(ApiError::into_response);
        };
        if let Some(method) = preflight {
            let requested = req
                .headers()
                .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
                .and_then(|v| v.to_str().ok());
            return error::no_content(policy.preflight(origin, method, requested));
        }
        let mut resp = api::handle(self, req.method(), rest, req.uri().query(), req.headers())
            .await
            .unwrap_or_else(ApiError::into_response);
        policy.decorate(resp.headers_mut(), origin, &[INVOCATION_ID]);
        resp
    }
}

/// What the rules made of a request: go on with it (maybe rewritten), or it is answered.
enum Ruled<B> {
    Pass(Request<B>),
    Answered(Response<Body>),
}

/// A routed request: the function, its route parameters and the route's pattern as written.
type Routed<'t> = (
    Arc<crate::functions::Function>,
    Vec<(String, String)>,
    &'t str,
);

/// The function `req` is routed to, its route parameters and pattern; `405` or `404` otherwise.
fn route<'t, B>(table: &'t FunctionTable, req: &Request<B>) -> Result<Routed<'t>, ApiError> {
    match table.router.route(req.method().as_str(), req.uri().path()) {
        Match::Found(f, params, pattern) => Ok((f.clone(), params, pattern)),
        Match::MethodNotAllowed(allow) => Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        }),
        Match::NotFound => Err(ApiError::NoRoute(req.uri().path().to_string())),
    }
}

/// `resp` with the CORS headers of `policy` for `origin`, if both: the function's own
/// Access-Control-* headers win, fnhost fills in the rest; fnhost's own answers (`ours`: a
/// 202, an error) expose its headers too.
fn decorated(
    mut resp: Response<Body>,
    policy: Option<&crate::config::cors::Policy>,
    origin: &Option<String>,
    ours: bool,
) -> Response<Body> {
    if let (Some(policy), Some(origin)) = (policy, origin) {
        let expose: &[&str] = if ours {
            &[INVOCATION_ID, "location", "retry-after"]
        } else {
            &[]
        };
        policy.decorate(resp.headers_mut(), origin, expose);
    }
    resp
}

/// A routed request past its function's rate limit: as it was, or rewritten (and routed again)
/// by a `rewrite` action; `429` when the limit says so.
fn limit<'t, B>(
    table: &'t FunctionTable,
    (function, params, pattern): Routed<'t>,
    mut req: Request<B>,
    client: std::net::IpAddr,
) -> Result<(Routed<'t>, Request<B>), ApiError> {
    use crate::functions::rate::Verdict;
    let Some(rate) = &function.rate else {
        return Ok(((function, params, pattern), req));
    };
    let host = (req.headers().get(http::header::HOST)).and_then(|h| h.to_str().ok());
    match rate.check(
        client,
        host,
        u64::try_from(crate::queue::now_ms()).unwrap_or(0),
    ) {
        Verdict::Pass => Ok(((function, params, pattern), req)),
        Verdict::Limited { retry_after } => {
            crate::metrics::rate_limited(&function.name, "rate_limit");
            tracing::debug!(function = function.name, %client, "refused: rate limit");
            Err(ApiError::RateLimited { retry_after })
        }
        Verdict::Rewrite(to) => {
            crate::metrics::rate_limited(&function.name, "rewrite");
            *req.uri_mut() = to
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("bad rate-limit rewrite {to:?}")))?;
            let routed = route(table, &req)?;
            Ok((routed, req))
        }
    }
}

/// Refuses (`403`) a foreign `origin` that `policy` does not allow, before anything runs or
/// is stored; a same-origin request passes.
fn check_origin<B>(
    policy: &crate::config::cors::Policy,
    origin: &str,
    req: &Request<B>,
    function: &str,
) -> Result<(), ApiError> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if policy.allowed(origin) || cors::same_origin(origin, host) {
        return Ok(());
    }
    tracing::info!(
        function,
        origin,
        "refused: origin not allowed by the CORS policy"
    );
    Err(ApiError::OriginNotAllowed {
        origin: origin.to_string(),
    })
}

/// Answers a CORS preflight for a function route without invoking anything. `None` when the
/// route's function has no policy: then its `OPTIONS` reaches it, as on Netlify.
fn preflight_answer(
    table: &FunctionTable,
    cors: &Policies,
    path: &str,
    method: &str,
    origin: &str,
    headers: &http::HeaderMap,
) -> Result<Option<Response<Body>>, ApiError> {
    let policy = match table.router.route(method, path) {
        Match::Found(f, _, _) => match cors.for_function(&f.name) {
            Some(p) => p,
            None => return Ok(None),
        },
        // The route does not take that method: a refusal, unless no site-wide policy speaks
        // for the route (then the usual 405 answers).
        Match::MethodNotAllowed(_) => match cors.site() {
            Some(_) => return Ok(Some(error::no_content(cors::refused_preflight()))),
            None => return Ok(None),
        },
        Match::NotFound => return Err(ApiError::NoRoute(path.to_string())),
    };
    let requested = headers
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok());
    Ok(Some(error::no_content(
        policy.preflight(origin, method, requested),
    )))
}

/// An HTTP/1.1 request must carry exactly one `Host` (RFC 9112 §3.2); else `400`.
fn check_host<B>(req: &Request<B>) -> Result<(), ApiError> {
    if req.version() != http::Version::HTTP_11 {
        return Ok(());
    }
    match req.headers().get_all(http::header::HOST).iter().count() {
        1 => Ok(()),
        0 => Err(ApiError::BadRequest("missing Host header".into())),
        _ => Err(ApiError::BadRequest("more than one Host header".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (security item 7): HTTP/1.1 requests without `Host`, or with two, were
    /// served.
    #[test]
    fn http11_needs_exactly_one_host() {
        let req = |hosts: &[&str], version| {
            let mut b = Request::builder().uri("/").version(version);
            for h in hosts {
                b = b.header(http::header::HOST, *h);
            }
            b.body(()).unwrap()
        };
        assert!(check_host(&req(&["a"], http::Version::HTTP_11)).is_ok());
        assert!(check_host(&req(&[], http::Version::HTTP_11)).is_err());
        assert!(check_host(&req(&["a", "b"], http::Version::HTTP_11)).is_err());
        assert!(check_host(&req(&[], http::Version::HTTP_10)).is_ok());
    }
}
