//! Webhook configuration CRUD and reading a delivery with its attempts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use herald_core::breaker::BreakerSettings;
use herald_core::filter::Filter;
use herald_core::ordering::OnFinalFailure;
use herald_core::signing::SigningSecret;
use herald_core::subscription::Subscription;
use herald_core::webhook::{BodyMode, PreviousSecret, SecretHeaders, Signing};
use herald_core::{
    DeliveryState, Method, NewWebhook, RateLimit, ValidationError, Webhook, WebhookPatch,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{SecretBox, StoreError};

/// Column list of `webhooks`, in the order [`webhook_from_row`] reads it.
const WEBHOOK_COLUMNS: &str = "id, tenant, event, enabled, method, url, headers, body_template, \
     timeout_ms, description, created_at, updated_at, body_mode, content_type, secret_headers, \
     signing_secret, previous_signing_secret, previous_secret_expires_at, older_signing_secrets, \
     id_header, trace_context, more_events, filter, ordered, ordered_on_failure, \
     rate_limit_per_second, rate_limit_burst, breaker_failures, breaker_cooldown_ms, \
     auto_disable_after_s, disabled_reason, disabled_at";

/// Column list of `deliveries`, as [`delivery_from_row`] reads it (public
/// so that the bench can show the plans of the log's real queries).
pub const DELIVERY_COLUMNS: &str = "id, tenant, event, webhook_id, target_url, method, \
     payload, payload_kind, fired_at, state, attempts, last_status_code, last_error, \
     last_attempt_at, next_attempt_at, finished_at, resent_from, ordering_key";

/// Access to the webhook configuration and the delivery tables.
///
/// Cheap to clone: it only holds the pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    secrets: SecretBox,
}

