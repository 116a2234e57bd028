//! Forwarding a request to an `http://` or `https://` upstream (a `_redirects` proxy rule), streaming both
//! bodies. Failures are [`ApiError`]s: the client gets a short status line, the log the detail.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::Frame;
use http_body_util::BodyExt;

use super::error::ApiError;
use crate::body::{Body, BodyError};
use crate::engine::Engine;

/// Time allowed from the start of forwarding to the upstream's response head.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Hop-by-hop headers: about one connection, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards `req` to `target` (an absolute URL, `http` or `https`: the same trust as guests'
/// HTTPS) and streams the answer back. An unreachable upstream is
/// [`ApiError::BadGateway`]; no response head within `timeout` [`ApiError::UpstreamTimeout`].
/// The detail goes to the log, never to the client.
pub async fn forward<B>(
    engine: &Engine,
    req: Request<B>,
    target: &str,
    timeout: Duration,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bad_target =
        |why: String| bad_gateway(format!("bad proxy target {target}{why}"), UNREACHABLE);
    let uri: http::Uri = target.parse().map_err(|e| bad_target(format!(": {e}")))?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| bad_target(String::new()))?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let upstream = upstream_request(req, &uri, &authority);
    let exchange = async {
        let stream = engine
            .connect(authority.host(), port, https, timeout)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("upstream {authority}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("proxy connection: {e}");
            }
        });
        (sender.send_request(upstream).await).map_err(|e| format!("upstream {authority}: {e}"))
    };
    let resp = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            tracing::warn!("proxy to {target}: no response within {timeout:?}");
            return Err(ApiError::UpstreamTimeout { after: timeout });
        }
        Ok(Err(e)) => return Err(bad_gateway(e, UNREACHABLE)),
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    let body = EndOnError {
        inner: body,
        target: target.to_string(),
        done: false,
    };
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// The request as sent upstream: hop-by-hop headers dropped, `Host` the upstream's (the
/// client's in `x-forwarded-host`), the target's path and query, HTTP/1.1.
fn upstream_request<B>(
    req: Request<B>,
    uri: &http::Uri,
    authority: &http::uri::Authority,
) -> Request<
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>,
>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.remove(header::HOST);
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(header::HOST, v);
    }
    if let Some(h) = original_host {
        parts.headers.insert("x-forwarded-host", h);
    }
    (parts.headers).insert("x-forwarded-proto", HeaderValue::from_static("http"));
    parts.uri = uri.path_and_query().map_or_else(
        || http::Uri::from_static("/"),
        |pq| {
            pq.as_str()
                .parse()
                .unwrap_or_else(|_| http::Uri::from_static("/"))
        },
    );
    parts.version = http::Version::HTTP_11;
    Request::from_parts(parts, body.map_err(Into::into).boxed_unsync())
}

/// What a client hears when the upstream failed.
const UNREACHABLE: &str = "the upstream did not answer";

/// Logs the detail; answers with a phrase that carries none.
fn bad_gateway(detail: String, why: &'static str) -> ApiError {
    tracing::warn!("proxy: {detail}");
    ApiError::BadGateway { why }
}

/// The upstream body. A read error mid-body ends the stream (logged). With a
/// `Content-Length`, hyper then aborts the connection instead of sending a short body.
struct EndOnError {
    inner: hyper::body::Incoming,
    target: String,
    done: bool,
}

impl http_body::Body for EndOnError {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!("proxy to {}: body cut off: {e}", self.target);
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
