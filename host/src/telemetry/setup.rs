//! Turning traces on: the settings from the environment (`OTEL_*`, which win) and
//! `[telemetry]`, the OTLP exporter they name, and the tracer every span comes from.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use super::export;
use crate::config::telemetry::{Protocol, SamplerName, TelemetryConfig};

/// Spans waiting for export by default (`telemetry.max_queue`).
pub const MAX_QUEUE: usize = 2048;
/// How long one export may take by default (`OTEL_EXPORTER_OTLP_TIMEOUT` or
/// `telemetry.export_timeout`).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What traces are configured, resolved once at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// `None`: the exporter reads `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` itself.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    pub service_name: String,
    pub max_queue: usize,
    pub timeout: Duration,
    /// The collector is reached over TLS (its endpoint, wherever set, is `https://`).
    pub https: bool,
    /// More CA certificates to trust (PEM), besides the Mozilla roots.
    pub certificate: Option<std::path::PathBuf>,
}

/// The settings `config` and `env` give; `None` when traces are off (no endpoint anywhere,
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
pub fn resolve(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Resolved>> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
    {
        return Ok(None);
    }
    let from_env = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        Some(p) => Protocol::parse(&p).with_context(|| {
            format!("OTEL_EXPORTER_OTLP_PROTOCOL = {p:?}: fnhost exports http/protobuf or grpc")
        })?,
        None => config.protocol.unwrap_or(Protocol::HttpProtobuf),
    };
    let endpoint = match (&config.endpoint, from_env) {
        (_, true) => None,
        (Some(base), false) => Some(match protocol {
            Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            Protocol::Grpc => base.clone(),
        }),
        (None, false) => return Ok(None),
    };
    let target = (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .or_else(|| endpoint.clone())
        .unwrap_or_default();
    let certificate = (set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"))
        .or_else(|| set("OTEL_EXPORTER_OTLP_CERTIFICATE"))
        .map(std::path::PathBuf::from)
        .or_else(|| config.certificate.clone());
    let timeout = match set("OTEL_EXPORTER_OTLP_TIMEOUT") {
        Some(ms) => Duration::from_millis(
            ms.trim()
                .parse()
                .with_context(|| format!("OTEL_EXPORTER_OTLP_TIMEOUT = {ms:?}: milliseconds"))?,
        ),
        None => config.export_timeout.map_or(EXPORT_TIMEOUT, |t| t.0),
    };
    Ok(Some(Resolved {
        endpoint,
        protocol,
        service_name: set("OTEL_SERVICE_NAME")
            .or_else(|| config.service_name.clone())
            .unwrap_or_else(|| "fnhost".into()),
        max_queue: config.max_queue.unwrap_or(MAX_QUEUE),
        timeout,
        https: target
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("https://"),
        certificate,
    }))
}

/// The tracer, and what stops its export.
pub(super) struct Started {
    pub(super) tracer: SdkTracer,
    pub(super) provider: SdkTracerProvider,
    pub(super) stop: export::Stop,
}

/// Builds the exporter and tracer `resolved` names; export runs on `runtime`.
pub(super) fn start(
    resolved: &Resolved,
    config: &TelemetryConfig,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Started> {
    let resource = resource(resolved, config);
    let mut exporter = {
        let _in_runtime = runtime.enter();
        exporter(resolved)?
    };
    // The exporter sends the resource with every batch.
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let (processor, stop) = export::start(exporter, resolved.max_queue, resolved.timeout, runtime);
    let mut builder = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource);
    // The SDK reads OTEL_TRACES_SAMPLER itself; the key applies when it is unset.
    if std::env::var_os("OTEL_TRACES_SAMPLER").is_none()
        && let Some(name) = config.sampler
    {
        builder = builder.with_sampler(sampler(name, config.sampler_arg.unwrap_or(1.0)));
    }
    let provider = builder.build();
    let tracer = provider.tracer("fnhost");
    Ok(Started {
        tracer,
        provider,
        stop,
    })
}

fn exporter(resolved: &Resolved) -> anyhow::Result<SpanExporter> {
    let built = match resolved.protocol {
        Protocol::HttpProtobuf => {
            // hyper with rustls (plain `http://` too): the exporter's default client has no TLS.
            let client = opentelemetry_http::hyper::HyperClient::new(
                https_connector(resolved.certificate.as_deref())?,
                resolved.timeout,
                None,
            );
            let mut b = SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(resolved.timeout);
            if let Some(endpoint) = &resolved.endpoint {
                b = b.with_endpoint(endpoint);
            }
            b.build()
        }
        Protocol::Grpc => {
            let mut b = SpanExporter::builder()
                .with_tonic()
                .with_timeout(resolved.timeout);
            if let Some(endpoint) = &resolved.endpoint {
                b = b.with_endpoint(endpoint);
            }
            if resolved.https {
                b = b.with_tls_config(grpc_tls(resolved.certificate.as_deref())?);
            }
            b.build()
        }
    };
    built.context("cannot set up the OTLP trace exporter")
}

/// What an error about the collector's CA file names.
const CA_SETTING: &str = "telemetry.certificate (or OTEL_EXPORTER_OTLP_CERTIFICATE)";

/// The HTTP/protobuf exporter's connector: `https://` over rustls, `http://` plain.
fn https_connector(
    extra: Option<&std::path::Path>,
) -> anyhow::Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>
{
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(crate::tls::roots(extra, CA_SETTING)?)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build())
}

