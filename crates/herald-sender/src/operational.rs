//! Sends Herald's own events (herald-core's `operational`) through the
//! normal pipeline: one delivery per subscribed webhook, published to the
//! work queues like a Fire's, so they are durable, retried, signed and
//! logged like any other.
//!
//! Sending one is part of finishing the delivery or change that caused it,
//! before that delivery is acked; a sender that crashes in between repeats
//! its work, and the operational delivery's id (derived from what it tells
//! of) is the same again. If the broker refuses it, it is logged and
//! counted, not retried here: the cause (a failed delivery, a disabled
//! webhook) is recorded in the log either way.

use std::time::SystemTime;

use herald_core::operational::{self, OperationalEvent};
use herald_proto::v1::{DeliveryMessage, delivery_message};
use uuid::Uuid;

use crate::Shared;
use crate::breaker::Notice;

/// Sends `event` with `data` about webhook `about` of `tenant` to every
/// webhook of the tenant subscribed to it; `key` tells this occurrence
/// apart (its delivery ids come from it).
pub(crate) async fn send(
    shared: &Shared,
    tenant: &str,
    about: Uuid,
    event: OperationalEvent,
    key: &str,
    data: String,
) {
    let messages: Vec<DeliveryMessage> = {
        let snapshot = shared.cache.snapshot();
        let candidates = snapshot.webhooks_for(tenant, event.name());
        let fired_at_unix_ms = operational::unix_ms(SystemTime::now());
        operational::recipients(candidates.iter().map(AsRef::as_ref), event, about)
            .into_iter()
            .map(|webhook| DeliveryMessage {
                delivery_id: operational::delivery_id(event, key, webhook.id)
                    .as_bytes()
                    .to_vec(),
                tenant: tenant.to_owned(),
                event: event.name().to_owned(),
                webhook_id: webhook.id.as_bytes().to_vec(),
                attempt: 1,
                fired_at_unix_ms,
                data: Some(delivery_message::Data::Json(data.clone())),
                url: webhook.url.clone(),
                method: webhook.method.as_str().to_owned(),
                resent_from: Vec::new(),
                ordering_key: String::new(),
            })
            .collect()
    };
    if messages.is_empty() {
        return;
    }
    match shared.republisher.publish_all(&messages).await {
        Ok(()) => {
            metrics::counter!("herald_operational_events_total", "event" => event.name())
                .increment(messages.len() as u64);
            tracing::info!(
                event = event.name(),
                recipients = messages.len(),
                "operational event sent"
            );
        }
        Err(e) => {
            metrics::counter!("herald_operational_events_lost_total", "event" => event.name())
                .increment(1);
            tracing::warn!(error = %e, event = event.name(), "the operational event could not be published");
        }
    }
}

/// Sends what a breaker's changes of `webhook` call for.
pub(crate) async fn send_notices(
    shared: &Shared,
    webhook: &herald_core::Webhook,
    notices: Vec<Notice>,
) {
    for notice in notices {
        send(
            shared,
            &webhook.tenant,
            webhook.id,
            notice.event,
            &notice.key,
            notice.data,
        )
        .await;
    }
}
