//! The token buckets of rate-limited webhooks (`webhook_rate_buckets`),
//! shared by every sender.
//!
//! A sender takes a batch of tokens with one statement; the row lock orders
//! concurrent senders, and the refill is computed from this database's
//! clock, so the senders' clocks never matter. Only rate-limited webhooks
//! come here: a webhook without a limit costs no round trip.

use herald_core::RateLimit;
use uuid::Uuid;

use crate::{Pool, StoreError};

/// What one take gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Take {
    /// Tokens granted: as many as wanted, or as many whole tokens as the
    /// bucket held.
    pub granted: u32,
    /// Tokens left in the bucket (fractional: it refills continuously).
    pub remaining: f64,
}

/// Takes tokens from the shared buckets.
#[derive(Clone, Debug)]
pub struct RateBuckets {
    pool: Pool,
}

/// The bucket's tokens now: what was left, plus the refill since, at most a
/// burst. `$2` is the rate, `$3` the burst; `excluded.updated_at` is this
/// statement's clock reading.
const AVAILABLE: &str = "least($3::float8, b.tokens + $2::float8 * \
     greatest(0, extract(epoch FROM excluded.updated_at - b.updated_at))::float8)";

impl RateBuckets {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Takes up to `wanted` tokens from `webhook_id`'s bucket under `limit`.
    /// A bucket seen for the first time starts full (a burst).
    pub async fn take(
        &self,
        webhook_id: Uuid,
        limit: RateLimit,
        wanted: u32,
    ) -> Result<Take, StoreError> {
        let sql = format!(
            "INSERT INTO webhook_rate_buckets AS b (webhook_id, tokens, updated_at, granted) \
             VALUES ($1, $3::float8 - least($4::float8, $3::float8), clock_timestamp(), \
                     least($4::float8, $3::float8)::int) \
             ON CONFLICT (webhook_id) DO UPDATE SET \
                 tokens = {AVAILABLE} - least($4::float8, floor({AVAILABLE})), \
                 granted = least($4::float8, floor({AVAILABLE}))::int, \
                 updated_at = excluded.updated_at \
             RETURNING granted, tokens"
        );
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &sql,
                &[
                    &webhook_id,
                    &f64::from(limit.per_second()),
                    &f64::from(limit.burst()),
                    &f64::from(wanted),
                ],
            )
            .await?;
        let granted: i32 = row.try_get(0)?;
        Ok(Take {
            granted: u32::try_from(granted).unwrap_or(0),
            remaining: row.try_get(1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::test_support::TestDb;

    #[tokio::test]
    async fn one_bucket_for_every_taker() {
        let db = TestDb::migrated().await;
        let id = db.webhook_row().await;
        let buckets = RateBuckets::new(db.pool());
        let limit = RateLimit::parse(50, 10).unwrap().unwrap();

        let first = buckets.take(id, limit, 4).await.unwrap();
        assert_eq!(first.granted, 4, "a new bucket starts full");
        assert!((first.remaining - 6.0).abs() < 0.01, "{first:?}");
        let second = buckets.take(id, limit, 100).await.unwrap();
        assert_eq!(second.granted, 6, "what is left, never more than asked");
        let empty = buckets.take(id, limit, 1).await.unwrap();
        assert_eq!(empty.granted, 0, "{empty:?}");
        assert!(empty.remaining < 1.0);

        // Two takers racing for the refill of 200 ms (10 tokens) share it.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (a, b) = tokio::join!(buckets.take(id, limit, 8), buckets.take(id, limit, 8));
        let (a, b) = (a.unwrap().granted, b.unwrap().granted);
        let elapsed = started.elapsed().as_secs_f64();
        let refilled = (elapsed * 50.0).min(10.0);
        assert!(
            f64::from(a + b) <= refilled + 1.0 && a + b >= 9,
            "{a} + {b} taken after {elapsed:.3} s (refill {refilled:.1})"
        );

        // The limit changing in between applies from then on.
        let tighter = RateLimit::parse(1, 1).unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let capped = buckets.take(id, tighter, 100).await.unwrap();
        assert!(capped.granted <= 1, "{capped:?}");
    }
}
