//! Fault injection: Herald's promise is that once Fire answered OK, the
//! delivery reaches a final state and every attempt is on record, whatever
//! crashes. Each scenario fires a few thousand events under load, breaks
//! something for real (SIGKILL of sender processes, RabbitMQ connections
//! closed and the broker stopped, Postgres connections terminated and the
//! server stopped, receivers that hang, trickle, reset or flood), waits for
//! quiescence and accounts for every delivery id Fire returned.
//!
//! The broker and Postgres scenarios stop the machine's shared servers, so
//! the scenarios run one at a time (a lock), and cargo runs test binaries
//! one after another. Each prints one row of the table in
//! docs/reliability.md, "The fault-injection suite".

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_proto::v1::{CreateWebhookRequest, FireRequest, fire_request};
use herald_tests::load::{
    Fired, Row, assert_all_succeeded, counting_receiver, fire_closed_loop, fire_paced, recorded,
    requests_per_delivery, wait_all_final,
};
use herald_tests::pathological::{Misbehaviour, Pathological};
use herald_tests::process::SenderProcess;
use herald_tests::{Receiver, TestEnv};
use uuid::Uuid;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EVENT: &str = "fault.test";
const PREFETCH: usize = 64;

/// Ingest (in-process), one webhook to a counting receiver, one sender process.
async fn setup(schedule: &str) -> (Arc<TestEnv>, Receiver, Arc<AtomicUsize>, SenderProcess) {
    let mut env = TestEnv::new(schedule).await.expect("test env");
    env.start_ingest(env.queue.clone(), |_| {})
        .await
        .expect("ingest");
    let (receiver, count) = counting_receiver().await;
    env.webhook(EVENT, "POST", &receiver.url("/fault")).await;
    let prefetch = PREFETCH.to_string();
    let sender = SenderProcess::start(&env, "sender-a", &[("HERALD_PREFETCH", &prefetch)])
        .await
        .expect("sender");
    (Arc::new(env), receiver, count, sender)
}

/// Fires `events` at `per_second` in the background (see `fire_paced`).
fn start_load(
    env: &Arc<TestEnv>,
    events: usize,
    per_second: u32,
) -> tokio::task::JoinHandle<Fired> {
    let env = env.clone();
    tokio::spawn(async move { fire_paced(&env, EVENT, events, per_second).await })
}

async fn wait_count(count: &AtomicUsize, at_least: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} requests arrived",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a command that injects a fault; panics if it fails.
fn run(program: &str, args: &[&str]) {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?} could not run: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{program} {args:?} took {:.1?}", started.elapsed());
}

