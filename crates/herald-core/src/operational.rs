//! Herald's own events ("operational events"), sent through Herald itself
//! to the webhooks a tenant subscribed to them: a delivery that failed for
//! good, a webhook Herald disabled, a breaker that opened, a webhook that
//! recovered. Their names start with `herald.`, a prefix Fire refuses, so
//! that only Herald fires them.
//!
//! This module decides who gets one (never the webhook it is about, never
//! through a `*` subscription), what its data says (the documented JSON
//! shape), and its delivery id: derived from what it is about, so that a
//! sender that repeats its work after a crash sends the same delivery
//! again, which a receiver recognises, instead of a second one.

use std::time::{Duration, SystemTime};

use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::subscription::{EventPattern, Subscription};
use crate::webhook::Webhook;

/// The prefix of every operational event; Fire refuses it.
pub const PREFIX: &str = "herald.";

/// One of Herald's own events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationalEvent {
    /// A delivery failed for good after its whole schedule.
    DeliveryFailed,
    /// Herald disabled a webhook.
    WebhookDisabled,
    /// A webhook's circuit breaker opened.
    BreakerOpened,
    /// A webhook whose breaker was open answered again.
    WebhookRecovered,
}

impl OperationalEvent {
    pub const ALL: [Self; 4] = [
        Self::DeliveryFailed,
        Self::WebhookDisabled,
        Self::BreakerOpened,
        Self::WebhookRecovered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::DeliveryFailed => "herald.delivery.failed",
            Self::WebhookDisabled => "herald.webhook.disabled",
            Self::BreakerOpened => "herald.webhook.breaker_opened",
            Self::WebhookRecovered => "herald.webhook.recovered",
        }
    }
}

/// Whether `event` is one of Herald's own (or claims to be).
pub fn is_operational(event: &str) -> bool {
    event.starts_with(PREFIX)
}

/// Whether `subscription` asks for `event` explicitly: by its name, or by a
/// pattern that itself starts with `herald.`. A webhook subscribed to every
/// event of its tenant (`*`) or to the shop's own patterns gets none, so
/// that turning this feature on never surprises an existing receiver.
pub fn subscribes(subscription: &Subscription, event: OperationalEvent) -> bool {
    let name = event.name();
    subscription.entries().iter().any(|entry| match entry {
        EventPattern::Exact(exact) => exact == name,
        EventPattern::Prefix(prefix) => prefix.starts_with(PREFIX) && name.starts_with(prefix),
        EventPattern::All => false,
    })
}

/// The webhooks among `candidates` (those of the tenant the event reaches)
/// that get `event` about webhook `about`: enabled, subscribed explicitly,
/// and not `about` itself, so that an event never goes to the webhook it
/// tells of (a failing receiver would otherwise feed itself).
pub fn recipients<'a>(
    candidates: impl IntoIterator<Item = &'a Webhook>,
    event: OperationalEvent,
    about: Uuid,
) -> Vec<&'a Webhook> {
    candidates
        .into_iter()
        .filter(|w| w.enabled && w.id != about && subscribes(&w.events, event))
        .collect()
}

