//! Each webhook's failure streak and circuit breaker (`webhook_health`),
//! shared by every sender.
//!
//! The rules (what opens, reopens and closes a breaker) are herald-core's
//! `HealthRecord::after`; this module reads the row under a lock, applies
//! them with this database's clock and writes the result back, so two
//! senders recording at once never lose each other's failure. A row is
//! written only for a failed attempt or the first success after failures:
//! a healthy webhook costs nothing here.

use std::time::{Duration, SystemTime};

use herald_core::breaker::{BreakerPolicy, BreakerState, Health, HealthRecord, Transition};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{Pool, StoreError};

/// A webhook whose health a sender must know: failing, or its breaker not
/// closed. Times are left as durations from the database's clock now, so
/// that the senders' clocks never matter.
#[derive(Debug, Clone, PartialEq)]
pub struct Troubled {
    pub webhook_id: Uuid,
    pub state: BreakerState,
    /// Until the cool-down ends (open), or the probe's lease ends (half
    /// open); zero when it has ended.
    pub wait: Duration,
}

/// What recording an attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub record: HealthRecord,
    /// What changed, in order (usually nothing, at most a few).
    pub transitions: Vec<Transition>,
    /// Until the cool-down ends, when the breaker is open now.
    pub open_for: Option<Duration>,
    /// How long every attempt has failed, by the database's clock; `None`
    /// when the last one succeeded.
    pub failing_for: Option<Duration>,
}

/// Reads and writes `webhook_health`.
#[derive(Clone, Debug)]
pub struct HealthStore {
    pool: Pool,
}

const COLUMNS: &str = "consecutive_failures, failing_since, breaker, opened_at, open_until, \
     cooldown_ms";

fn record_from_row(row: &Row) -> Result<HealthRecord, StoreError> {
    let state: &str = row.try_get("breaker")?;
    let consecutive: i32 = row.try_get("consecutive_failures")?;
    let cooldown: Option<i64> = row.try_get("cooldown_ms")?;
    Ok(HealthRecord {
        consecutive_failures: u32::try_from(consecutive).unwrap_or(0),
        failing_since: row.try_get("failing_since")?,
        state: BreakerState::parse(state).unwrap_or_default(),
        opened_at: row.try_get("opened_at")?,
        open_until: row.try_get("open_until")?,
        cooldown: cooldown.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    })
}

