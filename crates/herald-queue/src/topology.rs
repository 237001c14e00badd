//! Exchange and queue names and their arguments.
//!
//! Layout under a prefix `p`:
//! - `p.work` (direct exchange) → `p.work` (queue, routing key `work`): what
//!   senders consume.
//! - `p.delay.<ms>ms` (one queue per distinct delay): messages wait there
//!   for the queue's TTL, then RabbitMQ dead-letters them to `p.work`.
//!
//! - `p.delay.5000ms` (herald-core's `PARK_DELAY`): where a sender parks a
//!   delivery whose webhook already has its maximum of requests in flight
//!   (a slow or hanging target), so that it does not hold a prefetch slot
//!   that a healthy webhook's delivery could use. Parking is not an attempt.
//! - `p.dead` (queue): messages no sender can ever finish — one that does not
//!   decode as a delivery, or one whose record Postgres refuses as data —
//!   kept for an operator instead of being dropped or redelivered forever.
//!   Nothing consumes it.
//!
//! Publishers reach a delay queue through the default exchange (routing key
//! = queue name), so no extra exchange or binding is needed. Queue names
//! carry their delay, so a changed schedule declares new queues next to the
//! old ones instead of clashing with their arguments; the old ones keep
//! draining into the work exchange.
//!
//! Which delays exist (and which queue a wait goes to) is herald-core's
//! [`DelayQueues`], the same value the retry decision chooses from; this
//! module only names and declares them.

use std::time::Duration;

use herald_core::Schedule;
use herald_core::retry::DelayQueues;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::QueueError;

/// Routing key of the work queue's binding.
const WORK_ROUTING_KEY: &str = "work";

/// The RabbitMQ queue type of every Herald queue (`HERALD_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Replicated Raft queues; dead-lettering can be at-least-once. The
    /// production choice.
    Quorum,
    /// Single-node queues; dead-lettering is at-most-once.
    Classic,
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quorum" => Ok(Self::Quorum),
            "classic" => Ok(Self::Classic),
            other => Err(format!(
                "{other:?} is not a queue type; use quorum or classic"
            )),
        }
    }
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        }
    }
}

/// Where a message goes: exchange and routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub exchange: String,
    pub routing_key: String,
}

/// The names and arguments of one Herald installation's queues.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    quorum_initial_group_size: Option<u16>,
    schedule: Schedule,
    /// The delays that get a delay queue, derived from the schedule.
    delays: DelayQueues,
}