impl Store {
    /// A store that keeps secrets unencrypted (marked plain).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            secrets: SecretBox::plaintext(),
        }
    }

    /// Seals secret values with `secrets` (an encryption key, usually).
    pub fn with_secrets(mut self, secrets: SecretBox) -> Self {
        self.secrets = secrets;
        self
    }

    fn seal(&self, id: Uuid, value: &str) -> Result<String, StoreError> {
        self.secrets
            .seal(value)
            .map_err(|source| StoreError::Secret { id, source })
    }

    fn seal_headers(
        &self,
        id: Uuid,
        headers: &SecretHeaders,
    ) -> Result<Option<String>, StoreError> {
        if headers.0.is_empty() {
            return Ok(None);
        }
        self.seal(id, &headers_to_json(&headers.0).to_string())
            .map(Some)
    }

    fn read_webhook(&self, row: &Row) -> Result<Webhook, StoreError> {
        webhook_from_row(row, &self.secrets)
    }

    /// Reads a webhook and locks its row until `tx` ends, so that a change
    /// computed from it cannot overwrite a concurrent one.
    async fn locked_webhook(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: Uuid,
    ) -> Result<Webhook, StoreError> {
        let row = tx
            .query_opt(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "webhook",
                id,
            })?;
        self.read_webhook(&row)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The failure streak and breaker of webhook `id` (the default record
    /// for one that never failed).
    pub async fn webhook_health(
        &self,
        id: Uuid,
    ) -> Result<herald_core::breaker::HealthRecord, StoreError> {
        crate::HealthStore::new(self.pool.clone()).get(id).await
    }

    /// Saves a new webhook under a fresh UUIDv7 and returns it as stored (with
    /// the database's timestamps).
    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook, StoreError> {
        let client = self.pool.get().await?;
        let id = Uuid::now_v7();
        let secret_headers = self.seal_headers(id, &new.secret_headers)?;
        let signing_secret = new
            .signing
            .as_ref()
            .map(|s| self.seal(id, s.expose()))
            .transpose()?;
        let sql = format!(
            "INSERT INTO webhooks (id, tenant, event, enabled, method, url, headers, \
                 body_template, timeout_ms, description, body_mode, content_type, secret_headers, \
                 signing_secret, id_header, trace_context, more_events, filter, ordered, \
                 ordered_on_failure, rate_limit_per_second, rate_limit_burst, breaker_failures, \
                 breaker_cooldown_ms, auto_disable_after_s) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                     $17, $18, $19, $20, $21, $22, $23, $24, $25) \
             RETURNING {WEBHOOK_COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &id,
                    &new.tenant,
                    &new.events.first(),
                    &new.enabled,
                    &new.method.as_str(),
                    &new.url,
                    &headers_to_json(&new.headers),
                    &new.body_template,
                    &u32_to_i32(new.timeout_ms),
                    &new.description,
                    &new.body_mode.as_str(),
                    &new.content_type,
                    &secret_headers,
                    &signing_secret,
                    &new.id_header,
                    &new.trace_context,
                    &new.events.rest(),
                    &new.filter.as_ref().map(Filter::source),
                    &new.ordered,
                    &new.on_failure.as_str(),
                    &rate_column(new.rate_limit.map(RateLimit::per_second)),
                    &rate_column(new.rate_limit.map(RateLimit::burst)),
                    &breaker_failures(new.breaker),
                    &breaker_cooldown(new.breaker),
                    &seconds_column(new.auto_disable_after),
                ],
            )
            .await?;
        self.read_webhook(&row)
    }

    /// Applies `patch` to a webhook and returns the result.
    ///
    /// The row is locked while the patch is applied, so two concurrent updates
    /// of different fields both take effect instead of one overwriting the
    /// other with stale values.
    /// `check` sees the webhook as it would be after the patch; an error from
    /// it aborts the update.
    pub async fn update_webhook(
        &self,
        id: Uuid,
        patch: &WebhookPatch,
        check: impl FnOnce(&Webhook) -> Result<(), ValidationError>,
    ) -> Result<Webhook, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let current = self.locked_webhook(&tx, id).await?;
        let changed = patch.apply(&current);
        check(&changed)?;
        let secret_headers = self.seal_headers(id, &changed.secret_headers)?;
        let sql = format!(
            "UPDATE webhooks SET event = $2, enabled = $3, method = $4, url = $5, headers = $6, \
                 body_template = $7, timeout_ms = $8, description = $9, body_mode = $10, \
                 content_type = $11, secret_headers = $12, id_header = $13, trace_context = $14, \
                 more_events = $15, filter = $16, ordered = $17, ordered_on_failure = $18, \
                 rate_limit_per_second = $19, rate_limit_burst = $20, breaker_failures = $21, \
                 breaker_cooldown_ms = $22, auto_disable_after_s = $23, \
                 disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END, \
                 disabled_at = CASE WHEN $3 THEN NULL ELSE disabled_at END, updated_at = now() \
             WHERE id = $1 \
             RETURNING {WEBHOOK_COLUMNS}"
        );
        let row = tx
            .query_one(
                &sql,
                &[
                    &id,
                    &changed.events.first(),
                    &changed.enabled,
                    &changed.method.as_str(),
                    &changed.url,
                    &headers_to_json(&changed.headers),
                    &changed.body_template,
                    &u32_to_i32(changed.timeout_ms),
                    &changed.description,
                    &changed.body_mode.as_str(),
                    &changed.content_type,
                    &secret_headers,
                    &changed.id_header,
                    &changed.trace_context,
                    &changed.events.rest(),
                    &changed.filter.as_ref().map(Filter::source),
                    &changed.ordered,
                    &changed.on_failure.as_str(),
                    &rate_column(changed.rate_limit.map(RateLimit::per_second)),
                    &rate_column(changed.rate_limit.map(RateLimit::burst)),
                    &breaker_failures(changed.breaker),
                    &breaker_cooldown(changed.breaker),
                    &seconds_column(changed.auto_disable_after),
                ],
            )
            .await?;
        let updated = self.read_webhook(&row)?;
        if updated.enabled && !current.enabled {
            forget_failures(&tx, id).await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    /// Makes `secret` the signing secret; the current one keeps signing for
    /// `overlap` and every earlier one until its own overlap ends (see
    /// [`Signing::rotated`]), so receivers switch over without rejecting
    /// requests. A webhook without signing starts signing with `secret`.
    ///
    /// The row is locked while the new list is computed, so two concurrent
    /// rotations both keep the secret each of them replaced.
    pub async fn rotate_signing_secret(
        &self,
        id: Uuid,
        secret: &SigningSecret,
        overlap: Duration,
    ) -> Result<Webhook, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let current = self.locked_webhook(&tx, id).await?;
        let now = SystemTime::now();
        let signing = match current.signing {
            Some(signing) => signing.rotated(secret.clone(), now, overlap),
            None => Signing {
                secret: secret.clone(),
                previous: Vec::new(),
            },
        };
        let sealed = self.seal(id, signing.secret.expose())?;
        let (newest, older) = match signing.previous.split_first() {
            Some((newest, older)) => (Some(newest), older),
            None => (None, &[][..]),
        };
        let newest_sealed = newest
            .map(|p| self.seal(id, p.secret.expose()))
            .transpose()?;
        let older_sealed = if older.is_empty() {
            None
        } else {
            Some(self.seal(id, &older_secrets_to_json(older).to_string())?)
        };
        let sql = format!(
            "UPDATE webhooks SET signing_secret = $2, previous_signing_secret = $3, \
                 previous_secret_expires_at = $4, older_signing_secrets = $5, updated_at = now() \
             WHERE id = $1 RETURNING {WEBHOOK_COLUMNS}"
        );
        let row = tx
            .query_one(
                &sql,
                &[
                    &id,
                    &sealed,
                    &newest_sealed,
                    &newest.map(|p| p.expires_at),
                    &older_sealed,
                ],
            )
            .await?;
        let rotated = self.read_webhook(&row)?;
        tx.commit().await?;
        Ok(rotated)
    }

    pub async fn get_webhook(&self, id: Uuid) -> Result<Webhook, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "webhook",
                id,
            })?;
        self.read_webhook(&row)
    }

    /// Lists webhooks, optionally of one tenant and/or event, ordered by
    /// tenant, event and creation time.
    pub async fn list_webhooks(
        &self,
        tenant: Option<&str>,
        event: Option<&str>,
    ) -> Result<Vec<Webhook>, StoreError> {
        let client = self.pool.get().await?;
        // The id breaks ties between webhooks created in the same microsecond,
        // so that the order is stable from one call to the next.
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks \
             WHERE ($1::text IS NULL OR tenant = $1) \
             ORDER BY tenant, event, created_at, id"
        );
        let rows = client.query(&sql, &[&tenant]).await?;
        let mut webhooks = Vec::with_capacity(rows.len());
        for row in &rows {
            let webhook = self.read_webhook(row)?;
            // An event filter lists the webhooks that event reaches, through
            // an exact name or a pattern.
            if event.is_none_or(|e| webhook.events.matches(e)) {
                webhooks.push(webhook);
            }
        }
        Ok(webhooks)
    }

    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound {
                what: "webhook",
                id,
            });
        }
        Ok(())
    }

    pub async fn set_webhook_enabled(
        &self,
        id: Uuid,
        enabled: bool,
    ) -> Result<Webhook, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Enabling clears why Herald disabled it, and forgets the failures
        // that led there: the webhook starts afresh.
        let sql = format!(
            "UPDATE webhooks SET enabled = $2, updated_at = now(), \
                 disabled_reason = CASE WHEN $2 THEN NULL ELSE disabled_reason END, \
                 disabled_at = CASE WHEN $2 THEN NULL ELSE disabled_at END \
             WHERE id = $1 \
             RETURNING {WEBHOOK_COLUMNS}"
        );
        let row = tx
            .query_opt(&sql, &[&id, &enabled])
            .await?
            .ok_or(StoreError::NotFound {
                what: "webhook",
                id,
            })?;
        let webhook = self.read_webhook(&row)?;
        if enabled {
            forget_failures(&tx, id).await?;
        }
        tx.commit().await?;
        Ok(webhook)
    }

    /// A delivery as recorded for dashboards, with its attempts in order.
    pub async fn get_delivery(&self, id: Uuid) -> Result<DeliveryView, StoreError> {
        let client = self.pool.get().await?;
        let params: [&(dyn ToSql + Sync); 1] = [&id];
        let delivery_sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries_with_scheduled WHERE id = $1");
        // Both queries go out at once on the same connection (tokio-postgres
        // pipelines them), which saves a round trip.
        let (row, attempt_rows) = tokio::try_join!(
            client.query_opt(&delivery_sql, &params),
            client.query(
                "SELECT attempt, started_at, duration_ms, url, status_code, error_kind, \
                     error_message, response_excerpt \
                 FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
                &params,
            ),
        )?;
        let row = row.ok_or(StoreError::NotFound {
            what: "delivery",
            id,
        })?;
        let attempt_history = attempt_rows
            .iter()
            .map(|r| attempt_from_row(id, r))
            .collect::<Result<Vec<_>, _>>()?;
        delivery_from_row(&row, attempt_history)
    }
}

