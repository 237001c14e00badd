//! The spans of a delivery when traces are exported: each consumed message
//! gets an attempt span (`herald.attempt`) whose parent is the span that
//! published the message (Fire's publish, or the previous attempt's
//! retry), with the time the message waited in between as a span of its
//! own (`herald.queued`, named after the delay queue it waited in).
//!
//! With tracing off the delivery span is the plain log span it always was,
//! and nothing here reads the message's headers.

use std::time::SystemTime;

use herald_core::retry::Next;
use herald_proto::v1::DeliveryMessage;
use herald_queue::Tracing;
use lapin::BasicProperties;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::AttemptOutcome;

/// The span a delivery is processed in. `work_queue` names the queue it
/// was consumed from, for a message that reached it without a delay queue.
pub(crate) fn delivery_span(
    tracing: &Tracing,
    properties: &BasicProperties,
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: &DeliveryMessage,
    work_queue: impl FnOnce() -> String,
) -> tracing::Span {
    let Some(tracer) = tracing.tracer() else {
        return tracing::info_span!("delivery", %delivery_id, attempt = message.attempt);
    };
    let span = tracing::info_span!(
        "delivery",
        otel.name = "herald.attempt",
        otel.kind = "consumer",
        otel.status_code = Empty,
        %delivery_id,
        %webhook_id,
        attempt = message.attempt,
        herald.tenant = %message.tenant,
        herald.event = %message.event,
        http.response.status_code = Empty,
        error.type = Empty,
        herald.outcome = Empty,
    );
    let received = herald_queue::trace::received(properties);
    let mut parent = received.parent;
    if let Some(queued_at) = received.queued_at {
        let now = SystemTime::now();
        let waited = now.duration_since(queued_at).unwrap_or_default();
        let queue = received.delay_queue.unwrap_or_else(work_queue);
        let wait = tracer
            .span_builder("herald.queued")
            .with_kind(SpanKind::Internal)
            .with_start_time(queued_at)
            .with_attributes([
                KeyValue::new("messaging.destination.name", queue),
                KeyValue::new(
                    "herald.wait_ms",
                    i64::try_from(waited.as_millis()).unwrap_or(i64::MAX),
                ),
                KeyValue::new("delivery_id", delivery_id.to_string()),
                KeyValue::new("attempt", i64::from(message.attempt)),
            ])
            .start_with_context(tracer, &parent);
        parent = parent.with_span(wait);
        parent.span().end_with_timestamp(now);
    }
    // An empty parent (a message published without tracing) makes the
    // attempt the root of a trace of its own.
    let _ = span.set_parent(parent);
    span
}

/// Puts an attempt's result on the current (attempt) span.
pub(crate) fn record_attempt(outcome: &AttemptOutcome, next: &Next) {
    let span = tracing::Span::current();
    if let Some(status) = outcome.status_code {
        span.record("http.response.status_code", status);
    }
    if let Some(error) = &outcome.error {
        span.record("error.type", error.kind.as_str());
        span.record("otel.status_code", "ERROR");
    }
    span.record(
        "herald.outcome",
        match next {
            Next::Succeed => "succeeded",
            Next::Retry { .. } => "retry",
            Next::Fail => "failed",
            Next::Park { .. } => "parked",
        },
    );
}

/// Puts why no attempt was made (`cancelled`, `parked`) on the current span.
pub(crate) fn record_outcome(outcome: &'static str) {
    tracing::Span::current().record("herald.outcome", outcome);
}

/// The W3C `traceparent` of the current span, for a webhook that asked to
/// receive it; `None` when the span is not traced.
pub(crate) fn current_traceparent() -> Option<String> {
    traceparent(&tracing::Span::current().context())
}

fn traceparent(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn traceparent_is_the_w3c_form() {
        let context = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        assert_eq!(
            traceparent(&context).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(traceparent(&Context::new()), None);
    }
}
