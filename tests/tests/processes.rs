//! Herald run like a production service: real `herald-sender` processes
//! (the built binary, configured by `HERALD_*` variables) under load,
//! stopped with SIGTERM mid-load, and several of them sharing one queue.
//! Ingest runs in-process; the database, broker and receiver are real.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_tests::TestEnv;
use herald_tests::load::{
    assert_all_succeeded, counting_receiver, fire_closed_loop, recorded, requests_per_delivery,
    wait_all_final,
};
use herald_tests::process::SenderProcess;
use uuid::Uuid;

/// These tests load the whole machine; running them one at a time keeps
/// their timings meaningful.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EVENT: &str = "load.test";
/// Firing 10,000 events takes about a minute on a loaded 2-core machine.
const FIRE_LIMIT: Duration = Duration::from_secs(300);

/// Fires `count` events with 32 calls in flight; all must be confirmed.
async fn fire_many(env: &TestEnv, count: usize) -> Vec<Uuid> {
    let fired = tokio::time::timeout(FIRE_LIMIT, fire_closed_loop(env, EVENT, count, 32))
        .await
        .unwrap_or_else(|_| panic!("firing {count} events took over {FIRE_LIMIT:?}"));
    assert!(
        fired.unavailable == 0 && fired.other.is_empty(),
        "every Fire is confirmed: {fired:?}"
    );
    assert_eq!(
        fired.confirmed.len(),
        count,
        "one webhook, one delivery each"
    );
    fired.confirmed
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
        async move { fire_many(&env, EVENTS).await }
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

    assert_all_succeeded(&ids, &recorded(&env, &ids).await);

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
    let ids = fire_many(&env, EVENTS).await;
    eprintln!("fired {} events in {:.1?}", ids.len(), firing.elapsed());
    assert_eq!(ids.len(), EVENTS);
    wait_all_final(&env, &ids, Duration::from_secs(180)).await;
    eprintln!(
        "all {EVENTS} final {:.1?} after firing started",
        firing.elapsed()
    );

    let retried = assert_all_succeeded(&ids, &recorded(&env, &ids).await);
    assert_eq!(retried, 0, "every delivery succeeded at its first attempt");
    assert_eq!(env.attempt_rows().await, i64::try_from(EVENTS).unwrap());

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
        // A sender that delivered nothing may have no such series yet; the
        // sum below catches a metric that is missing everywhere.
        let succeeded = sender.deliveries("succeeded").await.unwrap();
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
