//! Ordered delivery: the deliveries of one (webhook, ordering key), one
//! after the other, in the order their partition queue holds them.
//!
//! RabbitMQ gives this sender a partition only while it is the partition's
//! single active consumer, and hands it the messages in queue (Fire) order.
//! Here each key gets one task that takes the key's messages in that order
//! and starts the next only when the previous one is settled: succeeded,
//! failed for good (then [`OnFinalFailure`] says whether the key goes on) or
//! cancelled. Retries wait *in this task*, with the message unacked, instead
//! of in a delay queue: a delay queue would let later messages of the key
//! overtake. Keys are independent: a failing key holds back only itself.
//!
//! A message stays unacked until it is settled, so when this sender dies or
//! loses the broker, RabbitMQ gives the partition's unacked messages, in
//! their original places, to the next consumer. A redelivered message may
//! already have attempts (or even a final state) recorded; its progress is
//! read from Postgres, so attempt numbers go on and a finished delivery is
//! not sent again. After a connection is lost, or once this sender hands a
//! partition on to spread the work ([`Partitions`]), a key task starts no
//! new attempt: the messages belong to whichever sender the broker picks
//! next.
//!
//! This module must not publish anything but dead letters: the order lives
//! in the partition queue, and a republished message would lose its place.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use herald_core::backoff::Backoff;
use herald_core::breaker::{self, Health};
use herald_core::ordering::OnFinalFailure;
use herald_core::retry::{self, Next};
use herald_core::{DeliveryState, Webhook};
use herald_proto::v1::DeliveryMessage;
use herald_queue::{QueueError, Topology};
use herald_store::WriteRequest;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::acks::Acks;
use crate::process::{self, Settle, Written};
use crate::stats::Fate;
use crate::{DeliveryInfo, Shared};

/// One message of a partition, decoded, waiting for its key's turn.
struct Queued {
    tag: u64,
    acker: Acker,
    /// The broker delivered it before (to this sender or another): its
    /// progress is read from Postgres before anything is sent.
    redelivered: bool,
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: DeliveryMessage,
}

/// One partition while this sender is subscribed to it on one channel (a
/// lease: the broker may hand the partition to this subscription, and this
/// sender gives it back by closing the channel): each key's waiting
/// messages, and what every key task needs.
struct Lease {
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    acks: Arc<Acks>,
    /// Cancelled when the lease ends (released, its channel or the
    /// connection gone, or the sender shutting down): no key task starts
    /// another attempt after that.
    lost: CancellationToken,
    /// The lease's key tasks: the channel closes only once they are done.
    tracker: TaskTracker,
    /// When the last message arrived: a partition this sender is working
    /// on, for the rebalancing.
    last_received: Mutex<Option<Instant>>,
    /// Keys with a running task, and the messages queued behind it.
    keys: Mutex<HashMap<(Uuid, String), VecDeque<Queued>>>,
    /// Keys read as not stopped since this connection began. Only the
    /// partition's owner stops a key and an operator only resumes one, so
    /// "not stopped" stays true until this sender itself stops the key: one
    /// lookup per key and connection instead of one per delivery.
    running: Mutex<HashSet<(Uuid, String)>>,
}

/// Keys remembered as not stopped, at most; beyond it the memory starts
/// over (the next delivery of each key looks it up again).
const MAX_REMEMBERED_KEYS: usize = 100_000;

