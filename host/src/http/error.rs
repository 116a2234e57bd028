//! Every error fnhost answers itself becomes an HTTP response here, in one place. The
//! conversion does not log: whoever decides an error is worth logging logs it, with detail the
//! client must not see.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::ids::headers::INVOCATION_ID;

/// `Retry-After` (seconds) of a `503` because the queue cannot take writes: long enough for a
/// database restart or freed disk space not to be hammered, short enough to be back soon.
pub const QUEUE_RETRY_AFTER: &str = "5";

/// Errors answered by the host rather than a function.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route has the path.
    #[error("no function at {0}")]
    NoRoute(String),
    /// No invocation has the id (or it was purged).
    #[error("no invocation {0}")]
    NoInvocation(String),
    /// Nothing of fnhost's own lives at the path.
    #[error("no fnhost endpoint at {0}")]
    NoEndpoint(String),
    /// An admin endpoint, and no admin token is configured.
    #[error("admin endpoints are off (no admin_token configured)")]
    AdminOff,
    /// The dashboard, and no admin token is configured.
    #[error("the dashboard is off: set server.admin_token in fnhost.toml to turn it on")]
    DashboardOff,
    /// The route exists but not for this method.
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The methods the route takes.
        allow: Vec<String>,
    },
    /// The body is over the function's limit.
    #[error("request body over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request could not be read.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An `Idempotency-Key` came back with another request (method, path or body). Says
    /// nothing of the first request: keys may be guessable, the invocation id is a capability.
    #[error(
        "Idempotency-Key already used with a different request; use a new key for a new request"
    )]
    IdempotencyConflict,
    /// The host is shutting down and takes no new request.
    #[error("shutting down; retry shortly")]
    ShuttingDown,
    /// The client did not send its body in time.
    #[error("request body not received within {after:?}")]
    RequestTimeout {
        /// The body timeout.
        after: Duration,
    },
    /// Every invocation slot is taken.
    #[error("too many concurrent invocations; retry shortly")]
    Busy,
    /// The client (or domain) used up the function's `rate_limit` window.
    #[error("rate limit reached; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until a request would pass again.
        retry_after: u64,
    },
    /// The function ran past its budget.
    #[error("function exceeded its time budget (invocation {id})")]
    Timeout {
        /// Invocation id, to find the log lines.
        id: String,
    },
    /// The function trapped or never answered.
    #[error("function failed (invocation {id})")]
    FunctionFailed {
        /// Invocation id, to find the log lines.
        id: String,
    },
    /// A CORS policy applies and does not allow the request's origin.
    #[error("origin {origin} is not allowed")]
    OriginNotAllowed {
        /// The `Origin` header as sent.
        origin: String,
    },
    /// A proxy rule's upstream could not be reached or failed. `why` is a fixed phrase: the
    /// address and the OS error go to the log, never the client.
    #[error("bad gateway: {why}")]
    BadGateway {
        /// What a client may know.
        why: &'static str,
    },
    /// A proxy rule's upstream sent no response head in time.
    #[error("upstream did not answer within {after:?}")]
    UpstreamTimeout {
        /// The proxy timeout.
        after: Duration,
    },
    /// Admin endpoint without the right bearer token.
    #[error("admin token required")]
    Unauthorized,
    /// A status resource whose function keeps results behind a token (`status = "token"`),
    /// asked without the admin token or the function's `invoke_token`.
    #[error(
        "this invocation's status needs a token (the admin token or the function's invoke_token)"
    )]
    TokenRequired,
    /// The queue cannot take (or read) a write now: disk full, database down, no connection.
    /// Nothing was stored; the client may send the same request again.
    #[error("the queue is unavailable; nothing was stored, retry shortly")]
    QueueUnavailable,
    /// The action does not apply to the resource in its current state.
    #[error("{0}")]
    Conflict(String),
    /// A deploy refused before anything was stored: names the file, key or value at fault.
    #[error("deploy refused: {0}")]
    DeployRefused(String),
    /// No deploy has this id.
    #[error("no deploy {0}")]
    NoDeploy(String),
    /// The host itself failed (storage, etc.).
    #[error("internal error (invocation {id})")]
    Internal {
        /// Invocation id, to find the log lines.
        id: String,
    },
}

