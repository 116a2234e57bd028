//! Every error fnhost answers itself becomes an HTTP response here, in one place. The
//! conversion does not log: whoever decides an error is worth logging logs it, with detail the
//! client must not see.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::engine::Body;

/// Errors answered by the host rather than a function.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route has the path.
    #[error("no function at {0}")]
    NotFound(String),
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
    /// Every invocation slot is taken.
    #[error("too many concurrent invocations; retry shortly")]
    Busy,
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
    /// Admin endpoint without the right bearer token.
    #[error("admin token required")]
    Unauthorized,
    /// The action does not apply to the resource in its current state.
    #[error("{0}")]
    Conflict(String),
    /// The host itself failed (storage, etc.).
    #[error("internal error (invocation {id})")]
    Internal {
        /// Invocation id, to find the log lines.
        id: String,
    },
}

/// Header carrying the invocation id on responses fnhost writes.
pub const INVOCATION_ID: &str = "fnhost-invocation-id";

impl ApiError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::FunctionFailed { .. } | ApiError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The response: status, a one-line text body, and the headers the error implies.
    pub fn into_response(self) -> Response<Body> {
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
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
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
