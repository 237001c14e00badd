//! Admin's delivery log: listing deliveries, per-webhook summaries, resend,
//! replay of failed deliveries, and test sends.
//!
//! Resends and replays are new deliveries (new id, full schedule) linked to
//! the original by `resent_from`; they carry the original's data as stored in
//! `deliveries.payload` and go to the webhook's current URL and method. Both
//! are idempotent per caller-chosen `request_id` (see
//! [`Store::record_resend`](herald_store::Store::record_resend)).
//!
//! The delivery log is the `deliveries` table as Admin shows it, not the
//! service's tracing output. This module must never write a delivery's
//! attempts (the sender does) nor query Postgres itself: it goes through
//! [`herald_store::Store`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_core::{DeliveryState, Payload, Webhook};
use herald_proto::v1::{
    DeliveryMessage, FireResponse, GetWebhookSummaryRequest, ListDeliveriesRequest,
    ListDeliveriesResponse, ReplayFailedRequest, ResendDeliveryRequest, ResendResponse,
    SendTestEventRequest, WebhookSummary, send_test_event_request,
};
use herald_proto::v1::{
    GetWebhookTimelineRequest, TimelineBucket as TimelineBucketProto, WebhookTimeline,
};
use herald_queue::QueueError;
use herald_store::{
    Cursor, DEFAULT_PAGE_SIZE, DeliveryFilter, DeliveryView, MAX_PAGE_SIZE, ResendError,
    ResendKind, ResendRecord,
};
use tonic::Status;
use uuid::Uuid;

use crate::AdminService;
use crate::admin::{parse_id, store_status};
use crate::convert::delivery_to_proto;
use crate::ingest::unix_ms;

/// A timeline's bucket width when none is asked for: an hour.
const DEFAULT_BUCKET_SECONDS: u32 = 3600;
/// The narrowest bucket a timeline may ask for.
const MIN_BUCKET_SECONDS: u32 = 60;
/// The most buckets one timeline may span.
const MAX_BUCKETS: u32 = 400;
/// A timeline's range when no start is given.
const DEFAULT_TIMELINE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most failed deliveries one ReplayFailed call resends.
const MAX_REPLAY: u32 = 10_000;
/// Longest request id accepted.
const MAX_REQUEST_ID_LEN: usize = 200;

fn time(field: &str, ms: i64) -> Result<SystemTime, Status> {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field}: {ms} is not a time (milliseconds since 1970-01-01 UTC)"
            ))
        })
}

fn range(
    from: Option<i64>,
    to: Option<i64>,
) -> Result<(Option<SystemTime>, Option<SystemTime>), Status> {
    let from = from.map(|ms| time("from_unix_ms", ms)).transpose()?;
    let to = to.map(|ms| time("to_unix_ms", ms)).transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(Status::invalid_argument(
            "from_unix_ms: is after to_unix_ms; the range is [from, to)",
        ));
    }
    Ok((from, to))
}

/// What a ReplayFailed caller must give as its range.
const REPLAY_RANGE: &str = "give the range of fired times to replay as Unix milliseconds, \
    from_unix_ms before to_unix_ms (the range is [from, to))";

/// The range of a ReplayFailed call. Both bounds are required: a replay of
/// "everything" would be an accident, and an unset bound used to mean 0,
/// which answered OK with no deliveries. An empty range (from = to) is
/// refused for the same reason.
fn replay_range(from: Option<i64>, to: Option<i64>) -> Result<(SystemTime, SystemTime), Status> {
    // A client generated from a herald.proto older than the optional fields
    // cannot send 0, so an unset from may be a from of 0 meant literally.
    const OLD_CLIENTS: &str =
        "a client built from an older herald.proto cannot send 0: give 1 for the start of 1970";
    let (from_ms, to_ms) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (None, None) => {
            return Err(Status::invalid_argument(format!(
                "from_unix_ms and to_unix_ms: are not set; {REPLAY_RANGE}; {OLD_CLIENTS}"
            )));
        }
        (None, Some(_)) => {
            return Err(Status::invalid_argument(format!(
                "from_unix_ms: is not set; {REPLAY_RANGE}; {OLD_CLIENTS}"
            )));
        }
        (Some(_), None) => {
            return Err(Status::invalid_argument(format!(
                "to_unix_ms: is not set; {REPLAY_RANGE}"
            )));
        }
    };
    let from = time("from_unix_ms", from_ms)?;
    let to = time("to_unix_ms", to_ms)?;
    if from >= to {
        return Err(Status::invalid_argument(format!(
            "from_unix_ms: {from_ms} is not before to_unix_ms {to_ms}; {REPLAY_RANGE}"
        )));
    }
    Ok((from, to))
}

