//! Load and bookkeeping shared by the tests that fire thousands of events
//! and then account for every delivery id Fire returned: firing (closed loop
//! or paced), waiting for final states, and counting what the receiver got.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald_proto::v1::{FireRequest, fire_request};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Receiver, Reply, TestEnv};

/// One row of the reliability table (docs/reliability.md, "The
/// fault-injection suite").
#[derive(Debug)]
pub struct Row {
    pub scenario: &'static str,
    pub fired: usize,
    pub confirmed: usize,
    pub unavailable: usize,
    pub delivered: usize,
    pub failed: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Deliveries the receiver got although their Fire call answered
    /// UNAVAILABLE (the confirm was lost with the connection).
    pub unconfirmed_delivered: usize,
    pub bound: String,
}

impl Row {
    /// Prints the row (`RELIABILITY | …`) and appends it to the file
    /// `HERALD_FAULTS_REPORT` names, if any.
    pub fn print(&self) {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.fired,
            self.confirmed,
            self.unavailable,
            self.delivered,
            self.failed,
            self.lost,
            self.duplicates,
            self.unconfirmed_delivered,
            self.bound
        );
        eprintln!("RELIABILITY {line}");
        if let Some(path) = std::env::var_os("HERALD_FAULTS_REPORT") {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{line}");
            }
        }
    }
}

/// What a batch of Fire calls came to.
#[derive(Debug, Default)]
pub struct Fired {
    /// Calls made.
    pub calls: usize,
    /// Delivery ids of the calls answered OK (the broker confirmed them).
    pub confirmed: Vec<Uuid>,
    /// Calls answered UNAVAILABLE (nothing was confirmed; the caller retries).
    pub unavailable: usize,
    /// Any other answer: always a bug in the tests that use this.
    pub other: Vec<tonic::Status>,
}

impl Fired {
    /// Counts one Fire call's answer.
    pub fn record(&mut self, result: Result<Vec<String>, tonic::Status>) {
        self.calls += 1;
        match result {
            Ok(ids) => self.confirmed.extend(
                ids.iter()
                    .map(|id| id.parse::<Uuid>().expect("delivery ids are UUIDs")),
            ),
            Err(status) if status.code() == tonic::Code::Unavailable => self.unavailable += 1,
            Err(status) => self.other.push(status),
        }
    }
}

