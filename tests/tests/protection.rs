//! Protecting receivers (docs/protection.md), with real `herald-sender`
//! processes sharing one queue: a per-webhook rate limit that holds for the
//! whole deployment while senders die and join.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_proto::v1::{CreateWebhookRequest, RateLimit};
use herald_tests::TestEnv;
use herald_tests::load::{
    assert_all_succeeded, fire_closed_loop, recorded, requests_per_delivery, wait_all_final,
};
use herald_tests::process::SenderProcess;
use herald_tests::receiver::{Receiver, Reply};
use uuid::Uuid;

/// The most requests that arrived within any `window`, given their times.
fn busiest_window(mut times: Vec<Instant>, window: Duration) -> usize {
    times.sort();
    let mut start = 0;
    let mut most = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[test]
fn the_busiest_window_counts_what_it_should() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let times = vec![
        at(0),
        at(500),
        at(9_999),
        at(10_000),
        at(10_001),
        at(19_000),
    ];
    assert_eq!(busiest_window(times, Duration::from_secs(10)), 4);
    assert_eq!(busiest_window(vec![], Duration::from_secs(10)), 0);
}

/// 2,000 deliveries to a webhook limited to 50/s, three senders; half-way
/// one sender is killed (SIGKILL) and another one started. No 10-second
/// window of the receiver's log holds more than 550 requests (the limit ×
/// 10 × 1.1), every delivery succeeds, and the whole takes within 20 % of
/// the 40 s the limit makes it last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_senders_that_die_and_join() {
    const EVENTS: usize = 2_000;
    const PER_SECOND: u32 = 50;
    let started = Instant::now();
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let receiver = Receiver::start(|_, _| Reply::status(200)).await;
    env.admin()
        .await
        .create_webhook(CreateWebhookRequest {
            event: "sale.item".into(),
            method: "POST".into(),
            url: receiver.url("/limited"),
            rate_limit: Some(RateLimit {
                per_second: PER_SECOND,
                burst: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let env = Arc::new(env);
    let mut senders = Vec::new();
    for name in ["sender-1", "sender-2", "sender-3"] {
        senders.push(SenderProcess::start(&env, name, &[]).await.unwrap());
    }
    eprintln!("set-up with 3 senders: {:.1?}", started.elapsed());

    let firing = Instant::now();
    let fired = fire_closed_loop(&env, "sale.item", EVENTS, 32).await;
    assert!(
        fired.unavailable == 0 && fired.other.is_empty(),
        "{fired:?}"
    );
    let ids = fired.confirmed;
    assert_eq!(ids.len(), EVENTS);
    eprintln!("fired {EVENTS} in {:.1?}", firing.elapsed());

    // Half-way, one sender dies without a word and a new one joins.
    receiver.wait_for(EVENTS / 2, Duration::from_secs(60)).await;
    senders[1].sigkill().unwrap();
    eprintln!("sender-2 killed at {:.1?}", firing.elapsed());
    senders.push(SenderProcess::start(&env, "sender-4", &[]).await.unwrap());
    eprintln!("sender-4 ready at {:.1?}", firing.elapsed());

    wait_all_final(&env, &ids, Duration::from_secs(90)).await;
    let took = firing.elapsed();
    assert_all_succeeded(&ids, &recorded(&env, &ids).await);
    let requests = receiver.requests();
    let per_id = requests_per_delivery(&receiver);
    assert_eq!(per_id.len(), EVENTS, "every delivery reached the receiver");
    // A request in flight when its sender was killed is made again by the
    // sender that takes the delivery over (at least once): only those.
    let repeated = requests.len() - EVENTS;
    assert!(repeated <= 20, "{repeated} requests were repeated");

    let busiest = busiest_window(
        requests.iter().map(|r| r.at).collect(),
        Duration::from_secs(10),
    );
    let allowed = usize::try_from(PER_SECOND * 10 * 11 / 10).unwrap();
    eprintln!(
        "{} requests in {took:.1?}; busiest 10 s window: {busiest} (allowed {allowed}); {repeated} repeated",
        requests.len()
    );
    assert!(busiest <= allowed, "{busiest} requests within 10 s");
    let expected = Duration::from_secs_f64(EVENTS as f64 / f64::from(PER_SECOND));
    assert!(
        took <= expected.mul_f64(1.2),
        "{EVENTS} deliveries at {PER_SECOND}/s took {took:.1?}, over 20 % more than {expected:?}"
    );
}

/// The Admin API sets, shows, keeps and removes a webhook's rate limit.
#[tokio::test]
async fn a_rate_limit_is_set_kept_and_removed_over_the_api() {
    use herald_proto::v1::{GetWebhookRequest, UpdateWebhookRequest};
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let mut admin = env.admin().await;
    let limit = |per_second, burst| Some(RateLimit { per_second, burst });
    let created = admin
        .create_webhook(CreateWebhookRequest {
            event: "order.paid".into(),
            url: "https://shop.example/hook".into(),
            rate_limit: limit(50, 0),
            breaker: Some(herald_proto::v1::CircuitBreaker {
                failures: 0,
                cooldown_ms: 5_000,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.rate_limit, limit(50, 10), "default burst: a fifth");
    assert_eq!(
        created.breaker.map(|b| (b.failures, b.cooldown_ms)),
        Some((0, 5_000))
    );
    let get = |id: &str| GetWebhookRequest { id: id.to_owned() };
    let fetched = admin.get_webhook(get(&created.id)).await.unwrap();
    assert_eq!(fetched.into_inner().rate_limit, limit(50, 10));

    let update = |rate_limit| UpdateWebhookRequest {
        id: created.id.clone(),
        description: Some("limited".into()),
        rate_limit,
        ..Default::default()
    };
    let kept = admin.update_webhook(update(None)).await.unwrap();
    assert_eq!(
        kept.into_inner().rate_limit,
        limit(50, 10),
        "unset keeps it"
    );
    let changed = admin.update_webhook(update(limit(5, 50))).await.unwrap();
    assert_eq!(changed.into_inner().rate_limit, limit(5, 50));
    let removed = admin.update_webhook(update(limit(0, 0))).await.unwrap();
    assert_eq!(
        removed.into_inner().rate_limit,
        None,
        "a rate of 0 removes it"
    );
    let fetched = admin.get_webhook(get(&created.id)).await.unwrap();
    assert_eq!(fetched.into_inner().rate_limit, None);
}

/// A receiver that answers 503 for 60 s under 1,000 deliveries, with three
/// senders, and a healthy webhook beside it.
///
/// The bound on requests the down receiver sees while down: the failures
/// that open the breaker (10), plus what the senders had in flight when it
/// opened (a sender records a failure before it frees the request's slot,
/// so each learns of the opening before it starts another request to that
/// webhook: at most its in-flight limit of 4 each, 12 for three), plus one
/// probe per cool-down (5 s, then 10 s: at most 12 in 60 s). That is 34; the
/// breaker makes the rest of the 1,000 deliveries wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_spares_a_down_receiver_and_its_deliveries() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use herald_proto::v1::CircuitBreaker;
    use herald_tests::load::{fire_paced, wait_all_final};

    const DOWN_EVENTS: usize = 1_000;
    const HEALTHY_EVENTS: usize = 300;
    const DOWN_FOR: Duration = Duration::from_secs(60);
    const IN_FLIGHT: usize = 4;
    let bound = 10 + 3 * IN_FLIGHT + 12;

    let mut env = TestEnv::new("0s,1s,1s,1s,1s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let receiver = Receiver::start({
        let down = down.clone();
        move |request, _| {
            if request.uri.starts_with("/down") && down.load(Ordering::SeqCst) {
                Reply::status(503)
            } else {
                Reply::status(200)
            }
        }
    })
    .await;
    let mut admin = env.admin().await;
    let down_hook = admin
        .create_webhook(CreateWebhookRequest {
            event: "sale.down".into(),
            method: "POST".into(),
            url: receiver.url("/down"),
            breaker: Some(CircuitBreaker {
                failures: 10,
                cooldown_ms: 5_000,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    env.webhook("sale.ok", "POST", &receiver.url("/healthy"))
        .await;
    // The on-call webhook hears of the breaker through Herald itself.
    admin
        .create_webhook(CreateWebhookRequest {
            event: "herald.webhook.*".into(),
            method: "POST".into(),
            url: receiver.url("/on-call"),
            ..Default::default()
        })
        .await
        .unwrap();
    let env = Arc::new(env);
    let in_flight = IN_FLIGHT.to_string();
    let overrides = [
        ("HERALD_BREAKER_MAX_COOLDOWN_MS", "10000"),
        ("HERALD_MAX_IN_FLIGHT_PER_WEBHOOK", in_flight.as_str()),
    ];
    let mut senders = Vec::new();
    for name in ["sender-a", "sender-b", "sender-c"] {
        senders.push(SenderProcess::start(&env, name, &overrides).await.unwrap());
    }

    let went_down = Instant::now();
    let fired = fire_closed_loop(&env, "sale.down", DOWN_EVENTS, 32).await;
    assert!(
        fired.unavailable == 0 && fired.other.is_empty(),
        "{fired:?}"
    );
    let down_ids = fired.confirmed;
    // The healthy webhook gets 10/s for 30 s meanwhile.
    let healthy = fire_paced(&env, "sale.ok", HEALTHY_EVENTS, 10).await;
    assert_eq!(healthy.confirmed.len(), HEALTHY_EVENTS, "{healthy:?}");
    let healthy_fired = Instant::now();
    let healthy_count = || {
        receiver
            .requests()
            .iter()
            .filter(|r| r.uri.starts_with("/healthy"))
            .count()
    };
    herald_tests::eventually(
        Duration::from_secs(5),
        "the healthy webhook keeps up",
        || async { healthy_count() >= HEALTHY_EVENTS },
    )
    .await;
    eprintln!(
        "healthy: {} received {:.1?} after its last Fire",
        healthy_count(),
        healthy_fired.elapsed()
    );

    let health = shown(&env, &down_hook.id).await.health.unwrap();
    assert_ne!(health.breaker, "closed", "{health:?}");
    assert!(health.opened_at_unix_ms > 0 && health.failing_since_unix_ms > 0);

    // While the breaker is open, Fire publishes the webhook's deliveries
    // straight into a delay queue (no sender has to take and park them):
    // their log rows are due seconds after their Fire, not at once. Fired in
    // small batches until five were seen held, as ingest's view of the
    // breaker is up to a second old and the breaker is half open now and
    // then (its probe).
    let mut later = Vec::new();
    let mut held = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.len() < 5 && Instant::now() < deadline {
        let fired = fire_closed_loop(&env, "sale.down", 5, 5).await;
        assert_eq!(fired.confirmed.len(), 5, "{fired:?}");
        later.extend(fired.confirmed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rows = env
            .db()
            .await
            .query(
                "SELECT id FROM scheduled_deliveries WHERE id = ANY($1) \
                 AND next_attempt_at >= fired_at + interval '4 seconds'",
                &[&later],
            )
            .await
            .unwrap();
        held.extend(rows.iter().map(|row| row.get::<_, Uuid>(0)));
    }
    assert!(
        held.len() >= 5,
        "{} of {} deliveries fired while the breaker was open were held by Fire",
        held.len(),
        later.len()
    );
    let mut down_ids = down_ids;
    down_ids.extend(later);

    tokio::time::sleep(DOWN_FOR.saturating_sub(went_down.elapsed())).await;
    down.store(false, Ordering::SeqCst);
    let while_down = receiver
        .requests()
        .iter()
        .filter(|r| r.uri.starts_with("/down"))
        .count();
    eprintln!(
        "down for {:.1?}: the receiver saw {while_down} requests (bound {bound})",
        went_down.elapsed()
    );
    assert!(while_down <= bound, "{while_down} requests while down");

    wait_all_final(&env, &down_ids, Duration::from_secs(90)).await;
    eprintln!(
        "recovered: all final {:.1?} after it came back",
        went_down.elapsed() - DOWN_FOR
    );
    assert_all_succeeded(&down_ids, &recorded(&env, &down_ids).await);
    let healthy_ids = healthy.confirmed;
    let healthy_recorded = recorded(&env, &healthy_ids).await;
    let retried = assert_all_succeeded(&healthy_ids, &healthy_recorded);
    assert_eq!(
        retried, 0,
        "the healthy webhook's deliveries succeeded at once"
    );
    let health = shown(&env, &down_hook.id).await.health.unwrap();
    assert_eq!(health.breaker, "closed");
    assert_eq!(health.failing_since_unix_ms, 0);

    // One breaker_opened (a failed probe reopens it, which is no news) and
    // one recovered, both about the down webhook.
    let told = || {
        let mut told: Vec<(String, String)> = receiver
            .requests()
            .iter()
            .filter(|r| r.uri.starts_with("/on-call"))
            .map(|r| {
                let data: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let field = |name: &str| data[name].as_str().unwrap_or_default().to_owned();
                (field("type"), field("webhook_id"))
            })
            .collect();
        told.sort();
        told
    };
    herald_tests::eventually(
        Duration::from_secs(10),
        "the on-call webhook is told",
        || async { told().len() >= 2 },
    )
    .await;
    assert_eq!(
        told(),
        vec![
            (
                "herald.webhook.breaker_opened".to_owned(),
                down_hook.id.clone()
            ),
            ("herald.webhook.recovered".to_owned(), down_hook.id.clone()),
        ]
    );
}

/// The webhook as GetWebhook shows it.
async fn shown(env: &TestEnv, id: &str) -> herald_proto::v1::Webhook {
    env.admin()
        .await
        .get_webhook(herald_proto::v1::GetWebhookRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

/// A webhook whose every attempt failed for its window (2 s here) is
/// disabled with its reason; its pending deliveries end cancelled, stay in
/// the log, and are replayed once it is enabled again, which clears the
/// reason and the failure streak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_too_long_is_disabled_then_replayed() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use herald_proto::v1::{ReplayFailedRequest, SetWebhookEnabledRequest};

    let mut env = TestEnv::new("0s,1s,1s,1s,1s,1s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let receiver = Receiver::start({
        let failing = failing.clone();
        move |_, _| {
            Reply::status(if failing.load(Ordering::SeqCst) {
                500
            } else {
                200
            })
        }
    })
    .await;
    let hook = env
        .admin()
        .await
        .create_webhook(CreateWebhookRequest {
            event: "order.paid".into(),
            method: "POST".into(),
            url: receiver.url("/orders"),
            auto_disable_after_s: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hook.auto_disable_after_s, 2);
    env.start_sender(|_| {}).await.unwrap();
    let started = herald_tests::unix_ms_now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(env.fire_json("order.paid", r#"{"n":1}"#).await);
    }

    for id in &ids {
        let row = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(row.state, "cancelled", "{id}: {row:?}");
        assert!(row.attempts >= 2, "{id} was attempted before: {row:?}");
    }
    let disabled = shown(&env, &hook.id).await;
    assert!(!disabled.enabled);
    assert!(
        disabled
            .disabled_reason
            .starts_with("every attempt failed for 2 s"),
        "{}",
        disabled.disabled_reason
    );
    assert!(disabled.disabled_at_unix_ms >= started);
    assert!(disabled.health.unwrap().failing_since_unix_ms >= started);

    failing.store(false, Ordering::SeqCst);
    let mut admin = env.admin().await;
    let enabled = admin
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: hook.id.clone(),
            enabled: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, "", "enabling clears the reason");
    assert_eq!(enabled.disabled_at_unix_ms, 0);
    let health = shown(&env, &hook.id).await.health.unwrap();
    assert_eq!(
        (health.failing_since_unix_ms, health.breaker.as_str()),
        (0, "closed")
    );

    let range = |include_cancelled| ReplayFailedRequest {
        webhook_id: hook.id.clone(),
        from_unix_ms: Some(started - 60_000),
        to_unix_ms: Some(herald_tests::unix_ms_now() + 60_000),
        request_id: format!("replay-{include_cancelled}"),
        include_cancelled,
    };
    let only_failed = admin
        .replay_failed(range(false))
        .await
        .unwrap()
        .into_inner();
    assert!(
        only_failed.delivery_ids.is_empty(),
        "none failed: {only_failed:?}"
    );
    let replayed = admin.replay_failed(range(true)).await.unwrap().into_inner();
    assert_eq!(replayed.delivery_ids.len(), 3, "{replayed:?}");
    for id in &replayed.delivery_ids {
        let row = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(row.state, "succeeded", "{id}: {row:?}");
    }
}

/// A receiver that answers 410 Gone gets its webhook disabled at once: one
/// request, and the delivery's retry is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_disables_the_webhook_at_once() {
    let mut env = TestEnv::new("0s,1s,1s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let receiver = Receiver::start(|_, _| Reply::status(410)).await;
    let hook = env
        .webhook("order.paid", "POST", &receiver.url("/gone"))
        .await;
    env.start_sender(|_| {}).await.unwrap();
    let ids = env.fire_json("order.paid", r#"{"n":1}"#).await;
    let row = env.wait_final(&ids[0], Duration::from_secs(30)).await;
    assert_eq!(row.state, "cancelled", "{row:?}");
    assert_eq!(row.attempts, 1);
    assert_eq!(receiver.requests().len(), 1);
    let disabled = shown(&env, &hook.id).await;
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, "the receiver answered 410 Gone");
}

/// Herald's own events go through Herald to the webhook subscribed to
/// them: one `herald.delivery.failed` per delivery that failed for good and
/// one `herald.webhook.disabled` when the failing webhook is disabled;
/// nothing to a webhook subscribed to `*`, nothing about a webhook to
/// itself, and Fire refuses the `herald.` prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_events_tell_the_on_call_webhook() {
    use std::collections::HashMap;

    use herald_proto::v1::{FireRequest, fire_request};

    let mut env = TestEnv::new("0s,1s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let failing = Receiver::start(|_, _| Reply::status(500)).await;
    let on_call = Receiver::ok().await;
    let everything = Receiver::ok().await;
    let mut admin = env.admin().await;
    let create = |url: String, events: Vec<&str>, auto_disable_after_s| CreateWebhookRequest {
        events: events.into_iter().map(String::from).collect(),
        method: "POST".into(),
        url,
        auto_disable_after_s,
        ..Default::default()
    };
    let hook = admin
        .create_webhook(create(failing.url("/orders"), vec!["order.paid"], 3))
        .await
        .unwrap()
        .into_inner();
    let subscribed = vec!["herald.delivery.failed", "herald.webhook.disabled"];
    admin
        .create_webhook(create(on_call.url("/on-call"), subscribed, 0))
        .await
        .unwrap();
    admin
        .create_webhook(create(everything.url("/all"), vec!["*"], 0))
        .await
        .unwrap();
    env.start_sender(|_| {}).await.unwrap();

    // Events every 400 ms until the failing webhook is disabled (the `*`
    // webhook keeps Fire answering).
    let mut ingest = env.ingest().await;
    let mut ids = Vec::new();
    for n in 0..15 {
        let fired = ingest
            .fire(FireRequest {
                event: "order.paid".into(),
                data: Some(fire_request::Data::Json(format!(r#"{{"n":{n}}}"#))),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.extend(fired.into_inner().delivery_ids);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    herald_tests::eventually(
        Duration::from_secs(20),
        "the failing webhook is disabled",
        || async { !shown(&env, &hook.id).await.enabled },
    )
    .await;
    let mut states = HashMap::new();
    for id in &ids {
        let row = env.wait_final(id, Duration::from_secs(30)).await;
        if row.target_url.contains("/orders") {
            *states.entry(row.state).or_insert(0) += 1;
        }
    }
    let failed = states.get("failed").copied().unwrap_or(0);
    eprintln!("the failing webhook's deliveries: {states:?}");
    assert!(failed >= 1, "{states:?}");

    // Every operational delivery finishes; then the on-call receiver holds
    // exactly what they carried.
    let db = env.db().await;
    herald_tests::eventually(
        Duration::from_secs(30),
        "operational deliveries finish",
        || async {
            let pending: i64 = db
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE event LIKE 'herald.%' \
                 AND state <> 'succeeded'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            let all: i64 = db
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE event LIKE 'herald.%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            pending == 0 && all == i64::try_from(failed).unwrap() + 1
        },
    )
    .await;
    let mut told: HashMap<String, Vec<String>> = HashMap::new();
    for request in on_call.requests() {
        let data: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let kind = data["type"].as_str().unwrap().to_owned();
        let about = data["delivery_id"]
            .as_str()
            .or(data["webhook_id"].as_str())
            .unwrap()
            .to_owned();
        told.entry(kind).or_default().push(about);
    }
    let mut failed_told = told.remove("herald.delivery.failed").unwrap_or_default();
    failed_told.sort();
    let before = failed_told.len();
    failed_told.dedup();
    assert_eq!(before, failed_told.len(), "one per failed delivery");
    assert_eq!(failed_told.len(), failed, "{failed_told:?}");
    assert_eq!(
        told.remove("herald.webhook.disabled"),
        Some(vec![hook.id.clone()])
    );
    assert!(told.is_empty(), "nothing else: {told:?}");
    assert!(
        everything
            .requests()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("herald.")),
        "a `*` webhook gets none of Herald's own events"
    );
}
