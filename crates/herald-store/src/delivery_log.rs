//! The delivery log: listing deliveries page by page, per-webhook summaries,
//! and the record of resend / replay requests that makes them idempotent.
//!
//! Lists are newest first, ordered by `(fired_at, id)`, and paged with a
//! keyset cursor (the position of the last row shown), so a page costs the
//! same at the end of a long history as at its start. Every filter set maps
//! onto one of the `(…, fired_at DESC)` indexes of `deliveries`.
//!
//! The delivery log is the `deliveries` table read back for people, not the
//! services' tracing output. This module only reads deliveries and records
//! resend requests; it must never write attempts or change a delivery's
//! state (the [`AttemptWriter`](crate::AttemptWriter) owns that).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::DeliveryState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::store::{DELIVERY_COLUMNS, delivery_from_row};
use crate::{DeliveryView, Store, StoreError};

/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Which deliveries to list; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub tenant: Option<String>,
    pub event: Option<String>,
    pub webhook_id: Option<Uuid>,
    pub state: Option<DeliveryState>,
    /// Fired at or after this time.
    pub from: Option<SystemTime>,
    /// Fired before this time.
    pub to: Option<SystemTime>,
}

/// A position in the newest-first list: the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub fired_at: SystemTime,
    pub id: Uuid,
}

/// Version byte of the cursor encoding, so it can change later.
const CURSOR_V1: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor: {0:?} is not a cursor returned by ListDeliveries")]
pub struct InvalidCursor(pub String);

impl Cursor {
    /// Opaque text form: base64url of version, fired_at (µs since the
    /// epoch, big-endian i64) and id.
    pub fn encode(&self) -> String {
        let micros = match self.fired_at.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
        };
        let mut bytes = Vec::with_capacity(25);
        bytes.push(CURSOR_V1);
        bytes.extend_from_slice(&micros.to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let invalid = || InvalidCursor(text.to_owned());
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        if bytes.len() != 25 || bytes[0] != CURSOR_V1 {
            return Err(invalid());
        }
        let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| invalid())?);
        let id = Uuid::from_slice(&bytes[9..]).map_err(|_| invalid())?;
        let offset = Duration::from_micros(micros.unsigned_abs());
        let fired_at = if micros >= 0 {
            UNIX_EPOCH.checked_add(offset)
        } else {
            UNIX_EPOCH.checked_sub(offset)
        }
        .ok_or_else(invalid)?;
        Ok(Self { fired_at, id })
    }
}

/// One page of a delivery list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPage {
    /// Newest first, without attempt history.
    pub deliveries: Vec<DeliveryView>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// Counts and attempt durations of a webhook's deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSummaryView {
    pub fired: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
    /// Fired, not attempted yet.
    pub scheduled: u64,
    pub cancelled: u64,
    /// `succeeded / (succeeded + failed)`; 0 when none has finished.
    pub success_rate: f64,
    /// Attempt duration percentiles; `None` when there was no attempt.
    pub p50_attempt_ms: Option<u32>,
    pub p95_attempt_ms: Option<u32>,
}

/// One bucket of a webhook's timeline: its deliveries fired in the bucket
/// by their state now, and the attempts started in it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimelineBucket {
    /// Start of the bucket, in whole seconds since 1970-01-01 UTC.
    pub start_unix_s: i64,
    pub fired: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
    pub cancelled: u64,
    pub scheduled: u64,
    pub attempts: u64,
    pub p50_attempt_ms: Option<u32>,
    pub p95_attempt_ms: Option<u32>,
}

/// At most this many deliveries are named as resends of one delivery.
pub const MAX_RESENT_AS: i64 = 100;

/// What a resend / replay request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendKind {
    /// One delivery sent again.
    Resend,
    /// The failed deliveries of a webhook in a range sent again.
    Replay,
}

impl ResendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resend => "resend",
            Self::Replay => "replay",
        }
    }
}

/// The outcome of [`Store::record_resend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendRecord {
    /// This call sent the deliveries and recorded them.
    Sent(Vec<Uuid>),
    /// The request id was used before; nothing was sent this time.
    Recorded {
        kind: String,
        delivery_ids: Vec<Uuid>,
    },
}

/// Why [`Store::record_resend`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ResendError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `send` failed; nothing was recorded, so the same request id can be
    /// tried again.
    #[error("sending failed")]
    Send(E),
}

