//! Batched recording of delivery outcomes (group commit).
//!
//! The sender must not acknowledge a queue message before the outcome of its
//! attempt is durable, yet one transaction per attempt caps throughput at a
//! few thousand rows per second. So callers queue their record and wait, while
//! a few writer tasks each take whatever has queued up (waiting a few
//! milliseconds for more when little has), write it with one statement of
//! multi-row inserts (plain ones for new rows, an upsert for deliveries
//! written before), and then answer every waiting caller at once.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use herald_core::DeliveryState;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

use crate::StoreError;
use crate::store::u32_to_i32;
use herald_core::backoff::Backoff;

/// Upper bound for one attempt at committing a batch. A connection whose
/// peer vanished would otherwise hold the batch (and its callers) for as long
/// as TCP takes to notice.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

// The parts the two batch statements share, as macros so that `concat!`
// can put each statement together at compile time.

/// The columns of `deliveries` a record writes.
macro_rules! delivery_columns {
    () => {
        "id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at, \
         state, attempts, last_status_code, last_error, last_attempt_at, next_attempt_at, \
         finished_at, resent_from, ordering_key"
    };
}

/// The delivery records as rows, in the order of `delivery_columns!`.
macro_rules! delivery_rows {
    () => {
        "unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::int4[], $12::int4[], \
         $13::text[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::uuid[], \
         $27::text[]"
    };
}

/// Only the progress columns are updated on conflict; the fire-time columns
/// are written once. The `WHERE` keeps a late redelivery of an older attempt
/// from moving a delivery backwards.
macro_rules! delivery_upsert {
    () => {
        "ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, \
         attempts = EXCLUDED.attempts, last_status_code = EXCLUDED.last_status_code, \
         last_error = EXCLUDED.last_error, last_attempt_at = EXCLUDED.last_attempt_at, \
         next_attempt_at = EXCLUDED.next_attempt_at, finished_at = EXCLUDED.finished_at \
         WHERE deliveries.attempts <= EXCLUDED.attempts"
    };
}

/// Inserts the attempt records.
macro_rules! attempts_insert {
    () => {
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url, \
         status_code, error_kind, error_message, response_excerpt) \
         SELECT * FROM unnest($18::uuid[], $19::int4[], $20::timestamptz[], $21::int4[], \
         $22::text[], $23::int4[], $24::text[], $25::text[], $26::text[])"
    };
}

/// Records a batch in one statement: upserts the deliveries and inserts
/// their attempts. One statement is one implicit transaction, so the batch
/// commits in a single round trip (no `BEGIN`/`COMMIT` of their own), and the
/// two inserts still commit or fail together.
///
/// Attempts: an attempt is immutable, so a second write of the same
/// (delivery, attempt) — a message redelivered after a crash — is ignored.
///
/// Data-modifying `WITH` parts always run to completion even though the main
/// query reads nothing from them.
const WRITE_BATCH: &str = concat!(
    "WITH upserted AS (INSERT INTO deliveries (",
    delivery_columns!(),
    ") SELECT * FROM ",
    delivery_rows!(),
    ") ",
    delivery_upsert!(),
    "), inserted AS (",
    attempts_insert!(),
    " ON CONFLICT (delivery_id, attempt) DO NOTHING) SELECT 1"
);

/// Records a batch like [`WRITE_BATCH`], but inserts the deliveries written
/// for the first time (`$28` is true: their first attempt) and every attempt
/// with plain `INSERT`s. An `ON CONFLICT` insert first probes the unique
/// index and then inserts speculatively, which costs a second index search
/// and a second WAL record per row; nearly every row of a batch is new, so
/// that is paid for nothing. A row that does exist (a queue message
/// redelivered after its record committed) fails the whole statement with a
/// unique violation, and the batch is written again with [`WRITE_BATCH`].
const WRITE_BATCH_NEW_ROWS: &str = concat!(
    "WITH records AS (SELECT * FROM ",
    delivery_rows!(),
    ", $28::bool[]) AS r(",
    delivery_columns!(),
    ", first)), created AS (INSERT INTO deliveries (",
    delivery_columns!(),
    ") SELECT ",
    delivery_columns!(),
    " FROM records WHERE first), upserted AS (INSERT INTO deliveries (",
    delivery_columns!(),
    ") SELECT ",
    delivery_columns!(),
    " FROM records WHERE NOT first ",
    delivery_upsert!(),
    "), inserted AS (",
    attempts_insert!(),
    ") SELECT 1"
);

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// The state of a delivery after an attempt (a row of `deliveries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub tenant: String,
    pub event: String,
    pub webhook_id: Uuid,
    pub target_url: String,
    pub method: String,
    pub payload: Option<String>,
    /// `"text"` or `"json"`.
    pub payload_kind: &'static str,
    pub fired_at: SystemTime,
    pub state: DeliveryState,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<SystemTime>,
    pub next_attempt_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The delivery this one re-sends (a fire-time column, written once).
    pub resent_from: Option<Uuid>,
    /// The ordering key of a delivery to an ordered webhook (fire-time,
    /// written once).
    pub ordering_key: Option<String>,
}