/// The gRPC exporter's TLS: Mozilla's roots, plus the PEM file at `extra`.
fn grpc_tls(
    extra: Option<&std::path::Path>,
) -> anyhow::Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    if let Some(path) = extra {
        crate::tls::roots(Some(path), CA_SETTING)?;
        let pem = std::fs::read(path)?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(tls)
}

/// `service.name` and the configured attributes, then `OTEL_RESOURCE_ATTRIBUTES` over them.
fn resource(resolved: &Resolved, config: &TelemetryConfig) -> Resource {
    let attrs =
        (config.resource_attributes.iter()).map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    let detectors: [Box<dyn ResourceDetector>; 2] = [
        Box::new(TelemetryResourceDetector),
        Box::new(EnvResourceDetector::new()),
    ];
    Resource::builder_empty()
        .with_attributes(attrs)
        .with_detectors(&detectors)
        .with_service_name(resolved.service_name.clone())
        .build()
}

fn sampler(name: SamplerName, ratio: f64) -> Sampler {
    match name {
        SamplerName::AlwaysOn => Sampler::AlwaysOn,
        SamplerName::AlwaysOff => Sampler::AlwaysOff,
        SamplerName::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        SamplerName::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerName::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerName::ParentbasedTraceidratio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            (vars.iter())
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_configured_and_the_environment_wins() {
        let none = TelemetryConfig::default();
        assert_eq!(resolve(&none, env(&[])).unwrap(), None);
        let config = TelemetryConfig {
            endpoint: Some("http://collector:4318/".into()),
            service_name: Some("site-a".into()),
            ..TelemetryConfig::default()
        };
        let r = resolve(&config, env(&[])).unwrap().unwrap();
        assert_eq!(
            r.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            (r.protocol, &*r.service_name),
            (Protocol::HttpProtobuf, "site-a")
        );
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ];
        let r = resolve(&config, env(&vars)).unwrap().unwrap();
        assert_eq!(
            r.endpoint, None,
            "the exporter reads the environment's endpoint itself"
        );
        assert_eq!((r.protocol, &*r.service_name), (Protocol::Grpc, "from-env"));
        let off = [("OTEL_SDK_DISABLED", "true")];
        assert_eq!(resolve(&config, env(&off)).unwrap(), None);
        let none = [("OTEL_TRACES_EXPORTER", "none")];
        assert_eq!(resolve(&config, env(&none)).unwrap(), None);
        let bad = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")];
        let e = resolve(&config, env(&bad)).unwrap_err().to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("http/json"),
            "{e}"
        );
    }
}
