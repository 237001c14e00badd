//! One delivery, from the broker to its final ack.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::Either;
use herald_core::{DeliveryState, Payload, RetryDecision, Schedule};
use herald_proto::v1::DeliveryMessage;
use herald_store::{AttemptRecord, DeliveryRecord, WriteRequest};
use lapin::message::Delivery;
use lapin::options::{BasicNackOptions, BasicRejectOptions};
use tracing::Instrument;
use uuid::Uuid;

use crate::acks::Acks;
use crate::stats::Outcome;
use crate::{DeliveryInfo, Shared};

/// Handles one delivery message: cancel, or attempt and record; then ack.
///
/// A plain function returning the task's future, not an `async fn`: with a
/// large prefetch, thousands of these tasks wait at once (most for their
/// webhook's in-flight limit), so the future's size is the sender's memory
/// per delivery. An `async fn` would keep its arguments (the whole lapin
/// `Delivery`, over 400 bytes) for its entire life beside what it moved out
/// of them; here the message is decoded before the task exists, and the
/// future holds only the decoded message, the tag and the acker. The rarely
/// taken nack and reject futures are boxed so that they add no size either.
pub(crate) fn handle(
    shared: Arc<Shared>,
    schedule: Arc<Schedule>,
    acks: Arc<Acks>,
    delivery: Delivery,
) -> impl Future<Output = ()> + Send + 'static {
    let Delivery {
        delivery_tag: tag,
        data,
        acker,
        ..
    } = delivery;
    let decoded = decode(&data);
    drop(data);
    let (delivery_id, webhook_id, mut message) = match decoded {
        Ok(decoded) => decoded,
        Err(reason) => {
            return Either::Left(async move {
                // Nothing can ever process it; requeueing would loop forever.
                tracing::error!(reason, "dropping an undecodable queue message");
                let _ = Box::pin(acker.reject(BasicRejectOptions { requeue: false })).await;
                acks.settled(tag);
            });
        }
    };
    Either::Right(async move {
        let span = tracing::info_span!("delivery", %delivery_id, attempt = message.attempt);
        shared.stats.in_flight.increment(1.0);
        let done = deliver(&shared, &schedule, delivery_id, webhook_id, &mut message)
            .instrument(span.clone())
            .await;
        if done {
            // Acked with its neighbours by the flusher (see `acks`).
            acks.finished(tag);
        } else {
            // Back to the queue: another try (here or on another sender)
            // repeats the attempt with the same delivery id.
            let result = Box::pin(acker.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            }))
            .await;
            acks.settled(tag);
            if let Err(e) = result {
                span.in_scope(
                    || tracing::warn!(error = %e, "nack failed; the broker will redeliver"),
                );
            }
        }
        shared.stats.in_flight.decrement(1.0);
    })
}

/// The message and its two ids, or why it cannot be processed.
fn decode(data: &[u8]) -> Result<(Uuid, Uuid, DeliveryMessage), String> {
    let message = herald_queue::decode(data).map_err(|e| e.to_string())?;
    match (
        Uuid::from_slice(&message.delivery_id),
        Uuid::from_slice(&message.webhook_id),
    ) {
        (Ok(delivery_id), Ok(webhook_id)) => Ok((delivery_id, webhook_id, message)),
        _ => Err("the message has no valid delivery or webhook id".to_owned()),
    }
}

/// Returns whether the delivery may be acked (attempt stored, retry queued).
///
/// A delivery often waits here for its webhook's in-flight limit: with a
/// large prefetch, thousands do. The wait keeps only the message (borrowed
/// from the task, so it is not held twice); the attempt's future (HTTP
/// client, writer, publisher: several kilobytes) is allocated once the
/// request may start. It is boxed also because the task would otherwise
/// copy it whole on spawn and on completion (profiles showed those copies
/// at ~5 % of the sender's CPU).
async fn deliver(
    shared: &Shared,
    schedule: &Schedule,
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: &mut DeliveryMessage,
) -> bool {
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
    let Some(slot) = shared.limits.acquire(webhook_id).await else {
        return Box::pin(park(shared, message)).await;
    };
    Box::pin(attempt(
        shared,
        schedule,
        delivery_id,
        webhook,
        slot,
        message,
    ))
    .await
}

/// The delivery row as the message describes it, before this attempt;
/// `payload` is the message's (moved in: it is the largest field, and the
/// attempt's request was already built from it), `target_url` and `method`
/// those of this attempt.
fn record(
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
        fired_at: UNIX_EPOCH
            + Duration::from_millis(u64::try_from(message.fired_at_unix_ms).unwrap_or(0)),
        state: DeliveryState::Pending,
        attempts: message.attempt.saturating_sub(1),
        last_status_code: None,
        last_error: None,
        last_attempt_at: None,
        next_attempt_at: None,
        finished_at: None,
        resent_from: Uuid::from_slice(&message.resent_from).ok(),
    }
}

