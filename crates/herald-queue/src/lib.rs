//! Herald's use of RabbitMQ (lapin): the topology (work exchange and queue,
//! one TTL delay queue per distinct delay of the schedule; with several work
//! queues, those per shard; ordered delivery's partition queues), a
//! publisher that only reports success once the broker confirmed, routing
//! each delivery to its shard (an ordered one to its partition), reconnecting by
//! itself after the broker went away, and the consumer set-up senders use;
//! with tracing on, a delivery's trace context in its message headers
//! (`trace`).
//!
//! This crate owns every AMQP name and argument. It must not touch Postgres
//! or HTTP, and it knows nothing of what a delivery does beyond routing it.

mod connection;
mod publisher;
mod topology;
pub mod trace;

pub use connection::{Brokers, ConnectionManager, NodeCursor, connect, connect_via};
pub use publisher::{DEAD_REASON_HEADER, Publisher, dead_reason, message_properties};
pub use topology::Route;
pub use topology::{DEFAULT_ORDERED_PARTITIONS, QueueType, Shard, Topology};
pub use trace::Tracing;

use std::time::Duration;

use herald_core::{Payload, Schedule, Secret};
use herald_proto::v1::{DeliveryMessage, delivery_message};
use prost::Message as _;

/// The broker services and tools use unless told otherwise: the local
/// RabbitMQ with its default account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The queue name prefix (`HERALD_QUEUE_PREFIX`) unless told otherwise.
pub const DEFAULT_QUEUE_PREFIX: &str = "herald";

/// Deliveries a sender takes from the broker before it acks (AMQP prefetch)
/// unless configured otherwise. A delivery holds its slot until its write
/// batch commits and its ack goes out, so at 256 one sender draining a
/// backlog ran short of work and left the cores partly idle; 512 kept them
/// busier for little memory, and larger values gained nothing more, while
/// a sender repeats up to its prefetch after a crash (docs/performance.md,
/// item 14). The bench's consume baseline uses the same value.
pub const DEFAULT_PREFETCH: u16 = 512;

/// How a service reaches the broker and which topology it uses.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `amqp://user:pass@host:port/vhost`, or several such URLs separated
    /// by commas: the nodes of one cluster ([`Brokers`]). Never logged (it
    /// may hold a password), and `Debug` prints it redacted.
    pub amqp_url: Secret<String>,
    /// Prefix of every exchange and queue name, so that several Herald
    /// installations (or tests) can share one broker.
    pub prefix: String,
    pub queue_type: QueueType,
    /// How many cluster nodes hold a replica of each quorum queue when it
    /// is created (`x-quorum-initial-group-size`); `None` leaves it to
    /// RabbitMQ, which puts one on every node of the cluster.
    pub quorum_initial_group_size: Option<u16>,
    pub schedule: Schedule,
    /// How many work queues (shards) deliveries are spread over
    /// (`HERALD_WORK_QUEUES`); 1 is the layout without shards. Every
    /// service of an installation must use the same value.
    pub work_queues: u16,
    /// Partition queues of ordered delivery (`HERALD_ORDERED_PARTITIONS`).
    pub ordered_partitions: u16,
    /// How long a publish may wait for the broker's confirm.
    pub confirm_timeout: Duration,
    /// How long a (re)connect attempt may take.
    pub connect_timeout: Duration,
    /// Whether messages carry their trace context (off unless the service
    /// exports traces).
    pub tracing: Tracing,
}

impl QueueConfig {
    pub fn new(amqp_url: impl Into<Secret<String>>, prefix: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            prefix: prefix.into(),
            queue_type: QueueType::Quorum,
            quorum_initial_group_size: None,
            schedule: Schedule::default(),
            work_queues: 1,
            ordered_partitions: topology::DEFAULT_ORDERED_PARTITIONS,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tracing: Tracing::off(),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, self.queue_type, self.schedule.clone())
            .with_quorum_initial_group_size(self.quorum_initial_group_size)
            .with_work_queues(self.work_queues)
            .with_ordered_partitions(self.ordered_partitions)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The reason names what is wrong but never repeats the URL, which may
    /// hold a password.
    #[error("the AMQP URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("the message broker is unreachable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: Option<lapin::Error>,
    },
    #[error("the broker did not confirm the message within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker could not route the message to queue {0:?}: is the topology declared?")]
    Unroutable(String),
    #[error("AMQP error while {action}")]
    Amqp {
        action: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("a queue message could not be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl QueueError {
    pub fn amqp(action: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Amqp { action, source }
    }

    /// A short, stable name of the error's kind (a trace's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::Unavailable { .. } => "unavailable",
            Self::ConfirmTimeout(_) => "confirm_timeout",
            Self::Nacked => "nacked",
            Self::Unroutable(_) => "unroutable",
            Self::Amqp { .. } => "amqp",
            Self::Decode(_) => "decode",
        }
    }
}

/// Encodes a delivery for the queue.
pub fn encode(message: &DeliveryMessage) -> Vec<u8> {
    message.encode_to_vec()
}

/// The data field of a delivery message carrying `payload`.
pub fn message_data(payload: Payload) -> delivery_message::Data {
    match payload {
        Payload::Text(text) => delivery_message::Data::Text(text),
        Payload::Json(json) => delivery_message::Data::Json(json),
    }
}

/// The payload a delivery message's data field carries (none is empty text).
pub fn message_payload(data: Option<delivery_message::Data>) -> Payload {
    match data {
        Some(delivery_message::Data::Json(json)) => Payload::Json(json),
        Some(delivery_message::Data::Text(text)) => Payload::Text(text),
        None => Payload::Text(String::new()),
    }
}

/// When the delivery was fired, as its message says (a negative time, which
/// a sender dead-letters, reads as the epoch).
pub fn fired_at(message: &DeliveryMessage) -> std::time::SystemTime {
    std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(message.fired_at_unix_ms).unwrap_or(0))
}

/// Decodes a delivery taken from the queue.
pub fn decode(bytes: &[u8]) -> Result<DeliveryMessage, QueueError> {
    Ok(DeliveryMessage::decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_crosses_the_message_unchanged() {
        for payload in [
            Payload::Json("{\"a\":1}".into()),
            Payload::Text("hi".into()),
        ] {
            let data = message_data(payload.clone());
            assert_eq!(message_payload(Some(data)), payload);
        }
        assert_eq!(message_payload(None), Payload::Text(String::new()));
    }

    #[test]
    fn debug_of_the_config_hides_the_password() {
        let config = QueueConfig::new("amqp://herald:hunter2@broker:5672/%2f", "herald");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Secret([REDACTED])"), "{debug}");
    }
}
