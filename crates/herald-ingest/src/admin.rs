//! The `Admin` gRPC service: webhook configuration and delivery look-ups.
//!
//! Every write is validated here, at save time, and then reloads the
//! configuration cache of this process so that the caller's next Fire sees
//! it; other processes see it through Postgres notifications.

use std::time::Duration;

use herald_core::signing::SigningSecret;
use herald_core::ssrf::AddressPolicy;
use herald_core::template::TemplateEngine;
use herald_core::webhook::{
    NewWebhookInput, SaveRules, SecretHeaders, WebhookPatchInput, validate_target,
};
use herald_proto::v1::{
    CreateWebhookRequest, DeleteWebhookRequest, DeleteWebhookResponse, Delivery,
    GetDeliveryRequest, GetSigningSecretRequest, GetWebhookRequest, ListWebhooksRequest,
    ListWebhooksResponse, RotateSigningSecretRequest, SetWebhookEnabledRequest,
    SigningSecret as SigningSecretProto, UpdateWebhookRequest, Webhook, admin_server::Admin,
};
use herald_proto::v1::{
    FireResponse, GetWebhookSummaryRequest, ListDeliveriesRequest, ListDeliveriesResponse,
    ReplayFailedRequest, ResendDeliveryRequest, ResendResponse, SendTestEventRequest,
    WebhookSummary,
};
use herald_queue::Publisher;
use herald_store::{ConfigCache, Store, StoreError};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert::{delivery_to_proto, signing_to_proto, webhook_to_proto};

/// Default overlap of a rotated signing secret.
const DEFAULT_ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Deployment-wide rules for saving webhooks.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    /// Accept `http://` targets (development only).
    pub allow_http: bool,
    /// Addresses targets may use despite being internal.
    pub addresses: AddressPolicy,
}

pub struct AdminService {
    pub(crate) store: Store,
    pub(crate) cache: ConfigCache,
    /// Queues resends and test sends.
    pub(crate) publisher: Publisher,
    pub(crate) max_payload_bytes: usize,
    policy: TargetPolicy,
    templates: TemplateEngine,
}

impl AdminService {
    pub fn new(
        store: Store,
        cache: ConfigCache,
        publisher: Publisher,
        policy: TargetPolicy,
    ) -> Self {
        Self {
            store,
            cache,
            publisher,
            max_payload_bytes: herald_core::payload::DEFAULT_MAX_PAYLOAD_BYTES,
            policy,
            templates: TemplateEngine::new(),
        }
    }

    /// Largest data a test send may carry (as for Fire).
    pub fn with_max_payload_bytes(mut self, max_payload_bytes: usize) -> Self {
        self.max_payload_bytes = max_payload_bytes;
        self
    }

    fn rules(&self) -> SaveRules<'_> {
        SaveRules {
            allow_http: self.policy.allow_http,
            templates: &self.templates,
            addresses: &self.policy.addresses,
        }
    }

    /// Makes a write visible to this process's Fire at once.
    async fn refresh(&self) {
        if let Err(e) = self.cache.reload().await {
            tracing::warn!(error = %e, "configuration reload after a write failed; the watcher will retry");
        }
    }
}

pub(crate) fn parse_id(field: &str, id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id)
        .map_err(|_| Status::invalid_argument(format!("{field}: {id:?} is not a UUID")))
}

pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { what, id } => {
            Status::not_found(format!("{what} {id} does not exist"))
        }
        other => {
            tracing::warn!(error = ?other, "configuration store error");
            Status::unavailable(format!(
                "the configuration store is unavailable ({other}); retry later"
            ))
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_webhook(
        &self,
        request: Request<CreateWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let req = request.into_inner();
        let new = NewWebhookInput {
            tenant: req.tenant,
            event: req.event,
            enabled: req.enabled,
            method: req.method,
            url: req.url,
            headers: req.headers.into_iter().collect(),
            body_template: req.body_template,
            timeout_ms: req.timeout_ms,
            description: req.description,
            body_mode: req.body_mode,
            content_type: req.content_type,
            secret_headers: SecretHeaders(req.secret_headers.into_iter().collect()),
            signing_secret: req.signing_secret,
            disable_signing: req.disable_signing,
        }
        .validate(&self.rules())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let saved = self
            .store
            .create_webhook(&new)
            .await
            .map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %saved.id, event = %saved.event, tenant = %saved.tenant, "webhook created");
        // The one answer that carries the secret: the shop configures its
        // receiver with it (GetSigningSecret shows it again to admins).
        let mut reply = webhook_to_proto(&saved);
        if let Some(signing) = &saved.signing {
            reply.signing_secret = signing.secret.expose().to_owned();
        }
        Ok(Response::new(reply))
    }

    async fn update_webhook(
        &self,
        request: Request<UpdateWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let patch = WebhookPatchInput {
            event: req.event,
            enabled: req.enabled,
            method: req.method,
            url: req.url,
            headers: req.headers.map(|h| h.values.into_iter().collect()),
            body_template: req.body_template,
            timeout_ms: req.timeout_ms,
            description: req.description,
            body_mode: req.body_mode,
            content_type: req.content_type,
            secret_headers: req
                .secret_headers
                .map(|h| SecretHeaders(h.values.into_iter().collect())),
        }
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rules = self.rules();
        let saved = self
            .store
            .update_webhook(id, &patch, |changed| {
                validate_target(&changed.target(), &rules)
            })
            .await
            .map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %saved.id, "webhook updated");
        Ok(Response::new(webhook_to_proto(&saved)))
    }

    async fn get_webhook(
        &self,
        request: Request<GetWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let id = parse_id("id", &request.into_inner().id)?;
        let webhook = self.store.get_webhook(id).await.map_err(store_status)?;
        Ok(Response::new(webhook_to_proto(&webhook)))
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let req = request.into_inner();
        let webhooks = self
            .store
            .list_webhooks(req.tenant.as_deref(), req.event.as_deref())
            .await
            .map_err(store_status)?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: webhooks.iter().map(webhook_to_proto).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        let id = parse_id("id", &request.into_inner().id)?;
        self.store.delete_webhook(id).await.map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %id, "webhook deleted");
        Ok(Response::new(DeleteWebhookResponse {}))
    }

    async fn set_webhook_enabled(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let saved = self
            .store
            .set_webhook_enabled(id, req.enabled)
            .await
            .map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %id, enabled = req.enabled, "webhook enabled flag set");
        Ok(Response::new(webhook_to_proto(&saved)))
    }

    async fn get_signing_secret(
        &self,
        request: Request<GetSigningSecretRequest>,
    ) -> Result<Response<SigningSecretProto>, Status> {
        let id = parse_id("id", &request.into_inner().id)?;
        let webhook = self.store.get_webhook(id).await.map_err(store_status)?;
        let Some(signing) = &webhook.signing else {
            return Err(Status::failed_precondition(format!(
                "webhook {id} does not sign its requests; rotate a secret in to start signing"
            )));
        };
        Ok(Response::new(signing_to_proto(id, signing)))
    }

    async fn rotate_signing_secret(
        &self,
        request: Request<RotateSigningSecretRequest>,
    ) -> Result<Response<SigningSecretProto>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let secret = if req.new_secret.is_empty() {
            SigningSecret::generate().map_err(|e| Status::internal(e.to_string()))?
        } else {
            SigningSecret::parse(&req.new_secret)
                .map_err(|e| Status::invalid_argument(format!("new_secret: {e}")))?
        };
        let overlap = req.overlap_seconds.map_or(DEFAULT_ROTATION_OVERLAP, |s| {
            Duration::from_secs(u64::from(s))
        });
        if overlap > Duration::from_secs(30 * 24 * 3600) {
            return Err(Status::invalid_argument(
                "overlap_seconds: at most 2592000 (30 days) is allowed",
            ));
        }
        let saved = self
            .store
            .rotate_signing_secret(id, &secret, overlap)
            .await
            .map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %id, ?overlap, "signing secret rotated");
        let signing = saved
            .signing
            .as_ref()
            .ok_or_else(|| Status::internal("rotation lost the secret"))?;
        Ok(Response::new(signing_to_proto(id, signing)))
    }

    async fn get_delivery(
        &self,
        request: Request<GetDeliveryRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let id = parse_id("id", &request.into_inner().id)?;
        let delivery = self.store.get_delivery(id).await.map_err(store_status)?;
        Ok(Response::new(delivery_to_proto(&delivery)))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        self.list_deliveries_checked(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_webhook_summary(
        &self,
        request: Request<GetWebhookSummaryRequest>,
    ) -> Result<Response<WebhookSummary>, Status> {
        self.webhook_summary_checked(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn resend_delivery(
        &self,
        request: Request<ResendDeliveryRequest>,
    ) -> Result<Response<ResendResponse>, Status> {
        self.resend_checked(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn replay_failed(
        &self,
        request: Request<ReplayFailedRequest>,
    ) -> Result<Response<ResendResponse>, Status> {
        self.replay_checked(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn send_test_event(
        &self,
        request: Request<SendTestEventRequest>,
    ) -> Result<Response<FireResponse>, Status> {
        self.test_send_checked(request.into_inner())
            .await
            .map(Response::new)
    }
}