/// The delivery id of `event` about `key` (what it tells of, e.g. the
/// failed delivery's id) to `recipient`: the same inputs always give the
/// same id (a version 8 UUID from SHA-256).
pub fn delivery_id(event: OperationalEvent, key: &str, recipient: Uuid) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(event.name().as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    hash.update([0]);
    hash.update(recipient.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// `t` in Unix milliseconds, as the data and the API carry times.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What a finally failed delivery tells of.
#[derive(Debug, Clone)]
pub struct FailedDelivery<'a> {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub event: &'a str,
    pub fired_at: SystemTime,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<&'a str>,
    pub failed_at: SystemTime,
}

/// `herald.delivery.failed`'s data.
pub fn delivery_failed_data(f: &FailedDelivery<'_>) -> String {
    json!({
        "type": OperationalEvent::DeliveryFailed.name(),
        "delivery_id": f.delivery_id.to_string(),
        "webhook_id": f.webhook_id.to_string(),
        "event": f.event,
        "fired_at_unix_ms": unix_ms(f.fired_at),
        "attempts": f.attempts,
        "last_status_code": f.last_status_code,
        "last_error": f.last_error,
        "failed_at_unix_ms": unix_ms(f.failed_at),
    })
    .to_string()
}

/// `herald.webhook.disabled`'s data.
pub fn webhook_disabled_data(webhook_id: Uuid, reason: &str, at: SystemTime) -> String {
    json!({
        "type": OperationalEvent::WebhookDisabled.name(),
        "webhook_id": webhook_id.to_string(),
        "reason": reason,
        "disabled_at_unix_ms": unix_ms(at),
    })
    .to_string()
}

/// `herald.webhook.breaker_opened`'s data.
pub fn breaker_opened_data(
    webhook_id: Uuid,
    consecutive_failures: u32,
    opened_at: SystemTime,
    cooldown: Duration,
) -> String {
    json!({
        "type": OperationalEvent::BreakerOpened.name(),
        "webhook_id": webhook_id.to_string(),
        "consecutive_failures": consecutive_failures,
        "opened_at_unix_ms": unix_ms(opened_at),
        "open_until_unix_ms": unix_ms(opened_at + cooldown),
    })
    .to_string()
}

/// `herald.webhook.recovered`'s data.
pub fn webhook_recovered_data(webhook_id: Uuid, at: SystemTime) -> String {
    json!({
        "type": OperationalEvent::WebhookRecovered.name(),
        "webhook_id": webhook_id.to_string(),
        "recovered_at_unix_ms": unix_ms(at),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(entries: &[&str]) -> Subscription {
        Subscription::parse(entries).unwrap()
    }

    #[test]
    fn only_explicit_subscriptions_get_operational_events() {
        let failed = OperationalEvent::DeliveryFailed;
        let table = [
            (vec!["herald.delivery.failed"], true),
            (vec!["herald.*"], true),
            (vec!["herald.delivery.*"], true),
            (vec!["herald.webhook.*"], false),
            (vec!["*"], false),
            (vec!["order.*", "herald.webhook.disabled"], false),
            (vec!["order.created"], false),
        ];
        for (entries, expected) in table {
            assert_eq!(
                subscribes(&subscription(&entries), failed),
                expected,
                "{entries:?}"
            );
        }
        assert!(is_operational("herald.anything"));
        assert!(!is_operational("heraldry.order"));
        for event in OperationalEvent::ALL {
            assert!(is_operational(event.name()));
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let failed = OperationalEvent::DeliveryFailed;
        let id = delivery_id(failed, "k", a);
        assert_eq!(
            id,
            delivery_id(failed, "k", a),
            "the same inputs, the same id"
        );
        assert_eq!(id.get_version_num(), 8);
        assert_ne!(id, delivery_id(failed, "k", b), "per recipient");
        assert_ne!(id, delivery_id(failed, "k2", a), "per key");
        assert_ne!(
            id,
            delivery_id(OperationalEvent::BreakerOpened, "k", a),
            "per event"
        );
    }

    #[test]
    fn the_data_has_the_documented_shape() {
        let id = Uuid::nil();
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let data: serde_json::Value =
            serde_json::from_str(&delivery_failed_data(&FailedDelivery {
                delivery_id: id,
                webhook_id: id,
                event: "order.created",
                fired_at: t,
                attempts: 3,
                last_status_code: Some(503),
                last_error: Some("HTTP 503"),
                failed_at: t,
            }))
            .unwrap();
        assert_eq!(data["type"], "herald.delivery.failed");
        assert_eq!(data["event"], "order.created");
        assert_eq!(data["attempts"], 3);
        assert_eq!(data["last_status_code"], 503);
        assert_eq!(data["fired_at_unix_ms"], 1_700_000_000_123_i64);
        let opened: serde_json::Value =
            serde_json::from_str(&breaker_opened_data(id, 10, t, Duration::from_secs(30))).unwrap();
        assert_eq!(opened["open_until_unix_ms"], 1_700_000_030_123_i64);
        let disabled: serde_json::Value =
            serde_json::from_str(&webhook_disabled_data(id, "gone", t)).unwrap();
        assert_eq!(disabled["reason"], "gone");
        let recovered: serde_json::Value =
            serde_json::from_str(&webhook_recovered_data(id, t)).unwrap();
        assert_eq!(recovered["type"], "herald.webhook.recovered");
    }
}
