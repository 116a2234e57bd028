//! fnhost's own endpoints under `/.fnhost`: the status resource of a background invocation
//! (its unguessable id is the capability), health, and the admin operations behind the bearer
//! token — list, replay a dead invocation, cancel a waiting one, run a waiting retry now; list
//! the functions served — and the Prometheus metrics.

use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use super::App;
use super::error::{ApiError, json};
use crate::body::Body;
use crate::ids::API_PREFIX;
use crate::queue::{InvocationState, QueueError};

/// Most invocations one admin list returns.
pub const LIST_LIMIT: u32 = 100;

/// Answers `/.fnhost{rest}`.
pub async fn handle(
    app: &App,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let params = parse_query(query.unwrap_or(""));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let internal = |e: QueueError| queue_error(rest, e);
    match (method, segments.as_slice()) {
        (&Method::GET, ["health"]) => Ok(health(app).await),
        (&Method::GET, ["invocations", id]) => {
            let Some(status) = app.queue.status(id).await.map_err(internal)? else {
                return Err(ApiError::NoInvocation(id.to_string()));
            };
            app.check_reader(&status.function, headers)?;
            Ok(json(StatusCode::OK, &status))
        }
        (&Method::GET, ["invocations"]) => {
            app.check_admin(headers)?;
            let limit = get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(LIST_LIMIT)
                .min(LIST_LIMIT);
            let with_bodies = matches!(get("result"), Some("1" | "true"));
            let state = get("state")
                .map(str::parse::<InvocationState>)
                .transpose()
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let list = app
                .queue
                .list(get("function"), state, limit, with_bodies)
                .await
                .map_err(internal)?;
            Ok(json(StatusCode::OK, &list))
        }
        (&Method::GET, ["invocations", id, "detail"]) => {
            app.check_admin(headers)?;
            match app.queue.detail(id).await.map_err(internal)? {
                Some(detail) => Ok(json(StatusCode::OK, &detail)),
                None => Err(ApiError::NoInvocation(id.to_string())),
            }
        }
        (&Method::GET, ["logs"]) => {
            app.check_admin(headers)?;
            let after = get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let (lines, next) = crate::logs::recent(get("function"), after, 500);
            Ok(json(
                StatusCode::OK,
                &json!({ "lines": lines, "next": next }),
            ))
        }
        (&Method::GET, ["ui", rest @ ..]) => ui(app, rest),
        (&Method::GET, ["functions"]) => {
            app.check_admin(headers)?;
            Ok(json(StatusCode::OK, &functions(&app.table.current())))
        }
        (
            &Method::POST,
            [
                "invocations",
                id,
                action @ ("replay" | "cancel" | "run-now"),
            ],
        ) => {
            app.check_admin(headers)?;
            let done = match *action {
                "replay" => app.queue.replay(id).await,
                "cancel" => app.queue.cancel(id).await,
                _ => app.queue.run_now(id).await,
            }
            .map_err(internal)?;
            if !done {
                let state = app
                    .queue
                    .status(id)
                    .await
                    .map_err(internal)?
                    .map(|s| s.state);
                return match state {
                    None => Err(ApiError::NoInvocation(id.to_string())),
                    Some(state) => Err(ApiError::Conflict(format!(
                        "cannot {action} an invocation that is {state}"
                    ))),
                };
            }
            let status = app.queue.status(id).await.map_err(internal)?;
            Ok(json(StatusCode::OK, &status))
        }
        (&Method::GET, ["metrics"]) => {
            // Open without an admin token (like /health); behind it when one is set.
            if app.has_admin_token() {
                app.check_admin(headers)?;
            }
            crate::metrics::queue_failing(app.queue.health().await.state != "ok");
            let counts = app.queue.counts().await.map_err(internal)?;
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
        (_, ["health" | "metrics" | "functions" | "logs"] | ["invocations", ..]) => {
            Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allow: vec![if segments.len() == 3 { "POST" } else { "GET" }.to_string()],
            })
        }
        _ => Err(ApiError::NoEndpoint(format!("{API_PREFIX}{rest}"))),
    }
}

/// A queue error met answering `/.fnhost{rest}`: the queue unavailable (disk full, database
/// down) is a `503` the client may retry; anything else is fnhost's own failure, logged under
/// an id the answer names.
fn queue_error(rest: &str, e: QueueError) -> ApiError {
    if e.is_unavailable() {
        tracing::warn!("queue unavailable answering {API_PREFIX}{rest}: {e}");
        return ApiError::QueueUnavailable;
    }
    let id = crate::ids::new_id();
    tracing::error!(id, "queue error answering {API_PREFIX}{rest}: {e}");
    ApiError::Internal { id }
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
    if !app.has_admin_token() {
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
/// name, mode, routes (as declared), methods (empty: any), schedule and its next run, budget,
/// memory cap, retry delays, destinations, concurrency cap, and this node's last hour.
fn functions(table: &crate::functions::FunctionTable) -> serde_json::Value {
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
                "routes": s.routes.patterns.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "methods": s.routes.methods,
                "schedule": s.schedule.as_ref().map(|s| s.as_str()),
                "next_run": next_run,
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

fn decode(s: &str) -> String {
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
