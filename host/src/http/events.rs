//! `/.fnhost/events`: events that wake waiting background invocations
//! (`fnhost:function/steps.wait-for-event`). The admin token sends and reads them.
//!
//! | request | answer |
//! |---|---|
//! | `POST /.fnhost/events/NAME?key=KEY` (body: the payload) | `201` stored, with the invocations it woke; `200` a repeated `Idempotency-Key` (nothing new) |
//! | `GET /.fnhost/events/ID` | `200` the event: name, key, size, when, what it woke |

use http::{Method, Request, Response, StatusCode};

use super::App;
use super::api::{decode, parse_query};
use super::deploys::Incoming;
use super::dispatch::read_body;
use super::error::{ApiError, json, queue_error};
use crate::body::Body;
use crate::queue::NewEvent;

/// The longest event name and key.
pub const MAX_NAME: usize = 256;

/// Answers `/.fnhost/events{rest}`.
pub async fn handle<B: Incoming>(
    app: &App,
    req: Request<B>,
    rest: &str,
) -> Result<Response<Body>, ApiError> {
    app.auth.admin(req.headers())?;
    let name = rest.trim_start_matches('/');
    match (req.method(), name) {
        (&Method::POST, name) if !name.is_empty() => send(app, req, decode(name)).await,
        (&Method::GET, id) if !id.is_empty() => show(app, id).await,
        _ => Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: vec!["POST".into(), "GET".into()],
        }),
    }
}

/// Checks an event's name or key: printable, no longer than [`MAX_NAME`].
fn checked(what: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "event {what} {value:?}: at most {MAX_NAME} bytes, no control characters"
        )));
    }
    Ok(())
}

async fn send<B: Incoming>(
    app: &App,
    req: Request<B>,
    name: String,
) -> Result<Response<Body>, ApiError> {
    checked("name", &name)?;
    let params = parse_query(req.uri().query().unwrap_or(""));
    let key = (params.iter())
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    checked("key", &key)?;
    let idempotency_key = (req.headers().get("idempotency-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let req = read_body(req, crate::workflow::MAX_STEP_SIZE, app.body_timeout).await?;
    let event = NewEvent {
        name,
        key,
        payload: req.into_body().to_vec(),
        idempotency_key,
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

async fn show(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let event = (app.queue.event(id).await).map_err(|e| queue_error("/events", e))?;
    let event = event.ok_or_else(|| ApiError::NoEndpoint(format!("/.fnhost/events/{id}")))?;
    Ok(json(StatusCode::OK, &event))
}