async fn fire_one(
    client: &mut herald_proto::v1::ingest_client::IngestClient<tonic::transport::Channel>,
    event: &str,
    n: usize,
) -> Result<Vec<String>, tonic::Status> {
    client
        .fire(FireRequest {
            event: event.into(),
            data: Some(fire_request::Data::Json(format!(r#"{{"n":{n}}}"#))),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().delivery_ids)
}

/// Fires `count` events as fast as `concurrency` calls in flight allow.
pub async fn fire_closed_loop(
    env: &TestEnv,
    event: &str,
    count: usize,
    concurrency: usize,
) -> Fired {
    let client = env.ingest().await;
    let results = futures_util::stream::iter(0..count)
        .map(|n| {
            let mut client = client.clone();
            async move { fire_one(&mut client, event, n).await }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let mut fired = Fired::default();
    for result in results {
        fired.record(result);
    }
    fired
}

/// Fires `count` events at `per_second` (open loop: a slow answer does not
/// delay the next call), with at most 256 calls in flight. Faults are
/// injected while this runs, so it has to last long enough to span them.
pub async fn fire_paced(env: &Arc<TestEnv>, event: &str, count: usize, per_second: u32) -> Fired {
    fire_paced_until(
        env,
        event,
        Some(count),
        per_second,
        &CancellationToken::new(),
    )
    .await
    .0
}

/// One Fire call of a timed load: when it was sent, when it was answered,
/// and whether the answer was OK.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub sent: Instant,
    pub answered: Instant,
    pub ok: bool,
}

/// Fires at `per_second` like [`fire_paced`], `count` events or (with
/// `None`) until `stop` is cancelled, and returns each call's timing too,
/// in the order the calls were sent.
pub async fn fire_paced_until(
    env: &Arc<TestEnv>,
    event: &str,
    count: Option<usize>,
    per_second: u32,
    stop: &CancellationToken,
) -> (Fired, Vec<Call>) {
    let client = env.ingest().await;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(count.unwrap_or(1024));
    for n in 0.. {
        if count.is_some_and(|count| n >= count) {
            break;
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let permit = in_flight.clone().acquire_owned().await.expect("open");
        let mut client = client.clone();
        let event = event.to_owned();
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = fire_one(&mut client, &event, n).await;
            drop(permit);
            (sent, Instant::now(), result)
        }));
    }
    let mut fired = Fired::default();
    let mut timeline = Vec::with_capacity(calls.len());
    for call in calls {
        let (sent, answered, result) = call.await.expect("fire task");
        timeline.push(Call {
            sent,
            answered,
            ok: result.is_ok(),
        });
        fired.record(result);
    }
    (fired, timeline)
}

/// Waits until every delivery in `ids` has a final row; panics after
/// `timeout` with the count of those still pending.
pub async fn wait_all_final(env: &TestEnv, ids: &[Uuid], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = 0;
    loop {
        // A fresh connection per poll: some tests restart Postgres.
        let done: Option<i64> = match env.try_db().await {
            Some(db) => db
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE id = ANY($1) AND state NOT IN ('scheduled', 'pending')",
                    &[&ids],
                )
                .await
                .ok()
                .map(|row| row.get(0)),
            None => None,
        };
        let done = done.unwrap_or(last);
        if usize::try_from(done).unwrap_or(0) == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} deliveries final after {timeout:?} (queued: {})",
            ids.len(),
            env.queued_messages().await
        );
        if done / 1000 != last / 1000 {
            eprintln!("  {done} of {} final", ids.len());
        }
        last = done;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One delivery as recorded: its row and a summary of its attempt rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub state: String,
    /// `deliveries.attempts`.
    pub attempts: i32,
    /// Number of attempt rows.
    pub attempt_rows: i64,
    pub first_attempt: i32,
    pub last_attempt: i32,
}

/// The recorded state of every delivery in `ids` that has a row.
pub async fn recorded(env: &TestEnv, ids: &[Uuid]) -> HashMap<Uuid, Recorded> {
    env.db()
        .await
        .query(
            "SELECT d.id, d.state, d.attempts, count(a.attempt), \
                    coalesce(min(a.attempt), 0), coalesce(max(a.attempt), 0) \
             FROM deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id \
             WHERE d.id = ANY($1) GROUP BY d.id, d.state, d.attempts",
            &[&ids],
        )
        .await
        .expect("summary query")
        .iter()
        .map(|row| {
            (
                row.get(0),
                Recorded {
                    state: row.get(1),
                    attempts: row.get(2),
                    attempt_rows: row.get(3),
                    first_attempt: row.get(4),
                    last_attempt: row.get(5),
                },
            )
        })
        .collect()
}

/// Asserts what every delivery of a healthy target must look like after a
/// fault: succeeded, with attempt rows numbered 1..=n and `attempts` = n.
/// Returns the number of deliveries that needed more than one attempt.
pub fn assert_all_succeeded(ids: &[Uuid], recorded: &HashMap<Uuid, Recorded>) -> usize {
    assert_eq!(
        recorded.len(),
        ids.len(),
        "{} confirmed deliveries have no row: lost",
        ids.len() - recorded.len()
    );
    let mut retried = 0;
    for id in ids {
        let r = &recorded[id];
        assert_eq!(r.state, "succeeded", "delivery {id}: {r:?}");
        assert!(r.attempt_rows >= 1, "delivery {id} has no attempt row");
        assert_eq!(
            (
                i64::from(r.attempts),
                r.first_attempt,
                i64::from(r.last_attempt)
            ),
            (r.attempt_rows, 1, r.attempt_rows),
            "delivery {id}: attempts, first and last attempt vs attempt rows"
        );
        if r.attempt_rows > 1 {
            retried += 1;
        }
    }
    retried
}

/// How many requests the receiver got per delivery id.
pub fn requests_per_delivery(receiver: &Receiver) -> HashMap<Uuid, usize> {
    let mut per_id = HashMap::new();
    for request in receiver.requests() {
        let id = request
            .header("webhook-id")
            .expect("every request carries its delivery id")
            .parse()
            .expect("uuid");
        *per_id.entry(id).or_default() += 1;
    }
    per_id
}

/// A receiver answering 200 at once, with a cheap request counter.
pub async fn counting_receiver() -> (Receiver, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let receiver = Receiver::start(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Reply::status(200)
    })
    .await;
    (receiver, count)
}
