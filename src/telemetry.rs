//! OpenTelemetry traces: each run a trace, its executed steps the run's children (with
//! workflow, run id, step, attempt and failure category), each vendor request a step's
//! child (vendor, method, URL without credentials, status, the wait a 429 imposed). They
//! go to an OTLP collector through `tracing-opentelemetry` when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, over
//! HTTP, as protobuf or, with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`, JSON.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// A configured exporter; [`Telemetry::shutdown`] sends what is still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// How spans are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `http/protobuf`, OTLP's default.
    Protobuf,
    /// `http/json`.
    Json,
}

impl Telemetry {
    /// The exporter the standard variables describe, or `None` when no endpoint is set.
    /// The error says which variable is wrong.
    pub fn from_env() -> Result<Option<Self>, String> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return Ok(None);
        }
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|_| "http/protobuf".to_owned());
        let encoding = match protocol.trim() {
            "http/protobuf" => Encoding::Protobuf,
            "http/json" => Encoding::Json,
            other => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: cairn exports over HTTP; use \
                     http/protobuf or http/json (a collector's port 4318)"
                ));
            }
        };
        // The exporter reads the endpoint (and headers, timeout) from the variables itself.
        Self::build(None, encoding).map(Some)
    }

    /// An exporter sending to `endpoint` (the whole URL, `.../v1/traces`), whatever the
    /// environment says: for tests, and for programs that configure it themselves.
    pub fn to(endpoint: &str, encoding: Encoding) -> Result<Self, String> {
        Self::build(Some(endpoint), encoding)
    }

    fn build(endpoint: Option<&str>, encoding: Encoding) -> Result<Self, String> {
        cairn_connectors::http::install_tls_provider();
        let protocol = match encoding {
            Encoding::Protobuf => Protocol::HttpBinary,
            Encoding::Json => Protocol::HttpJson,
        };
        let mut builder = SpanExporter::builder().with_http().with_protocol(protocol);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder.build().map_err(|err| {
            format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces there: {err}")
        })?;
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let resource = if set("OTEL_SERVICE_NAME") {
            Resource::builder().build()
        } else {
            Resource::builder().with_service_name("cairn").build()
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self { provider })
    }

    /// The layer that turns spans into exported ones: cairn's and your workflows' at
    /// info, never the HTTP and database libraries' (nor the exporter's own requests).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let targets = Targets::new()
            .with_default(Level::INFO)
            .with_target("sqlx", tracing::level_filters::LevelFilter::OFF)
            .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
            .with_target("hyper_util", tracing::level_filters::LevelFilter::OFF)
            .with_target("h2", tracing::level_filters::LevelFilter::OFF)
            .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
            .with_target("tower", tracing::level_filters::LevelFilter::OFF)
            .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
            .with_target(
                "opentelemetry_sdk",
                tracing::level_filters::LevelFilter::OFF,
            )
            .with_target(
                "opentelemetry_otlp",
                tracing::level_filters::LevelFilter::OFF,
            );
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("cairn"))
            .with_filter(targets)
    }

    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("warning: not every trace span could be sent: {err}");
        }
    }
}
