//! The `send_request` hook: every outbound request from a guest is checked against the
//! function's allow-list — first the URL, then each resolved address — and refused with
//! `http-request-denied` (an error the guest sees, not a trap).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::egress;
use super::pinned::{self, TlsClient};
use crate::config::OutboundRule;
use crate::telemetry::Trace;

type ResponseFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

#[derive(Clone)]
pub(super) struct Hooks {
    rules: Arc<[OutboundRule]>,
    function: Arc<str>,
    id: Arc<str>,
    /// Outbound requests this instance may have in flight (`max_outbound`); a request holds a
    /// permit until its response body is done.
    slots: Arc<tokio::sync::Semaphore>,
    /// Trust for HTTPS.
    tls: Arc<TlsClient>,
    /// The run span: each outbound request is a client span under it.
    trace: Trace,
}

impl Hooks {
    pub(super) fn new(
        rules: Arc<[OutboundRule]>,
        function: Arc<str>,
        id: Arc<str>,
        max_outbound: usize,
        tls: Arc<TlsClient>,
        trace: Trace,
    ) -> Hooks {
        Hooks {
            rules,
            function,
            id,
            tls,
            trace,
            slots: Arc::new(tokio::sync::Semaphore::new(max_outbound)),
        }
    }

    /// The span of the run these hooks serve.
    pub(super) fn trace(&self) -> &Trace {
        &self.trace
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: ResponseFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, ResponseFuture), Error>> + Send>
    {
        drop(fut);
        let uri = request.uri();
        let span = self.trace.outbound(
            request.method().as_str(),
            uri.scheme_str().unwrap_or("https"),
            uri.host().unwrap_or_default(),
            uri.port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                }),
            uri.path(),
        );
        // The upstream continues the trace, unless the guest named a parent itself.
        if !request.headers().contains_key("traceparent") {
            for (name, value) in span.headers() {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::try_from(name),
                    http::HeaderValue::try_from(value),
                ) {
                    request.headers_mut().insert(name, value);
                }
            }
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(
                function = &*self.function,
                id = &*self.id,
                "outbound request refused: max_outbound requests already in flight"
            );
            span.fail(
                "connection-limit-reached",
                "max_outbound requests already in flight",
            );
            span.end();
            return Box::new(async {
                Err::<(http::Response<WasiBody>, ResponseFuture), _>(Error::ConnectionLimitReached)
            });
        };
        let checked = Checked {
            rules: self.rules.clone(),
            tls: self.tls.clone(),
            function: self.function.clone(),
            id: self.id.clone(),
        };
        Box::new(async move {
            match checked.send(request, options).await {
                Ok((response, io)) => {
                    span.status(response.status().as_u16());
                    // The slot is free again, and the span over, once the exchange is over.
                    let io = async move {
                        let _permit = permit;
                        let done = io.await;
                        span.end();
                        done
                    };
                    Ok((
                        response.map(BodyExt::boxed_unsync),
                        Box::new(io) as ResponseFuture,
                    ))
                }
                Err(e) => {
                    if span.is_on() {
                        span.fail(&error_type(&e), "outbound request failed");
                    }
                    span.end();
                    Err(e)
                }
            }
        })
    }
}

/// What an outbound request is checked against, and sent with.
struct Checked {
    rules: Arc<[OutboundRule]>,
    tls: Arc<TlsClient>,
    function: Arc<str>,
    id: Arc<str>,
}

impl Checked {
    /// Checks `request` against the allow-list (its URL, then each resolved address) and
    /// sends it to the address checked.
    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<pinned::Sent, Error> {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let (function, id) = (&self.function, &self.id);
        let deny = |why: &str| {
            // No query string: it may carry tokens.
            tracing::warn!(
                function = &**function,
                id = &**id,
                "outbound request to {scheme}://{host}:{port}{} denied: {why}",
                uri.path()
            );
            Error::HttpRequestDenied
        };
        let rule = egress::find_rule(&self.rules, &scheme, &host, port)
            .ok_or_else(|| deny("not in allowed_outbound_hosts"))?
            .clone();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| Error::DnsError {
                rcode: Some("lookup failed".into()),
                info_code: None,
            })?
            .collect();
        let Some(addr) = addrs
            .iter()
            .copied()
            .find(|a| egress::address_allowed(&rule, a.ip()))
        else {
            return Err(deny("resolves only to non-public addresses"));
        };
        // Connect to the address just checked, so a second lookup cannot swap it for a
        // private one; TLS checks the certificate against the name (and sends it as SNI).
        let tls = (scheme == "https").then_some((&*self.tls, bare));
        pinned::send(request, addr, tls, options).await
    }
}

/// A WASI HTTP error code as the WIT spells it (`http-request-denied`).
fn error_type(e: &Error) -> String {
    let name = format!("{e:?}");
    let name = name.split(['(', ' ', '{']).next().unwrap_or_default();
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
