//! Requests exactly as the shop platforms need them: one golden test per
//! example of the source documents (WEBSALE ASSE, Ellity, PARTS SOFT), and
//! the trust features (signatures checked with the Standard Webhooks
//! reference library, secret headers, HTTPS with a test CA over HTTP/1.1 and
//! HTTP/2, the SSRF guard). Real broker, database and receivers.

use std::sync::Arc;
use std::time::Duration;

use herald_proto::v1::{
    CreateWebhookRequest, GetSigningSecretRequest, GetWebhookRequest, RotateSigningSecretRequest,
    Webhook, fire_request,
};
use herald_tests::{Received, Receiver, Reply, TestEnv};

const FINAL: Duration = Duration::from_secs(30);

async fn create(env: &TestEnv, request: CreateWebhookRequest) -> Webhook {
    env.admin()
        .await
        .create_webhook(request)
        .await
        .expect("webhook saved")
        .into_inner()
}

/// Fires, waits for success and returns the one request the receiver got.
async fn deliver(
    env: &TestEnv,
    receiver: &Receiver,
    event: &str,
    data: fire_request::Data,
) -> (String, Received) {
    let ids = env.fire(event, data).await;
    assert_eq!(ids.len(), 1);
    let row = env.wait_final(&ids[0], FINAL).await;
    assert_eq!(row.state, "succeeded", "{row:?}");
    let mut got = receiver.for_delivery(&ids[0]);
    assert_eq!(got.len(), 1);
    (ids[0].clone(), got.remove(0))
}

fn json(s: &str) -> fire_request::Data {
    fire_request::Data::Json(s.into())
}

