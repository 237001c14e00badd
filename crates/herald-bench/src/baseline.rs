//! Raw limits of this machine, measured in the same run as Herald: each
//! stage alone, with the same message/body size and concurrency Herald uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use herald_proto::v1::ingest_server::{Ingest, IngestServer};
use herald_proto::v1::{
    FireRequest, FireResponse, ListEventsRequest, ListEventsResponse, fire_request,
    ingest_client::IngestClient,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;
use tokio_postgres::NoTls;
use uuid::Uuid;

use herald_queue::QueueType;

use crate::herald::Load;
use crate::receiver::Receiver;
use crate::stats::{Latency, LoopOutcome, closed_loop, open_loop, per_second};

/// Longest wait for one publish confirm, and for a connection to close.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Closes `connection`, giving up after [`OP_TIMEOUT`]: the bench must stop
/// by itself whatever the broker does.
async fn close(connection: &Connection) {
    if tokio::time::timeout(OP_TIMEOUT, connection.close(200, "done".into()))
        .await
        .is_err()
    {
        eprintln!("  the broker did not close a baseline connection within {OP_TIMEOUT:?}");
    }
}

/// One raw stage's result.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub what: String,
    pub count: usize,
    pub per_second: f64,
    pub latency: Option<Latency>,
    pub errors: usize,
    /// CPU milliseconds per message, request or row of everything the
    /// stage ran on (the bench's clients and servers, RabbitMQ, Postgres).
    pub cpu_ms_per_op: f64,
}

impl Stage {
    /// Runs a stage and records the CPU it cost per operation.
    pub async fn measured(
        stage: impl Future<Output = anyhow::Result<Stage>>,
    ) -> anyhow::Result<Stage> {
        let before = crate::procfs::stage_cpu_seconds();
        let mut stage = stage.await?;
        let spent = crate::procfs::stage_cpu_seconds() - before;
        if stage.count > 0 {
            stage.cpu_ms_per_op = spent * 1000.0 / stage.count as f64;
        }
        Ok(stage)
    }
}

impl Stage {
    fn from_loop(name: &str, what: String, mut outcome: LoopOutcome) -> Self {
        if let Some(e) = &outcome.first_error {
            eprintln!("  {name}: {} errors, first: {e}", outcome.errors);
        }
        Self {
            name: name.into(),
            what,
            count: outcome.ok(),
            per_second: outcome.rate(),
            latency: Some(outcome.summary()),
            errors: outcome.errors,
            cpu_ms_per_op: 0.0,
        }
    }
}

/// AMQP confirmed publish of persistent `body`s to a fresh queue of Herald's type over
/// `channels` confirm-mode channels, each publish awaiting its own confirm:
/// `concurrency` publishers in a closed loop, or publishes started at a fixed
/// rate (open loop, to see the confirm latency without back-pressure). The
/// messages stay for [`consume`].
pub async fn publish(
    amqp_url: &str,
    queue: &str,
    total: usize,
    load: Load,
    channels: usize,
    queue_type: QueueType,
    body: Vec<u8>,
) -> anyhow::Result<Stage> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let mut list = Vec::new();
    for _ in 0..channels.max(1) {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        list.push(channel);
    }
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type.as_str())),
    );
    list[0]
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    let list = Arc::new(list);
    let body = Arc::new(body);
    let queue = queue.to_owned();
    let op = move |i: usize, _: Instant| {
        let list = list.clone();
        let body = body.clone();
        let queue = queue.clone();
        async move {
            let channel = &list[i % list.len()];
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            // A confirm that never comes (seen once here: the broker had
            // stored every message) must end as an error, not a hung run.
            let confirm = tokio::time::timeout(OP_TIMEOUT, confirm)
                .await
                .map_err(|_| anyhow::anyhow!("no confirm within {OP_TIMEOUT:?}"))??;
            match confirm {
                Confirmation::Ack(None) => Ok(()),
                other => anyhow::bail!("not confirmed: {other:?}"),
            }
        }
    };
    let (outcome, name, what) = match load {
        Load::Closed { concurrency } => (
            closed_loop(total, concurrency, op).await,
            format!("amqp_publish_c{concurrency}_ch{channels}"),
            format!(
                "lapin confirmed publish, persistent, {} queue, {concurrency} publishers on {channels} channels",
                queue_type.as_str()
            ),
        ),
        // Not named `amqp_publish_*`: it measures latency at a set rate, so
        // it must not count as a throughput bound.
        Load::Open { rate } => (
            open_loop(total, rate, op).await,
            format!("amqp_confirm_open{rate:.0}"),
            format!(
                "lapin confirmed publish, persistent, {} queue, open loop {rate:.0}/s on {channels} channels",
                queue_type.as_str()
            ),
        ),
    };
    close(&connection).await;
    Ok(Stage::from_loop(&name, what, outcome))
}

/// Consumes `total` messages from `queue` with manual acks at `prefetch`,
/// acking each from its own task (as the sender does); deletes the queue.
pub async fn consume(
    amqp_url: &str,
    queue: &str,
    total: usize,
    prefetch: u16,
    queue_type: QueueType,
) -> anyhow::Result<Stage> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "herald-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut received = 0;
    while received < total {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else { break };
        received += 1;
        let acked = acked.clone();
        let done = done.clone();
        tokio::spawn(async move {
            if delivery.ack(BasicAckOptions::default()).await.is_ok()
                && acked.fetch_add(1, Ordering::Relaxed) + 1 == total
            {
                done.notify_one();
            }
        });
    }
    if received == total {
        let _ = tokio::time::timeout(Duration::from_secs(10), done.notified()).await;
    }
    let elapsed = started.elapsed();
    let count = acked.load(Ordering::Relaxed);
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    close(&connection).await;
    Ok(Stage {
        name: format!("amqp_consume_prefetch{prefetch}"),
        what: format!(
            "lapin consume + ack per message, {} queue, prefetch {prefetch}",
            queue_type.as_str()
        ),
        count,
        per_second: per_second(count, elapsed),
        latency: None,
        errors: total - count,
        cpu_ms_per_op: 0.0,
    })
}

