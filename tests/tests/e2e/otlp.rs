//! A real OTLP trace receiver for the trace tests: it decodes what fnhost exports with the
//! OpenTelemetry protocol's published definitions (`opentelemetry-proto`) — protobuf bodies
//! POSTed to `/v1/traces` over HTTP/1.1, or the `TraceService/Export` call over gRPC (tonic,
//! on hyper's HTTP/2) — and keeps every span it received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

use futures::future::BoxFuture;

use crate::support::wait_until;

/// One span as received.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent: String,
    pub name: String,
    /// `SpanKind` as the protocol numbers it (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    pub attrs: BTreeMap<String, String>,
    /// 2 = error.
    pub status: i32,
    pub status_message: String,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
    pub service: String,
    /// The `service.instance.id` of the node that sent it.
    pub instance: String,
    /// Start and end, ns since the epoch.
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Span {
    /// An attribute, rendered as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// A receiver listening on loopback.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    /// With TLS: the PEM of the CA that signed its certificate (for `localhost`).
    pub ca_pem: Option<String>,
}

/// A connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

type Serve = Arc<dyn Fn(Box<dyn Io>) -> BoxFuture<'static, ()> + Send + Sync>;

impl Receiver {
    /// OTLP over HTTP/protobuf: `endpoint()` is its base URL.
    pub async fn http() -> Receiver {
        Receiver::http_on(None).await
    }

    /// The same over TLS (`https://localhost:PORT`), with a certificate of a CA made for it.
    pub async fn https() -> Receiver {
        Receiver::http_on(Some(b"http/1.1")).await
    }

    /// OTLP over gRPC.
    pub async fn grpc() -> Receiver {
        Receiver::grpc_on(None).await
    }

    /// The same over TLS (`https://localhost:PORT`), with a certificate of a CA made for it.
    pub async fn grpc_tls() -> Receiver {
        Receiver::grpc_on(Some(b"h2")).await
    }

    async fn http_on(tls: Option<&'static [u8]>) -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let serve: Serve = Arc::new(move |io| {
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |req| export_http(kept.clone(), req));
            Box::pin(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                    .await;
            })
        });
        Receiver::listen(spans, tls, serve).await
    }

    async fn grpc_on(tls: Option<&'static [u8]>) -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let service = TraceServiceServer::new(Grpc(spans.clone()));
        let serve: Serve = Arc::new(move |io| {
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            Box::pin(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                        .await;
            })
        });
        Receiver::listen(spans, tls, serve).await
    }

    /// Accepts connections on loopback, each served by `serve` (after a TLS handshake offering
    /// the protocol `alpn`, when given).
    async fn listen(
        spans: Arc<Mutex<Vec<Span>>>,
        alpn: Option<&'static [u8]>,
        serve: Serve,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = alpn.map(crate::support::tls_for_localhost);
        let acceptor = tls.as_ref().map(|(acceptor, _)| acceptor.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (serve, acceptor) = (serve.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(Box::new(tcp)).await,
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(Box::new(tls)).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            spans,
            ca_pem: tls.map(|(_, pem)| pem),
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS.
    pub fn endpoint(&self) -> String {
        match self.ca_pem {
            None => format!("http://{}", self.addr),
            Some(_) => format!("https://localhost:{}", self.addr.port()),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans received satisfy `check` (it says what is missing otherwise).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&[Span]) -> Result<T, String>,
    ) -> T {
        wait_until(what, within, async || check(&self.spans())).await
    }
}

/// The spans of `trace` as an indented tree with offsets and durations from the root's start
/// (what the README shows of one background trace).
pub fn render_tree(spans: &[Span], trace: &str) -> String {
    let of_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let t0 = of_trace.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let mut out = format!("trace {trace}\n");
    let ids: Vec<&str> = of_trace.iter().map(|s| s.span_id.as_str()).collect();
    let roots = of_trace
        .iter()
        .filter(|s| !ids.contains(&s.parent.as_str()));
    for root in roots {
        branch(&of_trace, root, 0, t0, &mut out);
    }
    out
}

fn branch(spans: &[&Span], span: &Span, depth: usize, t0: u64, out: &mut String) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let keys = [
        "faas.invocation_id",
        "http.response.status_code",
        "fnhost.attempt",
        "fnhost.outcome",
        "fnhost.retry_delay_ms",
        "error.type",
    ];
    let attrs: Vec<String> = keys
        .iter()
        .filter_map(|k| span.attr(k).map(|v| format!("{k}={v}")))
        .collect();
    out.push_str(&format!(
        "{:>9.1} ms {:>8.1} ms  {}{}  {}\n",
        ms(span.start_ns - t0),
        ms(span.end_ns - span.start_ns),
        "  ".repeat(depth),
        span.name,
        attrs.join(" ")
    ));
    let mut children: Vec<&&Span> = spans.iter().filter(|s| s.parent == span.span_id).collect();
    children.sort_by_key(|s| s.start_ns);
    for child in children {
        branch(spans, child, depth + 1, t0, out);
    }
}

/// One HTTP/protobuf export: decoded and kept.
async fn export_http(
    kept: Arc<Mutex<Vec<Span>>>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    assert_eq!(req.uri().path(), "/v1/traces");
    assert_eq!(req.headers()["content-type"], "application/x-protobuf");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    kept.lock().unwrap().extend(decode(request));
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(http::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .unwrap())
}

struct Grpc(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().extend(decode(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = |key: &str| {
            (rs.resource.iter().flat_map(|r| &r.attributes))
                .find(|kv| kv.key == key)
                .map(|kv| render(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default()
        };
        let (service, instance) = (resource("service.name"), resource("service.instance.id"));
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            let status = span.status.unwrap_or_default();
            out.push(Span {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attrs: (span.attributes.iter())
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            render(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                        )
                    })
                    .collect(),
                status: status.code,
                status_message: status.message,
                links: (span.links.iter())
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
                service: service.clone(),
                instance: instance.clone(),
                start_ns: span.start_time_unix_nano,
                end_ns: span.end_time_unix_nano,
            });
        }
    }
    out
}

fn render(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
