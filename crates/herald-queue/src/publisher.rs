//! Publishing deliveries with publisher confirms.
//!
//! A publish succeeds only when the broker acknowledged it: the message is
//! then persisted in a durable queue. Concurrent publishes share channels and
//! each awaits its own confirm, so confirms pipeline instead of serialising
//! (one confirm at a time caps a channel at about 2k messages/s here).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use herald_proto::v1::DeliveryMessage;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};
use tracing::Instrument;
use uuid::Uuid;

use crate::topology::Route;
use crate::{ConnectionManager, QueueConfig, QueueError, Topology, Tracing};

/// AMQP delivery mode "persistent": the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Header of a message in the dead-letter queue that says why no sender
/// could finish it.
pub const DEAD_REASON_HEADER: &str = "x-herald-dead-reason";

/// Why a message in the dead-letter queue is there: its
/// [`DEAD_REASON_HEADER`], as [`Publisher::publish_dead`] wrote it.
pub fn dead_reason(properties: &BasicProperties) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers
        .inner()
        .get(&ShortString::from(DEAD_REASON_HEADER))?
    {
        AMQPValue::LongString(reason) => Some(reason.to_string()),
        _ => None,
    }
}

/// Properties of every message Herald publishes: persistent, protobuf, and
/// the delivery id as message id (for operators looking at a queue).
pub fn message_properties(delivery_id: Option<Uuid>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/x-protobuf".into());
    match delivery_id {
        Some(id) => properties.with_message_id(id.to_string().into()),
        None => properties,
    }
}

/// Confirmed, self-reconnecting publisher of deliveries.
/// An ordered delivery's route: its key's partition queue, whatever its
/// attempt (the sender that owns the partition waits out any delay itself);
/// `None` for every other delivery.
fn partition_route(topology: &Topology, message: &DeliveryMessage) -> Option<Route> {
    if message.ordering_key.is_empty() {
        return None;
    }
    let webhook_id = Uuid::from_slice(&message.webhook_id).unwrap_or_default();
    let partition = topology.partition_of(webhook_id, &message.ordering_key);
    Some(topology.partition_route(partition))
}

#[derive(Clone)]
pub struct Publisher {
    manager: Arc<ConnectionManager>,
    confirm_timeout: Duration,
    /// Registered once: a lookup by name on every publish showed in
    /// profiles of ingest.
    confirm_seconds: metrics::Histogram,
    tracing: Tracing,
}

/// The least time between two reconnects caused by nacks.
const NACK_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

impl Publisher {
    /// Creates the publisher; it connects on first use (or `ensure_connected`).
    /// Its metric is registered with the recorder installed now (if any).
    pub fn new(config: QueueConfig, name: impl Into<String>, channels: usize) -> Self {
        let confirm_timeout = config.confirm_timeout;
        let tracing = config.tracing.clone();
        Self {
            manager: Arc::new(ConnectionManager::new(config, name, channels)),
            confirm_timeout,
            confirm_seconds: metrics::histogram!("herald_publish_confirm_seconds"),
            tracing,
        }
    }

    pub fn manager(&self) -> &ConnectionManager {
        &self.manager
    }

    pub fn topology(&self) -> &Topology {
        self.manager.topology()
    }

