//! What ordered delivery keeps in Postgres: the keys a final failure
//! stopped (`ordering_stops`), and a delivery's progress for the sender
//! that takes over a partition after a crash.
//!
//! The order itself lives in RabbitMQ (one partition queue per key, one
//! consumer at a time); Postgres is read only for ordered webhooks, and for
//! a stop only for those whose key stops on failure, so unordered
//! deliveries never pay a round trip here.

use std::time::SystemTime;

use herald_core::DeliveryState;
use uuid::Uuid;

use crate::store::{DELIVERY_COLUMNS, delivery_from_row};
use crate::{DeliveryView, Pool, StoreError};

/// Where a delivery stands, as its last committed record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryProgress {
    pub state: DeliveryState,
    /// Attempts recorded so far.
    pub attempts: u32,
    pub next_attempt_at: Option<SystemTime>,
}

/// `ordering_stops` and the reads ordered delivery needs.
#[derive(Clone, Debug)]
pub struct OrderingStore {
    pool: Pool,
}

impl OrderingStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The delivery whose final failure stopped this key, if it is stopped.
    pub async fn stopped_by(
        &self,
        webhook_id: Uuid,
        key: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT delivery_id FROM ordering_stops \
                 WHERE webhook_id = $1 AND ordering_key = $2",
                &[&webhook_id, &key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Stops the key after `delivery_id` failed for good. A key stopped
    /// already keeps its first stop (the delivery an operator must look at).
    pub async fn stop(
        &self,
        webhook_id: Uuid,
        key: &str,
        delivery_id: Uuid,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO ordering_stops (webhook_id, ordering_key, delivery_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (webhook_id, ordering_key) DO NOTHING",
                &[&webhook_id, &key, &delivery_id],
            )
            .await?;
        Ok(())
    }

    /// Resumes a stopped key; returns the delivery that had stopped it, or
    /// `None` when the key was not stopped.
    pub async fn resume(&self, webhook_id: Uuid, key: &str) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "DELETE FROM ordering_stops WHERE webhook_id = $1 AND ordering_key = $2 \
                 RETURNING delivery_id",
                &[&webhook_id, &key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The webhook's stopped keys, oldest stop first, at most `limit`.
    pub async fn stops(
        &self,
        webhook_id: Uuid,
        limit: i64,
    ) -> Result<Vec<(String, Uuid, SystemTime)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT ordering_key, delivery_id, stopped_at FROM ordering_stops \
                 WHERE webhook_id = $1 ORDER BY stopped_at, ordering_key LIMIT $2",
                &[&webhook_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The deliveries a stop held back: the key's deliveries after
    /// `failed` (by id, i.e. Fire order) that were cancelled because the key
    /// was stopped, in Fire order, at most `limit`.
    pub async fn held_after(
        &self,
        webhook_id: Uuid,
        key: &str,
        failed: Uuid,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries \
             WHERE webhook_id = $1 AND ordering_key = $2 AND id > $3 \
               AND state = 'cancelled' AND last_error LIKE $4 \
             ORDER BY id LIMIT $5"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &webhook_id,
                    &key,
                    &failed,
                    &format!("{HELD_PREFIX}%"),
                    &limit,
                ],
            )
            .await?;
        rows.iter()
            .map(|row| delivery_from_row(row, Vec::new()))
            .collect()
    }

    /// The delivery's last committed record, or `None` before its first.
    pub async fn progress(&self, id: Uuid) -> Result<Option<DeliveryProgress>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT state, attempts, next_attempt_at FROM deliveries WHERE id = $1",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: &str = row.get(0);
        let state = DeliveryState::parse(state).ok_or_else(|| StoreError::Corrupt {
            what: "delivery",
            id,
            detail: format!("unknown state {state:?}"),
        })?;
        let attempts: i32 = row.get(1);
        Ok(Some(DeliveryProgress {
            state,
            attempts: u32::try_from(attempts).unwrap_or(0),
            next_attempt_at: row.get(2),
        }))
    }
}

/// How the `last_error` of a delivery held back by a stopped key begins;
/// [`OrderingStore::held_after`] finds them by it.
pub const HELD_PREFIX: &str = "held: ordering key stopped";

/// The `last_error` of a delivery held back because `failed` stopped its key.
pub fn held_reason(failed: Uuid) -> String {
    format!(
        "{HELD_PREFIX} after delivery {failed} failed for good; nothing was sent. \
         Resume the key (herald webhooks resume-key) to go on, with --resend to send this one again in order"
    )
}
