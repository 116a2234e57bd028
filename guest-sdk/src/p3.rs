//! The WASI 0.3 flavour (cargo feature `p3`): an `async fn` handler exported as
//! `wasi:http/service@0.3.0` by [`service!`](crate::service), an outbound [`fetch`] that
//! awaits, and [`spawn`] for work that goes on after the response.
//!
//! The handler gets and returns the same [`Request`] and [`IntoResponse`] types as the 0.2
//! flavour; what changes is that it may `.await` (outbound requests, timers, several
//! downloads at once with `futures::join!`), and that the response is sent as soon as the
//! handler returns while spawned tasks finish within the same budget.
//!
//! Built on the `wasip3` crate's bindings (re-exported as [`wasip3`] for anything below this
//! API, such as streaming a body as it is produced).

use std::fmt;

use http::{HeaderMap, StatusCode};
use wasip3::http::types::{ErrorCode, Fields, Request as WasiRequest, Response as WasiResponse};
use wasip3::{wit_future, wit_stream};

use crate::{IntoResponse, Request, Response, convert};

pub use wasip3;

/// Runs `work` after the handler has returned, while the response is being sent: fnhost's
/// `waitUntil` for WASI 0.3. The invocation ends when every spawned task has ended, and the
/// invocation's budget (`timeout`) stops them like any other work.
///
/// ```no_run
/// # async fn handle(req: fnhost_sdk::Request) -> &'static str {
/// fnhost_sdk::p3::spawn(async move {
///     let _ = fnhost_sdk::p3::fetch(req).await; // forward it, after answering
/// });
/// "accepted\n"
/// # }
/// ```
pub fn spawn(work: impl Future<Output = ()> + 'static) {
    wasip3::spawn_local(work);
}

/// Not public API: what `service!` calls for each request.
#[doc(hidden)]
pub async fn serve<R: IntoResponse, F: Future<Output = R>>(
    request: WasiRequest,
    handler: impl FnOnce(Request) -> F,
) -> Result<WasiResponse, ErrorCode> {
    let (response, after) = match read_request(request).await {
        Ok(request) => handler(request).await.into_response_then(),
        Err(message) => ((StatusCode::BAD_REQUEST, message).into_response(), None),
    };
    let response = to_wasi_response(response)?;
    if let Some(work) = after {
        spawn(async move { work() });
    }
    Ok(response)
}

/// The whole request: method, URI, headers, and the body read to its end.
async fn read_request(request: WasiRequest) -> Result<Request, String> {
    let uri = convert::uri_from_parts(
        request.get_scheme().as_ref().map(scheme_name),
        request.get_authority().as_deref(),
        request.get_path_with_query().as_deref(),
    );
    let method = http::Method::try_from(request.get_method())
        .map_err(|err| format!("unsupported method: {err}"))?;
    let headers = headers_of(request.get_headers());
    let (_, done) = wit_future::new(|| Ok(()));
    let (body, _trailers) = WasiRequest::consume_body(request, done);
    let mut req = Request::new(body.collect().await);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

fn scheme_name(scheme: &wasip3::http::types::Scheme) -> &str {
    use wasip3::http::types::Scheme;
    match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
        Scheme::Other(other) => other,
    }
}

/// A header map from `fields`, skipping entries `http` rejects.
fn headers_of(fields: Fields) -> HeaderMap {
    convert::headers_from_pairs(fields.copy_all())
}

/// A `fields` resource from `headers`: as in the 0.2 flavour, headers the host forbids
/// (hop-by-hop ones such as `connection`) are dropped rather than failing the message.
fn fields_of(headers: &HeaderMap) -> Fields {
    let entries = convert::header_pairs(headers);
    Fields::from_list(&entries).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (name, value) in &entries {
            let _ = fields.append(name, value);
        }
        fields
    })
}

/// The response as a `wasi:http` response whose body a spawned task writes.
fn to_wasi_response(response: Response) -> Result<WasiResponse, ErrorCode> {
    let (parts, bytes) = response.into_parts();
    let fields = fields_of(&parts.headers);
    let (mut writer, body) = wit_stream::new();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (wasi, _sent) = WasiResponse::new(fields, Some(body), trailers);
    wasi.set_status_code(parts.status.as_u16())
        .map_err(|()| internal(format!("status {} refused", parts.status)))?;
    spawn(async move {
        // The client may be gone: nobody is left to tell.
        let _ = writer.write_all(bytes).await;
    });
    Ok(wasi)
}

fn internal(message: String) -> ErrorCode {
    ErrorCode::InternalError(Some(message))
}

/// Why [`fetch`] failed. Its `Display` names the `wasi:http` error code when the host reported
/// one, e.g. `outbound request failed: HttpRequestDenied` when fnhost does not allow the
/// destination.
#[derive(Debug)]
pub enum FetchError {
    /// The request could not be expressed (no scheme or authority, a header WASI refuses).
    Invalid(String),
    /// The host or the network answered with a `wasi:http` error code.
    Http(ErrorCode),
}

impl FetchError {
    /// Whether the host refused to send the request (`HttpRequestDenied`).
    pub fn is_denied(&self) -> bool {
        matches!(self, FetchError::Http(ErrorCode::HttpRequestDenied))
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Invalid(message) => write!(f, "invalid outbound request: {message}"),
            FetchError::Http(code) => {
                let name = format!("{code:?}");
                let name = name.trim_start_matches("ErrorCode::");
                write!(f, "outbound request failed: {name}")
            }
        }
    }
}

impl std::error::Error for FetchError {}

/// Sends `request` (an absolute URI: `https://api.example.com/v1/items`) and awaits the whole
/// response. Other requests and spawned tasks go on meanwhile, so several fetches joined
/// together download at once. fnhost decides which destinations are allowed
/// (`allowed_hosts`); a refused one is [`FetchError::is_denied`].
pub async fn fetch(request: Request) -> Result<Response, FetchError> {
    let wasi = to_wasi_request(request)?;
    let upstream = wasip3::http::client::send(wasi)
        .await
        .map_err(FetchError::Http)?;
    let status = StatusCode::from_u16(upstream.get_status_code())
        .map_err(|err| FetchError::Invalid(err.to_string()))?;
    let headers = headers_of(upstream.get_headers());
    let (_, done) = wit_future::new(|| Ok(()));
    let (body, _trailers) = WasiResponse::consume_body(upstream, done);
    let mut response = Response::new(body.collect().await);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn to_wasi_request(request: Request) -> Result<WasiRequest, FetchError> {
    let (parts, bytes) = request.into_parts();
    let invalid = |what: &str| FetchError::Invalid(format!("{what} refused: {}", parts.uri));
    let authority = parts
        .uri
        .authority()
        .ok_or_else(|| invalid("no authority"))?;
    let fields = fields_of(&parts.headers);
    let (mut writer, body) = wit_stream::new();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (wasi, _sent) = WasiRequest::new(fields, Some(body), trailers, None);
    wasi.set_method(&(&parts.method).into())
        .map_err(|()| invalid("method"))?;
    wasi.set_scheme(parts.uri.scheme().map(Into::into).as_ref())
        .map_err(|()| invalid("scheme"))?;
    wasi.set_authority(Some(authority.as_str()))
        .map_err(|()| invalid("authority"))?;
    wasi.set_path_with_query(parts.uri.path_and_query().map(|pq| pq.as_str()))
        .map_err(|()| invalid("path"))?;
    spawn(async move {
        let _ = writer.write_all(bytes).await;
    });
    Ok(wasi)
}
