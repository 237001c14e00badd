//! The `Admin` gRPC service: webhook configuration and delivery look-ups.
//!
//! Every write is validated here, at save time, and then reloads the
//! configuration cache of this process so that the caller's next Fire sees
//! it; other processes see it through Postgres notifications.
//!
//! Delivery look-ups read through `reads` (the read replica, when one is
//! configured; see `reads.rs`); every write and every read a decision rests
//! on (configuration, API keys, resend and replay) uses `store`, the primary.

use std::time::Duration;

use herald_core::signing::SigningSecret;
use herald_core::ssrf::AddressPolicy;
use herald_core::template::TemplateEngine;
use herald_core::webhook::{
    NewWebhookInput, SaveRules, SecretHeaders, WebhookPatchInput, validate_target,
};
use herald_proto::v1::{
    ApiKey as ApiKeyProto, CreateApiKeyRequest, CreatedApiKey, ListApiKeysRequest,
    ListApiKeysResponse, RevokeApiKeyRequest,
};
use herald_proto::v1::{Caller, GetWebhookTimelineRequest, WebhookTimeline, WhoAmIRequest};
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
use herald_proto::v1::{
    ListStoppedKeysRequest, ListStoppedKeysResponse, ResumeOrderingKeyRequest,
    ResumeOrderingKeyResponse,
};
use herald_queue::Publisher;
use herald_store::{ApiKeyCache, ConfigCache, ScheduledLog, Store, StoreError};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::{Principal, principal};
use crate::convert::{delivery_detail_to_proto, signing_to_proto, webhook_to_proto};
use crate::reads::LogReads;

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
    /// The delivery-log reads: the read replica if one is configured.
    pub(crate) reads: LogReads,
    pub(crate) cache: ConfigCache,
    /// Queues resends and test sends.
    pub(crate) publisher: Publisher,
    pub(crate) max_payload_bytes: usize,
    /// Where resends and test sends go to appear in the log as `scheduled`.
    pub(crate) log: ScheduledLog,
    policy: TargetPolicy,
    templates: TemplateEngine,
    /// Reloaded after a key is created or revoked, so that this process
    /// sees the change at once (others through Postgres notifications).
    pub(crate) api_keys: Option<ApiKeyCache>,
}

impl AdminService {
    pub fn new(
        store: Store,
        cache: ConfigCache,
        publisher: Publisher,
        policy: TargetPolicy,
        log: ScheduledLog,
    ) -> Self {
        Self {
            reads: LogReads::primary(store.clone()),
            store,
            cache,
            publisher,
            log,
            max_payload_bytes: herald_core::payload::DEFAULT_MAX_PAYLOAD_BYTES,
            policy,
            templates: TemplateEngine::new(),
            api_keys: None,
        }
    }

    /// The API key cache the key calls keep fresh.
    pub fn with_api_keys(mut self, api_keys: ApiKeyCache) -> Self {
        self.api_keys = Some(api_keys);
        self
    }

