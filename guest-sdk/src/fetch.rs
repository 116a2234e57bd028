//! `fetch`: outbound HTTP through `wasi:http/outgoing-handler`, blocking until the whole
//! response body has arrived. The host decides which destinations are allowed.

use std::fmt;

use http::StatusCode;

use crate::Response;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{ErrorCode, OutgoingRequest};
use crate::body::{self, BodyError};
use crate::convert;

/// Why [`fetch`] failed.
///
/// Its `Display` names the `wasi:http` error code when the host reported one, e.g.
/// `outbound request failed: HttpRequestDenied` when fnhost does not allow the destination.
#[derive(Debug)]
pub struct FetchError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The request could not be expressed (no scheme or authority, rejected method, ...).
    InvalidRequest(String),
    /// The host or the network answered with a `wasi:http` error code.
    Http(ErrorCode),
    /// Sending the request body or reading the response body failed.
    Body(String),
}

impl FetchError {
    fn invalid(message: impl Into<String>) -> Self {
        FetchError {
            kind: Kind::InvalidRequest(message.into()),
        }
    }

    /// The `wasi:http` error code, when the failure came with one.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        match &self.kind {
            Kind::Http(code) => Some(code),
            _ => None,
        }
    }

    /// Whether the host refused to send the request (`HttpRequestDenied`).
    pub fn is_denied(&self) -> bool {
        matches!(self.kind, Kind::Http(ErrorCode::HttpRequestDenied))
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::InvalidRequest(message) => write!(f, "invalid outbound request: {message}"),
            Kind::Http(code) => write!(
                f,
                "outbound request failed: {}",
                convert::error_code_name(code)
            ),
            Kind::Body(message) => write!(f, "outbound request body failed: {message}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<ErrorCode> for FetchError {
    fn from(code: ErrorCode) -> Self {
        FetchError {
            kind: Kind::Http(code),
        }
    }
}

impl From<BodyError> for FetchError {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::Http(code) => code.into(),
            other => FetchError {
                kind: Kind::Body(other.to_string()),
            },
        }
    }
}

/// Sends `request` and waits for the complete response.
///
/// The URI must be absolute (`https://example.com/path`). Blocks the (single) guest thread
/// until the response body has been read to the end.
///
/// ```no_run
/// let request = fnhost_sdk::http::Request::get("https://example.com/").body(Vec::new())?;
/// let response = fnhost_sdk::fetch(request)?;
/// println!("{}", response.status());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fetch(request: http::Request<Vec<u8>>) -> Result<Response, FetchError> {
    let (parts, bytes) = request.into_parts();
    let uri = &parts.uri;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| FetchError::invalid(format!("`{uri}` has no scheme")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| FetchError::invalid(format!("`{uri}` has no host")))?;
    let path_with_query = uri.path_and_query().map_or("/", |pq| pq.as_str());

    let outgoing = OutgoingRequest::new(convert::fields_from_headers(&parts.headers));
    outgoing
        .set_method(&convert::method_to_wasi(&parts.method))
        .map_err(|()| FetchError::invalid(format!("method `{}` rejected", parts.method)))?;
    outgoing
        .set_scheme(Some(&convert::scheme_to_wasi(scheme)))
        .map_err(|()| FetchError::invalid(format!("scheme `{scheme}` rejected")))?;
    outgoing
        .set_authority(Some(authority.as_str()))
        .map_err(|()| FetchError::invalid(format!("authority `{authority}` rejected")))?;
    outgoing
        .set_path_with_query(Some(path_with_query))
        .map_err(|()| FetchError::invalid(format!("path `{path_with_query}` rejected")))?;

    // Take the body before `handle` consumes the request; write it once the request is on its
    // way so a body larger than the host's buffer cannot deadlock.
    let body = outgoing
        .body()
        .map_err(|()| FetchError::invalid("request body unavailable"))?;
    let future = outgoing_handler::handle(outgoing, None)?;
    // A server may answer without reading the whole body (or before its end is sent) and the
    // host then closes the body stream: the answer still counts, so a failed write is only
    // reported when no response comes.
    let written = body::write_all(body, &bytes);

    let incoming = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => {
                written?;
                return Err(code.into());
            }
            Some(Err(())) => return Err(FetchError::invalid("response already taken")),
            None => future.subscribe().block(),
        }
    };

    let status = StatusCode::from_u16(incoming.status())
        .map_err(|_| FetchError::invalid(format!("upstream status {}", incoming.status())))?;
    let headers = convert::headers_from_fields(&incoming.headers());
    let body = incoming
        .consume()
        .map_err(|()| FetchError::invalid("response body unavailable"))?;
    let bytes = body::read_all(body)?;

    let mut response = Response::new(bytes);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_wasi_error_code() {
        let denied = FetchError::from(ErrorCode::HttpRequestDenied);
        assert!(denied.is_denied());
        assert_eq!(
            denied.to_string(),
            "outbound request failed: HttpRequestDenied"
        );
        let refused = FetchError::from(ErrorCode::ConnectionRefused);
        assert!(refused.to_string().contains("ConnectionRefused"));
        assert!(refused.error_code().is_some());
    }

    #[test]
    fn invalid_requests_quote_the_problem() {
        let err = FetchError::invalid("`/x` has no scheme");
        assert_eq!(
            err.to_string(),
            "invalid outbound request: `/x` has no scheme"
        );
        assert!(err.error_code().is_none());
    }
}
