//! `herald-ingest`: runs the ingest gRPC service, or its migrations.

use anyhow::Context;
use clap::Parser;
use herald_ingest::IngestConfig;
use herald_service::{Command, CommonOptions};

#[derive(Debug, Parser)]
#[command(
    name = "herald-ingest",
    version,
    about = "Herald ingest: gRPC Fire and Admin API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonOptions,
    /// Address the gRPC server listens on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:50051")]
    listen: std::net::SocketAddr,
    /// Address of the HTTP endpoint: /healthz, /metrics.
    #[arg(long, env = "HERALD_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: std::net::SocketAddr,
    /// Accept `http://` webhook targets (development only; HTTPS otherwise).
    #[arg(long, env = "HERALD_ALLOW_HTTP", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    allow_http: bool,
    /// Largest `data` a Fire call may carry, in bytes.
    #[arg(long, env = "HERALD_MAX_PAYLOAD_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    max_payload_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(shutdown) = herald_service::start(cli.command, &cli.common)
        .await
        .context("running migrations")?
    else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let mut config = IngestConfig::new(cli.common.database_url.clone(), cli.common.queue_config());
    config.db_pool_size = usize::from(cli.common.db_pool_size);
    config.config_refresh = cli.common.config_refresh();
    config.max_payload_bytes = usize::try_from(cli.max_payload_bytes)?;
    config.drain_timeout = cli.common.drain_timeout();
    config.targets = herald_ingest::TargetPolicy {
        allow_http: cli.allow_http,
        addresses: cli.common.ssrf_allow.clone(),
    };
    config.secrets = cli.common.secret_box().context("HERALD_ENCRYPTION_KEY")?;
    config.metrics =
        Some(herald_service::http::install_prometheus().context("installing metrics")?);
    let metrics = tokio::net::TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("binding {}", cli.metrics_listen))?;
    herald_ingest::run(config, listener, Some(metrics), shutdown)
        .await
        .context("ingest failed")?;
    Ok(())
}
