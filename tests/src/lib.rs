//! Harness for Herald's end-to-end tests: every test gets its own Postgres
//! database and its own RabbitMQ prefix, runs ingest and sender(s) in-process
//! on real connections, and talks to real HTTP receivers on loopback.
//! Everything a test created is removed when its `TestEnv` is dropped, also
//! when the test failed.

pub mod auth;
pub mod cluster;
pub mod load;
pub mod otlp;
pub mod pathological;
pub mod process;
pub mod proxy;
pub mod receiver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use herald_proto::v1::{
    CreateWebhookRequest, FireRequest, Webhook, admin_client::AdminClient, fire_request,
    ingest_client::IngestClient,
};
use herald_queue::{QueueConfig, QueueType};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

pub use proxy::TcpProxy;
pub use receiver::{Received, Receiver, Reply};

/// Where the test Postgres server is (any database on it).
pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn amqp_url() -> String {
    std::env::var("HERALD_TEST_AMQP_URL").unwrap_or_else(|_| herald_queue::DEFAULT_AMQP_URL.into())
}

/// Installs the TLS provider and a quiet log subscriber, once per process.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// One isolated Herald installation.
pub struct TestEnv {
    pub database_url: String,
    database_name: String,
    pub queue: QueueConfig,
    pub shutdown: CancellationToken,
    running: Arc<AtomicUsize>,
    /// Parent of every sender's shutdown token (itself a child of
    /// `shutdown`), so that [`TestEnv::stop`] ends the senders and leaves
    /// ingest running.
    senders_shutdown: CancellationToken,
    /// The senders' tasks, so that [`TestEnv::stop`] can wait for them.
    senders: TaskTracker,
    pub ingest_addr: Option<SocketAddr>,
}

/// A row of `deliveries`, as the tests read it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub state: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub target_url: String,
    pub finished_at: Option<SystemTime>,
    pub next_attempt_at: Option<SystemTime>,
}

/// A row of `delivery_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: i32,
    pub started_at: SystemTime,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub response_excerpt: Option<String>,
}

impl TestEnv {
    /// A fresh database and queue prefix with the given schedule; no
    /// services started yet.
    pub async fn new(schedule: &str) -> anyhow::Result<Self> {
        Self::new_on(schedule, &amqp_url()).await
    }