/// A row of `deliveries` with its attempts, for Admin's GetDelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub id: Uuid,
    pub tenant: String,
    pub event: String,
    pub webhook_id: Uuid,
    pub target_url: String,
    pub method: String,
    pub payload: Option<String>,
    pub payload_kind: String,
    pub fired_at: SystemTime,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<SystemTime>,
    pub next_attempt_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The delivery this one re-sends.
    pub resent_from: Option<Uuid>,
    /// The ordering key, for a delivery to an ordered webhook.
    pub ordering_key: Option<String>,
    /// Ordered by attempt number; empty in lists.
    pub attempt_history: Vec<AttemptView>,
}

/// A row of `delivery_attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub attempt: u32,
    pub started_at: SystemTime,
    pub duration_ms: u32,
    pub url: String,
    pub status_code: Option<u16>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub response_excerpt: Option<String>,
}

/// Converts a `u32` for an `integer` column. Values beyond `i32::MAX` cannot
/// occur for validated input; saturating keeps the write from failing if one
/// ever does.
pub(crate) fn u32_to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The JSON kept (sealed) in `older_signing_secrets`.
fn older_secrets_to_json(older: &[PreviousSecret]) -> serde_json::Value {
    serde_json::Value::Array(
        older
            .iter()
            .map(|p| {
                serde_json::json!({
                    "secret": p.secret.expose(),
                    "expires_at_unix_us": unix_us(p.expires_at),
                })
            })
            .collect(),
    )
}

