//! The core pipeline end to end: gRPC Fire → RabbitMQ → sender → HTTP
//! receiver, with every attempt checked in Postgres. Real broker, real
//! database, real HTTP on loopback; schedules in milliseconds.

use std::time::Duration;

use herald_proto::v1::{
    DeliveryMessage, FireRequest, SetWebhookEnabledRequest, UpdateWebhookRequest, delivery_message,
    fire_request,
};
use herald_tests::{Receiver, Reply, TestEnv, eventually};

const FINAL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_delivers_json_and_records_one_attempt() {
    let env = TestEnv::start("0s,200ms,200ms").await.unwrap();
    let receiver = Receiver::ok().await;
    let hook = env
        .webhook("order.created", "POST", &receiver.url("/hooks/orders"))
        .await;

    let ids = env
        .fire_json(
            "order.created",
            r#"{"order_id": 42, "customer": {"email": "a@example.com"}}"#,
        )
        .await;
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    assert_eq!(
        uuid::Uuid::parse_str(id).unwrap().get_version_num(),
        7,
        "delivery ids are UUIDv7"
    );

    let row = env.wait_final(id, FINAL).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_status_code, Some(200));
    assert!(row.finished_at.is_some());

    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hooks/orders");
    assert_eq!(
        request.body.as_ref(),
        br#"{"order_id":42,"customer":{"email":"a@example.com"}}"#,
        "raw mode sends JSON data as compact JSON"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    assert_eq!(request.header("webhook-attempt"), Some("1"));

    let attempts = env.attempts(id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(attempts[0].error_kind, None);
    assert_eq!(attempts[0].response_excerpt.as_deref(), Some("status 200"));

    let stored = env.db().await
        .query_one("SELECT tenant, event, webhook_id, method, payload, payload_kind FROM deliveries WHERE id = $1",
                   &[&uuid::Uuid::parse_str(id).unwrap()])
        .await
        .unwrap();
    assert_eq!(stored.get::<_, String>(0), "");
    assert_eq!(stored.get::<_, String>(1), "order.created");
    assert_eq!(stored.get::<_, uuid::Uuid>(2).to_string(), hook.id);
    assert_eq!(stored.get::<_, String>(3), "POST");
    assert_eq!(stored.get::<_, String>(5), "json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_two_webhooks() {
    let env = TestEnv::start("0s").await.unwrap();
    let first = Receiver::ok().await;
    let second = Receiver::ok().await;
    env.webhook("myevent", "POST", &first.url("/a")).await;
    env.webhook("myevent", "PUT", &second.url("/b")).await;

    let ids = env
        .fire("myevent", fire_request::Data::Text("hello".into()))
        .await;
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "each delivery has its own id");
    for id in &ids {
        assert_eq!(env.wait_final(id, FINAL).await.state, "succeeded");
    }
    let a = first.requests();
    let b = second.requests();
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].method, "POST");
    assert_eq!(b[0].method, "PUT");
    assert_eq!(a[0].body.as_ref(), b"hello");
    assert!(
        a[0].header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let mut seen = vec![
        a[0].header("webhook-id").unwrap().to_owned(),
        b[0].header("webhook-id").unwrap().to_owned(),
    ];
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fail_succeed_follows_the_schedule() {
    let env = TestEnv::start("0s,400ms,800ms").await.unwrap();
    let receiver = Receiver::start(|_, n| Reply::status(if n < 2 { 500 } else { 200 })).await;
    env.webhook("order.paid", "POST", &receiver.url("/paid"))
        .await;

    let ids = env.fire_json("order.paid", r#"{"id":1}"#).await;
    let id = &ids[0];
    let row = env.wait_final(id, FINAL).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(row.attempts, 3);

    let attempts = env.attempts(id).await;
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(200)]);
    assert_eq!(attempts[0].error_kind.as_deref(), Some("http_status"));
    assert_eq!(attempts[2].error_kind, None);

    // The receiver saw the gaps of the schedule (with tolerance for the
    // broker's TTL granularity and this machine's load).
    let got = receiver.for_delivery(id);
    assert_eq!(got.len(), 3);
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(400) && gap1 < Duration::from_millis(2_400),
        "gap 1 {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(800) && gap2 < Duration::from_millis(2_800),
        "gap 2 {gap2:?}"
    );
    let attempt_headers: Vec<&str> = got
        .iter()
        .map(|r| r.header("webhook-attempt").unwrap())
        .collect();
    assert_eq!(attempt_headers, vec!["1", "2", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_attempts_fail_then_failed_with_three_rows_and_a_stable_id() {
    let env = TestEnv::start("0s,100ms,100ms").await.unwrap();
    let receiver = Receiver::start(|_, _| Reply::status(503)).await;
    env.webhook("stock.low", "POST", &receiver.url("/stock"))
        .await;

    let ids = env.fire_json("stock.low", r#"[1,2,3]"#).await;
    let id = &ids[0];
    let row = env.wait_final(id, FINAL).await;
    assert_eq!(row.state, "failed");
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_status_code, Some(503));
    assert!(row.finished_at.is_some());
    assert_eq!(row.next_attempt_at, None);

    let attempts = env.attempts(id).await;
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.status_code == Some(503)));
    let got = receiver.for_delivery(id);
    assert_eq!(got.len(), 3, "exactly three requests");
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == Some(id.as_str())),
        "same id on every attempt"
    );
    // A retry's message carries the payload of the first, with its kind.
    assert!(
        got.iter().all(|r| r.body.as_ref() == b"[1,2,3]"
            && r.header("content-type") == Some("application/json")),
        "the same JSON body on every attempt"
    );
    // No fourth attempt comes later: once the sender has settled every
    // delivery and stopped, no retry waits in any queue.
    env.stop().await;
    assert_eq!(env.queued_messages().await, 0, "no retry is queued");
    assert_eq!(receiver.requests().len(), 3);
}

