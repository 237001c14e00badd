//! What operators watch: gRPC health and reflection on ingest, HTTP
//! liveness/readiness and Prometheus metrics on both services.

use std::sync::OnceLock;
use std::time::Duration;

use herald_tests::{Receiver, TestEnv, eventually};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

/// The metrics recorder is process-wide; this test binary installs it once.
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| herald_service::http::install_prometheus().expect("recorder"))
        .clone()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    let client =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .expect("HTTP endpoint answers");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let handle = recorder();
    let mut env = TestEnv::new("0s").await.unwrap();
    let ingest_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingest_http_addr = ingest_http.local_addr().unwrap();
    let metrics = handle.clone();
    let addr = env
        .start_ingest_on(env.queue.clone(), Some(ingest_http), move |c| {
            c.metrics = Some(metrics)
        })
        .await
        .unwrap();
    let sender_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sender_http_addr = sender_http.local_addr().unwrap();
    let metrics = handle.clone();
    env.start_sender_on(Some(sender_http), move |c| c.metrics = Some(metrics))
        .await
        .unwrap();

    // grpc.health.v1 answers SERVING for the Herald services.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "herald.v1.Ingest".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Server reflection lists the services, so grpcurl needs no proto files.
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies
            .message()
            .await
            .unwrap()
            .expect("a reflection reply");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "herald.v1.Ingest",
            "herald.v1.Admin",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} not in {names:?}"
            );
        }
    }

    assert_eq!(get(ingest_http_addr, "/healthz").await.0, 200);
    assert_eq!(get(sender_http_addr, "/healthz").await.0, 200);
    eventually(Duration::from_secs(10), "sender ready", || async {
        get(sender_http_addr, "/readyz").await.0 == 200
    })
    .await;

    let receiver = Receiver::ok().await;
    env.webhook("observed", "POST", &receiver.url("/o")).await;
    let ids = env.fire_json("observed", "{}").await;
    env.wait_final(&ids[0], Duration::from_secs(30)).await;

    let (status, text) = get(sender_http_addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "herald_fire_calls_total",
        "herald_publish_confirm_seconds_bucket",
        "herald_deliveries_total",
        "herald_attempt_duration_seconds_bucket",
        "herald_deliveries_in_flight",
        "herald_db_write_batch_size_bucket",
        "herald_db_write_seconds_bucket",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(text.contains(r#"outcome="succeeded""#), "{text}");
    assert!(text.contains(r#"code="ok""#), "{text}");
    assert_eq!(get(ingest_http_addr, "/metrics").await.0, 200);
}
