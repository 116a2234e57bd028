//! `[telemetry]` and `[server] log_format`: where traces go and how log lines look. The
//! OpenTelemetry environment variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`,
//! ...) win over these keys, as the OpenTelemetry specification says; this module only parses.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Humantime;

/// `[telemetry]`: every key optional; without an endpoint (here or in the environment)
/// nothing is traced.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector: `http://HOST:4318` for HTTP/protobuf (`/v1/traces` is added), or
    /// `http://HOST:4317` for gRPC; `https://` for TLS.
    pub endpoint: Option<String>,
    /// A PEM file of CA certificates the collector's TLS certificate may chain to, besides the
    /// Mozilla roots (relative to fnhost.toml; `OTEL_EXPORTER_OTLP_CERTIFICATE` wins).
    pub certificate: Option<std::path::PathBuf>,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: Option<Protocol>,
    /// `service.name` of every span [default: `fnhost`].
    pub service_name: Option<String>,
    /// Which traces are kept [default: `parentbased_always_on`].
    pub sampler: Option<SamplerName>,
    /// The ratio of the `traceidratio` samplers, 0.0 to 1.0.
    pub sampler_arg: Option<f64>,
    /// More resource attributes (`deployment.environment = "prod"`).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Spans waiting for export; past it new spans are dropped (and counted).
    pub max_queue: Option<usize>,
    /// How long one export may take before it counts as failed.
    pub export_timeout: Option<Humantime>,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// OTLP over HTTP, protobuf bodies (port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP over gRPC (port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

impl Protocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` meaning it.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.trim() {
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

/// The samplers of `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// A ratio of traces (`sampler_arg`), by trace id.
    Traceidratio,
    /// As the caller decided; every root.
    ParentbasedAlwaysOn,
    /// As the caller decided; no root.
    ParentbasedAlwaysOff,
    /// As the caller decided; a ratio of roots.
    ParentbasedTraceidratio,
}

/// `[server] log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl TelemetryConfig {
    /// What is wrong with these keys, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if let Some(arg) = self.sampler_arg
            && !(0.0..=1.0).contains(&arg)
        {
            return Err(format!(
                "telemetry.sampler_arg = {arg}: a ratio between 0.0 and 1.0"
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "telemetry.endpoint = {endpoint:?}: a URL such as http://127.0.0.1:4318"
            ));
        }
        if self.max_queue == Some(0) {
            return Err("telemetry.max_queue = 0: at least 1".into());
        }
        Ok(())
    }
}
