//! Herald on a three-node RabbitMQ cluster of its own (tests/src/cluster.rs),
//! under a paced load whose every delivery fails its first attempt (so the
//! delay queues are in use), while the cluster loses nodes for real:
//!
//! 1. `kill -9` of the node that leads the work queue; once deliveries flow
//!    again without it (and at least 3 s later), it is started again;
//! 2. a rolling restart: `rabbitmqctl stop_app` / `start_app` of each node,
//!    one after another, each back in the cluster and in the work queue's
//!    quorum before the next goes.
//!
//! Ingest runs in-process, two `herald-sender` processes run beside it, all
//! given the three nodes' URLs. Afterwards every delivery id Fire answered OK
//! for is accounted for as in the fault-injection suite (tests/faults.rs):
//! none lost, duplicates within their bound, every Fire answered OK or
//! UNAVAILABLE. It prints its row of the table in docs/reliability.md and how
//! long Fire answered UNAVAILABLE and deliveries paused.
//!
//! It starts its own broker nodes (root needed, as for tests/faults.rs) and
//! never touches the machine's broker. Bounded: the whole test gives up after
//! [`TEST_LIMIT`]; the cluster's directories and processes are removed also
//! when it fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_tests::cluster::RabbitCluster;
use herald_tests::load::{
    Call, Row, assert_all_succeeded, fire_paced_until, recorded, wait_all_final,
};
use herald_tests::process::SenderProcess;
use herald_tests::{Receiver, Reply, TestEnv};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const EVENT: &str = "cluster.test";
const PREFETCH: usize = 64;
const SENDERS: usize = 2;
/// Millisecond delays: the delay queues hold each delivery for 200 ms.
const SCHEDULE: &str = "0s,200ms,400ms,800ms,1600ms,3200ms";
/// Fire calls per second for the whole scenario (`HERALD_CLUSTER_PACE`
/// overrides it). Not 500: on a 2-core machine the three nodes sustain about
/// 95 fires/s with no fault, and beyond that Fire's latency grows to seconds
/// and fewer calls complete (`measure_the_pace_a_cluster_sustains`;
/// docs/reliability.md has the figures).
const PACE: u32 = 100;
/// The broker failures: the kill and the three `stop_app`s.
const FAILURES: usize = 4;
/// The test gives up after this (from the start of the cluster; about
/// 130 s when it passes), so that with the clean-up (at most 25 s) it stays
/// under 4 minutes.
const TEST_LIMIT: Duration = Duration::from_secs(210);
/// Any single wait of the scenario.
const WAIT: Duration = Duration::from_secs(60);

/// Each sender's prefetch (`HERALD_CLUSTER_PREFETCH` overrides it).
fn prefetch() -> usize {
    std::env::var("HERALD_CLUSTER_PREFETCH")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(PREFETCH)
}

fn pace() -> u32 {
    std::env::var("HERALD_CLUSTER_PACE")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(PACE)
}

/// What happened when, relative to the start of the load.
struct Timeline {
    start: Instant,
    events: Vec<(Duration, String)>,
}

impl Timeline {
    fn mark(&mut self, what: impl Into<String>) {
        let what = what.into();
        let at = self.start.elapsed();
        eprintln!("CLUSTER {:>6.1}s  {what}", at.as_secs_f64());
        self.events.push((at, what));
    }
}