    /// Reads the delivery log through `reads` (with a read replica).
    pub(crate) fn with_reads(mut self, reads: LogReads) -> Self {
        self.reads = reads;
        self
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

    /// Answers NOT_FOUND, as for a webhook that does not exist, when the
    /// caller is limited to a tenant and the webhook belongs to another one.
    /// Unrestricted callers cost no query.
    pub(crate) async fn check_webhook_access(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<(), Status> {
        if principal.tenant().is_none() {
            return Ok(());
        }
        let hidden = || not_found("webhook", id);
        match self.store.webhook_tenant(id).await.map_err(store_status)? {
            Some(tenant) => principal.require_visible(&tenant, hidden()),
            None => Err(hidden()),
        }
    }

    /// Like `check_webhook_access`, for a delivery.
    pub(crate) async fn check_delivery_access(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<(), Status> {
        if principal.tenant().is_none() {
            return Ok(());
        }
        let delivery = self.reads.get_delivery(id).await.map_err(store_status)?;
        principal.require_visible(&delivery.tenant, not_found("delivery", id))
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

/// The answer for an id that does not exist, and for one the caller may not
/// see: the same, so that other tenants' ids cannot be confirmed.
pub(crate) fn not_found(what: &str, id: Uuid) -> Status {
    if what == "delivery" {
        return delivery_not_found(id);
    }
    Status::not_found(format!("{what} {id} does not exist"))
}

/// A delivery the log does not know, with what can be the reason: ids are
/// UUIDv7, so the id itself tells when it was fired.
fn delivery_not_found(id: Uuid) -> Status {
    let Some(fired_at) = id.get_timestamp().filter(|_| id.get_version_num() == 7) else {
        return Status::not_found(format!(
            "delivery {id} is not in the log: Herald's delivery ids are the UUIDv7 values Fire \
             returns, and this one is not (version {}); check the id",
            id.get_version_num()
        ));
    };
    let (secs, nanos) = fired_at.to_unix();
    let fired_ms = i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
        .saturating_add(i64::from(nanos / 1_000_000));
    Status::not_found(format!(
        "delivery {id} is not in the log. Its id says it was fired at {}: a delivery appears in \
         the log within about a second of Fire's answer (if Postgres was unreachable then, at \
         its first attempt); older ones may have been removed by retention \
         (HERALD_RETENTION_DAYS), and an id from another Herald deployment is not in this one's log",
        herald_core::template::rfc3339_millis(fired_ms)
    ))
}

pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { what, id } => not_found(what, id),
        // A change that would leave the webhook invalid (checked inside the
        // update's transaction): the caller's input, not the store, is wrong.
        StoreError::Invalid(e) => Status::invalid_argument(e.to_string()),
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
        let principal = principal(&request)?;
        let req = request.into_inner();
        principal.require_tenant(&req.tenant)?;
        let new = NewWebhookInput {
            tenant: req.tenant,
            event: req.event,
            events: req.events,
            filter: req.filter,
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
            id_header: req.id_header,
            trace_context: req.trace_context,
            ordered: req.ordered,
            ordered_on_failure: req.ordered_on_failure,
            rate_limit_per_second: req.rate_limit.map_or(0, |l| l.per_second),
            rate_limit_burst: req.rate_limit.map_or(0, |l| l.burst),
            breaker_failures: req.breaker.map_or(0, |b| b.failures),
            breaker_cooldown_ms: req.breaker.map_or(0, |b| b.cooldown_ms),
            auto_disable_after_s: req.auto_disable_after_s,
        }
        .validate(&self.rules())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let saved = self
            .store
            .create_webhook(&new)
            .await
            .map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %saved.id, events = %saved.events, tenant = %saved.tenant, "webhook created");
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
        let principal = principal(&request)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        self.check_webhook_access(&principal, id).await?;
        let patch = WebhookPatchInput {
            event: req.event,
            events: req.events.map(|e| e.values),
            filter: req.filter,
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
            id_header: req.id_header,
            trace_context: req.trace_context,
            ordered: req.ordered,
            ordered_on_failure: req.ordered_on_failure,
            rate_limit: req.rate_limit.map(|l| (l.per_second, l.burst)),
            breaker: req.breaker.map(|b| (b.failures, b.cooldown_ms)),
            auto_disable_after_s: req.auto_disable_after_s,
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
        let principal = principal(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        let webhook = self.store.get_webhook(id).await.map_err(store_status)?;
        principal.require_visible(&webhook.tenant, not_found("webhook", id))?;
        let health = self.store.webhook_health(id).await.map_err(store_status)?;
        let mut answer = webhook_to_proto(&webhook);
        answer.health = Some(crate::convert::health_to_proto(&health));
        Ok(Response::new(answer))
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let tenant = principal.list_filter(req.tenant)?;
        let webhooks = self
            .store
            .list_webhooks(tenant.as_deref(), req.event.as_deref())
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
        let principal = principal(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        self.check_webhook_access(&principal, id).await?;
        self.store.delete_webhook(id).await.map_err(store_status)?;
        self.refresh().await;
        tracing::info!(webhook_id = %id, "webhook deleted");
        Ok(Response::new(DeleteWebhookResponse {}))
    }

    async fn set_webhook_enabled(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        self.check_webhook_access(&principal, id).await?;
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
        let principal = principal(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        let webhook = self.store.get_webhook(id).await.map_err(store_status)?;
        principal.require_visible(&webhook.tenant, not_found("webhook", id))?;
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
        let principal = principal(&request)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        self.check_webhook_access(&principal, id).await?;
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
        let principal = principal(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        let (delivery, resent_as) =
            tokio::try_join!(self.reads.get_delivery(id), self.reads.resent_as(id))
                .map_err(store_status)?;
        principal.require_visible(&delivery.tenant, not_found("delivery", id))?;
        Ok(Response::new(delivery_detail_to_proto(
            &delivery, &resent_as,
        )))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let principal = principal(&request)?;
        let mut req = request.into_inner();
        req.tenant = principal.list_filter(req.tenant)?;
        self.list_deliveries_checked(req).await.map(Response::new)
    }

    async fn get_webhook_summary(
        &self,
        request: Request<GetWebhookSummaryRequest>,
    ) -> Result<Response<WebhookSummary>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        self.check_webhook_access(&principal, webhook_id).await?;
        self.webhook_summary_checked(req).await.map(Response::new)
    }

    async fn get_webhook_timeline(
        &self,
        request: Request<GetWebhookTimelineRequest>,
    ) -> Result<Response<WebhookTimeline>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        self.check_webhook_access(&principal, webhook_id).await?;
        self.webhook_timeline_checked(req).await.map(Response::new)
    }

    async fn resend_delivery(
        &self,
        request: Request<ResendDeliveryRequest>,
    ) -> Result<Response<ResendResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        self.check_delivery_access(&principal, id).await?;
        self.resend_checked(req).await.map(Response::new)
    }

    async fn replay_failed(
        &self,
        request: Request<ReplayFailedRequest>,
    ) -> Result<Response<ResendResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        self.check_webhook_access(&principal, webhook_id).await?;
        self.replay_checked(req).await.map(Response::new)
    }

    async fn resume_ordering_key(
        &self,
        request: Request<ResumeOrderingKeyRequest>,
    ) -> Result<Response<ResumeOrderingKeyResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        self.check_webhook_access(&principal, webhook_id).await?;
        self.resume_key_checked(req).await.map(Response::new)
    }

    async fn list_stopped_keys(
        &self,
        request: Request<ListStoppedKeysRequest>,
    ) -> Result<Response<ListStoppedKeysResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        self.check_webhook_access(&principal, webhook_id).await?;
        self.stopped_keys_checked(req).await.map(Response::new)
    }

    async fn send_test_event(
        &self,
        request: Request<SendTestEventRequest>,
    ) -> Result<Response<FireResponse>, Status> {
        let principal = principal(&request)?;
        let req = request.into_inner();
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        self.check_webhook_access(&principal, webhook_id).await?;
        self.test_send_checked(req).await.map(Response::new)
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreatedApiKey>, Status> {
        let principal = principal(&request)?;
        self.create_api_key_checked(&principal, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let principal = principal(&request)?;
        self.list_api_keys_checked(&principal, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<Caller>, Status> {
        let principal = principal(&request)?;
        Ok(Response::new(caller_to_proto(&principal)))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<ApiKeyProto>, Status> {
        let principal = principal(&request)?;
        self.revoke_api_key_checked(&principal, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// What WhoAmI answers for `principal`.
fn caller_to_proto(principal: &Principal) -> Caller {
    let scopes = herald_core::api_key::Scope::ALL
        .into_iter()
        .filter(|s| principal.scopes().grants(*s))
        .map(|s| s.as_str().to_owned())
        .collect();
    match principal {
        Principal::AuthDisabled => Caller {
            kind: "auth_disabled".into(),
            scopes,
            ..Caller::default()
        },
        Principal::Bootstrap => Caller {
            kind: "bootstrap".into(),
            scopes,
            ..Caller::default()
        },
        Principal::Key(key) => Caller {
            kind: "api_key".into(),
            key_id: key.id.to_string(),
            name: key.name.clone(),
            token_prefix: key.token_prefix.clone(),
            scopes,
            tenant: key.tenant.clone(),
        },
    }
}