/// Microseconds, the precision of `timestamptz`, so that every earlier
/// secret's end reads back exactly as the newest one's does.
fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn headers_to_json(headers: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        headers
            .iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
            .collect(),
    )
}

/// A rate or burst as its nullable column stores it.
fn rate_column(value: Option<u32>) -> Option<i32> {
    value.map(u32_to_i32)
}

/// The webhook's own rate limit, if it has one; a stored limit this release
/// would refuse is unreadable, like a method it does not know.
fn rate_limit_from_row(row: &Row) -> Result<Option<RateLimit>, String> {
    let per_second: Option<i32> = row
        .try_get("rate_limit_per_second")
        .map_err(|e| e.to_string())?;
    let burst: Option<i32> = row.try_get("rate_limit_burst").map_err(|e| e.to_string())?;
    let (Some(per_second), Some(burst)) = (per_second, burst) else {
        return Ok(None);
    };
    let unsigned = |v: i32| u32::try_from(v).unwrap_or(0);
    RateLimit::parse(unsigned(per_second), unsigned(burst)).map_err(|e| format!("rate limit: {e}"))
}

/// A duration in whole seconds, as its nullable column stores it.
fn seconds_column(value: Option<Duration>) -> Option<i32> {
    value.map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}

/// Forgets a webhook's failure streak and closes its breaker.
async fn forget_failures(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM webhook_health WHERE webhook_id = $1", &[&id])
        .await?;
    Ok(())
}

fn breaker_failures(breaker: Option<BreakerSettings>) -> Option<i32> {
    breaker
        .and_then(|b| b.failures)
        .map(|f| u32_to_i32(f.get()))
}

fn breaker_cooldown(breaker: Option<BreakerSettings>) -> Option<i32> {
    breaker
        .and_then(|b| b.cooldown)
        .map(|c| i32::try_from(c.as_millis()).unwrap_or(i32::MAX))
}

