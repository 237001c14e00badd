//! `Ingest.Fire` and `Ingest.ListEvents`.

use std::time::{SystemTime, UNIX_EPOCH};

use herald_core::webhook::{validate_event, validate_tenant};
use herald_core::{Payload, PayloadError};
use herald_proto::v1::{
    DeliveryMessage, EventInfo, FireRequest, FireResponse, ListEventsRequest, ListEventsResponse,
    delivery_message, fire_request, ingest_server::Ingest,
};
use herald_queue::{Publisher, QueueError};
use herald_store::ConfigCache;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert::webhook_to_proto_redacted;

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

pub struct IngestService {
    cache: ConfigCache,
    publisher: Publisher,
    max_payload_bytes: usize,
}

impl IngestService {
    pub fn new(cache: ConfigCache, publisher: Publisher, max_payload_bytes: usize) -> Self {
        Self {
            cache,
            publisher,
            max_payload_bytes,
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

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn fire(&self, request: Request<FireRequest>) -> Result<Response<FireResponse>, Status> {
        let result = self.fire_checked(request.into_inner()).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        metrics::counter!("herald_fire_calls_total", "code" => code_name(code)).increment(1);
        result.map(Response::new)
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let req = request.into_inner();
        validate_tenant(&req.tenant).map_err(invalid)?;
        let snapshot = self.cache.snapshot();
        let events = snapshot
            .events(&req.tenant)
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

impl IngestService {
    async fn fire_checked(&self, req: FireRequest) -> Result<FireResponse, Status> {
        validate_tenant(&req.tenant).map_err(invalid)?;
        validate_event(&req.event).map_err(invalid)?;
        if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "idempotency_key: is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_LEN} are allowed",
                req.idempotency_key.len()
            )));
        }
        // No data at all is an empty text: an event can be a bare signal.
        let payload = match req.data {
            Some(fire_request::Data::Text(text)) => Payload::Text(text),
            Some(fire_request::Data::Json(json)) => Payload::Json(json),
            None => Payload::Text(String::new()),
        }
        .validated(self.max_payload_bytes)
        .map_err(payload_status)?;

        let snapshot = self.cache.snapshot();
        let webhooks = snapshot.webhooks_for(&req.tenant, &req.event);
        if webhooks.is_empty() {
            let known: Vec<&str> = snapshot
                .events(&req.tenant)
                .into_iter()
                .map(|(event, _)| event)
                .take(20)
                .collect();
            return Err(Status::not_found(format!(
                "event {:?} is not configured for tenant {:?}; configured events: [{}]. Create a webhook for it first",
                req.event,
                req.tenant,
                known.join(", ")
            )));
        }
        let enabled: Vec<_> = webhooks.iter().filter(|w| w.enabled).collect();
        if enabled.is_empty() {
            return Err(Status::failed_precondition(format!(
                "every webhook of event {:?} (tenant {:?}) is disabled; enable one to fire it",
                req.event, req.tenant
            )));
        }

        let fired_at_unix_ms = unix_ms(SystemTime::now());
        let data = match &payload {
            Payload::Text(t) => delivery_message::Data::Text(t.clone()),
            Payload::Json(j) => delivery_message::Data::Json(j.clone()),
        };
        let messages: Vec<DeliveryMessage> = enabled
            .iter()
            .map(|w| DeliveryMessage {
                delivery_id: Uuid::now_v7().as_bytes().to_vec(),
                tenant: req.tenant.clone(),
                event: req.event.clone(),
                webhook_id: w.id.as_bytes().to_vec(),
                attempt: 1,
                fired_at_unix_ms,
                data: Some(data.clone()),
                url: w.url.clone(),
                method: w.method.as_str().to_owned(),
                resent_from: Vec::new(),
            })
            .collect();
        self.publisher
            .publish_all(&messages)
            .await
            .map_err(queue_status)?;
        let delivery_ids: Vec<String> = messages
            .iter()
            .filter_map(|m| Uuid::from_slice(&m.delivery_id).ok())
            .map(|id| id.to_string())
            .collect();
        tracing::debug!(event = %req.event, tenant = %req.tenant, deliveries = ?delivery_ids, "fired");
        Ok(FireResponse { delivery_ids })
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "ok",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::NotFound => "not_found",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Unavailable => "unavailable",
        _ => "other",
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
