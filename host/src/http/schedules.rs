//! `/.fnhost/functions/NAME/schedule` (admin): a scheduled function's schedule — its next
//! runs, pause and resume (durable, for every node on the queue), and a run now.

use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use super::App;
use super::error::{ApiError, json};
use crate::body::Body;
use crate::functions::Function;

/// Next runs shown at most.
const MAX_NEXT: usize = 100;

/// Answers `/.fnhost/functions/{name}/schedule{/action}`.
pub async fn handle(
    app: &App,
    method: &Method,
    name: &str,
    action: &[&str],
    count: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    app.auth.admin(headers)?;
    let table = app.table.current();
    let function = table
        .get(name)
        .ok_or_else(|| ApiError::NoEndpoint(format!("no function {name:?} is served")))?;
    if function.settings.schedule.is_none() {
        return Err(ApiError::Conflict(format!(
            "function {name:?} has no schedule"
        )));
    }
    let unavailable = |e: crate::queue::QueueError| super::error::queue_error("schedule", e);
    match (method, action) {
        (&Method::GET, []) => {
            let n = count
                .and_then(|n| n.parse().ok())
                .unwrap_or(5)
                .min(MAX_NEXT);
            view(app, function, n).await
        }
        (&Method::POST, [verb @ ("pause" | "resume")]) => {
            let paused = *verb == "pause";
            (app.queue.set_schedule_paused(name, paused).await).map_err(unavailable)?;
            tracing::info!(function = name, "schedule {verb}d (admin)");
            view(app, function, 5).await
        }
        (&Method::POST, ["run"]) => {
            let id = crate::background::scheduler::run_now(&app.queue, function)
                .await
                .map_err(unavailable)?;
            Ok(super::dispatch::accepted(&id))
        }
        (_, [] | ["pause" | "resume" | "run"]) => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: vec![if action.is_empty() { "GET" } else { "POST" }.to_string()],
        }),
        _ => Err(ApiError::NoEndpoint(format!(
            "/.fnhost/functions/{name}/schedule/{}",
            action.join("/")
        ))),
    }
}

/// The schedule as the CLI and the dashboard show it.
async fn view(app: &App, function: &Function, n: usize) -> Result<Response<Body>, ApiError> {
    let s = &function.settings;
    let schedule = s.schedule.as_ref().expect("checked by the caller");
    let paused = (app.queue.schedule_paused(&function.name).await)
        .map_err(|e| super::error::queue_error("schedule", e))?;
    let next: Vec<String> = schedule
        .upcoming(chrono::Utc::now(), n)
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "function": function.name,
            "schedule": schedule.as_str(),
            "tz": schedule.zone().map_or("UTC".to_string(), |z| z.name().to_string()),
            "overlap": match s.overlap {
                crate::config::schedule::Overlap::Skip => "skip",
                crate::config::schedule::Overlap::Allow => "allow",
            },
            "paused": paused,
            "next": next,
        }),
    ))
}