/// The webhook's own breaker settings, if it has any.
fn breaker_from_row(row: &Row) -> Result<Option<BreakerSettings>, String> {
    let failures: Option<i32> = row.try_get("breaker_failures").map_err(|e| e.to_string())?;
    let cooldown: Option<i32> = row
        .try_get("breaker_cooldown_ms")
        .map_err(|e| e.to_string())?;
    let unsigned = |v: Option<i32>| v.map_or(0, |v| u32::try_from(v).unwrap_or(0));
    BreakerSettings::parse(unsigned(failures), unsigned(cooldown))
        .map_err(|e| format!("breaker: {e}"))
}

pub(crate) fn webhook_from_row(row: &Row, secrets: &SecretBox) -> Result<Webhook, StoreError> {
    let id: Uuid = row.try_get("id")?;
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "webhook",
        id,
        detail,
    };
    let method: &str = row.try_get("method")?;
    let method =
        Method::parse(method).ok_or_else(|| corrupt(format!("unknown method {method:?}")))?;
    let headers = match row.try_get::<_, serde_json::Value>("headers")? {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(s) => Ok((name, s)),
                other => Err(corrupt(format!("header {name:?} is not a string: {other}"))),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?,
        other => return Err(corrupt(format!("headers are not a JSON object: {other}"))),
    };
    let timeout_ms: i32 = row.try_get("timeout_ms")?;
    let timeout_ms = u32::try_from(timeout_ms)
        .map_err(|_| corrupt(format!("timeout_ms {timeout_ms} is negative")))?;
    let body_mode: &str = row.try_get("body_mode")?;
    let body_mode = BodyMode::parse(body_mode)
        .ok_or_else(|| corrupt(format!("unknown body mode {body_mode:?}")))?;
    let open = |sealed: Option<String>| {
        sealed
            .map(|s| {
                secrets
                    .open(&s)
                    .map_err(|source| StoreError::Secret { id, source })
            })
            .transpose()
    };
    let secret_headers = match open(row.try_get("secret_headers")?)? {
        None => SecretHeaders::default(),
        Some(json) => match serde_json::from_str::<BTreeMap<String, String>>(&json) {
            Ok(map) => SecretHeaders(map),
            Err(e) => return Err(corrupt(format!("secret headers are unreadable: {e}"))),
        },
    };
    let parse_secret = |text: String| {
        SigningSecret::parse(&text).map_err(|e| corrupt(format!("signing secret: {e}")))
    };
    let signing = match open(row.try_get("signing_secret")?)? {
        None => None,
        Some(current) => {
            let mut previous = Vec::new();
            // A previous secret without an end (never written so) cannot sign.
            if let (Some(secret), Some(expires_at)) = (
                open(row.try_get("previous_signing_secret")?)?,
                row.try_get::<_, Option<SystemTime>>("previous_secret_expires_at")?,
            ) {
                previous.push(PreviousSecret {
                    secret: parse_secret(secret)?,
                    expires_at,
                });
            }
            if let Some(json) = open(row.try_get("older_signing_secrets")?)? {
                #[derive(serde::Deserialize)]
                struct Older {
                    secret: String,
                    expires_at_unix_us: u64,
                }
                let older: Vec<Older> = serde_json::from_str(&json)
                    .map_err(|e| corrupt(format!("older signing secrets are unreadable: {e}")))?;
                for o in older {
                    previous.push(PreviousSecret {
                        secret: parse_secret(o.secret)?,
                        expires_at: SystemTime::UNIX_EPOCH
                            + Duration::from_micros(o.expires_at_unix_us),
                    });
                }
            }
            Some(Signing {
                secret: parse_secret(current)?,
                previous,
            })
        }
    };
    Ok(Webhook {
        body_mode,
        content_type: row.try_get("content_type")?,
        secret_headers,
        signing,
        id_header: row.try_get("id_header")?,
        trace_context: row.try_get("trace_context")?,
        ordered: row.try_get("ordered")?,
        on_failure: OnFinalFailure::parse(row.try_get("ordered_on_failure")?)
            .map_err(|e| corrupt(e.to_string()))?,
        rate_limit: rate_limit_from_row(row).map_err(corrupt)?,
        breaker: breaker_from_row(row).map_err(corrupt)?,
        auto_disable_after: row
            .try_get::<_, Option<i32>>("auto_disable_after_s")?
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        disabled_reason: row.try_get("disabled_reason")?,
        disabled_at: row.try_get("disabled_at")?,
        id,
        tenant: row.try_get("tenant")?,
        events: Subscription::from_stored(
            row.try_get("event")?,
            &row.try_get::<_, Vec<String>>("more_events")?,
        ),
        // A filter was parsed when it was saved; one this release cannot
        // parse is unreadable, like a method or body mode it does not know.
        filter: row
            .try_get::<_, Option<String>>("filter")?
            .map(|source| {
                Filter::parse(&source).map_err(|e| {
                    corrupt(format!("filter {source:?} does not parse: {}", e.message))
                })
            })
            .transpose()?,
        enabled: row.try_get("enabled")?,
        method,
        url: row.try_get("url")?,
        headers,
        body_template: row.try_get("body_template")?,
        timeout_ms,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn delivery_from_row(
    row: &Row,
    attempt_history: Vec<AttemptView>,
) -> Result<DeliveryView, StoreError> {
    let id: Uuid = row.try_get("id")?;
    let state: &str = row.try_get("state")?;
    let state = DeliveryState::parse(state).ok_or_else(|| StoreError::Corrupt {
        what: "delivery",
        id,
        detail: format!("unknown state {state:?}"),
    })?;
    Ok(DeliveryView {
        id,
        tenant: row.try_get("tenant")?,
        event: row.try_get("event")?,
        webhook_id: row.try_get("webhook_id")?,
        target_url: row.try_get("target_url")?,
        method: row.try_get("method")?,
        payload: row.try_get("payload")?,
        payload_kind: row.try_get("payload_kind")?,
        fired_at: row.try_get("fired_at")?,
        state,
        attempts: non_negative(id, "attempts", row.try_get("attempts")?)?,
        last_status_code: status_code(id, row.try_get("last_status_code")?)?,
        last_error: row.try_get("last_error")?,
        last_attempt_at: row.try_get("last_attempt_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        finished_at: row.try_get("finished_at")?,
        resent_from: row.try_get("resent_from")?,
        ordering_key: row.try_get("ordering_key")?,
        attempt_history,
    })
}

fn attempt_from_row(delivery_id: Uuid, row: &Row) -> Result<AttemptView, StoreError> {
    Ok(AttemptView {
        attempt: non_negative(delivery_id, "attempt", row.try_get("attempt")?)?,
        started_at: row.try_get("started_at")?,
        duration_ms: non_negative(delivery_id, "duration_ms", row.try_get("duration_ms")?)?,
        url: row.try_get("url")?,
        status_code: status_code(delivery_id, row.try_get("status_code")?)?,
        error_kind: row.try_get("error_kind")?,
        error_message: row.try_get("error_message")?,
        response_excerpt: row.try_get("response_excerpt")?,
    })
}

fn non_negative(id: Uuid, column: &str, value: i32) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        what: "delivery",
        id,
        detail: format!("{column} {value} is negative"),
    })
}