fn headers_of(received: &Received) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in &received.headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asse_get_sends_the_text_as_the_query_string() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    create(
        &env,
        CreateWebhookRequest {
            event: "customer.login".into(),
            method: "GET".into(),
            url: receiver.url("/asse/notify"),
            ..Default::default()
        },
    )
    .await;
    let (id, r) = deliver(
        &env,
        &receiver,
        "customer.login",
        fire_request::Data::Text("userid=42".into()),
    )
    .await;
    assert_eq!(r.method, "GET");
    assert_eq!(r.uri, "/asse/notify?userid=42");
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    assert!(r.header("user-agent").unwrap().starts_with("Herald/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ellity_url_variables_and_json_body() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    // No method and no body: GET (Ellity's rule); the URL uses the data, so
    // nothing more is appended.
    let url_hook = create(
        &env,
        CreateWebhookRequest {
            event: "points.added".into(),
            url: format!(
                "{}?id=#customer.id#&email=#customer.email#",
                receiver.url("/ellity")
            ),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(url_hook.method, "GET");
    // A body template and no method: POST.
    let body_hook = create(
        &env,
        CreateWebhookRequest {
            event: "points.spent".into(),
            url: receiver.url("/ellity/body"),
            body_template: r##"{"email": "#customer.email#", "custom": "#custom.field#"}"##.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (body_hook.method.as_str(), body_hook.body_mode.as_str()),
        ("POST", "template")
    );

    let data = r#"{"customer": {"id": 7, "email": "jan.novak@example.cz"}, "points": 120}"#;
    let (_, r) = deliver(&env, &receiver, "points.added", json(data)).await;
    assert_eq!(r.method, "GET");
    assert_eq!(r.uri, "/ellity?id=7&email=jan.novak@example.cz");

    let (_, r) = deliver(&env, &receiver, "points.spent", json(data)).await;
    assert_eq!(r.method, "POST");
    // `custom.field` is not in the event: an empty string, not an error.
    assert_eq!(
        r.body.as_ref(),
        br#"{"email": "jan.novak@example.cz", "custom": ""}"#
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_soft_callback_lead_form_body() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    create(
        &env,
        CreateWebhookRequest {
            event: "callback.lead".into(),
            method: "POST".into(),
            url: receiver.url("/crm/lead"),
            body_template: "phone={{ item.phone | url_encode }}&name={{ item.name | url_encode }}"
                .into(),
            ..Default::default()
        },
    )
    .await;
    let (_, r) = deliver(
        &env,
        &receiver,
        "callback.lead",
        json(r#"{"phone": "+7 900 123-45-67", "name": "Иван Петров"}"#),
    )
    .await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/crm/lead");
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        "phone=%2B7+900+123-45-67&name=%D0%98%D0%B2%D0%B0%D0%BD+%D0%9F%D0%B5%D1%82%D1%80%D0%BE%D0%B2"
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_soft_send_json_of_an_updated_order() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    let hook = create(
        &env,
        CreateWebhookRequest {
            tenant: "parts-soft-shop".into(),
            event: "order.updated".into(),
            url: receiver.url("/orders"),
            body_mode: "json".into(),
            // Ignored in json mode (PARTS SOFT: "send JSON" replaces the template).
            body_template: "ignored {{ item.id }}".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(hook.method, "POST");
    let order = r#"{"id": 1001, "status": "shipped", "positions": [{"sku": "OC-90", "qty": 2, "price": 12.5}]}"#;
    let ids = env
        .ingest()
        .await
        .fire(herald_proto::v1::FireRequest {
            tenant: "parts-soft-shop".into(),
            event: "order.updated".into(),
            data: Some(json(order)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .delivery_ids;
    env.wait_final(&ids[0], FINAL).await;
    let r = receiver.for_delivery(&ids[0]).remove(0);
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["event"], "order.updated");
    assert_eq!(body["tenant"], "parts-soft-shop");
    assert_eq!(body["delivery_id"], ids[0].as_str());
    assert!(body["fired_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["data"],
        serde_json::from_str::<serde_json::Value>(order).unwrap()
    );
    assert_eq!(body.as_object().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_the_reference_library_and_rotation_signs_twice() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    let hook = create(
        &env,
        CreateWebhookRequest {
            event: "signed".into(),
            method: "POST".into(),
            url: receiver.url("/signed"),
            ..Default::default()
        },
    )
    .await;
    assert!(hook.signing_enabled);
    let first = hook.signing_secret.clone();
    assert!(
        first.starts_with("whsec_"),
        "the secret is returned once, on create"
    );
    // Never again in a plain read.
    let read = env
        .admin()
        .await
        .get_webhook(GetWebhookRequest {
            id: hook.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.signing_secret.is_empty());

    let (id, r) = deliver(&env, &receiver, "signed", json(r#"{"a": 1}"#)).await;
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    assert!(r.header("webhook-timestamp").is_some());
    let verifier = standardwebhooks::Webhook::new(&first).unwrap();
    verifier
        .verify(&r.body, &headers_of(&r))
        .expect("signature verifies with the reference library");
    // A tampered body does not verify.
    assert!(verifier.verify(b"{\"a\": 2}", &headers_of(&r)).is_err());

    let rotated = env
        .admin()
        .await
        .rotate_signing_secret(RotateSigningSecretRequest {
            id: hook.id.clone(),
            new_secret: String::new(),
            overlap_seconds: Some(3600),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.previous_secret, first);
    assert_ne!(rotated.secret, first);
    let shown = env
        .admin()
        .await
        .get_signing_secret(GetSigningSecretRequest {
            id: hook.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.secret, rotated.secret);
    tokio::time::sleep(Duration::from_millis(1_200)).await; // the sender's cache sees the rotation

    let (_, r) = deliver(&env, &receiver, "signed", json(r#"{"b": 2}"#)).await;
    let signatures: Vec<&str> = r.header("webhook-signature").unwrap().split(' ').collect();
    assert_eq!(signatures.len(), 2, "both secrets sign during the overlap");
    for secret in [&rotated.secret, &first] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&r.body, &headers_of(&r))
            .expect("each secret verifies during the overlap");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_headers_reach_the_target_but_are_never_shown_or_stored_in_the_log() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    let secret = "Bearer top-secret-token-4711";
    let hook = create(
        &env,
        CreateWebhookRequest {
            event: "with.auth".into(),
            method: "POST".into(),
            url: receiver.url("/auth"),
            headers: [(
                "X-Shop".to_string(),
                "shop-{{ event.tenant }}default".to_string(),
            )]
            .into(),
            secret_headers: [("Authorization".to_string(), secret.to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(hook.secret_header_names, vec!["Authorization".to_string()]);
    assert!(!hook.headers.contains_key("Authorization"));
    let (id, r) = deliver(&env, &receiver, "with.auth", json("{}")).await;
    assert_eq!(r.header("authorization"), Some(secret));
    assert_eq!(r.header("x-shop"), Some("shop-default"));
    let listed = format!(
        "{:?}",
        env.admin()
            .await
            .list_webhooks(herald_proto::v1::ListWebhooksRequest::default())
            .await
            .unwrap()
            .into_inner()
    );
    assert!(!listed.contains("top-secret"));
    let db = env.db().await;
    let log: String = db
        .query_one(
            "SELECT row_to_json(d)::text || coalesce((SELECT string_agg(row_to_json(a)::text, '') FROM delivery_attempts a WHERE a.delivery_id = d.id), '') \
             FROM deliveries d WHERE d.id = $1",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !log.contains("top-secret"),
        "the dashboard tables never hold secret values"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_body_that_renders_invalid_json_fails_without_a_request() {
    let env = TestEnv::start("0s,100ms").await.unwrap();
    let receiver = Receiver::ok().await;
    create(
        &env,
        CreateWebhookRequest {
            event: "broken.json".into(),
            method: "POST".into(),
            url: receiver.url("/broken"),
            // Unquoted string value: valid Liquid, invalid JSON once rendered.
            body_template: r#"{"name": {{ data.name }}}"#.into(),
            ..Default::default()
        },
    )
    .await;
    let ids = env.fire_json("broken.json", r#"{"name": "Jan"}"#).await;
    let row = env.wait_final(&ids[0], FINAL).await;
    assert_eq!(
        row.state, "failed",
        "not retried: it would fail the same way"
    );
    let attempts = env.attempts(&ids[0]).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error_kind.as_deref(), Some("invalid_request"));
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("not valid JSON")
    );
    // Once every sender has settled what it held and nothing waits in a
    // queue, no request can still be on its way.
    env.stop().await;
    assert_eq!(env.queued_messages().await, 0, "no retry is queued");
    assert!(receiver.requests().is_empty(), "no request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_refuses_internal_targets_at_save_and_at_send() {
    // Ingest and sender without any allowlist: production defaults.
    let mut env = TestEnv::new("0s,100ms,100ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |c| {
        c.targets.addresses = herald_core::ssrf::AddressPolicy::default();
    })
    .await
    .unwrap();
    env.start_sender(|c| c.addresses = herald_core::ssrf::AddressPolicy::default())
        .await
        .unwrap();
    let receiver = Receiver::ok().await;
    let mut admin = env.admin().await;
    for url in [
        "http://127.0.0.1:8080/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let status = admin
            .create_webhook(CreateWebhookRequest {
                event: "x".into(),
                method: "POST".into(),
                url: url.into(),
                ..Default::default()
            })
            .await
            .expect_err(url);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{url}");
        assert!(
            status.message().starts_with("url: refusing to connect"),
            "{url}: {}",
            status.message()
        );
    }
    // A hostname cannot be judged at save time; it resolves to 127.0.0.1
    // at send time and is refused then, without retries.
    create(
        &env,
        CreateWebhookRequest {
            event: "internal".into(),
            method: "POST".into(),
            url: format!("http://localhost:{}/", receiver.addr.port()),
            ..Default::default()
        },
    )
    .await;
    let ids = env.fire_json("internal", "{}").await;
    let row = env.wait_final(&ids[0], FINAL).await;
    assert_eq!(row.state, "failed");
    assert_eq!(row.attempts, 1, "refusals are not retried");
    let attempts = env.attempts(&ids[0]).await;
    assert_eq!(attempts[0].error_kind.as_deref(), Some("refused"));
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("loopback"),
        "{:?}",
        attempts[0]
    );
    assert!(receiver.requests().is_empty());
}

/// hyper writes no Content-Length for an empty HTTP/1.1 body, and some
/// servers answer a POST without one with 411 Length Required: a POST or PUT
/// with no data (raw empty text, or a template that renders nothing) says
/// `Content-Length: 0`, while a GET, which has no body, says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodies_say_content_length_0_over_http1() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    for (method, path, body_template) in [
        ("POST", "/raw", ""),
        ("PUT", "/put", ""),
        ("POST", "/template", "{{ data }}"),
        ("GET", "/get", ""),
    ] {
        create(
            &env,
            CreateWebhookRequest {
                event: "stock.cleared".into(),
                method: method.into(),
                url: receiver.url(path),
                body_template: body_template.into(),
                ..Default::default()
            },
        )
        .await;
    }
    let ids = env
        .fire("stock.cleared", fire_request::Data::Text(String::new()))
        .await;
    assert_eq!(ids.len(), 4);
    for id in &ids {
        let row = env.wait_final(id, FINAL).await;
        assert_eq!(row.state, "succeeded", "{row:?}");
    }
    let mut requests = receiver.requests();
    requests.sort_by(|a, b| a.uri.cmp(&b.uri));
    let seen: Vec<(&str, &str, Option<&str>)> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.version, "HTTP/1.1", "{r:?}");
            assert!(r.body.is_empty(), "{r:?}");
            (
                r.method.as_str(),
                r.uri.as_str(),
                r.header("content-length"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/get", None),
            ("PUT", "/put", Some("0")),
            ("POST", "/raw", Some("0")),
            ("POST", "/template", Some("0")),
        ]
    );
}

/// A CA and a server certificate for `localhost`, made by rcgen.
fn test_pki() -> (String, Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let chain = vec![leaf.der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = |alpn: Vec<Vec<u8>>| {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .unwrap();
        config.alpn_protocols = alpn;
        Arc::new(config)
    };
    (
        ca_cert.pem(),
        config(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
        config(vec![b"http/1.1".to_vec()]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_with_an_extra_ca_over_http1_and_h2() {
    herald_tests::init();
    let (ca_pem, h2_config, h1_config) = test_pki();
    let ca_file = std::env::temp_dir().join(format!("herald-test-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca_file, ca_pem).unwrap();

    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let ca = ca_file.clone();
    env.start_sender(move |c| c.extra_ca_file = Some(ca))
        .await
        .unwrap();
    let h2 = Receiver::start_tls(h2_config, |_, _| Reply::status(200)).await;
    let h1 = Receiver::start_tls(h1_config, |_, _| Reply::status(200)).await;
    for (event, receiver) in [("tls.h2", &h2), ("tls.h1", &h1)] {
        create(
            &env,
            CreateWebhookRequest {
                event: event.into(),
                method: "POST".into(),
                url: format!("https://localhost:{}/secure", receiver.addr.port()),
                ..Default::default()
            },
        )
        .await;
    }
    let (_, r) = deliver(&env, &h2, "tls.h2", json(r#"{"v": 2}"#)).await;
    assert_eq!(r.version, "HTTP/2.0", "ALPN picked h2");
    assert_eq!(r.body.as_ref(), br#"{"v":2}"#);
    let (_, r) = deliver(&env, &h1, "tls.h1", json(r#"{"v": 1}"#)).await;
    assert_eq!(r.version, "HTTP/1.1");
    let _ = std::fs::remove_file(&ca_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_target_with_an_unknown_ca_is_a_connection_error() {
    let (_, h2_config, _) = test_pki();
    let env = TestEnv::start("0s,100ms").await.unwrap();
    let receiver = Receiver::start_tls(h2_config, |_, _| Reply::status(200)).await;
    create(
        &env,
        CreateWebhookRequest {
            event: "tls.untrusted".into(),
            method: "POST".into(),
            url: format!("https://localhost:{}/", receiver.addr.port()),
            ..Default::default()
        },
    )
    .await;
    let ids = env.fire_json("tls.untrusted", "{}").await;
    let row = env.wait_final(&ids[0], FINAL).await;
    assert_eq!(row.state, "failed");
    let attempts = env.attempts(&ids[0]).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].error_kind.as_deref(), Some("connection"));
    assert!(receiver.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_and_503_is_obeyed_never_sooner_than_the_schedule() {
    use herald_tests::pathological::{Misbehaviour, Pathological};
    // Declared delay queues: 100 ms (the schedule), 5 s (parking) and 30 s
    // (the breaker's parking).
    let env = TestEnv::start("0s,100ms,100ms").await.unwrap();
    let pause = |status: u16, retry_after: &str| {
        (
            status,
            vec![("Retry-After".to_owned(), retry_after.to_owned())],
        )
    };
    let cases = [
        // (event, answers, shortest gap between attempt 1 and 2, longest)
        (
            "pause.429",
            vec![pause(429, "2"), (200, vec![])],
            Duration::from_secs(2),
            Duration::from_secs(30),
        ),
        (
            "pause.503",
            vec![pause(503, "1"), (200, vec![])],
            Duration::from_secs(1),
            Duration::from_secs(30),
        ),
        // A 500 carries no pause request even with the header; the schedule's
        // 100 ms applies.
        (
            "pause.500",
            vec![pause(500, "60"), (200, vec![])],
            Duration::from_millis(100),
            Duration::from_secs(1),
        ),
    ];
    let mut fired = Vec::new();
    for (event, answers, min, max) in cases {
        let receiver = Pathological::start(Misbehaviour::Script(answers)).await;
        env.webhook(event, "POST", &receiver.url("/pause")).await;
        let ids = env.fire_json(event, "{}").await;
        fired.push((event, ids[0].clone(), receiver, min, max));
    }
    for (event, id, receiver, min, max) in fired {
        let row = env.wait_final(&id, FINAL).await;
        assert_eq!(
            (row.state.as_str(), row.attempts),
            ("succeeded", 2),
            "{event}"
        );
        let arrivals = receiver.arrivals();
        assert_eq!(arrivals.len(), 2, "{event}");
        let gap = arrivals[1] - arrivals[0];
        assert!(
            gap >= min && gap <= max,
            "{event}: the second attempt came {gap:?} after the first"
        );
        let attempts = env.attempts(&id).await;
        let message = attempts[0].error_message.clone().unwrap_or_default();
        if event == "pause.500" {
            assert_eq!(message, "the target answered HTTP 500", "{event}");
        } else {
            assert!(
                message.contains("asked to retry after"),
                "{event}: {message:?}"
            );
        }
    }
}
