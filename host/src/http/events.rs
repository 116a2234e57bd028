//! `/.fnhost/events`: events that wake waiting background invocations
//! (`fnhost:function/steps.wait-for-event`) and start the functions subscribed to them
//! (`events = [...]`). The admin token sends and reads them; `server.event_tokens` names a
//! token per event that may send that event only.
//!
//! | request | answer |
//! |---|---|
//! | `POST /.fnhost/events/NAME?key=KEY` or `?key_from=/json/pointer` (`&priority=N`; body: the payload) | `201` stored, with the invocations it woke and those it started; `200` a repeated `Idempotency-Key` (nothing new) |
//! | `GET /.fnhost/events/ID` | `200` the event: name, key, size, when, what it woke |

use http::{Method, Request, Response, StatusCode};

use super::App;
use super::api::{decode, parse_query};
use super::deploys::Incoming;
use super::dispatch::read_body;
use super::error::{ApiError, json, queue_error};
use crate::body::Body;
use crate::config::defaults;
use crate::config::ranges::bounds;
use crate::functions::FunctionTable;
use crate::ids::new_id;
use crate::queue::{NewEvent, NewInvocation};
use crate::workflow::{MAX_EVENT_NAME, is_event_name};

/// Answers `/.fnhost/events{rest}`.
pub async fn handle<B: Incoming>(
    app: &App,
    req: Request<B>,
    rest: &str,
) -> Result<Response<Body>, ApiError> {
    let name = rest.trim_start_matches('/');
    match (req.method(), name) {
        (&Method::POST, name) if !name.is_empty() => {
            let name = decode(name);
            app.auth.event_sender(&name, req.headers())?;
            send(app, req, name).await
        }
        (&Method::GET, id) if !id.is_empty() => {
            app.auth.admin(req.headers())?;
            show(app, id).await
        }
        _ => Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: vec!["POST".into(), "GET".into()],
        }),
    }
}

/// Checks an event's key: printable, no longer than [`MAX_EVENT_NAME`].
fn checked_key(key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_EVENT_NAME || key.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "event key {key:?}: at most {MAX_EVENT_NAME} bytes, no control characters"
        )));
    }
    Ok(())
}

async fn send<B: Incoming>(
    app: &App,
    req: Request<B>,
    name: String,
) -> Result<Response<Body>, ApiError> {
    if !is_event_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "event name {name:?}: 1 to {MAX_EVENT_NAME} bytes, no '/', '?', '#' or control character"
        )));
    }
    let params = parse_query(req.uri().query().unwrap_or(""));
    let param = |name: &str| {
        (params.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (lo, hi) = bounds::PRIORITY;
    let priority = match param("priority") {
        Some(p) => Some(
            (p.parse::<i32>().ok())
                .filter(|p| (lo..=hi).contains(p))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "priority {p:?}: a whole number from {lo} to {hi}"
                    ))
                })?,
        ),
        None => None,
    };
    let idempotency_key = (req.headers().get("idempotency-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // As much as one step may hold by default: the payload becomes the woken ones' step.
    let req = read_body(req, defaults::MAX_STEP_SIZE, app.body_timeout).await?;
    let payload = req.into_body().to_vec();
    let key = match param("key_from") {
        Some(pointer) => key_from(&payload, &pointer)?,
        None => param("key").unwrap_or_default(),
    };
    checked_key(&key)?;
    let starts = subscribers(&app.table.current(), (&name, &key), &payload, priority);
    let event = NewEvent {
        name,
        key,
        payload,
        idempotency_key,
        starts,
    };
    let sent = (app.queue.send_event(event).await).map_err(|e| queue_error("/events", e))?;
    crate::metrics::event(sent.new, sent.woke.len());
    let status = if sent.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &sent))
}

/// The key an event's JSON payload holds at `pointer` (RFC 6901, `/order/id`): a string, or a
/// number or boolean as written.
fn key_from(payload: &[u8], pointer: &str) -> Result<String, ApiError> {
    let refused = |why: &str| ApiError::BadRequest(format!("key_from={pointer:?}: {why}"));
    let json: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| refused("the payload is not JSON"))?;
    match json.pointer(pointer) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(refused(
            "the value there is not a string, number or boolean",
        )),
        None => Err(refused("the payload has no value there")),
    }
}

/// One invocation for each function subscribed to event `name` (`events = [...]`): a `POST`
/// of the payload to its own path, with the event's name and key as `fnhost-event-*`
/// headers, at `priority` if the sender gave one, else the function's.
fn subscribers(
    table: &FunctionTable,
    (name, key): (&str, &str),
    payload: &[u8],
    priority: Option<i32>,
) -> Vec<NewInvocation> {
    (table.functions.iter())
        .filter(|f| f.settings.events.iter().any(|e| e == name))
        .map(|f| NewInvocation {
            id: new_id(),
            function: f.name.clone(),
            dedup: None,
            method: "POST".into(),
            uri: format!("/.netlify/functions/{}", f.name),
            headers: vec![
                ("content-type".into(), "application/octet-stream".into()),
                ("fnhost-event-name".into(), name.to_string()),
                ("fnhost-event-key".into(), key.to_string()),
            ],
            body: payload.to_vec(),
            max_attempts: f.settings.retry.max_attempts(),
            deploy: f.deploy.as_deref().map(str::to_string),
            priority: priority.unwrap_or(f.settings.priority),
        })
        .collect()
}

async fn show(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let event = (app.queue.event(id).await).map_err(|e| queue_error("/events", e))?;
    let event = event.ok_or_else(|| ApiError::NoEndpoint(format!("/.fnhost/events/{id}")))?;
    Ok(json(StatusCode::OK, &event))
}