/// Accounts for a load whose every confirmed delivery must succeed: checks
/// the records and the receiver, and builds the table row.
async fn account(
    scenario: &'static str,
    env: &TestEnv,
    receiver: &Receiver,
    fired: &Fired,
    bound: usize,
) -> Row {
    assert!(
        fired.other.is_empty(),
        "Fire answered neither OK nor UNAVAILABLE: {:?}",
        fired.other
    );
    let ids = &fired.confirmed;
    wait_all_final(env, ids, Duration::from_secs(180)).await;
    let records = recorded(env, ids).await;
    let lost = ids.len() - records.len();
    assert_all_succeeded(ids, &records);
    let per_id = requests_per_delivery(receiver);
    let never_received = ids.iter().filter(|id| !per_id.contains_key(id)).count();
    assert_eq!(never_received, 0, "confirmed deliveries never received");
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    let confirmed: std::collections::HashSet<&Uuid> = ids.iter().collect();
    let unconfirmed_delivered = per_id.keys().filter(|id| !confirmed.contains(id)).count();
    assert!(
        unconfirmed_delivered <= fired.unavailable,
        "{unconfirmed_delivered} unknown deliveries reached the receiver but only {} calls \
         answered UNAVAILABLE",
        fired.unavailable
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicate requests; the bound is {bound}"
    );
    let row = Row {
        scenario,
        fired: fired.calls,
        confirmed: ids.len(),
        unavailable: fired.unavailable,
        delivered: ids.len() - never_received,
        failed: 0,
        lost,
        duplicates,
        unconfirmed_delivered,
        bound: format!("≤ {bound}"),
    };
    row.print();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_twice_mid_load() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3_000;
    let (env, receiver, count, mut sender_a) = setup("0s,200ms,200ms").await;
    let fire = start_load(&env, EVENTS, 1_000);
    let prefetch = PREFETCH.to_string();
    let overrides = [("HERALD_PREFETCH", prefetch.as_str())];

    wait_count(&count, EVENTS / 5, "before the first kill").await;
    sender_a.sigkill().unwrap();
    eprintln!(
        "SIGKILL sender A at {} requests",
        count.load(Ordering::SeqCst)
    );
    let mut sender_b = SenderProcess::start(&env, "sender-b", &overrides)
        .await
        .unwrap();
    wait_count(&count, EVENTS * 3 / 5, "before the second kill").await;
    sender_b.sigkill().unwrap();
    eprintln!(
        "SIGKILL sender B at {} requests",
        count.load(Ordering::SeqCst)
    );
    let _sender_c = SenderProcess::start(&env, "sender-c", &overrides)
        .await
        .unwrap();

    let fired = fire.await.unwrap();
    assert_eq!(fired.unavailable, 0, "the broker was up: every Fire is OK");
    // Each kill can repeat at most the deliveries the killed sender held
    // unacked: its prefetch.
    account(
        "sender `kill -9`, twice",
        &env,
        &receiver,
        &fired,
        2 * PREFETCH,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connections_closed_mid_load() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3_000;
    let (env, receiver, count, _sender) = setup("0s,200ms,200ms").await;
    let fire = start_load(&env, EVENTS, 1_000);
    wait_count(&count, EVENTS / 5, "before closing the connections").await;
    run(
        "rabbitmqctl",
        &["close_all_connections", "herald fault-injection test"],
    );
    let fired = fire.await.unwrap();
    // Both services reconnected by themselves: a new Fire is confirmed and
    // delivered.
    let after = env.fire_json(EVENT, r#"{"after":"reconnect"}"#).await;
    let mut fired = fired;
    fired.record(Ok(after));
    account(
        "RabbitMQ connections closed (`close_all_connections`)",
        &env,
        &receiver,
        &fired,
        PREFETCH,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_started_mid_load() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3_000;
    let (env, receiver, count, _sender) = setup("0s,200ms,200ms").await;
    let fire = start_load(&env, EVENTS, 500);
    wait_count(&count, EVENTS / 10, "before stopping the broker").await;
    run("rabbitmqctl", &["stop_app"]);
    // While the broker is down, Fire must never answer OK.
    let mut client = env.ingest().await;
    let down = client
        .fire(FireRequest {
            event: EVENT.into(),
            data: Some(fire_request::Data::Json(r#"{"while":"down"}"#.into())),
            ..Default::default()
        })
        .await;
    let status = down.expect_err("Fire answered OK while RabbitMQ was stopped");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    run("rabbitmqctl", &["start_app"]);
    let mut fired = fire.await.unwrap();
    fired.record(Err(status));
    assert!(
        fired.unavailable > 1,
        "the outage was not seen by the load: {fired:?}"
    );
    // Ingest reconnects on the next call; the sender on its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        match client
            .fire(FireRequest {
                event: EVENT.into(),
                data: Some(fire_request::Data::Json(r#"{"after":"restart"}"#.into())),
                ..Default::default()
            })
            .await
        {
            Ok(response) => break response.into_inner().delivery_ids,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "Fire still fails: {status:?}");
                fired.record(Err(status));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    fired.record(Ok(after));
    account(
        "RabbitMQ stopped and started (`stop_app` / `start_app`)",
        &env,
        &receiver,
        &fired,
        PREFETCH,
    )
    .await;
}

fn terminate_backends_sql(database: &str) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_terminated_mid_load() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3_000;
    let (env, receiver, count, _sender) = setup("0s,200ms,200ms").await;
    let fire = start_load(&env, EVENTS, 1_000);
    let admin = herald_tests::connect_pg(&herald_tests::postgres_admin_url())
        .await
        .unwrap();
    let database = env.database_name().to_owned();
    for (round, at) in [EVENTS / 5, EVENTS * 2 / 5, EVENTS * 3 / 5]
        .into_iter()
        .enumerate()
    {
        wait_count(&count, at, "before terminating connections").await;
        let killed: i64 = admin
            .query_one(&terminate_backends_sql(&database), &[])
            .await
            .unwrap()
            .get(0);
        eprintln!("round {round}: terminated {killed} connections of {database}");
        assert!(killed > 0, "no connection of the services was terminated");
    }
    let fired = fire.await.unwrap();
    assert_eq!(fired.unavailable, 0, "Fire does not need Postgres");
    account(
        "Postgres connections terminated (3 times)",
        &env,
        &receiver,
        &fired,
        PREFETCH,
    )
    .await;
}

fn postgres_cluster(action: &str) {
    let versions = std::fs::read_dir("/etc/postgresql")
        .expect("pg_ctlcluster needs /etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect::<Vec<_>>();
    let version = versions.first().expect("one Postgres cluster");
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            version,
            "main",
            action,
            "-m",
            "fast",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_load() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3_000;
    let (env, receiver, count, sender) = setup("0s,200ms,200ms").await;
    let fire = start_load(&env, EVENTS, 500);
    wait_count(&count, EVENTS / 10, "before stopping Postgres").await;
    postgres_cluster("stop");
    let stopped = Instant::now();
    // The sender reports that it cannot record attempts; its deliveries wait
    // unacked instead of being dropped.
    let mut unready = false;
    while stopped.elapsed() < Duration::from_secs(3) {
        if let Ok((503, _)) = sender.get("/readyz").await {
            unready = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_restart = count.load(Ordering::SeqCst);
    postgres_cluster("start");
    eprintln!("Postgres was down {:.1?}", stopped.elapsed());
    assert!(unready, "the sender stayed ready without Postgres");
    let fired = fire.await.unwrap();
    assert_eq!(
        fired.unavailable, 0,
        "Fire needs no Postgres: it answered UNAVAILABLE {} times",
        fired.unavailable
    );
    eprintln!("requests received while Postgres was down: up to {at_restart}");
    account(
        "Postgres stopped and started (`pg_ctlcluster stop -m fast` / `start`)",
        &env,
        &receiver,
        &fired,
        PREFETCH,
    )
    .await;
}

/// Creates a webhook for `event` with a timeout; returns its id.
async fn webhook_with_timeout(env: &TestEnv, event: &str, url: &str, timeout_ms: u32) -> String {
    env.admin()
        .await
        .create_webhook(CreateWebhookRequest {
            event: event.into(),
            method: "POST".into(),
            url: url.into(),
            timeout_ms: Some(timeout_ms),
            ..Default::default()
        })
        .await
        .expect("webhook created")
        .into_inner()
        .id
}

/// Fires `count` events and waits until all are final; returns the time
/// from the first call to the last final state.
async fn fire_and_finish(env: &TestEnv, event: &str, count: usize) -> (Fired, Duration) {
    let started = Instant::now();
    let fired = fire_closed_loop(env, event, count, 32).await;
    assert!(
        fired.other.is_empty() && fired.unavailable == 0,
        "{fired:?}"
    );
    wait_all_final(env, &fired.confirmed, Duration::from_secs(120)).await;
    (fired, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_block_a_healthy_one() {
    let _serial = SERIAL.lock().await;
    const HEALTHY: usize = 1_500;
    // More than the sender's prefetch: without the per-webhook limit, every
    // prefetch slot would hold a hanging delivery for the whole timeout and
    // the healthy deliveries behind them would wait that long.
    const HANGING: usize = herald_queue::DEFAULT_PREFETCH as usize + 50;
    const TIMEOUT: Duration = Duration::from_secs(20);
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let (receiver, _) = counting_receiver().await;
    env.webhook("healthy", "POST", &receiver.url("/ok")).await;
    let hang = Pathological::start(Misbehaviour::Hang).await;
    let timeout_ms = u32::try_from(TIMEOUT.as_millis()).unwrap();
    let hanging_id = webhook_with_timeout(&env, "hanging", &hang.url("/hang"), timeout_ms).await;
    // The production defaults: prefetch 512, 32 requests per webhook.
    let prefetch = herald_queue::DEFAULT_PREFETCH.to_string();
    let sender = SenderProcess::start(&env, "sender", &[("HERALD_PREFETCH", &prefetch)])
        .await
        .unwrap();

    let (alone, alone_took) = fire_and_finish(&env, "healthy", HEALTHY).await;
    assert_eq!(
        assert_all_succeeded(&alone.confirmed, &recorded(&env, &alone.confirmed).await),
        0
    );

    // Now the hanging webhook's deliveries are queued first.
    let sick = fire_closed_loop(&env, "hanging", HANGING, 32).await;
    assert_eq!(sick.confirmed.len(), HANGING);
    let (beside, beside_took) = fire_and_finish(&env, "healthy", HEALTHY).await;
    let parked = sender.deliveries("parked").await.unwrap();
    eprintln!(
        "healthy webhook: {HEALTHY} deliveries in {alone_took:.2?} alone, in {beside_took:.2?} \
         beside {HANGING} deliveries to a webhook that hangs for {TIMEOUT:?} \
         ({parked} times parked so far)"
    );
    assert!(
        beside_took < alone_took * 3 + Duration::from_secs(2) && beside_took < TIMEOUT,
        "a hanging webhook slowed a healthy one from {alone_took:?} to {beside_took:?}"
    );
    assert_all_succeeded(&beside.confirmed, &recorded(&env, &beside.confirmed).await);
    assert_eq!(
        recorded(&env, &sick.confirmed).await.len(),
        0,
        "no hanging delivery can be final yet: the test would prove nothing"
    );

    // Disabling the webhook ends the rest: requests in flight time out,
    // parked deliveries come back and are cancelled. Every one is final.
    env.admin()
        .await
        .set_webhook_enabled(herald_proto::v1::SetWebhookEnabledRequest {
            id: hanging_id,
            enabled: false,
        })
        .await
        .unwrap();
    let disabled = Instant::now();
    wait_all_final(&env, &sick.confirmed, TIMEOUT * 3).await;
    eprintln!(
        "hanging deliveries all final {:.1?} after disabling",
        disabled.elapsed()
    );
    let sick_records = recorded(&env, &sick.confirmed).await;
    let mut timed_out = 0;
    for id in &sick.confirmed {
        let r = &sick_records[id];
        match (r.state.as_str(), r.attempt_rows) {
            ("failed", 1) => timed_out += 1,
            ("cancelled", 0) => {}
            _ => panic!("hanging delivery {id}: {r:?}"),
        }
    }
    let timeouts: i64 = env
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id = ANY($1) \
             AND error_kind = 'timeout' AND status_code IS NULL",
            &[&sick.confirmed],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        timeouts,
        i64::try_from(timed_out).unwrap(),
        "each hanging attempt is a timeout"
    );
    assert_eq!(
        hang.requests(),
        timed_out,
        "each attempt reached the receiver once"
    );
    assert!(
        timed_out <= 32,
        "{timed_out} requests hung at once; the per-webhook limit is 32"
    );
    Row {
        scenario: "webhook hanging for 20 s beside a healthy one",
        fired: HEALTHY * 2 + HANGING,
        confirmed: HEALTHY * 2 + HANGING,
        unavailable: 0,
        delivered: HEALTHY * 2,
        failed: HANGING,
        lost: 0,
        duplicates: 0,
        unconfirmed_delivered: 0,
        bound: format!(
            "healthy: {:.0}/s alone, {:.0}/s beside; hanging: {timed_out} timed out, {} \
             cancelled when disabled",
            HEALTHY as f64 / alone_took.as_secs_f64(),
            HEALTHY as f64 / beside_took.as_secs_f64(),
            HANGING - timed_out
        ),
    }
    .print();
}

/// A misbehaving receiver and what its attempts must record: name,
/// behaviour, final state, status code, error kind.
type Case = (
    &'static str,
    Misbehaviour,
    &'static str,
    Option<i32>,
    Option<&'static str>,
);

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_receivers_are_recorded_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 40;
    const HUGE: usize = 50 * 1024 * 1024;
    let mut env = TestEnv::new("0s,100ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let status = |status: u16, headers: &[(&str, &str)]| Misbehaviour::Status {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let cases: Vec<Case> = vec![
        (
            "trickle",
            Misbehaviour::Trickle {
                every: Duration::from_millis(100),
            },
            "failed",
            None,
            Some("timeout"),
        ),
        (
            "reset",
            Misbehaviour::Reset,
            "failed",
            None,
            Some("connection"),
        ),
        (
            "status-500",
            status(500, &[]),
            "failed",
            Some(500),
            Some("http_status"),
        ),
        (
            "status-429",
            status(429, &[("Retry-After", "1")]),
            "failed",
            Some(429),
            Some("http_status"),
        ),
        (
            "status-301",
            status(301, &[("Location", "https://example.com/elsewhere")]),
            "failed",
            Some(301),
            Some("http_status"),
        ),
        (
            "huge-body",
            Misbehaviour::HugeBody { bytes: HUGE },
            "succeeded",
            Some(200),
            None,
        ),
    ];
    let mut receivers = HashMap::new();
    for (name, behaviour, ..) in &cases {
        let receiver = Pathological::start(behaviour.clone()).await;
        let id =
            webhook_with_timeout(&env, "sick", &receiver.url(&format!("/{name}")), 1_000).await;
        receivers.insert(*name, (id, receiver));
    }
    let sender = SenderProcess::start(&env, "sender", &[("HERALD_PREFETCH", "256")])
        .await
        .unwrap();
    let before = peak_rss_kib(sender.pid());
    let (fired, took) = fire_and_finish(&env, "sick", EVENTS).await;
    let peak = peak_rss_kib(sender.pid());
    eprintln!(
        "{} deliveries to misbehaving receivers final in {took:.1?}; sender peak RSS {} → {} MiB",
        fired.confirmed.len(),
        before / 1024,
        peak / 1024
    );
    assert_eq!(fired.confirmed.len(), EVENTS * cases.len());

    let db = env.db().await;
    let mut delivered = 0;
    let mut failed = 0;
    for (name, _, state, status, kind) in &cases {
        let (webhook_id, receiver) = &receivers[name];
        let webhook_id: Uuid = webhook_id.parse().unwrap();
        let rows = db
            .query(
                "SELECT d.state, d.attempts, a.attempt, a.status_code, a.error_kind, \
                        a.response_excerpt \
                 FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id \
                 WHERE d.webhook_id = $1 ORDER BY d.id, a.attempt",
                &[&webhook_id],
            )
            .await
            .unwrap();
        let attempts_each = if *state == "failed" { 2 } else { 1 };
        assert_eq!(rows.len(), EVENTS * attempts_each, "{name}: attempt rows");
        for row in &rows {
            let row_state: String = row.get(0);
            let row_status: Option<i32> = row.get(3);
            let row_kind: Option<String> = row.get(4);
            let excerpt: Option<String> = row.get(5);
            assert_eq!(row_state, *state, "{name}");
            assert_eq!(row_status, *status, "{name}");
            assert_eq!(row_kind.as_deref(), *kind, "{name}");
            if let Some(excerpt) = &excerpt {
                assert!(
                    excerpt.len() <= herald_sender::EXCERPT_BYTES,
                    "{name}: excerpt of {} bytes",
                    excerpt.len()
                );
            }
            if *name == "huge-body" {
                assert_eq!(
                    excerpt.map(|e| e.len()),
                    Some(herald_sender::EXCERPT_BYTES),
                    "the excerpt of a huge body is capped"
                );
            }
        }
        if *state == "failed" {
            failed += EVENTS;
        } else {
            delivered += EVENTS;
        }
        if *name != "reset" {
            assert_eq!(
                receiver.requests(),
                EVENTS * attempts_each,
                "{name}: requests"
            );
        }
    }
    // 40 answers of 50 MiB went to the sender; it read at most 64 KiB of each.
    assert!(
        peak < 128 * 1024,
        "the sender's peak RSS reached {} MiB",
        peak / 1024
    );
    Row {
        scenario: "misbehaving receivers (trickle, reset, 500, 429, 301, 50 MiB body)",
        fired: EVENTS,
        confirmed: fired.confirmed.len(),
        unavailable: 0,
        delivered,
        failed,
        lost: 0,
        duplicates: 0,
        unconfirmed_delivered: 0,
        bound: format!("sender peak RSS {} MiB", peak / 1024),
    }
    .print();
}
