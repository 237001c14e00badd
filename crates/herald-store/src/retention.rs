//! Retention: removes old deliveries with their attempts, and clears old
//! payloads earlier than that, in small batches. It also removes Fire
//! idempotency keys whose window has ended, whatever the delivery policy.
//!
//! Every batch is one short statement (its own transaction) that touches at
//! most `batch` deliveries, so no lock is held for long and the sender's
//! attempt writes interleave with a run that removes millions of rows. Runs
//! are serialised across processes by a Postgres advisory lock: when several
//! senders start a run at once, one works and the others skip it.
//!
//! Batched deletes were chosen over time partitions; docs/operations.md,
//! "Retention", has the measurement and the reasons.

use std::time::{Duration, SystemTime};

use deadpool_postgres::{Object, Pool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::StoreError;

/// Key of the session-level advisory lock held during a run ("herald-r").
const RETENTION_LOCK_KEY: i64 = 0x6865_7261_6c64_2d72;

/// Upper bound for one batch statement. A batch normally takes milliseconds;
/// this only keeps a vanished connection from stalling the task forever.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Deletes one batch of deliveries older than the cutoff ($1) with their
/// attempts. Final deliveries go; a scheduled or pending one only when
/// nothing has been due for it since before the cutoff either (an abandoned
/// delivery).
const DELETE_DELIVERIES: &str = "\
WITH gone AS (
    DELETE FROM deliveries WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM deliveries
        WHERE fired_at < $1
          AND (state NOT IN ('scheduled', 'pending')
               OR coalesce(next_attempt_at, last_attempt_at, fired_at) < $1)
        LIMIT $2))
    RETURNING id
), attempts AS (
    DELETE FROM delivery_attempts a USING gone WHERE a.delivery_id = gone.id
    RETURNING 1
), never_attempted AS (
    -- Scheduled deliveries that never got an attempt (their message was
    -- moved to the dead-letter queue) go with the rest of their age.
    DELETE FROM scheduled_deliveries WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM scheduled_deliveries WHERE fired_at < $1 LIMIT $2))
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM never_attempted),
    (SELECT count(*) FROM attempts)";

/// Deletes one batch of attempts older than the cutoff whose delivery is
/// still kept (or was never written): attempts of long-pending deliveries.
const DELETE_ATTEMPTS: &str = "\
WITH gone AS (
    DELETE FROM delivery_attempts WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM delivery_attempts WHERE started_at < $1 LIMIT $2))
    RETURNING 1
)
SELECT count(*) FROM gone";

/// Clears the payload of one batch of deliveries fired before the payload
/// cutoff ($1), oldest first, starting at $3 (the newest fired_at of the
/// previous batch): keyset pagination, so that a batch never walks again
/// over the rows earlier batches cleared. Across runs, the partial index
/// `deliveries_payload_fired_idx` skips the rows cleared long ago.
const CLEAR_PAYLOADS: &str = "\
WITH cleared AS (
    UPDATE deliveries SET payload = NULL WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM deliveries
        WHERE fired_at < $1 AND fired_at >= $3 AND payload IS NOT NULL
        ORDER BY fired_at
        LIMIT $2))
    RETURNING fired_at
)
SELECT count(*), max(fired_at) FROM cleared";

/// Deletes one batch of idempotency keys whose window has ended. Each row
/// carries its own end (`expires_at`, set by the ingest that wrote it), so the
/// sender needs no knowledge of ingest's window.
const DELETE_EXPIRED_KEYS: &str = "\
WITH gone AS (
    DELETE FROM fire_idempotency WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM fire_idempotency WHERE expires_at < now() LIMIT $1))
    RETURNING 1
)
SELECT count(*) FROM gone";

/// What to keep. A zero `keep` keeps deliveries forever; a zero
/// `keep_payload` keeps payloads as long as their deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Deliveries fired longer ago than this are removed with their attempts
    /// (attempts started longer ago than this, too).
    pub keep: Duration,
    /// Payloads of deliveries fired longer ago than this are set to NULL; the
    /// rows stay until `keep`. Should not be longer than `keep`.
    pub keep_payload: Duration,
    /// Most rows one statement touches.
    pub batch: usize,
}