fn status_code(id: Uuid, value: Option<i32>) -> Result<Option<u16>, StoreError> {
    value
        .map(|v| {
            u16::try_from(v).map_err(|_| StoreError::Corrupt {
                what: "delivery",
                id,
                detail: format!("status code {v} is out of range"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;

    fn new_webhook(tenant: &str, event: &str) -> NewWebhook {
        NewWebhook {
            ordered: true,
            on_failure: OnFinalFailure::Continue,
            rate_limit: RateLimit::parse(50, 0).unwrap(),
            breaker: BreakerSettings::parse(3, 0).unwrap(),
            auto_disable_after: Some(Duration::from_secs(3600)),
            tenant: tenant.into(),
            events: herald_core::subscription::Subscription::parse(&[event]).unwrap(),
            filter: None,
            enabled: true,
            method: Method::Post,
            url: "https://shop.example/hook".into(),
            headers: [("X-Shop".to_string(), "a\"b".to_string())].into(),
            body_template: Some("{\"id\": {{ data.id }}}".into()),
            timeout_ms: 2500,
            description: "orders".into(),
            body_mode: BodyMode::Template,
            content_type: Some("application/json".into()),
            secret_headers: SecretHeaders(
                [("Authorization".to_string(), "Bearer s3cret".to_string())].into(),
            ),
            signing: Some(SigningSecret::generate().unwrap()),
            id_header: Some("PS-WEBHOOK_EVENT-ID".into()),
            trace_context: true,
        }
    }

    #[tokio::test]
    async fn webhook_crud_round_trip() {
        let db = TestDb::migrated().await;
        let store = Store::new(db.pool());

        let created = store
            .create_webhook(&new_webhook("shop1", "order.created"))
            .await
            .unwrap();
        assert_eq!(created.id.get_version_num(), 7);
        assert_eq!(created.tenant, "shop1");
        assert_eq!(created.headers["X-Shop"], "a\"b");
        assert_eq!(created.timeout_ms, 2500);
        assert_eq!(created.id_header.as_deref(), Some("PS-WEBHOOK_EVENT-ID"));
        assert!(created.trace_context);
        assert!(created.ordered);
        assert_eq!(created.on_failure, OnFinalFailure::Continue);
        assert_eq!(
            created.rate_limit.map(|l| (l.per_second(), l.burst())),
            Some((50, 10))
        );
        assert_eq!(created.created_at, created.updated_at);
        assert_eq!(store.get_webhook(created.id).await.unwrap(), created);

        let other = store
            .create_webhook(&new_webhook("", "order.created"))
            .await
            .unwrap();
        let third = store
            .create_webhook(&new_webhook("shop1", "a.event"))
            .await
            .unwrap();

        let patch = WebhookPatch {
            url: Some("https://other.example/x".into()),
            method: Some(Method::Get),
            headers: Some(BTreeMap::new()),
            body_template: Some(None),
            trace_context: Some(false),
            ordered: Some(false),
            on_failure: Some(OnFinalFailure::Stop),
            rate_limit: Some(None),
            ..Default::default()
        };
        let updated = store
            .update_webhook(created.id, &patch, |_| Ok(()))
            .await
            .unwrap();
        assert_eq!(updated.url, "https://other.example/x");
        assert_eq!(updated.method, Method::Get);
        assert!(updated.headers.is_empty());
        assert_eq!(updated.body_template, None);
        assert!(!updated.trace_context);
        assert!(!updated.ordered);
        assert_eq!(updated.rate_limit, None, "removed");
        assert_eq!(updated.on_failure, OnFinalFailure::Stop);
        assert_eq!(updated.description, "orders", "unset fields are kept");
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at > created.updated_at);
        assert_eq!(store.get_webhook(created.id).await.unwrap(), updated);

        let disabled = store.set_webhook_enabled(created.id, false).await.unwrap();
        assert!(!disabled.enabled);
        assert_eq!(disabled.url, updated.url);

        let all = store.list_webhooks(None, None).await.unwrap();
        let ids: Vec<Uuid> = all.iter().map(|w| w.id).collect();
        assert_eq!(
            ids,
            [other.id, third.id, created.id],
            "ordered by tenant, event"
        );
        let shop1 = store.list_webhooks(Some("shop1"), None).await.unwrap();
        assert_eq!(shop1.len(), 2);
        let created_events = store
            .list_webhooks(None, Some("order.created"))
            .await
            .unwrap();
        assert_eq!(created_events.len(), 2);
        let one = store
            .list_webhooks(Some(""), Some("order.created"))
            .await
            .unwrap();
        assert_eq!(one, std::slice::from_ref(&other));

        store.delete_webhook(created.id).await.unwrap();
        let missing = Uuid::now_v7();
        for err in [
            store.get_webhook(created.id).await.unwrap_err(),
            store.delete_webhook(created.id).await.unwrap_err(),
            store
                .update_webhook(missing, &patch, |_| Ok(()))
                .await
                .unwrap_err(),
            store.set_webhook_enabled(missing, true).await.unwrap_err(),
            store.get_delivery(missing).await.unwrap_err(),
        ] {
            assert!(err.is_not_found(), "{err:?}");
        }
        assert_eq!(
            store.get_delivery(missing).await.unwrap_err().to_string(),
            format!("delivery {missing} does not exist")
        );
    }

    #[tokio::test]
    async fn secrets_are_sealed_at_rest_and_rotation_keeps_the_previous_secret() {
        let db = TestDb::migrated().await;
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let store = Store::new(db.pool()).with_secrets(SecretBox::with_key(key).unwrap());
        let new = new_webhook("shop1", "order.created");
        let created = store.create_webhook(&new).await.unwrap();
        assert_eq!(created.secret_headers, new.secret_headers);
        let first = created.signing.clone().unwrap();
        assert_eq!(Some(&first.secret), new.signing.as_ref());

        // Nothing secret is readable in the table itself.
        let client = db.pool().get().await.unwrap();
        let row = client
            .query_one(
                "SELECT secret_headers, signing_secret FROM webhooks WHERE id = $1",
                &[&created.id],
            )
            .await
            .unwrap();
        let (headers, secret): (String, String) = (row.get(0), row.get(1));
        assert!(headers.starts_with("enc:v1:") && !headers.contains("s3cret"));
        assert!(secret.starts_with("enc:v1:") && !secret.contains(&first.secret.expose()[6..]));
        // Without the key the secrets cannot be read back.
        let keyless = Store::new(db.pool());
        assert!(matches!(
            keyless.get_webhook(created.id).await,
            Err(StoreError::Secret { .. })
        ));

        let next = SigningSecret::generate().unwrap();
        let rotated = store
            .rotate_signing_secret(created.id, &next, Duration::from_secs(3600))
            .await
            .unwrap();
        let signing = rotated.signing.clone().unwrap();
        assert_eq!(signing.secret, next);
        assert_eq!(signing.previous.len(), 1);
        assert_eq!(signing.previous[0].secret, first.secret);
        let now = SystemTime::now();
        assert_eq!(
            rotated.signing_secrets(now).len(),
            2,
            "both sign during the overlap"
        );
        assert_eq!(
            rotated
                .signing_secrets(now + Duration::from_secs(7200))
                .len(),
            1
        );

        // A second rotation inside the first overlap (a shorter one) keeps
        // the first secret until its own end; the list survives a re-read
        // and is sealed at rest too.
        let third = SigningSecret::generate().unwrap();
        let again = store
            .rotate_signing_secret(created.id, &third, Duration::from_secs(60))
            .await
            .unwrap();
        let reread = store.get_webhook(created.id).await.unwrap();
        assert_eq!(reread.signing, again.signing);
        let signing = reread.signing.clone().unwrap();
        assert_eq!(signing.secret, third);
        let earlier: Vec<_> = signing.previous.iter().map(|p| &p.secret).collect();
        assert_eq!(earlier, vec![&next, &first.secret]);
        assert_eq!(
            signing.previous[1].expires_at,
            rotated.signing.unwrap().previous[0].expires_at
        );
        let now = SystemTime::now();
        assert_eq!(reread.signing_secrets(now).len(), 3);
        assert_eq!(
            reread.signing_secrets(now + Duration::from_secs(120)).len(),
            2,
            "the second secret's overlap ended, the first one's did not"
        );
        let older: String = client
            .query_one(
                "SELECT older_signing_secrets FROM webhooks WHERE id = $1",
                &[&created.id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(older.starts_with("enc:v1:") && !older.contains(&first.secret.expose()[6..]));

        // A failed check leaves the webhook unchanged.
        let patch = WebhookPatch {
            url: Some("https://changed.example/".into()),
            ..Default::default()
        };
        let refused = store
            .update_webhook(created.id, &patch, |_| {
                Err(ValidationError::new("url", "refused for the test"))
            })
            .await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))));
        assert_eq!(store.get_webhook(created.id).await.unwrap().url, new.url);
    }

    #[tokio::test]
    async fn invalid_values_are_refused_by_the_schema() {
        let db = TestDb::migrated().await;
        let store = Store::new(db.pool());
        let mut bad = new_webhook("", "e");
        bad.timeout_ms = 0;
        let err = store.create_webhook(&bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Db(_)), "{err:?}");
        assert!(store.list_webhooks(None, None).await.unwrap().is_empty());
    }
}
