//! Herald run like a production service: real `herald-sender` processes
//! (the built binary, configured by `HERALD_*` variables) under load,
//! stopped with SIGTERM mid-load, and several of them sharing one queue.
//! Ingest runs in-process; the database, broker and receiver are real.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald_proto::v1::{FireRequest, fire_request};
use herald_tests::process::{SenderProcess, prometheus_sum};
use herald_tests::{Receiver, Reply, TestEnv};
use uuid::Uuid;

/// These tests load the whole machine; running them one at a time keeps
/// their timings meaningful.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EVENT: &str = "load.test";
/// Firing 10,000 events takes about a minute on a loaded 2-core machine.
const FIRE_LIMIT: Duration = Duration::from_secs(300);

/// Fires `count` events (JSON data) through one gRPC client with
/// `concurrency` calls in flight; returns every delivery id, in any order.
async fn fire_many(env: &TestEnv, count: usize, concurrency: usize) -> Vec<Uuid> {
    let client = env.ingest().await;
    let fire = futures_util::stream::iter(0..count)
        .map(|n| {
            let mut client = client.clone();
            async move {
                client
                    .fire(FireRequest {
                        event: EVENT.into(),
                        data: Some(fire_request::Data::Json(format!(r#"{{"n":{n}}}"#))),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().delivery_ids)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(FIRE_LIMIT, fire)
        .await
        .unwrap_or_else(|_| panic!("firing {count} events took over {FIRE_LIMIT:?}"));
    let mut ids = Vec::with_capacity(count);
    for result in results {
        let delivery_ids = result.expect("fire ok");
        assert_eq!(delivery_ids.len(), 1, "one webhook, one delivery");
        ids.extend(
            delivery_ids
                .iter()
                .map(|id| id.parse::<Uuid>().expect("uuid")),
        );
    }
    ids
}

/// Waits until every delivery in `ids` has a final row; panics after
/// `timeout` with the count of those still pending.
async fn wait_all_final(env: &TestEnv, ids: &[Uuid], timeout: Duration) {
    let db = env.db().await;
    let deadline = Instant::now() + timeout;
    let mut last = 0;
    loop {
        let done: i64 = db
            .query_one(
                "SELECT count(*) FROM deliveries WHERE id = ANY($1) AND state <> 'pending'",
                &[&ids],
            )
            .await
            .expect("count query")
            .get(0);
        if usize::try_from(done).unwrap() == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} deliveries final after {timeout:?} (queued: {})",
            ids.len(),
            env.queued_messages().await
        );
        if done / 1000 != last / 1000 {
            eprintln!("  {done} of {} final", ids.len());
        }
        last = done;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per delivery: state, `deliveries.attempts`, number of attempt rows and the
/// lowest and highest attempt number.
async fn delivery_summary(
    env: &TestEnv,
    ids: &[Uuid],
) -> HashMap<Uuid, (String, i32, i64, i32, i32)> {
    env.db()
        .await
        .query(
            "SELECT d.id, d.state, d.attempts, count(a.attempt), \
                    coalesce(min(a.attempt), 0), coalesce(max(a.attempt), 0) \
             FROM deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id \
             WHERE d.id = ANY($1) GROUP BY d.id, d.state, d.attempts",
            &[&ids],
        )
        .await
        .expect("summary query")
        .iter()
        .map(|row| {
            (
                row.get(0),
                (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5)),
            )
        })
        .collect()
}

/// How many requests the receiver got per delivery id.
fn requests_per_delivery(receiver: &Receiver) -> HashMap<Uuid, usize> {
    let mut per_id = HashMap::new();
    for request in receiver.requests() {
        let id = request
            .header("webhook-id")
            .expect("every request carries its delivery id")
            .parse()
            .expect("uuid");
        *per_id.entry(id).or_default() += 1;
    }
    per_id
}

/// A receiver answering 200 at once that also counts requests cheaply.
async fn counting_receiver() -> (Receiver, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let receiver = Receiver::start(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Reply::status(200)
    })
    .await;
    (receiver, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3_000;
    const PREFETCH: usize = 64;
    const DRAIN_SECS: u64 = 10;
    let started = Instant::now();
    let mut env = TestEnv::new("0s,200ms,200ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let (receiver, received) = counting_receiver().await;
    env.webhook(EVENT, "POST", &receiver.url("/load")).await;
    let prefetch = PREFETCH.to_string();
    let drain = DRAIN_SECS.to_string();
    let overrides = [
        ("HERALD_PREFETCH", prefetch.as_str()),
        ("HERALD_DRAIN_TIMEOUT_SECS", drain.as_str()),
    ];
    let mut sender_a = SenderProcess::start(&env, "sender-a", &overrides)
        .await
        .unwrap();
    eprintln!("set-up: {:.1?}", started.elapsed());

    let env = Arc::new(env);
    let firing = Instant::now();
    let fire = tokio::spawn({
        let env = env.clone();
        async move { fire_many(&env, EVENTS, 32).await }
    });

    // SIGTERM as soon as about 300 requests arrived, while load continues.
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "sender A delivered only {} requests in 120 s",
            received.load(Ordering::SeqCst)
        );
        assert!(
            sender_a.try_exit().unwrap().is_none(),
            "sender A exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sender_a.sigterm().unwrap();
    let at_sigterm = received.load(Ordering::SeqCst);
    let signalled = Instant::now();
    eprintln!(
        "SIGTERM to sender A after {:.1?} of firing, {at_sigterm} requests received, fire done: {}",
        firing.elapsed(),
        fire.is_finished()
    );
    let status = sender_a
        .wait_exit(Duration::from_secs(DRAIN_SECS + 10))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("sender A still runs {}s after SIGTERM", DRAIN_SECS + 10));
    eprintln!(
        "sender A exited ({status}) {:.1?} after SIGTERM; requests received by then: {}",
        signalled.elapsed(),
        received.load(Ordering::SeqCst)
    );
    assert!(
        status.success(),
        "sender A exit status after SIGTERM: {status}"
    );

    let _sender_b = SenderProcess::start(&env, "sender-b", &overrides)
        .await
        .unwrap();
    let ids = fire.await.unwrap();
    eprintln!("fired {} events in {:.1?}", ids.len(), firing.elapsed());
    assert_eq!(ids.len(), EVENTS);

    wait_all_final(&env, &ids, Duration::from_secs(120)).await;
    eprintln!(
        "all {EVENTS} final {:.1?} after firing started",
        firing.elapsed()
    );

    let summary = delivery_summary(&env, &ids).await;
    assert_eq!(summary.len(), EVENTS, "every delivery has a row");
    for id in &ids {
        let (state, attempts, rows, first, last) = &summary[id];
        assert_eq!(state, "succeeded", "delivery {id}");
        assert!(*rows >= 1, "delivery {id} has no attempt row");
        assert_eq!(
            i64::from(*attempts),
            *rows,
            "delivery {id}: deliveries.attempts vs attempt rows"
        );
        assert_eq!(
            (*first, i64::from(*last)),
            (1, *rows),
            "delivery {id}: attempt numbers not contiguous from 1"
        );
    }

    let per_id = requests_per_delivery(&receiver);
    for id in &ids {
        assert!(per_id.contains_key(id), "receiver never got delivery {id}");
    }
    assert_eq!(per_id.len(), EVENTS, "receiver got unknown delivery ids");
    let total: usize = per_id.values().sum();
    let duplicates = total - EVENTS;
    let repeated = per_id.values().filter(|n| **n > 1).count();
    eprintln!(
        "receiver: {total} requests for {EVENTS} deliveries, {duplicates} duplicate requests \
         ({repeated} deliveries repeated); total {:.1?}",
        started.elapsed()
    );
    assert!(
        duplicates <= PREFETCH,
        "{duplicates} duplicate requests; at most the {PREFETCH} in flight at SIGTERM may repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_senders_share_10k_deliveries() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 10_000;
    let started = Instant::now();
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let (receiver, _) = counting_receiver().await;
    env.webhook(EVENT, "POST", &receiver.url("/load")).await;
    let overrides = [("HERALD_PREFETCH", "64")];
    let mut senders = Vec::new();
    for name in ["sender-1", "sender-2", "sender-3"] {
        senders.push(SenderProcess::start(&env, name, &overrides).await.unwrap());
    }
    eprintln!("set-up with 3 senders: {:.1?}", started.elapsed());

    let firing = Instant::now();
    let ids = fire_many(&env, EVENTS, 32).await;
    eprintln!("fired {} events in {:.1?}", ids.len(), firing.elapsed());
    assert_eq!(ids.len(), EVENTS);
    wait_all_final(&env, &ids, Duration::from_secs(180)).await;
    eprintln!(
        "all {EVENTS} final {:.1?} after firing started",
        firing.elapsed()
    );

    let summary = delivery_summary(&env, &ids).await;
    assert_eq!(summary.len(), EVENTS, "every delivery has a row");
    for id in &ids {
        let (state, attempts, rows, first, _) = &summary[id];
        assert_eq!(
            (state.as_str(), *attempts, *rows, *first),
            ("succeeded", 1, 1, 1),
            "delivery {id}: state, attempts, attempt rows, first attempt"
        );
    }
    let attempt_rows: i64 = env
        .db()
        .await
        .query_one("SELECT count(*) FROM delivery_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt_rows, i64::try_from(EVENTS).unwrap());

    let per_id = requests_per_delivery(&receiver);
    assert_eq!(per_id.len(), EVENTS, "receiver got every delivery");
    let duplicated: Vec<_> = per_id.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} deliveries reached the receiver more than once, e.g. {:?}",
        duplicated.len(),
        duplicated.iter().take(5).collect::<Vec<_>>()
    );
    for id in &ids {
        assert!(per_id.contains_key(id), "receiver never got delivery {id}");
    }

    // Every sender did a fair part of the work, by its own metrics.
    let mut shares = Vec::new();
    for sender in &senders {
        let text = sender.metrics().await.unwrap();
        // A sender that delivered nothing may have no such series yet; the
        // sum below catches a metric that is missing everywhere.
        let succeeded = prometheus_sum(
            &text,
            "herald_deliveries_total",
            &[("outcome", "succeeded")],
        )
        .unwrap_or(0.0);
        shares.push((sender.name.clone(), succeeded));
    }
    let sum: f64 = shares.iter().map(|(_, n)| n).sum();
    eprintln!(
        "succeeded per sender: {shares:?} (sum {sum}); total {:.1?}",
        started.elapsed()
    );
    #[allow(clippy::cast_precision_loss)]
    let events = EVENTS as f64;
    assert!(
        sum >= events,
        "herald_deliveries_total{{outcome=\"succeeded\"}} of the senders sums to {sum}, not {EVENTS}"
    );
    for (name, succeeded) in &shares {
        assert!(
            *succeeded >= events * 0.10,
            "{name} delivered only {succeeded} of {EVENTS}: the work was not spread ({shares:?})"
        );
    }
}
