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
    /// Largest `data` a Fire call may carry, in bytes. Ingest reads requests
    /// of up to 4 × this + 64 KiB and answers larger data with its size; a
    /// request over that cap is refused unread.
    #[arg(long, env = "HERALD_MAX_PAYLOAD_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    max_payload_bytes: u64,
    /// Whether gRPC calls need an API key: required, or disabled
    /// (development and local benchmarks only; logs a warning).
    #[arg(long, env = "HERALD_AUTH", default_value = "required",
          value_parser = ["required", "disabled"])]
    auth: String,
    /// Bootstrap admin key (at least 16 characters): an API key with every
    /// scope for every tenant that needs no database row, to create the
    /// first keys. Never logged.
    #[arg(long, env = "HERALD_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS (with --grpc-tls-key).
    #[arg(long, env = "HERALD_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "HERALD_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<std::path::PathBuf>,
    /// PEM CA certificate(s): require every client to present a certificate
    /// signed by one of them (mutual TLS). Needs --grpc-tls-cert.
    #[arg(long, env = "HERALD_GRPC_TLS_CLIENT_CA", requires = "grpc_tls_cert")]
    grpc_tls_client_ca: Option<std::path::PathBuf>,
    /// Hours a Fire idempotency key is remembered: a repeat within them
    /// answers the first call's delivery ids and sends nothing new.
    #[arg(long, env = "HERALD_IDEMPOTENCY_WINDOW_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u32).range(1..=720))]
    idempotency_window_hours: u32,
    /// AMQP channels Fire publishes on (one connection). Concurrent calls
    /// share them and each awaits its own confirm; see README "Performance"
    /// for why the default is what it is.
    #[arg(long, env = "HERALD_PUBLISH_CHANNELS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    publish_channels: u16,
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
    config.publish_channels = usize::from(cli.publish_channels);
    config.idempotency_window =
        std::time::Duration::from_secs(u64::from(cli.idempotency_window_hours) * 3600);
    config.targets = herald_ingest::TargetPolicy {
        allow_http: cli.allow_http,
        addresses: cli.common.ssrf_allow.clone(),
    };
    config.auth = cli.auth.parse().map_err(anyhow::Error::msg)?;
    // An empty variable (a compose file's `${HERALD_ADMIN_KEY:-}`) means none.
    config.admin_key = match cli.admin_key.as_deref() {
        Some(key) if !key.is_empty() => {
            Some(herald_ingest::BootstrapKey::new(key).context("HERALD_ADMIN_KEY")?)
        }
        _ => None,
    };
    config.tls = grpc_tls(&cli)?;
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

/// Reads the TLS files of the gRPC listener, if configured.
fn grpc_tls(cli: &Cli) -> anyhow::Result<Option<herald_ingest::GrpcTls>> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
    };
    let (Some(cert), Some(key)) = (&cli.grpc_tls_cert, &cli.grpc_tls_key) else {
        return Ok(None);
    };
    Ok(Some(herald_ingest::GrpcTls {
        cert_pem: read(cert, "HERALD_GRPC_TLS_CERT")?,
        key_pem: read(key, "HERALD_GRPC_TLS_KEY")?,
        client_ca_pem: cli
            .grpc_tls_client_ca
            .as_deref()
            .map(|ca| read(ca, "HERALD_GRPC_TLS_CLIENT_CA"))
            .transpose()?,
    }))
}
