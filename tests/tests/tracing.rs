//! One trace from Fire to every attempt (OpenTelemetry, docs/operations.md
//! "Tracing"): real `herald-ingest` and `herald-sender` processes export
//! over OTLP/gRPC to a collector in this test, and the trace context goes
//! from the caller's gRPC metadata through RabbitMQ's delay queues to the
//! receiver's `traceparent` header.

use std::time::Duration;

use herald_proto::v1::{CreateWebhookRequest, FireRequest, fire_request};
use herald_tests::otlp::{CollectedSpan, Collector};
use herald_tests::process::{IngestProcess, SenderProcess, workspace_binary};
use herald_tests::{Receiver, Reply, TestEnv};

/// The caller's trace and span, as its own tracing would send them.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

const WAIT: Duration = Duration::from_secs(30);

/// Fires `order.paid` with the caller's `traceparent`; the delivery id.
async fn fire_traced(env: &TestEnv) -> String {
    let mut request = tonic::Request::new(FireRequest {
        event: "order.paid".into(),
        data: Some(fire_request::Data::Json(r#"{"order":42}"#.into())),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .expect("metadata value"),
    );
    let mut ids = env
        .ingest()
        .await
        .fire(request)
        .await
        .expect("fire ok")
        .into_inner()
        .delivery_ids;
    assert_eq!(ids.len(), 1);
    ids.remove(0)
}

/// A webhook for `order.paid` at `receiver` that asks for `traceparent`.
async fn traced_webhook(env: &TestEnv, receiver: &Receiver) -> String {
    let webhook = env
        .admin()
        .await
        .create_webhook(CreateWebhookRequest {
            event: "order.paid".into(),
            method: "POST".into(),
            url: receiver.url("/hook"),
            trace_context: true,
            ..Default::default()
        })
        .await
        .expect("webhook created")
        .into_inner();
    assert!(webhook.trace_context);
    webhook.id
}

fn one<'a>(
    spans: &'a [CollectedSpan],
    what: &str,
    f: impl Fn(&CollectedSpan) -> bool,
) -> &'a CollectedSpan {
    let found: Vec<&CollectedSpan> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} span in {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_fire_with_a_failed_first_attempt_is_one_trace_from_the_caller_to_the_receiver() {
    let collector = Collector::start().await.unwrap();
    let mut env = TestEnv::new("0s,100ms").await.unwrap();
    let endpoint = collector.endpoint();
    // Export every 100 ms instead of every 5 s.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let ingest = IngestProcess::start(&env, "ingest", &otel).await.unwrap();
    env.ingest_addr = Some(ingest.grpc_addr);
    let receiver = Receiver::start(|_, n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    let webhook_id = traced_webhook(&env, &receiver).await;
    let _sender = SenderProcess::start(&env, "sender", &otel).await.unwrap();

    let delivery_id = fire_traced(&env).await;
    let row = env.wait_final(&delivery_id, WAIT).await;
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 2));

    let trace = collector
        .wait_for_trace(CALLER_TRACE, WAIT, |spans| {
            spans.iter().filter(|s| s.name == "herald.attempt").count() == 2
                && spans.iter().filter(|s| s.name == "herald.queued").count() == 2
                && spans.iter().filter(|s| s.name == "herald.publish").count() == 2
                && spans.iter().any(|s| s.name == "herald.v1.Ingest/Fire")
        })
        .await
        .unwrap();

    // Fire continues the caller's trace, as a server span of ingest.
    let fire = one(&trace, "Fire", |s| s.name == "herald.v1.Ingest/Fire");
    assert_eq!(fire.service, "herald-ingest");
    assert_eq!(fire.parent_span_id, CALLER_SPAN);
    assert_eq!(fire.kind, 2, "server");

    // Ingest publishes the first attempt's message; the sender the retry's.
    let publish = |attempt: &str| {
        one(&trace, &format!("publish of attempt {attempt}"), |s| {
            s.name == "herald.publish" && s.attribute("herald.attempt") == Some(attempt)
        })
    };
    let (publish_1, publish_2) = (publish("1"), publish("2"));
    assert_eq!(publish_1.service, "herald-ingest");
    assert_eq!(publish_1.parent_span_id, fire.span_id);
    assert_eq!(
        publish_1.attribute("herald.delivery_id"),
        Some(delivery_id.as_str())
    );
    assert_eq!(
        publish_1.attribute("herald.webhook_id"),
        Some(webhook_id.as_str())
    );
    assert_eq!(publish_1.kind, 4, "producer");
    assert_eq!(publish_2.service, "herald-sender");

    // Each attempt follows the time its message waited in a queue.
    let attempt = |n: &str| {
        one(&trace, &format!("attempt {n}"), |s| {
            s.name == "herald.attempt" && s.attribute("attempt") == Some(n)
        })
    };
    let (attempt_1, attempt_2) = (attempt("1"), attempt("2"));
    let queued = |attempt: &CollectedSpan| {
        one(&trace, "queued", |s| {
            s.name == "herald.queued" && s.span_id == attempt.parent_span_id
        })
    };
    let (queued_1, queued_2) = (queued(attempt_1), queued(attempt_2));
    assert_eq!(queued_1.parent_span_id, publish_1.span_id);
    assert_eq!(publish_2.parent_span_id, attempt_1.span_id);
    assert_eq!(queued_2.parent_span_id, publish_2.span_id);
    // The retry waited in the 100 ms delay queue, and the span says so.
    let delay_queue = queued_2.attribute("messaging.destination.name").unwrap();
    assert!(delay_queue.ends_with(".delay.100ms"), "{delay_queue}");
    let waited: u64 = queued_2
        .attribute("herald.wait_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 100, "waited {waited} ms");
    assert!(queued_2.end_unix_nanos - queued_2.start_unix_nanos >= 100_000_000);
    assert!(queued_2.start_unix_nanos >= attempt_1.start_unix_nanos);

    for (span, status, error, outcome) in [
        (attempt_1, "500", Some("http_status"), "retry"),
        (attempt_2, "200", None, "succeeded"),
    ] {
        assert_eq!(span.service, "herald-sender");
        assert_eq!(span.kind, 5, "consumer");
        assert_eq!(span.attribute("delivery_id"), Some(delivery_id.as_str()));
        assert_eq!(span.attribute("webhook_id"), Some(webhook_id.as_str()));
        assert_eq!(span.attribute("http.response.status_code"), Some(status));
        assert_eq!(span.attribute("error.type"), error);
        assert_eq!(span.attribute("herald.outcome"), Some(outcome));
        assert_eq!(span.status_code == 2, error.is_some(), "error status");
    }

    // The receiver's own spans can join: each request names its attempt.
    let requests = receiver.for_delivery(&delivery_id);
    assert_eq!(requests.len(), 2);
    for (request, attempt) in requests.iter().zip([attempt_1, attempt_2]) {
        assert_eq!(
            request.header("traceparent"),
            Some(format!("00-{CALLER_TRACE}-{}-01", attempt.span_id).as_str())
        );
    }
}

#[tokio::test]
async fn with_the_sdk_disabled_nothing_is_exported_and_no_traceparent_is_sent() {
    let collector = Collector::start().await.unwrap();
    let mut env = TestEnv::new("0s").await.unwrap();
    let endpoint = collector.endpoint();
    // The endpoint is set, as a deployment might leave it, but the
    // standard switch turns the SDK off.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SDK_DISABLED", "true"),
    ];
    let mut ingest = IngestProcess::start(&env, "ingest", &otel).await.unwrap();
    env.ingest_addr = Some(ingest.grpc_addr);
    let receiver = Receiver::ok().await;
    traced_webhook(&env, &receiver).await;
    let mut sender = SenderProcess::start(&env, "sender", &otel).await.unwrap();

    let delivery_id = fire_traced(&env).await;
    let row = env.wait_final(&delivery_id, WAIT).await;
    assert_eq!(row.state, "succeeded");
    let requests = receiver.for_delivery(&delivery_id);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("traceparent"), None);

    // A stopping service exports what it still holds: after both stopped,
    // anything they would have exported has arrived.
    sender.sigterm().unwrap();
    assert!(sender.wait_exit(WAIT).await.unwrap().is_some());
    assert!(ingest.stop(WAIT).await.unwrap().is_some());
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

/// Runs `herald-ingest` with `vars` until it exits; its stderr.
fn ingest_refuses(vars: &[(&str, &str)]) -> String {
    let binary = workspace_binary("herald-ingest", "herald-ingest").unwrap();
    let mut command = std::process::Command::new(binary);
    command
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_METRICS_LISTEN", "127.0.0.1:0");
    for (key, value) in vars {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "{vars:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_otlp_setting_herald_cannot_honour_stops_the_service_with_what_to_do() {
    let stderr = ingest_refuses(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ]);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"http/protobuf\" is not supported")
            && stderr.contains("OTLP/gRPC only"),
        "{stderr}"
    );
    let stderr = ingest_refuses(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317")]);
    assert!(stderr.contains("HTTPS"), "{stderr}");
}
