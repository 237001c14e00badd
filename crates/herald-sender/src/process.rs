//! One delivery, from the broker to its final ack or requeue.
//!
//! This module carries out what herald-core's [`retry::decide`] says
//! follows an attempt (or a busy webhook): it records, publishes and
//! settles, but decides nothing about retries itself. It must not name
//! queues (herald-queue's) nor build requests (`request`, `client`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::Either;
use herald_core::breaker::{self, Health};
use herald_core::ordering::OrderingKey;
use herald_core::retry::{self, IfRefused, Next};
use herald_core::{DeliveryState, EventName, Payload, Tenant};
use herald_proto::v1::DeliveryMessage;
use herald_queue::Topology;
use herald_store::{AttemptRecord, DeliveryRecord, StoreError, WriteError, WriteRequest};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use tracing::Instrument;
use uuid::Uuid;

use crate::acks::Acks;
use crate::breaker::Gate;
use crate::stats::Fate;
use crate::{DeliveryInfo, Shared};

/// Handles one delivery message: cancel, or attempt and record; then ack.
/// `shard` is the work queue it came from: its retry or park goes to that
/// shard's delay queues, so a delivery never leaves its shard.
///
/// A plain function returning the task's future, not an `async fn`: with a
/// large prefetch, thousands of these tasks wait at once (most for their
/// webhook's in-flight limit), so the future's size is the sender's memory
/// per delivery. An `async fn` would keep its arguments (the whole lapin
/// `Delivery`, over 400 bytes) for its entire life beside what it moved out
/// of them; here the message is decoded before the task exists, and the
/// future holds only the decoded message, the tag and the acker. The rarely
/// taken paths (a nack, a message for the dead-letter queue) are boxed so
/// that they add no size either.
pub(crate) fn handle(
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    shard: u16,
    acks: Arc<Acks>,
    delivery: Delivery,
) -> impl Future<Output = ()> + Send + 'static {
    let Delivery {
        delivery_tag: tag,
        data,
        acker,
        properties,
        ..
    } = delivery;
    let (delivery_id, webhook_id, mut message) = match decode(&data) {
        Ok(decoded) => {
            drop(data);
            decoded
        }
        Err(undeliverable) => {
            return Either::Left(Box::pin(async move {
                // Nothing can ever process it: requeueing would loop forever,
                // and dropping it would lose what an operator needs to see.
                tracing::error!(
                    reason = %undeliverable.reason,
                    delivery_id = ?undeliverable.delivery_id,
                    "a queue message no sender can process goes to the dead-letter queue"
                );
                let moved = dead_letter(
                    &shared,
                    &data,
                    undeliverable.delivery_id,
                    &undeliverable.reason,
                )
                .await;
                settle(&acks, tag, acker, moved).await;
            }));
        }
    };
    // Made before the task, so that the task holds the span but not the
    // message's properties.
    let span = crate::traces::delivery_span(
        shared.republisher.tracing(),
        &properties,
        delivery_id,
        webhook_id,
        &message,
        || topology.shard(shard).work_queue(),
    );
    drop(properties);
    Either::Right(async move {
        shared.stats.in_flight.increment(1.0);
        let route = ShardRoute {
            topology: &topology,
            shard,
        };
        let settled = deliver(&shared, route, delivery_id, webhook_id, &mut message)
            .instrument(span.clone())
            .await;
        settle(&acks, tag, acker, settled).instrument(span).await;
        shared.stats.in_flight.decrement(1.0);
    })
}

/// The topology (schedule and delay queues) and the shard a delivery was
/// consumed from: where its retry or park goes.
#[derive(Clone, Copy)]
struct ShardRoute<'a> {
    topology: &'a Topology,
    shard: u16,
}

/// How a delivery message leaves this sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done: its attempt is stored and whatever follows it (a retry, a park,
    /// a dead letter) is confirmed by the broker.
    Ack,
    /// Not done: it goes back to the queue, and another try, here or on
    /// another sender, repeats the attempt with the same delivery id.
    Requeue,
}