impl ApiError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoRoute(_)
            | ApiError::NoInvocation(_)
            | ApiError::NoEndpoint(_)
            | ApiError::AdminOff
            | ApiError::NoDeploy(_)
            | ApiError::DashboardOff => StatusCode::NOT_FOUND,
            ApiError::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy | ApiError::ShuttingDown | ApiError::QueueUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unauthorized | ApiError::TokenRequired => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyConflict | ApiError::DeployRefused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::FunctionFailed { .. } | ApiError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The `reason` label of a request fnhost refused to protect itself or its functions.
    fn rejection(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::PayloadTooLarge { .. } => "body_too_large",
            ApiError::OriginNotAllowed { .. } => "origin_not_allowed",
            ApiError::Busy => "overloaded",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::RequestTimeout { .. } => "body_timeout",
            ApiError::QueueUnavailable => "queue_unavailable",
            _ => return None,
        })
    }

    /// The response: status, a one-line text body, and the headers the error implies.
    pub fn into_response(self) -> Response<Body> {
        if let Some(reason) = self.rejection() {
            crate::metrics::rejected(reason);
        }
        let mut resp = text(self.status(), format!("{self}\n"));
        let headers = resp.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(header::ALLOW, v);
                }
            }
            ApiError::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::QueueUnavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(QUEUE_RETRY_AFTER),
                );
            }
            ApiError::Unauthorized | ApiError::TokenRequired => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::OriginNotAllowed { .. } => {
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            ApiError::Timeout { id }
            | ApiError::FunctionFailed { id }
            | ApiError::Internal { id } => {
                if let Ok(v) = HeaderValue::from_str(id) {
                    headers.insert(INVOCATION_ID, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// A queue error met answering `/.fnhost{rest}`: the queue unavailable (disk full, database
/// down) is a `503` the client may retry; anything else is fnhost's own failure, logged under
/// an id the answer names.
pub fn queue_error(rest: &str, e: crate::queue::QueueError) -> ApiError {
    if e.is_unavailable() {
        tracing::warn!(
            "queue unavailable answering {}{rest}: {e}",
            crate::ids::API_PREFIX
        );
        return ApiError::QueueUnavailable;
    }
    let id = crate::ids::new_id();
    tracing::error!(
        id,
        "queue error answering {}{rest}: {e}",
        crate::ids::API_PREFIX
    );
    ApiError::Internal { id }
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `204 No Content` with `headers` (a preflight answer).
pub(super) fn no_content(headers: http::HeaderMap) -> Response<Body> {
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    resp.headers_mut().extend(headers);
    resp
}

/// A redirect rule's answer.
pub(super) fn redirect(status: u16, location: &str) -> Response<Body> {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::FOUND);
    let mut resp = text(status, format!("Redirecting to {location}\n"));
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: ApiError) -> (u16, String) {
        let resp = e.into_response();
        let status = resp.status().as_u16();
        let bytes = futures::executor::block_on(http_body_util::BodyExt::collect(resp.into_body()))
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Regression: `GET /.fnhost/invocations/nope` answered "no function at no invocation
    /// nope" (the route error's wording reused for a missing invocation).
    #[test]
    fn missing_invocation_says_no_invocation() {
        assert_eq!(
            body(ApiError::NoInvocation("nope".into())),
            (404, "no invocation nope\n".into())
        );
    }

    #[test]
    fn every_error_has_its_status_and_headers() {
        let allow = ApiError::MethodNotAllowed {
            method: "PUT".into(),
            allow: vec!["GET".into(), "POST".into()],
        }
        .into_response();
        assert_eq!(allow.status(), 405);
        assert_eq!(allow.headers()[header::ALLOW], "GET, POST");
        let busy = ApiError::Busy.into_response();
        assert_eq!(
            (busy.status().as_u16(), &busy.headers()[header::RETRY_AFTER]),
            (503, &HeaderValue::from_static("1"))
        );
        let refused = ApiError::OriginNotAllowed {
            origin: "https://evil.test".into(),
        }
        .into_response();
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.headers()[header::VARY], "Origin");
        let failed = ApiError::FunctionFailed { id: "abc".into() }.into_response();
        assert_eq!(failed.status(), 500);
        assert_eq!(failed.headers()[INVOCATION_ID], "abc");
        assert_eq!(
            body(ApiError::BadGateway {
                why: "the upstream did not answer"
            }),
            (502, "bad gateway: the upstream did not answer\n".into())
        );
        assert_eq!(
            body(ApiError::UpstreamTimeout {
                after: Duration::from_secs(30)
            })
            .0,
            504
        );
        assert_eq!(body(ApiError::PayloadTooLarge { limit: 10 }).0, 413);
        let unavailable = ApiError::QueueUnavailable.into_response();
        assert_eq!(unavailable.status(), 503);
        assert_eq!(
            unavailable.headers()[header::RETRY_AFTER],
            QUEUE_RETRY_AFTER
        );
        let token = ApiError::TokenRequired.into_response();
        assert_eq!(token.status(), 401);
        assert_eq!(token.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
