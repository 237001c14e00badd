//! Ordered delivery per key (docs/ordering.md), end to end: real
//! `herald-sender` processes (one killed with SIGKILL half-way), a real
//! broker, Postgres and receiver; then, with in-process senders, lost broker
//! connections, the final-failure choices (stop and resume, continue) and a
//! slow key beside fast ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_proto::v1::{
    CreateWebhookRequest, FireRequest, ListStoppedKeysRequest, ResumeOrderingKeyRequest, Webhook,
    fire_request,
};
use herald_tests::load::{assert_all_succeeded, recorded, wait_all_final};
use herald_tests::process::SenderProcess;
use herald_tests::receiver::{Received, Receiver, Reply};
use herald_tests::{TestEnv, eventually};
use uuid::Uuid;

const EVENT: &str = "order.changed";

async fn ordered_webhook(env: &TestEnv, url: &str, on_failure: &str) -> Webhook {
    env.admin()
        .await
        .create_webhook(CreateWebhookRequest {
            event: EVENT.into(),
            method: "POST".into(),
            url: url.into(),
            body_mode: "json".into(),
            ordered: true,
            ordered_on_failure: on_failure.into(),
            ..Default::default()
        })
        .await
        .expect("ordered webhook created")
        .into_inner()
}

/// Fires `seq` of `key`; returns the one delivery id.
async fn fire(env: &TestEnv, key: &str, seq: usize) -> Uuid {
    let ids = env
        .ingest()
        .await
        .fire(FireRequest {
            event: EVENT.into(),
            data: Some(fire_request::Data::Json(format!(
                r#"{{"key":"{key}","seq":{seq}}}"#
            ))),
            ordering_key: key.into(),
            ..Default::default()
        })
        .await
        .expect("fire ok")
        .into_inner()
        .delivery_ids;
    assert_eq!(ids.len(), 1, "one webhook, one delivery");
    ids[0].parse().unwrap()
}

/// The key and sequence number a request carries.
fn key_seq(request: &Received) -> (String, usize) {
    let envelope: serde_json::Value =
        serde_json::from_slice(&request.body).expect("the receiver got JSON");
    // The json body mode sends the Standard Webhooks envelope.
    let body = &envelope["data"];
    (
        body["key"].as_str().expect("key").to_owned(),
        usize::try_from(body["seq"].as_u64().expect("seq")).unwrap(),
    )
}

/// Whether the first attempt of this delivery is refused: about 30 % of
/// ids, chosen by a hash so that the test needs no shared random state.
fn fails_first(id: &str) -> bool {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % 10 < 3
}

/// Per key, the sequence numbers in the order of their first successful
/// receipt (`succeeded` says which requests the receiver answered 2xx).
fn first_successes(
    requests: &[Received],
    succeeded: impl Fn(&Received, usize) -> bool,
) -> HashMap<String, Vec<usize>> {
    let mut seen_id: HashMap<String, usize> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut order: HashMap<String, Vec<usize>> = HashMap::new();
    for request in requests {
        let id = request.header("webhook-id").expect("webhook-id").to_owned();
        let n = *seen_id
            .entry(id.clone())
            .and_modify(|n| *n += 1)
            .or_insert(0);
        if succeeded(request, n) && done.insert(id) {
            let (key, seq) = key_seq(request);
            order.entry(key).or_default().push(seq);
        }
    }
    order
}

/// A receiver that answers 503 to the first attempt of the deliveries
/// [`fails_first`] picks, and 200 to everything else.
async fn refusing_first_receiver() -> Receiver {
    Receiver::start(|request, n| {
        if answered_ok(request, n) {
            Reply::status(200)
        } else {
            Reply::status(503)
        }
    })
    .await
}

/// Whether [`refusing_first_receiver`] answered this request 2xx (`n`:
/// earlier requests with its Webhook-Id).
fn answered_ok(request: &Received, n: usize) -> bool {
    n > 0 || !fails_first(request.header("webhook-id").unwrap_or_default())
}

