//! The first sign of a delivery in the log, written by ingest right after the
//! broker confirmed it: a row of `scheduled_deliveries` (migration V10),
//! which the log shows with state `scheduled`, no attempt yet, and the time
//! its first attempt is due, until the sender has written the delivery.
//!
//! Fire must answer without Postgres on its path (it keeps working while
//! Postgres is down), so ingest hands these rows to a [`ScheduledLog`] and
//! answers; writer tasks insert them in the background, many per statement.
//! Writing them is best effort: rows that find the queue full or Postgres
//! unavailable are dropped and counted
//! (`herald_scheduled_rows_total{outcome="dropped"}`), and the delivery
//! appears when its first attempt is recorded, as it did before. A row
//! whose delivery the sender has written by the time its batch goes out is
//! left out (`outcome="skipped"`), and a cleanup task removes the rows
//! whose delivery the sender wrote after them.
//!
//! This module never writes `deliveries` and never waits on the caller.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::StoreError;
use crate::writer::strip_nul;

/// Inserts a batch of scheduled deliveries; a row that exists (a keyed
/// Fire published again) stays as it is. Every fire-time column of
/// `deliveries` is here too, so a scheduled delivery reads like any other.
///
/// A delivery the sender has written already is left out: the log shows it
/// from its `deliveries` row, and its scheduled row would only be removed
/// again by the clean-up. The batch waits up to the linger before it is
/// written, so in a pipeline that keeps up most rows are left out, at the
/// cost of one primary-key probe each instead of an insert and a delete
/// (issue 23, docs/performance.md). A sender that writes the delivery
/// after the probe leaves a row to the clean-up, as before.
const INSERT_SCHEDULED: &str = "\
INSERT INTO scheduled_deliveries (id, tenant, event, webhook_id, target_url, method, payload,
    payload_kind, fired_at, next_attempt_at, resent_from)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::uuid[])
    AS s(id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at,
        next_attempt_at, resent_from)
WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = s.id)
ON CONFLICT (id) DO NOTHING";

/// Looks at up to $1 scheduled rows after the id $2 (in id order) and
/// removes those whose first attempt is due and whose delivery the sender
/// has written; returns how many it removed, how many it looked at, and the
/// last id it looked at. One ingest at a time does it (the lock is the
/// transaction's), so replicas do not delete the same rows twice.
///
/// Each pass reads a bounded slice of the table, walking it from one pass to
/// the next: rows pile up while deliveries wait (a backlog, a sender
/// outage), and a pass over all of them every second, or a join with all of
/// `deliveries` (which the planner picks for many rows), would cost
/// Postgres in proportion to the backlog and the log. The probe of
/// `deliveries` is a scalar subquery so that it stays one primary-key
/// lookup per row (issue 23, docs/performance.md).
const CLEAN_UP: &str = "\
WITH locked AS (SELECT pg_try_advisory_xact_lock(7274693712345) AS ok),
scanned AS (
    SELECT s.id, s.ctid AS row_id, s.next_attempt_at FROM scheduled_deliveries s, locked
    WHERE locked.ok AND s.id > $2
    ORDER BY s.id
    LIMIT $1
),
gone AS (
    DELETE FROM scheduled_deliveries WHERE ctid = ANY(ARRAY(
        SELECT row_id FROM scanned
        WHERE next_attempt_at <= now()
          AND (SELECT true FROM deliveries d WHERE d.id = scanned.id)))
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM scanned),
    (SELECT id FROM scanned ORDER BY id DESC LIMIT 1)";

/// Rows one clean-up pass looks at.
const CLEAN_UP_SLICE: i64 = 10_000;

/// A delivery as Fire (or a resend, or a test send) queued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRecord {
    pub id: Uuid,
    pub tenant: String,
    pub event: String,
    pub webhook_id: Uuid,
    pub target_url: String,
    pub method: String,
    pub payload: String,
    /// `"text"` or `"json"`.
    pub payload_kind: &'static str,
    pub fired_at: SystemTime,
    /// When the first attempt is due.
    pub next_attempt_at: SystemTime,
    pub resent_from: Option<Uuid>,
}

/// Tuning of the [`ScheduledLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledLogConfig {
    /// Most rows per statement.
    pub max_batch: usize,
    /// Statements in flight at once.
    pub writers: usize,
    /// How long a writer waits for more rows after the first one.
    pub linger: Duration,
    /// Rows waiting at most; more are dropped (the sender writes them).
    pub capacity: usize,
    /// Time between two clean-ups of rows the sender has written.
    pub cleanup_interval: Duration,
}