impl RetentionPolicy {
    /// Days of metadata and of payloads (0 = forever), 5,000 rows a batch.
    pub fn days(keep: u32, keep_payload: u32) -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        Self {
            keep: DAY * keep,
            keep_payload: DAY * keep_payload,
            batch: 5_000,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deliveries_deleted: u64,
    pub attempts_deleted: u64,
    pub payloads_cleared: u64,
    /// Fire idempotency keys whose window had ended.
    pub idempotency_keys_deleted: u64,
    /// Batch statements executed.
    pub batches: u64,
    /// Another process held the retention lock, so this run did nothing.
    pub skipped: bool,
}

/// One complete run: deletes and clears batch by batch until a batch finds
/// less than a full batch of rows.
pub async fn run_once(
    pool: &Pool,
    policy: &RetentionPolicy,
) -> Result<RetentionReport, StoreError> {
    run_until(pool, policy, &CancellationToken::new()).await
}

/// Like [`run_once`], but stops between two batches once `stop` is cancelled.
pub async fn run_until(
    pool: &Pool,
    policy: &RetentionPolicy,
    stop: &CancellationToken,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    let client = pool.get().await?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK_KEY])
        .await?
        .get(0);
    if !locked {
        report.skipped = true;
        return Ok(report);
    }
    let result = run_locked(&client, policy, stop, &mut report).await;
    // The lock belongs to this pooled session: it must not go back to the
    // pool still holding it. If the unlock cannot be confirmed, the session
    // is closed instead, which releases the lock as well.
    let unlocked = match result {
        Ok(()) => client
            .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK_KEY])
            .await
            .is_ok(),
        Err(_) => false,
    };
    if !unlocked {
        drop(Object::take(client));
    }
    result.map(|()| report)
}

async fn run_locked(
    client: &Object,
    policy: &RetentionPolicy,
    stop: &CancellationToken,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let batch = policy.batch.max(1);
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let now = SystemTime::now();
    let cutoff = |keep: Duration| (!keep.is_zero()).then(|| now - keep);

    // Expired idempotency keys first: few rows, and a run stopped by a
    // shutdown during a long delivery backlog has still done them.
    let statement = client.prepare_cached(DELETE_EXPIRED_KEYS).await?;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let row = with_timeout(client.query_one(&statement, &[&limit])).await?;
        let keys = count(row.get(0));
        report.idempotency_keys_deleted += keys;
        report.batches += 1;
        if keys < batch as u64 {
            break;
        }
    }

    if let Some(cutoff) = cutoff(policy.keep) {
        let statement = client.prepare_cached(DELETE_DELIVERIES).await?;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let row = with_timeout(client.query_one(&statement, &[&cutoff, &limit])).await?;
            let (deliveries, attempts) = (count(row.get(0)), count(row.get(1)));
            report.deliveries_deleted += deliveries;
            report.attempts_deleted += attempts;
            report.batches += 1;
            if deliveries < batch as u64 {
                break;
            }
        }
        let statement = client.prepare_cached(DELETE_ATTEMPTS).await?;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let row = with_timeout(client.query_one(&statement, &[&cutoff, &limit])).await?;
            let attempts = count(row.get(0));
            report.attempts_deleted += attempts;
            report.batches += 1;
            if attempts < batch as u64 {
                break;
            }
        }
    }

    if let Some(cutoff) = cutoff(policy.keep_payload) {
        let statement = client.prepare_cached(CLEAR_PAYLOADS).await?;
        let mut after = SystemTime::UNIX_EPOCH;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let row =
                with_timeout(client.query_one(&statement, &[&cutoff, &limit, &after])).await?;
            let cleared = count(row.get(0));
            report.payloads_cleared += cleared;
            report.batches += 1;
            if cleared < batch as u64 {
                break;
            }
            after = row.get::<_, Option<SystemTime>>(1).unwrap_or(after);
        }
    }
    Ok(())
}

