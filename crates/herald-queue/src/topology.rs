//! Exchange and queue names and their arguments.
//!
//! Layout under a prefix `p`, with one work queue (`HERALD_WORK_QUEUES=1`,
//! the default):
//! - `p.work` (direct exchange) → `p.work` (queue, routing key `work`): what
//!   senders consume.
//! - `p.delay.<ms>ms` (one queue per distinct delay): messages wait there
//!   for the queue's TTL, then RabbitMQ dead-letters them to `p.work`.
//!
//! - `p.delay.5000ms` (herald-core's `PARK_DELAY`): where a sender parks a
//!   delivery whose webhook already has its maximum of requests in flight
//!   (a slow or hanging target), so that it does not hold a prefetch slot
//!   that a healthy webhook's delivery could use. Parking is not an attempt.
//! - `p.delay.30000ms` (herald-core's `BREAKER_PARK_DELAY`): where a sender
//!   parks most deliveries of a webhook whose circuit breaker is open, so
//!   that they come back about once per cool-down, not once per 5 s.
//! - `p.dead` (queue): messages no sender can ever finish — one that does not
//!   decode as a delivery, or one whose record Postgres refuses as data —
//!   kept for an operator instead of being dropped or redelivered forever.
//!   Nothing consumes it.
//!
//! With N work queues (shards), shard 0 is exactly the layout above, so
//! that going from one to several changes nothing already on the broker,
//! and each shard k from 1 to N-1 adds:
//! - `p.work.k` (queue, bound to the `p.work` exchange with routing key
//!   `work.k`);
//! - `p.work.k.delay.<ms>ms`, one per delay as above, dead-lettering to the
//!   `p.work` exchange with routing key `work.k`, i.e. back to `p.work.k`.
//!
//! A shard is a pipeline of its own: a delivery stays in it through every
//! retry and park, and herald-core's [`shard_of`](herald_core::shard::shard_of)
//! (a hash of the delivery id) says which shard a new delivery goes to. The
//! shard's delay queues carry its work queue's name as their prefix, so that
//! a listing sorted by name shows each shard together, and so that a policy
//! for the work queues (`^p\.work(\.\d+)?$`) does not catch them. `p.dead`
//! stays one queue for all shards.
//!
//! Publishers reach a delay queue through the default exchange (routing key
//! = queue name), so no extra exchange or binding is needed. Queue names
//! carry their delay, so a changed schedule declares new queues next to the
//! old ones instead of clashing with their arguments; the old ones keep
//! draining into the work exchange.
//!
//! - `p.ordered.<k>` for k below `HERALD_ORDERED_PARTITIONS` (bound to the
//!   `p.work` exchange with routing key `ordered.<k>`): the partition queues
//!   of ordered delivery (herald-core's [`ordering`](herald_core::ordering)).
//!   Each has `x-single-active-consumer`, so exactly one sender at a time
//!   receives a partition, in queue order. They are classic queues whatever
//!   `HERALD_QUEUE_TYPE` says: on RabbitMQ 3.10 a quorum queue hands the
//!   messages of a consumer that went away back to the next one out of
//!   order (new messages first, then the returned ones), which would break
//!   the order at exactly the moment a sender dies; a classic queue puts
//!   them back in their places (docs/ordering.md has the experiment).
//!   Ordered retries wait in the sender, so partitions have no delay queues.
//!
//! Which delays exist (and which queue a wait goes to) is herald-core's
//! [`DelayQueues`], the same value the retry decision chooses from; this
//! module only names and declares them.

use std::time::Duration;

use herald_core::Schedule;
use herald_core::ordering::{MAX_PARTITIONS, partition_of};
use herald_core::retry::DelayQueues;
use herald_core::shard::{MAX_WORK_QUEUES, shard_of};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use uuid::Uuid;

use crate::QueueError;

/// Partition queues of ordered delivery unless `HERALD_ORDERED_PARTITIONS`
/// says otherwise: enough that keys of a busy shop spread over several
/// senders, few enough that each sender's idle consumers cost nothing.
pub const DEFAULT_ORDERED_PARTITIONS: u16 = 16;

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
    /// How many work queues (shards), 1 to `MAX_WORK_QUEUES`.
    shards: u16,
    /// How many partition queues ordered delivery has, 1 to
    /// `herald_core::ordering::MAX_PARTITIONS`.
    partitions: u16,
}

