//! Logs and traces: the `tracing` subscriber both services install, and,
//! when the standard OpenTelemetry variables ask for it, the export of
//! spans over OTLP/gRPC.
//!
//! Traces are off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Off, the subscriber is the
//! plain log formatter it always was, and no trace context is read or
//! written anywhere (`herald_queue::Tracing::off`). The rest of the
//! standard variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SDK_DISABLED`) are read by the
//! OpenTelemetry SDK and exporter themselves.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::LogFormat;

/// What the OpenTelemetry environment asks of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceExport {
    /// No spans are exported and no trace context travels.
    Off,
    /// Spans go to an OTLP/gRPC collector (the exporter reads the endpoint
    /// and its other settings from the environment).
    Otlp,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{variable}={value:?} is not supported: Herald exports traces over OTLP/gRPC only \
         (a collector's port 4317); unset {variable} or set it to \"grpc\""
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error(
        "OTEL_TRACES_EXPORTER={0:?} is not supported: Herald exports traces with \"otlp\" \
         (the default) or not at all (\"none\")"
    )]
    Exporter(String),
    #[error("the OTLP trace exporter could not be built: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Reads the standard variables through `var` (the process environment,
/// or a table in tests) and says whether traces are exported.
pub fn trace_export(var: impl Fn(&str) -> Option<String>) -> Result<TraceExport, TelemetryError> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(TraceExport::Off);
    }
    match set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
        None => {}
        Some(exporter) if exporter == "otlp" => {}
        Some(exporter) if exporter == "none" => return Ok(TraceExport::Off),
        Some(exporter) => return Err(TelemetryError::Exporter(exporter)),
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(TraceExport::Off);
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = set(variable) {
            if value.trim() != "grpc" {
                return Err(TelemetryError::Protocol { variable, value });
            }
            // The traces-only variable wins over the general one.
            break;
        }
    }
    Ok(TraceExport::Otlp)
}

/// The installed tracing set-up; keep it until the service stopped, then
/// [`Telemetry::shutdown`] sends the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    tracing: herald_queue::Tracing,
}

impl Telemetry {
    /// What the service's queue configuration carries: on when spans are
    /// exported.
    pub fn tracing(&self) -> herald_queue::Tracing {
        self.tracing.clone()
    }

    /// Exports what is still buffered (bounded by `timeout`) and stops the
    /// exporter. Blocking work, so it runs off the async workers.
    pub async fn shutdown(self, timeout: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the last spans could not be exported"),
            Err(e) => tracing::warn!(error = %e, "the trace exporter did not shut down"),
        }
    }
}

/// Installs the process's `tracing` subscriber: logs as `format` (filtered
/// by `RUST_LOG`, default `info`), and with OTLP export on, an OpenTelemetry
/// layer that turns the services' info-level spans into spans of
/// `service_name` (unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// name the service). Must run inside the Tokio runtime: the exporter's
/// gRPC channel lives there.
pub fn init(format: LogFormat, service_name: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if trace_export(|name| std::env::var(name).ok())? == TraceExport::Off {
        // Exactly the subscriber of a Herald without tracing: nothing on the
        // hot path changes when traces are off.
        let builder = tracing_subscriber::fmt().with_env_filter(filter());
        match format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
        return Ok(Telemetry {
            provider: None,
            tracing: herald_queue::Tracing::off(),
        });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service_name))
        .build();
    let tracer = provider.tracer(service_name);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter())
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_filter(filter())
            .boxed(),
    };
    // RUST_LOG filters the logs only: the spans a trace needs are
    // info-level, and a quieter log must not cut them out of the trace.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(logs).with(spans).init();
    tracing::info!(service = service_name, "exporting traces over OTLP/gRPC");
    Ok(Telemetry {
        provider: Some(provider),
        tracing: herald_queue::Tracing::on(tracer),
    })
}

/// The SDK's resource (which reads `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`), named `service_name` where those did not
/// name the service.
fn resource(service_name: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let unnamed = match detected.get(&Key::from_static_str("service.name")) {
        Some(Value::String(name)) => name.as_str().starts_with("unknown_service"),
        _ => true,
    };
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if unnamed {
        builder.with_service_name(service_name).build()
    } else {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(vars: &[(&str, &str)]) -> Result<TraceExport, TelemetryError> {
        trace_export(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_set() {
        use TraceExport::{Off, Otlp};
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let cases: &[(&[(&str, &str)], TraceExport)] = &[
            (&[], Off),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")], Off),
            (&[("OTEL_SERVICE_NAME", "x")], Off),
            (&[endpoint], Otlp),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")],
                Otlp,
            ),
            (&[endpoint, ("OTEL_SDK_DISABLED", "true")], Off),
            (&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")], Off),
            (&[endpoint, ("OTEL_SDK_DISABLED", "false")], Otlp),
            (&[endpoint, ("OTEL_TRACES_EXPORTER", "none")], Off),
            (&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")], Otlp),
            (&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], Otlp),
            (
                &[
                    endpoint,
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ],
                Otlp,
            ),
        ];
        for (vars, expected) in cases {
            assert_eq!(&decide(vars).unwrap(), expected, "{vars:?}");
        }
    }

    #[test]
    fn an_unsupported_protocol_or_exporter_is_refused_with_what_to_do() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let error = decide(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"http/protobuf\""),
            "{error}"
        );
        assert!(error.contains("OTLP/gRPC only"), "{error}");
        let error = decide(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"zipkin\" is not supported"), "{error}");
    }
}