impl Topology {
    pub fn new(prefix: &str, queue_type: QueueType, schedule: Schedule) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
            quorum_initial_group_size: None,
            delays: DelayQueues::for_schedule(&schedule),
            schedule,
        }
    }

    /// Replicas per quorum queue at creation; see
    /// `QueueConfig::quorum_initial_group_size`.
    pub fn with_quorum_initial_group_size(mut self, size: Option<u16>) -> Self {
        self.quorum_initial_group_size = size;
        self
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.prefix)
    }

    pub fn work_queue(&self) -> String {
        format!("{}.work", self.prefix)
    }

    /// The dead-letter queue: see the module documentation.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where to publish a message for the dead-letter queue: the default
    /// exchange routes by queue name, so it needs no exchange of its own.
    pub fn dead_route(&self) -> Route {
        Route {
            exchange: String::new(),
            routing_key: self.dead_queue(),
        }
    }

    pub fn delay_queue(&self, delay: Duration) -> String {
        format!("{}.delay.{}ms", self.prefix, delay.as_millis())
    }

    /// Every distinct delay that has a delay queue: the schedule's and the
    /// parking delay.
    pub fn declared_delays(&self) -> &DelayQueues {
        &self.delays
    }

    fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        self.delays.delays().iter().copied()
    }

    /// Where to publish a delivery that waits `delay` before its attempt.
    pub fn route_after(&self, delay: Duration) -> Route {
        if delay.is_zero() {
            // Nothing to wait for: straight to the senders.
            Route {
                exchange: self.work_exchange(),
                routing_key: WORK_ROUTING_KEY.to_owned(),
            }
        } else {
            Route {
                exchange: String::new(),
                routing_key: self.delay_queue(delay),
            }
        }
    }

    /// Where to publish a delivery that must wait at least `delay`: the
    /// shortest declared delay queue that waits that long, or the longest
    /// one when none does (only declared queues exist on the broker).
    /// Returns the route and the wait it really gives.
    pub fn route_at_least(&self, delay: Duration) -> (Route, Duration) {
        let chosen = self.delays.at_least(delay);
        (self.route_after(chosen), chosen)
    }

    /// Every delay queue's name (tests inspect and delete them).
    pub fn delay_queues(&self) -> Vec<String> {
        self.delays().map(|d| self.delay_queue(d)).collect()
    }

    /// Where to publish the 1-based `attempt` of a delivery.
    pub fn route_for_attempt(&self, attempt: u32) -> Route {
        self.route_after(self.schedule.delay_before(attempt).unwrap_or_default())
    }

    fn base_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            // Quorum queues replicate through Raft and survive a node loss;
            // they are also the faster type on this broker version.
            args.insert("x-queue-type".into(), long_string("quorum"));
            // RabbitMQ compares it like the other arguments, so every
            // service must declare the same value and a changed one is
            // refused with PRECONDITION_FAILED naming it; existing queues
            // are grown or shrunk with `rabbitmq-queues grow` / `shrink`
            // instead (docs/operations.md).
            if let Some(size) = self.quorum_initial_group_size {
                args.insert(
                    "x-quorum-initial-group-size".into(),
                    AMQPValue::LongInt(i32::from(size)),
                );
            }
        }
        args
    }

    fn delay_arguments(&self, delay: Duration) -> FieldTable {
        let mut args = self.base_arguments();
        // Every message waits exactly this long: a per-queue TTL means the
        // head of the queue always expires first, so nothing waits behind a
        // longer-lived message.
        let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
        // Expired messages are re-published to the work exchange with the
        // work routing key: that is what turns a TTL into a delay.
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.work_exchange()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(WORK_ROUTING_KEY),
        );
        if self.queue_type == QueueType::Quorum {
            // At-least-once dead-lettering keeps a message in the delay queue
            // until the work queue confirmed it, so a broker crash mid-move
            // cannot drop a delivery (classic queues dead-letter at most once).
            args.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            // Required by at-least-once: with drop-head overflow the broker
            // could discard messages; reject-publish refuses new ones instead,
            // which our confirmed publisher reports as a failure.
            args.insert("x-overflow".into(), long_string("reject-publish"));
        }
        args
    }

    /// Declares every exchange, queue and binding. Idempotent; a queue that
    /// exists with other arguments makes the broker close the channel with
    /// PRECONDITION_FAILED, which is reported as an error.
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.work_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("declaring the work exchange"))?;
        channel
            .queue_declare(
                self.work_queue().into(),
                durable_queue,
                self.base_arguments(),
            )
            .await
            .map_err(QueueError::amqp("declaring the work queue"))?;
        channel
            .queue_bind(
                self.work_queue().into(),
                self.work_exchange().into(),
                WORK_ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("binding the work queue"))?;
        for delay in self.delays() {
            channel
                .queue_declare(
                    self.delay_queue(delay).into(),
                    durable_queue,
                    self.delay_arguments(delay),
                )
                .await
                .map_err(QueueError::amqp("declaring a delay queue"))?;
        }
        // Only the queue type: no TTL (a dead message waits for an operator,
        // however long that takes) and no length limit (a limit would drop
        // or refuse exactly the messages an operator needs to see; a
        // RabbitMQ policy can still bound it without redeclaring).
        channel
            .queue_declare(
                self.dead_queue().into(),
                durable_queue,
                self.base_arguments(),
            )
            .await
            .map_err(QueueError::amqp("declaring the dead-letter queue"))?;
        Ok(())
    }

    /// Deletes everything `declare` made (tests use it to leave nothing behind).
    pub async fn delete(&self, channel: &Channel) -> Result<(), QueueError> {
        let mut queues = vec![self.work_queue(), self.dead_queue()];
        queues.extend(self.delays().map(|d| self.delay_queue(d)));
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await
                .map_err(QueueError::amqp("deleting a queue"))?;
        }
        channel
            .exchange_delete(
                self.work_exchange().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .map_err(QueueError::amqp("deleting the work exchange"))?;
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::retry::PARK_DELAY;
    use lapin::types::ShortString;

    #[test]
    fn names_carry_prefix_and_delay() {
        let t = Topology::new(
            "shop1",
            QueueType::Quorum,
            "0s,250ms,240s,240s".parse().unwrap(),
        );
        assert_eq!(t.work_queue(), "shop1.work");
        assert_eq!(t.dead_queue(), "shop1.dead");
        assert_eq!(
            t.dead_route(),
            Route {
                exchange: String::new(),
                routing_key: "shop1.dead".into()
            },
            "the default exchange routes to the dead-letter queue by its name"
        );
        assert_eq!(
            t.delay_queue(Duration::from_secs(240)),
            "shop1.delay.240000ms"
        );
        assert_eq!(
            t.declared_delays().delays(),
            &[
                Duration::from_millis(250),
                PARK_DELAY,
                Duration::from_secs(240)
            ]
        );
        assert_eq!(
            t.route_at_least(PARK_DELAY).0.routing_key,
            "shop1.delay.5000ms",
            "parked deliveries wait in their own delay queue"
        );
        assert_eq!(
            t.route_for_attempt(1),
            Route {
                exchange: "shop1.work".into(),
                routing_key: "work".into()
            }
        );
        assert_eq!(
            t.route_for_attempt(2),
            Route {
                exchange: String::new(),
                routing_key: "shop1.delay.250ms".into()
            }
        );
    }

    #[test]
    fn a_minimum_wait_takes_the_shortest_declared_queue_that_covers_it() {
        let t = Topology::new("p", QueueType::Quorum, "0s,250ms,240s".parse().unwrap());
        let wait = |ms: u64| {
            let (route, chosen) = t.route_at_least(Duration::from_millis(ms));
            (route.routing_key, chosen.as_millis())
        };
        assert_eq!(wait(0), ("work".to_owned(), 0));
        assert_eq!(wait(250), ("p.delay.250ms".to_owned(), 250));
        assert_eq!(wait(251), ("p.delay.5000ms".to_owned(), 5_000));
        assert_eq!(wait(120_000), ("p.delay.240000ms".to_owned(), 240_000));
        assert_eq!(
            wait(3_600_000),
            ("p.delay.240000ms".to_owned(), 240_000),
            "longer than every queue: the longest"
        );
    }

    #[test]
    fn quorum_delay_queues_dead_letter_at_least_once() {
        let t = Topology::new("p", QueueType::Quorum, Schedule::default());
        let args = t.delay_arguments(Duration::from_secs(5));
        let inner = args.inner();
        assert_eq!(
            inner.get(&ShortString::from("x-message-ttl")),
            Some(&AMQPValue::LongLongInt(5000))
        );
        assert!(inner.contains_key(&ShortString::from("x-dead-letter-strategy")));
        assert!(inner.contains_key(&ShortString::from("x-overflow")));
        let classic = Topology::new("p", QueueType::Classic, Schedule::default());
        let args = classic.delay_arguments(Duration::from_secs(5));
        assert!(
            !args
                .inner()
                .contains_key(&ShortString::from("x-dead-letter-strategy"))
        );
        assert!(
            !args
                .inner()
                .contains_key(&ShortString::from("x-queue-type"))
        );
    }
}
