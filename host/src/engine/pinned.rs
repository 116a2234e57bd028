//! Sending a guest's outbound request to the one address the allow-list checked: plain HTTP,
//! or TLS with SNI and certificate checks for the *name* the guest asked for — so a name that
//! re-resolves elsewhere between the check and the connection (DNS rebinding) cannot move the
//! request. Adapted from wasmtime-wasi-http's `default_send_request` (48.0.8), which resolves
//! the name again itself.
//!
//! Trust: the Mozilla roots (webpki-roots) plus, optionally, the PEM file `[server]
//! outbound_ca` names (an internal CA; the tests' CA).

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions};

/// The TLS client settings every outbound HTTPS request shares.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    /// The Mozilla roots, plus the certificates of the PEM file `extra_ca` when given.
    pub fn new(extra_ca: Option<&Path>) -> anyhow::Result<TlsClient> {
        let roots = crate::tls::roots(extra_ca, "outbound_ca")?;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }
}

/// A connected byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl TlsClient {
    /// A plain TCP connection to `addr`.
    async fn plain(addr: SocketAddr, timeout: Duration) -> Result<Box<dyn Stream>, Error> {
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream.map_err(Error::Connect)?,
            Err(_) => return Err(Error::ConnectionTimeout),
        };
        let _ = tcp.set_nodelay(true);
        Ok(Box::new(tcp))
    }

    /// A TCP connection to `addr`, wrapped in TLS for `host` (SNI and certificate name) when
    /// given.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        host: Option<&str>,
        timeout: Duration,
    ) -> Result<Box<dyn Stream>, Error> {
        let Some(host) = host else {
            return TlsClient::plain(addr, timeout).await;
        };
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream.map_err(Error::Connect)?,
            Err(_) => return Err(Error::ConnectionTimeout),
        };
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| Error::HttpRequestUriInvalid)?
            .to_owned();
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(stream) => Ok(Box::new(stream.map_err(Error::Tls)?)),
            Err(_) => Err(Error::ConnectionTimeout),
        }
    }
}

/// What [`send`] returns: the response, and the connection's remaining I/O to drive.
pub(super) type Sent = (
    Response<ResponseBody>,
    Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
);

/// Sends `req` over a connection to `addr`; with `tls`, a TLS connection checked against
/// `host` (the name from the URL, which is also the SNI).
pub async fn send(
    mut req: Request<impl Body<Data = Bytes, Error = Error> + Send + 'static>,
    addr: SocketAddr,
    tls: Option<(&TlsClient, &str)>,
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options
            .as_ref()
            .and_then(pick)
            .unwrap_or(Duration::from_secs(600))
    };
    let connect_timeout = timeout(|o| o.connect_timeout);
    let first_byte_timeout = timeout(|o| o.first_byte_timeout);
    let between_bytes_timeout = timeout(|o| o.between_bytes_timeout).max(Duration::new(0, 1));

    let stream = match tls {
        Some((client, host)) => client.connect(addr, Some(host), connect_timeout).await?,
        None => TlsClient::plain(addr, connect_timeout).await?,
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::from)?;

    // The request line carries only the path: scheme and authority are for proxies.
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(req.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let send = async move {
        let res = tokio::time::timeout(first_byte_timeout, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok::<_, Error>(res.map(|incoming| ResponseBody { incoming, timeout }))
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // Wait for the response while driving the connection's I/O.
    let res = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(res) => Poll::Ready(res),
        Poll::Pending => {
            let Some(fut) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(fut).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(err) => Poll::Ready(Err(Error::from(err))),
            }
        }
    })
    .await?;
    let io = async move {
        let Some(conn) = conn.take() else {
            return Ok(());
        };
        match conn.await {
            Err(err) if err.is_timeout() => Err(Error::HttpResponseTimeout),
            Err(err) => Err(err.into()),
            Ok(()) => Ok(()),
        }
    };
    Ok((res, Box::pin(io)))
}

/// The upstream's body, failing when no byte arrives for `between_bytes_timeout`.
pub struct ResponseBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(if err.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(err)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
