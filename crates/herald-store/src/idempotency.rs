//! Idempotency keys of Fire calls (`fire_idempotency`, migration V5).
//!
//! A Fire call with a key goes through [`FireKeys::fire`]:
//!
//! 1. The delivery ids the call would create are inserted under (tenant, key)
//!    in a statement of its own (autocommit), unless a row within its window
//!    exists already; an expired row is replaced. Committing the ids before
//!    anything is published is what makes a crash harmless: the retry finds
//!    them and publishes the *same* ids again, never new ones.
//! 2. A transaction locks the row (`SELECT … FOR UPDATE`), which serialises
//!    concurrent repeats of one key across every ingest replica. A row with a
//!    different request hash is a conflict; a `confirmed` row is answered as
//!    recorded; a `pending` row (this call's own, or one left by a call that
//!    crashed or failed) is published, marked `confirmed` and committed.
//! 3. If publishing fails the transaction rolls back: the row stays pending
//!    with the same ids for the client's retry.
//!
//! The worst case is therefore a delivery published more than once *with the
//! same delivery id* (a call that failed after some publishes were confirmed,
//! then retried; or a commit that failed after every publish was confirmed),
//! which receivers de-duplicate on the delivery-id header. Expired rows are
//! removed by [`retention`](crate::retention).

use std::future::Future;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Pool, Transaction};
use tracing::warn;
use uuid::Uuid;

use crate::StoreError;

/// Upper bound for one statement, including the wait for the row lock that a
/// concurrent repeat holds while it publishes (bounded by the publisher's
/// confirm timeout). It only keeps a vanished connection from hanging a Fire
/// call until the client gives up.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Records the call's deliveries unless the key is in use within its window;
/// replaces a row whose window has ended.
const UPSERT: &str = "\
INSERT INTO fire_idempotency (tenant, key, request_hash, webhook_ids, delivery_ids, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
ON CONFLICT (tenant, key) DO UPDATE SET
    request_hash = EXCLUDED.request_hash,
    webhook_ids = EXCLUDED.webhook_ids,
    delivery_ids = EXCLUDED.delivery_ids,
    state = 'pending',
    created_at = EXCLUDED.created_at,
    confirmed_at = NULL,
    expires_at = EXCLUDED.expires_at
WHERE fire_idempotency.expires_at <= now()";

const LOCK: &str = "\
SELECT request_hash, webhook_ids, delivery_ids, state, created_at, expires_at <= now()
FROM fire_idempotency WHERE tenant = $1 AND key = $2
FOR UPDATE";

const CONFIRM: &str = "\
UPDATE fire_idempotency SET state = 'confirmed', confirmed_at = now()
WHERE tenant = $1 AND key = $2";

/// One delivery of a Fire call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FireDelivery {
    pub webhook_id: Uuid,
    pub delivery_id: Uuid,
}

/// A Fire call that carries an idempotency key.
#[derive(Debug, Clone)]
pub struct KeyedFire<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    /// [`herald_core::idempotency::fire_request_hash`] of the call.
    pub request_hash: [u8; 32],
    /// The deliveries this call creates if the key is unused: one fresh id per
    /// enabled webhook. Empty when nothing is enabled; the key is then only
    /// looked up, never recorded.
    pub deliveries: Vec<FireDelivery>,
}

/// The deliveries recorded under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFire {
    /// In the order of the first call.
    pub deliveries: Vec<FireDelivery>,
    /// When the key was first used; the fired-at time of its deliveries.
    pub first_used: SystemTime,
}

impl StoredFire {
    pub fn delivery_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.deliveries.iter().map(|d| d.delivery_id)
    }
}

/// What [`FireKeys::fire`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// `publish` ran and succeeded: the key was new (or expired), or an
    /// earlier call with it had not finished publishing.
    Published(StoredFire),
    /// An earlier call with this key finished; nothing was published now.
    Recorded(StoredFire),
    /// The key is not in use and the call had no deliveries to record.
    Unused,
}

/// Why [`FireKeys::fire`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FireKeyError<E> {
    /// The key was used within its window for another event or other data.
    #[error("the idempotency key was first used for a different request")]
    Conflict { first_used: SystemTime },
    /// The row this call recorded was removed before it could be locked:
    /// retention deleted it because the window is shorter than the time
    /// between two statements. Nothing was published.
    #[error(
        "the idempotency key's record expired while the call ran; retry the call (and use a longer window)"
    )]
    Vanished,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `publish` failed; the row stays pending with the same delivery ids.
    #[error("publishing failed")]
    Publish(E),
}

/// The `fire_idempotency` table, with the window keys are remembered for.
///
/// Cheap to clone: it only holds the pool.
#[derive(Debug, Clone)]
pub struct FireKeys {
    pool: Pool,
    window: Duration,
}