/// One HTTP attempt (a row of `delivery_attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: Uuid,
    pub attempt: u32,
    pub started_at: SystemTime,
    pub duration_ms: u32,
    pub url: String,
    pub status_code: Option<u16>,
    pub error_kind: Option<&'static str>,
    pub error_message: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What to record for one processed queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    pub delivery: DeliveryRecord,
    /// `None` when no request was sent (a cancelled delivery).
    pub attempt: Option<AttemptRecord>,
}

/// Tuning of the [`AttemptWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Most requests per transaction. Small enough that a sender's
    /// deliveries in flight (its prefetch, 512 by default) fill the batches
    /// of all its writers: a batch that never fills always waits the whole
    /// linger, and the prefetch then caps the sender's rate (measured in
    /// docs/performance.md, item 7).
    pub max_batch: usize,
    /// Batches written concurrently. The pool should have at least this many
    /// connections.
    pub writers: usize,
    /// How long a writer waits for more records after the first one before it
    /// writes a batch that is not full. Nothing waits on this but the ack of
    /// the queue message (the HTTP request has been sent already), and every
    /// statement saved is CPU that Postgres and the sender spend on other
    /// deliveries instead. Longer is not better: a sender holds at most its
    /// prefetch unacked, so a long linger caps its rate.
    pub linger: Duration,
}

/// Default of [`WriterConfig::max_batch`].
pub const DEFAULT_WRITE_BATCH: usize = 64;

/// Default of [`WriterConfig::linger`].
pub const DEFAULT_WRITE_LINGER: Duration = Duration::from_millis(5);

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_WRITE_BATCH,
            writers: 4,
            linger: DEFAULT_WRITE_LINGER,
        }
    }
}

/// Why [`AttemptWriter::write`] did not store a record.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Postgres refused this record as data (a constraint, a value out of
    /// range, an oversized index entry): writing it again would fail the
    /// same way. The record comes back, so that the caller can keep what it
    /// holds (for example by moving the message aside) instead of losing it.
    #[error("Postgres refused the delivery record")]
    Refused {
        #[source]
        source: StoreError,
        request: Box<WriteRequest>,
    },
    /// The record was not written for now (the writer shut down first);
    /// another try may store it.
    #[error(transparent)]
    NotWritten(#[from] StoreError),
}

type Reply = oneshot::Sender<Result<(), WriteError>>;
type Job = (WriteRequest, Reply);

/// Queues delivery outcomes for batched writing. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AttemptWriter {
    jobs: mpsc::Sender<Job>,
}

impl AttemptWriter {
    /// Starts the writer tasks. They stop when `shutdown` is cancelled (after
    /// draining what is already queued) or when every `AttemptWriter` handle
    /// is dropped; the returned handle completes when they all have.
    pub fn start(
        pool: Pool,
        config: WriterConfig,
        shutdown: CancellationToken,
    ) -> (AttemptWriter, JoinHandle<()>) {
        let max_batch = config.max_batch.max(1);
        let writers = config.writers.max(1);
        let linger = config.linger;
        // Bounded, so that a stalled database pushes back on the consumers
        // (their `write` waits) instead of letting memory grow.
        let (jobs, receiver) = mpsc::channel(max_batch * writers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let tasks: Vec<JoinHandle<()>> = (0..writers)
            .map(|_| {
                tokio::spawn(run_writer(
                    pool.clone(),
                    Arc::clone(&receiver),
                    Batching { max_batch, linger },
                    shutdown.clone(),
                ))
            })
            .collect();
        let joined = tokio::spawn(async move {
            for task in tasks {
                if let Err(err) = task.await {
                    error!(
                        error = &err as &dyn std::error::Error,
                        "an attempt writer task failed"
                    );
                }
            }
        });
        (AttemptWriter { jobs }, joined)
    }

    /// Queues the record and resolves once the transaction holding it has
    /// committed. Acknowledge the queue message only after `Ok`.
    ///
    /// Returns [`WriteError::NotWritten`] if the writer shuts down before
    /// the commit, and [`WriteError::Refused`] (with the record) if Postgres
    /// refuses this record for good; the other records of its batch are
    /// still written then.
    pub async fn write(&self, req: WriteRequest) -> Result<(), WriteError> {
        let (reply, committed) = oneshot::channel();
        self.jobs
            .send((req, reply))
            .await
            .map_err(|_| StoreError::WriterShutDown)?;
        committed.await.map_err(|_| StoreError::WriterShutDown)?
    }
}

/// How a writer task forms its batches.
#[derive(Clone, Copy)]
struct Batching {
    max_batch: usize,
    linger: Duration,
}

/// One writer task: take a batch, write it, answer, repeat; drain on
/// shutdown.
async fn run_writer(
    pool: Pool,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    batching: Batching,
    shutdown: CancellationToken,
) {
    loop {
        let batch = {
            // Held while lingering: the other writers queue behind this one
            // instead of each taking a few records, which keeps batches large
            // while up to `writers` of them are being written.
            let mut receiver = receiver.lock().await;
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                job = receiver.recv() => match job {
                    Some(job) => job,
                    // Every handle is gone and the queue is empty.
                    None => return,
                },
            };
            let mut batch = vec![first];
            take_queued(&mut receiver, &mut batch, batching.max_batch);
            let deadline = tokio::time::Instant::now() + batching.linger;
            while batch.len() < batching.max_batch && !batching.linger.is_zero() {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => None,
                    next = tokio::time::timeout_at(deadline, receiver.recv()) => next.ok().flatten(),
                };
                let Some(job) = next else { break };
                batch.push(job);
                take_queued(&mut receiver, &mut batch, batching.max_batch);
            }
            batch
        };
        write_and_answer(&pool, batch, &shutdown).await;
    }

    // Shutdown: refuse new work, then write what was queued before, trying
    // each batch once (`shutdown` is cancelled, so no retries).
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            receiver.close();
            let Ok(first) = receiver.try_recv() else {
                return;
            };
            let mut batch = vec![first];
            take_queued(&mut receiver, &mut batch, batching.max_batch);
            batch
        };
        write_and_answer(&pool, batch, &shutdown).await;
    }
}

