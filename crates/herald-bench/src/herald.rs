//! Herald as it runs in production: `herald-ingest` and `herald-sender`
//! processes started from the release binaries, configured through
//! `HERALD_*` variables and the Admin API, driven through `Fire`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use herald_proto::v1::{
    CreateWebhookRequest, FireRequest, ListEventsRequest, admin_client::AdminClient, fire_request,
    ingest_client::IngestClient,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::procfs;
use crate::receiver::Receiver;
use crate::stats::{Latency, closed_loop, open_loop, per_second};

/// Where everything of one bench run lives.
#[derive(Debug, Clone)]
pub struct Env {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub database_url: String,
    pub amqp_url: String,
    pub prefix: String,
    pub schedule: String,
    pub queue_type: herald_queue::QueueType,
    /// `HERALD_PUBLISH_CHANNELS` of ingest; `None` leaves ingest's default.
    pub publish_channels: Option<u16>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` of ingest and the senders (`--otlp`);
    /// `None`: traces off, as by default.
    pub otel_endpoint: Option<String>,
}

impl Env {
    /// Herald's queue names and routes in this run.
    pub fn topology(&self) -> anyhow::Result<herald_queue::Topology> {
        let schedule: herald_core::Schedule =
            self.schedule.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(herald_queue::Topology::new(
            &self.prefix,
            self.queue_type,
            schedule,
        ))
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn new(name: &str, child: Child) -> Self {
        Self {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `timeout` before SIGKILL.
    pub async fn stop(mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Builds the release binaries of ingest and sender with the cargo that
/// built this bench; returns the directory they are in.
pub fn build_binaries(workspace: &Path, profile_dir: &Path) -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "herald-ingest",
            "-p",
            "herald-sender",
            "-p",
            "herald-console",
        ])
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --release: {status}");
    Ok(profile_dir.to_path_buf())
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn spawn(env: &Env, binary: &str, name: &str, vars: &[(&str, String)]) -> anyhow::Result<Proc> {
    let path = env.bin_dir.join(binary);
    let file: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let log = std::fs::File::create(env.log_dir.join(format!("{file}.log")))?;
    let mut command = Command::new(&path);
    command
        .env(
            "HERALD_DATABASE_URL",
            with_application_name(&env.database_url, binary),
        )
        .env("HERALD_AMQP_URL", &env.amqp_url)
        .env("HERALD_QUEUE_PREFIX", &env.prefix)
        .env("HERALD_QUEUE_TYPE", env.queue_type.as_str())
        .env("HERALD_SCHEDULE", &env.schedule)
        .env("HERALD_SSRF_ALLOW", "127.0.0.0/8")
        .env("HERALD_CONFIG_REFRESH_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(endpoint) = &env.otel_endpoint {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    for (key, value) in vars {
        command.env(key, value);
    }
    let child = command
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

/// `url` with `application_name` set, so that the case can tell which
/// process each Postgres backend serves ([`PgBackends`]).
fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// The running ingest and the clients that talk to it.
pub struct Ingest {
    pub proc: Proc,
    /// The gRPC port, which also serves the JSON door.
    pub addr: SocketAddr,
    pub ingest: IngestClient<Channel>,
    pub admin: AdminClient<Channel>,
}

pub async fn start_ingest(env: &Env) -> anyhow::Result<Ingest> {
    let grpc = free_port()?;
    let metrics = free_port()?;
    let mut vars = vec![
        ("HERALD_LISTEN", grpc.to_string()),
        ("HERALD_METRICS_LISTEN", metrics.to_string()),
        ("HERALD_ALLOW_HTTP", "true".into()),
        // A closed loopback benchmark: no API keys. With keys each call
        // costs one SHA-256 of the token and a hash-table look-up more.
        ("HERALD_AUTH", "disabled".into()),
    ];
    if let Some(channels) = env.publish_channels {
        vars.push(("HERALD_PUBLISH_CHANNELS", channels.to_string()));
    }
    let mut proc = spawn(env, "herald-ingest", "ingest", &vars)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            anyhow::bail!("herald-ingest exited at start-up: {status}");
        }
        if let Ok(channel) = Channel::from_shared(format!("http://{grpc}"))?
            .connect()
            .await
        {
            let mut client = IngestClient::new(channel.clone());
            if client
                .list_events(ListEventsRequest::default())
                .await
                .is_ok()
            {
                break channel;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "herald-ingest not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(Ingest {
        proc,
        addr: grpc,
        ingest: IngestClient::new(channel.clone()),
        admin: AdminClient::new(channel),
    })
}

/// Starts a sender and waits until `/readyz` says it consumes.
pub async fn start_sender(env: &Env, name: &str, prefetch: Option<u16>) -> anyhow::Result<Proc> {
    let http = free_port()?;
    let mut vars = vec![("HERALD_HTTP_LISTEN", http.to_string())];
    if let Some(prefetch) = prefetch {
        vars.push(("HERALD_PREFETCH", prefetch.to_string()));
    }
    let mut proc = spawn(env, "herald-sender", name, &vars)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{http}/readyz").parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            anyhow::bail!("{name} exited at start-up: {status}");
        }
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await
        {
            let ok = response.status() == 200;
            let _ = response.into_body().collect().await;
            if ok {
                return Ok(proc);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `count` POST webhooks for `event` aimed at `receiver`, and waits
/// until ingest's configuration cache lists them.
pub async fn create_webhooks(
    ingest: &mut Ingest,
    event: &str,
    count: usize,
    receiver: SocketAddr,
) -> anyhow::Result<()> {
    for i in 0..count {
        ingest
            .admin
            .create_webhook(CreateWebhookRequest {
                event: event.into(),
                method: "POST".into(),
                url: format!("http://{receiver}/hooks/{event}/{i}"),
                description: "herald-bench".into(),
                ..CreateWebhookRequest::default()
            })
            .await
            .with_context(|| format!("creating a webhook for {event}"))?;
    }
    wait_for_events(ingest, &format!("the webhooks of {event}"), |events| {
        events
            .iter()
            .any(|e| e.event == event && e.webhooks.len() == count)
    })
    .await
}

/// Creates one ordered POST webhook for `event` aimed at `receiver` (issue
/// 20's ordered delivery), and waits until ingest lists it.
pub async fn create_ordered_webhook(
    ingest: &mut Ingest,
    event: &str,
    receiver: SocketAddr,
) -> anyhow::Result<()> {
    ingest
        .admin
        .create_webhook(CreateWebhookRequest {
            event: event.into(),
            method: "POST".into(),
            url: format!("http://{receiver}/hooks/{event}/ordered"),
            description: "herald-bench ordered".into(),
            ordered: true,
            ..CreateWebhookRequest::default()
        })
        .await
        .with_context(|| format!("creating the ordered webhook of {event}"))?;
    wait_for_events(ingest, &format!("the webhook of {event}"), |events| {
        events.iter().any(|e| e.event == event)
    })
    .await
}

/// Issue 20's crowd: 1,000 webhooks beside the bench's own, 900 of them on
/// 200 events (`crowd.e0` … `crowd.e199`) and 100 on patterns
/// (`crowd.p0.*` … `crowd.p99.*`), none of which the fired `bench.one`
/// reaches, so that a Fire pays for matching against all of them and
/// publishes what it published before. Returns their ids.
pub async fn create_crowd(
    ingest: &mut Ingest,
    receiver: SocketAddr,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(1_000);
    for i in 0..1_000 {
        let event = if i < 900 {
            format!("crowd.e{}", i % 200)
        } else {
            format!("crowd.p{}.*", i - 900)
        };
        let id = ingest
            .admin
            .create_webhook(CreateWebhookRequest {
                event,
                method: "POST".into(),
                url: format!("http://{receiver}/hooks/crowd/{i}"),
                description: "herald-bench crowd".into(),
                ..CreateWebhookRequest::default()
            })
            .await
            .context("creating the crowd of webhooks")?
            .into_inner()
            .id;
        ids.push(id);
    }
    // The crowd's 200 events and bench.one, bench.five.
    wait_for_events(ingest, "the crowd", |events| events.len() >= 202).await?;
    Ok(ids)
}

/// Deletes the crowd again.
pub async fn delete_crowd(ingest: &mut Ingest, ids: Vec<String>) -> anyhow::Result<()> {
    for id in ids {
        ingest
            .admin
            .delete_webhook(herald_proto::v1::DeleteWebhookRequest { id })
            .await
            .context("deleting the crowd")?;
    }
    Ok(())
}

/// Waits until what ingest lists for the default tenant satisfies `done`;
/// `what` names it in the error.
pub(crate) async fn wait_for_events(
    ingest: &mut Ingest,
    what: &str,
    done: impl Fn(&[herald_proto::v1::EventInfo]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = ingest
            .ingest
            .list_events(ListEventsRequest::default())
            .await?
            .into_inner()
            .events;
        if done(&events) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "ingest does not see {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How `Fire` is driven.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// `concurrency` callers, each calling again as soon as answered.
    Closed { concurrency: usize },
    /// Calls started at a fixed rate whatever the answers do.
    Open { rate: f64 },
}

/// Which of ingest's doors `Fire` is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    /// gRPC over HTTP/2, tonic's client: what shop back-ends use.
    Grpc,
    /// `POST /v1/fire` with a JSON body over HTTP/1.1 keep-alive
    /// connections (hyper's pooled client, one connection per caller), as
    /// PHP's curl or a browser calls it.
    Json,
}

/// One Herald case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSpec {
    pub name: String,
    pub event: String,
    pub webhooks: usize,
    pub events: usize,
    pub load: Load,
    /// Senders running while Fire is driven (or, for a backlog, started
    /// after it). None: the case measures Fire alone, as the raw publish
    /// baseline measures publishing alone, and purges what it queued.
    pub senders: usize,
    /// Fire everything with no sender running, then start the senders and
    /// time the drain.
    pub backlog: bool,
    /// `HERALD_PREFETCH` of the senders (deliveries in flight per sender);
    /// `None` leaves the sender's default.
    pub prefetch: Option<u16>,
    /// The door Fire is called through.
    pub door: Door,
    /// Issue 20's crowd of 1,000 webhooks is configured while the case runs
    /// (see [`create_crowd`]).
    pub crowd: bool,
    /// Fire with an ordering key, `k0` … `k<n-1>` in turn (for an ordered
    /// webhook: issue 20's ordered delivery); `None` fires without one.
    pub ordering_keys: Option<usize>,
}

impl CaseSpec {
    /// Whether the case measures Fire alone (no sender, nothing delivered).
    pub fn fire_only(&self) -> bool {
        self.senders == 0
    }
}

/// CPU seconds per 1,000 deliveries.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct CpuPer1000 {
    pub ingest: f64,
    pub sender: f64,
    pub rabbitmq: f64,
    pub postgres: f64,
    pub bench: f64,
}

impl CpuPer1000 {
    /// CPU seconds per 1,000 deliveries of everything the case ran.
    pub fn total(&self) -> f64 {
        self.ingest + self.sender + self.rabbitmq + self.postgres + self.bench
    }

    /// Deliveries per second `cpus` cores could do at this cost if every
    /// core were busy all the time: the ceiling a case on one machine
    /// cannot pass however its stages overlap.
    pub fn ceiling_per_s(&self, cpus: usize) -> f64 {
        let total = self.total();
        if total > 0.0 {
            cpus as f64 * 1000.0 / total
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub spec: CaseSpec,
    pub deliveries: usize,
    pub fire_ok: usize,
    pub fire_errors: usize,
    pub fire_first_error: Option<String>,
    pub fire_calls_per_s: f64,
    pub fire_latency: Latency,
    pub received: usize,
    pub duplicates: usize,
    /// Deliveries received per second: from the first Fire (the first
    /// arrival, for a backlog) to the last arrival.
    pub deliveries_per_s: f64,
    /// From the scheduled/actual Fire start to arrival (not for backlogs).
    pub e2e_latency: Option<Latency>,
    /// Attempt rows committed per second over the same window (until the
    /// last row was visible).
    pub attempt_rows_per_s: f64,
    pub attempt_rows: i64,
    pub cpu_s_per_1000: CpuPer1000,
    /// `cpu_s_per_1000.postgres` by whom Postgres worked for.
    pub postgres_cpu_s_per_1000_by_client: PostgresSplit,
    pub sender_peak_rss_mib: f64,
    pub ingest_peak_rss_mib: f64,
    pub complete: bool,
    pub wall_s: f64,
}

/// Postgres' CPU seconds per 1,000 deliveries, split by the client its
/// backends served: what each service's statements cost, apart from
/// Postgres' own background work.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct PostgresSplit {
    /// Backends of the senders' connections (attempt records, breakers,
    /// configuration).
    pub sender: f64,
    /// Backends of ingest's connections (scheduled rows and their
    /// clean-up, configuration).
    pub ingest: f64,
    /// The rest: background processes (WAL writer, checkpointer,
    /// autovacuum), backends that ended during the case, the bench's own.
    pub other: f64,
}

/// CPU seconds each backend of the bench's database has used so far, with
/// the application name of its client.
#[derive(Default)]
pub(crate) struct PgBackends(HashMap<u32, (String, f64)>);

impl PgBackends {
    pub(crate) async fn now(db: &tokio_postgres::Client) -> Self {
        let rows = db
            .query(
                "SELECT pid, application_name FROM pg_stat_activity \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap_or_default();
        Self(
            rows.iter()
                .filter_map(|row| {
                    let pid = u32::try_from(row.get::<_, i32>(0)).ok()?;
                    Some((pid, (row.get(1), procfs::cpu_seconds(pid))))
                })
                .collect(),
        )
    }

    /// Splits `postgres` (CPU seconds per 1,000 deliveries, all of
    /// Postgres) by client, from `self` to `after`. A backend that started
    /// in between counts from zero.
    fn split_until(&self, after: &PgBackends, postgres: f64, deliveries: usize) -> PostgresSplit {
        if deliveries == 0 {
            return PostgresSplit::default();
        }
        let used_by = |name: &str| -> f64 {
            let seconds: f64 = after
                .0
                .iter()
                .filter(|(_, (app, _))| app == name)
                .map(|(pid, (_, cpu))| cpu - self.0.get(pid).map_or(0.0, |(_, before)| *before))
                .sum();
            // `+ 0.0`: an empty sum is -0.0, which the JSON would show.
            seconds / deliveries as f64 * 1000.0 + 0.0
        };
        let sender = used_by("herald-sender");
        let ingest = used_by("herald-ingest");
        PostgresSplit {
            sender,
            ingest,
            other: (postgres - sender - ingest).max(0.0),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct CpuSnapshot {
    ingest: f64,
    senders: f64,
    rabbitmq: f64,
    postgres: f64,
    bench: f64,
}

impl CpuSnapshot {
    /// CPU seconds per 1,000 deliveries spent from `self` to `after`.
    pub(crate) fn per_1000_until(&self, after: &CpuSnapshot, deliveries: usize) -> CpuPer1000 {
        let per_1000 = |delta: f64| {
            if deliveries == 0 {
                0.0
            } else {
                delta / deliveries as f64 * 1000.0
            }
        };
        CpuPer1000 {
            ingest: per_1000(after.ingest - self.ingest),
            sender: per_1000(after.senders - self.senders),
            rabbitmq: per_1000(after.rabbitmq - self.rabbitmq),
            postgres: per_1000(after.postgres - self.postgres),
            bench: per_1000(after.bench - self.bench),
        }
    }
}

/// Empties the work queue of a Fire-only case, so that later cases deliver
/// only what they fired.
async fn purge_work_queue(env: &Env) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(
            env.topology()?.work_queue().as_str().into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .context("purging the work queue")?;
    let _ = connection.close(200, "purged".into()).await;
    Ok(())
}

pub(crate) fn cpu_snapshot(ingest: u32, senders: &[u32]) -> CpuSnapshot {
    CpuSnapshot {
        ingest: procfs::cpu_seconds(ingest),
        senders: senders.iter().map(|p| procfs::cpu_seconds(*p)).sum(),
        rabbitmq: procfs::group_cpu_seconds("beam.smp"),
        postgres: procfs::group_cpu_seconds("postgres"),
        bench: procfs::cpu_seconds(std::process::id()),
    }
}

async fn count_rows(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM delivery_attempts", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or(0)
}

/// The JSON door's answer to Fire.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonFired {
    delivery_ids: Vec<String>,
}

/// Runs one case to completion (or `timeout`).
pub async fn run_case(
    env: &Env,
    ingest: &Ingest,
    receiver: &Receiver,
    db: &tokio_postgres::Client,
    spec: CaseSpec,
    payload: &str,
    timeout: Duration,
) -> anyhow::Result<CaseResult> {
    let wall = Instant::now();
    let expected = spec.events * spec.webhooks;
    let _ = receiver.take();
    let rows_before = count_rows(db).await;
    let mut senders = Vec::new();
    let prefetch = spec.prefetch;
    let start_senders = |n: usize| {
        let env = env.clone();
        let name = spec.name.clone();
        async move {
            let mut started = Vec::new();
            let starting: Vec<_> = (0..n)
                .map(|i| {
                    let env = env.clone();
                    let name = format!("{name}-sender{i}");
                    tokio::spawn(async move { start_sender(&env, &name, prefetch).await })
                })
                .collect();
            for s in starting {
                started.push(s.await??);
            }
            Ok::<_, anyhow::Error>(started)
        }
    };
    if !spec.backlog {
        senders = start_senders(spec.senders).await?;
    }
    let mut pids: Vec<u32> = senders.iter().map(Proc::pid).collect();
    let ingest_pid = ingest.proc.pid();
    let mut cpu_before = cpu_snapshot(ingest_pid, &pids);
    let mut pg_before = PgBackends::now(db).await;

    // Fire.
    let fired: Arc<Mutex<HashMap<Uuid, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(expected)));
    let client = ingest.ingest.clone();
    let event = spec.event.clone();
    let payload = payload.to_owned();
    let record = fired.clone();
    let door = spec.door;
    let ordering_keys = spec.ordering_keys;
    let json_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let json_uri = format!("http://{}/v1/fire", ingest.addr);
    // The same request in the canonical JSON mapping, encoded once as a
    // client would keep a template.
    let json_body = Bytes::from(serde_json::json!({"event": event, "json": payload}).to_string());
    let op = move |i: usize, t0: Instant| {
        // Only the chosen door's request is built: the bench's own CPU is
        // part of what each case measures.
        let call = match door {
            Door::Grpc => {
                let mut client = client.clone();
                let request = FireRequest {
                    ordering_key: ordering_keys
                        .map(|keys| format!("k{}", i % keys))
                        .unwrap_or_default(),
                    tenant: String::new(),
                    event: event.clone(),
                    data: Some(fire_request::Data::Json(payload.clone())),
                    idempotency_key: String::new(),
                };
                futures_util::future::Either::Left(async move {
                    anyhow::Ok(client.fire(request).await?.into_inner().delivery_ids)
                })
            }
            Door::Json => {
                let json_client = json_client.clone();
                let request = hyper::Request::post(json_uri.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(json_body.clone()));
                futures_util::future::Either::Right(async move {
                    let response = json_client.request(request?).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(
                        status.is_success(),
                        "JSON Fire: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                    Ok(serde_json::from_slice::<JsonFired>(&body)?.delivery_ids)
                })
            }
        };
        let record = record.clone();
        async move {
            let delivery_ids = call.await?;
            let mut map = record.lock().expect("fired");
            for id in delivery_ids {
                map.insert(Uuid::parse_str(&id)?, t0);
            }
            Ok(())
        }
    };
    let first_fire = Instant::now();
    let mut fire = match spec.load {
        Load::Closed { concurrency } => closed_loop(spec.events, concurrency, op).await,
        Load::Open { rate } => open_loop(spec.events, rate, op).await,
    };
    if let Some(e) = &fire.first_error {
        eprintln!("  {}: {} Fire errors, first: {e}", spec.name, fire.errors);
    }
    let expected = fired.lock().expect("fired").len();

    if spec.fire_only() {
        let cpu_after = cpu_snapshot(ingest_pid, &[]);
        let pg_after = PgBackends::now(db).await;
        let cpu = cpu_before.per_1000_until(&cpu_after, expected);
        purge_work_queue(env).await?;
        return Ok(CaseResult {
            deliveries: expected,
            fire_ok: fire.ok(),
            fire_errors: fire.errors,
            fire_first_error: fire.first_error.clone(),
            fire_calls_per_s: fire.rate(),
            fire_latency: fire.summary(),
            received: 0,
            duplicates: 0,
            deliveries_per_s: 0.0,
            e2e_latency: None,
            attempt_rows_per_s: 0.0,
            attempt_rows: 0,
            cpu_s_per_1000: cpu,
            postgres_cpu_s_per_1000_by_client: pg_before.split_until(
                &pg_after,
                cpu.postgres,
                expected,
            ),
            sender_peak_rss_mib: 0.0,
            ingest_peak_rss_mib: procfs::vm_mib(ingest_pid, "VmHWM").unwrap_or(0.0),
            complete: fire.errors == 0,
            wall_s: wall.elapsed().as_secs_f64(),
            spec,
        });
    }

    if spec.backlog {
        cpu_before = cpu_snapshot(ingest_pid, &[]);
        pg_before = PgBackends::now(db).await;
        let fire_cpu = cpu_before;
        senders = start_senders(spec.senders).await?;
        pids = senders.iter().map(Proc::pid).collect();
        // The sender's start-up CPU counts; ingest's Fire work does not.
        cpu_before = CpuSnapshot {
            senders: 0.0,
            ..fire_cpu
        };
    }

    // Wait for every delivery and every attempt row.
    let deadline = Instant::now() + timeout;
    let mut rows_done_at = None;
    let mut rows = 0;
    let complete = loop {
        // Counting rows scans the attempts table, so it waits until the
        // receiver has every delivery: polling it all along would put the
        // bench's own load on Postgres and on the two cores being measured.
        // Rows are committed after the receiver answered, so they cannot
        // be complete earlier.
        if rows_done_at.is_none() && receiver.count() >= expected {
            rows = count_rows(db).await - rows_before;
            if rows >= expected as i64 {
                rows_done_at = Some(Instant::now());
            }
        }
        if rows_done_at.is_some() && receiver.count() >= expected {
            break true;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "  {}: timed out with {} of {expected} received, {rows} rows",
                spec.name,
                receiver.count()
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu_after = cpu_snapshot(ingest_pid, &pids);
    let pg_after = PgBackends::now(db).await;
    let cpu = cpu_before.per_1000_until(&cpu_after, expected);
    let sender_peak_rss_mib = pids
        .iter()
        .filter_map(|p| procfs::vm_mib(*p, "VmHWM"))
        .fold(0.0, f64::max);
    let ingest_peak_rss_mib = procfs::vm_mib(ingest_pid, "VmHWM").unwrap_or(0.0);
    for sender in senders {
        sender.stop(Duration::from_secs(15)).await;
    }

    // Arrivals: the first of each delivery id.
    let arrivals = receiver.take();
    let mut first: HashMap<Uuid, Instant> = HashMap::with_capacity(arrivals.len());
    let mut duplicates = 0;
    for (id, at) in &arrivals {
        match first.entry(*id) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                duplicates += 1;
                if *at < *e.get() {
                    e.insert(*at);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(*at);
            }
        }
    }
    let fired = fired.lock().expect("fired");
    let last_arrival = first.values().max().copied();
    let first_arrival = first.values().min().copied();
    let window_start = if spec.backlog {
        first_arrival.unwrap_or(first_fire)
    } else {
        first_fire
    };
    let window = last_arrival.map_or(Duration::ZERO, |last| last - window_start);
    let e2e_latency = (!spec.backlog).then(|| {
        let mut samples: Vec<Duration> = first
            .iter()
            .filter_map(|(id, at)| Some(at.saturating_duration_since(*fired.get(id)?)))
            .collect();
        Latency::of(&mut samples)
    });
    let rows_window = rows_done_at.map_or(Duration::ZERO, |t| t - window_start);
    Ok(CaseResult {
        deliveries: expected,
        fire_ok: fire.ok(),
        fire_errors: fire.errors,
        fire_first_error: fire.first_error.clone(),
        fire_calls_per_s: fire.rate(),
        fire_latency: fire.summary(),
        received: first.len(),
        duplicates,
        deliveries_per_s: per_second(first.len(), window),
        e2e_latency,
        attempt_rows_per_s: per_second(usize::try_from(rows).unwrap_or(0), rows_window),
        attempt_rows: rows,
        cpu_s_per_1000: cpu,
        postgres_cpu_s_per_1000_by_client: pg_before.split_until(&pg_after, cpu.postgres, expected),
        sender_peak_rss_mib,
        ingest_peak_rss_mib,
        complete,
        wall_s: wall.elapsed().as_secs_f64(),
        spec,
    })
}