impl FireKeys {
    pub fn new(pool: Pool, window: Duration) -> Self {
        Self { pool, window }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Runs a keyed Fire call (see the module documentation): `publish` gets
    /// the deliveries recorded under the key (the call's own on first use)
    /// and runs at most once, while the key's row is locked.
    pub async fn fire<F, Fut, E>(
        &self,
        request: &KeyedFire<'_>,
        publish: F,
    ) -> Result<FireOutcome, FireKeyError<E>>
    where
        F: FnOnce(StoredFire) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let hash = request.request_hash.as_slice();
        let recording = !request.deliveries.is_empty();
        if recording {
            let webhook_ids: Vec<Uuid> = request.deliveries.iter().map(|d| d.webhook_id).collect();
            let delivery_ids: Vec<Uuid> =
                request.deliveries.iter().map(|d| d.delivery_id).collect();
            let window = self.window.as_secs_f64();
            timed(client.execute(
                UPSERT,
                &[
                    &request.tenant,
                    &request.key,
                    &hash,
                    &webhook_ids,
                    &delivery_ids,
                    &window,
                ],
            ))
            .await?;
        }

        let tx = client.transaction().await.map_err(StoreError::from)?;
        let Some(row) = timed(tx.query_opt(LOCK, &[&request.tenant, &request.key])).await? else {
            // Nothing recorded: either the call had nothing to record, or
            // retention removed the row between the two statements, which
            // only happens to a row whose window ended, so the key is unused.
            return if recording {
                Err(FireKeyError::Vanished)
            } else {
                Ok(FireOutcome::Unused)
            };
        };
        let stored_hash: Vec<u8> = row.try_get(0).map_err(StoreError::from)?;
        let webhook_ids: Vec<Uuid> = row.try_get(1).map_err(StoreError::from)?;
        let delivery_ids: Vec<Uuid> = row.try_get(2).map_err(StoreError::from)?;
        let state: String = row.try_get(3).map_err(StoreError::from)?;
        let first_used: SystemTime = row.try_get(4).map_err(StoreError::from)?;
        let expired: bool = row.try_get(5).map_err(StoreError::from)?;
        // A call that recorded its deliveries has just replaced any expired
        // row, so the row it locks is current even if its (possibly very
        // short) window has ended since. A call that only looks up must not
        // answer from an expired row.
        if expired && !recording {
            return Ok(FireOutcome::Unused);
        }
        if stored_hash != hash {
            return Err(FireKeyError::Conflict { first_used });
        }
        let stored = StoredFire {
            deliveries: webhook_ids
                .into_iter()
                .zip(delivery_ids)
                .map(|(webhook_id, delivery_id)| FireDelivery {
                    webhook_id,
                    delivery_id,
                })
                .collect(),
            first_used,
        };
        if state == "confirmed" {
            return Ok(FireOutcome::Recorded(stored));
        }
        if let Err(e) = publish(stored.clone()).await {
            // Dropping the transaction would roll back too; doing it
            // explicitly hands the row to a waiting repeat at once.
            let _ = tx.rollback().await;
            return Err(FireKeyError::Publish(e));
        }
        if let Err(err) = confirm(tx, request).await {
            // Every delivery is queued, so the call succeeded; only the
            // record of that is missing. A repeat will publish the same ids
            // once more, which receivers de-duplicate.
            warn!(
                error = &err as &dyn std::error::Error,
                tenant = request.tenant,
                "deliveries of an idempotent Fire were queued, but marking its key confirmed failed; a repeat will publish them again with the same ids"
            );
        }
        Ok(FireOutcome::Published(stored))
    }
}

async fn confirm(tx: Transaction<'_>, request: &KeyedFire<'_>) -> Result<(), StoreError> {
    timed(tx.execute(CONFIRM, &[&request.tenant, &request.key])).await?;
    timed(tx.commit()).await
}

