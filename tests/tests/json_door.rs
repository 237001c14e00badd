//! The HTTP/JSON door and gRPC-Web on ingest's gRPC port (docs/api.md,
//! "HTTP/JSON and gRPC-Web"): a Fire over plain HTTP/1.1 JSON is delivered
//! like one over gRPC, the same keys and scopes apply, and bad input gets
//! the gRPC path's status as the usual HTTP status with the same message,
//! changing nothing.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use herald_ingest::{AuthMode, BootstrapKey, IngestConfig};
use herald_proto::v1::admin_client::AdminClient;
use herald_proto::v1::ingest_client::IngestClient;
use herald_proto::v1::{CreateApiKeyRequest, CreateWebhookRequest, FireRequest, fire_request};
use herald_tests::auth::{Token, channel};
use herald_tests::{Receiver, TestEnv};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "json-door-test-admin-key-0123456789abcdef";
const MAX_PAYLOAD: usize = 1024;

/// One POST of `body` to the door over HTTP/1.1: status and JSON answer.
async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<Bytes>,
) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request =
        http::Request::post(format!("http://{addr}{path}")).header("content-type", content_type);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(body.into())).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answered in time")
        .expect("HTTP exchange");
    let status = response.status().as_u16();
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "{path}: {status} {:?}",
        response.headers()
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"));
    (status, value)
}

async fn post_json(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    post(addr, path, token, "application/json", body.to_string()).await
}

fn require_auth(c: &mut IngestConfig) {
    c.auth = AuthMode::Required;
    c.admin_key = Some(BootstrapKey::new(ADMIN_KEY).unwrap());
    c.max_payload_bytes = MAX_PAYLOAD;
}