/// Acks a delivery that is done (with its neighbours, by the flusher: see
/// `acks`), or sends it back to the queue. The nack future is boxed: it is
/// rarely taken, and the task would otherwise carry its size.
pub(crate) async fn settle(acks: &Acks, tag: u64, acker: Acker, settle: Settle) {
    if settle == Settle::Ack {
        acks.finished(tag);
        return;
    }
    let result = Box::pin(acker.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    }))
    .await;
    acks.settled(tag);
    if let Err(e) = result {
        tracing::warn!(error = %e, "nack failed; the broker will redeliver");
    }
}

/// A queue message that no sender can ever process, and why.
#[derive(Debug)]
pub(crate) struct Undeliverable {
    pub(crate) delivery_id: Option<Uuid>,
    pub(crate) reason: String,
}

/// Latest `fired_at` a message may carry: 9999-12-31T23:59:59.999Z, the end
/// of what Postgres and the dashboards read as a timestamp.
const MAX_FIRED_AT_MS: i64 = 253_402_300_799_999;

/// The message and its two ids, or why it cannot be processed. Beyond
/// decoding, the fields that go into indexed or typed columns are checked
/// as Fire checks them, so that a message not made by ingest (published by
/// hand, or by a broken client) is moved aside here instead of being sent
/// and then refused by Postgres.
pub(crate) fn decode(data: &[u8]) -> Result<(Uuid, Uuid, DeliveryMessage), Undeliverable> {
    let message = herald_queue::decode(data).map_err(|e| Undeliverable {
        delivery_id: None,
        reason: format!("not a delivery message: {e}"),
    })?;
    let (Ok(delivery_id), Ok(webhook_id)) = (
        Uuid::from_slice(&message.delivery_id),
        Uuid::from_slice(&message.webhook_id),
    ) else {
        return Err(Undeliverable {
            delivery_id: None,
            reason: "the message has no valid delivery or webhook id".to_owned(),
        });
    };
    let invalid = |reason: String| Undeliverable {
        delivery_id: Some(delivery_id),
        reason,
    };
    Tenant::check(&message.tenant).map_err(|e| invalid(e.to_string()))?;
    EventName::check(&message.event).map_err(|e| invalid(e.to_string()))?;
    if !message.ordering_key.is_empty() {
        OrderingKey::check(&message.ordering_key).map_err(|e| invalid(e.to_string()))?;
    }
    if message.attempt == 0 {
        return Err(invalid("attempt: must be 1 or more".to_owned()));
    }
    if !(0..=MAX_FIRED_AT_MS).contains(&message.fired_at_unix_ms) {
        return Err(invalid(format!(
            "fired_at_unix_ms: {} is not a time between 1970 and 9999",
            message.fired_at_unix_ms
        )));
    }
    Ok((delivery_id, webhook_id, message))
}

/// Moves a message no sender can finish to the dead-letter queue; acked once
/// the broker confirmed it there.
pub(crate) async fn dead_letter(
    shared: &Shared,
    body: &[u8],
    delivery_id: Option<Uuid>,
    reason: &str,
) -> Settle {
    match shared
        .republisher
        .publish_dead(body, delivery_id, reason)
        .await
    {
        Ok(()) => {
            shared.stats.count(Fate::Dead);
            Settle::Ack
        }
        Err(e) => {
            tracing::warn!(error = %e, "the message could not be moved to the dead-letter queue; it goes back to the queue");
            Settle::Requeue
        }
    }
}