    /// Like `new`, on the broker (or the cluster: comma-separated URLs of
    /// its nodes) at `amqp_url`.
    pub async fn new_on(schedule: &str, amqp_url: &str) -> anyhow::Result<Self> {
        init();
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let database_name = format!("herald_e2e_{tag}");
        let admin = connect_pg(&postgres_admin_url()).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database_name}"))
            .await
            .context("creating the test database")?;
        let database_url = herald_store::with_database(&postgres_admin_url(), &database_name);
        let mut queue = QueueConfig::new(amqp_url, format!("herald-e2e-{tag}"));
        queue.queue_type = QueueType::Quorum;
        queue.schedule = schedule.parse().context("schedule")?;
        let shutdown = CancellationToken::new();
        Ok(Self {
            database_url,
            database_name,
            queue,
            senders_shutdown: shutdown.child_token(),
            shutdown,
            running: Arc::new(AtomicUsize::new(0)),
            senders: TaskTracker::new(),
            ingest_addr: None,
        })
    }

    /// Same as `new` followed by starting ingest and one sender.
    pub async fn start(schedule: &str) -> anyhow::Result<Self> {
        let mut env = Self::new(schedule).await?;
        env.start_ingest(env.queue.clone(), |_| {}).await?;
        env.start_sender(|_| {}).await?;
        Ok(env)
    }

    pub fn ingest_config(&self, queue: QueueConfig) -> herald_ingest::IngestConfig {
        let mut config = herald_ingest::IngestConfig::new(self.database_url.clone(), queue);
        config.db_pool_size = 4;
        // Test receivers listen on plain HTTP on loopback.
        config.targets = herald_ingest::TargetPolicy {
            allow_http: true,
            addresses: loopback_allowed(),
        };
        config.config_refresh = Duration::from_millis(500);
        // Tests talk to ingest without API keys; tests/tests/auth.rs turns
        // authentication on through `tweak`.
        config.auth = herald_ingest::AuthMode::Disabled;
        config
    }

    /// Starts ingest on a fresh loopback port, publishing through `queue`
    /// (which may point at a proxy), after `tweak` adjusted its config.
    pub async fn start_ingest(
        &mut self,
        queue: QueueConfig,
        tweak: impl FnOnce(&mut herald_ingest::IngestConfig),
    ) -> anyhow::Result<SocketAddr> {
        self.start_ingest_on(queue, None, tweak).await
    }

    /// Like `start_ingest`, with ingest's HTTP endpoint on `http`.
    pub async fn start_ingest_on(
        &mut self,
        queue: QueueConfig,
        http: Option<tokio::net::TcpListener>,
        tweak: impl FnOnce(&mut herald_ingest::IngestConfig),
    ) -> anyhow::Result<SocketAddr> {
        let mut config = self.ingest_config(queue);
        tweak(&mut config);
        let addr = self.spawn_ingest(config, http).await?;
        // Ready once the Admin API answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut admin) = AdminClient::connect(format!("http://{addr}")).await
                && admin
                    .list_webhooks(herald_proto::v1::ListWebhooksRequest::default())
                    .await
                    // With authentication on, a refusal also shows it is up.
                    .map_or_else(|s| s.code() == tonic::Code::Unauthenticated, |_| true)
            {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "ingest did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(addr)
    }

    /// Starts ingest with exactly `config` on a fresh loopback port and
    /// returns without waiting for it to answer: for callers that must reach
    /// it their own way (over TLS, say). It stops with the environment.
    pub async fn spawn_ingest(
        &mut self,
        config: herald_ingest::IngestConfig,
        http: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = self.shutdown.clone();
        let running = self.running.clone();
        running.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = herald_ingest::run(config, listener, http, shutdown).await {
                tracing::error!(error = ?e, "ingest failed");
            }
            running.fetch_sub(1, Ordering::SeqCst);
        });
        self.ingest_addr = Some(addr);
        Ok(addr)
    }

    /// Starts a sender with a short test-friendly config, adjusted by `tweak`.
    /// Returns its own shutdown token (a child of the environment's). A
    /// sender started after [`TestEnv::stop`] stops at once.
    pub async fn start_sender(
        &self,
        tweak: impl FnOnce(&mut herald_sender::SenderConfig),
    ) -> anyhow::Result<CancellationToken> {
        self.start_sender_on(None, tweak).await
    }

    /// Like `start_sender`, with the sender's HTTP endpoint on `http`.
    pub async fn start_sender_on(
        &self,
        http: Option<tokio::net::TcpListener>,
        tweak: impl FnOnce(&mut herald_sender::SenderConfig),
    ) -> anyhow::Result<CancellationToken> {
        let mut config =
            herald_sender::SenderConfig::new(self.database_url.clone(), self.queue.clone());
        config.db_pool_size = 4;
        config.prefetch = 64;
        config.addresses = loopback_allowed();
        config.config_refresh = Duration::from_millis(500);
        config.drain_timeout = Duration::from_secs(5);
        // Many tests fail dozens of first attempts on purpose; the circuit
        // breaker (tests/tests/protection.rs) would park those deliveries
        // for its cool-down. Webhooks that test it set their own threshold.
        config.breaker.failures = std::num::NonZeroU32::new(10_000).expect("not zero");
        config.name = format!(
            "{}-sender-{}",
            self.queue.prefix,
            uuid::Uuid::new_v4().simple()
        );
        tweak(&mut config);
        let shutdown = self.senders_shutdown.child_token();
        let token = shutdown.clone();
        let running = self.running.clone();
        running.fetch_add(1, Ordering::SeqCst);
        self.senders.spawn(async move {
            if let Err(e) = herald_sender::run(config, http, shutdown).await {
                tracing::error!(error = ?e, "sender failed");
            }
            running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(token)
    }

    /// Stops every sender and waits until each has shut down: it stopped
    /// consuming, every delivery it had was settled (acked once its attempt
    /// was stored and its retry or dead letter confirmed, or back in its
    /// queue), its attempt writes were flushed and its broker connection is
    /// closed. From then on nothing more can be sent unless a message still
    /// waits in a queue, so "nothing more arrives" is checked as "the
    /// queues are empty" instead of by waiting a while and counting.
    /// Ingest keeps running.
    pub async fn stop(&self) {
        self.senders_shutdown.cancel();
        self.senders.close();
        // Above the senders' drain timeout (5 s) plus their last writes.
        tokio::time::timeout(Duration::from_secs(30), self.senders.wait())
            .await
            .expect("the senders stop within 30 s");
    }

    fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest_addr.expect("ingest started"))
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::connect(self.ingest_url())
            .await
            .expect("ingest reachable")
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(self.ingest_url())
            .await
            .expect("admin reachable")
    }

    /// Creates an enabled webhook for `event` (default tenant).
    pub async fn webhook(&self, event: &str, method: &str, url: &str) -> Webhook {
        self.admin()
            .await
            .create_webhook(CreateWebhookRequest {
                event: event.into(),
                method: method.into(),
                url: url.into(),
                ..Default::default()
            })
            .await
            .expect("webhook created")
            .into_inner()
    }

    /// Fires JSON data; returns the delivery ids.
    pub async fn fire_json(&self, event: &str, json: &str) -> Vec<String> {
        self.fire(event, fire_request::Data::Json(json.into()))
            .await
    }

    pub async fn fire(&self, event: &str, data: fire_request::Data) -> Vec<String> {
        self.ingest()
            .await
            .fire(FireRequest {
                event: event.into(),
                data: Some(data),
                ..Default::default()
            })
            .await
            .expect("fire ok")
            .into_inner()
            .delivery_ids
    }

    /// The name of the test database.
    pub fn database_name(&self) -> &str {
        &self.database_name
    }

    /// A connection to the test database, or `None` while Postgres is down.
    pub async fn try_db(&self) -> Option<tokio_postgres::Client> {
        connect_pg(&self.database_url).await.ok()
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connect_pg(&self.database_url)
            .await
            .expect("test database reachable")
    }

    /// Rows in `delivery_attempts`: every attempt of this test's deliveries.
    pub async fn attempt_rows(&self) -> i64 {
        self.db()
            .await
            .query_one("SELECT count(*) FROM delivery_attempts", &[])
            .await
            .expect("counting attempt rows")
            .get(0)
    }

    /// The delivery row, if written yet.
    pub async fn delivery(&self, id: &str) -> Option<DeliveryRow> {
        let id: uuid::Uuid = id.parse().expect("uuid");
        let row = self
            .db()
            .await
            .query_opt(
                "SELECT state, attempts, last_status_code, last_error, target_url, finished_at, next_attempt_at \
                 FROM deliveries WHERE id = $1",
                &[&id],
            )
            .await
            .ok()??;
        Some(DeliveryRow {
            state: row.get(0),
            attempts: row.get(1),
            last_status_code: row.get(2),
            last_error: row.get(3),
            target_url: row.get(4),
            finished_at: row.get(5),
            next_attempt_at: row.get(6),
        })
    }

    /// Waits until the delivery reached a final state; panics after `timeout`.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> DeliveryRow {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(row) = self.delivery(id).await
                && !matches!(row.state.as_str(), "scheduled" | "pending")
            {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id} not final after {timeout:?}: {:?}",
                self.delivery(id).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn attempts(&self, id: &str) -> Vec<AttemptRow> {
        let id: uuid::Uuid = id.parse().expect("uuid");
        self.db()
            .await
            .query(
                "SELECT attempt, started_at, duration_ms, status_code, error_kind, error_message, response_excerpt \
                 FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
                &[&id],
            )
            .await
            .expect("attempts query")
            .iter()
            .map(|row| AttemptRow {
                attempt: row.get(0),
                started_at: row.get(1),
                duration_ms: row.get(2),
                status_code: row.get(3),
                error_kind: row.get(4),
                error_message: row.get(5),
                response_excerpt: row.get(6),
            })
            .collect()
    }

    /// Messages waiting in every work queue and every delay queue.
    pub async fn queued_messages(&self) -> u32 {
        let topology = self.queue.topology();
        let mut names = topology.work_queues();
        names.extend(topology.delay_queues());
        self.message_count(&names).await
    }

    /// Messages now in the dead-letter queue.
    pub async fn dead_letter_count(&self) -> u32 {
        self.message_count(&[self.queue.topology().dead_queue()])
            .await
    }

    /// Messages ready in the named queues together (each must exist).
    async fn message_count(&self, names: &[String]) -> u32 {
        let connection = herald_queue::connect(&self.queue, "test-inspect")
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        let mut total = 0;
        for name in names {
            let queue = channel
                .queue_declare(
                    name.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("queue {name} exists: {e}"));
            total += queue.message_count();
        }
        let _ = connection.close(200, "done".into()).await;
        total
    }
}