impl Default for ScheduledLogConfig {
    fn default() -> Self {
        Self {
            // Big batches: per row, a statement of 55 rows cost Postgres
            // about three times what one of several hundred did.
            max_batch: 2048,
            writers: 2,
            // Nobody waits on these rows; a longer linger makes the batches
            // bigger while keeping deliveries visible well within a second.
            linger: Duration::from_millis(50),
            // About a second of Fire at the rates measured on a 2-core host;
            // at most a few MiB of payloads with the usual small events.
            capacity: 16 * 1024,
            cleanup_interval: Duration::from_secs(1),
        }
    }
}

/// Hands scheduled deliveries to the background writers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ScheduledLog {
    rows: mpsc::Sender<ScheduledRecord>,
    dropped: metrics::Counter,
}

impl ScheduledLog {
    /// Starts the writer tasks. They stop when `shutdown` is cancelled
    /// (after writing what is already queued, for at most a few seconds) or
    /// when every handle is dropped; the returned handle completes then.
    pub fn start(
        pool: Pool,
        config: ScheduledLogConfig,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (rows, receiver) = mpsc::channel(config.capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let outcomes = Outcomes {
            written: metrics::counter!("herald_scheduled_rows_total", "outcome" => "written"),
            dropped: metrics::counter!("herald_scheduled_rows_total", "outcome" => "dropped"),
            skipped: metrics::counter!("herald_scheduled_rows_total", "outcome" => "skipped"),
        };
        let tasks: Vec<_> = (0..config.writers.max(1))
            .map(|_| {
                tokio::spawn(run(
                    pool.clone(),
                    receiver.clone(),
                    config,
                    shutdown.clone(),
                    outcomes.clone(),
                ))
            })
            .collect();
        let cleaner_stop = shutdown.child_token();
        let cleaner = tokio::spawn(clean_up_until(
            pool,
            config.cleanup_interval,
            cleaner_stop.clone(),
        ));
        let joined = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
            // The writers have stopped: no row is written any more, and a
            // clean-up in progress may finish its statement.
            cleaner_stop.cancel();
            let _ = cleaner.await;
        });
        let dropped = outcomes.dropped;
        (Self { rows, dropped }, joined)
    }

    /// Queues rows for writing; never waits. Rows that do not fit are
    /// dropped and counted.
    pub fn record(&self, rows: impl IntoIterator<Item = ScheduledRecord>) {
        for mut row in rows {
            // Postgres text cannot hold NUL; the sender strips it the same way.
            for text in [
                &mut row.tenant,
                &mut row.event,
                &mut row.target_url,
                &mut row.payload,
            ] {
                if text.contains('\0') {
                    *text = strip_nul(text);
                }
            }
            if self.rows.try_send(row).is_err() {
                self.dropped.increment(1);
            }
        }
    }
}

/// What one clean-up pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Rows removed.
    pub removed: u64,
    /// Rows looked at.
    pub scanned: u64,
    /// Where the next pass goes on; `None` once the end was reached (the
    /// next pass starts over).
    pub next: Option<Uuid>,
}

/// Looks at up to `limit` scheduled rows after `after` (`Uuid::nil()`: from
/// the start) and removes those whose delivery the sender has written.
/// Public for tests and tools.
pub async fn clean_up_once(pool: &Pool, after: Uuid, limit: i64) -> Result<Sweep, StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(CLEAN_UP).await?;
    let row = client.query_one(&statement, &[&limit, &after]).await?;
    let scanned = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
    Ok(Sweep {
        removed: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        scanned,
        next: if scanned < u64::try_from(limit).unwrap_or(0) {
            None
        } else {
            row.get(2)
        },
    })
}

