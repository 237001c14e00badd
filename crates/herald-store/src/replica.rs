//! What a read replica (a streaming standby of the primary) says about
//! itself: how far its replay is behind.
//!
//! The delivery-log reads themselves are the ordinary [`Store`] methods run
//! on a `Store` whose pool points at the replica; which store a read goes to
//! is the service's decision, not this crate's. This module only reads
//! Postgres' recovery functions and must never write.

use std::time::Duration;

use crate::{Store, StoreError};

/// How far the server's replay is behind its primary.
///
/// 0 when the server is not a standby (the reads are then as fresh as that
/// server), and when it has replayed everything it received: on an idle
/// primary `now() - pg_last_xact_replay_timestamp()` grows without any lag,
/// so it only counts while received WAL waits for replay. While WAL waits,
/// it is the age of the last replayed commit, which overstates the lag by
/// the primary's idle time before that commit: an upper bound.
const LAG_SQL: &str = "SELECT CASE \
         WHEN NOT pg_is_in_recovery() THEN 0 \
         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
         ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) \
     END::float8";

impl Store {
    /// The replay lag of this store's server (see [`LAG_SQL`]); zero for a
    /// server that is not a standby.
    pub async fn replica_lag(&self) -> Result<Duration, StoreError> {
        let client = self.pool().get().await?;
        let seconds: f64 = client.query_one(LAG_SQL, &[]).await?.try_get(0)?;
        Ok(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::TestDb;

    #[tokio::test]
    async fn a_primary_has_no_lag() {
        let db = TestDb::create().await;
        let store = crate::Store::new(crate::pool(db.url(), 1).unwrap());
        assert_eq!(
            store.replica_lag().await.unwrap(),
            std::time::Duration::ZERO
        );
    }
}