fn check_request_id(request_id: &str) -> Result<(), Status> {
    if request_id.is_empty() {
        return Err(Status::invalid_argument(
            "request_id: required; pass any unique string (e.g. a fresh UUID) and reuse it when \
             retrying, so that a repeated call does not send twice",
        ));
    }
    if request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "request_id: is {} bytes long; at most {MAX_REQUEST_ID_LEN} are allowed",
            request_id.len()
        )));
    }
    Ok(())
}

fn queue_status(e: QueueError) -> Status {
    Status::unavailable(format!(
        "the deliveries could not be queued, nothing was recorded: {e}; retry with the same request_id"
    ))
}

fn ids_response(ids: &[Uuid]) -> ResendResponse {
    ResendResponse {
        delivery_ids: ids.iter().map(Uuid::to_string).collect(),
    }
}

/// The answer for a request id that was used before, if it fits `kind`.
fn recorded(
    request_id: &str,
    kind: ResendKind,
    recorded_kind: &str,
    ids: &[Uuid],
) -> Result<ResendResponse, Status> {
    if recorded_kind != kind.as_str() {
        return Err(Status::invalid_argument(format!(
            "request_id: {request_id:?} was already used for a {recorded_kind}; use a new one"
        )));
    }
    Ok(ids_response(ids))
}

/// A message that sends `original`'s data again to `webhook`.
pub(crate) fn resend_message(
    original: &DeliveryView,
    webhook: &Webhook,
) -> Result<DeliveryMessage, Status> {
    let Some(payload) = &original.payload else {
        return Err(Status::failed_precondition(format!(
            "delivery {} has no stored data any more (removed by payload retention); it cannot be resent",
            original.id
        )));
    };
    let data = herald_queue::message_data(Payload::from_stored(
        &original.payload_kind,
        payload.clone(),
    ));
    Ok(DeliveryMessage {
        delivery_id: Uuid::now_v7().as_bytes().to_vec(),
        tenant: original.tenant.clone(),
        event: original.event.clone(),
        webhook_id: webhook.id.as_bytes().to_vec(),
        attempt: 1,
        fired_at_unix_ms: unix_ms(SystemTime::now()),
        data: Some(data),
        url: webhook.url.clone(),
        method: webhook.method.as_str().to_owned(),
        resent_from: original.id.as_bytes().to_vec(),
        // A resend to an ordered webhook keeps its key, so it takes its
        // place in the key's order (after whatever is queued already).
        ordering_key: match &original.ordering_key {
            Some(key) if webhook.ordered => key.clone(),
            _ => String::new(),
        },
    })
}

fn message_ids(messages: &[DeliveryMessage]) -> Vec<Uuid> {
    messages
        .iter()
        .filter_map(|m| Uuid::from_slice(&m.delivery_id).ok())
        .collect()
}

fn resend_status(e: ResendError<QueueError>) -> Status {
    match e {
        ResendError::Store(e) => store_status(e),
        ResendError::Send(e) => queue_status(e),
    }
}

