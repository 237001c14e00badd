//! `Ingest.Fire` and `Ingest.ListEvents`.
//!
//! Fire without an idempotency key never touches Postgres. Fire with one
//! records the key and its delivery ids in `fire_idempotency` before
//! publishing and locks that row while it publishes (see
//! [`herald_store::idempotency`]), so repeats of the key within its window,
//! on any replica and after restarts, answer the same ids.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::try_join_all;
use herald_core::filter::{FilterData, FilterInput};
use herald_core::idempotency::{MAX_IDEMPOTENCY_KEY_LEN, fire_request_hash};
use herald_core::ordering::OrderingKey;
use herald_core::{EventName, Payload, PayloadError, Tenant, Webhook};
use herald_proto::v1::{
    DeliveryMessage, EventInfo, FireRequest, FireResponse, ListEventsRequest, ListEventsResponse,
    delivery_message, fire_request, ingest_server::Ingest,
};
use herald_queue::{Publisher, QueueError};
use herald_store::{
    ConfigCache, ConfigSnapshot, FireDelivery, FireKeyError, FireKeys, FireOutcome, KeyedFire,
    ScheduledLog, StoredFire,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::breakers::OpenBreakers;
use crate::convert::webhook_to_proto_redacted;
use crate::scheduled::first_attempt_in;

pub struct IngestService {
    /// `herald_fire_calls_total`, one handle per `code` label, registered
    /// once (a lookup by name and label on every call showed in profiles).
    /// Indexed like [`CODES`], then one for every other code.
    fire_calls: [metrics::Counter; CODES.len() + 1],
    cache: ConfigCache,
    publisher: Publisher,
    max_payload_bytes: usize,
    /// Idempotency keys of Fire calls, in Postgres.
    keys: FireKeys,
    /// Where confirmed deliveries go to appear in the log as `scheduled`.
    log: ScheduledLog,
    /// Which webhooks' breakers are open.
    breakers: Arc<OpenBreakers>,
    /// `herald_breaker_parked_total`: deliveries Fire published straight
    /// to a delay queue because their webhook's breaker was open.
    held: metrics::Counter,
}

impl IngestService {
    pub fn new(
        cache: ConfigCache,
        publisher: Publisher,
        max_payload_bytes: usize,
        keys: FireKeys,
        log: ScheduledLog,
        breakers: Arc<OpenBreakers>,
    ) -> Self {
        Self {
            fire_calls: std::array::from_fn(|i| {
                let label: &'static str = CODES.get(i).map_or(OTHER_CODE, |(_, label)| label);
                metrics::counter!("herald_fire_calls_total", "code" => label)
            }),
            cache,
            publisher,
            max_payload_bytes,
            keys,
            log,
            breakers,
            held: metrics::counter!("herald_breaker_parked_total"),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn payload_status(e: PayloadError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn queue_status(e: QueueError) -> Status {
    Status::unavailable(format!(
        "the delivery could not be queued, nothing was confirmed: {e}; retry the call"
    ))
}

fn keyed_status(e: FireKeyError<QueueError>, fire: &Fire) -> Status {
    let key = &fire.idempotency_key;
    match e {
        FireKeyError::Conflict { first_used } => Status::already_exists(format!(
            "idempotency_key: {key:?} was first used at {} (tenant {:?}) for a different event or \
             data; a repeat must send exactly the same event and data. Use a new key for a new event",
            herald_core::template::rfc3339_millis(unix_ms(first_used)),
            fire.tenant.as_str()
        )),
        FireKeyError::Publish(e) => Status::unavailable(format!(
            "the deliveries could not all be queued: {e}; retry with the same idempotency_key \
             (the retry sends the same delivery ids, so receivers can de-duplicate)"
        )),
        FireKeyError::Vanished => Status::unavailable(e.to_string()),
        FireKeyError::Store(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "idempotency store unavailable; keyed Fire refused"
            );
            Status::unavailable(format!(
                "a Fire call with an idempotency_key needs Postgres, which is unavailable ({e}); \
                 nothing was queued. Retry later, or fire without a key"
            ))
        }
    }
}

/// The enabled webhooks `event` reaches (by name or pattern), or why it
/// cannot be fired.
fn enabled_webhooks(
    snapshot: &ConfigSnapshot,
    tenant: &Tenant,
    event: &EventName,
) -> Result<Vec<Arc<Webhook>>, Status> {
    let (tenant, event) = (tenant.as_str(), event.as_str());
    let webhooks = snapshot.webhooks_for(tenant, event);
    if webhooks.is_empty() {
        let known: Vec<&str> = snapshot
            .events(tenant)
            .into_iter()
            .map(|(event, _)| event)
            .take(20)
            .collect();
        return Err(Status::not_found(format!(
            "event {event:?} is not configured for tenant {tenant:?}; configured events: [{}]. Create a webhook for it first",
            known.join(", ")
        )));
    }
    let enabled: Vec<_> = webhooks.iter().filter(|w| w.enabled).cloned().collect();
    if enabled.is_empty() {
        return Err(Status::failed_precondition(format!(
            "every webhook of event {event:?} (tenant {tenant:?}) is disabled; enable one to fire it"
        )));
    }
    Ok(enabled)
}

/// Keeps the webhooks whose filter lets the event through. The fired data
/// is read for the filters only when some webhook has one, so fan-out
/// without filters costs nothing more. A filter that does not answer
/// `true` (false, or an error such as a missing field) means no delivery
/// for its webhook, never a failed Fire.
fn passing_filters(
    webhooks: Vec<Arc<Webhook>>,
    fire: &Fire,
    payload: &Payload,
) -> Vec<Arc<Webhook>> {
    if webhooks.iter().all(|w| w.filter.is_none()) {
        return webhooks;
    }
    let json = match payload {
        Payload::Json(text) => serde_json::from_str::<serde_json::Value>(text).ok(),
        Payload::Text(_) => None,
    };
    let data = match (&json, payload) {
        (Some(value), _) => FilterData::Json(value),
        (None, Payload::Json(text) | Payload::Text(text)) => FilterData::Text(text),
    };
    let input = FilterInput::new(fire.tenant.as_str(), fire.event.as_str(), data);
    webhooks
        .into_iter()
        .filter(|w| {
            let Some(filter) = &w.filter else {
                return true;
            };
            match filter.matches(&input) {
                Ok(passes) => passes,
                Err(reason) => {
                    metrics::counter!("herald_filter_errors_total").increment(1);
                    tracing::debug!(webhook_id = %w.id, %reason, "filter gave no answer; no delivery");
                    false
                }
            }
        })
        .collect()
}

fn message(
    fire: &Fire,
    webhook: &Webhook,
    delivery_id: Uuid,
    fired_at_unix_ms: i64,
    data: &delivery_message::Data,
) -> DeliveryMessage {
    DeliveryMessage {
        delivery_id: delivery_id.as_bytes().to_vec(),
        tenant: fire.tenant.to_string(),
        event: fire.event.to_string(),
        webhook_id: webhook.id.as_bytes().to_vec(),
        attempt: 1,
        fired_at_unix_ms,
        data: Some(data.clone()),
        url: webhook.url.clone(),
        method: webhook.method.as_str().to_owned(),
        resent_from: Vec::new(),
        // Only an ordered webhook's delivery carries the key: that is what
        // sends it to the key's partition instead of a work queue.
        ordering_key: match &fire.ordering_key {
            Some(key) if webhook.ordered => key.as_str().to_owned(),
            _ => String::new(),
        },
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn fire(&self, request: Request<FireRequest>) -> Result<Response<FireResponse>, Status> {
        crate::auth::check_request_tenant(&request, |r| &r.tenant)?;
        let result = self.fire_checked(request.into_inner()).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let counted = CODES
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(CODES.len());
        self.fire_calls[counted].increment(1);
        result.map(Response::new)
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        crate::auth::check_request_tenant(&request, |r| &r.tenant)?;
        let tenant = Tenant::parse(request.into_inner().tenant).map_err(invalid)?;
        let snapshot = self.cache.snapshot();
        let events = snapshot
            .events(&tenant)
            .into_iter()
            .map(|(event, webhooks)| EventInfo {
                event: event.to_owned(),
                webhooks: webhooks
                    .iter()
                    .map(|w| webhook_to_proto_redacted(w))
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListEventsResponse { events }))
    }
}

/// A Fire call's addressing, parsed: the rest of Fire takes names that
/// passed their rules and never checks them again.
struct Fire {
    tenant: Tenant,
    event: EventName,
    /// Empty: no idempotency.
    idempotency_key: String,
    /// Orders the deliveries to ordered webhooks.
    ordering_key: Option<OrderingKey>,
}

impl Fire {
    /// Parses the request's names and key (in this order, so the first
    /// problem is the one reported), handing back its data for the payload.
    fn parse(req: FireRequest) -> Result<(Self, Option<fire_request::Data>), Status> {
        let FireRequest {
            tenant,
            event,
            idempotency_key,
            data,
            ordering_key,
        } = req;
        let tenant = Tenant::parse(tenant).map_err(invalid)?;
        let event = EventName::parse(event).map_err(invalid)?;
        if event.contains('*') {
            return Err(Status::invalid_argument(format!(
                "event: {:?} contains `*`, the wildcard of webhook subscriptions (\"order.*\"); \
                 fire the concrete event, e.g. \"order.created\"",
                event.as_str()
            )));
        }
        if herald_core::operational::is_operational(&event) {
            return Err(Status::invalid_argument(format!(
                "event: {:?} starts with \"herald.\", which is kept for Herald's own events \
                 (docs/protection.md); name the shop's event differently",
                event.as_str()
            )));
        }
        if idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "idempotency_key: is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_LEN} are allowed",
                idempotency_key.len()
            )));
        }
        let ordering_key = OrderingKey::parse(ordering_key).map_err(invalid)?;
        let fire = Self {
            tenant,
            event,
            idempotency_key,
            ordering_key,
        };
        Ok((fire, data))
    }
}

impl IngestService {
    /// Publishes Fire's deliveries, each confirmed, and queues their log
    /// rows. A delivery to a webhook whose breaker is open goes straight
    /// to the delay queue a sender would park it in (see
    /// [`OpenBreakers`]); every other one to its first attempt's queue.
    async fn publish_fired(&self, messages: Vec<DeliveryMessage>) -> Result<(), QueueError> {
        let first = first_attempt_in(&self.publisher);
        let holds: Vec<Option<Duration>> = messages.iter().map(|m| self.hold(m, first)).collect();
        try_join_all(messages.iter().zip(&holds).map(|(m, hold)| async move {
            match hold {
                Some(delay) => self.publisher.publish_after(m, *delay).await.map(drop),
                None => self.publisher.publish(m).await,
            }
        }))
        .await?;
        let mut due_now = Vec::with_capacity(messages.len());
        for (m, hold) in messages.into_iter().zip(holds) {
            match hold {
                Some(delay) => {
                    self.held.increment(1);
                    crate::scheduled::record(&self.log, [m], delay);
                }
                None => due_now.push(m),
            }
        }
        crate::scheduled::record(&self.log, due_now, first);
        Ok(())
    }

    /// How long `message` should wait before a sender sees it, if its
    /// webhook's breaker is open and would make it wait longer than its
    /// first attempt's delay `first`. Ordered deliveries go to their
    /// partition as always.
    fn hold(&self, message: &DeliveryMessage, first: Duration) -> Option<Duration> {
        if !message.ordering_key.is_empty() {
            return None;
        }
        let webhook = Uuid::from_slice(&message.webhook_id).ok()?;
        let remaining = self.breakers.remaining(webhook)?;
        let delay = self
            .publisher
            .topology()
            .declared_delays()
            .for_breaker(remaining);
        (delay > first).then_some(delay)
    }

    async fn fire_checked(&self, req: FireRequest) -> Result<FireResponse, Status> {
        let (fire, data) = Fire::parse(req)?;
        // No data at all is an empty text: an event can be a bare signal.
        let payload = match data {
            Some(fire_request::Data::Text(text)) => Payload::Text(text),
            Some(fire_request::Data::Json(json)) => Payload::Json(json),
            None => Payload::Text(String::new()),
        }
        .validated(self.max_payload_bytes)
        .map_err(payload_status)?;

        let snapshot = self.cache.snapshot();
        let enabled = enabled_webhooks(&snapshot, &fire.tenant, &fire.event)
            .map(|webhooks| passing_filters(webhooks, &fire, &payload));
        if !fire.idempotency_key.is_empty() {
            return self.fire_keyed(&fire, &payload, &snapshot, enabled).await;
        }
        let enabled = enabled?;

        let fired_at_unix_ms = unix_ms(SystemTime::now());
        let data = herald_queue::message_data(payload);
        let messages: Vec<DeliveryMessage> = enabled
            .iter()
            .map(|w| message(&fire, w, Uuid::now_v7(), fired_at_unix_ms, &data))
            .collect();
        let delivery_ids: Vec<String> = messages
            .iter()
            .filter_map(|m| Uuid::from_slice(&m.delivery_id).ok())
            .map(|id| id.to_string())
            .collect();
        self.publish_fired(messages).await.map_err(queue_status)?;
        tracing::debug!(event = %fire.event, tenant = %fire.tenant, deliveries = ?delivery_ids, "fired");
        Ok(FireResponse { delivery_ids })
    }

    /// Fire with an idempotency key: the deliveries recorded under the key
    /// are published at most until one call saw them all confirmed, and
    /// every call with the key answers their ids.
    async fn fire_keyed(
        &self,
        fire: &Fire,
        payload: &Payload,
        snapshot: &ConfigSnapshot,
        enabled: Result<Vec<Arc<Webhook>>, Status>,
    ) -> Result<FireResponse, Status> {
        // With nothing to deliver now (the event's webhooks were disabled or
        // deleted since) the key is still looked up, so that the retry of a
        // call that succeeded gets its ids instead of an error.
        let (deliveries, not_fireable) = match enabled {
            Ok(webhooks) => (
                webhooks
                    .iter()
                    .map(|w| FireDelivery {
                        webhook_id: w.id,
                        delivery_id: Uuid::now_v7(),
                    })
                    .collect(),
                None,
            ),
            Err(status) => (Vec::new(), Some(status)),
        };
        let request = KeyedFire {
            tenant: &fire.tenant,
            key: &fire.idempotency_key,
            request_hash: fire_request_hash(&fire.event, payload),
            deliveries,
        };
        let data = &herald_queue::message_data(payload.clone());
        // Publishes what the key recorded: this call's deliveries, or those
        // of an earlier call that did not finish. They are rebuilt from the
        // current configuration; a webhook deleted (or moved to another
        // event) since has nothing to deliver to and is skipped.
        let publish = |stored: StoredFire| async move {
            let fired_at_unix_ms = unix_ms(stored.first_used);
            let messages: Vec<DeliveryMessage> = stored
                .deliveries
                .iter()
                .filter_map(|d| {
                    let webhook = snapshot.webhook(d.webhook_id).filter(|w| {
                        w.tenant == *fire.tenant && w.events.matches(fire.event.as_str())
                    })?;
                    Some(message(
                        fire,
                        webhook,
                        d.delivery_id,
                        fired_at_unix_ms,
                        data,
                    ))
                })
                .collect();
            // The deliveries of an earlier call may be logged already; the
            // log keeps the first row of each.
            self.publish_fired(messages).await?;
            Ok(())
        };
        let outcome = self.keys.fire(&request, publish).await;
        let label = match &outcome {
            Ok(FireOutcome::Published(_)) => "published",
            Ok(FireOutcome::Recorded(_)) => "recorded",
            Ok(FireOutcome::Unused) => "unused",
            Err(FireKeyError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        metrics::counter!("herald_fire_idempotency_total", "outcome" => label).increment(1);
        let stored = match outcome {
            Ok(FireOutcome::Published(stored) | FireOutcome::Recorded(stored)) => stored,
            Ok(FireOutcome::Unused) => {
                return Err(not_fireable.unwrap_or_else(|| {
                    Status::internal("an idempotent Fire with deliveries recorded nothing")
                }));
            }
            Err(e) => return Err(keyed_status(e, fire)),
        };
        let delivery_ids: Vec<String> = stored.delivery_ids().map(|id| id.to_string()).collect();
        tracing::debug!(
            event = %fire.event,
            tenant = %fire.tenant,
            deliveries = ?delivery_ids,
            outcome = label,
            "fired with an idempotency key"
        );
        Ok(FireResponse { delivery_ids })
    }
}

/// The codes `herald_fire_calls_total` names, with their labels; every other
/// code is counted as [`OTHER_CODE`].
const CODES: [(tonic::Code, &str); 6] = [
    (tonic::Code::Ok, "ok"),
    (tonic::Code::InvalidArgument, "invalid_argument"),
    (tonic::Code::NotFound, "not_found"),
    (tonic::Code::FailedPrecondition, "failed_precondition"),
    (tonic::Code::AlreadyExists, "already_exists"),
    (tonic::Code::Unavailable, "unavailable"),
];

const OTHER_CODE: &str = "other";

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counted_code_has_its_own_label() {
        let labels: std::collections::BTreeSet<&str> = CODES
            .iter()
            .map(|(_, label)| *label)
            .chain([OTHER_CODE])
            .collect();
        assert_eq!(labels.len(), CODES.len() + 1);
    }
}