#[tokio::test]
async fn json_calls_go_through_the_same_checks_as_grpc_and_bad_input_gets_http_statuses() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let addr = env
        .start_ingest(env.queue.clone(), require_auth)
        .await
        .unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let receiver = Receiver::ok().await;
    let mut admin = AdminClient::with_interceptor(channel(addr).await, Token::bearer(ADMIN_KEY));
    admin
        .create_webhook(CreateWebhookRequest {
            event: "order.created".into(),
            method: "POST".into(),
            url: receiver.url("/orders"),
            ..Default::default()
        })
        .await
        .unwrap();
    let fire_only = admin
        .create_api_key(CreateApiKeyRequest {
            name: "shop back-end".into(),
            scopes: vec!["fire".into()],
            tenant: None,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    // CreateWebhook answers after ingest's configuration cache holds it.

    // A Fire over JSON, with a fire-only key, is delivered.
    let (status, answer) = post_json(
        addr,
        "/v1/fire",
        Some(&fire_only),
        json!({"event": "order.created", "json": "{\"order\":42}"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let ids = answer["deliveryIds"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 1, "{answer}");
    let id = ids[0].as_str().unwrap().to_owned();
    let row = env.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(
        receiver.for_delivery(&id)[0].body.as_ref(),
        br#"{"order":42}"#
    );

    // Reads take a read-scoped key; the fire-only key is refused with 403.
    let (status, answer) = post_json(
        addr,
        "/v1/get_delivery",
        Some(&fire_only),
        json!({"id": id}),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{answer}"
    );
    let (status, answer) =
        post_json(addr, "/v1/get_delivery", Some(ADMIN_KEY), json!({"id": id})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(
        answer["attemptHistory"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let (status, answer) = post_json(addr, "/v1/list_events", Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["event"], "order.created");

    // Idempotency keys hold: a repeat answers the same ids, other data 409.
    let keyed =
        |data: &str| json!({"event": "order.created", "json": data, "idempotencyKey": "k-1"});
    let (_, first) = post_json(addr, "/v1/fire", Some(&fire_only), keyed("{\"n\":1}")).await;
    let (status, again) = post_json(addr, "/v1/fire", Some(&fire_only), keyed("{\"n\":1}")).await;
    assert_eq!((status, &again), (200, &first));
    let (status, other) = post_json(addr, "/v1/fire", Some(&fire_only), keyed("{\"n\":2}")).await;
    assert_eq!(
        (status, other["status"].as_str()),
        (409, Some("ALREADY_EXISTS")),
        "{other}"
    );
    env.wait_final(
        first["deliveryIds"][0].as_str().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let delivered = receiver.requests().len();

    // Bad input: the gRPC status as an HTTP status, with a message that
    // says what to fix.
    let big = "x".repeat(MAX_PAYLOAD + 1);
    let huge = "y".repeat(400 * 1024);
    // (path, content type), body, key, HTTP status, status name, hint.
    type Case<'a> = (
        (&'a str, &'a str),
        String,
        Option<&'a str>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            ("/v1/fire", "application/json"),
            json!({"event": "order.created", "json": "{}"}).to_string(),
            None,
            401,
            "UNAUTHENTICATED",
            "authorization: Bearer",
        ),
        (
            ("/v1/fire", "application/json"),
            json!({"event": "Order Created!", "json": "{}"}).to_string(),
            Some(ADMIN_KEY),
            400,
            "INVALID_ARGUMENT",
            "event",
        ),
        (
            ("/v1/fire", "application/json"),
            json!({"event": "order.created", "json": "{not json"}).to_string(),
            Some(ADMIN_KEY),
            400,
            "INVALID_ARGUMENT",
            "JSON",
        ),
        (
            ("/v1/fire", "application/json"),
            json!({"event": "order.created", "text": big}).to_string(),
            Some(ADMIN_KEY),
            400,
            "INVALID_ARGUMENT",
            "HERALD_MAX_PAYLOAD_BYTES",
        ),
        (
            ("/v1/fire", "application/json"),
            json!({"event": "order.created", "text": huge}).to_string(),
            Some(ADMIN_KEY),
            413,
            "OUT_OF_RANGE",
            "HERALD_MAX_PAYLOAD_BYTES",
        ),
        (
            ("/v1/fire", "application/json"),
            "order.created, please".to_owned(),
            Some(ADMIN_KEY),
            400,
            "INVALID_ARGUMENT",
            "is not a herald.v1.FireRequest in JSON",
        ),
        (
            ("/v1/fire", "application/json"),
            json!({"event": "order.created", "colour": "red"}).to_string(),
            Some(ADMIN_KEY),
            400,
            "INVALID_ARGUMENT",
            "colour",
        ),
        (
            ("/v1/fire", "text/plain"),
            json!({"event": "order.created"}).to_string(),
            Some(ADMIN_KEY),
            415,
            "INVALID_ARGUMENT",
            "application/json",
        ),
        (
            ("/v1/get_delivery", "application/json"),
            json!({"id": "0192f000-0000-7000-8000-000000000000"}).to_string(),
            Some(ADMIN_KEY),
            404,
            "NOT_FOUND",
            "0192f000",
        ),
        (
            ("/v1/get_delivery", "application/json"),
            json!({"id": "seven"}).to_string(),
            Some(ADMIN_KEY),
            400,
            "INVALID_ARGUMENT",
            "id",
        ),
    ];
    let mut table = String::new();
    for ((path, content_type), body, token, http, code, hint) in cases {
        let (status, answer) = post(addr, path, token, content_type, body).await;
        let message = answer["message"].as_str().unwrap_or_default();
        table.push_str(&format!("{path} {status} {code}: {message}\n"));
        assert_eq!(
            (status, answer["status"].as_str()),
            (http, Some(code)),
            "{path}: {answer}"
        );
        assert!(message.contains(hint), "{path}: {message:?} lacks {hint:?}");
        assert_eq!(
            answer["code"].as_i64().unwrap(),
            tonic_code(code),
            "{answer}"
        );
    }
    eprintln!("{table}");
    // Nothing of the refused calls was queued or sent: once the sender has
    // stopped (and settled what it held), the queues are empty and the
    // receiver has only the accepted deliveries.
    env.stop().await;
    assert_eq!(env.queued_messages().await, 0);
    assert_eq!(receiver.requests().len(), delivered);
}

fn tonic_code(name: &str) -> i64 {
    match name {
        "INVALID_ARGUMENT" => 3,
        "NOT_FOUND" => 5,
        "ALREADY_EXISTS" => 6,
        "PERMISSION_DENIED" => 7,
        "OUT_OF_RANGE" => 11,
        "UNAUTHENTICATED" => 16,
        other => panic!("no code for {other}"),
    }
}

#[tokio::test]
async fn grpc_web_clients_fire_on_the_same_port() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let addr = env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let receiver = Receiver::ok().await;
    env.webhook("order.created", "POST", &receiver.url("/orders"))
        .await;

    // gRPC-Web over HTTP/1.1, as a browser (or Envoy's filter) sends it.
    let http1 = Client::builder(TokioExecutor::new())
        .build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    let mut ingest = IngestClient::with_origin(web, format!("http://{addr}").parse().unwrap());
    let ids = ingest
        .fire(FireRequest {
            event: "order.created".into(),
            data: Some(fire_request::Data::Json(r#"{"via":"grpc-web"}"#.into())),
            ..Default::default()
        })
        .await
        .expect("gRPC-Web Fire")
        .into_inner()
        .delivery_ids;
    assert_eq!(ids.len(), 1);
    let row = env.wait_final(&ids[0], Duration::from_secs(20)).await;
    assert_eq!(row.state, "succeeded");

    // A refusal keeps its gRPC status over gRPC-Web.
    let status = ingest
        .fire(FireRequest {
            event: "Bad Event".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

/// One request with `headers` and `body`; the answer's status and headers.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (u16, http::HeaderMap) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Full::new(Bytes::from_static(body))).unwrap()),
    )
    .await
    .expect("answered in time")
    .expect("HTTP exchange");
    (response.status().as_u16(), response.headers().clone())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// A browser's preflight for a cross-site call of `path` from `origin`.
async fn preflight(
    addr: SocketAddr,
    path: &str,
    origin: &str,
    request_headers: &str,
) -> (u16, http::HeaderMap) {
    exchange(
        addr,
        "OPTIONS",
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", request_headers),
        ],
        b"",
    )
    .await
}

#[tokio::test]
async fn browsers_on_allowed_origins_may_call_the_json_door_and_grpc_web() {
    const ADMIN_PAGE: &str = "https://admin.shop.example";
    let mut env = TestEnv::new("0s").await.unwrap();
    let allowed = env
        .start_ingest(env.queue.clone(), |c| {
            c.cors = Some(herald_ingest::CorsOrigins::parse(ADMIN_PAGE).unwrap());
        })
        .await
        .unwrap();

    // The JSON door's and gRPC-Web's preflights from the allowed origin
    // name it and allow the method and the headers such calls send.
    for (path, request_headers) in [
        ("/v1/fire", "authorization,content-type"),
        (
            "/herald.v1.Ingest/Fire",
            "content-type,x-grpc-web,x-user-agent,authorization",
        ),
    ] {
        let (status, headers) = preflight(allowed, path, ADMIN_PAGE, request_headers).await;
        assert!(status == 200 || status == 204, "{path}: {status}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(ADMIN_PAGE),
            "{path}: {headers:?}"
        );
        let methods = header(&headers, "access-control-allow-methods").unwrap();
        assert!(methods.contains("POST"), "{path}: {methods}");
        let allowed_headers = header(&headers, "access-control-allow-headers").unwrap();
        for name in request_headers.split(',') {
            assert!(
                allowed_headers.contains(name),
                "{path}: {name} not in {allowed_headers}"
            );
        }
        assert_eq!(header(&headers, "access-control-allow-credentials"), None);
    }

    // A real call from that origin is marked for it; gRPC-Web's status
    // headers are readable by the page.
    let (status, headers) = exchange(
        allowed,
        "POST",
        "/v1/list_events",
        &[("origin", ADMIN_PAGE), ("content-type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ADMIN_PAGE)
    );
    let (_, headers) = exchange(
        allowed,
        "POST",
        "/herald.v1.Ingest/ListEvents",
        &[
            ("origin", ADMIN_PAGE),
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        // An empty ListEventsRequest in one gRPC-Web data frame.
        b"\0\0\0\0\0",
    )
    .await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ADMIN_PAGE)
    );
    let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("grpc-status"), "{headers:?}");

    // Another origin gets no CORS header, so its browser refuses the page
    // the answer.
    let (_, headers) = preflight(
        allowed,
        "/v1/fire",
        "https://evil.example",
        "authorization,content-type",
    )
    .await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // Without HERALD_CORS_ORIGINS no origin is allowed.
    let closed = env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let (_, headers) = preflight(closed, "/v1/fire", ADMIN_PAGE, "content-type").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}
