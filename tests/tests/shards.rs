//! Sharded work queues (`HERALD_WORK_QUEUES`) end to end: ingest spreads
//! deliveries over four work queues by delivery id, two real
//! `herald-sender` processes consume all four, and every retry goes through
//! the delay queue of the delivery's own shard and back. Ingest runs
//! in-process; the database, broker and receiver are real.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald_tests::TestEnv;
use herald_tests::load::{
    assert_all_succeeded, fire_closed_loop, recorded, requests_per_delivery, wait_all_final,
};
use herald_tests::process::SenderProcess;
use herald_tests::receiver::{Receiver, Reply};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

const EVENT: &str = "shard.test";
const SHARDS: u16 = 4;
const EVENTS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_spread_over_four_work_queues_and_retry_in_their_shard() {
    let started = Instant::now();
    // An immediate first attempt, a retry 200 ms later (plus the 5 s
    // parking queue and the 30 s one for open breakers), so each delivery
    // takes one round trip through its shard's delay queue.
    let mut env = TestEnv::new("0s,200ms").await.unwrap();
    env.queue.work_queues = SHARDS;
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    // The first request of each delivery fails, the second succeeds.
    let receiver =
        Receiver::start(|_, earlier| Reply::status(if earlier == 0 { 500 } else { 200 })).await;
    env.webhook(EVENT, "POST", &receiver.url("/shards")).await;
    // SenderProcess passes env.queue.work_queues as HERALD_WORK_QUEUES.
    let mut senders = Vec::new();
    for name in ["sender-a", "sender-b"] {
        senders.push(SenderProcess::start(&env, name, &[]).await.unwrap());
    }
    eprintln!("set-up: {:.1?}", started.elapsed());

    let fired = tokio::time::timeout(
        Duration::from_secs(60),
        fire_closed_loop(&env, EVENT, EVENTS, 32),
    )
    .await
    .expect("firing within 60 s");
    assert!(
        fired.unavailable == 0 && fired.other.is_empty(),
        "every Fire is confirmed: {fired:?}"
    );
    let ids = fired.confirmed;
    assert_eq!(ids.len(), EVENTS);
    eprintln!("fired {EVENTS} events: {:.1?}", started.elapsed());

    // The ids reach every shard; since a delivery only ever lives in its
    // shard, every delivery finishing below means every shard's work queue
    // was consumed and every shard's delay queue led back to it.
    let topology = env.queue.topology();
    let shards: HashSet<u16> = ids
        .iter()
        .map(|id| topology.shard_of(id.as_bytes()))
        .collect();
    assert_eq!(shards.len(), usize::from(SHARDS), "ids in every shard");

    wait_all_final(&env, &ids, Duration::from_secs(60)).await;
    eprintln!("all final: {:.1?}", started.elapsed());
    let retried = assert_all_succeeded(&ids, &recorded(&env, &ids).await);
    assert_eq!(retried, EVENTS, "every delivery needed its second attempt");
    let per_id = requests_per_delivery(&receiver);
    assert_eq!(per_id.len(), EVENTS, "the receiver got every delivery");
    for id in &ids {
        assert_eq!(
            per_id.get(id),
            Some(&2),
            "delivery {id}: one failed request, then one success"
        );
    }

    // Both senders took part.
    for sender in &senders {
        let succeeded = sender.deliveries("succeeded").await.unwrap();
        assert!(succeeded > 0.0, "{} delivered nothing", sender.name);
    }

    // Once the senders are gone (their unacked messages back in the
    // queues), nothing is left in any shard's work or delay queue.
    for sender in &senders {
        sender.sigterm().unwrap();
    }
    for sender in &mut senders {
        let status = sender.wait_exit(Duration::from_secs(20)).await.unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exits cleanly: {status:?}",
            sender.name
        );
    }
    assert_eq!(env.queued_messages().await, 0, "no message left queued");
    assert_eq!(env.dead_letter_count().await, 0);

    // Deleting the topology removes every shard's queues.
    let connection = herald_queue::connect(&env.queue, "test-shards")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.delete(&channel).await.unwrap();
    let mut queues = topology.work_queues();
    queues.extend(topology.delay_queues());
    queues.push(topology.dead_queue());
    assert_eq!(queues.len(), 4 + 4 * 3 + 1, "4 work, 12 delay, 1 dead");
    for queue in queues {
        // A missing queue closes the channel it was asked on.
        let channel = connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        assert!(
            channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .is_err(),
            "{queue} was deleted"
        );
    }
    let _ = connection.close(200, "done".into()).await;
    eprintln!("done: {:.1?}", started.elapsed());
}

#[tokio::test]
async fn requeued_dead_letters_go_back_to_their_own_shard() {
    let mut env = TestEnv::new("0s,200ms").await.unwrap();
    env.queue.work_queues = SHARDS;
    let topology = env.queue.topology();
    let connection = herald_queue::connect(&env.queue, "test-requeue")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare(&channel).await.unwrap();
    // Dead letters with ids in every shard (two in each), as a sender
    // leaves them: the body as queued, the id as message id.
    let publisher = herald_queue::Publisher::new(env.queue.clone(), "test-dead", 1);
    let mut expected = vec![0u32; usize::from(SHARDS)];
    let mut made = 0;
    while expected.iter().any(|n| *n < 2) {
        let id = uuid::Uuid::now_v7();
        let shard = usize::from(topology.shard_of(id.as_bytes()));
        if expected[shard] == 2 {
            continue;
        }
        expected[shard] += 1;
        made += 1;
        publisher
            .publish_dead(b"not a delivery", Some(id), "test")
            .await
            .unwrap();
    }
    let url = herald_tests::amqp_url();
    let moved = herald_cli::cmd::dead_letters::requeue(&url, &env.queue.prefix, SHARDS, 100)
        .await
        .unwrap();
    assert_eq!(moved, made);
    // Each message sits in the work queue its id hashes to.
    for (shard, want) in topology.shards().zip(expected) {
        let queue = channel
            .queue_declare(
                shard.work_queue().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(queue.message_count(), want, "{}", shard.work_queue());
    }
    publisher.manager().close().await;
    let _ = connection.close(200, "done".into()).await;
    // The environment deletes every shard's queues when dropped.
}
