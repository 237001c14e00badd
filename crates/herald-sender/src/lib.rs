//! The sender service: consumes deliveries from the work queue, sends each
//! one's HTTP request with the webhook's *current* configuration, records the
//! attempt in Postgres, and carries out what herald-core's retry decision
//! (`herald_core::retry::decide`) says follows: a retry in a delay queue, a
//! park, final success or failure. Ordered deliveries come from the
//! partition queues instead and run one at a time per key (`ordered`),
//! their retries waiting in the sender with the message unacked.
//!
//! Guarantee: a delivery message is acked only after its attempt row is
//! committed and its retry (if any) confirmed by the broker. A crash anywhere
//! in between repeats the attempt (same delivery id) and never loses it.
//! A message no sender can ever finish (undecodable, invalid, or with a
//! record Postgres refuses as data) is acked only once the broker confirmed
//! it in the dead-letter queue.
//! This crate must not accept Fire calls or change webhook configuration,
//! nor decide on its own whether or when a delivery is retried.

mod acks;
mod args;
mod breaker;
mod client;
mod consume;
pub mod header_case;
mod limits;
mod operational;
mod ordered;
mod process;
mod rate;
mod request;
pub mod resolver;
mod stats;
mod traces;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use herald_core::Secret;
use herald_core::ssrf::AddressPolicy;
use herald_queue::{Publisher, QueueConfig};
use herald_service::http::Reply;
use herald_store::{AttemptWriter, ConfigCache, RetentionPolicy, SecretBox, Store, WriterConfig};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::args::{ArgsError, SenderArgs};
pub use crate::breaker::AutoDisable;
pub use crate::client::{AttemptOutcome, EXCERPT_BYTES, HttpSender, TlsSetupError, tls_config};
pub use crate::header_case::WrittenHeaderName;
pub use crate::request::DeliveryInfo;

/// The delivery-id header of webhooks that name none (Standard Webhooks').
pub const DEFAULT_ID_HEADER: &str = "webhook-id";
/// The attempt-number header.
pub const DEFAULT_ATTEMPT_HEADER: &str = "webhook-attempt";

/// Everything the sender needs to run. Its defaults are those of
/// [`SenderArgs`]: `SenderConfig::default()` or [`SenderConfig::from_args`].
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// May hold a password: `Debug` prints it redacted.
    pub database_url: Secret<String>,
    pub db_pool_size: usize,
    pub queue: QueueConfig,
    /// Deliveries taken from the broker at once (AMQP prefetch); each is
    /// processed concurrently, so this also bounds the work in flight.
    /// Split over the work queues' consumers, each getting its share
    /// rounded up (`consume`).
    pub prefetch: u16,
    /// Messages each ordered partition's consumer holds at once.
    pub ordered_prefetch: u16,
    /// Header carrying the delivery id, the same on every attempt, for
    /// webhooks that do not name their own (sent as written over HTTP/1.1).
    pub id_header: WrittenHeaderName,
    /// Header carrying the 1-based attempt number.
    pub attempt_header: WrittenHeaderName,
    /// Extra PEM CA bundle trusted besides the platform's roots.
    pub extra_ca_file: Option<PathBuf>,
    pub config_refresh: Duration,
    /// Rows per Postgres write batch, and concurrent batch writers.
    pub writer: WriterConfig,
    /// How long shutdown waits for deliveries in flight.
    pub drain_timeout: Duration,
    /// Name of this sender in broker connection names and logs.
    pub name: String,
    /// Renders `/metrics`; `None` when no recorder is installed (tests).
    pub metrics: Option<PrometheusHandle>,
    /// Internal addresses targets may nevertheless use (SSRF allowlist).
    pub addresses: AddressPolicy,
    /// Opens the sealed secret headers and signing secrets.
    pub secrets: SecretBox,
    /// What the periodic retention run removes (zero durations keep forever).
    pub retention: RetentionPolicy,
    /// Time between two retention runs.
    pub retention_interval: Duration,
    /// Requests in flight to one webhook at most (per sender); further
    /// deliveries to it are parked so that a slow target cannot block others.
    pub max_in_flight_per_webhook: usize,
    /// How long a webhook at its limit may go without progress before its
    /// waiting deliveries are parked.
    pub park_after: Duration,
    /// The rate limit of webhooks that have none of their own; `None` = no
    /// limit.
    pub default_rate_limit: Option<herald_core::RateLimit>,
    /// The circuit breaker of webhooks without settings of their own.
    pub breaker: herald_core::breaker::BreakerPolicy,
    /// When Herald disables a failing or gone webhook.
    pub auto_disable: AutoDisable,
}

