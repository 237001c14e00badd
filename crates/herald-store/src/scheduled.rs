//! The first row of a delivery in the log, written by ingest right after the
//! broker confirmed it: state `scheduled`, no attempt yet, with the time its
//! first attempt is due.
//!
//! Fire must answer without Postgres on its path (it keeps working while
//! Postgres is down), so ingest hands these rows to a [`ScheduledLog`] and
//! answers; writer tasks insert them in the background, many per statement.
//! The log stays the sender's: an insert never overwrites a row
//! (`ON CONFLICT DO NOTHING`), because the sender's first attempt may have
//! been written already. Writing them is best effort: rows that find the
//! queue full or Postgres unavailable are dropped and counted
//! (`herald_scheduled_rows_total{outcome="dropped"}`), and the delivery
//! appears when its first attempt is recorded, as it did before.
//!
//! This module never touches rows that exist and never waits on the caller.

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

/// Inserts a batch of scheduled deliveries; rows that exist stay as they
/// are. Every column the sender writes at its first attempt is here too, so
/// a scheduled row reads like any other delivery.
const INSERT_SCHEDULED: &str = "\
INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, payload,
    payload_kind, fired_at, state, attempts, next_attempt_at, resent_from)
SELECT id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at,
    'scheduled', 0, next_attempt_at, resent_from
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::timestamptz[], $10::timestamptz[], $11::uuid[])
    AS t(id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at,
        next_attempt_at, resent_from)
ON CONFLICT (id) DO NOTHING";

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
}

impl Default for ScheduledLogConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            writers: 2,
            linger: Duration::from_millis(5),
            // About a second of Fire at the rates measured on a 2-core host;
            // at most a few MiB of payloads with the usual small events.
            capacity: 16 * 1024,
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
        let written = metrics::counter!("herald_scheduled_rows_total", "outcome" => "written");
        let dropped = metrics::counter!("herald_scheduled_rows_total", "outcome" => "dropped");
        let tasks: Vec<_> = (0..config.writers.max(1))
            .map(|_| {
                tokio::spawn(run(
                    pool.clone(),
                    receiver.clone(),
                    config,
                    shutdown.clone(),
                    (written.clone(), dropped.clone()),
                ))
            })
            .collect();
        let joined = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (Self { rows, dropped }, joined)
    }

    /// Queues rows for writing; never waits. Rows that do not fit are
    /// dropped and counted.
    pub fn record(&self, rows: impl IntoIterator<Item = ScheduledRecord>) {
        for row in rows {
            if self.rows.try_send(row).is_err() {
                self.dropped.increment(1);
            }
        }
    }
}

async fn run(
    pool: Pool,
    receiver: Arc<Mutex<mpsc::Receiver<ScheduledRecord>>>,
    config: ScheduledLogConfig,
    shutdown: CancellationToken,
    (written, dropped): (metrics::Counter, metrics::Counter),
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
            if batch.len() < max_batch && !shutdown.is_cancelled() {
                let more = max_batch - batch.len();
                let _ =
                    tokio::time::timeout(config.linger, receiver.recv_many(&mut batch, more)).await;
            }
        }
        let rows = batch.len() as u64;
        // Bounded, so that a vanished connection cannot hold the rows behind
        // this batch; the sender writes any row lost here.
        match tokio::time::timeout(Duration::from_secs(5), insert(&pool, &mut batch)).await {
            Ok(Ok(())) => written.increment(rows),
            Ok(Err(e)) => {
                dropped.increment(rows);
                warn!(
                    error = &e as &dyn std::error::Error,
                    rows, "scheduled deliveries not logged; their first attempt will log them"
                );
            }
            Err(_) => {
                dropped.increment(rows);
                warn!(
                    rows,
                    "scheduled deliveries not logged within 5 s; their first attempt will log them"
                );
            }
        }
        batch.clear();
    }
}

async fn insert(pool: &Pool, batch: &mut [ScheduledRecord]) -> Result<(), StoreError> {
    // The same order as the sender's writer, so that two statements touching
    // the same rows never wait on each other in opposite orders.
    batch.sort_unstable_by_key(|r| r.id);
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT_SCHEDULED).await?;
    let column = |f: fn(&ScheduledRecord) -> String| batch.iter().map(f).collect::<Vec<_>>();
    client
        .execute(
            &statement,
            &[
                &batch.iter().map(|r| r.id).collect::<Vec<_>>(),
                &column(|r| strip_nul(&r.tenant)),
                &column(|r| strip_nul(&r.event)),
                &batch.iter().map(|r| r.webhook_id).collect::<Vec<_>>(),
                &column(|r| strip_nul(&r.target_url)),
                &column(|r| r.method.clone()),
                &column(|r| strip_nul(&r.payload)),
                &batch.iter().map(|r| r.payload_kind).collect::<Vec<_>>(),
                &batch.iter().map(|r| r.fired_at).collect::<Vec<_>>(),
                &batch.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>(),
                &batch.iter().map(|r| r.resent_from).collect::<Vec<_>>(),
            ],
        )
        .await?;
    Ok(())
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
                "SELECT state, attempts FROM deliveries WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    #[tokio::test]
    async fn rows_are_written_as_scheduled_and_never_overwrite_the_senders() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (log, done) =
            ScheduledLog::start(db.pool(), ScheduledLogConfig::default(), shutdown.clone());
        let now = SystemTime::now();
        let (fresh, attempted) = (Uuid::now_v7(), Uuid::now_v7());

        // The sender wrote `attempted` first: the scheduled row must not
        // move it back.
        let (writer, writer_done) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let scheduled = row(attempted, now);
        writer
            .write(WriteRequest {
                delivery: DeliveryRecord {
                    id: attempted,
                    tenant: scheduled.tenant.clone(),
                    event: scheduled.event.clone(),
                    webhook_id: scheduled.webhook_id,
                    target_url: scheduled.target_url.clone(),
                    method: scheduled.method.clone(),
                    payload: Some(scheduled.payload.clone()),
                    payload_kind: "json",
                    fired_at: now,
                    state: DeliveryState::Succeeded,
                    attempts: 1,
                    last_status_code: Some(200),
                    last_error: None,
                    last_attempt_at: Some(now),
                    next_attempt_at: None,
                    finished_at: Some(now),
                    resent_from: None,
                },
                attempt: None,
            })
            .await
            .unwrap();

        log.record([row(fresh, now), scheduled, row(fresh, now)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state_of(&db.pool(), fresh).await.is_none() {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            state_of(&db.pool(), fresh).await,
            Some(("scheduled".into(), 0))
        );
        shutdown.cancel();
        done.await.unwrap();
        writer_done.await.unwrap();
        assert_eq!(
            state_of(&db.pool(), attempted).await,
            Some(("succeeded".into(), 1)),
            "the sender's row is kept"
        );

        // A scheduled row says when its first attempt is due.
        let client = db.pool().get().await.unwrap();
        let next: Option<SystemTime> = client
            .query_one(
                "SELECT next_attempt_at FROM deliveries WHERE id = $1",
                &[&fresh],
            )
            .await
            .unwrap()
            .get(0);
        assert!(next.is_some_and(|t| t > now), "the first attempt's time");
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
                "SELECT count(*) FROM deliveries WHERE state = 'scheduled'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1000);
    }
}