async fn clean_up_until(pool: Pool, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after = Uuid::nil();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // A slice that was mostly rows to remove means more such rows are
        // likely behind it (a backlog just drained): go on at once. A
        // slice of rows still waiting is left for the next tick.
        loop {
            match tokio::time::timeout(
                Duration::from_secs(30),
                clean_up_once(&pool, after, CLEAN_UP_SLICE),
            )
            .await
            {
                Ok(Ok(sweep)) => {
                    after = sweep.next.unwrap_or(Uuid::nil());
                    let more = sweep.next.is_some() && sweep.removed * 2 >= sweep.scanned;
                    if !more || shutdown.is_cancelled() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    warn!(
                        error = &e as &dyn std::error::Error,
                        "clean-up of scheduled deliveries failed; retrying later"
                    );
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// `herald_scheduled_rows_total` by outcome.
#[derive(Clone)]
struct Outcomes {
    /// Inserted.
    written: metrics::Counter,
    /// Not logged: Postgres unreachable or too slow, or the queue full.
    dropped: metrics::Counter,
    /// Not needed: the sender had written the delivery already (or the row
    /// existed, for a keyed Fire published again).
    skipped: metrics::Counter,
}

async fn run(
    pool: Pool,
    receiver: Arc<Mutex<mpsc::Receiver<ScheduledRecord>>>,
    config: ScheduledLogConfig,
    shutdown: CancellationToken,
    outcomes: Outcomes,
) {
    let max_batch = config.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut receiver = receiver.lock().await;
            let open = tokio::select! {
                n = receiver.recv_many(&mut batch, max_batch) => n > 0,
                () = shutdown.cancelled() => {
                    // Whatever is queued already is still written.
                    receiver.close();
                    receiver.recv_many(&mut batch, max_batch).await > 0
                }
            };
            if !open {
                return;
            }
            // Collect until the batch is full or the linger is over: one
            // `recv_many` returns as soon as a single row is there, and
            // small batches cost Postgres several times more per row.
            let deadline = tokio::time::Instant::now() + config.linger;
            while batch.len() < max_batch && !shutdown.is_cancelled() {
                let more = max_batch - batch.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, more)).await
                {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let rows = batch.len() as u64;
        // Bounded, so that a vanished connection cannot hold the rows behind
        // this batch; the sender writes any row lost here.
        match tokio::time::timeout(Duration::from_secs(5), insert(&pool, &mut batch)).await {
            Ok(Ok(inserted)) => {
                outcomes.written.increment(inserted);
                outcomes.skipped.increment(rows.saturating_sub(inserted));
            }
            Ok(Err(e)) => {
                outcomes.dropped.increment(rows);
                warn!(
                    error = &e as &dyn std::error::Error,
                    rows, "scheduled deliveries not logged; their first attempt will log them"
                );
            }
            Err(_) => {
                outcomes.dropped.increment(rows);
                warn!(
                    rows,
                    "scheduled deliveries not logged within 5 s; their first attempt will log them"
                );
            }
        }
        batch.clear();
    }
}

/// Inserts the batch; returns how many rows were inserted.
async fn insert(pool: &Pool, batch: &mut [ScheduledRecord]) -> Result<u64, StoreError> {
    // The same order as the sender's writer, so that two statements touching
    // the same rows never wait on each other in opposite orders.
    batch.sort_unstable_by_key(|r| r.id);
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT_SCHEDULED).await?;
    let column = |f: fn(&ScheduledRecord) -> &str| batch.iter().map(f).collect::<Vec<_>>();
    let inserted = client
        .execute(
            &statement,
            &[
                &batch.iter().map(|r| r.id).collect::<Vec<_>>(),
                &column(|r| &r.tenant),
                &column(|r| &r.event),
                &batch.iter().map(|r| r.webhook_id).collect::<Vec<_>>(),
                &column(|r| &r.target_url),
                &column(|r| &r.method),
                &column(|r| &r.payload),
                &batch.iter().map(|r| r.payload_kind).collect::<Vec<_>>(),
                &batch.iter().map(|r| r.fired_at).collect::<Vec<_>>(),
                &batch.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>(),
                &batch.iter().map(|r| r.resent_from).collect::<Vec<_>>(),
            ],
        )
        .await?;
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;
    use crate::{AttemptWriter, DeliveryRecord, WriteRequest, WriterConfig};
    use herald_core::DeliveryState;

    fn row(id: Uuid, at: SystemTime) -> ScheduledRecord {
        ScheduledRecord {
            id,
            tenant: "shop".into(),
            event: "order.created".into(),
            webhook_id: Uuid::now_v7(),
            target_url: "https://shop.example/h".into(),
            method: "POST".into(),
            payload: r#"{"n":1}"#.into(),
            payload_kind: "json",
            fired_at: at,
            next_attempt_at: at + Duration::from_secs(5),
            resent_from: None,
        }
    }

    async fn state_of(pool: &Pool, id: Uuid) -> Option<(String, i32)> {
        let client = pool.get().await.unwrap();
        client
            .query_opt(
                "SELECT state, attempts FROM deliveries_with_scheduled WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    /// What the sender writes for `scheduled` after a successful first
    /// attempt.
    fn succeeded(scheduled: &ScheduledRecord) -> WriteRequest {
        WriteRequest {
            delivery: DeliveryRecord {
                ordering_key: Default::default(),
                id: scheduled.id,
                tenant: scheduled.tenant.clone(),
                event: scheduled.event.clone(),
                webhook_id: scheduled.webhook_id,
                target_url: scheduled.target_url.clone(),
                method: scheduled.method.clone(),
                payload: Some(scheduled.payload.clone()),
                payload_kind: "json",
                fired_at: scheduled.fired_at,
                state: DeliveryState::Succeeded,
                attempts: 1,
                last_status_code: Some(200),
                last_error: None,
                last_attempt_at: Some(scheduled.next_attempt_at),
                next_attempt_at: None,
                finished_at: Some(scheduled.next_attempt_at),
                resent_from: None,
            },
            attempt: None,
        }
    }

    async fn wait_until_logged(pool: &Pool, id: Uuid) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state_of(pool, id).await.is_none() {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn rows_show_as_scheduled_until_the_senders_row_replaces_them() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (log, done) =
            ScheduledLog::start(db.pool(), ScheduledLogConfig::default(), shutdown.clone());
        let (writer, writer_done) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let now = SystemTime::now();
        // Due already, as when the first attempt came before the row.
        let due = |id| ScheduledRecord {
            next_attempt_at: now,
            ..row(id, now)
        };
        let (fresh, raced, attempted) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

        // `fresh` and `raced` are logged before any attempt.
        log.record([row(fresh, now), due(raced), row(fresh, now)]);
        wait_until_logged(&db.pool(), fresh).await;
        wait_until_logged(&db.pool(), raced).await;
        assert_eq!(
            state_of(&db.pool(), fresh).await,
            Some(("scheduled".into(), 0))
        );
        // Then the sender writes `raced`, and `attempted` before ingest
        // logged it: that scheduled row is left out, and must not move the
        // delivery back either.
        writer.write(succeeded(&due(raced))).await.unwrap();
        writer.write(succeeded(&due(attempted))).await.unwrap();
        log.record([due(attempted)]);

        shutdown.cancel();
        done.await.unwrap();
        writer_done.await.unwrap();
        for id in [raced, attempted] {
            assert_eq!(
                state_of(&db.pool(), id).await,
                Some(("succeeded".into(), 1)),
                "the log shows the sender's row, once"
            );
        }
        let client = db.pool().get().await.unwrap();
        let count = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        assert_eq!(
            count("SELECT count(*) FROM deliveries_with_scheduled").await,
            3
        );
        assert_eq!(
            count("SELECT count(*) FROM scheduled_deliveries").await,
            2,
            "fresh and raced; attempted was left out"
        );
        // The clean-up removes the scheduled row the sender's row replaced,
        // and keeps the one whose delivery has no row yet.
        let sweep = clean_up_once(&db.pool(), Uuid::nil(), 100).await.unwrap();
        assert_eq!((sweep.removed, sweep.next), (1, None));
        assert_eq!(count("SELECT count(*) FROM scheduled_deliveries").await, 1);
        assert_eq!(
            state_of(&db.pool(), fresh).await,
            Some(("scheduled".into(), 0))
        );

        // A scheduled row says when its first attempt is due.
        let next: Option<SystemTime> = client
            .query_one(
                "SELECT next_attempt_at FROM deliveries_with_scheduled WHERE id = $1",
                &[&fresh],
            )
            .await
            .unwrap()
            .get(0);
        assert!(next.is_some_and(|t| t > now), "the first attempt's time");
    }

    #[tokio::test]
    async fn the_clean_up_walks_the_table_a_slice_at_a_time() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, writer_done) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let client = db.pool().get().await.unwrap();
        let now = SystemTime::now() - Duration::from_secs(1);
        // Seven rows due, in id order; the sender wrote every other one
        // (after ingest logged it, as in a race).
        let ids: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
        for (i, id) in ids.iter().enumerate() {
            let scheduled = ScheduledRecord {
                next_attempt_at: now,
                ..row(*id, now)
            };
            client
                .execute(
                    "INSERT INTO scheduled_deliveries (id, tenant, event, webhook_id, \
                     target_url, method, payload, payload_kind, fired_at, next_attempt_at) \
                     VALUES ($1, 'shop', 'order.created', $2, 'https://shop.example/h', \
                     'POST', '{}', 'json', $3, $3)",
                    &[id, &scheduled.webhook_id, &now],
                )
                .await
                .unwrap();
            if i % 2 == 0 {
                writer.write(succeeded(&scheduled)).await.unwrap();
            }
        }
        shutdown.cancel();
        writer_done.await.unwrap();

        // Slices of three: each pass looks at three rows and says where
        // the next goes on, until the end.
        let mut after = Uuid::nil();
        let mut sweeps = Vec::new();
        loop {
            let sweep = clean_up_once(&db.pool(), after, 3).await.unwrap();
            sweeps.push((sweep.removed, sweep.scanned));
            match sweep.next {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(sweeps, [(2, 3), (1, 3), (1, 1)]);
        let left: Vec<Uuid> = client
            .query("SELECT id FROM scheduled_deliveries ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, [ids[1], ids[3], ids[5]]);
    }

    #[tokio::test]
    async fn rows_queued_before_shutdown_are_still_written() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (log, done) =
            ScheduledLog::start(db.pool(), ScheduledLogConfig::default(), shutdown.clone());
        let now = SystemTime::now();
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
        log.record(ids.iter().map(|id| row(*id, now)));
        shutdown.cancel();
        done.await.unwrap();
        let client = db.pool().get().await.unwrap();
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM deliveries_with_scheduled WHERE state = 'scheduled'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1000);
    }
}