/// A message taken from the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    /// The `x-herald-dead-reason` header.
    pub reason: Option<String>,
    pub message_id: Option<String>,
}

impl TestEnv {
    /// Takes (and acks) every message now in the dead-letter queue.
    pub async fn take_dead_letters(&self) -> Vec<DeadLetter> {
        let connection = herald_queue::connect(&self.queue, "test-dead-letters")
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        let queue = self.queue.topology().dead_queue();
        let mut letters = Vec::new();
        while let Some(message) = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get on the dead-letter queue")
        {
            let properties = &message.delivery.properties;
            let reason = herald_queue::dead_reason(properties);
            letters.push(DeadLetter {
                body: message.delivery.data.clone(),
                reason,
                message_id: properties.message_id().as_ref().map(|id| id.to_string()),
            });
        }
        let _ = connection.close(200, "done".into()).await;
        letters
    }

    /// Waits until the dead-letter queue holds `n` messages, then takes them.
    pub async fn wait_dead_letters(&self, n: u32, timeout: Duration) -> Vec<DeadLetter> {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.dead_letter_count().await;
            if count >= n {
                return self.take_dead_letters().await;
            }
            assert!(
                Instant::now() < deadline,
                "{count} of {n} dead letters after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestEnv {
    /// Stops the services, then drops the database and the queues. Runs on
    /// its own thread and runtime so it also works while a test panics.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let running = self.running.clone();
        let database_name = self.database_name.clone();
        let queue = self.queue.clone();
        // Services spawned on a current-thread runtime (plain
        // `#[tokio::test]`) cannot run while this drop blocks that thread,
        // so waiting for them to stop would only ever time out; the
        // runtime drops their tasks right after the test instead.
        let wait = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => Duration::ZERO,
            _ => Duration::from_secs(15),
        };
        let cleanup = std::thread::spawn(move || {
            let deadline = Instant::now() + wait;
            while running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async move {
                if let Ok(connection) = herald_queue::connect(&queue, "test-cleanup").await {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = queue.topology().delete(&channel).await;
                    }
                    let _ = connection.close(200, "cleanup".into()).await;
                }
                if let Ok(admin) = connect_pg(&postgres_admin_url()).await {
                    let _ = admin
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS {database_name} WITH (FORCE)"
                        ))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The SSRF allowlist of the tests: loopback only.
pub fn loopback_allowed() -> herald_core::ssrf::AddressPolicy {
    herald_core::ssrf::AddressPolicy::parse_allowlist("127.0.0.0/8").expect("valid allowlist")
}

/// Now, in Unix milliseconds (the API's time fields).
pub fn unix_ms_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

pub async fn connect_pg(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| "connecting to the test Postgres".to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Waits until `condition` holds, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