/// Waits until the receiver got `more` requests beyond `from`, and at least
/// `min` has passed since `since`. If they do not come, says what one more
/// Fire call answers (within 10 s).
async fn wait_progress(
    env: &TestEnv,
    arrived: &AtomicUsize,
    more: usize,
    since: Instant,
    min: Duration,
    what: &str,
) {
    let from = arrived.load(Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    while arrived.load(Ordering::SeqCst) < from + more || since.elapsed() < min {
        if Instant::now() >= deadline {
            let probe = tokio::time::timeout(Duration::from_secs(10), async {
                env.ingest()
                    .await
                    .fire(herald_proto::v1::FireRequest {
                        event: EVENT.into(),
                        data: Some(herald_proto::v1::fire_request::Data::Json("{}".into())),
                        ..Default::default()
                    })
                    .await
            })
            .await;
            panic!(
                "{what}: {} of {more} more requests within {WAIT:?}; a Fire call now: {probe:?}",
                arrived.load(Ordering::SeqCst) - from
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs of consecutive UNAVAILABLE answers (in the order the calls were
/// sent): (start relative to `start`, from the first call sent to the last
/// answered, number of calls).
fn unavailable_runs(calls: &[Call], start: Instant) -> Vec<(Duration, Duration, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < calls.len() {
        if calls[i].ok {
            i += 1;
            continue;
        }
        let first = i;
        while i < calls.len() && !calls[i].ok {
            i += 1;
        }
        let last_answer = calls[first..i].iter().map(|c| c.answered).max().unwrap();
        runs.push((
            calls[first].sent - start,
            last_answer - calls[first].sent,
            i - first,
        ));
    }
    runs
}

/// Gaps between consecutive requests at the receiver within
/// `[start, end]`: (gap start relative to `start`, length).
fn arrival_gaps(mut at: Vec<Instant>, start: Instant, end: Instant) -> Vec<(Duration, Duration)> {
    at.retain(|t| *t >= start && *t <= end);
    at.sort_unstable();
    at.windows(2).map(|w| (w[0] - start, w[1] - w[0])).collect()
}

/// With `HERALD_CLUSTER_MONITOR` set, every 5 s until `stop`: requests
/// arrived and the Herald queues' depth, leaders and online members (each
/// look costs a `rabbitmqctl` run, so it is off by default).
async fn monitor(
    cluster: herald_tests::cluster::ClusterHandle,
    prefix: String,
    arrived: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut last = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let now = arrived.load(Ordering::SeqCst);
        let queues = cluster.queue_summary(&prefix).await;
        let connections = cluster.connection_summary().await;
        eprintln!(
            "CLUSTER {:>6.1}s  {} requests (+{}); queues: {queues}; connections: {connections}",
            start.elapsed().as_secs_f64(),
            now,
            now - last
        );
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_its_leader_and_restarts_node_by_node() {
    // The sender binary is built first (about a minute on a cold target
    // directory), so that the build does not eat into the scenario's limit.
    tokio::task::spawn_blocking(herald_tests::process::sender_binary)
        .await
        .expect("the build task")
        .expect("the herald-sender binary");
    let began = Instant::now();
    // Declared first, so it is dropped (nodes stopped, files removed) last.
    let cluster = RabbitCluster::start(3).await.expect("cluster");
    let outcome = tokio::time::timeout(TEST_LIMIT - began.elapsed(), scenario(&cluster)).await;
    eprintln!("cluster test: {:.1?} before clean-up", began.elapsed());
    outcome.unwrap_or_else(|_| panic!("the cluster test took over {TEST_LIMIT:?}"));
}

/// Ingest, the receiver, its webhook and two sender processes, all on the
/// cluster's three URLs.
struct Setup {
    env: Arc<TestEnv>,
    receiver: Receiver,
    /// Requests the receiver got.
    arrived: Arc<AtomicUsize>,
    senders: Vec<SenderProcess>,
    work_queue: String,
    /// The receiver of an ordered webhook (event [`ORDERED_EVENT`]).
    ordered_receiver: Receiver,
}

/// The event of the ordered webhook: ordered delivery's partition queues
/// are classic queues, each on one node (docs/ordering.md).
const ORDERED_EVENT: &str = "cluster.ordered";

/// Fires one ordered event for each of 32 keys (so that, with 16
/// partitions, most partitions get one); returns the ids of the calls
/// answered OK and how many answered UNAVAILABLE. Any other answer fails.
async fn fire_ordered(env: &TestEnv) -> (Vec<Uuid>, usize) {
    // All 32 at once: a call whose partition sits on the node that is down
    // answers UNAVAILABLE only after its publish gave up, and how many
    // partitions that node holds varies from run to run. One after the
    // other, those waits added up to 30-90 s and pushed the test past its
    // limit; side by side they cost one wait.
    let ingest = env.ingest().await;
    let answers = futures_util::future::join_all((0..32).map(|key| {
        let mut ingest = ingest.clone();
        async move {
            ingest
                .fire(herald_proto::v1::FireRequest {
                    event: ORDERED_EVENT.into(),
                    data: Some(herald_proto::v1::fire_request::Data::Json("{}".into())),
                    ordering_key: format!("k{key}"),
                    ..Default::default()
                })
                .await
        }
    }))
    .await;
    let mut confirmed = Vec::new();
    let mut unavailable = 0;
    for answer in answers {
        match answer {
            Ok(fired) => confirmed.extend(
                fired
                    .into_inner()
                    .delivery_ids
                    .iter()
                    .map(|id| id.parse::<Uuid>().expect("uuid")),
            ),
            Err(status) if status.code() == tonic::Code::Unavailable => unavailable += 1,
            Err(status) => panic!("ordered Fire answered neither OK nor UNAVAILABLE: {status:?}"),
        }
    }
    (confirmed, unavailable)
}

async fn setup(cluster: &RabbitCluster) -> Setup {
    let urls = cluster.urls();
    let mut env = TestEnv::new_on(SCHEDULE, &urls).await.expect("test env");
    // A replica of every queue on each node (the senders get the same).
    env.queue.quorum_initial_group_size = Some(3);
    env.start_ingest(env.queue.clone(), |_| {})
        .await
        .expect("ingest");
    // Every delivery's first attempt fails; the retry, 200 ms later, succeeds.
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = arrived.clone();
    // HERALD_CLUSTER_NO_RETRY (measurements only): every first attempt
    // succeeds, to tell the delay queues' share of the cluster's cost.
    let first_fails = std::env::var_os("HERALD_CLUSTER_NO_RETRY").is_none();
    let receiver = Receiver::start(move |request, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        if first_fails && request.header("webhook-attempt") == Some("1") {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    env.webhook(EVENT, "POST", &receiver.url("/cluster")).await;
    let ordered_receiver = Receiver::ok().await;
    env.admin()
        .await
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: ORDERED_EVENT.into(),
            method: "POST".into(),
            url: ordered_receiver.url("/ordered"),
            ordered: true,
            ..Default::default()
        })
        .await
        .expect("ordered webhook");
    let prefetch = prefetch().to_string();
    let overrides = [
        ("HERALD_PREFETCH", prefetch.as_str()),
        ("HERALD_QUEUE_TYPE", "quorum"),
        ("HERALD_QUORUM_INITIAL_GROUP_SIZE", "3"),
        ("RUST_LOG", "warn,herald_queue=info"),
    ];
    let mut senders = Vec::new();
    for name in ["sender-a", "sender-b"] {
        senders.push(
            SenderProcess::start(&env, name, &overrides)
                .await
                .expect("sender"),
        );
    }
    let work_queue = env.queue.topology().work_queue();
    cluster
        .await_quorum(&work_queue, 3, WAIT)
        .await
        .expect("work queue on three nodes");
    Setup {
        env: Arc::new(env),
        receiver,
        arrived,
        senders,
        work_queue,
        ordered_receiver,
    }
}

/// How fast this machine runs the pipeline on the cluster with no fault:
/// each pace of `HERALD_CLUSTER_PACES` (default "100,200,300,500") for
/// 15 s; prints the Fire rate reached, Fire latency, deliveries per second
/// and the backlog left. `cargo test -p herald-tests --test cluster --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_the_pace_a_cluster_sustains() {
    let cluster = RabbitCluster::start(3).await.expect("cluster");
    let Setup {
        env,
        arrived,
        senders,
        ..
    } = setup(&cluster).await;
    let paces = std::env::var("HERALD_CLUSTER_PACES").unwrap_or_else(|_| "100,200,300,500".into());
    for pace in paces
        .split(',')
        .filter_map(|p| p.trim().parse::<u32>().ok())
    {
        let stop = CancellationToken::new();
        let load = {
            let (env, stop) = (env.clone(), stop.clone());
            tokio::spawn(async move { fire_paced_until(&env, EVENT, None, pace, &stop).await })
        };
        let start = Instant::now();
        let before = arrived.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(15)).await;
        stop.cancel();
        let (fired, calls) = load.await.expect("load");
        let took = start.elapsed().as_secs_f64();
        let requests = arrived.load(Ordering::SeqCst) - before;
        let mut latency: Vec<Duration> = calls.iter().map(|c| c.answered - c.sent).collect();
        latency.sort_unstable();
        let at = |q: f64| latency[((latency.len() - 1) as f64 * q) as usize].as_secs_f64();
        eprintln!(
            "PACE {pace}/s: {:.0} Fire/s reached ({} OK, {} UNAVAILABLE), Fire latency p50 {:.3}s \
             p99 {:.3}s; {:.0} requests/s ({:.0} deliveries/s); backlog {} messages",
            fired.calls as f64 / took,
            fired.confirmed.len(),
            fired.unavailable,
            at(0.5),
            at(0.99),
            requests as f64 / took,
            requests as f64 / took / 2.0,
            env.queued_messages().await
        );
        wait_all_final(&env, &fired.confirmed, Duration::from_secs(120)).await;
    }
    drop(senders);
}

async fn scenario(cluster: &RabbitCluster) {
    let pace = pace();
    let Setup {
        env,
        receiver,
        arrived,
        senders,
        work_queue,
        ordered_receiver,
    } = setup(cluster).await;

    let stop = CancellationToken::new();
    // Cancelled also when the test panics: the load and the monitor end
    // before the cluster goes.
    let _stop_on_drop = stop.clone().drop_guard();
    let load = {
        let (env, stop) = (env.clone(), stop.clone());
        tokio::spawn(async move { fire_paced_until(&env, EVENT, None, pace, &stop).await })
    };
    if std::env::var_os("HERALD_CLUSTER_MONITOR").is_some() {
        tokio::spawn(monitor(
            cluster.clone_handle(),
            env.queue.prefix.clone(),
            arrived.clone(),
            stop.clone(),
        ));
    }
    let mut timeline = Timeline {
        start: Instant::now(),
        events: Vec::new(),
    };
    timeline.mark(format!("load started, {pace} Fire/s"));
    let warm = pace as usize * 2;
    wait_progress(
        &env,
        &arrived,
        warm,
        timeline.start,
        Duration::ZERO,
        "warm-up",
    )
    .await;

    // 1. kill -9 of the work queue's leader, and back.
    let leader = cluster.leader_of(&work_queue).await.expect("leader");
    timeline.mark(format!("kill -9 node {leader} (work queue leader)"));
    cluster.kill9(leader).await.expect("kill -9");
    let killed = Instant::now();
    let new_leader = cluster
        .await_quorum(&work_queue, 2, WAIT)
        .await
        .expect("a new leader");
    timeline.mark(format!("node {new_leader} leads the work queue"));
    // Ordered deliveries while a node is down: a partition on that node
    // cannot take them, and Fire must say so rather than confirm them.
    let (ordered_ids, ordered_unavailable) = fire_ordered(&env).await;
    timeline.mark(format!(
        "ordered Fire for 32 keys: {} OK, {ordered_unavailable} UNAVAILABLE",
        ordered_ids.len()
    ));
    wait_progress(
        &env,
        &arrived,
        pace as usize,
        killed,
        Duration::from_secs(3),
        "deliveries without the killed node",
    )
    .await;
    timeline.mark(format!("start node {leader} again"));
    cluster.start_node(leader).await.expect("restart");
    cluster.await_running(3, WAIT).await.expect("3 running");
    cluster
        .await_quorum(&work_queue, 3, WAIT)
        .await
        .expect("quorum of 3");
    timeline.mark(format!("node {leader} back in the cluster and the quorum"));
    wait_progress(
        &env,
        &arrived,
        pace as usize,
        killed,
        Duration::ZERO,
        "after the restart",
    )
    .await;

    // 2. Rolling restart.
    for i in 0..cluster.nodes().len() {
        timeline.mark(format!("stop_app node {i}"));
        cluster.stop_app(i).await.expect("stop_app");
        let stopped = Instant::now();
        wait_progress(
            &env,
            &arrived,
            pace as usize,
            stopped,
            Duration::from_secs(2),
            "deliveries with a node stopped",
        )
        .await;
        timeline.mark(format!("start_app node {i}"));
        cluster.start_app(i).await.expect("start_app");
        cluster.await_running(3, WAIT).await.expect("3 running");
        cluster
            .await_quorum(&work_queue, 3, WAIT)
            .await
            .expect("quorum of 3");
        timeline.mark(format!("node {i} back in the cluster and the quorum"));
        wait_progress(
            &env,
            &arrived,
            pace as usize,
            stopped,
            Duration::ZERO,
            "after start_app",
        )
        .await;
    }
    wait_progress(
        &env,
        &arrived,
        warm,
        Instant::now(),
        Duration::ZERO,
        "settling",
    )
    .await;
    stop.cancel();
    let (fired, calls) = load.await.expect("load task");
    let load_end = Instant::now();
    timeline.mark(format!("load stopped after {} Fire calls", fired.calls));
    let reached = fired.calls as f64 / (load_end - timeline.start).as_secs_f64();

    // Accounting, as in tests/faults.rs.
    assert!(
        fired.other.is_empty(),
        "Fire answered neither OK nor UNAVAILABLE: {:?}",
        &fired.other[..fired.other.len().min(5)]
    );
    let ids = &fired.confirmed;
    wait_all_final(&env, ids, Duration::from_secs(90)).await;
    let drained = Instant::now();
    // Every ordered delivery Fire confirmed while the node was down arrives.
    wait_all_final(&env, &ordered_ids, Duration::from_secs(60)).await;
    assert_all_succeeded(&ordered_ids, &recorded(&env, &ordered_ids).await);
    let ordered_arrived: HashSet<String> = ordered_receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert!(
        ordered_ids
            .iter()
            .all(|id| ordered_arrived.contains(&id.to_string())),
        "a confirmed ordered delivery never reached its receiver"
    );
    eprintln!(
        "CLUSTER ordered Fire with a node down: {} OK (all delivered), {ordered_unavailable} UNAVAILABLE",
        ordered_ids.len()
    );
    let records = recorded(&env, ids).await;
    let lost = ids.len() - records.len();
    let retried = assert_all_succeeded(ids, &records);
    assert_eq!(
        retried,
        ids.len(),
        "every delivery failed its first attempt, so each needed the delay queue"
    );
    let requests = receiver.requests();
    let mut per_id: HashMap<Uuid, usize> = HashMap::new();
    let mut attempts_seen: HashSet<(Uuid, String)> = HashSet::new();
    for request in &requests {
        let id: Uuid = request
            .header("webhook-id")
            .expect("delivery id header")
            .parse()
            .expect("uuid");
        *per_id.entry(id).or_default() += 1;
        attempts_seen.insert((
            id,
            request.header("webhook-attempt").unwrap_or("?").to_owned(),
        ));
    }
    let never_received = ids.iter().filter(|id| !per_id.contains_key(id)).count();
    assert_eq!(never_received, 0, "confirmed deliveries never received");
    // A request beyond the first of its (delivery, attempt) is a duplicate:
    // the broker redelivered a message a sender had not acked yet.
    let duplicates = requests.len() - attempts_seen.len();
    let confirmed: HashSet<&Uuid> = ids.iter().collect();
    let unconfirmed_delivered = per_id.keys().filter(|id| !confirmed.contains(id)).count();
    assert!(
        unconfirmed_delivered <= fired.unavailable,
        "{unconfirmed_delivered} unknown deliveries reached the receiver but only {} calls \
         answered UNAVAILABLE",
        fired.unavailable
    );
    // Per failure, each sender can lose its channel once: the deliveries it
    // held unacked (its prefetch) are redelivered, and each may repeat its
    // request and (on a first attempt) the retry it had already queued. A
    // delay queue whose leader fails dead-letters again what its old leader
    // had not yet seen confirmed (at-least-once): at most what it held, the
    // deliveries of its 200 ms delay.
    let per_failure = SENDERS * 2 * prefetch() + pace as usize / 5;
    let bound = FAILURES * per_failure;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicate requests; the bound is {bound}"
    );

    // How long Fire answered UNAVAILABLE and deliveries paused.
    let runs = unavailable_runs(&calls, timeline.start);
    for (at, span, n) in &runs {
        eprintln!(
            "CLUSTER Fire UNAVAILABLE from {:.1}s for {:.2}s ({n} calls)",
            at.as_secs_f64(),
            span.as_secs_f64()
        );
    }
    let longest_unavailable = runs.iter().map(|r| r.1).max().unwrap_or_default();
    let slowest_ok = calls
        .iter()
        .filter(|c| c.ok)
        .map(|c| c.answered - c.sent)
        .max()
        .unwrap_or_default();
    let gaps = arrival_gaps(
        requests.iter().map(|r| r.at).collect(),
        timeline.start,
        load_end,
    );
    for (at, gap) in gaps.iter().filter(|g| g.1 >= Duration::from_millis(500)) {
        eprintln!(
            "CLUSTER no request arrived from {:.1}s for {:.2}s",
            at.as_secs_f64(),
            gap.as_secs_f64()
        );
    }
    let longest_pause = gaps.iter().map(|g| g.1).max().unwrap_or_default();
    eprintln!(
        "CLUSTER {} Fire calls at {reached:.0}/s (paced {pace}/s): {} OK, {} UNAVAILABLE in {} \
         runs, longest {:.2}s; slowest OK {:.2}s; longest pause of deliveries {:.2}s; \
         {} requests, all final {:.1}s after the load",
        fired.calls,
        ids.len(),
        fired.unavailable,
        runs.len(),
        longest_unavailable.as_secs_f64(),
        slowest_ok.as_secs_f64(),
        longest_pause.as_secs_f64(),
        requests.len(),
        (drained - load_end).as_secs_f64()
    );
    Row {
        scenario: "3-node cluster: work-queue leader `kill -9` + restart, then rolling \
                   `stop_app` / `start_app`",
        fired: fired.calls,
        confirmed: ids.len(),
        unavailable: fired.unavailable,
        delivered: ids.len() - never_received,
        failed: 0,
        lost,
        duplicates,
        unconfirmed_delivered,
        bound: format!(
            "≤ {bound} ({FAILURES} failures × ({SENDERS} senders × 2 × prefetch {PREFETCH} + \
             {} in a 200 ms delay queue)); {reached:.0} Fire/s; UNAVAILABLE {} calls, longest \
             run {:.1} s; deliveries paused ≤ {:.1} s",
            pace / 5,
            fired.unavailable,
            longest_unavailable.as_secs_f64(),
            longest_pause.as_secs_f64()
        ),
    }
    .print();
    drop(senders);
}