/// After Postgres refused a delivery's record for good: moves the message
/// (with the payload the record took back in it) to the dead-letter queue,
/// so that the target is not sent the same attempt again and again.
pub(crate) async fn dead_letter_refused(
    shared: &Shared,
    delivery_id: Uuid,
    message: &mut DeliveryMessage,
    refused: Refused,
) -> Settle {
    let Refused { reason, request } = refused;
    if message.data.is_none() {
        let delivery = request.delivery;
        message.data = delivery.payload.map(|text| {
            herald_queue::message_data(Payload::from_stored(delivery.payload_kind, text))
        });
    }
    tracing::error!(%reason, "Postgres refused the delivery record; the message goes to the dead-letter queue");
    let body = herald_queue::encode(message);
    dead_letter(shared, &body, Some(delivery_id), &reason).await
}

/// Carries a delivery through: cancelled, parked, or attempted; says
/// whether the message may be acked (attempt stored, retry queued).
///
/// A delivery often waits here for its webhook's in-flight limit: with a
/// large prefetch, thousands do. The wait keeps only the message (borrowed
/// from the task, so it is not held twice); the attempt's future (HTTP
/// client, writer, publisher: several kilobytes) is allocated once the
/// request may start. It is boxed also because the task would otherwise
/// copy it whole on spawn and on completion (docs/performance.md, item 5,
/// has what profiles showed those copies to cost).
async fn deliver(
    shared: &Shared,
    route: ShardRoute<'_>,
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: &mut DeliveryMessage,
) -> Settle {
    let (webhook, exists) = {
        let snapshot = shared.cache.snapshot();
        let webhook = snapshot.webhook(webhook_id).cloned();
        let exists = webhook.is_some();
        (webhook.filter(|w| w.enabled), exists)
    };
    let Some(webhook) = webhook else {
        let reason = if exists {
            "the webhook was disabled before this attempt; nothing was sent"
        } else {
            "the webhook was deleted before this attempt; nothing was sent"
        };
        return Box::pin(cancel(shared, delivery_id, webhook_id, message, reason)).await;
    };
    if let Some(limit) = crate::rate::limit_of(&webhook, shared.default_rate_limit) {
        // Boxed: only rate-limited deliveries carry the wait's state.
        let turn = Box::pin(shared.rates.turn(webhook_id, limit, true)).await;
        if turn == crate::rate::Turn::Park {
            return Box::pin(park_held(shared, route, message, retry::Outcome::Busy)).await;
        }
    }
    let Some(slot) = shared.limits.acquire(webhook_id).await else {
        return Box::pin(park_held(shared, route, message, retry::Outcome::Busy)).await;
    };
    // The breaker is asked last, right before the request: a delivery may
    // have waited for its turn above while the breaker opened. Only a
    // webhook in trouble costs more than a lookup in memory here.
    let mut probe = false;
    if shared.breakers.troubled(webhook_id) {
        match Box::pin(shared.breakers.gate(&webhook)).await {
            Gate::Go => {}
            Gate::Probe => probe = true,
            Gate::Park(remaining) => {
                drop(slot);
                let held = retry::Outcome::BreakerOpen { remaining };
                return Box::pin(park_held(shared, route, message, held)).await;
            }
        }
    }
    Box::pin(attempt(
        shared,
        route,
        delivery_id,
        webhook,
        Attempting { slot, probe },
        message,
    ))
    .await
}

/// Parks a delivery that was held back, not attempted (`held`): its webhook
/// is at its in-flight limit without progress, more of its deliveries wait
/// for the rate limit here than this sender keeps, or its breaker is open.
async fn park_held(
    shared: &Shared,
    route: ShardRoute<'_>,
    message: &DeliveryMessage,
    held: retry::Outcome,
) -> Settle {
    let next = retry::decide(
        held,
        message.attempt,
        route.topology.schedule(),
        route.topology.declared_delays(),
    );
    let Next::Park { delay } = next else {
        unreachable!("a delivery that was not attempted is always parked")
    };
    park(shared, route.shard, message, delay).await
}

/// What an attempt holds: its in-flight slot, and whether it is its
/// webhook's breaker probe.
struct Attempting {
    slot: crate::limits::Slot,
    probe: bool,
}

