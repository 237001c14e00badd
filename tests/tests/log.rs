//! The delivery log through the Admin API: listing with filters and cursor
//! pagination, per-webhook summaries, resend and replay (linked, idempotent
//! per request id), and test sends that skip the schedule's first delay.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_proto::v1::{
    GetDeliveryRequest, GetWebhookSummaryRequest, ListDeliveriesRequest, ReplayFailedRequest,
    ResendDeliveryRequest, SendTestEventRequest, UpdateWebhookRequest, send_test_event_request,
};
use herald_tests::{Receiver, Reply, TestEnv, eventually};
use tonic::Code;
use uuid::Uuid;

const FINAL: Duration = Duration::from_secs(30);

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Inserts a delivery row as the sender would have written it.
#[allow(clippy::too_many_arguments)]
async fn insert_delivery(
    db: &tokio_postgres::Client,
    id: Uuid,
    tenant: &str,
    event: &str,
    webhook_id: Uuid,
    fired_at_ms: i64,
    state: &str,
) {
    db.execute(
        "INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, payload, \
             payload_kind, fired_at, state, attempts) \
         VALUES ($1, $2, $3, $4, 'http://127.0.0.1:1/x', 'POST', '{}', 'json', $5, $6, 1)",
        &[
            &id,
            &tenant,
            &event,
            &webhook_id,
            &at_ms(fired_at_ms),
            &state,
        ],
    )
    .await
    .expect("insert delivery");
}