/// Adds whatever is already queued to `batch`, up to `max_batch` jobs.
fn take_queued(receiver: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, max_batch: usize) {
    while batch.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// How an attempt to commit ended, after any retries.
enum Outcome {
    Committed,
    /// Postgres refused the data itself; retrying the same rows cannot help.
    Refused(StoreError),
    /// Shutdown came while the batch could not be written.
    GaveUp,
}

/// Writes a batch and answers its callers.
async fn write_and_answer(pool: &Pool, batch: Vec<Job>, shutdown: &CancellationToken) {
    let (requests, replies): (Vec<WriteRequest>, Vec<Reply>) = batch.into_iter().unzip();
    match commit_with_retry(pool, &Rows::new(&requests), shutdown).await {
        Outcome::Committed => answer_all(replies, || Ok(())),
        Outcome::GaveUp => answer_all(replies, || Err(StoreError::WriterShutDown.into())),
        Outcome::Refused(err) if requests.len() == 1 => {
            if let (Some(request), Some(reply)) =
                (requests.into_iter().next(), replies.into_iter().next())
            {
                refused(&request, &err);
                // See `answer_all`: a caller that stopped waiting is fine.
                let _ = reply.send(Err(WriteError::Refused {
                    source: err,
                    request: Box::new(request),
                }));
            }
        }
        Outcome::Refused(err) => {
            // One bad record must not hold back the others (nor be retried
            // forever), so write them one by one to find it.
            warn!(
                error = &err as &dyn std::error::Error,
                records = requests.len(),
                "Postgres refused a batch of delivery records; writing them one by one"
            );
            for (request, reply) in requests.into_iter().zip(replies) {
                let result = match commit_with_retry(
                    pool,
                    &Rows::new(std::slice::from_ref(&request)),
                    shutdown,
                )
                .await
                {
                    Outcome::Committed => Ok(()),
                    Outcome::GaveUp => Err(StoreError::WriterShutDown.into()),
                    Outcome::Refused(err) => {
                        refused(&request, &err);
                        Err(WriteError::Refused {
                            source: err,
                            request: Box::new(request),
                        })
                    }
                };
                // The caller may have stopped waiting (e.g. its task was
                // cancelled); the record is written all the same.
                let _ = reply.send(result);
            }
        }
    }
}

fn refused(request: &WriteRequest, err: &StoreError) {
    error!(
        error = err as &dyn std::error::Error,
        delivery_id = %request.delivery.id,
        attempt = request.attempt.as_ref().map(|a| a.attempt),
        "Postgres refused a delivery record"
    );
}

fn answer_all(replies: Vec<Reply>, result: impl Fn() -> Result<(), WriteError>) {
    for reply in replies {
        // See above: a caller that stopped waiting is not an error.
        let _ = reply.send(result());
    }
}

/// Tries to commit `rows` until it works, the data is refused, or shutdown.
async fn commit_with_retry(pool: &Pool, rows: &Rows, shutdown: &CancellationToken) -> Outcome {
    let mut backoff = Backoff::new();
    loop {
        let result = match tokio::time::timeout(BATCH_TIMEOUT, rows.write(pool)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout {
                what: "writing delivery records",
                after: BATCH_TIMEOUT,
            }),
        };
        let err = match result {
            Ok(()) => return Outcome::Committed,
            Err(err) if is_refusal(&err) => return Outcome::Refused(err),
            Err(err) => err,
        };
        if shutdown.is_cancelled() {
            warn!(
                error = &err as &dyn std::error::Error,
                records = rows.requests,
                "writing delivery records failed during shutdown; giving up on them"
            );
            return Outcome::GaveUp;
        }
        let delay = backoff.next_delay();
        warn!(
            error = &err as &dyn std::error::Error,
            records = rows.requests,
            retry_in = ?delay,
            "writing delivery records failed; retrying"
        );
        tokio::select! {
            () = shutdown.cancelled() => return Outcome::GaveUp,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Whether Postgres refused the data itself, as opposed to a failure of the
/// connection or the server that a retry can overcome. Cardinality violations
/// (class 21, e.g. a row touched twice by one upsert), data exceptions (22),
/// constraint violations (23) and program limits such as an oversized row (54)
/// fail the same way every time. Everything else is retried, including a
/// missing table, which is what a writer sees before the migration ran.
fn is_refusal(err: &StoreError) -> bool {
    match err {
        StoreError::Db(err) => err
            .code()
            .is_some_and(|code| matches!(&code.code()[..2], "21" | "22" | "23" | "54")),
        _ => false,
    }
}

/// A batch as column arrays for the two `unnest` statements, deduplicated and
/// sorted.
///
/// Deduplication is required: one `INSERT ... ON CONFLICT DO UPDATE` cannot
/// touch the same row twice. Sorting by key makes concurrent batches lock
/// rows in the same order, which rules out deadlocks between writer tasks.
#[derive(Debug, Default)]
struct Rows {
    /// Number of requests the rows came from, for logging.
    requests: usize,
    deliveries: DeliveryColumns,
    attempts: AttemptColumns,
}

#[derive(Debug, Default)]
struct DeliveryColumns {
    id: Vec<Uuid>,
    tenant: Vec<String>,
    event: Vec<String>,
    webhook_id: Vec<Uuid>,
    target_url: Vec<String>,
    method: Vec<String>,
    payload: Vec<Option<String>>,
    payload_kind: Vec<String>,
    fired_at: Vec<SystemTime>,
    state: Vec<&'static str>,
    attempts: Vec<i32>,
    last_status_code: Vec<Option<i32>>,
    last_error: Vec<Option<String>>,
    last_attempt_at: Vec<Option<SystemTime>>,
    next_attempt_at: Vec<Option<SystemTime>>,
    finished_at: Vec<Option<SystemTime>>,
    resent_from: Vec<Option<Uuid>>,
    ordering_key: Vec<Option<String>>,
    /// Written for the first time: the record of its first attempt.
    first: Vec<bool>,
}

#[derive(Debug, Default)]
struct AttemptColumns {
    delivery_id: Vec<Uuid>,
    attempt: Vec<i32>,
    started_at: Vec<SystemTime>,
    duration_ms: Vec<i32>,
    url: Vec<String>,
    status_code: Vec<Option<i32>>,
    error_kind: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    response_excerpt: Vec<Option<String>>,
}

impl Rows {
    fn new(requests: &[WriteRequest]) -> Self {
        // Per delivery, the record with the most attempts wins, and the later
        // one on a tie: that is the newest state. Per attempt, the first one
        // wins, matching `DO NOTHING` across batches.
        let mut deliveries: BTreeMap<Uuid, &DeliveryRecord> = BTreeMap::new();
        let mut attempts: BTreeMap<(Uuid, u32), &AttemptRecord> = BTreeMap::new();
        for request in requests {
            let delivery = &request.delivery;
            match deliveries.entry(delivery.id) {
                Entry::Vacant(slot) => {
                    slot.insert(delivery);
                }
                Entry::Occupied(mut slot) => {
                    if slot.get().attempts <= delivery.attempts {
                        slot.insert(delivery);
                    }
                }
            }
            if let Some(attempt) = &request.attempt {
                attempts
                    .entry((attempt.delivery_id, attempt.attempt))
                    .or_insert(attempt);
            }
        }

        let mut rows = Rows {
            requests: requests.len(),
            ..Rows::default()
        };
        let d = &mut rows.deliveries;
        for record in deliveries.into_values() {
            d.id.push(record.id);
            d.tenant.push(strip_nul(&record.tenant));
            d.event.push(strip_nul(&record.event));
            d.webhook_id.push(record.webhook_id);
            d.target_url.push(strip_nul(&record.target_url));
            d.method.push(strip_nul(&record.method));
            d.payload.push(record.payload.as_deref().map(strip_nul));
            d.payload_kind.push(strip_nul(record.payload_kind));
            d.fired_at.push(record.fired_at);
            d.state.push(record.state.as_str());
            d.attempts.push(u32_to_i32(record.attempts));
            d.last_status_code
                .push(record.last_status_code.map(i32::from));
            d.last_error
                .push(record.last_error.as_deref().map(strip_nul));
            d.last_attempt_at.push(record.last_attempt_at);
            d.next_attempt_at.push(record.next_attempt_at);
            d.finished_at.push(record.finished_at);
            d.resent_from.push(record.resent_from);
            d.ordering_key
                .push(record.ordering_key.as_deref().map(strip_nul));
            d.first.push(record.attempts == 1);
        }
        let a = &mut rows.attempts;
        for record in attempts.into_values() {
            a.delivery_id.push(record.delivery_id);
            a.attempt.push(u32_to_i32(record.attempt));
            a.started_at.push(record.started_at);
            a.duration_ms.push(u32_to_i32(record.duration_ms));
            a.url.push(strip_nul(&record.url));
            a.status_code.push(record.status_code.map(i32::from));
            a.error_kind.push(record.error_kind.map(strip_nul));
            a.error_message
                .push(record.error_message.as_deref().map(strip_nul));
            a.response_excerpt
                .push(record.response_excerpt.as_deref().map(strip_nul));
        }
        rows
    }

    /// Writes all rows in one transaction.
    async fn write(&self, pool: &Pool) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.write_transaction(pool).await?;
        metrics::histogram!("herald_db_write_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_db_write_batch_size").record(self.requests as f64);
        Ok(())
    }

    async fn write_transaction(&self, pool: &Pool) -> Result<(), StoreError> {
        let client = pool.get().await?;
        if self.deliveries.first.contains(&true) {
            let statement = client.prepare_cached(WRITE_BATCH_NEW_ROWS).await?;
            match client.execute(&statement, &self.params(true)).await {
                Err(err)
                    if err
                        .code()
                        .is_some_and(|code| code.code() == UNIQUE_VIOLATION) => {}
                result => return result.map(drop).map_err(StoreError::from),
            }
        }
        let statement = client.prepare_cached(WRITE_BATCH).await?;
        client.execute(&statement, &self.params(false)).await?;
        Ok(())
    }

    /// The parameters of [`WRITE_BATCH`], and with `new_rows` those of
    /// [`WRITE_BATCH_NEW_ROWS`] (one more).
    fn params(&self, new_rows: bool) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let (d, a) = (&self.deliveries, &self.attempts);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &d.id,
            &d.tenant,
            &d.event,
            &d.webhook_id,
            &d.target_url,
            &d.method,
            &d.payload,
            &d.payload_kind,
            &d.fired_at,
            &d.state,
            &d.attempts,
            &d.last_status_code,
            &d.last_error,
            &d.last_attempt_at,
            &d.next_attempt_at,
            &d.finished_at,
            &d.resent_from,
            &a.delivery_id,
            &a.attempt,
            &a.started_at,
            &a.duration_ms,
            &a.url,
            &a.status_code,
            &a.error_kind,
            &a.error_message,
            &a.response_excerpt,
            &d.ordering_key,
        ];
        if new_rows {
            params.push(&d.first);
        }
        params
    }
}

