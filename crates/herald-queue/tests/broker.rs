//! Against the real RabbitMQ: the topology declares idempotently, a zero
//! delay goes straight to the work queue, and a delay queue holds a message
//! for its TTL before dead-lettering it to the work queue (of its own shard,
//! when there are several).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald_proto::v1::DeliveryMessage;
use herald_queue::{Publisher, QueueConfig, QueueType};
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;

fn amqp_url() -> String {
    std::env::var("HERALD_TEST_AMQP_URL").unwrap_or_else(|_| herald_queue::DEFAULT_AMQP_URL.into())
}

fn message(attempt: u32) -> DeliveryMessage {
    DeliveryMessage {
        delivery_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        attempt,
        event: "e".into(),
        ..Default::default()
    }
}

async fn delay_round_trip(queue_type: QueueType) {
    let prefix = format!("herald-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = QueueConfig::new(amqp_url(), &prefix);
    config.queue_type = queue_type;
    config.schedule = "0s,300ms".parse().unwrap();
    let publisher = Publisher::new(config.clone(), "test", 2);
    publisher.ensure_connected().await.unwrap();
    // Declaring a second time (as a second service would) is harmless.
    let other = Publisher::new(config.clone(), "test-2", 1);
    other.ensure_connected().await.unwrap();

    let connection = herald_queue::connect(&config, "test-consumer")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            publisher.topology().work_queue().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let started = Instant::now();
    let delayed = message(2);
    let immediate = message(1);
    publisher.publish(&delayed).await.unwrap();
    publisher.publish(&immediate).await.unwrap();

    let mut arrivals = Vec::new();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        let got = herald_queue::decode(&delivery.data).unwrap();
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        arrivals.push((got.attempt, started.elapsed()));
    }
    assert_eq!(arrivals[0].0, 1, "the immediate message arrives first");
    assert_eq!(arrivals[1].0, 2);
    assert!(
        arrivals[1].1 >= Duration::from_millis(300),
        "the delayed message waited its TTL: {arrivals:?}"
    );

    publisher.topology().delete(&channel).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn quorum_delay_queue_dead_letters_to_work_queue() {
    delay_round_trip(QueueType::Quorum).await;
}

#[tokio::test]
async fn classic_delay_queue_dead_letters_to_work_queue() {
    delay_round_trip(QueueType::Classic).await;
}

/// A message whose delivery id falls in shard `shard` of `shards`.
fn message_in(shard: u16, shards: u16, attempt: u32) -> DeliveryMessage {
    loop {
        let m = message(attempt);
        if herald_core::shard::shard_of(&m.delivery_id, shards) == shard {
            return m;
        }
    }
}

#[tokio::test]
async fn a_delayed_message_comes_back_to_its_own_shard() {
    const SHARDS: u16 = 3;
    let prefix = format!("herald-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = QueueConfig::new(amqp_url(), &prefix);
    config.schedule = "0s,300ms".parse().unwrap();
    config.work_queues = SHARDS;
    let publisher = Publisher::new(config.clone(), "test", 2);
    publisher.ensure_connected().await.unwrap();
    let topology = publisher.topology().clone();

    let connection = herald_queue::connect(&config, "test-consumer")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // One consumer per shard, each arrival tagged with the shard it came
    // from.
    let mut consumers = Vec::new();
    for shard in topology.shards() {
        let consumer = channel
            .basic_consume(
                shard.work_queue().into(),
                format!("shard-{}", shard.index()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let index = shard.index();
        consumers.push(consumer.map(move |d| (index, d)));
    }
    let mut arrivals = futures_util::stream::select_all(consumers);

    // Per shard: a delayed attempt routed by its id, and a park into the
    // shard by index although the id hashes elsewhere (what a sender does
    // with a delivery it took from that shard).
    let mut expected = std::collections::HashMap::new();
    let started = Instant::now();
    for shard in 0..SHARDS {
        let by_id = message_in(shard, SHARDS, 2);
        publisher.publish(&by_id).await.unwrap();
        let parked = message_in((shard + 1) % SHARDS, SHARDS, 1);
        let wait = publisher
            .publish_after_in(shard, &parked, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(wait, Duration::from_millis(300));
        expected.insert(by_id.delivery_id, shard);
        expected.insert(parked.delivery_id, shard);
    }
    while !expected.is_empty() {
        let (shard, delivery) = tokio::time::timeout(Duration::from_secs(10), arrivals.next())
            .await
            .unwrap_or_else(|_| panic!("still missing after 10 s: {expected:?}"))
            .unwrap();
        let delivery = delivery.unwrap();
        let got = herald_queue::decode(&delivery.data).unwrap();
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        assert_eq!(
            expected.remove(&got.delivery_id),
            Some(shard),
            "a message came back to shard {shard}, not its own"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "every message waited in a delay queue"
        );
    }

    topology.delete(&channel).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    // Deleting removed every shard's queues.
    let connection = herald_queue::connect(&config, "test-check").await.unwrap();
    for queue in topology
        .work_queues()
        .into_iter()
        .chain(topology.delay_queues())
    {
        let channel = connection.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
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
}

#[tokio::test]
async fn unreachable_broker_is_unavailable() {
    let mut config = QueueConfig::new("amqp://guest:guest@127.0.0.1:1/%2f", "herald-unreachable");
    config.connect_timeout = Duration::from_secs(2);
    let publisher = Publisher::new(config, "test", 1);
    let err = publisher.publish(&message(1)).await.unwrap_err();
    assert!(
        matches!(err, herald_queue::QueueError::Unavailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_publisher_reaches_the_live_node_of_a_list() {
    // The first and last nodes of the list are closed ports: whichever node
    // the publisher starts at, its confirmed publish lands on the live one.
    let closed = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let list = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f,{},amqp://guest:guest@127.0.0.1:{}/%2f",
        closed(),
        amqp_url(),
        closed()
    );
    let prefix = format!("herald-test-{}", uuid::Uuid::new_v4().simple());
    let config = QueueConfig::new(list, &prefix);
    for name in ["a", "b", "c"] {
        let publisher = Publisher::new(config.clone(), name, 1);
        publisher.publish(&message(1)).await.unwrap();
        publisher.manager().close().await;
    }
    cleanup(&config).await;
}

#[tokio::test]
async fn a_changed_quorum_group_size_is_refused_with_the_argument_named() {
    // RabbitMQ compares x-quorum-initial-group-size like the other queue
    // arguments: every service must declare the same value, and a changed
    // one is refused (PRECONDITION_FAILED) with a message naming it, never
    // applied silently to some queues and not others.
    let prefix = format!("herald-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = QueueConfig::new(amqp_url(), &prefix);
    config.quorum_initial_group_size = Some(3);
    for _ in 0..2 {
        let publisher = Publisher::new(config.clone(), "group-size", 1);
        publisher.ensure_connected().await.unwrap();
        publisher.manager().close().await;
    }
    config.quorum_initial_group_size = Some(1);
    let publisher = Publisher::new(config.clone(), "group-size", 1);
    let err = publisher.ensure_connected().await.unwrap_err();
    let chain = format!("{:?}", error_chain(&err));
    assert!(chain.contains("x-quorum-initial-group-size"), "{chain}");
    config.quorum_initial_group_size = Some(3);
    cleanup(&config).await;
}

fn error_chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(next) = source {
        chain.push(next.to_string());
        source = next.source();
    }
    chain
}

async fn cleanup(config: &QueueConfig) {
    let connection = herald_queue::connect(config, "test-cleanup").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    config.topology().delete(&channel).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
}
