//! The consume loop: one AMQP connection for consuming, re-established
//! after broker failures (with herald-core's jittered back-off, on the next
//! node of the list when several are configured), feeding one task per
//! delivery. It must not handle a delivery itself: `process` does,
//! and settles it through `acks`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use herald_core::backoff::Backoff;
use herald_queue::{NodeCursor, QueueError};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::Acks;
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
    let mut backoff = Backoff::new();
    let node = NodeCursor::random();
    while !shutdown.is_cancelled() {
        let connection = match herald_queue::connect_via(&config.queue, &config.name, &node).await {
            Ok(connection) => connection,
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
                .basic_qos(config.prefetch, BasicQosOptions::default())
                .await
                .map_err(QueueError::amqp("setting the prefetch"))?;
            topology.declare(&channel).await?;
            let consumer = channel
                .basic_consume(
                    topology.work_queue().into(),
                    config.name.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(QueueError::amqp("starting the consumer"))?;
            Ok::<_, QueueError>((channel, consumer))
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
        let stop_acks = CancellationToken::new();
        let flusher = tokio::spawn({
            let acks = acks.clone();
            let stop = stop_acks.clone();
            async move { acks.run(stop).await }
        });
        shared.consuming.store(true, Ordering::Relaxed);
        tracing::info!(queue = %topology.work_queue(), prefetch = config.prefetch, "consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop new deliveries; those already received finish below.
                    let _ = channel
                        .basic_cancel(config.name.as_str().into(), BasicCancelOptions::default())
                        .await;
                    break;
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let shared = shared.clone();
                        acks.received(delivery.delivery_tag);
                        tracker.spawn(process::handle(shared, topology.clone(), acks.clone(), delivery));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the consumer failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("the consumer ended; reconnecting");
                        break;
                    }
                }
            }
        }
        shared.consuming.store(false, Ordering::Relaxed);
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
