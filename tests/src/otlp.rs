//! An OpenTelemetry collector for tests: a real OTLP/gRPC trace service on
//! loopback (the `opentelemetry-proto` service, served by tonic) that keeps
//! every span the services export, so that a test can read one trace
//! across processes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One exported span, with ids as lowercase hex.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root span.
    pub parent_span_id: String,
    /// OTLP's `SpanKind` (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Attributes as text (numbers and booleans formatted).
    pub attributes: HashMap<String, String>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// OTLP's status code (2 = error).
    pub status_code: i32,
}

impl CollectedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The collector; it stops serving when dropped.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    arrived: Arc<Notify>,
    stop: CancellationToken,
}

struct Service {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut collected = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.as_ref()))
                })
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                collected.push(CollectedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    status_code: span.status.map_or(0, |s| s.code),
                });
            }
        }
        self.spans.lock().expect("collector lock").extend(collected);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

impl Collector {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans: Arc<Mutex<Vec<CollectedSpan>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let service = TraceServiceServer::new(Service {
            spans: spans.clone(),
            arrived: arrived.clone(),
        });
        let serve = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(serve);
        Ok(Self {
            addr,
            spans,
            arrived,
            stop,
        })
    }

    /// The value of `OTEL_EXPORTER_OTLP_ENDPOINT` for the services.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().expect("collector lock").clone()
    }

    /// The spans of trace `trace_id` once `done` says they are complete;
    /// fails after `timeout` with what had arrived.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> anyhow::Result<Vec<CollectedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            let trace: Vec<CollectedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&trace) {
                return Ok(trace);
            }
            let now = Instant::now();
            anyhow::ensure!(
                now < deadline,
                "trace {trace_id} incomplete after {timeout:?}; it has: {:#?}",
                trace
                    .iter()
                    .map(|s| format!("{} {} ({})", s.service, s.name, s.span_id))
                    .collect::<Vec<_>>()
            );
            // Exports come in batches; wake on each, or re-check now and then.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(200)), arrived)
                .await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