impl HealthStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Records attempts of `webhook_id`, in the order they ended: what each
    /// answer says, and whether it was the half-open breaker's probe. A
    /// sender records the answers that ended while its previous record of
    /// the webhook was being written in one go (one transaction), so that a
    /// failure storm costs one row lock at a time per sender, not one per
    /// attempt.
    pub async fn record(
        &self,
        webhook_id: Uuid,
        answers: &[(Health, bool)],
        policy: BreakerPolicy,
    ) -> Result<Recorded, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO webhook_health (webhook_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&webhook_id],
        )
        .await?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT {COLUMNS}, clock_timestamp() AS now FROM webhook_health \
                     WHERE webhook_id = $1 FOR UPDATE"
                ),
                &[&webhook_id],
            )
            .await?;
        let now: SystemTime = row.try_get("now")?;
        let before = record_from_row(&row)?;
        let mut after = before;
        let mut transitions = Vec::new();
        for &(health, probe) in answers {
            let (next, transition) = after.after(health, probe, policy, now);
            after = next;
            transitions.extend(transition);
        }
        if after != before || !transitions.is_empty() {
            let cooldown = after
                .cooldown
                .map(|c| i64::try_from(c.as_millis()).unwrap_or(i64::MAX));
            tx.execute(
                "UPDATE webhook_health SET consecutive_failures = $2, failing_since = $3, \
                     breaker = $4, opened_at = $5, open_until = $6, cooldown_ms = $7, \
                     probe_until = NULL, updated_at = $8 \
                 WHERE webhook_id = $1",
                &[
                    &webhook_id,
                    &i32::try_from(after.consecutive_failures).unwrap_or(i32::MAX),
                    &after.failing_since,
                    &after.state.as_str(),
                    &after.opened_at,
                    &after.open_until,
                    &cooldown,
                    &now,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        let open_for = (after.state == BreakerState::Open)
            .then(|| after.open_until.and_then(|u| u.duration_since(now).ok()))
            .flatten();
        let failing_for = after
            .failing_since
            .map(|since| now.duration_since(since).unwrap_or_default());
        Ok(Recorded {
            record: after,
            transitions,
            open_for,
            failing_for,
        })
    }

    /// Takes the probe of `webhook_id`'s breaker if its cool-down is over and
    /// no other probe is out: true = this caller makes the one attempt. The
    /// probe's lease ends after `lease`, when another may go.
    pub async fn take_probe(&self, webhook_id: Uuid, lease: Duration) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let taken = client
            .execute(
                "UPDATE webhook_health SET breaker = 'half_open', \
                     probe_until = clock_timestamp() + $2::bigint * interval '1 millisecond', \
                     updated_at = clock_timestamp() \
                 WHERE webhook_id = $1 \
                   AND ((breaker = 'open' AND open_until <= clock_timestamp()) \
                     OR (breaker = 'half_open' AND coalesce(probe_until, '-infinity') <= clock_timestamp()))",
                &[&webhook_id, &lease_ms],
            )
            .await?;
        Ok(taken == 1)
    }

    /// Every webhook that is failing or whose breaker is not closed.
    pub async fn troubled(&self) -> Result<Vec<Troubled>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT webhook_id, breaker, \
                     greatest(0, extract(epoch FROM coalesce( \
                         CASE breaker WHEN 'open' THEN open_until ELSE probe_until END, \
                         clock_timestamp()) - clock_timestamp()) * 1000)::bigint AS wait_ms \
                 FROM webhook_health \
                 WHERE breaker <> 'closed' OR failing_since IS NOT NULL",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let state: &str = row.try_get("breaker")?;
                let wait_ms: i64 = row.try_get("wait_ms")?;
                Ok(Troubled {
                    webhook_id: row.try_get("webhook_id")?,
                    state: BreakerState::parse(state).unwrap_or_default(),
                    wait: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
                })
            })
            .collect()
    }

    /// The health of `webhook_id`, as the API shows it; a webhook that never
    /// failed has the default record.
    pub async fn get(&self, webhook_id: Uuid) -> Result<HealthRecord, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM webhook_health WHERE webhook_id = $1"),
                &[&webhook_id],
            )
            .await?;
        row.as_ref()
            .map_or(Ok(HealthRecord::default()), record_from_row)
    }

    /// Disables `webhook_id` because of `reason` (Herald's own decision,
    /// recorded with the time), unless it is disabled already. True = this
    /// call disabled it. The configuration's trigger tells every service.
    pub async fn disable_webhook(
        &self,
        webhook_id: Uuid,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE webhooks SET enabled = false, disabled_reason = $2, disabled_at = now(), \
                     updated_at = now() \
                 WHERE id = $1 AND enabled",
                &[&webhook_id, &reason],
            )
            .await?;
        Ok(changed == 1)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::test_support::TestDb;

    #[tokio::test]
    async fn senders_share_one_breaker() {
        let db = TestDb::migrated().await;
        let id = db.webhook_row().await;
        let health = HealthStore::new(db.pool());
        let policy = BreakerPolicy {
            failures: NonZeroU32::new(3).unwrap(),
            cooldown: Duration::from_millis(300),
            max_cooldown: Duration::from_secs(10),
        };
        assert!(health.troubled().await.unwrap().is_empty());
        // Three failures recorded at once by three "senders" open it once.
        let down = [(Health::Down, false)];
        let (a, b, c) = tokio::join!(
            health.record(id, &down, policy),
            health.record(id, &down, policy),
            health.record(id, &down, policy),
        );
        let transitions: Vec<_> = [a, b, c]
            .into_iter()
            .flat_map(|r| r.unwrap().transitions)
            .collect();
        assert_eq!(transitions, vec![Transition::Opened]);
        let troubled = health.troubled().await.unwrap();
        assert_eq!(troubled.len(), 1);
        assert_eq!(troubled[0].state, BreakerState::Open);
        assert!(troubled[0].wait <= Duration::from_millis(300));
        assert!(
            !health.take_probe(id, Duration::from_secs(5)).await.unwrap(),
            "no probe during the cool-down"
        );

        tokio::time::sleep(Duration::from_millis(350)).await;
        let (x, y) = tokio::join!(
            health.take_probe(id, Duration::from_secs(5)),
            health.take_probe(id, Duration::from_secs(5)),
        );
        assert!(x.unwrap() ^ y.unwrap(), "exactly one probe");
        let reopened = health
            .record(id, &[(Health::Down, true), (Health::Down, false)], policy)
            .await
            .unwrap();
        assert_eq!(
            reopened.transitions,
            vec![Transition::Reopened],
            "a batch: the probe's failure reopens it, the next one changes nothing"
        );
        assert_eq!(reopened.record.cooldown, Some(Duration::from_millis(600)));
        assert!(reopened.open_for.unwrap() <= Duration::from_millis(600));

        let shown = health.get(id).await.unwrap();
        assert_eq!(shown.state, BreakerState::Open);
        assert!(shown.failing_since.is_some() && shown.opened_at.is_some());

        let recovered = health
            .record(id, &[(Health::Up, true)], policy)
            .await
            .unwrap();
        assert_eq!(recovered.transitions, vec![Transition::Recovered]);
        assert!(health.troubled().await.unwrap().is_empty());
        assert_eq!(health.get(id).await.unwrap(), HealthRecord::default());
    }
}