impl Lease {
    /// Whether this sender worked on the partition since `since`: a
    /// message arrived, or a key still has messages.
    fn busy_since(&self, since: Instant) -> bool {
        let received = *self
            .last_received
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        received.is_some_and(|at| at >= since)
            || !self
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Takes a message of a partition: it runs now if its key is idle, or
    /// after the key's earlier messages.
    fn received(self: &Arc<Self>, delivery: Delivery) {
        *self
            .last_received
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.acks.received(delivery.delivery_tag);
        let Delivery {
            delivery_tag: tag,
            data,
            acker,
            redelivered,
            ..
        } = delivery;
        let (delivery_id, webhook_id, message) = match process::decode(&data) {
            Ok(decoded) => decoded,
            Err(undeliverable) => {
                // No key to keep in order: it cannot be sent at all.
                let this = self.clone();
                self.tracker.spawn(async move {
                    tracing::error!(reason = %undeliverable.reason, "a partition message no sender can process goes to the dead-letter queue");
                    let moved = process::dead_letter(
                        &this.shared,
                        &data,
                        undeliverable.delivery_id,
                        &undeliverable.reason,
                    )
                    .await;
                    process::settle(&this.acks, tag, acker, moved).await;
                });
                return;
            }
        };
        let queued = Queued {
            tag,
            acker,
            redelivered,
            delivery_id,
            webhook_id,
            message,
        };
        let key = (webhook_id, queued.message.ordering_key.clone());
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiting) = keys.get_mut(&key) {
            waiting.push_back(queued);
            return;
        }
        keys.insert(key.clone(), VecDeque::new());
        drop(keys);
        let this = self.clone();
        self.tracker
            .spawn(async move { this.run_key(key, queued).await });
    }

    /// Runs a key's messages in order until none is left, or until the
    /// connection is lost (the rest stay unacked for the broker to hand on).
    async fn run_key(self: Arc<Self>, key: (Uuid, String), first: Queued) {
        let mut next = Some(first);
        while let Some(queued) = next {
            if self.lost.is_cancelled() {
                // The lease ended: this message and the key's later ones go
                // back to the queue, in place, when the channel closes.
                return;
            }
            let Queued {
                tag,
                acker,
                redelivered,
                delivery_id,
                webhook_id,
                mut message,
            } = queued;
            let span = tracing::info_span!(
                "delivery",
                delivery_id = %delivery_id,
                webhook_id = %webhook_id,
                ordering_key = %key.1,
                attempt = message.attempt,
            );
            self.shared.stats.in_flight.increment(1.0);
            let settled = self
                .deliver(delivery_id, webhook_id, redelivered, &mut message)
                .instrument(span.clone())
                .await;
            self.shared.stats.in_flight.decrement(1.0);
            let Some(settled) = settled else {
                // Left unacked: the broker hands it, and the key's later
                // messages, to the partition's next consumer in order.
                return;
            };
            if settled == Settle::Requeue {
                // Not done, and a nack would put it back while this task
                // went on with the key's next message. Ending the lease
                // returns the whole partition in order instead (this
                // sender subscribes again). Only a stopping writer or a
                // dead-letter publish the broker refused lead here.
                self.lost.cancel();
                return;
            }
            process::settle(&self.acks, tag, acker, settled)
                .instrument(span)
                .await;
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            next = keys.get_mut(&key).and_then(VecDeque::pop_front);
            if next.is_none() {
                keys.remove(&key);
            }
        }
    }

