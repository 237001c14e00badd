//! `herald-sender`: runs the sender service, or the migrations.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald_sender::{SenderConfig, WrittenHeaderName};
use herald_service::{Command, CommonOptions};
use herald_store::{RetentionPolicy, WriterConfig};

#[derive(Debug, Parser)]
#[command(
    name = "herald-sender",
    version,
    about = "Herald sender: delivers webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonOptions,
    /// Deliveries in flight at once (AMQP prefetch).
    #[arg(long, env = "HERALD_PREFETCH", default_value_t = herald_queue::DEFAULT_PREFETCH,
          value_parser = clap::value_parser!(u16).range(1..))]
    prefetch: u16,
    /// Request header carrying the delivery id (same on every attempt).
    /// Webhooks may name their own (id_header). Sent as written over HTTP/1.1.
    #[arg(long, env = "HERALD_ID_HEADER", default_value = herald_sender::DEFAULT_ID_HEADER)]
    id_header: WrittenHeaderName,
    /// Request header carrying the attempt number (sent as written).
    #[arg(long, env = "HERALD_ATTEMPT_HEADER", default_value = herald_sender::DEFAULT_ATTEMPT_HEADER)]
    attempt_header: WrittenHeaderName,
    /// PEM file of extra CA certificates to trust for HTTPS targets.
    #[arg(long, env = "HERALD_EXTRA_CA_FILE")]
    extra_ca_file: Option<PathBuf>,
    /// Most attempt records per Postgres transaction; best at about the
    /// prefetch divided by the 4 writers (see README "Performance").
    #[arg(long, env = "HERALD_WRITE_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    write_batch: u32,
    /// Milliseconds a writer waits for more attempt records before it writes
    /// a batch that is not full (0: write at once). Only the queue ack waits
    /// for it; fewer, larger batches cost Postgres and the sender less CPU.
    #[arg(long, env = "HERALD_WRITE_LINGER_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    write_linger_ms: u64,
    /// Address of the HTTP endpoint: /healthz, /readyz, /metrics.
    #[arg(long, env = "HERALD_HTTP_LISTEN", default_value = "127.0.0.1:9090")]
    http_listen: std::net::SocketAddr,
    /// Days deliveries and their attempts are kept; 0 keeps them forever.
    #[arg(long, env = "HERALD_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    retention_days: u32,
    /// Days payloads are kept (then set to NULL; the log keeps its rows); 0
    /// keeps them as long as the deliveries. At most --retention-days.
    #[arg(long, env = "HERALD_PAYLOAD_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    payload_retention_days: u32,
    /// Seconds between two retention runs (one sender works at a time).
    #[arg(long, env = "HERALD_RETENTION_INTERVAL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(10..=604_800))]
    retention_interval_secs: u64,
    /// Requests in flight to one webhook at most, per sender. Deliveries
    /// beyond it wait for a slot while the webhook makes progress, and are
    /// parked for 5 s (not an attempt) once it made none for
    /// --park-after-ms, so a hanging target cannot block the others.
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT_PER_WEBHOOK", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_in_flight_per_webhook: u32,
    /// Milliseconds a webhook at its limit may go without a request starting
    /// or finishing before its waiting deliveries are parked.
    #[arg(long, env = "HERALD_PARK_AFTER_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    park_after_ms: u64,
    /// Threads of the sender's async runtime; 0 = one per CPU core. A sender
    /// waits on the network most of the time, so more threads mostly add
    /// wake-ups between them: where it shares few cores with RabbitMQ and
    /// Postgres, 1 costs less CPU per delivery (README "Performance"). Run
    /// more senders to use more cores.
    #[arg(long, env = "HERALD_WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    worker_threads: u16,
}

/// The retention options as a policy. 0 retention days keeps deliveries
/// forever; 0 payload days keeps payloads as long as their deliveries.
fn retention_policy(days: u32, payload_days: u32) -> anyhow::Result<RetentionPolicy> {
    anyhow::ensure!(
        days == 0 || payload_days <= days,
        "--payload-retention-days ({payload_days}) must not be longer than --retention-days \
         ({days})"
    );
    Ok(RetentionPolicy::days(days, payload_days))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if cli.worker_threads > 0 {
        runtime.worker_threads(usize::from(cli.worker_threads));
    }
    runtime
        .build()
        .context("starting the async runtime")?
        .block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let Some(shutdown) = herald_service::start(cli.command, &cli.common)
        .await
        .context("running migrations")?
    else {
        return Ok(());
    };
    let mut config = SenderConfig::new(cli.common.database_url.clone(), cli.common.queue_config());
    config.db_pool_size = usize::from(cli.common.db_pool_size);
    config.config_refresh = cli.common.config_refresh();
    config.prefetch = cli.prefetch;
    config.id_header = cli.id_header;
    config.attempt_header = cli.attempt_header;
    config.extra_ca_file = cli.extra_ca_file;
    config.writer = WriterConfig {
        max_batch: usize::try_from(cli.write_batch)?,
        linger: Duration::from_millis(cli.write_linger_ms),
        ..WriterConfig::default()
    };
    config.drain_timeout = cli.common.drain_timeout();
    config.retention = retention_policy(cli.retention_days, cli.payload_retention_days)?;
    config.retention_interval = Duration::from_secs(cli.retention_interval_secs);
    config.max_in_flight_per_webhook =
        usize::try_from(cli.max_in_flight_per_webhook).context("--max-in-flight-per-webhook")?;
    config.park_after = Duration::from_millis(cli.park_after_ms);
    config.addresses = cli.common.ssrf_allow.clone();
    config.secrets = cli.common.secret_box().context("HERALD_ENCRYPTION_KEY")?;
    config.metrics =
        Some(herald_service::http::install_prometheus().context("installing metrics")?);
    config.name = format!("herald-sender-{}", std::process::id());
    let http = tokio::net::TcpListener::bind(cli.http_listen)
        .await
        .with_context(|| format!("binding {}", cli.http_listen))?;
    herald_sender::run(config, Some(http), shutdown)
        .await
        .context("sender failed")?;
    Ok(())
}