/// The delivery row as the message describes it, before this attempt;
/// `payload` is the message's (moved in: it is the largest field, and the
/// attempt's request was already built from it), `target_url` and `method`
/// those of this attempt.
pub(crate) fn record(
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: &DeliveryMessage,
    payload: Payload,
    target_url: String,
    method: String,
) -> DeliveryRecord {
    DeliveryRecord {
        id: delivery_id,
        tenant: message.tenant.clone(),
        event: message.event.clone(),
        webhook_id,
        target_url,
        method,
        payload_kind: payload.kind(),
        payload: Some(payload.into_string()),
        fired_at: herald_queue::fired_at(message),
        state: DeliveryState::Pending,
        attempts: message.attempt.saturating_sub(1),
        last_status_code: None,
        last_error: None,
        last_attempt_at: None,
        next_attempt_at: None,
        finished_at: None,
        resent_from: Uuid::from_slice(&message.resent_from).ok(),
        ordering_key: (!message.ordering_key.is_empty()).then(|| message.ordering_key.clone()),
    }
}

/// Records a delivery whose webhook was disabled or deleted: no request.
pub(crate) async fn cancel(
    shared: &Shared,
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: &mut DeliveryMessage,
    reason: &str,
) -> Settle {
    tracing::info!(reason, "delivery cancelled");
    if shared.republisher.tracing().is_on() {
        crate::traces::record_outcome("cancelled");
    }
    let mut record = record(
        delivery_id,
        webhook_id,
        message,
        herald_queue::message_payload(message.data.clone()),
        message.url.clone(),
        message.method.clone(),
    );
    record.state = DeliveryState::Cancelled;
    record.last_error = Some(reason.to_owned());
    record.finished_at = Some(SystemTime::now());
    let written = write(
        shared,
        WriteRequest {
            delivery: record,
            attempt: None,
        },
    )
    .await;
    match written {
        Written::Stored => {
            shared.stats.count(Fate::Cancelled);
            Settle::Ack
        }
        Written::Later => Settle::Requeue,
        // A cancelled delivery is final, so nothing else carries it on.
        Written::Refused(refused) => {
            Box::pin(dead_letter_refused(shared, delivery_id, message, refused)).await
        }
    }
}