/// Every one of `keys` keys (`order-0` …) arrived, and each key's first
/// successful receipts are its sequence numbers 0 … `per_key` - 1, in
/// order.
fn assert_fire_order(
    requests: &[Received],
    succeeded: impl Fn(&Received, usize) -> bool,
    keys: usize,
    per_key: usize,
) {
    let order = first_successes(requests, succeeded);
    assert_eq!(order.len(), keys, "every key arrived");
    let expected: Vec<usize> = (0..per_key).collect();
    for (key, seqs) in &order {
        assert_eq!(
            seqs, &expected,
            "key {key}: first successful receipts in Fire order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_in_fire_order_across_senders_and_a_kill() {
    const KEYS: usize = 10;
    const PER_KEY: usize = 100;
    let started = Instant::now();
    let mut env = TestEnv::new("0s,20ms,50ms,100ms,200ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let receiver = refusing_first_receiver().await;
    ordered_webhook(&env, &receiver.url("/ordered"), "stop").await;
    // Before the senders, so that they are dropped (killed) first: a sender
    // still running after the test environment removed its queues would
    // declare them again.
    let env = Arc::new(env);
    let mut senders = Vec::new();
    for name in ["sender-1", "sender-2", "sender-3"] {
        senders.push(SenderProcess::start(&env, name, &[]).await.unwrap());
    }
    eprintln!("set-up with 3 senders: {:.1?}", started.elapsed());

    // Each key fires its events one after the other (that is Fire order);
    // the keys fire side by side.
    let firing = Instant::now();
    let fires: Vec<_> = (0..KEYS)
        .map(|k| {
            let env = env.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(PER_KEY);
                for seq in 0..PER_KEY {
                    ids.push(fire(&env, &format!("order-{k}"), seq).await);
                }
                ids
            })
        })
        .collect();

    // The partitions' active consumer is the first sender that subscribed;
    // kill it once half the deliveries arrived, and start another.
    let half = KEYS * PER_KEY / 2;
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.requests().len() < half {
        assert!(
            Instant::now() < deadline,
            "half the deliveries within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    senders[0].sigkill().unwrap();
    eprintln!(
        "killed sender-1 after {} requests, {:.1?} after firing started",
        receiver.requests().len(),
        firing.elapsed()
    );
    senders.push(SenderProcess::start(&env, "sender-4", &[]).await.unwrap());

    let mut ids = Vec::new();
    for fire in fires {
        ids.extend(fire.await.unwrap());
    }
    wait_all_final(&env, &ids, Duration::from_secs(180)).await;
    let elapsed = firing.elapsed();
    assert_all_succeeded(&ids, &recorded(&env, &ids).await);

    let requests = receiver.requests();
    assert_fire_order(&requests, answered_ok, KEYS, PER_KEY);
    // A repeat is the same delivery (same Webhook-Id), never a new one.
    let mut ids_of: HashMap<(String, usize), HashSet<String>> = HashMap::new();
    for request in &requests {
        ids_of
            .entry(key_seq(request))
            .or_default()
            .insert(request.header("webhook-id").unwrap().to_owned());
    }
    assert!(
        ids_of.values().all(|ids| ids.len() == 1),
        "each event went out under one Webhook-Id"
    );
    let refused = requests
        .iter()
        .filter(|r| fails_first(r.header("webhook-id").unwrap()))
        .count();
    eprintln!(
        "{} deliveries in order: {} requests ({} beyond one per delivery), all final {elapsed:.1?} after firing started",
        ids.len(),
        requests.len(),
        requests.len() - ids.len(),
    );
    assert!(refused > 0, "some first attempts were refused");
    env.stop().await;
}

/// Waits until the receiver has `n` requests.
async fn wait_requests(receiver: &Receiver, n: usize) -> Vec<Received> {
    receiver.wait_for(n, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_failure_stops_the_key_until_it_is_resumed() {
    let env = TestEnv::start("0s,10ms,10ms").await.unwrap();
    // Sequence 1 fails until the receiver is mended.
    let mended = Arc::new(AtomicBool::new(false));
    let receiver = Receiver::start({
        let mended = mended.clone();
        move |request, _| {
            let (_, seq) = key_seq(request);
            if seq == 1 && !mended.load(Ordering::SeqCst) {
                Reply::status(500)
            } else {
                Reply::status(200)
            }
        }
    })
    .await;
    let webhook = ordered_webhook(&env, &receiver.url("/stop"), "").await;
    assert_eq!(webhook.ordered_on_failure, "stop", "stop is the default");
    let ids: Vec<Uuid> = {
        let mut ids = Vec::new();
        for seq in 0..4 {
            ids.push(fire(&env, "order-7", seq).await);
        }
        ids
    };
    let failed = env
        .wait_final(&ids[1].to_string(), Duration::from_secs(30))
        .await;
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.attempts, 3);
    for id in &ids[2..] {
        let held = env
            .wait_final(&id.to_string(), Duration::from_secs(30))
            .await;
        assert_eq!(held.state, "cancelled", "held back by the stop");
        let reason = held.last_error.unwrap();
        assert!(
            reason.starts_with("held: ordering key stopped")
                && reason.contains(&ids[1].to_string()),
            "{reason}"
        );
    }
    // Seq 0 once, seq 1 three times; nothing of 2 and 3.
    let got: Vec<usize> = receiver.requests().iter().map(|r| key_seq(r).1).collect();
    assert_eq!(got, [0, 1, 1, 1]);
    let stopped = env
        .admin()
        .await
        .list_stopped_keys(ListStoppedKeysRequest {
            webhook_id: webhook.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].ordering_key, "order-7");
    assert_eq!(stopped[0].stopped_by, ids[1].to_string());

    // Later fires of the key are held too; other keys go on.
    let later = fire(&env, "order-7", 4).await;
    assert_eq!(
        env.wait_final(&later.to_string(), Duration::from_secs(30))
            .await
            .state,
        "cancelled"
    );
    let other = fire(&env, "order-8", 0).await;
    assert_eq!(
        env.wait_final(&other.to_string(), Duration::from_secs(30))
            .await
            .state,
        "succeeded"
    );

    // Mend the receiver and resume with resend: 1, 2, 3, 4 arrive in order.
    mended.store(true, Ordering::SeqCst);
    let resumed = env
        .admin()
        .await
        .resume_ordering_key(ResumeOrderingKeyRequest {
            webhook_id: webhook.id.clone(),
            ordering_key: "order-7".into(),
            resend: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.stopped_by, ids[1].to_string());
    assert_eq!(
        resumed.delivery_ids.len(),
        4,
        "the failed one and three held"
    );
    for id in &resumed.delivery_ids {
        assert_eq!(
            env.wait_final(id, Duration::from_secs(30)).await.state,
            "succeeded"
        );
    }
    let requests = wait_requests(&receiver, 9).await;
    let order7: Vec<usize> = requests
        .iter()
        .map(key_seq)
        .filter(|(key, _)| key == "order-7")
        .map(|(_, seq)| seq)
        .collect();
    assert_eq!(order7, [0, 1, 1, 1, 1, 2, 3, 4]);
    // Resumed: nothing is stopped, and a second resume says so.
    let again = env
        .admin()
        .await
        .resume_ordering_key(ResumeOrderingKeyRequest {
            webhook_id: webhook.id.clone(),
            ordering_key: "order-7".into(),
            resend: false,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);
    assert!(
        again.message().contains("is not stopped"),
        "{}",
        again.message()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_lets_the_key_go_on_after_a_final_failure() {
    let env = TestEnv::start("0s,10ms").await.unwrap();
    let receiver = Receiver::start(|request, _| {
        if key_seq(request).1 == 1 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    ordered_webhook(&env, &receiver.url("/continue"), "continue").await;
    let mut ids = Vec::new();
    for seq in 0..4 {
        ids.push(fire(&env, "order-1", seq).await);
    }
    let states: Vec<String> = {
        let mut states = Vec::new();
        for id in &ids {
            states.push(
                env.wait_final(&id.to_string(), Duration::from_secs(30))
                    .await
                    .state,
            );
        }
        states
    };
    assert_eq!(states, ["succeeded", "failed", "succeeded", "succeeded"]);
    let got: Vec<usize> = receiver.requests().iter().map(|r| key_seq(r).1).collect();
    assert_eq!(
        got,
        [0, 1, 1, 2, 3],
        "the key went on after the failure, in order"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_does_not_slow_the_others() {
    const FAST_KEYS: usize = 9;
    const PER_KEY: usize = 10;
    const SLOW: Duration = Duration::from_millis(300);
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::start(|request, _| {
        if key_seq(request).0 == "slow" {
            Reply::after(SLOW, 200)
        } else {
            Reply::status(200)
        }
    })
    .await;
    ordered_webhook(&env, &receiver.url("/slow"), "").await;
    let env = Arc::new(env);
    let started = Instant::now();
    let fires: Vec<_> = std::iter::once("slow".to_owned())
        .chain((0..FAST_KEYS).map(|k| format!("fast-{k}")))
        .map(|key| {
            let env = env.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for seq in 0..PER_KEY {
                    ids.push(fire(&env, &key, seq).await);
                }
                (key, ids)
            })
        })
        .collect();
    let mut fast_ids = Vec::new();
    let mut slow_ids = Vec::new();
    for fire in fires {
        let (key, ids) = fire.await.unwrap();
        if key == "slow" {
            slow_ids = ids;
        } else {
            fast_ids.extend(ids);
        }
    }
    wait_all_final(&env, &fast_ids, Duration::from_secs(30)).await;
    let fast_done = started.elapsed();
    wait_all_final(&env, &slow_ids, Duration::from_secs(30)).await;
    let slow_done = started.elapsed();
    eprintln!(
        "{} fast deliveries over {FAST_KEYS} keys final after {fast_done:.2?}; \
         the slow key's {PER_KEY} ({SLOW:?} each, one at a time) after {slow_done:.2?}",
        fast_ids.len()
    );
    // The slow key needs PER_KEY × SLOW = 3 s on its own; the others must
    // not wait for it.
    assert!(
        fast_done < SLOW * u32::try_from(PER_KEY).unwrap() / 2,
        "the fast keys took {fast_done:?}"
    );
    assert!(slow_done >= SLOW * u32::try_from(PER_KEY).unwrap());
    eventually(
        Duration::from_secs(5),
        "slow key's requests recorded",
        || {
            let receiver = receiver.clone();
            async move { receiver.requests().len() == (FAST_KEYS + 1) * PER_KEY }
        },
    )
    .await;
    env.stop().await;
}

/// Closes, through `rabbitmqctl`, the broker connection named `name` (a
/// sender's consumer connection carries the sender's name); returns how
/// many were closed.
async fn close_connections_named(name: &str) -> usize {
    // The table form: its pids are what `close_connection` takes (the JSON
    // form writes them as `#PID<…>`, which it refuses).
    let listed = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in listed.lines().filter(|line| line.contains(&wanted)) {
        let pid = line.split('\t').next().expect("a connection's pid");
        let closing = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "herald test: connection lost"])
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(
            closing.status.success(),
            "closing {name}'s connection {pid}: {}",
            String::from_utf8_lossy(&closing.stderr)
        );
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_in_order_when_the_broker_connection_is_lost() {
    const KEYS: usize = 5;
    const PER_KEY: usize = 60;
    let mut env = TestEnv::new("0s,20ms,50ms,100ms,200ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let receiver = refusing_first_receiver().await;
    ordered_webhook(&env, &receiver.url("/lost"), "stop").await;
    let names: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| format!("{}-ordered-{n}", env.queue.prefix))
        .collect();
    for name in &names {
        let name = name.clone();
        env.start_sender(move |config| config.name = name)
            .await
            .unwrap();
    }
    let env = Arc::new(env);
    let fires: Vec<_> = (0..KEYS)
        .map(|k| {
            let env = env.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(PER_KEY);
                for seq in 0..PER_KEY {
                    ids.push(fire(&env, &format!("order-{k}"), seq).await);
                }
                ids
            })
        })
        .collect();
    // Cut the senders' consumer connections in turn while deliveries flow:
    // each cut hands the partitions, with their unacked messages, on.
    let total = KEYS * PER_KEY;
    let mut cuts = 0;
    for (step, who) in [0_usize, 1, 0].into_iter().enumerate() {
        let share = (step + 1) * total / 4;
        let deadline = Instant::now() + Duration::from_secs(60);
        while receiver.requests().len() < share {
            assert!(Instant::now() < deadline, "{share} requests within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cuts += close_connections_named(&names[who]).await;
    }
    assert!(cuts >= 2, "connections were cut ({cuts})");
    let mut ids = Vec::new();
    for fire in fires {
        ids.extend(fire.await.unwrap());
    }
    wait_all_final(&env, &ids, Duration::from_secs(120)).await;
    assert_all_succeeded(&ids, &recorded(&env, &ids).await);
    let requests = receiver.requests();
    assert_fire_order(&requests, answered_ok, KEYS, PER_KEY);
    eprintln!(
        "{} deliveries in order through {cuts} lost connections: {} requests",
        ids.len(),
        requests.len()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_partitions_spread_over_the_senders() {
    const KEYS: usize = 32;
    const PER_KEY: usize = 120;
    // Paced so that delivering lasts a few of the senders' 5 s rebalancing
    // rounds: 32 keys, one event every 40 ms each (800/s in all).
    const GAP: Duration = Duration::from_millis(40);
    let mut env = TestEnv::new("0s,20ms,50ms").await.unwrap();
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let receiver = Receiver::ok().await;
    ordered_webhook(&env, &receiver.url("/spread"), "stop").await;
    // Before the senders, so that they are dropped first (see above).
    let env = Arc::new(env);
    let mut senders = Vec::new();
    for name in ["sender-1", "sender-2", "sender-3"] {
        senders.push(SenderProcess::start(&env, name, &[]).await.unwrap());
    }
    let started = Instant::now();
    let fires: Vec<_> = (0..KEYS)
        .map(|k| {
            let env = env.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(PER_KEY);
                for seq in 0..PER_KEY {
                    ids.push(fire(&env, &format!("order-{k}"), seq).await);
                    tokio::time::sleep(GAP).await;
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for fire in fires {
        ids.extend(fire.await.unwrap());
    }
    wait_all_final(&env, &ids, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    assert_all_succeeded(&ids, &recorded(&env, &ids).await);
    assert_fire_order(&receiver.requests(), |_, _| true, KEYS, PER_KEY);
    let mut per_sender = Vec::new();
    for sender in &senders {
        per_sender.push(sender.deliveries("succeeded").await.unwrap());
    }
    eprintln!(
        "{} ordered deliveries over {KEYS} keys in {elapsed:.1?}; succeeded per sender: {per_sender:?}; {} requests",
        ids.len(),
        receiver.requests().len()
    );
    let working = per_sender.iter().filter(|n| **n > 0.0).count();
    assert!(
        working >= 2,
        "the busy partitions spread over the senders: {per_sender:?}"
    );
}