async fn with_timeout<T>(
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(BATCH_TIMEOUT, query).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout {
            what: "a retention batch",
            after: BATCH_TIMEOUT,
        }),
    }
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Runs [`run_until`] every `interval` (the first run one minute after the
/// start, or after `interval` if that is shorter) until `shutdown` is
/// cancelled. A run in progress stops after its current batch.
pub fn start(
    pool: Pool,
    policy: RetentionPolicy,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // No early return for a policy that keeps deliveries forever: the
        // run still removes expired idempotency keys.
        let mut wait = interval.min(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = interval;
            let started = std::time::Instant::now();
            match run_until(&pool, &policy, &shutdown).await {
                Ok(report) if report.skipped => {
                    info!("retention skipped: another process is running it");
                }
                Ok(report) => {
                    metrics::counter!("herald_retention_rows_total", "kind" => "deliveries_deleted")
                        .increment(report.deliveries_deleted);
                    metrics::counter!("herald_retention_rows_total", "kind" => "attempts_deleted")
                        .increment(report.attempts_deleted);
                    metrics::counter!("herald_retention_rows_total", "kind" => "payloads_cleared")
                        .increment(report.payloads_cleared);
                    metrics::counter!("herald_retention_rows_total", "kind" => "idempotency_keys_deleted")
                        .increment(report.idempotency_keys_deleted);
                    info!(
                        deliveries_deleted = report.deliveries_deleted,
                        attempts_deleted = report.attempts_deleted,
                        payloads_cleared = report.payloads_cleared,
                        idempotency_keys_deleted = report.idempotency_keys_deleted,
                        batches = report.batches,
                        elapsed_ms =
                            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "retention run finished"
                    );
                }
                Err(err) => warn!(
                    error = &err as &dyn std::error::Error,
                    "retention run failed; retrying at the next interval"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;
    use uuid::Uuid;

    const DAY: Duration = Duration::from_secs(86_400);

    /// Inserts a delivery fired `age` ago in `state` with `attempts` attempt
    /// rows (started at fire time plus n seconds).
    async fn insert(
        client: &tokio_postgres::Client,
        age: Duration,
        state: &str,
        attempts: i32,
    ) -> Uuid {
        let id = Uuid::now_v7();
        let fired = SystemTime::now() - age;
        client
            .execute(
                "INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, \
                     payload, payload_kind, fired_at, state, attempts, last_attempt_at, \
                     next_attempt_at) \
                 VALUES ($1, '', 'order.created', $2, 'https://t.example/h', 'POST', \
                     '{\"order\":1}', 'json', $3::timestamptz, $4, $5, $3::timestamptz, \
                     CASE WHEN $4 = 'pending' THEN $3::timestamptz + interval '5 minutes' END)",
                &[&id, &Uuid::nil(), &fired, &state, &attempts],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url) \
                 SELECT $1, n, $2::timestamptz + n * interval '1 second', 10, 'https://t.example/h' \
                 FROM generate_series(1, $3) n",
                &[&id, &fired, &attempts],
            )
            .await
            .unwrap();
        id
    }

    async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    #[tokio::test]
    async fn removes_only_old_rows_and_clears_only_old_payloads() {
        let db = TestDb::migrated().await;
        let client = db.connect().await;
        let old_done = insert(&client, DAY * 40, "succeeded", 2).await;
        let old_failed = insert(&client, DAY * 31, "failed", 3).await;
        let old_abandoned = insert(&client, DAY * 35, "pending", 1).await;
        let week_old = insert(&client, DAY * 10, "failed", 3).await;
        let recent = insert(&client, DAY * 2, "succeeded", 1).await;
        let now = insert(&client, Duration::from_secs(60), "pending", 1).await;
        // An attempt older than the cutoff of a delivery that is kept (a
        // delivery row written later than its attempt, say).
        client
            .execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url) \
                 VALUES ($1, 9, now() - interval '50 days', 1, 'u')",
                &[&recent],
            )
            .await
            .unwrap();

        let pool = db.pool();
        let report = run_once(&pool, &RetentionPolicy::days(30, 7))
            .await
            .unwrap();
        assert_eq!(report.deliveries_deleted, 3, "{report:?}");
        assert_eq!(report.attempts_deleted, 2 + 3 + 1 + 1, "{report:?}");
        assert_eq!(report.payloads_cleared, 1, "{report:?}");
        assert!(!report.skipped);

        for gone in [old_done, old_failed, old_abandoned] {
            let n = client
                .query_one(
                    "SELECT (SELECT count(*) FROM deliveries WHERE id = $1) \
                          + (SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1)",
                    &[&gone],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
            assert_eq!(n, 0, "{gone} must be gone with its attempts");
        }
        let rows = client
            .query(
                "SELECT id, payload IS NULL FROM deliveries ORDER BY fired_at",
                &[],
            )
            .await
            .unwrap();
        let kept: Vec<(Uuid, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            kept,
            vec![(week_old, true), (recent, false), (now, false)],
            "rows stay; only the payload older than 7 days is cleared"
        );
        assert_eq!(
            count(&client, "SELECT count(*) FROM delivery_attempts").await,
            3 + 1 + 1
        );

        let again = run_once(&pool, &RetentionPolicy::days(30, 7))
            .await
            .unwrap();
        assert_eq!(
            (
                again.deliveries_deleted,
                again.attempts_deleted,
                again.payloads_cleared
            ),
            (0, 0, 0),
            "a second run finds nothing"
        );
    }

    #[tokio::test]
    async fn zero_keeps_forever() {
        let db = TestDb::migrated().await;
        let client = db.connect().await;
        insert(&client, DAY * 400, "succeeded", 1).await;
        let pool = db.pool();
        let report = run_once(&pool, &RetentionPolicy::days(0, 0)).await.unwrap();
        assert_eq!(
            report,
            RetentionReport {
                // The sweep of expired idempotency keys, which found none.
                batches: 1,
                ..RetentionReport::default()
            }
        );
        let report = run_once(&pool, &RetentionPolicy::days(0, 30))
            .await
            .unwrap();
        assert_eq!((report.deliveries_deleted, report.payloads_cleared), (0, 1));
        assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 1);
    }

    #[tokio::test]
    async fn works_in_many_batches() {
        let db = TestDb::migrated().await;
        let client = db.connect().await;
        // 1,050 old deliveries with 2 attempts each, 20 recent ones.
        client
            .batch_execute(
                "INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, \
                     payload, payload_kind, fired_at, state, attempts)
                 SELECT gen_random_uuid(), '', 'e', gen_random_uuid(), 'https://t', 'POST', \
                     'p', 'text', now() - interval '60 days' + n * interval '1 second', \
                     'succeeded', 2
                 FROM generate_series(1, 1050) n;
                 INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, \
                     payload, payload_kind, fired_at, state, attempts)
                 SELECT gen_random_uuid(), '', 'e', gen_random_uuid(), 'https://t', 'POST', \
                     'p', 'text', now() - interval '10 days' + n * interval '1 second', \
                     'failed', 2
                 FROM generate_series(1, 230) n;
                 INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, \
                     payload, payload_kind, fired_at, state, attempts)
                 SELECT gen_random_uuid(), '', 'e', gen_random_uuid(), 'https://t', 'POST', \
                     'p', 'text', now() - n * interval '1 second', 'succeeded', 2
                 FROM generate_series(1, 20) n;
                 INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url)
                 SELECT d.id, n, d.fired_at, 5, 'https://t'
                 FROM deliveries d, generate_series(1, 2) n;",
            )
            .await
            .unwrap();
        let pool = db.pool();
        let policy = RetentionPolicy {
            batch: 100,
            ..RetentionPolicy::days(30, 7)
        };
        let report = run_once(&pool, &policy).await.unwrap();
        assert_eq!(report.deliveries_deleted, 1050);
        assert_eq!(report.attempts_deleted, 2100);
        assert_eq!(report.payloads_cleared, 230);
        // 1 empty idempotency-key sweep, 11 delete batches (the last one
        // short), 1 empty attempt sweep, 3 payload batches (the last one
        // short).
        assert_eq!(report.batches, 1 + 11 + 1 + 3, "{report:?}");
        assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 250);
        assert_eq!(
            count(&client, "SELECT count(*) FROM delivery_attempts").await,
            500
        );
        assert_eq!(
            count(
                &client,
                "SELECT count(*) FROM deliveries WHERE payload IS NULL"
            )
            .await,
            230
        );
    }

    #[tokio::test]
    async fn removes_expired_idempotency_keys_in_batches_whatever_the_policy() {
        let db = TestDb::migrated().await;
        let client = db.connect().await;
        // 250 keys whose window ended, 30 still in their window.
        client
            .batch_execute(
                "INSERT INTO fire_idempotency (tenant, key, request_hash, webhook_ids, \
                     delivery_ids, created_at, expires_at)
                 SELECT '', 'old-' || n, '\\x00', ARRAY[gen_random_uuid()], \
                     ARRAY[gen_random_uuid()], now() - interval '2 days', \
                     now() - interval '1 day' - n * interval '1 second'
                 FROM generate_series(1, 250) n;
                 INSERT INTO fire_idempotency (tenant, key, request_hash, webhook_ids, \
                     delivery_ids, expires_at)
                 SELECT '', 'new-' || n, '\\x00', ARRAY[gen_random_uuid()], \
                     ARRAY[gen_random_uuid()], now() + interval '1 hour'
                 FROM generate_series(1, 30) n;",
            )
            .await
            .unwrap();
        let pool = db.pool();
        let policy = RetentionPolicy {
            batch: 100,
            // Deliveries kept forever: keys are removed all the same.
            ..RetentionPolicy::days(0, 0)
        };
        let report = run_once(&pool, &policy).await.unwrap();
        assert_eq!(report.idempotency_keys_deleted, 250, "{report:?}");
        assert_eq!(report.batches, 3, "two full batches and a short one");
        assert_eq!(
            count(
                &client,
                "SELECT count(*) FROM fire_idempotency WHERE key LIKE 'new-%'"
            )
            .await,
            30
        );
        assert_eq!(
            count(&client, "SELECT count(*) FROM fire_idempotency").await,
            30,
            "only keys within their window are left"
        );
    }

    #[tokio::test]
    async fn one_process_at_a_time() {
        let db = TestDb::migrated().await;
        let pool = db.pool();
        let holder = db.connect().await;
        holder
            .execute("SELECT pg_advisory_lock($1)", &[&RETENTION_LOCK_KEY])
            .await
            .unwrap();
        let report = run_once(&pool, &RetentionPolicy::days(30, 7))
            .await
            .unwrap();
        assert!(report.skipped, "the lock is held elsewhere");
        holder
            .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK_KEY])
            .await
            .unwrap();
        let report = run_once(&pool, &RetentionPolicy::days(30, 7))
            .await
            .unwrap();
        assert!(!report.skipped);
        // The pooled session gave the lock back: another session can take it.
        let taken: bool = holder
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK_KEY])
            .await
            .unwrap()
            .get(0);
        assert!(taken);
    }
}