/// Records a delivery whose webhook was disabled or deleted: no request.
async fn cancel(
    shared: &Shared,
    delivery_id: Uuid,
    webhook_id: Uuid,
    message: &DeliveryMessage,
    reason: &'static str,
) -> bool {
    tracing::info!(reason, "delivery cancelled");
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
    let stored = write(
        shared,
        WriteRequest {
            delivery: record,
            attempt: None,
        },
    )
    .await;
    if stored {
        shared.stats.count(Outcome::Cancelled);
    }
    stored
}

/// Makes the attempt with its in-flight slot, records it and queues the
/// retry, if any.
async fn attempt(
    shared: &Shared,
    schedule: &Schedule,
    delivery_id: Uuid,
    webhook: Arc<herald_core::Webhook>,
    slot: crate::limits::Slot,
    message: &mut DeliveryMessage,
) -> bool {
    let webhook_id = webhook.id;
    // Moved out rather than copied: the request is built from it, and the
    // record then takes it. Only a retry needs a copy (below).
    let payload = herald_queue::message_payload(message.data.take());
    let info = DeliveryInfo {
        delivery_id,
        attempt: message.attempt,
        tenant: &message.tenant,
        event: &message.event,
        fired_at_unix_ms: message.fired_at_unix_ms,
    };
    // The request's future (request, HTTP client, timeout) is the largest
    // part of an attempt; boxed on its own, it is freed as soon as the
    // answer is in, and a delivery then waiting for its write batch (with
    // a prefetch of thousands, many do when Postgres lags) holds only
    // what it records.
    let mut outcome = Box::pin(shared.http.send(&webhook, &payload, &info)).await;
    drop(slot);
    let finished = outcome.started_at + outcome.duration;
    shared.stats.attempt(&outcome);
    let mut record = record(
        delivery_id,
        webhook_id,
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

    let retry = match &outcome.error {
        None => {
            tracing::info!(status = ?outcome.status_code, duration_ms = attempt.duration_ms, "delivered");
            record.state = DeliveryState::Succeeded;
            record.finished_at = Some(finished);
            None
        }
        Some(error) => match schedule.after_failure(message.attempt) {
            RetryDecision::Retry {
                attempt: next,
                delay,
            } if error.kind.is_retryable() => {
                // A target that asked for a pause (429/503 with Retry-After)
                // gets at least that: the first delay queue as long, or the
                // longest one. Never sooner than the schedule says.
                let asked = outcome.retry_after.map_or(delay, |asked| delay.max(asked));
                let (_, wait) = shared.retries.topology().route_at_least(asked);
                tracing::info!(%error, next_attempt = next, ?wait, "attempt failed; retry scheduled");
                record.state = DeliveryState::Pending;
                record.next_attempt_at = Some(SystemTime::now() + wait);
                Some((
                    DeliveryMessage {
                        attempt: next,
                        // The record took the payload; the retry copies it back.
                        data: record.payload.clone().map(|text| {
                            herald_queue::message_data(Payload::from_stored(
                                record.payload_kind,
                                text,
                            ))
                        }),
                        ..std::mem::take(message)
                    },
                    asked,
                ))
            }
            _ => {
                tracing::info!(%error, "attempt failed; delivery failed for good");
                record.state = DeliveryState::Failed;
                record.finished_at = Some(finished);
                None
            }
        },
    };

    let record_state = record.state;
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
            Some((next, wait)) => match Box::pin(shared.retries.publish_after(next, *wait)).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "the retry could not be queued; the attempt will be repeated");
                    false
                }
            },
        }
    };
    let (stored, queued) = tokio::join!(stored, queued);
    let done = stored && queued;
    if done {
        shared.stats.count(match (&retry, record_state) {
            (Some(_), _) => Outcome::Retried,
            (None, DeliveryState::Succeeded) => Outcome::Succeeded,
            (None, _) => Outcome::Failed,
        });
    }
    done
}

/// Parks a delivery whose webhook is at its in-flight limit: the same
/// message goes to the deferral delay queue and comes back after it. No
/// attempt is made, so nothing is recorded; the ack waits for the confirm.
async fn park(shared: &Shared, message: &DeliveryMessage) -> bool {
    match shared
        .retries
        .publish_after(message, herald_queue::DEFER_DELAY)
        .await
    {
        Ok(_) => {
            tracing::debug!("webhook at its in-flight limit; delivery parked");
            shared.stats.count(Outcome::Parked);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the delivery could not be parked; it goes back to the queue");
            false
        }
    }
}

async fn write(shared: &Shared, request: WriteRequest) -> bool {
    match shared.writer.write(request).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "the attempt could not be stored; the delivery goes back to the queue");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future an `Fn(A, B, C, D) -> F` returns, without
    /// calling it.
    fn future_size<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// With a prefetch of 10,000 the sender holds 10,000 of these tasks,
    /// most of them waiting for their webhook's in-flight limit, so each
    /// byte here is 10 kB of the sender's memory (the README's memory
    /// target). It was 2,664 bytes while `handle` was an `async fn` that
    /// kept the whole lapin `Delivery` and a second copy of the message.
    #[test]
    fn a_delivery_task_stays_under_one_kibibyte() {
        let size = future_size(super::handle);
        assert!(size <= 1024, "the delivery task's future is {size} bytes");
    }
}