/// Makes the attempt with its in-flight slot, records it and queues the
/// retry, if any.
async fn attempt(
    shared: &Shared,
    route: ShardRoute<'_>,
    delivery_id: Uuid,
    webhook: Arc<herald_core::Webhook>,
    attempting: Attempting,
    message: &mut DeliveryMessage,
) -> Settle {
    let Attempting { slot, probe } = attempting;
    // Moved out rather than copied: the request is built from it, and the
    // record then takes it. Only a retry needs a copy (below).
    let payload = herald_queue::message_payload(message.data.take());
    // The attempt's span, for a webhook whose receiver joins the trace.
    let traceparent = (webhook.trace_context && shared.republisher.tracing().is_on())
        .then(crate::traces::current_traceparent)
        .flatten();
    let info = DeliveryInfo {
        delivery_id,
        attempt: message.attempt,
        tenant: &message.tenant,
        event: &message.event,
        fired_at_unix_ms: message.fired_at_unix_ms,
        traceparent: traceparent.as_deref(),
    };
    // The request's future (request, HTTP client, timeout) is the largest
    // part of an attempt; boxed on its own, it is freed as soon as the
    // answer is in, and a delivery then waiting for its write batch (with
    // a prefetch of thousands, many do when Postgres lags) holds only
    // what it records.
    let mut outcome = Box::pin(shared.client.send(&webhook, &payload, &info)).await;
    let decided = retry_outcome(&outcome);
    let health = Health::of(&decided);
    // The breaker learns of a failure before the slot is freed: the next
    // delivery to this webhook then sees the breaker as this answer left it,
    // so a sender makes at most its in-flight limit of attempts after the
    // breaker opened. A success of a healthy webhook records nothing.
    if let Some(health) = health {
        let status = outcome.status_code;
        let notices = Box::pin(shared.breakers.record(&webhook, health, status, probe)).await;
        if !notices.is_empty() {
            Box::pin(crate::operational::send_notices(shared, &webhook, notices)).await;
        }
    }
    drop(slot);
    let finished = outcome.started_at + outcome.duration;
    shared.stats.attempt(&outcome);
    let (mut record, attempt) = attempted(delivery_id, &webhook, message, payload, &mut outcome);

    let mut next = retry::decide(
        decided,
        message.attempt,
        route.topology.schedule(),
        route.topology.declared_delays(),
    );
    if probe && health == Some(Health::Down) {
        let park = route.topology.declared_delays().at_least(retry::PARK_DELAY);
        next = breaker::after_failed_probe(next, message.attempt, park);
    }
    if shared.republisher.tracing().is_on() {
        crate::traces::record_attempt(&outcome, &next);
    }
    let (retry, fate) = match next {
        Next::Succeed => {
            tracing::info!(status = ?outcome.status_code, duration_ms = attempt.duration_ms, "delivered");
            record.state = DeliveryState::Succeeded;
            record.finished_at = Some(finished);
            (None, Fate::Succeeded)
        }
        Next::Retry {
            attempt: next_attempt,
            delay,
        } => {
            tracing::info!(error = failure(&outcome), next_attempt, wait = ?delay, "attempt failed; retry scheduled");
            record.state = DeliveryState::Pending;
            record.next_attempt_at = Some(SystemTime::now() + delay);
            let retry = (
                DeliveryMessage {
                    attempt: next_attempt,
                    // The record took the payload; the retry copies it back.
                    data: record.payload.clone().map(|text| {
                        herald_queue::message_data(Payload::from_stored(record.payload_kind, text))
                    }),
                    ..std::mem::take(message)
                },
                delay,
            );
            (Some(retry), Fate::Retried)
        }
        Next::Fail => {
            tracing::info!(
                error = failure(&outcome),
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
    let failed = Failed::of(fate, &message.event, &record);

    let stored = write(
        shared,
        WriteRequest {
            delivery: record,
            attempt: Some(attempt),
        },
    );
    let queued = async {
        match &retry {
            None => true,
            Some((retry, delay)) => {
                let queued = shared
                    .republisher
                    .publish_after_in(route.shard, retry, *delay);
                match Box::pin(queued).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "the retry could not be queued; the attempt will be repeated");
                        false
                    }
                }
            }
        }
    };
    let (written, queued) = tokio::join!(stored, queued);
    match written {
        Written::Stored if queued => {}
        Written::Stored | Written::Later => return Settle::Requeue,
        Written::Refused(refused) => {
            return match next.when_record_refused() {
                // The retry carries the delivery on (its attempts are made
                // on schedule); once no retry is left, the last attempt's
                // message goes to the dead-letter queue.
                IfRefused::CarryOn if queued => {
                    tracing::error!(reason = %refused.reason, "Postgres refused the record of this attempt; the retry carries the delivery on");
                    Settle::Ack
                }
                IfRefused::CarryOn => Settle::Requeue,
                IfRefused::DeadLetter => {
                    Box::pin(dead_letter_refused(shared, delivery_id, message, refused)).await
                }
            };
        }
    }
    if let Some(failed) = failed {
        Box::pin(send_failed(shared, &message.tenant, failed)).await;
    }
    shared.stats.count(fate);
    Settle::Ack
}

/// What a finally failed delivery's `herald.delivery.failed` tells of.
pub(crate) struct Failed {
    delivery_id: Uuid,
    webhook_id: Uuid,
    event: String,
    fired_at: SystemTime,
    attempts: u32,
    last_status_code: Option<u16>,
    last_error: Option<String>,
}