/// Postgres `text` cannot hold NUL characters, and one in a response excerpt
/// or a payload would fail the whole batch, so they are dropped.
pub(crate) fn strip_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;

    use super::*;
    use crate::test_support::TestDb;
    use crate::{Store, migrate};

    /// A writer on the test database with this batch size and writer count.
    fn start(
        db: &TestDb,
        max_batch: usize,
        writers: usize,
        shutdown: &CancellationToken,
    ) -> (AttemptWriter, JoinHandle<()>) {
        AttemptWriter::start(
            db.pool(),
            WriterConfig {
                max_batch,
                writers,
                linger: DEFAULT_WRITE_LINGER,
            },
            shutdown.clone(),
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn request(id: Uuid, attempt: u32, state: DeliveryState) -> WriteRequest {
        let failed = !matches!(state, DeliveryState::Succeeded);
        WriteRequest {
            delivery: DeliveryRecord {
                id,
                tenant: "shop".into(),
                event: "order.created".into(),
                webhook_id: Uuid::nil(),
                target_url: "https://shop.example/hook".into(),
                method: "POST".into(),
                payload: Some("{\"id\":1}".into()),
                payload_kind: "json",
                fired_at: at(0),
                state,
                attempts: attempt,
                last_status_code: Some(if failed { 503 } else { 200 }),
                last_error: failed.then(|| "http_status: 503".to_string()),
                last_attempt_at: Some(at(u64::from(attempt))),
                next_attempt_at: matches!(state, DeliveryState::Pending)
                    .then(|| at(u64::from(attempt) + 60)),
                finished_at: state.is_final().then(|| at(u64::from(attempt) + 1)),
                resent_from: None,
                ordering_key: None,
            },
            attempt: Some(AttemptRecord {
                delivery_id: id,
                attempt,
                started_at: at(u64::from(attempt)),
                duration_ms: 12,
                url: "https://shop.example/hook".into(),
                status_code: Some(if failed { 503 } else { 200 }),
                error_kind: failed.then_some("http_status"),
                error_message: failed.then(|| "503 Service Unavailable".to_string()),
                response_excerpt: Some("busy".into()),
            }),
        }
    }

    async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    #[test]
    fn batches_are_deduplicated_and_sorted() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let mut later_tie = request(a, 2, DeliveryState::Failed);
        later_tie.delivery.last_error = Some("later".into());
        let mut first_attempt_copy = request(a, 1, DeliveryState::Pending);
        if let Some(attempt) = &mut first_attempt_copy.attempt {
            attempt.response_excerpt = Some("second copy".into());
        }
        let rows = Rows::new(&[
            request(b, 1, DeliveryState::Pending),
            request(a, 2, DeliveryState::Pending),
            request(a, 1, DeliveryState::Pending),
            later_tie,
            first_attempt_copy,
        ]);
        assert_eq!(rows.requests, 5);
        assert_eq!(rows.deliveries.id, [a, b], "one row per delivery, sorted");
        assert_eq!(rows.deliveries.attempts, [2, 1]);
        assert_eq!(
            rows.deliveries.state,
            ["failed", "pending"],
            "later record wins a tie"
        );
        assert_eq!(rows.deliveries.last_error[0].as_deref(), Some("later"));
        assert_eq!(rows.attempts.delivery_id, [a, a, b]);
        assert_eq!(rows.attempts.attempt, [1, 2, 1]);
        assert_eq!(
            rows.attempts.response_excerpt[0].as_deref(),
            Some("busy"),
            "first copy of an attempt wins"
        );
    }

    #[test]
    fn refusals_are_told_apart_from_outages() {
        assert!(!is_refusal(&StoreError::WriterShutDown));
        assert!(!is_refusal(&StoreError::Timeout {
            what: "x",
            after: Duration::ZERO
        }));
    }

    /// The transaction ids that wrote these deliveries' rows, in both tables.
    async fn writing_transactions(client: &tokio_postgres::Client, ids: &[Uuid]) -> Vec<String> {
        let rows = client
            .query(
                "SELECT DISTINCT xmin::text FROM deliveries WHERE id = ANY($1) \
                 UNION SELECT DISTINCT xmin::text FROM delivery_attempts WHERE delivery_id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_lingers_for_more_records_and_writes_them_in_one_transaction() {
        let db = TestDb::migrated().await;
        let client = db.connect().await;
        let shutdown = CancellationToken::new();
        let linger = Duration::from_millis(300);
        let (writer, tasks) = AttemptWriter::start(
            db.pool(),
            WriterConfig {
                max_batch: 512,
                writers: 1,
                linger,
            },
            shutdown.clone(),
        );
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let started = std::time::Instant::now();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(request(a, 1, DeliveryState::Pending)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer
            .write(request(b, 1, DeliveryState::Succeeded))
            .await
            .expect("second write");
        first.await.unwrap().expect("first write");
        assert!(
            started.elapsed() >= linger,
            "the batch was written before the linger ran out"
        );
        assert_eq!(
            writing_transactions(&client, &[a, b]).await.len(),
            1,
            "a record that came during the linger joins the batch"
        );

        // Without a linger, records 50 ms apart are separate batches.
        let (unlingering, tasks_2) = AttemptWriter::start(
            db.pool(),
            WriterConfig {
                max_batch: 512,
                writers: 1,
                linger: Duration::ZERO,
            },
            shutdown.clone(),
        );
        let (c, d) = (Uuid::now_v7(), Uuid::now_v7());
        unlingering
            .write(request(c, 1, DeliveryState::Pending))
            .await
            .expect("write c");
        tokio::time::sleep(Duration::from_millis(50)).await;
        unlingering
            .write(request(d, 1, DeliveryState::Pending))
            .await
            .expect("write d");
        assert_eq!(writing_transactions(&client, &[c, d]).await.len(), 2);

        // A full batch does not wait for the linger.
        let (full, tasks_3) = AttemptWriter::start(
            db.pool(),
            WriterConfig {
                max_batch: 2,
                writers: 1,
                linger: Duration::from_secs(60),
            },
            shutdown.clone(),
        );
        let (e, f) = (Uuid::now_v7(), Uuid::now_v7());
        let both = join_all([e, f].map(|id| {
            let full = full.clone();
            async move { full.write(request(id, 1, DeliveryState::Pending)).await }
        }));
        for result in tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("a full batch is written at once")
        {
            result.expect("write");
        }
        assert_eq!(writing_transactions(&client, &[e, f]).await.len(), 1);

        shutdown.cancel();
        for t in [tasks, tasks_2, tasks_3] {
            t.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_concurrent_writes_are_all_stored() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, tasks) = start(&db, 128, 4, &shutdown);
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
        let results = join_all(ids.iter().map(|&id| {
            let writer = writer.clone();
            async move { writer.write(request(id, 1, DeliveryState::Pending)).await }
        }))
        .await;
        for result in results {
            result.expect("write");
        }
        let client = db.connect().await;
        assert_eq!(
            count(&client, "SELECT count(*) FROM deliveries").await,
            1000
        );
        assert_eq!(
            count(&client, "SELECT count(*) FROM delivery_attempts").await,
            1000
        );

        let view = Store::new(db.pool()).get_delivery(ids[500]).await.unwrap();
        assert_eq!(view.state, DeliveryState::Pending);
        assert_eq!(view.attempts, 1);
        assert_eq!(view.last_status_code, Some(503));
        assert_eq!(view.payload.as_deref(), Some("{\"id\":1}"));
        assert_eq!(view.payload_kind, "json");
        assert_eq!(view.fired_at, at(0));
        assert_eq!(view.next_attempt_at, Some(at(61)));
        assert_eq!(view.finished_at, None);
        assert_eq!(view.attempt_history.len(), 1);
        assert_eq!(
            view.attempt_history[0].error_kind.as_deref(),
            Some("http_status")
        );

        shutdown.cancel();
        tasks.await.unwrap();
        assert!(matches!(
            writer
                .write(request(Uuid::now_v7(), 1, DeliveryState::Pending))
                .await,
            Err(WriteError::NotWritten(StoreError::WriterShutDown))
        ));
    }

    #[tokio::test]
    async fn duplicates_in_one_batch_and_across_batches_are_fine() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, _tasks) = start(&db, 512, 1, &shutdown);
        let id = Uuid::now_v7();
        // Issued together, so that they share a batch: on this
        // single-threaded runtime every request is queued before the writer
        // task runs.
        let same_batch =
            join_all((0..5).map(|_| writer.write(request(id, 1, DeliveryState::Pending)))).await;
        assert!(same_batch.iter().all(Result::is_ok), "{same_batch:?}");
        // And again in later batches, as redelivered messages would be.
        writer
            .write(request(id, 1, DeliveryState::Pending))
            .await
            .unwrap();
        let retried = join_all([
            writer.write(request(id, 2, DeliveryState::Succeeded)),
            writer.write(request(id, 2, DeliveryState::Succeeded)),
            writer.write(request(id, 1, DeliveryState::Pending)),
        ])
        .await;
        assert!(retried.iter().all(Result::is_ok), "{retried:?}");

        let view = Store::new(db.pool()).get_delivery(id).await.unwrap();
        assert_eq!(view.state, DeliveryState::Succeeded);
        assert_eq!(view.attempts, 2);
        let attempts: Vec<u32> = view.attempt_history.iter().map(|a| a.attempt).collect();
        assert_eq!(attempts, [1, 2]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_redelivered_first_attempt_does_not_hold_back_the_new_rows_of_its_batch() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, _tasks) = start(&db, 512, 1, &shutdown);
        let (old, retried) = (Uuid::now_v7(), Uuid::now_v7());
        writer
            .write(request(old, 1, DeliveryState::Succeeded))
            .await
            .unwrap();
        writer
            .write(request(retried, 1, DeliveryState::Pending))
            .await
            .unwrap();
        // One batch: new deliveries at their first attempt (plain inserts),
        // a retry of an existing one (an upsert), and the first attempt of
        // `old` once more, as a redelivered message brings it. Its rows
        // exist, so the plain insert fails and the batch is written again
        // with the upsert.
        let new: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let mut requests: Vec<WriteRequest> = new
            .iter()
            .map(|id| request(*id, 1, DeliveryState::Succeeded))
            .collect();
        requests.push(request(retried, 2, DeliveryState::Succeeded));
        requests.push(request(old, 1, DeliveryState::Succeeded));
        let results = join_all(requests.into_iter().map(|r| writer.write(r))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let store = Store::new(db.pool());
        for id in new.iter().chain([&old]) {
            let view = store.get_delivery(*id).await.unwrap();
            assert_eq!(view.state, DeliveryState::Succeeded, "{id}");
            assert_eq!(view.attempt_history.len(), 1, "{id}");
        }
        let view = store.get_delivery(retried).await.unwrap();
        assert_eq!((view.state, view.attempts), (DeliveryState::Succeeded, 2));
        assert_eq!(view.attempt_history.len(), 2);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_older_attempt_does_not_move_a_delivery_backwards() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, _tasks) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let id = Uuid::now_v7();
        writer
            .write(request(id, 3, DeliveryState::Failed))
            .await
            .unwrap();
        writer
            .write(request(id, 2, DeliveryState::Pending))
            .await
            .unwrap();

        let view = Store::new(db.pool()).get_delivery(id).await.unwrap();
        assert_eq!(view.state, DeliveryState::Failed);
        assert_eq!(view.attempts, 3);
        assert_eq!(view.finished_at, Some(at(4)));
        assert_eq!(view.next_attempt_at, None);
        let attempts: Vec<u32> = view.attempt_history.iter().map(|a| a.attempt).collect();
        assert_eq!(
            attempts,
            [2, 3],
            "the late attempt itself is still recorded"
        );

        // A cancelled delivery records no attempt.
        let cancelled = Uuid::now_v7();
        let mut req = request(cancelled, 0, DeliveryState::Cancelled);
        req.attempt = None;
        writer.write(req).await.unwrap();
        let view = Store::new(db.pool()).get_delivery(cancelled).await.unwrap();
        assert_eq!(view.state, DeliveryState::Cancelled);
        assert!(view.attempt_history.is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn nul_characters_are_stripped() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, _tasks) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let id = Uuid::now_v7();
        let mut req = request(id, 1, DeliveryState::Pending);
        req.delivery.payload = Some("a\0b".into());
        req.delivery.last_error = Some("\0err\0".into());
        req.delivery.target_url = "https://x.example/\0".into();
        if let Some(attempt) = &mut req.attempt {
            attempt.response_excerpt = Some("bin\0ary".into());
            attempt.error_message = Some("m\0".into());
            attempt.url = "https://x.example/?q=\0".into();
        }
        writer.write(req).await.unwrap();

        let view = Store::new(db.pool()).get_delivery(id).await.unwrap();
        assert_eq!(view.payload.as_deref(), Some("ab"));
        assert_eq!(view.last_error.as_deref(), Some("err"));
        assert_eq!(view.target_url, "https://x.example/");
        let attempt = &view.attempt_history[0];
        assert_eq!(attempt.response_excerpt.as_deref(), Some("binary"));
        assert_eq!(attempt.error_message.as_deref(), Some("m"));
        assert_eq!(attempt.url, "https://x.example/?q=");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_refused_record_does_not_hold_back_its_batch() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, _tasks) = start(&db, 512, 1, &shutdown);
        let good = Uuid::now_v7();
        let bad = Uuid::now_v7();
        let mut bad_req = request(bad, 1, DeliveryState::Pending);
        bad_req.delivery.payload_kind = "xml";
        let (good_result, bad_result) = tokio::join!(
            writer.write(request(good, 1, DeliveryState::Pending)),
            writer.write(bad_req.clone()),
        );
        good_result.expect("the good record is written");
        let err = bad_result.expect_err("the bad record is refused");
        match err {
            WriteError::Refused { source, request } => {
                assert!(matches!(source, StoreError::Db(_)), "{source:?}");
                assert_eq!(*request, bad_req, "the refused record comes back whole");
            }
            other => panic!("a refusal, not {other:?}"),
        }
        let store = Store::new(db.pool());
        assert!(store.get_delivery(good).await.is_ok());
        assert!(store.get_delivery(bad).await.unwrap_err().is_not_found());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn failed_batches_are_retried_until_they_commit() {
        // No schema yet: every write fails until the migration runs.
        let db = TestDb::create().await;
        let shutdown = CancellationToken::new();
        let (writer, _tasks) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let id = Uuid::now_v7();
        let pending = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(request(id, 1, DeliveryState::Pending)).await }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !pending.is_finished(),
            "a failing write must wait, not fail"
        );
        migrate(db.url()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("committed after the retry")
            .unwrap()
            .expect("write");
        assert!(Store::new(db.pool()).get_delivery(id).await.is_ok());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_answers_writes_that_cannot_commit() {
        let db = TestDb::create().await;
        let shutdown = CancellationToken::new();
        let (writer, tasks) =
            AttemptWriter::start(db.pool(), WriterConfig::default(), shutdown.clone());
        let pending = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .write(request(Uuid::now_v7(), 1, DeliveryState::Pending))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("answered on shutdown")
            .unwrap();
        assert!(
            matches!(
                result,
                Err(WriteError::NotWritten(StoreError::WriterShutDown))
            ),
            "{result:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), tasks)
            .await
            .expect("writer tasks end")
            .unwrap();
    }

    #[tokio::test]
    async fn queued_writes_are_drained_on_shutdown() {
        let db = TestDb::migrated().await;
        let shutdown = CancellationToken::new();
        let (writer, tasks) = start(&db, 4, 1, &shutdown);
        let ids: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
        // Queue everything, then cancel before the writer task has run: on
        // this single-threaded runtime it only runs once we yield.
        let writes = join_all(
            ids.iter()
                .map(|&id| writer.write(request(id, 1, DeliveryState::Pending))),
        );
        let cancel = async {
            tokio::task::yield_now().await;
            shutdown.cancel();
        };
        let (results, ()) = tokio::join!(writes, cancel);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        tasks.await.unwrap();
        let client = db.connect().await;
        assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 20);
    }
}
