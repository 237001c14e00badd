//! The OpenAPI document of the JSON door (docs/api.md, "OpenAPI"):
//! `docs/openapi.json` is exactly what `herald_ingest::openapi::document()`
//! derives from the proto, so it cannot drift from it (this test fails when
//! it differs and rewrites it with `UPDATE_DOCS=1`); a running ingest serves
//! the same document; an outside validator (Python's
//! `openapi-spec-validator`) accepts it; and the answers a real ingest gives
//! on every route, refusals included, match the schemas it declares.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use herald_ingest::json_door::ROUTES;
use herald_ingest::openapi::{OPENAPI_PATH, document};
use herald_tests::{Receiver, TestEnv, eventually};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const COMMAND: &str = "UPDATE_DOCS=1 cargo test -p herald-tests --test openapi";

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

fn rendered() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document prints");
    text.push('\n');
    text
}

#[test]
fn openapi_doc_is_up_to_date() {
    let path = doc_path();
    let generated = rendered();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == generated {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("updated {}", path.display());
        return;
    }
    panic!(
        "docs/openapi.json is not what the proto and the door's routes declare; \
         rewrite it with\n\n    {COMMAND}\n\nand commit the result"
    );
}

/// One request to the door over HTTP/1.1: status and JSON answer.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Full::new(body)).unwrap()),
    )
    .await
    .expect("answered in time")
    .expect("HTTP exchange");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"));
    (status, value)
}

/// Validates the document with `openapi-spec-validator`, then each answer
/// against the schema the document declares for its route and status.
const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_schema_validator import OAS30Validator

spec = json.load(open(sys.argv[1]))
validate(spec)
answers = json.load(open(sys.argv[2]))
for a in answers:
    op = spec["paths"][a["path"]]["post"]
    response = op["responses"][str(a["status"])]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    # The schema's $refs point into the document's own components.
    root = dict(schema, components=spec["components"])
    OAS30Validator(root).validate(a["body"])
    print(a["path"], a["status"], "matches", schema.get("$ref", schema))
"#;

#[tokio::test]
async fn ingest_serves_the_document_and_its_answers_match_it() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let addr = env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let receiver = Receiver::ok().await;
    let webhook_id = env
        .webhook("order.created", "POST", &receiver.url("/orders"))
        .await
        .id;

    // What ingest serves is the document, to the byte.
    let (status, served) = call(addr, "GET", OPENAPI_PATH, None).await;
    assert_eq!(status, 200);
    assert_eq!(served, document());

    // Every route answers once, and Fire also refuses once.
    let mut answers = Vec::new();
    let mut record = |path: &str, status: u16, body: Value| {
        answers.push(json!({"path": path, "status": status, "body": body}));
    };
    eventually(
        Duration::from_secs(10),
        "ingest lists the new webhook's event",
        || async {
            let (_, events) = call(addr, "POST", "/v1/list_events", Some(json!({}))).await;
            events.to_string().contains("order.created")
        },
    )
    .await;
    let (status, events) = call(addr, "POST", "/v1/list_events", Some(json!({}))).await;
    record("/v1/list_events", status, events);
    let (status, fired) = call(
        addr,
        "POST",
        "/v1/fire",
        Some(json!({"event": "order.created", "json": "{\"order\":1}", "idempotencyKey": "o-1"})),
    )
    .await;
    assert_eq!(status, 200, "{fired}");
    let id = fired["deliveryIds"][0].as_str().unwrap().to_owned();
    record("/v1/fire", status, fired);
    let (status, refused) = call(
        addr,
        "POST",
        "/v1/fire",
        Some(json!({"event": "order.nobody-listens"})),
    )
    .await;
    assert!(status >= 400, "{refused}");
    record("/v1/fire", status, refused);
    env.wait_final(&id, Duration::from_secs(20)).await;
    let (status, delivery) = call(addr, "POST", "/v1/get_delivery", Some(json!({"id": id}))).await;
    assert_eq!(status, 200, "{delivery}");
    record("/v1/get_delivery", status, delivery);
    let (status, missing) = call(
        addr,
        "POST",
        "/v1/get_delivery",
        Some(json!({"id": uuid::Uuid::new_v4().to_string()})),
    )
    .await;
    assert_eq!(status, 404, "{missing}");
    record("/v1/get_delivery", status, missing);
    let (status, listed) = call(
        addr,
        "POST",
        "/v1/list_deliveries",
        Some(json!({"event": "order.created", "pageSize": 10})),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    record("/v1/list_deliveries", status, listed);
    let (status, summary) = call(
        addr,
        "POST",
        "/v1/get_webhook_summary",
        Some(json!({"webhookId": webhook_id})),
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    record("/v1/get_webhook_summary", status, summary);
    let (status, timeline) = call(
        addr,
        "POST",
        "/v1/get_webhook_timeline",
        Some(json!({"webhookId": webhook_id, "bucketSeconds": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{timeline}");
    assert_eq!(timeline["buckets"][0]["succeeded"], "1", "{timeline}");
    record("/v1/get_webhook_timeline", status, timeline);
    let (status, refused) = call(
        addr,
        "POST",
        "/v1/get_webhook_timeline",
        Some(json!({"webhookId": webhook_id, "bucketSeconds": 60})),
    )
    .await;
    // A week (the default range) in minutes is more buckets than allowed.
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("at most 400"),
        "{refused}"
    );
    record("/v1/get_webhook_timeline", status, refused);
    let covered: std::collections::BTreeSet<_> = answers
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_owned())
        .collect();
    for route in ROUTES {
        assert!(
            covered.contains(route.path),
            "{} was not called",
            route.path
        );
    }

    let dir = std::env::temp_dir().join(format!("herald-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("openapi.json");
    let answers_file = dir.join("answers.json");
    std::fs::write(&spec, served.to_string()).unwrap();
    std::fs::write(&answers_file, Value::Array(answers).to_string()).unwrap();
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .arg(&spec)
        .arg(&answers_file)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3 runs (apt-get install python3)");
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named"),
        "python3 lacks the validator: python3 -m pip install openapi-spec-validator \
         (deploy/local/services.sh herald_install_client_tools does)\n{stderr}"
    );
    assert!(
        output.status.success(),
        "the document or an answer does not validate:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    env.stop().await;
}