impl AdminService {
    /// The webhook as this process knows it, if it exists and is enabled.
    pub(crate) fn enabled_webhook(&self, id: Uuid) -> Result<Webhook, Status> {
        let snapshot = self.cache.snapshot();
        let Some(webhook) = snapshot.webhook(id) else {
            return Err(Status::failed_precondition(format!(
                "webhook {id} does not exist (any more); nothing can be sent to it"
            )));
        };
        if !webhook.enabled {
            return Err(Status::failed_precondition(format!(
                "webhook {id} is disabled; enable it first"
            )));
        }
        Ok(Webhook::clone(webhook))
    }

    pub(crate) async fn list_deliveries_checked(
        &self,
        req: ListDeliveriesRequest,
    ) -> Result<ListDeliveriesResponse, Status> {
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is too large; at most {MAX_PAGE_SIZE} are allowed"
                )));
            }
            n => n,
        };
        let state = req
            .state
            .as_deref()
            .map(|s| {
                DeliveryState::parse(s).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "state: {s:?} is not one of scheduled, pending, succeeded, failed, cancelled"
                    ))
                })
            })
            .transpose()?;
        let webhook_id = req
            .webhook_id
            .as_deref()
            .map(|id| parse_id("webhook_id", id))
            .transpose()?;
        let (from, to) = range(req.from_unix_ms, req.to_unix_ms)?;
        let cursor = if req.cursor.is_empty() {
            None
        } else {
            Some(Cursor::decode(&req.cursor).map_err(|e| Status::invalid_argument(e.to_string()))?)
        };
        let filter = DeliveryFilter {
            tenant: req.tenant,
            event: req.event,
            webhook_id,
            state,
            from,
            to,
        };
        let page = self
            .reads
            .list_deliveries(&filter, page_size, cursor)
            .await
            .map_err(store_status)?;
        Ok(ListDeliveriesResponse {
            deliveries: page.deliveries.iter().map(delivery_to_proto).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()).unwrap_or_default(),
        })
    }

    pub(crate) async fn webhook_summary_checked(
        &self,
        req: GetWebhookSummaryRequest,
    ) -> Result<WebhookSummary, Status> {
        // A deleted webhook's history stays readable, so the id need not
        // exist any more.
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        let (from, to) = range(req.from_unix_ms, req.to_unix_ms)?;
        let summary = self
            .reads
            .webhook_summary(webhook_id, from, to)
            .await
            .map_err(store_status)?;
        Ok(WebhookSummary {
            webhook_id: webhook_id.to_string(),
            fired: summary.fired,
            succeeded: summary.succeeded,
            failed: summary.failed,
            pending: summary.pending,
            cancelled: summary.cancelled,
            scheduled: summary.scheduled,
            success_rate: summary.success_rate,
            p50_attempt_ms: summary.p50_attempt_ms.unwrap_or(0),
            p95_attempt_ms: summary.p95_attempt_ms.unwrap_or(0),
        })
    }

    pub(crate) async fn webhook_timeline_checked(
        &self,
        req: GetWebhookTimelineRequest,
    ) -> Result<WebhookTimeline, Status> {
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        let bucket_seconds = match req.bucket_seconds {
            0 => DEFAULT_BUCKET_SECONDS,
            n if n < MIN_BUCKET_SECONDS => {
                return Err(Status::invalid_argument(format!(
                    "bucket_seconds: {n} is too small; at least {MIN_BUCKET_SECONDS} (or 0 for an hour)"
                )));
            }
            n => n,
        };
        let (from, to) = range(req.from_unix_ms, req.to_unix_ms)?;
        let to = to.unwrap_or_else(SystemTime::now);
        let from = from.unwrap_or_else(|| to.checked_sub(DEFAULT_TIMELINE).unwrap_or(UNIX_EPOCH));
        let bucket = Duration::from_secs(u64::from(bucket_seconds));
        let span = to.duration_since(from).unwrap_or_default();
        if span > bucket * MAX_BUCKETS {
            return Err(Status::invalid_argument(format!(
                "bucket_seconds: {bucket_seconds} makes {} buckets of the range; at most \
                 {MAX_BUCKETS} are allowed: widen the buckets or narrow the range",
                span.as_secs().div_ceil(u64::from(bucket_seconds))
            )));
        }
        let buckets = self
            .reads
            .webhook_timeline(webhook_id, from, to, bucket)
            .await
            .map_err(store_status)?;
        Ok(WebhookTimeline {
            webhook_id: webhook_id.to_string(),
            bucket_seconds,
            buckets: buckets
                .into_iter()
                .map(|b| TimelineBucketProto {
                    start_unix_ms: b.start_unix_s.saturating_mul(1000),
                    fired: b.fired,
                    succeeded: b.succeeded,
                    failed: b.failed,
                    pending: b.pending,
                    cancelled: b.cancelled,
                    scheduled: b.scheduled,
                    attempts: b.attempts,
                    p50_attempt_ms: b.p50_attempt_ms.unwrap_or(0),
                    p95_attempt_ms: b.p95_attempt_ms.unwrap_or(0),
                })
                .collect(),
        })
    }

    pub(crate) async fn resend_checked(
        &self,
        req: ResendDeliveryRequest,
    ) -> Result<ResendResponse, Status> {
        let id = parse_id("id", &req.id)?;
        check_request_id(&req.request_id)?;
        // A repeated request answers what it answered the first time, even
        // if the delivery could not be resent any more today.
        if let Some((kind, ids)) = self
            .store
            .recorded_resend(&req.request_id)
            .await
            .map_err(store_status)?
        {
            return recorded(&req.request_id, ResendKind::Resend, &kind, &ids);
        }
        let original = self.store.get_delivery(id).await.map_err(store_status)?;
        let webhook = self.enabled_webhook(original.webhook_id)?;
        let message = resend_message(&original, &webhook)?;
        let ids = message_ids(std::slice::from_ref(&message));
        let publisher = &self.publisher;
        let outcome = self
            .store
            .record_resend(&req.request_id, ResendKind::Resend, &ids, || {
                publisher.publish(&message)
            })
            .await
            .map_err(resend_status)?;
        match outcome {
            ResendRecord::Sent(ids) => {
                crate::scheduled::record(
                    &self.log,
                    [message],
                    crate::scheduled::first_attempt_in(&self.publisher),
                );
                tracing::info!(delivery_id = %id, new_delivery_id = ?ids, "delivery resent");
                Ok(ids_response(&ids))
            }
            ResendRecord::Recorded { kind, delivery_ids } => {
                recorded(&req.request_id, ResendKind::Resend, &kind, &delivery_ids)
            }
        }
    }

    pub(crate) async fn replay_checked(
        &self,
        req: ReplayFailedRequest,
    ) -> Result<ResendResponse, Status> {
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        check_request_id(&req.request_id)?;
        let (from, to) = replay_range(req.from_unix_ms, req.to_unix_ms)?;
        if let Some((kind, ids)) = self
            .store
            .recorded_resend(&req.request_id)
            .await
            .map_err(store_status)?
        {
            return recorded(&req.request_id, ResendKind::Replay, &kind, &ids);
        }
        // The caller named this webhook: unknown is NOT_FOUND, as for
        // SendTestEvent (a resend's webhook, by contrast, is only implied).
        if self.cache.snapshot().webhook(webhook_id).is_none() {
            return Err(Status::not_found(format!(
                "webhook {webhook_id} does not exist"
            )));
        }
        let webhook = self.enabled_webhook(webhook_id)?;
        let failed = self
            .store
            .failed_deliveries(webhook_id, from, to, MAX_REPLAY + 1, req.include_cancelled)
            .await
            .map_err(store_status)?;
        if failed.len() > MAX_REPLAY as usize {
            return Err(Status::failed_precondition(format!(
                "more than {MAX_REPLAY} failed deliveries in the range; replay shorter ranges one after another"
            )));
        }
        let without_data: Vec<&DeliveryView> =
            failed.iter().filter(|d| d.payload.is_none()).collect();
        if let Some(newest) = without_data.first() {
            return Err(Status::failed_precondition(format!(
                "{} of the {} failed deliveries in the range have no stored data any more (removed by \
                 payload retention), the newest fired at {} ms; replay a range that starts after it",
                without_data.len(),
                failed.len(),
                unix_ms(newest.fired_at)
            )));
        }
        let messages = failed
            .iter()
            .map(|d| resend_message(d, &webhook))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = message_ids(&messages);
        let publisher = &self.publisher;
        let outcome = self
            .store
            .record_resend(&req.request_id, ResendKind::Replay, &ids, || {
                publisher.publish_all(&messages)
            })
            .await
            .map_err(resend_status)?;
        match outcome {
            ResendRecord::Sent(ids) => {
                crate::scheduled::record(
                    &self.log,
                    messages,
                    crate::scheduled::first_attempt_in(&self.publisher),
                );
                tracing::info!(%webhook_id, deliveries = ids.len(), "failed deliveries replayed");
                Ok(ids_response(&ids))
            }
            ResendRecord::Recorded { kind, delivery_ids } => {
                recorded(&req.request_id, ResendKind::Replay, &kind, &delivery_ids)
            }
        }
    }

    pub(crate) async fn test_send_checked(
        &self,
        req: SendTestEventRequest,
    ) -> Result<FireResponse, Status> {
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        let snapshot = self.cache.snapshot();
        let Some(webhook) = snapshot.webhook(webhook_id) else {
            return Err(Status::not_found(format!(
                "webhook {webhook_id} does not exist"
            )));
        };
        if !webhook.enabled {
            return Err(Status::failed_precondition(format!(
                "webhook {webhook_id} is disabled; enable it to send a test event"
            )));
        }
        let payload = match req.data {
            Some(send_test_event_request::Data::Text(text)) => Payload::Text(text),
            Some(send_test_event_request::Data::Json(json)) => Payload::Json(json),
            None => Payload::Text(String::new()),
        }
        .validated(self.max_payload_bytes)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let data = herald_queue::message_data(payload);
        let id = Uuid::now_v7();
        let message = DeliveryMessage {
            delivery_id: id.as_bytes().to_vec(),
            tenant: webhook.tenant.clone(),
            event: webhook.events.sample_event(),
            webhook_id: webhook_id.as_bytes().to_vec(),
            attempt: 1,
            fired_at_unix_ms: unix_ms(SystemTime::now()),
            data: Some(data),
            url: webhook.url.clone(),
            method: webhook.method.as_str().to_owned(),
            resent_from: Vec::new(),
            ordering_key: String::new(),
        };
        // Straight to the work queue: a test must not wait for the first
        // delay of the schedule. Retries follow the schedule as usual.
        self.publisher.publish_now(&message).await.map_err(|e| {
            Status::unavailable(format!(
                "the test delivery could not be queued: {e}; retry the call"
            ))
        })?;
        crate::scheduled::record(&self.log, [message], Duration::ZERO);
        tracing::info!(%webhook_id, delivery_id = %id, "test event sent");
        Ok(FireResponse {
            delivery_ids: vec![id.to_string()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_range_needs_both_bounds_in_order() {
        let refused = |from, to| {
            let status = replay_range(from, to).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_owned()
        };
        assert!(refused(None, None).starts_with("from_unix_ms and to_unix_ms: are not set"));
        assert!(refused(None, Some(5)).starts_with("from_unix_ms: is not set"));
        assert!(refused(Some(5), None).starts_with("to_unix_ms: is not set"));
        assert!(refused(Some(5), Some(5)).contains("5 is not before to_unix_ms 5"));
        assert!(refused(Some(6), Some(5)).contains("the range is [from, to)"));
        assert!(refused(Some(-1), Some(5)).contains("-1 is not a time"));
        assert!(refused(None, None).contains("Unix milliseconds"));
        let (from, to) = replay_range(Some(0), Some(1)).unwrap();
        assert_eq!(from, UNIX_EPOCH);
        assert_eq!(to, UNIX_EPOCH + Duration::from_millis(1));
    }
}
