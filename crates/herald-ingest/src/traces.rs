//! The span of each gRPC call when traces are exported: it continues the
//! caller's trace when the call carries W3C `traceparent` metadata, and
//! starts one otherwise. Fire's publishes are its children, and through
//! the messages' headers so is every attempt (herald-queue's `trace`).

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads the text-map keys from a call's HTTP/2 headers (its metadata).
struct MetadataExtractor<'a>(&'a http::HeaderMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The server span of one call (tonic's `trace_fn`). Health checks and
/// reflection get none: a probe every few seconds would bury the calls
/// that matter.
pub(crate) fn call_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return tracing::Span::none();
    };
    if service.starts_with("grpc.") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    let parent = TraceContextPropagator::new().extract(&MetadataExtractor(request.headers()));
    // A call without (valid) trace context starts a trace of its own.
    let _ = span.set_parent(parent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span_for(path: &str) -> bool {
        let request = http::Request::builder().uri(path).body(()).unwrap();
        // A subscriber that takes every span, so that "no span" is ours.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            !call_span(&request).is_none()
        })
    }

    #[test]
    fn calls_get_a_span_but_health_checks_and_odd_paths_do_not() {
        assert!(span_for("/herald.v1.Ingest/Fire"));
        assert!(span_for("/herald.v1.Admin/ListWebhooks"));
        for path in ["/grpc.health.v1.Health/Check", "/nothing", "/"] {
            assert!(!span_for(path), "{path}");
        }
    }

    #[test]
    fn traceparent_metadata_is_read() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let extractor = MetadataExtractor(&headers);
        assert_eq!(
            extractor.get("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(extractor.keys(), vec!["traceparent"]);
    }
}
