//! A delivery's trace context through the broker (OpenTelemetry, W3C Trace
//! Context).
//!
//! A message carries its trace in AMQP headers: `traceparent` and
//! `tracestate` as W3C Trace Context defines them for HTTP (the names
//! OpenTelemetry's messaging instrumentations use for RabbitMQ too), and
//! [`QUEUED_AT_HEADER`], the time it was published, so that the sender can
//! show how long it waited. RabbitMQ keeps a message's headers when it
//! dead-letters it from a delay queue back to the work queue, and adds an
//! `x-death` entry naming that delay queue, so the context and the wait both
//! survive the schedule.
//!
//! With tracing off ([`Tracing::off`], the default) none of this runs: no
//! header is written or read, and no span is made.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header with the time a message was published, in Unix milliseconds.
pub const QUEUED_AT_HEADER: &str = "x-herald-queued-at";

/// Whether this process traces, and the tracer that makes the spans the
/// `tracing` crate cannot (those with a start time in the past).
#[derive(Clone, Default)]
pub struct Tracing {
    tracer: Option<SdkTracer>,
}

impl Tracing {
    /// No trace context is written or read.
    pub fn off() -> Self {
        Self::default()
    }

    /// Trace context travels with every message; `tracer` is the exporting
    /// one (herald-service's `telemetry` installs it).
    pub fn on(tracer: SdkTracer) -> Self {
        Self {
            tracer: Some(tracer),
        }
    }

    pub fn is_on(&self) -> bool {
        self.tracer.is_some()
    }

    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.as_ref()
    }
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_on() {
            "Tracing(on)"
        } else {
            "Tracing(off)"
        })
    }
}

/// Writes OpenTelemetry's text-map keys as AMQP long strings.
struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

/// Reads OpenTelemetry's text-map keys from AMQP headers.
struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(&ShortString::from(key))? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// `properties` with the current span's trace context and the time now.
pub fn with_current_context(properties: BasicProperties) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    let queued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    headers.insert(
        ShortString::from(QUEUED_AT_HEADER),
        AMQPValue::LongLongInt(queued_at),
    );
    properties.with_headers(headers)
}

/// What a consumed message says of its trace.
#[derive(Debug, Clone)]
pub struct Received {
    /// The context of the span that published it (empty if none came).
    pub parent: Context,
    /// When it was published, if it says.
    pub queued_at: Option<SystemTime>,
    /// The delay queue it last waited in (from RabbitMQ's `x-death`), if it
    /// came through one.
    pub delay_queue: Option<String>,
}

/// Reads the trace context a consumed message carries.
pub fn received(properties: &BasicProperties) -> Received {
    let Some(headers) = properties.headers().as_ref() else {
        return Received {
            parent: Context::new(),
            queued_at: None,
            delay_queue: None,
        };
    };
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let queued_at = match headers.inner().get(&ShortString::from(QUEUED_AT_HEADER)) {
        Some(AMQPValue::LongLongInt(ms)) => u64::try_from(*ms)
            .ok()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        _ => None,
    };
    Received {
        parent,
        queued_at,
        delay_queue: last_death_queue(headers),
    }
}

/// The queue of the newest `x-death` entry: RabbitMQ puts the most recent
/// dead-lettering first.
fn last_death_queue(headers: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get(&ShortString::from("x-death"))? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    match newest.inner().get(&ShortString::from("queue"))? {
        AMQPValue::LongString(queue) => Some(queue.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    fn remote(trace: u128, span: u64) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[test]
    fn a_context_written_to_headers_reads_back() {
        let mut headers = FieldTable::default();
        let sent = remote(
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            0x00f0_67aa_0ba9_02b7,
        );
        TraceContextPropagator::new().inject_context(&sent, &mut HeaderInjector(&mut headers));
        let extractor = HeaderExtractor(&headers);
        assert_eq!(
            extractor.get("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let got = received(&BasicProperties::default().with_headers(headers));
        let span = got.parent.span();
        assert_eq!(span.span_context(), sent.span().span_context());
        assert_eq!(got.queued_at, None);
        assert_eq!(got.delay_queue, None);
    }

    #[test]
    fn a_message_without_headers_has_no_parent() {
        let got = received(&BasicProperties::default());
        assert!(!got.parent.span().span_context().is_valid());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-not-a-trace-01".into()),
        );
        let got = received(&BasicProperties::default().with_headers(headers));
        assert!(!got.parent.span().span_context().is_valid());
    }

    #[test]
    fn the_wait_and_the_delay_queue_are_read() {
        let mut death = FieldTable::default();
        death.insert(
            "queue".into(),
            AMQPValue::LongString("herald.work.delay.5000ms".into()),
        );
        let mut older = FieldTable::default();
        older.insert(
            "queue".into(),
            AMQPValue::LongString("herald.work.delay.240000ms".into()),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::FieldTable(death),
                AMQPValue::FieldTable(older),
            ])),
        );
        headers.insert(
            QUEUED_AT_HEADER.into(),
            AMQPValue::LongLongInt(1_700_000_000_123),
        );
        let got = received(&BasicProperties::default().with_headers(headers));
        assert_eq!(got.delay_queue.as_deref(), Some("herald.work.delay.5000ms"));
        assert_eq!(
            got.queued_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
    }

    #[test]
    fn with_current_context_keeps_other_headers_and_stamps_the_time() {
        let mut headers = FieldTable::default();
        headers.insert("x-keep".into(), AMQPValue::LongString("yes".into()));
        let before = SystemTime::now() - Duration::from_millis(1);
        // No OpenTelemetry layer here, so no trace context is written.
        let properties = with_current_context(BasicProperties::default().with_headers(headers));
        let headers = properties.headers().clone().unwrap_or_default();
        assert!(headers.inner().contains_key(&ShortString::from("x-keep")));
        assert!(
            !headers
                .inner()
                .contains_key(&ShortString::from("traceparent"))
        );
        let got = received(&properties);
        assert!(got.queued_at.is_some_and(|t| t >= before));
    }
}