/// Herald asks the broker for 32 KiB frames (herald-queue
/// `DEFAULT_FRAME_MAX`); a payload ten times that crosses the queue in many
/// body frames, both from ingest and in the sender's retry, and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_of_many_frames_arrives_whole_on_every_attempt() {
    let env = TestEnv::start("0s,100ms").await.unwrap();
    let receiver = Receiver::start(|_, n| Reply::status(if n == 0 { 503 } else { 200 })).await;
    env.webhook("catalog.synced", "POST", &receiver.url("/catalog"))
        .await;
    let json = format!(r#"{{"items":"{}"}}"#, "x".repeat(320 * 1024));

    let ids = env.fire_json("catalog.synced", &json).await;
    let row = env.wait_final(&ids[0], FINAL).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(row.attempts, 2);
    let got = receiver.for_delivery(&ids[0]);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|r| r.body.as_ref() == json.as_bytes()),
        "the whole payload on both attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_counts_as_a_failed_attempt() {
    let env = TestEnv::start("0s,100ms").await.unwrap();
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::after(Duration::from_millis(1_500), 200)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let hook = env.webhook("slow", "POST", &receiver.url("/slow")).await;
    env.admin()
        .await
        .update_webhook(UpdateWebhookRequest {
            id: hook.id.clone(),
            timeout_ms: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();

    let ids = env.fire_json("slow", "{}").await;
    let row = env.wait_final(&ids[0], FINAL).await;
    assert_eq!(row.state, "succeeded");
    let attempts = env.attempts(&ids[0]).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].error_kind.as_deref(), Some("timeout"));
    assert_eq!(attempts[0].status_code, None);
    assert!(
        attempts[0].duration_ms >= 300 && attempts[0].duration_ms < 1_500,
        "{:?}",
        attempts[0]
    );
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("300 ms")
    );
    assert_eq!(attempts[1].status_code, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_delete_put_data_in_the_query_post_in_the_body() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    env.webhook("asse.get", "GET", &receiver.url("/notify"))
        .await;
    env.webhook("asse.get.query", "GET", &receiver.url("/notify?key=abc"))
        .await;
    env.webhook("json.get", "GET", &receiver.url("/j")).await;
    env.webhook("asse.delete", "DELETE", &receiver.url("/del"))
        .await;
    env.webhook("asse.post", "POST", &receiver.url("/post"))
        .await;
    env.webhook("asse.patch", "PATCH", &receiver.url("/patch"))
        .await;

    let text = |s: &str| fire_request::Data::Text(s.into());
    let mut ids = Vec::new();
    ids.extend(env.fire("asse.get", text("userid=42")).await);
    ids.extend(env.fire("asse.get.query", text("userid=42&x=a%20b")).await);
    ids.extend(
        env.fire_json("json.get", r#"{"id":7,"email":"a+b@x.example"}"#)
            .await,
    );
    ids.extend(env.fire("asse.delete", text("userid=43")).await);
    ids.extend(env.fire("asse.post", text("userid=44")).await);
    ids.extend(env.fire_json("asse.patch", r#"{"a":[1,2]}"#).await);
    for id in &ids {
        assert_eq!(env.wait_final(id, FINAL).await.state, "succeeded");
    }
    let by_id = |i: usize| receiver.for_delivery(&ids[i]).remove(0);

    let r = by_id(0);
    assert_eq!(
        (r.method.as_str(), r.uri.as_str()),
        ("GET", "/notify?userid=42")
    );
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);
    let r = by_id(1);
    assert_eq!(
        r.uri, "/notify?key=abc&userid=42&x=a%20b",
        "text is sent as given, never re-encoded"
    );
    let r = by_id(2);
    assert_eq!(r.uri, "/j?id=7&email=a%2Bb%40x.example");
    let r = by_id(3);
    assert_eq!(
        (r.method.as_str(), r.uri.as_str()),
        ("DELETE", "/del?userid=43")
    );
    let r = by_id(4);
    assert_eq!((r.method.as_str(), r.uri.as_str()), ("POST", "/post"));
    assert_eq!(r.body.as_ref(), b"userid=44", "text body exactly as given");
    let r = by_id(5);
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.body.as_ref(), br#"{"a":[1,2]}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_header_name_is_configurable_and_stable_across_retries() {
    let mut env = TestEnv::new("0s,100ms,100ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    env.start_sender(|c| {
        c.id_header = "PS-WEBHOOK_EVENT-ID".parse().unwrap();
    })
    .await
    .unwrap();
    let receiver = Receiver::start(|_, _| Reply::status(500)).await;
    env.admin()
        .await
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "parts.order".into(),
            method: "POST".into(),
            url: receiver.url("/ps"),
            disable_signing: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids = env.fire_json("parts.order", r#"{"n":1}"#).await;
    env.wait_final(&ids[0], FINAL).await;
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.header("ps-webhook_event-id"), Some(ids[0].as_str()));
        assert_eq!(
            r.header("webhook-id"),
            None,
            "unsigned: no Standard Webhooks headers"
        );
        assert_eq!(r.header("webhook-signature"), None);
    }
}

