//! Conversions between the domain types and the protobuf messages.

use herald_core::Webhook;
use herald_core::webhook::Signing;
use herald_proto::v1;
use herald_store::{AttemptView, DeliveryView};

use crate::ingest::unix_ms;

/// Shown instead of a custom header's value where secrets must not appear.
const REDACTED: &str = "(hidden)";

pub(crate) fn webhook_to_proto(w: &Webhook) -> v1::Webhook {
    v1::Webhook {
        id: w.id.to_string(),
        tenant: w.tenant.clone(),
        event: w.events.first(),
        events: w.events.to_strings(),
        filter: w
            .filter
            .as_ref()
            .map(|f| f.source().to_owned())
            .unwrap_or_default(),
        enabled: w.enabled,
        method: w.method.as_str().to_owned(),
        url: w.url.clone(),
        headers: w.headers.clone().into_iter().collect(),
        body_template: w.body_template.clone().unwrap_or_default(),
        timeout_ms: w.timeout_ms,
        description: w.description.clone(),
        created_at_unix_ms: unix_ms(w.created_at),
        updated_at_unix_ms: unix_ms(w.updated_at),
        body_mode: w.body_mode.as_str().to_owned(),
        content_type: w.content_type.clone().unwrap_or_default(),
        // Secret header values are write-only: only their names go out.
        secret_header_names: w.secret_headers.0.keys().cloned().collect(),
        signing_enabled: w.signing.is_some(),
        signing_secret: String::new(),
        id_header: w.id_header.clone().unwrap_or_default(),
        trace_context: w.trace_context,
        ordered: w.ordered,
        ordered_on_failure: w.on_failure.as_str().to_owned(),
        rate_limit: w.rate_limit.map(|l| v1::RateLimit {
            per_second: l.per_second(),
            burst: l.burst(),
        }),
        breaker: w.breaker.map(|b| v1::CircuitBreaker {
            failures: b.failures_or_zero(),
            cooldown_ms: b.cooldown_ms_or_zero(),
        }),
        health: None,
        disabled_reason: w.disabled_reason.clone().unwrap_or_default(),
        disabled_at_unix_ms: w.disabled_at.map_or(0, unix_ms),
        auto_disable_after_s: w
            .auto_disable_after
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
    }
}

/// A webhook's health as the API shows it.
pub(crate) fn health_to_proto(h: &herald_core::breaker::HealthRecord) -> v1::WebhookHealth {
    let ms = |t: Option<std::time::SystemTime>| t.map_or(0, unix_ms);
    v1::WebhookHealth {
        breaker: h.state.as_str().to_owned(),
        consecutive_failures: h.consecutive_failures,
        failing_since_unix_ms: ms(h.failing_since),
        opened_at_unix_ms: ms(h.opened_at),
        open_until_unix_ms: ms(h.open_until),
    }
}

pub(crate) fn signing_to_proto(id: uuid::Uuid, signing: &Signing) -> v1::SigningSecret {
    let previous: Vec<v1::PreviousSigningSecret> = signing
        .previous_at(std::time::SystemTime::now())
        .map(|p| v1::PreviousSigningSecret {
            secret: p.secret.expose().to_owned(),
            expires_at_unix_ms: unix_ms(p.expires_at),
        })
        .collect();
    v1::SigningSecret {
        webhook_id: id.to_string(),
        secret: signing.secret.expose().to_owned(),
        previous_secret: previous
            .first()
            .map(|p| p.secret.clone())
            .unwrap_or_default(),
        previous_expires_at_unix_ms: previous.first().map(|p| p.expires_at_unix_ms),
        previous_secrets: previous,
    }
}

/// Like `webhook_to_proto`, but header values (which often hold credentials)
/// are replaced; only their names are listed.
pub(crate) fn webhook_to_proto_redacted(w: &Webhook) -> v1::Webhook {
    let mut proto = webhook_to_proto(w);
    for value in proto.headers.values_mut() {
        *value = REDACTED.to_owned();
    }
    proto
}

pub(crate) fn delivery_to_proto(d: &DeliveryView) -> v1::Delivery {
    v1::Delivery {
        id: d.id.to_string(),
        tenant: d.tenant.clone(),
        event: d.event.clone(),
        webhook_id: d.webhook_id.to_string(),
        target_url: d.target_url.clone(),
        method: d.method.clone(),
        state: d.state.as_str().to_owned(),
        attempts: d.attempts,
        last_status_code: d.last_status_code.map(u32::from),
        last_error: d.last_error.clone().unwrap_or_default(),
        fired_at_unix_ms: unix_ms(d.fired_at),
        last_attempt_at_unix_ms: d.last_attempt_at.map(unix_ms),
        next_attempt_at_unix_ms: d.next_attempt_at.map(unix_ms),
        finished_at_unix_ms: d.finished_at.map(unix_ms),
        attempt_history: d.attempt_history.iter().map(attempt_to_proto).collect(),
        resent_from: d.resent_from.map(|id| id.to_string()).unwrap_or_default(),
        ordering_key: d.ordering_key.clone().unwrap_or_default(),
        // The data and the resends are GetDelivery's alone (see
        // `delivery_detail_to_proto`); lists stay small.
        payload: None,
        payload_kind: String::new(),
        resent_as: Vec::new(),
    }
}

/// A delivery as GetDelivery answers it: with its data and its resends.
pub(crate) fn delivery_detail_to_proto(d: &DeliveryView, resent_as: &[uuid::Uuid]) -> v1::Delivery {
    v1::Delivery {
        payload: d.payload.clone(),
        payload_kind: d.payload_kind.clone(),
        resent_as: resent_as.iter().map(uuid::Uuid::to_string).collect(),
        ..delivery_to_proto(d)
    }
}

fn attempt_to_proto(a: &AttemptView) -> v1::Attempt {
    v1::Attempt {
        attempt: a.attempt,
        started_at_unix_ms: unix_ms(a.started_at),
        duration_ms: a.duration_ms,
        url: a.url.clone(),
        status_code: a.status_code.map(u32::from),
        error_kind: a.error_kind.clone().unwrap_or_default(),
        error_message: a.error_message.clone().unwrap_or_default(),
        response_excerpt: a.response_excerpt.clone().unwrap_or_default(),
    }
}
