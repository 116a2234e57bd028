//! fnhost's own endpoints under `/.fnhost`: the status resource of a background invocation
//! (its unguessable id is the capability), health, and the admin operations behind the bearer
//! token — list, replay a dead invocation, cancel a waiting one, run a waiting retry now; list
//! the functions served — and the Prometheus metrics.

use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use super::App;
use super::error::{ApiError, json, queue_error};
use crate::body::Body;
use crate::ids::API_PREFIX;
use crate::queue::{InvocationState, QueueError};

/// Most invocations one admin list returns.
pub const LIST_LIMIT: u32 = 100;

/// Answers `/.fnhost{rest}`: the route, then the endpoint's own steps.
pub async fn handle(
    app: &App,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let call = Call {
        app,
        rest,
        params: parse_query(query.unwrap_or("")),
        headers,
    };
    match (method, segments.as_slice()) {
        (&Method::GET, ["health"]) => Ok(health(app).await),
        (&Method::GET, ["invocations", id]) => call.status(id).await,
        (&Method::GET, ["invocations"]) => call.list().await,
        (&Method::GET, ["invocations", id, "detail"]) => call.detail(id).await,
        (&Method::GET, ["logs"]) => call.logs(),
        (&Method::GET, ["ui", rest @ ..]) => ui(app, rest),
        (&Method::GET, ["functions"]) => {
            app.auth.admin(headers)?;
            // A queue that cannot say which schedules are paused still lists the functions.
            let paused = app.queue.paused_schedules().await.unwrap_or_default();
            Ok(json(
                StatusCode::OK,
                &functions(&app.table.current(), &paused),
            ))
        }
        (
            &Method::POST,
            [
                "invocations",
                id,
                action @ ("replay" | "cancel" | "run-now"),
            ],
        ) => call.act(id, action).await,
        (&Method::GET, ["metrics"]) => call.metrics().await,
        (_, ["functions", name, "schedule", action @ ..]) => {
            let count = call.get("n");
            super::schedules::handle(app, method, name, action, count, headers).await
        }
        (_, ["health" | "metrics" | "functions" | "logs"] | ["invocations", ..]) => {
            Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allow: vec![if segments.len() == 3 { "POST" } else { "GET" }.to_string()],
            })
        }
        _ => Err(ApiError::NoEndpoint(format!("{API_PREFIX}{rest}"))),
    }
}

/// One call of an endpoint: who asks (headers), with what query.
struct Call<'a> {
    app: &'a App,
    /// The path after `/.fnhost`, for the log.
    rest: &'a str,
    params: Vec<(String, String)>,
    headers: &'a HeaderMap,
}