/// One fleet serves a PARTS SOFT receiver and a Standard Webhooks receiver
/// at once: the delivery-id header is a webhook setting, and HTTP/1.1
/// requests carry every configured name exactly as the user wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_names_its_id_header_and_it_goes_out_as_written() {
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let parts = herald_tests::receiver::HeadRecorder::start().await;
    let standard = herald_tests::receiver::HeadRecorder::start().await;
    let mut admin = env.admin().await;
    let created = admin
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "order.paid".into(),
            method: "POST".into(),
            url: parts.url("/ps"),
            id_header: "PS-WEBHOOK_EVENT-ID".into(),
            headers: [("X-Shop-Token".to_owned(), "t".to_owned())].into(),
            disable_signing: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id_header, "PS-WEBHOOK_EVENT-ID", "shown as written");
    let fetched = admin
        .get_webhook(herald_proto::v1::GetWebhookRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.id_header, "PS-WEBHOOK_EVENT-ID");
    admin
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "order.paid".into(),
            method: "POST".into(),
            url: standard.url("/std"),
            ..Default::default()
        })
        .await
        .unwrap();

    let ids = env.fire_json("order.paid", r#"{"n":1}"#).await;
    assert_eq!(ids.len(), 2);
    let head = &parts.wait_for(1, FINAL).await[0];
    assert!(head.starts_with("POST /ps HTTP/1.1\r\n"), "{head}");
    let id_line = head
        .lines()
        .find(|l| l.starts_with("PS-WEBHOOK_EVENT-ID: "))
        .unwrap_or_else(|| panic!("no PS-WEBHOOK_EVENT-ID line as written in {head:?}"));
    assert!(
        ids.iter().any(|id| id_line.ends_with(id.as_str())),
        "{id_line}"
    );
    assert!(head.contains("\r\nX-Shop-Token: t\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("\r\nwebhook-id:"),
        "{head}"
    );
    let head = &standard.wait_for(1, FINAL).await[0];
    assert!(
        head.contains("\r\nwebhook-id: "),
        "the default, signed: {head}"
    );
    assert!(head.contains("\r\nwebhook-signature: "), "{head}");

    // Updating it changes the next delivery; "" goes back to the default.
    admin
        .update_webhook(herald_proto::v1::UpdateWebhookRequest {
            id: created.id.clone(),
            id_header: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap();
    let updated = admin
        .get_webhook(herald_proto::v1::GetWebhookRequest { id: created.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.id_header, "");
    let refused = admin
        .update_webhook(herald_proto::v1::UpdateWebhookRequest {
            id: updated.id.clone(),
            id_header: Some("x-shop-token".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("id_header"),
        "{}",
        refused.message()
    );
    // Senders pick the change up from their live configuration within
    // moments: fire until a request shows it (each waits for its own head).
    let mut fired = 1;
    herald_tests::eventually(FINAL, "the default id header after the update", || {
        fired += 1;
        let (env, parts) = (&env, &parts);
        let n = fired;
        async move {
            env.fire_json("order.paid", r#"{"n":2}"#).await;
            let heads = parts.wait_for(n, FINAL).await;
            let last = &heads[n - 1];
            last.contains("\r\nwebhook-id: ") && !last.contains("PS-WEBHOOK_EVENT-ID")
        }
    })
    .await;
}

/// Sending W3C `traceparent` is a webhook setting, off unless asked for:
/// the Admin API saves it, shows it and changes it like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_opts_in_to_trace_context_and_out_again() {
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let mut admin = env.admin().await;
    let get = |id: &str| herald_proto::v1::GetWebhookRequest { id: id.to_owned() };
    let plain = admin
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "order.paid".into(),
            url: "https://shop.example/plain".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!plain.trace_context, "off by default");

    let created = admin
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "order.paid".into(),
            url: "https://shop.example/traced".into(),
            trace_context: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.trace_context);
    let fetched = admin
        .get_webhook(get(&created.id))
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.trace_context);

    // An update that does not name it keeps it.
    admin
        .update_webhook(UpdateWebhookRequest {
            id: created.id.clone(),
            description: Some("traced".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let kept = admin
        .get_webhook(get(&created.id))
        .await
        .unwrap()
        .into_inner();
    assert!(kept.trace_context, "unset in an update keeps the value");

    let updated = admin
        .update_webhook(UpdateWebhookRequest {
            id: created.id.clone(),
            trace_context: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.trace_context);
    let fetched = admin
        .get_webhook(get(&created.id))
        .await
        .unwrap()
        .into_inner();
    assert!(!fetched.trace_context);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_disabled_and_invalid_fire_calls_are_refused_and_publish_nothing() {
    let mut env = TestEnv::new("0s,1s").await.unwrap();
    env.start_ingest(env.queue.clone(), |c| c.max_payload_bytes = 1024)
        .await
        .unwrap();
    let receiver = Receiver::ok().await;
    let hook = env.webhook("known", "POST", &receiver.url("/k")).await;
    env.webhook("off", "POST", &receiver.url("/off")).await;
    let off = env
        .admin()
        .await
        .list_webhooks(herald_proto::v1::ListWebhooksRequest {
            event: Some("off".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .webhooks
        .remove(0);
    env.admin()
        .await
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: off.id.clone(),
            enabled: false,
        })
        .await
        .unwrap();

    let mut ingest = env.ingest().await;
    let call = |event: &str, data: Option<fire_request::Data>| FireRequest {
        event: event.into(),
        data,
        ..Default::default()
    };
    let json = |s: &str| Some(fire_request::Data::Json(s.into()));
    let cases = vec![
        (
            call("nope", json("{}")),
            tonic::Code::NotFound,
            "not configured",
        ),
        (
            call("off", json("{}")),
            tonic::Code::FailedPrecondition,
            "disabled",
        ),
        (
            call("known", json("{\"a\":")),
            tonic::Code::InvalidArgument,
            "not valid JSON",
        ),
        (call("", json("{}")), tonic::Code::InvalidArgument, "event"),
        (
            call("known", Some(fire_request::Data::Text("x".repeat(1025)))),
            tonic::Code::InvalidArgument,
            "limit",
        ),
        (
            call("has space", json("{}")),
            tonic::Code::InvalidArgument,
            "whitespace",
        ),
        (
            FireRequest {
                tenant: "other-shop".into(),
                ..call("known", json("{}"))
            },
            tonic::Code::NotFound,
            "other-shop",
        ),
    ];
    for (request, code, needle) in cases {
        let status = ingest
            .fire(request.clone())
            .await
            .expect_err(&format!("{request:?} must fail"));
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{request:?}: message {:?} lacks {needle:?}",
            status.message()
        );
    }

    // Admin validation names the field.
    let mut admin = env.admin().await;
    for (request, field) in [
        (
            herald_proto::v1::CreateWebhookRequest {
                event: "e".into(),
                url: "ftp://x".into(),
                ..Default::default()
            },
            "url",
        ),
        (
            herald_proto::v1::CreateWebhookRequest {
                event: "e".into(),
                url: "https://x.example".into(),
                method: "TRACE".into(),
                ..Default::default()
            },
            "method",
        ),
        (
            herald_proto::v1::CreateWebhookRequest {
                event: "".into(),
                url: "https://x.example".into(),
                ..Default::default()
            },
            "event",
        ),
    ] {
        let status = admin.create_webhook(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{status:?}");
    }
    let status = admin
        .update_webhook(UpdateWebhookRequest {
            id: hook.id.clone(),
            timeout_ms: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = admin
        .get_webhook(herald_proto::v1::GetWebhookRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Nothing was published and the configuration did not change.
    assert_eq!(env.queued_messages().await, 0);
    let listed = admin
        .list_webhooks(herald_proto::v1::ListWebhooksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.webhooks.len(), 2);
    assert!(receiver.requests().is_empty());

    // ListEvents shows configured events, without header values.
    let events = ingest
        .list_events(herald_proto::v1::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = events.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, vec!["known", "off"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_disabled_between_attempts_is_cancelled() {
    let env = TestEnv::start("0s,1500ms").await.unwrap();
    let receiver = Receiver::start(|_, _| Reply::status(500)).await;
    let hook = env.webhook("cancel.me", "POST", &receiver.url("/c")).await;
    let ids = env.fire_json("cancel.me", "{}").await;
    let id = ids[0].clone();
    receiver.wait_for(1, FINAL).await;
    eventually(FINAL, "attempt 1 recorded", || async {
        env.attempts(&id).await.len() == 1
    })
    .await;
    env.admin()
        .await
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: hook.id.clone(),
            enabled: false,
        })
        .await
        .unwrap();

    let row = env.wait_final(&id, FINAL).await;
    assert_eq!(row.state, "cancelled");
    assert_eq!(row.attempts, 1, "the cancelled attempt was not made");
    assert!(row.last_error.unwrap().contains("disabled"));
    assert_eq!(receiver.requests().len(), 1, "no request after disabling");
    assert_eq!(env.attempts(&id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_are_seen_without_restart() {
    let env = TestEnv::start("0s").await.unwrap();
    let old = Receiver::ok().await;
    let new = Receiver::ok().await;
    let hook = env.webhook("moved", "POST", &old.url("/old")).await;
    // Changed after `moved`, it shows when the sender has seen the change.
    let probe = Receiver::ok().await;
    let probe_hook = env
        .webhook("moved.probe", "POST", &probe.url("/before"))
        .await;
    let first = env.fire_json("moved", "{}").await;
    env.wait_final(&first[0], FINAL).await;

    // A change through the Admin API reaches the sender.
    for (id, url) in [
        (&hook.id, new.url("/new")),
        (&probe_hook.id, probe.url("/after")),
    ] {
        env.admin()
            .await
            .update_webhook(UpdateWebhookRequest {
                id: id.clone(),
                url: Some(url),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    sender_sends_to(&env, "moved.probe", &probe.url("/after")).await;
    let second = env.fire_json("moved", "{}").await;
    assert_eq!(
        env.wait_final(&second[0], FINAL).await.target_url,
        new.url("/new")
    );
    assert_eq!(old.requests().len(), 1);
    assert_eq!(new.requests().len(), 1);

    // A webhook written straight into Postgres (another ingest replica, a
    // migration script) is picked up by the running services within ~1 s.
    let started = std::time::Instant::now();
    let db = env.db().await;
    db.execute(
        "INSERT INTO webhooks (id, tenant, event, method, url) VALUES ($1, '', 'sql.made', 'POST', $2)",
        &[&uuid::Uuid::now_v7(), &new.url("/sql")],
    ).await.unwrap();
    // Ingest: its copy, which Fire reads, lists the event. Asked with
    // ListEvents rather than Fire, so that no delivery is made before the
    // sender may have seen the webhook (it would cancel it as deleted).
    let ingest = env.ingest().await;
    eventually(
        Duration::from_secs(3),
        "ingest sees the SQL-made event",
        || {
            let mut ingest = ingest.clone();
            async move {
                ingest
                    .list_events(herald_proto::v1::ListEventsRequest::default())
                    .await
                    .is_ok_and(|events| {
                        events
                            .into_inner()
                            .events
                            .iter()
                            .any(|e| e.event == "sql.made")
                    })
            }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "seen after {:?}",
        started.elapsed()
    );
    // The sender: the probe, changed in SQL after the insert, shows it.
    let probe_id: uuid::Uuid = probe_hook.id.parse().unwrap();
    db.execute(
        "UPDATE webhooks SET url = $1 WHERE id = $2",
        &[&probe.url("/sql-seen"), &probe_id],
    )
    .await
    .unwrap();
    sender_sends_to(&env, "moved.probe", &probe.url("/sql-seen")).await;
    let made = env.fire_json("sql.made", "{}").await;
    let row = env.wait_final(&made[0], FINAL).await;
    assert_eq!(
        (row.state.as_str(), row.target_url.as_str()),
        ("succeeded", new.url("/sql").as_str())
    );
    new.wait_for(2, FINAL).await;
}

/// Fires `event` until one of its deliveries goes to `url`: proof that the
/// sender's copy of the configuration holds that change and, since it
/// reloads the whole configuration, every change committed before it.
async fn sender_sends_to(env: &TestEnv, event: &str, url: &str) {
    eventually(
        FINAL,
        "the sender sees the changed configuration",
        || async {
            let probes = env.fire_json(event, "{}").await;
            env.wait_final(&probes[0], FINAL).await.target_url == url
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_unavailable_and_ingest_recovers_by_itself() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let proxy = herald_tests::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut via_proxy = env.queue.clone();
    via_proxy.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr).into();
    via_proxy.confirm_timeout = Duration::from_secs(2);
    via_proxy.connect_timeout = Duration::from_secs(2);
    env.start_ingest(via_proxy, |_| {}).await.unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let receiver = Receiver::ok().await;
    env.webhook("resilient", "POST", &receiver.url("/r")).await;
    let before = env.fire_json("resilient", r#"{"n":1}"#).await;
    env.wait_final(&before[0], FINAL).await;

    proxy.down();
    let mut ingest = env.ingest().await;
    for _ in 0..3 {
        let status = ingest
            .fire(FireRequest {
                event: "resilient".into(),
                data: Some(fire_request::Data::Json("{}".into())),
                ..Default::default()
            })
            .await
            .expect_err("no OK while the broker is unreachable");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("broker"), "{status:?}");
    }

    proxy.up();
    // The first calls after the broker is back may still fail while ingest
    // reconnects; no restart is needed.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        match ingest
            .fire(FireRequest {
                event: "resilient".into(),
                data: Some(fire_request::Data::Json(r#"{"n":2}"#.into())),
                ..Default::default()
            })
            .await
        {
            Ok(reply) => break reply.into_inner().delivery_ids,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "Fire did not recover: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(env.wait_final(&after[0], FINAL).await.state, "succeeded");
    assert_eq!(
        receiver.requests().len(),
        2,
        "only confirmed deliveries were sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_one_queue_deliver_each_delivery_once() {
    let env = TestEnv::start("0s").await.unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let receiver = Receiver::ok().await;
    env.webhook("bulk", "POST", &receiver.url("/bulk")).await;
    let mut ids = Vec::new();
    let mut ingest = env.ingest().await;
    for n in 0..300 {
        let reply = ingest
            .fire(FireRequest {
                event: "bulk".into(),
                data: Some(fire_request::Data::Json(format!("{{\"n\":{n}}}"))),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.extend(reply.into_inner().delivery_ids);
    }
    receiver.wait_for(300, FINAL).await;
    eventually(FINAL, "all 300 succeeded", || async {
        env.db()
            .await
            .query_one(
                "SELECT count(*) FROM deliveries WHERE state = 'succeeded'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 300)
            .unwrap_or(false)
    })
    .await;
    // Both senders settle what they hold and stop; a delivery that was not
    // acked would now be back in the work queue, waiting to be sent again.
    env.stop().await;
    assert_eq!(env.queued_messages().await, 0, "nothing is redelivered");
    let got = receiver.requests();
    assert_eq!(got.len(), 300, "no duplicates");
    let mut seen: Vec<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 300);
    assert_eq!(env.attempt_rows().await, 300);
}

/// Publishes raw bytes where ingest publishes a first attempt (the work
/// exchange), as a broken or foreign client could.
async fn publish_raw(env: &TestEnv, body: &[u8]) {
    let connection = herald_queue::connect(&env.queue, "test-raw-publish")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let route = env.queue.topology().route_after(Duration::ZERO);
    let confirm = channel
        .basic_publish(
            route.exchange.as_str().into(),
            route.routing_key.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack());
    let _ = connection.close(200, "done".into()).await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_no_sender_can_process_go_to_the_dead_letter_queue() {
    let env = TestEnv::start("0s,100ms").await.unwrap();
    let receiver = Receiver::ok().await;
    let hook = env
        .webhook("order.created", "POST", &receiver.url("/hooks"))
        .await;
    let webhook_id = uuid::Uuid::parse_str(&hook.id).unwrap();

    // Not protobuf at all: wire type 7 does not exist.
    let garbage = [0x0f_u8; 8];
    // A delivery message, but with an event name Fire would have refused
    // (and one the dashboards' index could not take if it were long).
    let delivery_id = uuid::Uuid::now_v7();
    let invalid = DeliveryMessage {
        ordering_key: Default::default(),
        delivery_id: delivery_id.as_bytes().to_vec(),
        tenant: String::new(),
        event: "order created".into(),
        webhook_id: webhook_id.as_bytes().to_vec(),
        attempt: 1,
        fired_at_unix_ms: now_ms(),
        data: Some(delivery_message::Data::Json(r#"{"a":1}"#.into())),
        url: receiver.url("/hooks"),
        method: "POST".into(),
        resent_from: Vec::new(),
    };
    publish_raw(&env, &garbage).await;
    publish_raw(&env, &herald_queue::encode(&invalid)).await;

    let letters = env.wait_dead_letters(2, FINAL).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let garbage_letter = letters
        .iter()
        .find(|l| l.message_id.is_none())
        .expect("the undecodable message is kept");
    assert_eq!(garbage_letter.body, garbage, "kept byte for byte");
    let reason = garbage_letter.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("not a delivery message"), "{reason}");

    let invalid_letter = letters
        .iter()
        .find(|l| l.message_id.as_deref() == Some(delivery_id.to_string().as_str()))
        .expect("the invalid message is kept under its delivery id");
    assert_eq!(
        herald_queue::decode(&invalid_letter.body).unwrap(),
        invalid,
        "kept whole"
    );
    let reason = invalid_letter.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("event"), "{reason}");

    // Moved aside, not sent, not recorded, not redelivered: once the sender
    // has settled both messages and stopped, none is left in any queue.
    env.stop().await;
    assert!(receiver.requests().is_empty());
    assert_eq!(env.attempt_rows().await, 0);
    assert_eq!(env.queued_messages().await, 0);
    assert!(env.take_dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_postgres_refuses_is_sent_once_per_attempt_then_moved_to_the_dead_letter_queue() {
    let env = TestEnv::start("0s,100ms,100ms").await.unwrap();
    // A rule this test's database adds: Postgres now refuses, as data, the
    // record of any delivery of these events (as it would refuse a value a
    // future constraint or an index limit does not allow).
    env.db()
        .await
        .batch_execute(
            "ALTER TABLE deliveries ADD CONSTRAINT refuse_poison CHECK (event NOT LIKE 'poison.%')",
        )
        .await
        .unwrap();
    let ok = Receiver::ok().await;
    let failing = Receiver::start(|_, _| Reply::status(500)).await;
    env.webhook("poison.ok", "POST", &ok.url("/ok")).await;
    env.webhook("poison.fail", "POST", &failing.url("/fail"))
        .await;
    let ok_id = env.fire_json("poison.ok", r#"{"n": 1}"#).await.remove(0);
    let fail_id = env.fire_json("poison.fail", r#"{"n": 2}"#).await.remove(0);

    let letters = env.wait_dead_letters(2, FINAL).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (id, attempt, json) in [(&ok_id, 1, r#"{"n": 1}"#), (&fail_id, 3, r#"{"n": 2}"#)] {
        let letter = letters
            .iter()
            .find(|l| l.message_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("delivery {id} is in the dead-letter queue: {letters:?}"));
        let reason = letter.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("refuse_poison") && reason.contains("23514"),
            "the reason is what Postgres said: {reason}"
        );
        let message = herald_queue::decode(&letter.body).unwrap();
        assert_eq!(
            message.attempt, attempt,
            "the message of the last attempt is kept"
        );
        assert_eq!(
            message.data,
            Some(delivery_message::Data::Json(json.into())),
            "with its data, so that it can be sent again"
        );
    }

    // Each attempt was sent once, not again and again: once the sender has
    // settled both deliveries and stopped, none is left in any queue.
    env.stop().await;
    assert_eq!(ok.requests().len(), 1);
    assert_eq!(
        failing.requests().len(),
        3,
        "one request per scheduled attempt"
    );
    assert!(env.delivery(&ok_id).await.is_none(), "nothing was recorded");
    assert_eq!(env.queued_messages().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_sent_again_once_the_cause_is_fixed() {
    let env = TestEnv::start("0s,100ms").await.unwrap();
    let db = env.db().await;
    db.batch_execute(
        "ALTER TABLE deliveries ADD CONSTRAINT refuse_poison CHECK (event NOT LIKE 'poison.%')",
    )
    .await
    .unwrap();
    let receiver = Receiver::ok().await;
    env.webhook("poison.ok", "POST", &receiver.url("/ok")).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.extend(env.fire_json("poison.ok", &format!(r#"{{"n":{n}}}"#)).await);
    }
    eventually(FINAL, "three dead letters", || async {
        env.dead_letter_count().await == 3
    })
    .await;

    let (url, prefix) = (env.queue.amqp_url.expose(), &env.queue.prefix);
    let listed = herald_cli::cmd::dead_letters::list(url, prefix, 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for letter in &listed {
        assert!(
            ids.contains(letter.delivery_id.as_ref().unwrap()),
            "{letter:?}"
        );
        assert_eq!((letter.event.as_str(), letter.attempt), ("poison.ok", 1));
        assert!(letter.reason.contains("refuse_poison"), "{letter:?}");
    }
    assert_eq!(
        herald_cli::cmd::dead_letters::list(url, prefix, 2)
            .await
            .unwrap()
            .len(),
        2,
        "--limit"
    );
    assert_eq!(env.dead_letter_count().await, 3, "listing keeps them all");

    // The cause is fixed; the operator sends them again.
    db.batch_execute("ALTER TABLE deliveries DROP CONSTRAINT refuse_poison")
        .await
        .unwrap();
    assert_eq!(
        herald_cli::cmd::dead_letters::requeue(url, prefix, 1, 100)
            .await
            .unwrap(),
        3
    );
    for id in &ids {
        let row = env.wait_final(id, FINAL).await;
        assert_eq!(row.state, "succeeded", "{id}");
        assert_eq!(env.attempts(id).await.len(), 1);
    }
    assert_eq!(env.dead_letter_count().await, 0);
    assert_eq!(
        receiver.requests().len(),
        6,
        "each sent once before it was moved aside and once after"
    );
    assert_eq!(env.queued_messages().await, 0);
}