/// A SQL `WHERE` clause under construction, with its parameters.
struct Where<'a> {
    sql: String,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Where<'a> {
    fn new() -> Self {
        Self {
            sql: String::new(),
            params: Vec::new(),
        }
    }

    /// Adds `condition`, in which `$?` stands for `value`'s placeholder.
    fn and(&mut self, condition: &str, value: &'a (dyn ToSql + Sync)) {
        self.params.push(value);
        let placeholder = format!("${}", self.params.len());
        self.sql.push_str(if self.sql.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        self.sql.push_str(&condition.replace("$?", &placeholder));
    }
}

struct FilterValues {
    state: Option<&'static str>,
}

impl FilterValues {
    fn of(filter: &DeliveryFilter) -> Self {
        Self {
            state: filter.state.map(DeliveryState::as_str),
        }
    }
}

fn push_filter<'a>(w: &mut Where<'a>, filter: &'a DeliveryFilter, values: &'a FilterValues) {
    if let Some(tenant) = &filter.tenant {
        w.and("tenant = $?", tenant);
    }
    if let Some(event) = &filter.event {
        w.and("event = $?", event);
    }
    if let Some(webhook_id) = &filter.webhook_id {
        w.and("webhook_id = $?", webhook_id);
    }
    if let Some(state) = &values.state {
        w.and("state = $?", state);
    }
    if let Some(from) = &filter.from {
        w.and("fired_at >= $?", from);
    }
    if let Some(to) = &filter.to {
        w.and("fired_at < $?", to);
    }
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn millis(value: Option<f64>) -> Option<u32> {
    // Durations are non-negative integers of milliseconds; the float only
    // comes from the percentile's interpolation.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    value.map(|v| v.round().clamp(0.0, f64::from(u32::MAX)) as u32)
}

impl Store {
    /// One page of deliveries matching `filter`, newest first, starting after
    /// `after` (the previous page's `next_cursor`). `page_size` is clamped to
    /// 1..=[`MAX_PAGE_SIZE`].
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page_size: u32,
        after: Option<Cursor>,
    ) -> Result<DeliveryPage, StoreError> {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let values = FilterValues::of(filter);
        let mut w = Where::new();
        push_filter(&mut w, filter, &values);
        let cursor = after.map(|c| (c.fired_at, c.id));
        if let Some((fired_at, id)) = &cursor {
            // Spelled out rather than as a row comparison so that the
            // `fired_at <=` part is an index condition on every index; the
            // tie-break on id only filters rows of the same instant.
            let n = w.params.len();
            w.and("fired_at <= $?", fired_at);
            w.params.push(id);
            w.sql
                .push_str(&format!(" AND (fired_at < ${} OR id < ${})", n + 1, n + 2));
        }
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries_with_scheduled{} ORDER BY fired_at DESC, id DESC LIMIT {}",
            w.sql,
            page_size + 1
        );
        let client = self.pool().get().await?;
        let rows = client.query(&sql, &w.params).await?;
        let mut deliveries = rows
            .iter()
            .map(|row| delivery_from_row(row, Vec::new()))
            .collect::<Result<Vec<_>, _>>()?;
        let more = deliveries.len() > page_size as usize;
        deliveries.truncate(page_size as usize);
        let next_cursor = if more {
            deliveries.last().map(|d| Cursor {
                fired_at: d.fired_at,
                id: d.id,
            })
        } else {
            None
        };
        Ok(DeliveryPage {
            deliveries,
            next_cursor,
        })
    }

    /// Counts by state and attempt-duration percentiles of the deliveries of
    /// `webhook_id` fired in `[from, to)`.
    pub async fn webhook_summary(
        &self,
        webhook_id: Uuid,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
    ) -> Result<WebhookSummaryView, StoreError> {
        let filter = DeliveryFilter {
            webhook_id: Some(webhook_id),
            from,
            to,
            ..DeliveryFilter::default()
        };
        let values = FilterValues::of(&filter);
        let mut w = Where::new();
        push_filter(&mut w, &filter, &values);
        let counts_sql = format!(
            "SELECT count(*), \
                 count(*) FILTER (WHERE state = 'succeeded'), \
                 count(*) FILTER (WHERE state = 'failed'), \
                 count(*) FILTER (WHERE state = 'pending'), \
                 count(*) FILTER (WHERE state = 'cancelled'), \
                 count(*) FILTER (WHERE state = 'scheduled') \
             FROM deliveries_with_scheduled{}",
            w.sql
        );
        let durations_sql = format!(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms), \
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) \
             FROM delivery_attempts a \
             WHERE a.delivery_id IN (SELECT id FROM deliveries{})",
            w.sql
        );
        let client = self.pool().get().await?;
        let (counts, durations) = tokio::try_join!(
            client.query_one(&counts_sql, &w.params),
            client.query_one(&durations_sql, &w.params),
        )?;
        let succeeded = count(counts.try_get(1)?);
        let failed = count(counts.try_get(2)?);
        let finished = succeeded + failed;
        #[allow(clippy::cast_precision_loss)]
        let success_rate = if finished == 0 {
            0.0
        } else {
            succeeded as f64 / finished as f64
        };
        Ok(WebhookSummaryView {
            fired: count(counts.try_get(0)?),
            succeeded,
            failed,
            pending: count(counts.try_get(3)?),
            cancelled: count(counts.try_get(4)?),
            scheduled: count(counts.try_get(5)?),
            success_rate,
            p50_attempt_ms: millis(durations.try_get(0)?),
            p95_attempt_ms: millis(durations.try_get(1)?),
        })
    }

    /// The deliveries of `webhook_id` fired in `[from, to)`, counted per
    /// bucket of `bucket` (whole seconds, aligned to the epoch) by their
    /// state now, with the attempts of those deliveries per bucket of their
    /// start time; oldest first, only buckets in which something happened.
    pub async fn webhook_timeline(
        &self,
        webhook_id: Uuid,
        from: SystemTime,
        to: SystemTime,
        bucket: Duration,
    ) -> Result<Vec<TimelineBucket>, StoreError> {
        #[allow(clippy::cast_precision_loss)]
        let width = bucket.as_secs().max(1) as f64;
        let counts_sql = "SELECT (floor(extract(epoch FROM fired_at)::float8 / $4) * $4)::bigint AS b, \
                 count(*), \
                 count(*) FILTER (WHERE state = 'succeeded'), \
                 count(*) FILTER (WHERE state = 'failed'), \
                 count(*) FILTER (WHERE state = 'pending'), \
                 count(*) FILTER (WHERE state = 'cancelled'), \
                 count(*) FILTER (WHERE state = 'scheduled') \
             FROM deliveries_with_scheduled \
             WHERE webhook_id = $1 AND fired_at >= $2 AND fired_at < $3 \
             GROUP BY b";
        let attempts_sql = "SELECT (floor(extract(epoch FROM a.started_at)::float8 / $4) * $4)::bigint AS b, \
                 count(*), \
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms), \
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) \
             FROM delivery_attempts a \
             WHERE a.delivery_id IN (SELECT id FROM deliveries \
                 WHERE webhook_id = $1 AND fired_at >= $2 AND fired_at < $3) \
             GROUP BY b";
        let params: [&(dyn ToSql + Sync); 4] = [&webhook_id, &from, &to, &width];
        let client = self.pool().get().await?;
        let (counts, attempts) = tokio::try_join!(
            client.query(counts_sql, &params),
            client.query(attempts_sql, &params),
        )?;
        let mut buckets = std::collections::BTreeMap::<i64, TimelineBucket>::new();
        for row in &counts {
            let start: i64 = row.try_get(0)?;
            let b = buckets.entry(start).or_default();
            b.fired = count(row.try_get(1)?);
            b.succeeded = count(row.try_get(2)?);
            b.failed = count(row.try_get(3)?);
            b.pending = count(row.try_get(4)?);
            b.cancelled = count(row.try_get(5)?);
            b.scheduled = count(row.try_get(6)?);
        }
        for row in &attempts {
            let start: i64 = row.try_get(0)?;
            let b = buckets.entry(start).or_default();
            b.attempts = count(row.try_get(1)?);
            b.p50_attempt_ms = millis(row.try_get(2)?);
            b.p95_attempt_ms = millis(row.try_get(3)?);
        }
        Ok(buckets
            .into_iter()
            .map(|(start, mut b)| {
                b.start_unix_s = start;
                b
            })
            .collect())
    }

    /// The deliveries that re-send `id`, oldest first, at most
    /// [`MAX_RESENT_AS`].
    pub async fn resent_as(&self, id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id FROM deliveries_with_scheduled WHERE resent_from = $1 \
                 ORDER BY fired_at, id LIMIT $2",
                &[&id, &MAX_RESENT_AS],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// The failed deliveries of `webhook_id` fired in `[from, to)`, with
    /// `with_cancelled` the cancelled ones too, newest first, at most
    /// `limit` (without attempt history).
    pub async fn failed_deliveries(
        &self,
        webhook_id: Uuid,
        from: SystemTime,
        to: SystemTime,
        limit: u32,
        with_cancelled: bool,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let client = self.pool().get().await?;
        let limit = i64::from(limit);
        let states: &[&str] = if with_cancelled {
            &["failed", "cancelled"]
        } else {
            &["failed"]
        };
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                     WHERE webhook_id = $1 AND state = ANY($5) \
                       AND fired_at >= $2 AND fired_at < $3 \
                     ORDER BY fired_at DESC, id DESC LIMIT $4"
                ),
                &[&webhook_id, &from, &to, &limit, &states],
            )
            .await?;
        rows.iter()
            .map(|row| delivery_from_row(row, Vec::new()))
            .collect()
    }

    /// The deliveries recorded for `request_id`, if it was used before.
    pub async fn recorded_resend(
        &self,
        request_id: &str,
    ) -> Result<Option<(String, Vec<Uuid>)>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT kind, delivery_ids FROM delivery_resends WHERE request_id = $1",
                &[&request_id],
            )
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Runs `send` (which publishes the deliveries `ids`) at most once per
    /// `request_id`, and records the request.
    ///
    /// The request row is inserted first, in a transaction that stays open
    /// while `send` runs: a concurrent call with the same id waits on that
    /// row and then answers what the first one recorded (or, if the first
    /// one failed and rolled back, sends itself). If `send` fails, nothing is
    /// recorded. Only if the commit itself fails after `send` succeeded may a
    /// retry send the deliveries a second time.
    pub async fn record_resend<F, Fut, E>(
        &self,
        request_id: &str,
        kind: ResendKind,
        ids: &[Uuid],
        send: F,
    ) -> Result<ResendRecord, ResendError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut client = self.pool().get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let ids_vec = ids.to_vec();
        let inserted = tx
            .execute(
                "INSERT INTO delivery_resends (request_id, kind, delivery_ids) \
                 VALUES ($1, $2, $3) ON CONFLICT (request_id) DO NOTHING",
                &[&request_id, &kind.as_str(), &ids_vec],
            )
            .await
            .map_err(StoreError::from)?;
        if inserted == 0 {
            let row = tx
                .query_one(
                    "SELECT kind, delivery_ids FROM delivery_resends WHERE request_id = $1",
                    &[&request_id],
                )
                .await
                .map_err(StoreError::from)?;
            return Ok(ResendRecord::Recorded {
                kind: row.try_get(0).map_err(StoreError::from)?,
                delivery_ids: row.try_get(1).map_err(StoreError::from)?,
            });
        }
        match send().await {
            Ok(()) => {
                tx.commit().await.map_err(StoreError::from)?;
                Ok(ResendRecord::Sent(ids_vec))
            }
            Err(e) => {
                // Dropping the transaction would roll back too; doing it
                // explicitly releases the row for a waiting duplicate now.
                let _ = tx.rollback().await;
                Err(ResendError::Send(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let cursor = Cursor {
            fired_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            id: Uuid::now_v7(),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text), Ok(cursor));
        assert!(Cursor::decode("").is_err());
        assert!(Cursor::decode("not a cursor").is_err());
        assert!(Cursor::decode(&text[..text.len() - 2]).is_err());
    }

    #[test]
    fn filters_become_a_where_clause() {
        let filter = DeliveryFilter {
            tenant: Some("shop".into()),
            state: Some(DeliveryState::Failed),
            to: Some(UNIX_EPOCH),
            ..DeliveryFilter::default()
        };
        let values = FilterValues::of(&filter);
        let mut w = Where::new();
        push_filter(&mut w, &filter, &values);
        assert_eq!(w.sql, " WHERE tenant = $1 AND state = $2 AND fired_at < $3");
        assert_eq!(w.params.len(), 3);
    }
}