/// hyper-util client → hyper server (the bench receiver), HTTP/1.1
/// keep-alive, POST of `body`.
pub async fn http(total: usize, concurrency: usize, body: Bytes) -> anyhow::Result<Stage> {
    let receiver = Receiver::start().await?;
    let uri: hyper::Uri = format!("http://{}/", receiver.addr).parse()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let size = body.len();
    let outcome = closed_loop(total, concurrency, move |_, _| {
        let client = client.clone();
        let request = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(body.clone()));
        async move {
            let response = client.request(request?).await?;
            anyhow::ensure!(response.status() == 200, "status {}", response.status());
            response.into_body().collect().await?;
            Ok(())
        }
    })
    .await;
    Ok(Stage::from_loop(
        &format!("http_c{concurrency}"),
        format!(
            "hyper-util client -> hyper server, HTTP/1.1 keep-alive, POST {size} B, concurrency {concurrency}"
        ),
        outcome,
    ))
}

/// Multi-row inserts (`unnest` arrays) of rows shaped like attempt rows into
/// a copy of `delivery_attempts` (same columns, key and index).
pub async fn postgres_insert(
    database_url: &str,
    total_rows: usize,
    rows_per_statement: usize,
    connections: usize,
) -> anyhow::Result<Stage> {
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
        tokio::spawn(connection);
        clients.push(Arc::new(client));
    }
    clients[0]
        .batch_execute("CREATE TABLE bench_attempts (LIKE delivery_attempts INCLUDING ALL)")
        .await?;
    let batches = total_rows.div_ceil(rows_per_statement);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare(
                    "INSERT INTO bench_attempts (delivery_id, attempt, started_at, duration_ms, url,
                        status_code, error_kind, error_message, response_excerpt)
                     SELECT * FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[], $4::int4[],
                        $5::text[], $6::int4[], $7::text[], $8::text[], $9::text[])
                     ON CONFLICT (delivery_id, attempt) DO NOTHING",
                )
                .await?;
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                let n = rows_per_statement;
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let attempts = vec![1i32; n];
                let started_at = vec![SystemTime::now(); n];
                let durations = vec![3i32; n];
                let urls = vec!["http://127.0.0.1:8080/hooks/order-created".to_owned(); n];
                let statuses = vec![Some(200i32); n];
                let none: Vec<Option<String>> = vec![None; n];
                let t = Instant::now();
                client
                    .execute(
                        &insert,
                        &[
                            &ids,
                            &attempts,
                            &started_at,
                            &durations,
                            &urls,
                            &statuses,
                            &none,
                            &none,
                            &none,
                        ],
                    )
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut outcome = LoopOutcome::default();
    for task in tasks {
        match task.await? {
            Ok(latencies) => outcome.latencies.extend(latencies),
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    outcome.elapsed = started.elapsed();
    let rows = outcome.ok() * rows_per_statement;
    let mut stage = Stage::from_loop(
        &format!("postgres_insert_{rows_per_statement}x{connections}"),
        format!(
            "multi-row INSERT (unnest) of attempt-like rows, {rows_per_statement} rows/statement, {connections} connections; latency per statement"
        ),
        outcome,
    );
    stage.per_second = per_second(rows, started.elapsed());
    stage.count = rows;
    Ok(stage)
}

/// A tonic `Ingest` service that does nothing.
struct Noop;

#[tonic::async_trait]
impl Ingest for Noop {
    async fn fire(
        &self,
        _request: tonic::Request<FireRequest>,
    ) -> Result<tonic::Response<FireResponse>, tonic::Status> {
        Ok(tonic::Response::new(FireResponse::default()))
    }

    async fn list_events(
        &self,
        _request: tonic::Request<ListEventsRequest>,
    ) -> Result<tonic::Response<ListEventsResponse>, tonic::Status> {
        Ok(tonic::Response::new(ListEventsResponse::default()))
    }
}

/// tonic unary call of a no-op `Fire` over one channel, same request as the
/// Herald runs.
pub async fn tonic_noop(total: usize, concurrency: usize, payload: &str) -> anyhow::Result<Stage> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let stop = shutdown.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(Noop))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move { stop.notified().await },
            ),
    );
    let client = IngestClient::connect(format!("http://{addr}")).await?;
    let payload = payload.to_owned();
    let outcome = closed_loop(total, concurrency, move |_, _| {
        let mut client = client.clone();
        let request = FireRequest {
            ordering_key: Default::default(),
            tenant: String::new(),
            event: "bench.noop".into(),
            data: Some(fire_request::Data::Json(payload.clone())),
            idempotency_key: String::new(),
        };
        async move {
            client.fire(request).await?;
            Ok(())
        }
    })
    .await;
    shutdown.notify_one();
    let _ = server.await;
    Ok(Stage::from_loop(
        &format!("tonic_noop_c{concurrency}"),
        format!("tonic unary no-op Fire, one channel, concurrency {concurrency}"),
        outcome,
    ))
}