impl Call<'_> {
    /// The query parameter `k`.
    fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn queue_error(&self, e: QueueError) -> ApiError {
        queue_error(self.rest, e)
    }

    /// `GET /.fnhost/invocations/ID`: anyone with the id, unless the function's results are
    /// behind a token.
    async fn status(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let status = self
            .app
            .queue
            .status(id)
            .await
            .map_err(|e| self.queue_error(e))?;
        let status = status.ok_or_else(|| ApiError::NoInvocation(id.to_string()))?;
        let table = self.app.table.current();
        let access = table.get(&status.function).map(|f| &f.settings.access);
        self.app.auth.reader(access, self.headers)?;
        Ok(json(StatusCode::OK, &status))
    }

    /// `GET /.fnhost/invocations?function=&state=&limit=&result=` (admin).
    async fn list(&self) -> Result<Response<Body>, ApiError> {
        self.app.auth.admin(self.headers)?;
        let limit = (self.get("limit").and_then(|l| l.parse().ok()))
            .unwrap_or(LIST_LIMIT)
            .min(LIST_LIMIT);
        let with_bodies = matches!(self.get("result"), Some("1" | "true"));
        let state = (self.get("state").map(str::parse::<InvocationState>))
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let list = (self.app.queue)
            .list(self.get("function"), state, limit, with_bodies)
            .await
            .map_err(|e| self.queue_error(e))?;
        Ok(json(StatusCode::OK, &list))
    }

    /// `GET /.fnhost/invocations/ID/detail` (admin).
    async fn detail(&self, id: &str) -> Result<Response<Body>, ApiError> {
        self.app.auth.admin(self.headers)?;
        let detail = self
            .app
            .queue
            .detail(id)
            .await
            .map_err(|e| self.queue_error(e))?;
        let detail = detail.ok_or_else(|| ApiError::NoInvocation(id.to_string()))?;
        Ok(json(StatusCode::OK, &detail))
    }

    /// `GET /.fnhost/logs?function=&after=` (admin): this node's live tail.
    fn logs(&self) -> Result<Response<Body>, ApiError> {
        self.app.auth.admin(self.headers)?;
        let after = self.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
        let (lines, next) = crate::logs::recent(self.get("function"), after, 500);
        Ok(json(
            StatusCode::OK,
            &json!({ "lines": lines, "next": next }),
        ))
    }

    /// `POST /.fnhost/invocations/ID/{replay,cancel,run-now}` (admin): the new status, or `409`
    /// naming the state the action does not apply to.
    async fn act(&self, id: &str, action: &str) -> Result<Response<Body>, ApiError> {
        self.app.auth.admin(self.headers)?;
        let queue = &self.app.queue;
        let done = match action {
            "replay" => {
                queue
                    .replay(id, self.replay_deploy().await?.as_deref())
                    .await
            }
            "cancel" => queue.cancel(id).await,
            _ => queue.run_now(id).await,
        }
        .map_err(|e| self.queue_error(e))?;
        let status = queue.status(id).await.map_err(|e| self.queue_error(e))?;
        match (done, status) {
            (_, None) => Err(ApiError::NoInvocation(id.to_string())),
            (false, Some(s)) => Err(ApiError::Conflict(format!(
                "cannot {action} an invocation that is {}",
                s.state
            ))),
            (true, Some(s)) => Ok(json(StatusCode::OK, &s)),
        }
    }

    /// The deploy a replay runs: `?deploy=published` (the one published now), `?deploy=ID`, or
    /// by default the one it was accepted under (`None`).
    async fn replay_deploy(&self) -> Result<Option<String>, ApiError> {
        match self.get("deploy") {
            None | Some("" | "original") => Ok(None),
            Some("published") => {
                let published = (self.app.queue.published().await)
                    .map_err(|e| self.queue_error(e))?
                    .ok_or_else(|| ApiError::Conflict("no deploy is published".into()))?;
                Ok(Some(published.deploy))
            }
            Some(id) => match self
                .app
                .queue
                .deploy(id)
                .await
                .map_err(|e| self.queue_error(e))?
            {
                Some(d) => Ok(Some(d.id)),
                None => Err(ApiError::NoDeploy(id.to_string())),
            },
        }
    }

    /// `GET /.fnhost/metrics`: open without an admin token (like health), behind it when one
    /// is set. Queue gauges are read at each scrape.
    async fn metrics(&self) -> Result<Response<Body>, ApiError> {
        if self.app.auth.admin_on() {
            self.app.auth.admin(self.headers)?;
        }
        crate::metrics::queue_failing(self.app.queue.health().await.state != "ok");
        let counts = self
            .app
            .queue
            .counts()
            .await
            .map_err(|e| self.queue_error(e))?;
        for state in InvocationState::ALL {
            let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |c| c.1);
            crate::metrics::queue_depth(state.as_str(), n);
        }
        let text = crate::metrics::render().unwrap_or_default();
        let mut resp = Response::new(crate::body::full(text));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(resp)
    }
}