impl Topology {
    pub fn new(prefix: &str, queue_type: QueueType, schedule: Schedule) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue_type,
            quorum_initial_group_size: None,
            delays: DelayQueues::for_schedule(&schedule),
            schedule,
            shards: 1,
            partitions: DEFAULT_ORDERED_PARTITIONS,
        }
    }

    /// Sets how many partition queues ordered delivery uses
    /// (`HERALD_ORDERED_PARTITIONS`), clamped to 1..=`MAX_PARTITIONS`.
    /// Every ingest and sender must agree on it: a changed count moves keys
    /// to other partitions, so change it only with no ordered delivery in
    /// flight (docs/ordering.md).
    pub fn with_ordered_partitions(mut self, count: u16) -> Self {
        self.partitions = count.clamp(1, MAX_PARTITIONS);
        self
    }

    /// How many partition queues there are.
    pub fn partition_count(&self) -> u16 {
        self.partitions
    }

    /// The partition of a webhook's deliveries with this key.
    pub fn partition_of(&self, webhook_id: Uuid, key: &str) -> u16 {
        partition_of(webhook_id, key, self.partitions)
    }

    /// `p.ordered.<k>`.
    pub fn partition_queue(&self, partition: u16) -> String {
        format!("{}.ordered.{partition}", self.prefix)
    }

    fn partition_routing_key(partition: u16) -> String {
        format!("ordered.{partition}")
    }

    /// Where an ordered delivery of this partition is published.
    pub fn partition_route(&self, partition: u16) -> Route {
        Route {
            exchange: self.work_exchange(),
            routing_key: Self::partition_routing_key(partition),
        }
    }

    /// Every partition queue, 0 first.
    pub fn partition_queues(&self) -> Vec<String> {
        (0..self.partitions)
            .map(|k| self.partition_queue(k))
            .collect()
    }

    fn partition_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        // Classic on purpose: see the module documentation.
        args.insert("x-queue-type".into(), long_string("classic"));
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        // A classic queue lives on one node: on a cluster, spread the
        // partitions over the nodes (the one holding the fewest queues gets
        // the next), so that a node down stops only its share of the keys.
        args.insert("x-queue-master-locator".into(), long_string("min-masters"));
        args
    }

    /// Spreads deliveries over `count` work queues (`HERALD_WORK_QUEUES`),
    /// clamped to 1..=`MAX_WORK_QUEUES`; see the module documentation.
    pub fn with_work_queues(mut self, count: u16) -> Self {
        self.shards = count.clamp(1, MAX_WORK_QUEUES);
        self
    }

    /// How many work queues (shards) there are.
    pub fn shard_count(&self) -> u16 {
        self.shards
    }

    /// The shard a delivery with this id goes to (herald-core's decision).
    pub fn shard_of(&self, delivery_id: &[u8]) -> u16 {
        shard_of(delivery_id, self.shards)
    }

    /// The names and routes of shard `index` (below `shard_count`).
    pub fn shard(&self, index: u16) -> Shard<'_> {
        debug_assert!(index < self.shards, "shard {index} of {}", self.shards);
        Shard {
            topology: self,
            index,
        }
    }

    /// Every shard, 0 first.
    pub fn shards(&self) -> impl Iterator<Item = Shard<'_>> + '_ {
        (0..self.shards).map(|index| self.shard(index))
    }

    /// Every shard's work queue, 0 first.
    pub fn work_queues(&self) -> Vec<String> {
        self.shards().map(|shard| shard.work_queue()).collect()
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

    /// Shard 0's work queue: the only one unless `HERALD_WORK_QUEUES` > 1.
    pub fn work_queue(&self) -> String {
        self.shard(0).work_queue()
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

    /// Shard 0's delay queue for `delay`.
    pub fn delay_queue(&self, delay: Duration) -> String {
        self.shard(0).delay_queue(delay)
    }

    /// Every distinct delay that has a delay queue: the schedule's and the
    /// parking delay.
    pub fn declared_delays(&self) -> &DelayQueues {
        &self.delays
    }

    fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        self.delays.delays().iter().copied()
    }

    /// Where to publish a delivery that waits `delay` before its attempt,
    /// in shard 0 (the CLI and tests; deliveries go by [`Self::shard`]).
    pub fn route_after(&self, delay: Duration) -> Route {
        self.shard(0).route_after(delay)
    }

    /// [`Shard::route_at_least`] of shard 0.
    pub fn route_at_least(&self, delay: Duration) -> (Route, Duration) {
        self.shard(0).route_at_least(delay)
    }

    /// Every shard's delay queues (tests inspect and delete them).
    pub fn delay_queues(&self) -> Vec<String> {
        self.shards()
            .flat_map(|shard| self.delays().map(move |d| shard.delay_queue(d)))
            .collect()
    }

    /// [`Shard::route_for_attempt`] of shard 0.
    pub fn route_for_attempt(&self, attempt: u32) -> Route {
        self.shard(0).route_for_attempt(attempt)
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

    fn delay_arguments(&self, shard: Shard<'_>, delay: Duration) -> FieldTable {
        let mut args = self.base_arguments();
        // Every message waits exactly this long: a per-queue TTL means the
        // head of the queue always expires first, so nothing waits behind a
        // longer-lived message.
        let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
        // Expired messages are re-published to the work exchange with the
        // shard's routing key: that is what turns a TTL into a delay, and
        // what keeps a delivery in its shard.
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.work_exchange()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&shard.routing_key()),
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
        for shard in self.shards() {
            channel
                .queue_declare(
                    shard.work_queue().into(),
                    durable_queue,
                    self.base_arguments(),
                )
                .await
                .map_err(QueueError::amqp("declaring a work queue"))?;
            channel
                .queue_bind(
                    shard.work_queue().into(),
                    self.work_exchange().into(),
                    shard.routing_key().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(QueueError::amqp("binding a work queue"))?;
            for delay in self.delays() {
                channel
                    .queue_declare(
                        shard.delay_queue(delay).into(),
                        durable_queue,
                        self.delay_arguments(shard, delay),
                    )
                    .await
                    .map_err(QueueError::amqp("declaring a delay queue"))?;
            }
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

    /// Declares one partition queue and binds it (after [`Self::declare`],
    /// which makes the exchange). Apart from the other queues because a
    /// partition is a classic queue: on a cluster, while the node that holds
    /// it is down, RabbitMQ refuses to declare it (NOT_FOUND, "home node …
    /// is down") and closes the channel, and that must not stop the rest of
    /// Herald from declaring and using its queues.
    pub async fn declare_partition(
        &self,
        channel: &Channel,
        partition: u16,
    ) -> Result<(), QueueError> {
        channel
            .queue_declare(
                self.partition_queue(partition).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                Self::partition_arguments(),
            )
            .await
            .map_err(QueueError::amqp("declaring a partition queue"))?;
        channel
            .queue_bind(
                self.partition_queue(partition).into(),
                self.work_exchange().into(),
                Self::partition_routing_key(partition).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("binding a partition queue"))?;
        Ok(())
    }

    /// Declares every partition queue, each on a channel of its own (see
    /// [`Self::declare_partition`]); returns the partitions that could not
    /// be declared, with why. A publish to one of those is unroutable or
    /// refused, so its Fire answers UNAVAILABLE and nothing is lost.
    pub async fn declare_partitions(
        &self,
        connection: &lapin::Connection,
    ) -> Vec<(u16, QueueError)> {
        let mut failed = Vec::new();
        for partition in 0..self.partitions {
            let declared = async {
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(QueueError::amqp("opening a channel"))?;
                self.declare_partition(&channel, partition).await?;
                let _ = channel.close(200, "declared".into()).await;
                Ok::<_, QueueError>(())
            }
            .await;
            if let Err(e) = declared {
                failed.push((partition, e));
            }
        }
        failed
    }

    /// Deletes everything `declare` made (tests use it to leave nothing behind).
    pub async fn delete(&self, channel: &Channel) -> Result<(), QueueError> {
        let mut queues = self.work_queues();
        queues.push(self.dead_queue());
        queues.extend(self.delay_queues());
        queues.extend(self.partition_queues());
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

/// One work queue with its delay queues: the names and routes of a shard.
#[derive(Debug, Clone, Copy)]
pub struct Shard<'a> {
    topology: &'a Topology,
    index: u16,
}

impl Shard<'_> {
    /// 0-based, below the topology's `shard_count`.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// `p.work` for shard 0 (today's name), `p.work.k` for shard k.
    pub fn work_queue(&self) -> String {
        match self.index {
            0 => format!("{}.work", self.topology.prefix),
            k => format!("{}.work.{k}", self.topology.prefix),
        }
    }

    /// The work queue's binding key on the work exchange: `work` for shard
    /// 0 (today's), `work.k` for shard k.
    pub fn routing_key(&self) -> String {
        match self.index {
            0 => WORK_ROUTING_KEY.to_owned(),
            k => format!("{WORK_ROUTING_KEY}.{k}"),
        }
    }

    /// `p.delay.<ms>ms` for shard 0 (today's name), `p.work.k.delay.<ms>ms`
    /// for shard k.
    pub fn delay_queue(&self, delay: Duration) -> String {
        let ms = delay.as_millis();
        match self.index {
            0 => format!("{}.delay.{ms}ms", self.topology.prefix),
            k => format!("{}.work.{k}.delay.{ms}ms", self.topology.prefix),
        }
    }

    /// Where to publish a delivery of this shard that waits `delay` before
    /// its attempt.
    pub fn route_after(&self, delay: Duration) -> Route {
        if delay.is_zero() {
            // Nothing to wait for: straight to the senders.
            Route {
                exchange: self.topology.work_exchange(),
                routing_key: self.routing_key(),
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
        let chosen = self.topology.delays.at_least(delay);
        (self.route_after(chosen), chosen)
    }

    /// Where to publish the 1-based `attempt` of a delivery of this shard.
    pub fn route_for_attempt(&self, attempt: u32) -> Route {
        self.route_after(
            self.topology
                .schedule
                .delay_before(attempt)
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::retry::{BREAKER_PARK_DELAY, PARK_DELAY};
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
                BREAKER_PARK_DELAY,
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
    fn one_work_queue_keeps_every_name_and_route() {
        // The rolling-upgrade promise: the default topology is the one
        // before sharding, name for name.
        let t = Topology::new("p", QueueType::Quorum, "5s,240s".parse().unwrap());
        assert_eq!(t.shard_count(), 1);
        assert_eq!(t.work_queues(), ["p.work"]);
        assert_eq!(
            t.delay_queues(),
            ["p.delay.5000ms", "p.delay.30000ms", "p.delay.240000ms"],
            "the parking delay is the schedule's 5 s; the breaker's is added"
        );
        let id = [7u8; 16];
        assert_eq!(t.shard_of(&id), 0);
        assert_eq!(t.shard(0).routing_key(), "work");
        let args = t.delay_arguments(t.shard(0), Duration::from_secs(5));
        assert_eq!(
            args.inner()
                .get(&ShortString::from("x-dead-letter-routing-key")),
            Some(&long_string("work"))
        );
    }

    #[test]
    fn each_shard_has_its_own_work_and_delay_queues() {
        let t =
            Topology::new("p", QueueType::Quorum, "5s,240s".parse().unwrap()).with_work_queues(3);
        assert_eq!(t.shard_count(), 3);
        assert_eq!(t.work_queues(), ["p.work", "p.work.1", "p.work.2"]);
        assert_eq!(
            t.delay_queues(),
            [
                "p.delay.5000ms",
                "p.delay.30000ms",
                "p.delay.240000ms",
                "p.work.1.delay.5000ms",
                "p.work.1.delay.30000ms",
                "p.work.1.delay.240000ms",
                "p.work.2.delay.5000ms",
                "p.work.2.delay.30000ms",
                "p.work.2.delay.240000ms",
            ]
        );
        assert_eq!(t.dead_queue(), "p.dead", "one dead-letter queue for all");
        let two = t.shard(2);
        assert_eq!(two.index(), 2);
        assert_eq!(two.routing_key(), "work.2");
        assert_eq!(
            two.route_after(Duration::ZERO),
            Route {
                exchange: "p.work".into(),
                routing_key: "work.2".into()
            },
            "the one work exchange routes to the shard by key"
        );
        assert_eq!(
            two.route_for_attempt(1).routing_key,
            "p.work.2.delay.5000ms"
        );
        assert_eq!(
            two.route_at_least(Duration::from_secs(31)),
            (
                Route {
                    exchange: String::new(),
                    routing_key: "p.work.2.delay.240000ms".into()
                },
                Duration::from_secs(240)
            )
        );
        // Its delay queues dead-letter back to its own work queue.
        for delay in [Duration::from_secs(5), Duration::from_secs(240)] {
            let args = t.delay_arguments(two, delay);
            let inner = args.inner();
            assert_eq!(
                inner.get(&ShortString::from("x-dead-letter-exchange")),
                Some(&long_string("p.work"))
            );
            assert_eq!(
                inner.get(&ShortString::from("x-dead-letter-routing-key")),
                Some(&long_string("work.2"))
            );
        }
        // Shard 0 is unchanged by the others.
        assert_eq!(t.route_for_attempt(1).routing_key, "p.delay.5000ms");
    }

    #[test]
    fn the_shard_count_is_clamped_and_follows_herald_core() {
        let t = |n| Topology::new("p", QueueType::Quorum, Schedule::default()).with_work_queues(n);
        assert_eq!(t(0).shard_count(), 1);
        assert_eq!(t(1_000).shard_count(), MAX_WORK_QUEUES);
        let four = t(4);
        let id = *uuid::Uuid::parse_str("01936b2e-7c4a-7d3e-9f10-2b6c8d4e5a71")
            .unwrap()
            .as_bytes();
        assert_eq!(four.shard_of(&id), shard_of(&id, 4));
        assert_eq!(four.shard_of(&id), 3, "herald-core's table value");
    }

    #[test]
    fn quorum_delay_queues_dead_letter_at_least_once() {
        let t = Topology::new("p", QueueType::Quorum, Schedule::default());
        let args = t.delay_arguments(t.shard(0), Duration::from_secs(5));
        let inner = args.inner();
        assert_eq!(
            inner.get(&ShortString::from("x-message-ttl")),
            Some(&AMQPValue::LongLongInt(5000))
        );
        assert!(inner.contains_key(&ShortString::from("x-dead-letter-strategy")));
        assert!(inner.contains_key(&ShortString::from("x-overflow")));
        let classic = Topology::new("p", QueueType::Classic, Schedule::default());
        let args = classic.delay_arguments(classic.shard(0), Duration::from_secs(5));
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