    /// Whether the messages carry their trace context.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    pub async fn ensure_connected(&self) -> Result<(), QueueError> {
        self.manager.ensure_connected().await
    }

    /// Publishes a delivery to the queue of its `attempt`, in its shard
    /// (see [`Topology::shard_of`]), and waits for the broker's confirm.
    pub async fn publish(&self, message: &DeliveryMessage) -> Result<(), QueueError> {
        let topology = self.topology();
        if let Some(route) = partition_route(topology, message) {
            return self.publish_to(&route, message).await;
        }
        let route = topology
            .shard(topology.shard_of(&message.delivery_id))
            .route_for_attempt(message.attempt);
        self.publish_to(&route, message).await
    }

    /// Publishes a delivery straight to its shard's work queue, whatever its
    /// `attempt` (no delay queue), and waits for the broker's confirm. For
    /// test sends, which must not wait for the schedule's first delay.
    pub async fn publish_now(&self, message: &DeliveryMessage) -> Result<(), QueueError> {
        let topology = self.topology();
        if let Some(route) = partition_route(topology, message) {
            return self.publish_to(&route, message).await;
        }
        let route = topology
            .shard(topology.shard_of(&message.delivery_id))
            .route_after(Duration::ZERO);
        self.publish_to(&route, message).await
    }

    /// Publishes a delivery that must wait at least `delay` before it is
    /// offered again (see `Shard::route_at_least`), in its shard, and waits
    /// for the broker's confirm; returns the wait it really gets.
    pub async fn publish_after(
        &self,
        message: &DeliveryMessage,
        delay: Duration,
    ) -> Result<Duration, QueueError> {
        let shard = self.topology().shard_of(&message.delivery_id);
        self.publish_after_in(shard, message, delay).await
    }

    /// [`Self::publish_after`] into shard `shard`, whatever the delivery's
    /// id says: a sender retries and parks a delivery in the shard it took
    /// it from, so that a delivery never changes shards (not even when the
    /// shard count changed while it was queued). A shard beyond this
    /// publisher's count goes to the last one it knows.
    pub async fn publish_after_in(
        &self,
        shard: u16,
        message: &DeliveryMessage,
        delay: Duration,
    ) -> Result<Duration, QueueError> {
        let topology = self.topology();
        let shard = shard.min(topology.shard_count() - 1);
        let (route, wait) = topology.shard(shard).route_at_least(delay);
        self.publish_to(&route, message).await?;
        Ok(wait)
    }

    /// Publishes all messages concurrently; Ok only if every one was confirmed.
    pub async fn publish_all(&self, messages: &[DeliveryMessage]) -> Result<(), QueueError> {
        try_join_all(messages.iter().map(|m| self.publish(m))).await?;
        Ok(())
    }

    /// Publishes a message that no sender can ever finish to the dead-letter
    /// queue ([`Topology::dead_queue`]) and waits for the broker's confirm.
    /// `body` is the message as it was queued, or as far as it was readable;
    /// `reason` (for the operator) goes in the [`DEAD_REASON_HEADER`] header.
    pub async fn publish_dead(
        &self,
        body: &[u8],
        delivery_id: Option<Uuid>,
        reason: &str,
    ) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(
            DEAD_REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let properties = message_properties(delivery_id).with_headers(headers);
        self.publish_bytes(&self.topology().dead_route(), body, properties)
            .await
    }

    async fn publish_to(&self, route: &Route, message: &DeliveryMessage) -> Result<(), QueueError> {
        let delivery_id = Uuid::from_slice(&message.delivery_id).ok();
        let body = crate::encode(message);
        let properties = message_properties(delivery_id);
        if !self.tracing.is_on() {
            return self.publish_bytes(route, &body, properties).await;
        }
        // One producer span per message, the parent of the sender's wait
        // and attempt spans: its context goes into the message's headers.
        let span = tracing::info_span!(
            "herald.publish",
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = %route.routing_key,
            herald.delivery_id = %delivery_id.unwrap_or_default(),
            herald.webhook_id = %Uuid::from_slice(&message.webhook_id).unwrap_or_default(),
            herald.attempt = message.attempt,
            error.type = tracing::field::Empty,
        );
        let properties = span.in_scope(|| crate::trace::with_current_context(properties));
        let published = self
            .publish_bytes(route, &body, properties)
            .instrument(span.clone())
            .await;
        if let Err(e) = &published {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", e.kind());
        }
        published
    }

    async fn publish_bytes(
        &self,
        route: &Route,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let (live, channel) = self.manager.channel().await?;
        let pending = channel
            .basic_publish(
                route.exchange.as_str().into(),
                route.routing_key.as_str().into(),
                // Mandatory: an unroutable message (a queue deleted under us)
                // comes back instead of vanishing with a positive confirm.
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            )
            .await;
        let pending = match pending {
            Ok(pending) => pending,
            Err(source) => {
                self.manager.invalidate(&live);
                return Err(QueueError::Unavailable {
                    reason: format!("publishing failed: {source}"),
                    source: Some(source),
                });
            }
        };
        let started = std::time::Instant::now();
        let confirmed = tokio::time::timeout(self.confirm_timeout, pending).await;
        self.confirm_seconds.record(started.elapsed().as_secs_f64());
        match confirmed {
            Err(_) => {
                self.manager.invalidate(&live);
                Err(QueueError::ConfirmTimeout(self.confirm_timeout))
            }
            Ok(Err(source)) => {
                self.manager.invalidate(&live);
                Err(QueueError::Unavailable {
                    reason: format!("the confirm was lost: {source}"),
                    source: Some(source),
                })
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                Err(QueueError::Unroutable(route.routing_key.clone()))
            }
            Ok(Ok(Confirmation::Nack(_))) => {
                // A nack can be for good: on a cluster, a channel that was
                // open when the work queue's leader died kept receiving a nack
                // for every publish (RabbitMQ 3.10, tests/tests/cluster.rs).
                // A fresh connection, on the next node, gets a fresh channel.
                // A full work queue (reject-publish) nacks every publish
                // too, so reconnect at most once a second for nacks.
                self.manager
                    .invalidate_if_older(&live, NACK_RECONNECT_INTERVAL);
                Err(QueueError::Nacked)
            }
            Ok(Ok(Confirmation::NotRequested)) => Err(QueueError::Unavailable {
                reason: "the channel is not in confirm mode".into(),
                source: None,
            }),
        }
    }
}
