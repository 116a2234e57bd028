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

type ResponseFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

pub(super) struct Hooks {
    rules: Arc<[OutboundRule]>,
    function: Arc<str>,
    id: Arc<str>,
    /// Outbound requests this instance may have in flight (`max_outbound`); a request holds a
    /// permit until its response body is done.
    slots: Arc<tokio::sync::Semaphore>,
    /// Trust for HTTPS.
    tls: Arc<TlsClient>,
}

impl Hooks {
    pub(super) fn new(
        rules: Arc<[OutboundRule]>,
        function: Arc<str>,
        id: Arc<str>,
        max_outbound: usize,
        tls: Arc<TlsClient>,
    ) -> Hooks {
        Hooks {
            rules,
            function,
            id,
            tls,
            slots: Arc::new(tokio::sync::Semaphore::new(max_outbound)),
        }
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: ResponseFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, ResponseFuture), Error>> + Send>
    {
        drop(fut);
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(
                function = &*self.function,
                id = &*self.id,
                "outbound request refused: max_outbound requests already in flight"
            );
            return Box::new(async {
                Err::<(http::Response<WasiBody>, ResponseFuture), _>(Error::ConnectionLimitReached)
            });
        };
        let rules = self.rules.clone();
        let tls = self.tls.clone();
        let (function, id) = (self.function.clone(), self.id.clone());
        Box::new(async move {
            let uri = request.uri().clone();
            let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
            let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let deny = |why: &str| {
                // No query string: it may carry tokens.
                tracing::warn!(
                    function = &*function,
                    id = &*id,
                    "outbound request to {scheme}://{host}:{port}{} denied: {why}",
                    uri.path()
                );
                Error::HttpRequestDenied
            };
            let rule = egress::find_rule(&rules, &scheme, &host, port)
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
            let tls = (scheme == "https").then_some((&*tls, bare));
            let (response, io) = pinned::send(request, addr, tls, options).await?;
            // The slot is free again once the exchange is over.
            let io = async move {
                let _permit = permit;
                io.await
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as ResponseFuture,
            ))
        })
    }
}