impl SenderConfig {
    /// The default configuration (see [`SenderArgs`]) with this database
    /// and broker; tests start from it.
    pub fn new(database_url: impl Into<Secret<String>>, queue: QueueConfig) -> Self {
        Self {
            database_url: database_url.into(),
            queue,
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("database")]
    Store(#[from] herald_store::StoreError),
    #[error("TLS set-up")]
    Tls(#[from] TlsSetupError),
}

/// What every delivery task shares.
pub(crate) struct Shared {
    /// True while a consumer is attached to the work queue (readiness).
    pub consuming: AtomicBool,
    pub cache: ConfigCache,
    pub writer: AttemptWriter,
    /// Writes the records of ordered deliveries without lingering: a key's
    /// next delivery waits for this one's commit, so a linger would be
    /// paid once per delivery in a row (docs/ordering.md).
    pub ordered_writer: AttemptWriter,
    /// Publishes what follows an attempt back to the broker: retries to
    /// their delay queue, parked deliveries to the parking queue, and
    /// messages no sender can finish to the dead-letter queue.
    pub republisher: Publisher,
    pub client: HttpSender,
    pub limits: limits::WebhookLimits,
    /// Per-webhook rate limits, shared with every sender through Postgres.
    pub rates: rate::RateLimiter,
    /// The limit of webhooks without one of their own.
    pub default_rate_limit: Option<herald_core::RateLimit>,
    /// Circuit breakers: this sender's view of the troubled webhooks.
    pub breakers: Arc<breaker::Breakers>,
    pub stats: stats::Stats,
    /// Stopped keys and redelivered progress, for ordered delivery.
    pub ordering: herald_store::OrderingStore,
}

/// Runs a sender until `shutdown` is cancelled; then it stops consuming,
/// lets deliveries in flight finish (up to the drain timeout), flushes its
/// attempt writes and returns. Unacked deliveries go back to the broker.
/// `http`, if given, serves `/healthz`, `/readyz` and `/metrics`.
pub async fn run(
    config: SenderConfig,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), SenderError> {
    herald_store::migrate(config.database_url.expose()).await?;
    let pool = herald_store::pool(config.database_url.expose(), config.db_pool_size)?;
    let store = Store::new(pool.clone()).with_secrets(config.secrets.clone());
    // Background tasks (cache watcher, writers) stop only after the
    // deliveries that need them have finished.
    let background = CancellationToken::new();
    let cache = ConfigCache::start(
        store,
        config.database_url.expose(),
        config.config_refresh,
        background.clone(),
    )
    .await?;
    let (writer, writer_task) =
        AttemptWriter::start(pool.clone(), config.writer, background.clone());
    let (ordered_writer, ordered_writer_task) = AttemptWriter::start(
        pool.clone(),
        WriterConfig {
            linger: Duration::ZERO,
            writers: 2,
            ..config.writer
        },
        background.clone(),
    );
    // Any number of senders run this; an advisory lock lets one work at a
    // time.
    let retention = herald_store::retention::start(
        pool.clone(),
        config.retention,
        config.retention_interval,
        background.clone(),
    );
    let tls = tls_config(config.extra_ca_file.as_deref())?;
    let sender = HttpSender::new(
        tls,
        config.id_header.clone(),
        config.attempt_header.clone(),
        config.addresses.clone(),
    );
    let republisher = Publisher::new(config.queue.clone(), format!("{}-retry", config.name), 2);
    let shared = Arc::new(Shared {
        consuming: AtomicBool::new(false),
        cache,
        writer,
        ordered_writer,
        republisher: republisher.clone(),
        client: sender,
        limits: limits::WebhookLimits::new(config.max_in_flight_per_webhook, config.park_after),
        rates: rate::RateLimiter::new(herald_store::RateBuckets::new(pool.clone())),
        default_rate_limit: config.default_rate_limit,
        breakers: breaker::Breakers::start(
            herald_store::HealthStore::new(pool.clone()),
            config.breaker,
            config.auto_disable,
            background.clone(),
        ),
        stats: stats::Stats::register(),
        ordering: herald_store::OrderingStore::new(pool.clone()),
    });

    if let Some(listener) = http {
        let probe = Probe {
            shared: shared.clone(),
            pool: pool.clone(),
            metrics: config.metrics.clone(),
        };
        tokio::spawn(herald_service::http::serve(
            listener,
            move |path: String| {
                let probe = probe.clone();
                async move { probe.route(&path).await }
            },
            background.clone(),
        ));
    }

    consume::consume_until_shutdown(&config, shared.clone(), &shutdown).await;

    drop(shared);
    background.cancel();
    let _ = writer_task.await;
    let _ = ordered_writer_task.await;
    let _ = retention.await;
    republisher.manager().close().await;
    tracing::info!("sender stopped");
    Ok(())
}

/// Answers the HTTP probes.
#[derive(Clone)]
struct Probe {
    shared: Arc<Shared>,
    pool: herald_store::Pool,
    metrics: Option<PrometheusHandle>,
}

impl Probe {
    async fn route(&self, path: &str) -> Reply {
        match path {
            "/healthz" => Reply::text(200, "ok\n"),
            "/readyz" => self.ready().await,
            "/metrics" => match &self.metrics {
                Some(handle) => Reply::metrics(handle.render()),
                None => Reply::text(404, "no metrics recorder installed\n"),
            },
            _ => Reply::text(404, "not found\n"),
        }
    }

    /// Ready means: consuming from the broker, and Postgres answers.
    async fn ready(&self) -> Reply {
        if !self.shared.consuming.load(Ordering::Relaxed) {
            return Reply::text(
                503,
                "not consuming: the broker is unreachable or shutting down\n",
            );
        }
        let check = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Some(_)) => Reply::text(200, "ready\n"),
            _ => Reply::text(503, "Postgres is unreachable\n"),
        }
    }
}
