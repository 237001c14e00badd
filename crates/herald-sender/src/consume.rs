//! The consume loop: one AMQP connection for consuming, re-established
//! after broker failures (with herald-core's jittered back-off, on the next
//! node of the list when several are configured), feeding one task per
//! delivery. It must not handle a delivery itself: `process` does,
//! and settles it through `acks`.
//!
//! With several work queues (`HERALD_WORK_QUEUES`) the one consumer channel
//! carries one consumer per shard: delivery tags are numbered per channel,
//! so the one `Acks` settles them all, and each delivery task knows which
//! shard it came from. The partition queues of ordered delivery each have a
//! channel of their own on the same connection (`ordered::Partitions`), so
//! that one partition can be handed to another sender by closing its
//! channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::stream::{self, select_all};
use herald_core::backoff::Backoff;
use herald_queue::{NodeCursor, QueueError};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::Acks;
use crate::ordered::Partitions;
use crate::{SenderConfig, Shared, process};

pub(crate) async fn consume_until_shutdown(
    config: &SenderConfig,
    shared: Arc<Shared>,
    shutdown: &CancellationToken,
) {
    let tracker = TaskTracker::new();
    // Shared with every delivery task: it holds the schedule and the delay
    // queues the retry decision chooses from.
    let topology = Arc::new(config.queue.topology());
    let shards = topology.shard_count();
    // Quorum queues refuse a channel-wide (global) prefetch, so the limit
    // is per consumer: each shard's consumer gets its share, rounded up,
    // and the sender holds at most about `prefetch` deliveries in all.
    let prefetch = config.prefetch.div_ceil(shards);
    // One consumer tag per shard; shard 0 keeps the sender's name.
    let tags: Vec<String> = (0..shards)
        .map(|shard| match shard {
            0 => config.name.clone(),
            k => format!("{}.{k}", config.name),
        })
        .collect();
    let mut backoff = Backoff::new();
    let node = NodeCursor::random();
    while !shutdown.is_cancelled() {
        let connection = match herald_queue::connect_via(&config.queue, &config.name, &node).await {
            // Shared with the partitions, which open channels of their own.
            Ok(connection) => Arc::new(connection),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?wait, "cannot connect to the broker");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        let consumer = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(QueueError::amqp("opening the consumer channel"))?;
            // Bounds the deliveries handed to us before we ack: back-pressure
            // from slow targets and from Postgres reaches the broker.
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(QueueError::amqp("setting the prefetch"))?;
            topology.declare(&channel).await?;
            let mut consumers = Vec::with_capacity(tags.len());
            for (shard, tag) in topology.shards().zip(&tags) {
                let consumer = channel
                    .basic_consume(
                        shard.work_queue().into(),
                        tag.as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(QueueError::amqp("starting the consumer"))?;
                let source = shard.index();
                // Each stream ends with a `None` of its own: `select_all`
                // would otherwise drop a finished consumer (cancelled by the
                // broker, say) silently and leave its shard unconsumed
                // while the others run on.
                consumers.push(
                    consumer
                        .map(move |delivery| (source, Some(delivery)))
                        .chain(stream::iter([(source, None)])),
                );
            }
            Ok::<_, QueueError>((channel, select_all(consumers)))
        }
        .await;
        let (channel, mut consumer) = match consumer {
            Ok(pair) => pair,
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?wait, "cannot start consuming");
                let _ = connection.close(200, "retrying".into()).await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        backoff.reset();
        let acks = Arc::new(Acks::new(channel.clone()));
        // Cancelled when this connection's consuming ends, for whatever
        // reason: ordered key tasks then start no new attempt.
        let lost = CancellationToken::new();
        // The partitions of ordered delivery, each on a channel of its own
        // (see `ordered`).
        Partitions::start(
            shared.clone(),
            topology.clone(),
            connection.clone(),
            &config.name,
            config.ordered_prefetch,
            lost.clone(),
            &tracker,
        );
        let stop_acks = CancellationToken::new();
        let flusher = tokio::spawn({
            let acks = acks.clone();
            let stop = stop_acks.clone();
            async move { acks.run(stop).await }
        });
        shared.consuming.store(true, Ordering::Relaxed);
        tracing::info!(
            queue = %topology.work_queue(),
            work_queues = shards,
            prefetch_per_queue = prefetch,
            "consuming"
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop new deliveries; those already received finish below.
                    lost.cancel();
                    for tag in &tags {
                        let _ = channel
                            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                            .await;
                    }
                    break;
                }
                next = consumer.next() => match next {
                    Some((shard, Some(Ok(delivery)))) => {
                        let shared = shared.clone();
                        acks.received(delivery.delivery_tag);
                        tracker.spawn(process::handle(shared, topology.clone(), shard, acks.clone(), delivery));
                    }
                    Some((shard, Some(Err(e)))) => {
                        tracing::warn!(error = %e, shard, "the consumer failed; reconnecting");
                        break;
                    }
                    Some((shard, None)) => {
                        tracing::warn!(shard, "the consumer ended; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("the consumers ended; reconnecting");
                        break;
                    }
                }
            }
        }
        shared.consuming.store(false, Ordering::Relaxed);
        lost.cancel();
        if shutdown.is_cancelled() {
            tracker.close();
            if tokio::time::timeout(config.drain_timeout, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = tracker.len(),
                    "drain timeout: unfinished deliveries go back to the broker"
                );
            }
            // The acks of the last finished deliveries, before the channel goes.
            stop_acks.cancel();
            let _ = flusher.await;
            if let Err(e) = acks.flush().await {
                tracing::warn!(error = %e, "the last acks could not be sent; those deliveries will be repeated");
            }
            let _ = connection.close(200, "shutting down".into()).await;
            return;
        }
        stop_acks.cancel();
        // Deliveries of the broken connection cannot be acked any more; the
        // broker redelivers them. Let their tasks finish their writes.
        metrics::counter!("herald_broker_reconnects_total").increment(1);
        let _ = connection.close(200, "reconnecting".into()).await;
    }
    tracker.close();
    let _ = tokio::time::timeout(config.drain_timeout, tracker.wait()).await;
}