impl Failed {
    /// What to tell of a delivery whose attempt ended in `fate` with
    /// `record`; `None` unless it failed for good. Herald's own events
    /// never cause another one, so they cannot loop.
    pub(crate) fn of(fate: Fate, event: &str, record: &DeliveryRecord) -> Option<Self> {
        (fate == Fate::Failed && !herald_core::operational::is_operational(event)).then(|| Self {
            delivery_id: record.id,
            webhook_id: record.webhook_id,
            event: event.to_owned(),
            fired_at: record.fired_at,
            attempts: record.attempts,
            last_status_code: record.last_status_code,
            last_error: record.last_error.clone(),
        })
    }
}

/// Sends `herald.delivery.failed` for a delivery that failed for good.
pub(crate) async fn send_failed(shared: &Shared, tenant: &str, failed: Failed) {
    let data =
        herald_core::operational::delivery_failed_data(&herald_core::operational::FailedDelivery {
            delivery_id: failed.delivery_id,
            webhook_id: failed.webhook_id,
            event: &failed.event,
            fired_at: failed.fired_at,
            attempts: failed.attempts,
            last_status_code: failed.last_status_code,
            last_error: failed.last_error.as_deref(),
            failed_at: SystemTime::now(),
        });
    crate::operational::send(
        shared,
        tenant,
        failed.webhook_id,
        herald_core::operational::OperationalEvent::DeliveryFailed,
        &failed.delivery_id.to_string(),
        data,
    )
    .await;
}

/// The delivery row and the attempt row of the attempt `outcome` tells of
/// (state and times after it are the caller's, from the retry decision);
/// the row takes `payload` and the outcome's URL and response excerpt.
pub(crate) fn attempted(
    delivery_id: Uuid,
    webhook: &herald_core::Webhook,
    message: &DeliveryMessage,
    payload: Payload,
    outcome: &mut crate::AttemptOutcome,
) -> (DeliveryRecord, AttemptRecord) {
    let mut record = record(
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
    (record, attempt)
}

/// What the retry decision needs to know of an attempt.
pub(crate) fn retry_outcome(outcome: &crate::AttemptOutcome) -> retry::Outcome {
    match &outcome.error {
        None => retry::Outcome::Delivered,
        Some(error) => retry::Outcome::Failed {
            kind: error.kind,
            status: outcome.status_code,
            retry_after: outcome.retry_after,
        },
    }
}

/// The attempt's error as a log field (absent when it succeeded).
pub(crate) fn failure(
    outcome: &crate::AttemptOutcome,
) -> Option<tracing::field::DisplayValue<&herald_core::AttemptError>> {
    outcome.error.as_ref().map(tracing::field::display)
}

/// Parks a delivery that was held back for `delay` (the retry decision's
/// for a busy webhook): the same message goes to the
/// parking delay queue and comes back after it. No attempt is made, so
/// nothing is recorded; the ack waits for the confirm.
async fn park(shared: &Shared, shard: u16, message: &DeliveryMessage, delay: Duration) -> Settle {
    if shared.republisher.tracing().is_on() {
        crate::traces::record_outcome("parked");
    }
    match shared
        .republisher
        .publish_after_in(shard, message, delay)
        .await
    {
        Ok(_) => {
            tracing::debug!("webhook at its in-flight or rate limit; delivery parked");
            shared.stats.count(Fate::Parked);
            Settle::Ack
        }
        Err(e) => {
            tracing::warn!(error = %e, "the delivery could not be parked; it goes back to the queue");
            Settle::Requeue
        }
    }
}

/// How writing a delivery's record ended.
pub(crate) enum Written {
    Stored,
    /// Not stored for now (the writer is shutting down): the delivery goes
    /// back to the queue and its attempt is made again.
    Later,
    /// Postgres refused the record for good.
    Refused(Refused),
}

/// A record Postgres refused, and why, for the dead-letter queue.
pub(crate) struct Refused {
    reason: String,
    request: Box<WriteRequest>,
}

pub(crate) async fn write(shared: &Shared, request: WriteRequest) -> Written {
    write_to(&shared.writer, request).await
}

/// [`write`] through a given writer (ordered deliveries have their own).
pub(crate) async fn write_to(
    writer: &herald_store::AttemptWriter,
    request: WriteRequest,
) -> Written {
    match writer.write(request).await {
        Ok(()) => Written::Stored,
        Err(WriteError::Refused { source, request }) => Written::Refused(Refused {
            reason: refusal_reason(&source),
            request,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "the attempt could not be stored; the delivery goes back to the queue");
            Written::Later
        }
    }
}

/// What Postgres said, for the operator reading the dead-letter queue.
fn refusal_reason(error: &StoreError) -> String {
    let detail = match error {
        StoreError::Db(e) => match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => e.to_string(),
        },
        other => other.to_string(),
    };
    format!("Postgres refused the delivery record: {detail}")
}

