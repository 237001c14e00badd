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
//! not sent again. After a connection is lost, a key task starts no new
//! attempt: the messages belong to whichever sender the broker picks next.
//!
//! This module must not publish anything but dead letters: the order lives
//! in the partition queue, and a republished message would lose its place.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use herald_core::backoff::Backoff;
use herald_core::ordering::OnFinalFailure;
use herald_core::retry::{self, Next};
use herald_core::{DeliveryState, Webhook};
use herald_proto::v1::DeliveryMessage;
use herald_queue::Topology;
use herald_store::{AttemptRecord, OrderingStore, WriteRequest};
use lapin::Acker;
use lapin::message::Delivery;
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

/// The partitions this sender consumes over one broker connection: each
/// key's waiting messages, and what every key task needs.
pub(crate) struct Partitions {
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    acks: Arc<Acks>,
    ordering: OrderingStore,
    /// Cancelled when the connection is gone or the sender shuts down: no
    /// key task starts another attempt after that.
    lost: CancellationToken,
    tracker: TaskTracker,
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

impl Partitions {
    pub(crate) fn new(
        shared: Arc<Shared>,
        topology: Arc<Topology>,
        acks: Arc<Acks>,
        ordering: OrderingStore,
        lost: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            topology,
            acks,
            ordering,
            lost,
            tracker,
            keys: Mutex::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
        })
    }

    /// Takes a message of a partition: it runs now if its key is idle, or
    /// after the key's earlier messages.
    pub(crate) fn received(self: &Arc<Self>, delivery: Delivery) {
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
                    self.ordering.progress(delivery_id)
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
                            self.ordering
                                .stop(webhook_id, &message.ordering_key, delivery_id)
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
                    self.ordering.stopped_by(webhook_id, &message.ordering_key)
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
            match self.attempt(delivery_id, &webhook, message).await {
                Step::Retry(delay) => {
                    message.attempt += 1;
                    due = SystemTime::now() + delay;
                }
                Step::Done(Settle::Ack, Next::Fail) if stops => {
                    self.forget_running(&key);
                    self.until_ok("stopping the key", || {
                        self.ordering
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
        let mut record = process::record(
            delivery_id,
            webhook.id,
            message,
            payload,
            webhook.url.clone(),
            webhook.method.as_str().to_owned(),
        );
        record.attempts = message.attempt;
        record.last_status_code = outcome.status_code;
        record.last_error = outcome.error.as_ref().map(ToString::to_string);
        record.last_attempt_at = Some(outcome.started_at);
        let attempt = AttemptRecord {
            delivery_id,
            attempt: message.attempt,
            started_at: outcome.started_at,
            duration_ms: u32::try_from(outcome.duration.as_millis()).unwrap_or(u32::MAX),
            url: std::mem::take(&mut outcome.url),
            status_code: outcome.status_code,
            error_kind: outcome.error.as_ref().map(|e| e.kind.as_str()),
            error_message: outcome.error.as_ref().map(|e| e.message.clone()),
            response_excerpt: outcome.response_excerpt.take(),
        };
        let topology = &self.topology;
        let next = retry::decide(
            process::retry_outcome(&outcome),
            message.attempt,
            topology.schedule(),
            topology.declared_delays(),
        );
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
