//! API keys of the gRPC API: the `api_keys` table and the in-memory copy of
//! the active keys that ingest checks every call against.
//!
//! Tokens are never stored, only their SHA-256 ([`TokenHash`]) and a display
//! prefix. Ingest authenticates a call with a hash-table look-up in
//! [`ApiKeyCache`], without a database round trip, and the cache follows
//! `LISTEN herald_api_keys` so that a revocation reaches every replica within
//! about a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_core::api_key::{ApiToken, NewApiKey, Scopes, TokenHash};
use tokio::sync::{Mutex, watch};
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use uuid::Uuid;

use crate::watch::Watched;
use crate::{Store, StoreError, parse_url};

const API_KEY_COLUMNS: &str =
    "id, name, token_prefix, scopes, tenant, created_at, revoked_at, token_hash";

/// A key as stored, without its token (which Herald does not have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// `hrk_` and the next 8 characters of the token.
    pub token_prefix: String,
    pub scopes: Scopes,
    /// `None`: every tenant; `Some("")`: the default tenant only.
    pub tenant: Option<String>,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

fn api_key_from_row(row: &Row) -> Result<(ApiKey, TokenHash), StoreError> {
    let id: Uuid = row.get(0);
    let scope_names: Vec<String> = row.get(3);
    let scopes = Scopes::parse(&scope_names).map_err(|e| StoreError::Corrupt {
        what: "api key",
        id,
        detail: e.to_string(),
    })?;
    let hash_bytes: Vec<u8> = row.get(7);
    let hash = TokenHash::from_slice(&hash_bytes).ok_or_else(|| StoreError::Corrupt {
        what: "api key",
        id,
        detail: format!("token_hash has {} bytes, not 32", hash_bytes.len()),
    })?;
    Ok((
        ApiKey {
            id,
            name: row.get(1),
            token_prefix: row.get(2),
            scopes,
            tenant: row.get(4),
            created_at: row.get(5),
            revoked_at: row.get(6),
        },
        hash,
    ))
}

impl Store {
    /// Saves a new key for `token` (only its hash and display prefix are
    /// written) under a fresh UUIDv7.
    pub async fn create_api_key(
        &self,
        new: &NewApiKey,
        token: &ApiToken,
    ) -> Result<ApiKey, StoreError> {
        let client = self.pool().get().await?;
        let id = Uuid::now_v7();
        let scopes: Vec<&str> = new.scopes.names();
        let hash = token.hash().0.to_vec();
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO api_keys (id, name, token_prefix, token_hash, scopes, tenant) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {API_KEY_COLUMNS}"
                ),
                &[
                    &id,
                    &new.name,
                    &token.display_prefix(),
                    &hash,
                    &scopes,
                    &new.tenant,
                ],
            )
            .await?;
        api_key_from_row(&row).map(|(key, _)| key)
    }

    /// Keys ordered by creation, optionally only those limited to `tenant`,
    /// and only active ones unless `include_revoked`.
    pub async fn list_api_keys(
        &self,
        tenant: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys \
                     WHERE ($1::text IS NULL OR tenant = $1) AND ($2 OR revoked_at IS NULL) \
                     ORDER BY created_at, id"
                ),
                &[&tenant, &include_revoked],
            )
            .await?;
        rows.iter()
            .map(|row| api_key_from_row(row).map(|(key, _)| key))
            .collect()
    }

    pub async fn get_api_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "api key",
                id,
            })?;
        api_key_from_row(&row).map(|(key, _)| key)
    }

    /// Revokes a key. Revoking it again keeps the first revocation time.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 \
                     RETURNING {API_KEY_COLUMNS}"
                ),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "api key",
                id,
            })?;
        api_key_from_row(&row).map(|(key, _)| key)
    }

    /// The keys that may be used, by token hash.
    async fn active_api_keys(&self) -> Result<HashMap<TokenHash, Arc<ApiKey>>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"),
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| api_key_from_row(row).map(|(key, hash)| (hash, Arc::new(key))))
            .collect()
    }

    /// The tenant of a webhook, also of a deleted one whose deliveries are
    /// still recorded; `None` when neither exists. Authorizes tenant-limited
    /// keys for calls that name only a webhook id.
    pub async fn webhook_tenant(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT tenant FROM webhooks WHERE id = $1 \
                 UNION ALL \
                 (SELECT tenant FROM deliveries WHERE webhook_id = $1 LIMIT 1) \
                 LIMIT 1",
                &[&id],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }
}

/// The active API keys, by token hash, kept fresh from Postgres.
#[derive(Clone, Debug)]
pub struct ApiKeyCache {
    inner: Arc<KeysInner>,
}

#[derive(Debug)]
struct KeysInner {
    store: Store,
    current: watch::Sender<Arc<HashMap<TokenHash, Arc<ApiKey>>>>,
    /// Serialises reloads, so that an older read cannot overwrite a newer
    /// one (a revocation must never come undone, not even briefly).
    reload_lock: Mutex<()>,
}