#[cfg(test)]
mod tests {
    use herald_proto::v1::{DeliveryMessage, delivery_message};
    use uuid::Uuid;

    fn message() -> DeliveryMessage {
        DeliveryMessage {
            delivery_id: Uuid::now_v7().as_bytes().to_vec(),
            tenant: "shop-1".into(),
            event: "order.created".into(),
            webhook_id: Uuid::now_v7().as_bytes().to_vec(),
            attempt: 1,
            fired_at_unix_ms: 1_764_500_000_000,
            data: Some(delivery_message::Data::Json("{}".into())),
            url: "https://example.com/hook".into(),
            method: "POST".into(),
            resent_from: Vec::new(),
            ordering_key: String::new(),
        }
    }

    /// The reason a message is moved aside, or `None` if it is accepted.
    fn refusal(message: &DeliveryMessage) -> Option<String> {
        super::decode(&herald_queue::encode(message))
            .err()
            .map(|u| {
                assert_eq!(
                    u.delivery_id.map(|id| id.as_bytes().to_vec()),
                    Some(message.delivery_id.clone()),
                    "a decodable message is moved aside under its delivery id"
                );
                u.reason
            })
    }

    #[test]
    fn messages_fire_would_have_refused_are_not_processed() {
        assert_eq!(refusal(&message()), None);
        let long_event = DeliveryMessage {
            event: "e".repeat(3_000),
            ..message()
        };
        assert!(refusal(&long_event).unwrap().contains("event"));
        let spaced_tenant = DeliveryMessage {
            tenant: "shop 1".into(),
            ..message()
        };
        assert!(refusal(&spaced_tenant).unwrap().contains("tenant"));
        let attempt_zero = DeliveryMessage {
            attempt: 0,
            ..message()
        };
        assert!(refusal(&attempt_zero).unwrap().contains("attempt"));
        for fired_at_unix_ms in [-1, super::MAX_FIRED_AT_MS + 1, i64::MAX] {
            let odd_time = DeliveryMessage {
                fired_at_unix_ms,
                ..message()
            };
            assert!(refusal(&odd_time).unwrap().contains("fired_at"));
        }
        let undecodable = super::decode(&[0x0f; 8]).unwrap_err();
        assert_eq!(undecodable.delivery_id, None);
        let no_ids = super::decode(&herald_queue::encode(&DeliveryMessage {
            webhook_id: vec![1, 2, 3],
            ..message()
        }))
        .unwrap_err();
        assert_eq!(no_ids.delivery_id, None);
    }
    /// The size of the future an `Fn(A, B, C, D, E) -> F` returns, without
    /// calling it.
    fn future_size<A, B, C, D, E, F>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// With a prefetch of 10,000 the sender holds 10,000 of these tasks,
    /// most of them waiting for their webhook's in-flight limit, so each
    /// byte here is 10 kB of the sender's memory (the memory target in
    /// docs/performance.md). Keeping the whole lapin `Delivery` or a second
    /// copy of the message in the task would break it (item 12 there).
    #[test]
    fn a_delivery_task_stays_under_one_kibibyte() {
        let size = future_size(super::handle);
        assert!(size <= 1024, "the delivery task's future is {size} bytes");
    }
}