/// How long health waits for the database's own answers (durability settings, counts)
/// before it leaves them out: a load balancer's check must not hang on a dead database.
const HEALTH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /.fnhost/health`: `200` with the queue's backend, durability settings, write state and
/// counts by state; `503` with the same body while the queue's writes fail (`queue.state` is
/// `failing`, with the error class and since when).
async fn health(app: &App) -> Response<Body> {
    let writes = app.queue.health().await;
    let mut queue = match tokio::time::timeout(HEALTH_READ_TIMEOUT, app.queue.durability()).await {
        Ok(Ok(durability)) => durability,
        _ => json!({ "backend": app.queue.backend().as_str() }),
    };
    if let (Some(queue), serde_json::Value::Object(w)) = (queue.as_object_mut(), json!(writes)) {
        queue.extend(w);
    }
    let counts: Option<serde_json::Map<String, serde_json::Value>> =
        match tokio::time::timeout(HEALTH_READ_TIMEOUT, app.queue.recent_counts()).await {
            Ok(Ok(counts)) => Some(
                counts
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect(),
            ),
            _ => None,
        };
    let (status, word) = if writes.state == "ok" {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "failing")
    };
    json(
        status,
        &json!({ "status": word, "queue": queue, "invocations": counts }),
    )
}

/// The dashboard's files, embedded. Served only when admin endpoints are on (an admin token
/// is configured): the page is useless without them.
fn ui(app: &App, rest: &[&str]) -> Result<Response<Body>, ApiError> {
    const INDEX: &str = include_str!("../../ui/index.html");
    const SCRIPT: &str = include_str!("../../ui/app.js");
    const STYLE: &str = include_str!("../../ui/app.css");
    if !app.auth.admin_on() {
        return Err(ApiError::DashboardOff);
    }
    let (body, kind) = match rest {
        [] | [""] | ["index.html"] => (INDEX, "text/html; charset=utf-8"),
        ["app.js"] => (SCRIPT, "text/javascript; charset=utf-8"),
        ["app.css"] => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return Err(ApiError::NoEndpoint(format!(
                "{API_PREFIX}/ui/{}",
                rest.join("/")
            )));
        }
    };
    let mut resp = Response::new(crate::body::full(body));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    // Everything the page loads is its own: no inline script, no other origin.
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}

/// The functions served (what `fnhost invoke` looks a route up in, and the dashboard shows):
/// name, mode, the WASI HTTP world it speaks, routes (as declared), methods (empty: any), schedule and its next run, budget,
/// memory cap, retry delays, destinations, concurrency cap, and this node's last hour; for a
/// scheduled one, its zone, overlap policy and whether it is paused (`paused`: the names).
fn functions(table: &crate::functions::FunctionTable, paused: &[String]) -> serde_json::Value {
    let now = chrono::Utc::now();
    table
        .functions
        .iter()
        .map(|f| {
            let s = &f.settings;
            let next_run = s.schedule.as_ref().and_then(|sc| sc.next_after(now)).map(|t| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            });
            json!({
                "name": f.name,
                "mode": s.mode.to_string(),
                "world": f.component.world().as_str(),
                "routes": s.routes.patterns.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "methods": s.routes.methods,
                "schedule": s.schedule.as_ref().map(|s| s.as_str()),
                "next_run": next_run,
                "schedule_tz": s.schedule.as_ref().map(|s| s.zone().map_or("UTC", |z| z.name())),
                "overlap": s.schedule.as_ref().map(|_| format!("{:?}", s.overlap).to_lowercase()),
                "paused": s.schedule.as_ref().map(|_| paused.contains(&f.name)),
                "timeout_ms": s.limits.timeout.as_millis() as u64,
                "memory_bytes": s.limits.memory,
                "max_body": s.limits.max_body,
                "retry_delays_ms": s.retry.delays.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
                "on_success": s.destinations.on_success.as_ref().map(ToString::to_string),
                "on_failure": s.destinations.on_failure.as_ref().map(ToString::to_string),
                "concurrency": s.concurrency,
                "last_hour": crate::metrics::last_hour(&f.name),
            })
        })
        .collect()
}

/// `a=1&b=x%20y` → pairs, percent-decoded, `+` as space.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `s` with its `%XX` escapes (and `+`) decoded.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("function=a%2Db&state=dead&x=1+2&bad=%zz&trail=%4"),
            vec![
                ("function".into(), "a-b".into()),
                ("state".into(), "dead".into()),
                ("x".into(), "1 2".into()),
                ("bad".into(), "%zz".into()),
                ("trail".into(), "%4".into()),
            ]
        );
    }
}
