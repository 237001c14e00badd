//! Hands the deliveries ingest has just had confirmed to the delivery log
//! ([`herald_store::ScheduledLog`]), so that `GetDelivery` and
//! `ListDeliveries` know them as `scheduled` within moments of the answer.
//!
//! Called only after the broker's confirm, and never waits: Fire's answer
//! does not depend on Postgres.

use std::time::{Duration, SystemTime};

use herald_proto::v1::DeliveryMessage;
use herald_queue::Publisher;
use herald_store::{ScheduledLog, ScheduledRecord};
use uuid::Uuid;

/// When the first attempt of a delivery queued now is due: the schedule's
/// first delay.
pub(crate) fn first_attempt_in(publisher: &Publisher) -> Duration {
    publisher
        .topology()
        .schedule()
        .delay_before(1)
        .unwrap_or_default()
}

/// Queues the log rows of `messages`, whose first attempt is due
/// `first_attempt_in` from now.
pub(crate) fn record(
    log: &ScheduledLog,
    messages: impl IntoIterator<Item = DeliveryMessage>,
    first_attempt_in: Duration,
) {
    let due = SystemTime::now() + first_attempt_in;
    log.record(messages.into_iter().filter_map(|m| row(m, due)));
}

/// The row of one message. Messages ingest built itself always have valid
/// ids; anything else is left to the sender, which dead-letters it.
fn row(message: DeliveryMessage, next_attempt_at: SystemTime) -> Option<ScheduledRecord> {
    let fired_at = herald_queue::fired_at(&message);
    let payload = herald_queue::message_payload(message.data);
    Some(ScheduledRecord {
        id: Uuid::from_slice(&message.delivery_id).ok()?,
        webhook_id: Uuid::from_slice(&message.webhook_id).ok()?,
        tenant: message.tenant,
        event: message.event,
        target_url: message.url,
        method: message.method,
        payload_kind: payload.kind(),
        payload: payload.into_string(),
        fired_at,
        next_attempt_at,
        resent_from: Uuid::from_slice(&message.resent_from).ok(),
    })
}