async fn list_all(
    env: &TestEnv,
    request: ListDeliveriesRequest,
) -> (Vec<herald_proto::v1::Delivery>, usize) {
    let mut admin = env.admin().await;
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor = String::new();
    loop {
        let page = admin
            .list_deliveries(ListDeliveriesRequest {
                cursor: cursor.clone(),
                ..request.clone()
            })
            .await
            .expect("list deliveries")
            .into_inner();
        pages += 1;
        assert!(page.deliveries.len() <= 100.max(request.page_size as usize));
        all.extend(page.deliveries);
        if page.next_cursor.is_empty() {
            return (all, pages);
        }
        cursor = page.next_cursor;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages_through_newest_first() {
    let env = TestEnv::start("0s").await.unwrap();
    let db = env.db().await;
    let hook = Uuid::now_v7();
    let other_hook = Uuid::now_v7();
    let base = now_ms() - 3_600_000;
    // 250 deliveries of one webhook; groups of five share their millisecond
    // (as the deliveries of one Fire do), so the id must break the ties.
    let mut expected: Vec<(i64, Uuid)> = Vec::new();
    for i in 0..250_i64 {
        let id = Uuid::new_v4();
        let fired = base + (i / 5) * 1000;
        let state = if i % 10 == 0 { "failed" } else { "succeeded" };
        insert_delivery(&db, id, "shop", "order.created", hook, fired, state).await;
        expected.push((fired, id));
    }
    for i in 0..30_i64 {
        insert_delivery(
            &db,
            Uuid::new_v4(),
            "other",
            "order.paid",
            other_hook,
            base + i * 1000 + 500,
            "pending",
        )
        .await;
    }
    expected.sort_by(|a, b| b.cmp(a));

    let by_webhook = ListDeliveriesRequest {
        webhook_id: Some(hook.to_string()),
        page_size: 100,
        ..Default::default()
    };
    let (listed, pages) = list_all(&env, by_webhook.clone()).await;
    assert_eq!(pages, 3, "250 rows in pages of 100");
    let got: Vec<(i64, Uuid)> = listed
        .iter()
        .map(|d| (d.fired_at_unix_ms, d.id.parse().unwrap()))
        .collect();
    assert_eq!(got, expected, "every row once, no gaps, newest first");
    assert!(listed.iter().all(|d| d.attempt_history.is_empty()));

    // The same through the tenant/event index, and a page size of 7.
    let (by_event, pages) = list_all(
        &env,
        ListDeliveriesRequest {
            tenant: Some("shop".into()),
            event: Some("order.created".into()),
            page_size: 7,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_event.len(), 250);
    assert_eq!(pages, 36);
    let unique: HashSet<&str> = by_event.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(unique.len(), 250);

    // No filter: both webhooks; the default page size is 100.
    let first = env
        .admin()
        .await
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deliveries.len(), 100);
    assert!(!first.next_cursor.is_empty());
    let (everything, _) = list_all(&env, ListDeliveriesRequest::default()).await;
    assert_eq!(everything.len(), 280);

    // State and time range.
    let (failed, _) = list_all(
        &env,
        ListDeliveriesRequest {
            webhook_id: Some(hook.to_string()),
            state: Some("failed".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failed.len(), 25);
    assert!(failed.iter().all(|d| d.state == "failed"));
    let (ranged, _) = list_all(
        &env,
        ListDeliveriesRequest {
            tenant: Some("shop".into()),
            from_unix_ms: Some(base + 10_000),
            to_unix_ms: Some(base + 20_000),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ranged.len(), 50, "fired in [from, to): ten seconds of five");
    assert!(
        ranged
            .iter()
            .all(|d| d.fired_at_unix_ms >= base + 10_000 && d.fired_at_unix_ms < base + 20_000)
    );
    let (other, _) = list_all(
        &env,
        ListDeliveriesRequest {
            tenant: Some("other".into()),
            state: Some("pending".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(other.len(), 30);

    // Bad input is refused with a message naming the field.
    let mut admin = env.admin().await;
    for (request, field) in [
        (
            ListDeliveriesRequest {
                cursor: "garbage".into(),
                ..Default::default()
            },
            "cursor",
        ),
        (
            ListDeliveriesRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListDeliveriesRequest {
                state: Some("done".into()),
                ..Default::default()
            },
            "state",
        ),
        (
            ListDeliveriesRequest {
                webhook_id: Some("nope".into()),
                ..Default::default()
            },
            "webhook_id",
        ),
    ] {
        let status = admin.list_deliveries(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_counts_states_and_attempt_percentiles() {
    let env = TestEnv::start("0s").await.unwrap();
    let db = env.db().await;
    let hook = Uuid::now_v7();
    let base = now_ms() - 60_000;
    let states = [
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "failed",
        "pending",
        "cancelled",
    ];
    for (i, state) in states.iter().enumerate() {
        let id = Uuid::new_v4();
        let i = i64::try_from(i).unwrap();
        insert_delivery(&db, id, "", "order.created", hook, base + i, state).await;
        if *state != "cancelled" {
            // Attempts of 10, 20, ..., 90 ms.
            let duration = i32::try_from((i + 1) * 10).unwrap();
            db.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url) \
                 VALUES ($1, 1, now(), $2, 'http://127.0.0.1:1/x')",
                &[&id, &duration],
            )
            .await
            .unwrap();
        }
    }
    // Outside the range asked for below, and another webhook.
    insert_delivery(
        &db,
        Uuid::new_v4(),
        "",
        "order.created",
        hook,
        base - 10_000,
        "failed",
    )
    .await;
    insert_delivery(
        &db,
        Uuid::new_v4(),
        "",
        "order.created",
        Uuid::now_v7(),
        base,
        "failed",
    )
    .await;

    let summary = env
        .admin()
        .await
        .get_webhook_summary(GetWebhookSummaryRequest {
            webhook_id: hook.to_string(),
            from_unix_ms: Some(base),
            to_unix_ms: Some(base + 1_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.webhook_id, hook.to_string());
    assert_eq!(
        (
            summary.fired,
            summary.succeeded,
            summary.failed,
            summary.pending,
            summary.cancelled
        ),
        (10, 6, 2, 1, 1)
    );
    assert!((summary.success_rate - 0.75).abs() < 1e-9, "{summary:?}");
    assert_eq!(summary.p50_attempt_ms, 50, "{summary:?}");
    assert_eq!(summary.p95_attempt_ms, 86, "90 * 0.95 + 10 * 0.05 = 86");

    let unbounded = env
        .admin()
        .await
        .get_webhook_summary(GetWebhookSummaryRequest {
            webhook_id: hook.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((unbounded.fired, unbounded.failed), (11, 3));

    let empty = env
        .admin()
        .await
        .get_webhook_summary(GetWebhookSummaryRequest {
            webhook_id: Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.fired, 0);
    assert_eq!(empty.success_rate, 0.0);
    assert_eq!((empty.p50_attempt_ms, empty.p95_attempt_ms), (0, 0));
}

async fn resent_from(env: &TestEnv, id: &str) -> Option<Uuid> {
    env.db()
        .await
        .query_one(
            "SELECT resent_from FROM deliveries WHERE id = $1",
            &[&id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_creates_a_linked_delivery_once_per_request_id() {
    let env = TestEnv::start("0s,50ms").await.unwrap();
    let receiver = Receiver::ok().await;
    env.webhook("order.created", "POST", &receiver.url("/hook"))
        .await;
    let original = env
        .fire_json("order.created", r#"{"order_id":7}"#)
        .await
        .remove(0);
    assert_eq!(env.wait_final(&original, FINAL).await.state, "succeeded");

    let mut admin = env.admin().await;
    let status = admin
        .resend_delivery(ResendDeliveryRequest {
            id: original.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("request_id"), "{status:?}");

    // A double click: two concurrent calls with one request id.
    let request = ResendDeliveryRequest {
        id: original.clone(),
        request_id: Uuid::new_v4().to_string(),
    };
    let (mut a, mut b) = (env.admin().await, env.admin().await);
    let (first, second) = tokio::join!(
        a.resend_delivery(request.clone()),
        b.resend_delivery(request.clone())
    );
    let first = first.unwrap().into_inner().delivery_ids;
    let second = second.unwrap().into_inner().delivery_ids;
    assert_eq!(first.len(), 1);
    assert_eq!(first, second, "the second call answers the recorded id");
    let resent = &first[0];
    assert_ne!(resent, &original);

    let row = env.wait_final(resent, FINAL).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(
        resent_from(&env, resent).await,
        Some(original.parse().unwrap())
    );
    let shown = admin
        .get_delivery(GetDeliveryRequest { id: resent.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.resent_from, original);
    assert_eq!(shown.event, "order.created");
    let got = receiver.for_delivery(resent);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_ref(), br#"{"order_id":7}"#);

    // Later repeats answer the same id and send nothing.
    let again = admin
        .resend_delivery(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.delivery_ids, first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 2, "original + one resend");
    assert_eq!(env.queued_messages().await, 0);

    // The same request id for a replay is a mistake.
    let status = admin
        .replay_failed(ReplayFailedRequest {
            webhook_id: shown.webhook_id.clone(),
            from_unix_ms: Some(0),
            to_unix_ms: Some(now_ms()),
            request_id: request.request_id.clone(),
            include_cancelled: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Without its data (payload retention), a delivery cannot be resent.
    env.db()
        .await
        .execute(
            "UPDATE deliveries SET payload = NULL WHERE id = $1",
            &[&original.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap();
    let status = admin
        .resend_delivery(ResendDeliveryRequest {
            id: original.clone(),
            request_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let status = admin
        .resend_delivery(ResendDeliveryRequest {
            id: Uuid::now_v7().to_string(),
            request_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_the_failed_deliveries_of_a_range() {
    let env = TestEnv::start("0s,50ms").await.unwrap();
    let failing = Receiver::start(|_, _| Reply::status(500)).await;
    let working = Receiver::ok().await;
    let hook = env
        .webhook("order.paid", "POST", &failing.url("/down"))
        .await;
    let other = env
        .webhook("order.paid", "POST", &working.url("/fine"))
        .await;
    let from = now_ms() - 1;
    let mut failed = Vec::new();
    for n in 0..3 {
        let ids = env
            .fire_json("order.paid", &format!(r#"{{"n":{n}}}"#))
            .await;
        assert_eq!(ids.len(), 2);
        for id in ids {
            let row = env.wait_final(&id, FINAL).await;
            if row.state == "failed" {
                assert_eq!(row.attempts, 2, "every attempt of the schedule failed");
                failed.push(id);
            }
        }
    }
    assert_eq!(
        failed.len(),
        3,
        "only the first webhook's deliveries failed"
    );
    let to = now_ms() + 1;

    // The target is fixed; every sender sees the new URL within a second.
    env.admin()
        .await
        .update_webhook(UpdateWebhookRequest {
            id: hook.id.clone(),
            url: Some(working.url("/fixed")),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = working.requests().len();

    let request = ReplayFailedRequest {
        webhook_id: hook.id.clone(),
        from_unix_ms: Some(from),
        to_unix_ms: Some(to),
        request_id: Uuid::new_v4().to_string(),
        include_cancelled: false,
    };
    let replayed = env
        .admin()
        .await
        .replay_failed(request.clone())
        .await
        .unwrap()
        .into_inner()
        .delivery_ids;
    assert_eq!(replayed.len(), 3);
    let mut originals = HashSet::new();
    for id in &replayed {
        assert_eq!(env.wait_final(id, FINAL).await.state, "succeeded");
        originals.insert(resent_from(&env, id).await.unwrap().to_string());
        let got = working.for_delivery(id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uri, "/fixed");
    }
    assert_eq!(originals, failed.iter().cloned().collect::<HashSet<_>>());

    // A repeat answers the same ids and publishes nothing new.
    let again = env
        .admin()
        .await
        .replay_failed(request)
        .await
        .unwrap()
        .into_inner()
        .delivery_ids;
    assert_eq!(again, replayed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(working.requests().len(), before + 3);
    assert_eq!(env.queued_messages().await, 0);
    let _ = other;

    // A range without failed deliveries replays nothing; a missing request
    // id is refused.
    let none = env
        .admin()
        .await
        .replay_failed(ReplayFailedRequest {
            webhook_id: hook.id.clone(),
            from_unix_ms: Some(0),
            to_unix_ms: Some(from),
            request_id: Uuid::new_v4().to_string(),
            include_cancelled: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.delivery_ids.is_empty());
    let status = env
        .admin()
        .await
        .replay_failed(ReplayFailedRequest {
            webhook_id: hook.id.clone(),
            from_unix_ms: Some(0),
            to_unix_ms: Some(to),
            request_id: String::new(),
            include_cancelled: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_send_skips_the_first_delay() {
    let env = TestEnv::start("5s,5s").await.unwrap();
    let receiver = Receiver::ok().await;
    let hook = env
        .webhook("customer.created", "POST", &receiver.url("/test"))
        .await;

    let started = Instant::now();
    let answer = env
        .admin()
        .await
        .send_test_event(SendTestEventRequest {
            webhook_id: hook.id.clone(),
            data: Some(send_test_event_request::Data::Json(
                r#"{"test": true}"#.into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.delivery_ids.len(), 1);
    let id = &answer.delivery_ids[0];
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1_500),
        "arrived after {elapsed:?}; the schedule's first delay is 5 s"
    );
    assert_eq!(got[0].header("webhook-id"), Some(id.as_str()));
    assert_eq!(got[0].body.as_ref(), br#"{"test":true}"#);
    let row = env.wait_final(id, FINAL).await;
    assert_eq!(row.state, "succeeded");
    assert_eq!(row.attempts, 1);
    eventually(Duration::from_secs(5), "test delivery listed", || async {
        env.admin()
            .await
            .list_deliveries(ListDeliveriesRequest {
                webhook_id: Some(hook.id.clone()),
                ..Default::default()
            })
            .await
            .is_ok_and(|r| {
                r.into_inner()
                    .deliveries
                    .iter()
                    .any(|d| &d.id == id && d.event == "customer.created")
            })
    })
    .await;

    let status = env
        .admin()
        .await
        .send_test_event(SendTestEventRequest {
            webhook_id: Uuid::now_v7().to_string(),
            data: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = env
        .admin()
        .await
        .send_test_event(SendTestEventRequest {
            webhook_id: hook.id.clone(),
            data: Some(send_test_event_request::Data::Json("{not json".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// A delivery Fire has just returned is in the log at once, as `scheduled`
/// with its first attempt's time, long before that attempt (the schedule's
/// first delay is a minute here); an id the log does not know gets a message
/// that says what can be the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_delivery_is_in_the_log_as_scheduled_at_once() {
    let env = TestEnv::start("60s").await.unwrap();
    let receiver = Receiver::ok().await;
    let hook = env
        .webhook("order.created", "POST", &receiver.url("/h"))
        .await;
    let fired = SystemTime::now();
    let ids = env.fire_json("order.created", r#"{"n":1}"#).await;
    let answered = Instant::now();
    let mut admin = env.admin().await;
    let deadline = answered + Duration::from_secs(5);
    let found = loop {
        match admin
            .get_delivery(GetDeliveryRequest { id: ids[0].clone() })
            .await
        {
            Ok(d) => break d.into_inner(),
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "not in the log within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("in the log {:?} after Fire answered", answered.elapsed());
    let d = found;
    assert_eq!(d.state, "scheduled");
    assert_eq!(d.attempts, 0);
    assert!(d.attempt_history.is_empty());
    assert_eq!(d.webhook_id, hook.id);
    assert_eq!(d.target_url, receiver.url("/h"));
    let fired_ms = i64::try_from(fired.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let next = d.next_attempt_at_unix_ms.expect("the first attempt's time");
    assert!(
        (fired_ms + 59_000..fired_ms + 65_000).contains(&next),
        "next attempt {next} is not about 60 s after {fired_ms}"
    );
    let listed = admin
        .list_deliveries(ListDeliveriesRequest {
            state: Some("scheduled".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.deliveries.iter().map(|d| &d.id).collect::<Vec<_>>(),
        vec![&ids[0]]
    );
    assert!(receiver.requests().is_empty(), "no attempt yet");

    let unknown = Uuid::now_v7().to_string();
    let status = admin
        .get_delivery(GetDeliveryRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    for says in [
        "is not in the log",
        "fired at",
        "within about a second",
        "HERALD_RETENTION_DAYS",
    ] {
        assert!(
            status.message().contains(says),
            "{says}: {}",
            status.message()
        );
    }
    let status = admin
        .get_delivery(GetDeliveryRequest {
            id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("UUIDv7"), "{}", status.message());
}

/// The sender's row replaces the scheduled one: the delivery ends as the
/// sender recorded it, with its whole history, and ingest's clean-up removes
/// the scheduled row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_delivery_ends_as_the_sender_recorded_it() {
    let env = TestEnv::start("300ms,50ms").await.unwrap();
    let receiver = Receiver::start(|_, n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    env.webhook("order.created", "POST", &receiver.url("/h"))
        .await;
    let ids = env.fire_json("order.created", "{}").await;
    let row = env.wait_final(&ids[0], Duration::from_secs(20)).await;
    assert_eq!(row.state, "succeeded");
    let d = env
        .admin()
        .await
        .get_delivery(GetDeliveryRequest { id: ids[0].clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (d.state.as_str(), d.attempt_history.len()),
        ("succeeded", 2)
    );
    let id: Uuid = ids[0].parse().unwrap();
    eventually(Duration::from_secs(10), "the scheduled row removed", || {
        let env = &env;
        async move {
            let n: i64 = env
                .db()
                .await
                .query_one(
                    "SELECT count(*) FROM scheduled_deliveries WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
        }
    })
    .await;
}