async fn timed<T>(
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, query).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout {
            what: "an idempotency-key statement",
            after: STATEMENT_TIMEOUT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::test_support::TestDb;

    fn deliveries(n: usize) -> Vec<FireDelivery> {
        (0..n)
            .map(|_| FireDelivery {
                webhook_id: Uuid::now_v7(),
                delivery_id: Uuid::now_v7(),
            })
            .collect()
    }

    fn request<'a>(key: &'a str, hash: u8, deliveries: Vec<FireDelivery>) -> KeyedFire<'a> {
        KeyedFire {
            tenant: "shop-1",
            key,
            request_hash: [hash; 32],
            deliveries,
        }
    }

    async fn ok(_: StoredFire) -> Result<(), &'static str> {
        Ok(())
    }

    #[tokio::test]
    async fn first_use_publishes_a_repeat_answers_the_record() {
        let db = TestDb::migrated().await;
        let keys = FireKeys::new(db.pool(), Duration::from_secs(3600));
        let first = deliveries(2);
        let published = keys
            .fire(&request("k", 1, first.clone()), ok)
            .await
            .unwrap();
        let FireOutcome::Published(stored) = published else {
            panic!("first use publishes: {published:?}");
        };
        assert_eq!(stored.deliveries, first);

        let again = keys
            .fire(&request("k", 1, deliveries(2)), |_| async {
                Err::<(), _>("must not publish")
            })
            .await
            .unwrap();
        assert_eq!(again, FireOutcome::Recorded(stored.clone()));

        // Without deliveries of its own (everything disabled since), the
        // repeat still gets the record.
        let lookup = keys.fire(&request("k", 1, Vec::new()), ok).await.unwrap();
        assert_eq!(lookup, FireOutcome::Recorded(stored));
        let unused = keys
            .fire(&request("other", 1, Vec::new()), ok)
            .await
            .unwrap();
        assert_eq!(unused, FireOutcome::Unused);
        let count: i64 = db
            .connect()
            .await
            .query_one("SELECT count(*) FROM fire_idempotency", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 1, "a lookup without deliveries records nothing");
    }

    #[tokio::test]
    async fn different_request_is_a_conflict() {
        let db = TestDb::migrated().await;
        let keys = FireKeys::new(db.pool(), Duration::from_secs(3600));
        keys.fire(&request("k", 1, deliveries(1)), ok)
            .await
            .unwrap();
        let err = keys
            .fire(&request("k", 2, deliveries(1)), ok)
            .await
            .unwrap_err();
        assert!(matches!(err, FireKeyError::Conflict { .. }), "{err:?}");
        let err = keys
            .fire(&request("k", 2, Vec::new()), ok)
            .await
            .unwrap_err();
        assert!(matches!(err, FireKeyError::Conflict { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn failed_publish_keeps_the_ids_for_the_retry() {
        let db = TestDb::migrated().await;
        let keys = FireKeys::new(db.pool(), Duration::from_secs(3600));
        let first = deliveries(3);
        let err = keys
            .fire(&request("k", 1, first.clone()), |_| async {
                Err::<(), _>("broker down")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, FireKeyError::Publish("broker down")));

        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let retry = keys
            .fire(&request("k", 1, deliveries(3)), |stored| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().extend(stored.deliveries);
                    Ok::<_, &str>(())
                }
            })
            .await
            .unwrap();
        assert!(matches!(retry, FireOutcome::Published(_)), "{retry:?}");
        assert_eq!(
            *seen.lock().unwrap(),
            first,
            "the retry publishes the ids of the failed call"
        );
    }

    #[tokio::test]
    async fn expired_key_is_new_again() {
        let db = TestDb::migrated().await;
        let keys = FireKeys::new(db.pool(), Duration::from_millis(200));
        keys.fire(&request("k", 1, deliveries(1)), ok)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            keys.fire(&request("k", 2, Vec::new()), ok).await.unwrap(),
            FireOutcome::Unused,
            "an expired key is not looked up"
        );
        let fresh = deliveries(1);
        // A different request may reuse the key once its window ended.
        let outcome = keys
            .fire(&request("k", 2, fresh.clone()), ok)
            .await
            .unwrap();
        let FireOutcome::Published(stored) = outcome else {
            panic!("expired key publishes anew: {outcome:?}");
        };
        assert_eq!(stored.deliveries, fresh);
    }

    #[tokio::test]
    async fn concurrent_repeats_publish_once() {
        let db = TestDb::migrated().await;
        let keys = FireKeys::new(db.pool(), Duration::from_secs(3600));
        let published = Arc::new(AtomicUsize::new(0));
        let calls = (0..16).map(|_| {
            let keys = keys.clone();
            let published = published.clone();
            tokio::spawn(async move {
                let outcome = keys
                    .fire(&request("k", 1, deliveries(2)), |_| async move {
                        published.fetch_add(1, Ordering::SeqCst);
                        // Long enough for the others to queue on the lock.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, &str>(())
                    })
                    .await
                    .unwrap();
                match outcome {
                    FireOutcome::Published(s) | FireOutcome::Recorded(s) => s,
                    FireOutcome::Unused => panic!("recorded calls are never unused"),
                }
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let first = results[0].as_ref().unwrap().clone();
        for result in results {
            assert_eq!(result.unwrap(), first, "every repeat answers the same ids");
        }
        assert_eq!(published.load(Ordering::SeqCst), 1);
    }
}
