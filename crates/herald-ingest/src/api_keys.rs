//! Admin's API key calls: `CreateApiKey`, `ListApiKeys`, `RevokeApiKey`.
//!
//! A created key's token is returned once and then exists only with the
//! caller: Herald keeps its SHA-256 and display prefix. A caller limited to
//! a tenant manages only keys of that tenant, and cannot hand out more than
//! it has.
//!
//! "API keys" are the bearer tokens callers of the gRPC API present; they are
//! not Fire's idempotency keys (`ingest.rs`, herald-store's `idempotency`)
//! nor webhook signing secrets (`admin.rs`). This module must never touch
//! either of those, nor check a caller's credentials: `auth.rs` does that.

use herald_core::api_key::{ApiToken, NewApiKey};
use herald_proto::v1::{
    ApiKey as ApiKeyProto, CreateApiKeyRequest, CreatedApiKey, ListApiKeysRequest,
    ListApiKeysResponse, RevokeApiKeyRequest,
};
use herald_store::ApiKey;
use tonic::Status;

use crate::AdminService;
use crate::admin::{not_found, parse_id, store_status};
use crate::auth::Principal;
use crate::ingest::unix_ms;

fn api_key_to_proto(key: &ApiKey) -> ApiKeyProto {
    ApiKeyProto {
        id: key.id.to_string(),
        name: key.name.clone(),
        token_prefix: key.token_prefix.clone(),
        scopes: key.scopes.names().into_iter().map(str::to_owned).collect(),
        tenant: key.tenant.clone(),
        created_at_unix_ms: unix_ms(key.created_at),
        revoked_at_unix_ms: key.revoked_at.map(unix_ms),
    }
}

impl AdminService {
    /// Makes a key change count in this process at once.
    async fn reload_api_keys(&self) {
        if let Some(keys) = &self.api_keys
            && let Err(e) = keys.reload().await
        {
            tracing::warn!(error = %e, "API key reload after a write failed; the watcher will retry");
        }
    }

    pub(crate) async fn create_api_key_checked(
        &self,
        principal: &Principal,
        req: CreateApiKeyRequest,
    ) -> Result<CreatedApiKey, Status> {
        // A caller limited to a tenant creates keys for that tenant: unset
        // means its own, another one is refused.
        let tenant = match (principal.tenant(), req.tenant) {
            (Some(own), None) => Some(own.to_owned()),
            (_, tenant) => tenant,
        };
        let new = NewApiKey::validate(&req.name, &req.scopes, tenant.as_deref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(tenant) = &new.tenant {
            principal.require_tenant(tenant)?;
        }
        if !new.scopes.within(principal.scopes()) {
            return Err(Status::permission_denied(format!(
                "scopes: [{}] grant more than this key's own [{}]",
                new.scopes,
                principal.scopes()
            )));
        }
        let token = ApiToken::generate().map_err(|e| Status::internal(e.to_string()))?;
        let key = self
            .store
            .create_api_key(&new, &token)
            .await
            .map_err(store_status)?;
        self.reload_api_keys().await;
        tracing::info!(
            key_id = %key.id,
            token_prefix = %key.token_prefix,
            scopes = %key.scopes,
            tenant = ?key.tenant,
            created_by = %principal,
            "API key created"
        );
        Ok(CreatedApiKey {
            key: Some(api_key_to_proto(&key)),
            token: token.expose().to_owned(),
        })
    }

    pub(crate) async fn list_api_keys_checked(
        &self,
        principal: &Principal,
        req: ListApiKeysRequest,
    ) -> Result<ListApiKeysResponse, Status> {
        let tenant = principal.list_filter(req.tenant)?;
        let keys = self
            .store
            .list_api_keys(tenant.as_deref(), req.include_revoked)
            .await
            .map_err(store_status)?;
        Ok(ListApiKeysResponse {
            keys: keys.iter().map(api_key_to_proto).collect(),
        })
    }

    pub(crate) async fn revoke_api_key_checked(
        &self,
        principal: &Principal,
        req: RevokeApiKeyRequest,
    ) -> Result<ApiKeyProto, Status> {
        let id = parse_id("id", &req.id)?;
        if principal.tenant().is_some() {
            // Keys for every tenant (tenant NULL) are not a limited
            // caller's either.
            let key = self.store.get_api_key(id).await.map_err(store_status)?;
            let visible = key
                .tenant
                .as_deref()
                .is_some_and(|tenant| principal.may_access(tenant));
            if !visible {
                return Err(not_found("api key", id));
            }
        }
        let key = self.store.revoke_api_key(id).await.map_err(store_status)?;
        self.reload_api_keys().await;
        tracing::info!(
            key_id = %key.id,
            token_prefix = %key.token_prefix,
            revoked_by = %principal,
            "API key revoked"
        );
        Ok(api_key_to_proto(&key))
    }
}