    /// Carries one message to its end; `None` when the connection was lost
    /// (or the sender is stopping) before it got there.
    async fn deliver(
        &self,
        delivery_id: Uuid,
        webhook_id: Uuid,
        redelivered: bool,
        message: &mut DeliveryMessage,
    ) -> Option<Settle> {
        let schedule = self.topology.schedule();
        // When the first attempt is due: the schedule's first delay after
        // Fire, as for unordered deliveries.
        let mut due = herald_queue::fired_at(message)
            + schedule.delay_before(message.attempt).unwrap_or_default();
        let webhook = {
            let snapshot = self.shared.cache.snapshot();
            match snapshot.webhook(webhook_id) {
                Some(w) if w.enabled => Ok(w.clone()),
                Some(_) => Err("the webhook was disabled before this attempt; nothing was sent"),
                None => Err("the webhook was deleted before this attempt; nothing was sent"),
            }
        };
        let webhook = match webhook {
            Ok(webhook) => webhook,
            Err(reason) => {
                return Some(
                    process::cancel(&self.shared, delivery_id, webhook_id, message, reason).await,
                );
            }
        };
        let stops = webhook.ordered && webhook.on_failure == OnFinalFailure::Stop;
        if redelivered {
            let progress = self
                .until_ok("reading the delivery's progress", || {
                    self.shared.ordering.progress(delivery_id)
                })
                .await?;
            if let Some(progress) = progress {
                if is_final(progress.state) {
                    tracing::info!(
                        state = progress.state.as_str(),
                        "redelivered, but already finished; not sent again"
                    );
                    if stops && progress.state == DeliveryState::Failed {
                        // The sender before may have died between recording
                        // the failure and stopping the key: a stop too many
                        // can be resumed, a key that went on cannot be undone.
                        self.until_ok("stopping the key", || {
                            self.shared.ordering.stop(
                                webhook_id,
                                &message.ordering_key,
                                delivery_id,
                            )
                        })
                        .await?;
                    }
                    return Some(Settle::Ack);
                }
                if progress.attempts >= message.attempt {
                    message.attempt = progress.attempts + 1;
                    due = progress.next_attempt_at.unwrap_or_else(SystemTime::now);
                }
            }
        }
        let key = (webhook_id, message.ordering_key.clone());
        if stops && !self.remembered_running(&key) {
            let stopped_by = self
                .until_ok("reading whether the key is stopped", || {
                    self.shared
                        .ordering
                        .stopped_by(webhook_id, &message.ordering_key)
                })
                .await?;
            if stopped_by.is_none() {
                self.remember_running(key.clone());
            }
            if let Some(failed) = stopped_by.filter(|failed| *failed != delivery_id) {
                let reason = herald_store::ordering::held_reason(failed);
                return Some(
                    process::cancel(&self.shared, delivery_id, webhook_id, message, &reason).await,
                );
            }
        }
        loop {
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::select! {
                    () = self.lost.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            if self.lost.is_cancelled() {
                return None;
            }
            // An open breaker holds the key's delivery here (it is never
            // republished, so it keeps its place), not as an attempt.
            let mut probe = false;
            while self.shared.breakers.troubled(webhook_id) {
                match self.shared.breakers.gate(&webhook).await {
                    crate::breaker::Gate::Go => break,
                    crate::breaker::Gate::Probe => {
                        probe = true;
                        break;
                    }
                    crate::breaker::Gate::Park(remaining) => {
                        let wait =
                            remaining.clamp(Duration::from_millis(100), crate::breaker::REFRESH);
                        tokio::select! {
                            () = self.lost.cancelled() => return None,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            if let Some(limit) = crate::rate::limit_of(&webhook, self.shared.default_rate_limit) {
                // An ordered delivery waits its turn in the sender (the key's
                // next one waits behind it anyway); it is never parked.
                tokio::select! {
                    () = self.lost.cancelled() => return None,
                    _ = self.shared.rates.turn(webhook_id, limit, false) => {}
                }
            }
            match self.attempt(delivery_id, &webhook, probe, message).await {
                Step::Retry(delay) => {
                    message.attempt += 1;
                    due = SystemTime::now() + delay;
                }
                Step::Done(Settle::Ack, Next::Fail) if stops => {
                    self.forget_running(&key);
                    self.until_ok("stopping the key", || {
                        self.shared
                            .ordering
                            .stop(webhook_id, &message.ordering_key, delivery_id)
                    })
                    .await?;
                    tracing::warn!(
                        ordering_key = %message.ordering_key,
                        "failed for good; the ordering key is stopped until an operator resumes it"
                    );
                    return Some(Settle::Ack);
                }
                Step::Done(settle, _) => return Some(settle),
                Step::Lost => return None,
            }
        }
    }

    /// One attempt, recorded; what follows it.
    async fn attempt(
        &self,
        delivery_id: Uuid,
        webhook: &Webhook,
        probe: bool,
        message: &mut DeliveryMessage,
    ) -> Step {
        let shared = &self.shared;
        let payload = herald_queue::message_payload(message.data.clone());
        let info = DeliveryInfo {
            delivery_id,
            attempt: message.attempt,
            tenant: &message.tenant,
            event: &message.event,
            fired_at_unix_ms: message.fired_at_unix_ms,
            traceparent: None,
        };
        let mut outcome = Box::pin(shared.client.send(webhook, &payload, &info)).await;
        let finished = outcome.started_at + outcome.duration;
        shared.stats.attempt(&outcome);
        let (mut record, attempt) =
            process::attempted(delivery_id, webhook, message, payload, &mut outcome);
        let topology = &self.topology;
        let decided = process::retry_outcome(&outcome);
        let health = Health::of(&decided);
        let mut next = retry::decide(
            decided,
            message.attempt,
            topology.schedule(),
            topology.declared_delays(),
        );
        if probe && health == Some(Health::Down) {
            let park = topology.declared_delays().at_least(retry::PARK_DELAY);
            next = breaker::after_failed_probe(next, message.attempt, park);
        }
        if let Some(health) = health {
            let status = outcome.status_code;
            let notices = shared.breakers.record(webhook, health, status, probe).await;
            crate::operational::send_notices(shared, webhook, notices).await;
        }
        let (retry_in, fate) = match next {
            Next::Succeed => {
                tracing::info!(status = ?outcome.status_code, duration_ms = attempt.duration_ms, "delivered in order");
                record.state = DeliveryState::Succeeded;
                record.finished_at = Some(finished);
                (None, Fate::Succeeded)
            }
            Next::Retry { delay, .. } => {
                tracing::info!(error = process::failure(&outcome), wait = ?delay, "attempt failed; the key waits for the retry");
                record.state = DeliveryState::Pending;
                record.next_attempt_at = Some(SystemTime::now() + delay);
                (Some(delay), Fate::Retried)
            }
            Next::Fail => {
                tracing::info!(
                    error = process::failure(&outcome),
                    "attempt failed; delivery failed for good"
                );
                record.state = DeliveryState::Failed;
                record.finished_at = Some(finished);
                (None, Fate::Failed)
            }
            Next::Park { .. } => {
                unreachable!("the retry decision parks only a delivery that was not attempted")
            }
        };
        let failed = process::Failed::of(fate, &message.event, &record);
        let written = process::write_to(
            &shared.ordered_writer,
            WriteRequest {
                delivery: record,
                attempt: Some(attempt),
            },
        )
        .await;
        match written {
            Written::Stored => {}
            // The writer is stopping: the sender is shutting down.
            Written::Later => return Step::Lost,
            Written::Refused(refused) => {
                // The retry cannot carry it on here (it would need the
                // record), so it goes aside at once and the key goes on.
                let settle = Box::pin(process::dead_letter_refused(
                    shared,
                    delivery_id,
                    message,
                    refused,
                ))
                .await;
                return match settle {
                    Settle::Ack => Step::Done(Settle::Ack, Next::Fail),
                    Settle::Requeue => Step::Lost,
                };
            }
        }
        if let Some(failed) = failed {
            process::send_failed(shared, &message.tenant, failed).await;
        }
        shared.stats.count(fate);
        match retry_in {
            Some(delay) => Step::Retry(delay),
            None => Step::Done(Settle::Ack, next),
        }
    }

    fn remembered_running(&self, key: &(Uuid, String)) -> bool {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.contains(key)
    }

    fn remember_running(&self, key: (Uuid, String)) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.len() >= MAX_REMEMBERED_KEYS {
            running.clear();
        }
        running.insert(key);
    }

    fn forget_running(&self, key: &(Uuid, String)) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.remove(key);
    }

    /// Runs `op` until it succeeds, backing off between tries; `None` once
    /// the connection is lost. For the Postgres reads and writes a key's
    /// order depends on: skipping them would break the order, and a key
    /// simply waits while Postgres is away.
    async fn until_ok<T, F, Fut>(&self, what: &'static str, mut op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, herald_store::StoreError>>,
    {
        let mut backoff = Backoff::new();
        loop {
            match op().await {
                Ok(value) => return Some(value),
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?wait, "{what} failed; the key waits");
                    tokio::select! {
                        () = self.lost.cancelled() => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// What follows an ordered attempt.
enum Step {
    /// Attempt again after this wait, holding the key.
    Retry(Duration),
    /// Settled; the retry decision that ended it.
    Done(Settle, Next),
    /// Leave the message unacked (the connection is going).
    Lost,
}

fn is_final(state: DeliveryState) -> bool {
    matches!(
        state,
        DeliveryState::Succeeded | DeliveryState::Failed | DeliveryState::Cancelled
    )
}

/// How often a sender compares the partitions it works on with its share.
const REBALANCE_EVERY: Duration = Duration::from_secs(5);

/// The partition queues over one broker connection: one subscription
/// (channel, consumer, lease) per partition, and the rebalancing that
/// spreads busy partitions over the senders.
///
/// RabbitMQ 3.10 gives a single-active-consumer queue to its oldest
/// subscriber and never moves it while that one lives, so the first sender
/// to start would own every partition. Each sender therefore counts the
/// senders (the consumers of a partition queue: every sender subscribes to
/// every partition) and, while it works on more than its share
/// (partitions ÷ senders, rounded up), gives the surplus back: it stops
/// starting attempts there, lets the attempts in flight settle, and closes
/// that partition's channel, which returns its unacked messages in their
/// places and makes the next subscriber (another sender) the active one.
/// Then it subscribes again, at the back of the line.
pub(crate) struct Partitions {
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    connection: Arc<lapin::Connection>,
    /// The sender's name, for consumer tags.
    name: String,
    prefetch: u16,
    /// Cancelled when the connection is gone or the sender shuts down.
    lost: CancellationToken,
    /// Each partition's current lease, while subscribed.
    leases: Vec<Mutex<Option<Arc<Lease>>>>,
}

impl Partitions {
    /// Subscribes to every partition and starts the rebalancing, as tasks
    /// of `tracker` that end after `lost` is cancelled (and, for each
    /// partition, after its attempts in flight settled).
    pub(crate) fn start(
        shared: Arc<Shared>,
        topology: Arc<Topology>,
        connection: Arc<lapin::Connection>,
        name: &str,
        prefetch: u16,
        lost: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let count = topology.partition_count();
        let this = Arc::new(Self {
            shared,
            topology,
            connection,
            name: name.to_owned(),
            prefetch,
            lost,
            leases: (0..count).map(|_| Mutex::new(None)).collect(),
        });
        for partition in 0..count {
            tracker.spawn(this.clone().run_partition(partition));
        }
        tracker.spawn(this.rebalance());
    }

    /// Keeps one subscription to `partition` until the connection is lost.
    async fn run_partition(self: Arc<Self>, partition: u16) {
        let mut backoff = Backoff::new();
        while !self.lost.is_cancelled() {
            match self.subscribe(partition).await {
                Ok((channel, consumer)) => {
                    backoff.reset();
                    self.serve(partition, channel, consumer).await;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, partition, retry_in = ?wait, "cannot subscribe to a partition");
                    tokio::select! {
                        () = self.lost.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn subscribe(
        &self,
        partition: u16,
    ) -> Result<(lapin::Channel, lapin::Consumer), QueueError> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(QueueError::amqp("opening a partition channel"))?;
        // Declared here too, so that senders started before any ingest
        // consume it; a partition whose node is down fails here alone, and
        // is tried again with back-off.
        self.topology.declare_partition(&channel, partition).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(QueueError::amqp("setting the ordered prefetch"))?;
        // The queue is single-active-consumer: every sender subscribes,
        // and the broker sends to one at a time.
        let consumer = channel
            .basic_consume(
                self.topology.partition_queue(partition).into(),
                format!("{}.ordered.{partition}", self.name).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("starting a partition consumer"))?;
        Ok((channel, consumer))
    }

    /// Serves one subscription until its lease ends, then hands what it
    /// still holds back to the broker.
    async fn serve(&self, partition: u16, channel: lapin::Channel, mut consumer: lapin::Consumer) {
        let acks = Arc::new(Acks::new(channel.clone()));
        let lease = Arc::new(Lease {
            shared: self.shared.clone(),
            topology: self.topology.clone(),
            acks: acks.clone(),
            lost: self.lost.child_token(),
            tracker: TaskTracker::new(),
            last_received: Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
        });
        *self.leases[usize::from(partition)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(lease.clone());
        let stop_acks = CancellationToken::new();
        let flusher = tokio::spawn({
            let acks = acks.clone();
            let stop = stop_acks.clone();
            async move { acks.run(stop).await }
        });
        loop {
            tokio::select! {
                biased;
                () = lease.lost.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => lease.received(delivery),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, partition, "a partition consumer failed; subscribing again");
                        break;
                    }
                    None => {
                        tracing::warn!(partition, "a partition consumer ended; subscribing again");
                        break;
                    }
                }
            }
        }
        lease.lost.cancel();
        *self.leases[usize::from(partition)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        // Attempts in flight settle (and are acked) before the channel
        // closes, so that the next owner does not repeat them needlessly.
        lease.tracker.close();
        lease.tracker.wait().await;
        stop_acks.cancel();
        let _ = flusher.await;
        if let Err(e) = acks.flush().await {
            tracing::warn!(error = %e, partition, "the last acks of a partition could not be sent; those deliveries will be repeated");
        }
        // Every message still unacked goes back to the queue in its place,
        // and the partition's next subscriber becomes the active one.
        let _ = channel.close(200, "partition handed on".into()).await;
    }

    /// Every [`REBALANCE_EVERY`], gives back the busy partitions beyond this
    /// sender's share (see the type's documentation).
    async fn rebalance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REBALANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.lost.cancelled() => return,
                _ = tick.tick() => {}
            }
            let senders = match self.senders().await {
                Ok(senders) => senders.max(1),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot count the senders; no rebalancing this time");
                    continue;
                }
            };
            let share = usize::from(self.topology.partition_count()).div_ceil(senders);
            let since = Instant::now()
                .checked_sub(REBALANCE_EVERY * 2)
                .unwrap_or_else(Instant::now);
            let busy: Vec<(usize, Arc<Lease>)> = self
                .leases
                .iter()
                .enumerate()
                .filter_map(|(partition, lease)| {
                    let lease = lease.lock().unwrap_or_else(PoisonError::into_inner);
                    lease
                        .as_ref()
                        .filter(|lease| lease.busy_since(since))
                        .map(|lease| (partition, lease.clone()))
                })
                .collect();
            if busy.len() <= share {
                continue;
            }
            tracing::info!(
                busy = busy.len(),
                senders,
                share,
                "working on more partitions than this sender's share; handing the surplus on"
            );
            metrics::counter!("herald_ordered_partitions_handed_on_total")
                .increment((busy.len() - share) as u64);
            for (_, lease) in busy.iter().skip(share) {
                lease.lost.cancel();
            }
        }
    }

    /// How many senders subscribe to the partitions: the consumers of
    /// partition 0's queue (each sender has one there, active or waiting).
    async fn senders(&self) -> Result<usize, QueueError> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(QueueError::amqp("opening a channel to count senders"))?;
        let queue = channel
            .queue_declare(
                self.topology.partition_queue(0).into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("counting the partition's consumers"))?;
        let _ = channel.close(200, "counted".into()).await;
        Ok(usize::try_from(queue.consumer_count()).unwrap_or(1))
    }
}