impl ApiKeyCache {
    /// Loads the active keys (an error here is returned: ingest must not
    /// start without knowing its keys) and spawns the watcher that keeps
    /// them fresh until `shutdown`.
    pub async fn start(
        store: Store,
        database_url: &str,
        refresh_every: Duration,
        shutdown: CancellationToken,
    ) -> Result<ApiKeyCache, StoreError> {
        parse_url(database_url)?;
        let keys = store.active_api_keys().await?;
        info!(keys = keys.len(), "loaded API keys");
        let (current, _) = watch::channel(Arc::new(keys));
        let cache = ApiKeyCache {
            inner: Arc::new(KeysInner {
                store,
                current,
                reload_lock: Mutex::new(()),
            }),
        };
        crate::watch::spawn(cache.clone(), database_url, refresh_every, shutdown);
        Ok(cache)
    }

    /// The active key with this token hash.
    pub fn lookup(&self, hash: &TokenHash) -> Option<Arc<ApiKey>> {
        self.inner.current.borrow().get(hash).cloned()
    }

    /// How many keys are active.
    pub fn len(&self) -> usize {
        self.inner.current.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the active keys now; a write through this process calls it so
    /// that its own next call sees the change at once.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _serialised = self.inner.reload_lock.lock().await;
        let keys = self.inner.store.active_api_keys().await?;
        debug!(keys = keys.len(), "reloaded API keys");
        self.inner.current.send_replace(Arc::new(keys));
        Ok(())
    }
}

/// The `api_keys` trigger notifies `herald_api_keys`.
impl Watched for ApiKeyCache {
    const WHAT: &'static str = "API keys";
    const CHANNEL: &'static str = "herald_api_keys";

    async fn reload(&self) -> Result<(), StoreError> {
        ApiKeyCache::reload(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;

    fn new_key(name: &str, scopes: &[&str], tenant: Option<&str>) -> NewApiKey {
        NewApiKey::validate(name, scopes, tenant).unwrap()
    }

    #[tokio::test]
    async fn keys_are_stored_as_hashes_and_revocation_is_followed() {
        let db = TestDb::migrated().await;
        let store = Store::new(db.pool());
        let shutdown = CancellationToken::new();
        // An hour between refreshes: only NOTIFY can explain a quick update.
        let cache = ApiKeyCache::start(
            store.clone(),
            db.url(),
            Duration::from_secs(3600),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert!(cache.is_empty());

        let token = ApiToken::generate().unwrap();
        let key = store
            .create_api_key(
                &new_key("shop-1", &["fire", "read"], Some("shop-1")),
                &token,
            )
            .await
            .unwrap();
        assert_eq!(key.token_prefix, token.display_prefix());
        assert_eq!(key.tenant.as_deref(), Some("shop-1"));
        assert_eq!(key.scopes.names(), ["fire", "read"]);

        // No column holds the token or any part of it beyond the prefix.
        let client = db.connect().await;
        let dump: String = client
            .query_one("SELECT api_keys::text FROM api_keys", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!dump.contains(&token.expose()[12..]), "{dump}");

        // Another process's write arrives through the notification.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while cache.lookup(&token.hash()).is_none() {
            assert!(tokio::time::Instant::now() < deadline, "key not seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*cache.lookup(&token.hash()).unwrap(), key);

        let revoked = store.revoke_api_key(key.id).await.unwrap();
        let again = store.revoke_api_key(key.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(
            revoked.revoked_at, again.revoked_at,
            "first revocation kept"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while cache.lookup(&token.hash()).is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "revocation not seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        assert!(store.list_api_keys(None, false).await.unwrap().is_empty());
        assert_eq!(store.list_api_keys(None, true).await.unwrap(), [again]);
        assert!(
            store
                .list_api_keys(Some("other"), true)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .revoke_api_key(Uuid::now_v7())
                .await
                .unwrap_err()
                .is_not_found()
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn webhook_tenant_outlives_the_webhook() {
        let db = TestDb::migrated().await;
        let store = Store::new(db.pool());
        let client = db.connect().await;
        let id = Uuid::now_v7();
        assert_eq!(store.webhook_tenant(id).await.unwrap(), None);
        client
            .execute(
                "INSERT INTO webhooks (id, tenant, event, method, url) \
                 VALUES ($1, 'shop-1', 'e', 'POST', 'https://x.example/')",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            store.webhook_tenant(id).await.unwrap().as_deref(),
            Some("shop-1")
        );
        client
            .execute(
                "INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, \
                     payload_kind, fired_at, state) \
                 VALUES ($1, 'shop-1', 'e', $2, 'https://x.example/', 'POST', 'text', now(), 'pending')",
                &[&Uuid::now_v7(), &id],
            )
            .await
            .unwrap();
        client
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(
            store.webhook_tenant(id).await.unwrap().as_deref(),
            Some("shop-1")
        );
    }
}
