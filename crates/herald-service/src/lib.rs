//! Plumbing shared by `herald-ingest` and `herald-sender`: the options both
//! accept (as clap flags with `HERALD_*` environment variables), logging
//! set-up, and the one shutdown token fed by SIGINT/SIGTERM.
//!
//! It must not hold service logic: services are libraries with a thin
//! `main.rs` that uses these helpers.

pub mod http;

use std::time::Duration;

use herald_core::Schedule;
use herald_core::ssrf::AddressPolicy;
use herald_queue::{QueueConfig, QueueType};
use tokio_util::sync::CancellationToken;

/// Options every Herald service takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonOptions {
    /// Postgres connection URL (holds the webhook configuration and the
    /// delivery tables). May contain a password; never logged.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/herald",
        hide_env_values = true
    )]
    pub database_url: String,

    /// RabbitMQ connection URL. May contain a password; never logged.
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        default_value = herald_queue::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// Prefix of every RabbitMQ exchange and queue name.
    #[arg(long, env = "HERALD_QUEUE_PREFIX", default_value = herald_queue::DEFAULT_QUEUE_PREFIX)]
    pub queue_prefix: String,

    /// RabbitMQ queue type: quorum (production) or classic.
    #[arg(long, env = "HERALD_QUEUE_TYPE", default_value = "quorum")]
    pub queue_type: QueueType,

    /// Delays before attempts 1, 2, 3, ... (ms, s, m, h); `0s` first means an
    /// immediate first attempt. Ingest and senders must use the same value.
    #[arg(long, env = "HERALD_SCHEDULE", default_value = "5s,240s,480s")]
    pub schedule: Schedule,

    /// Maximum Postgres connections of this process.
    #[arg(long, env = "HERALD_DB_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub db_pool_size: u16,

    /// How often the configuration cache reloads even without a change
    /// notification (milliseconds).
    #[arg(long, env = "HERALD_CONFIG_REFRESH_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub config_refresh_ms: u64,

    /// Seconds to wait on shutdown for work in flight (Fire calls being
    /// answered, deliveries being sent) before exiting anyway.
    #[arg(long, env = "HERALD_DRAIN_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_timeout_secs: u64,

    /// Comma-separated CIDRs that webhook targets may use although they are
    /// internal (loopback, private, link-local...). Empty: only public
    /// addresses. Ingest and senders should use the same value.
    #[arg(long, env = "HERALD_SSRF_ALLOW", default_value = "",
          value_parser = parse_address_policy)]
    pub ssrf_allow: AddressPolicy,

    /// Base64 of 32 bytes: encrypts secret header values and signing
    /// secrets at rest (AES-256-GCM). Never logged. Ingest and senders need
    /// the same key.
    #[arg(long, env = "HERALD_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,

    /// Log format: text or json.
    #[arg(long, env = "HERALD_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_address_policy(list: &str) -> Result<AddressPolicy, String> {
    AddressPolicy::parse_allowlist(list)
}

impl CommonOptions {
    /// How secrets are sealed at rest; fails on a malformed key.
    pub fn secret_box(&self) -> Result<herald_store::SecretBox, herald_store::SecretBoxError> {
        match &self.encryption_key {
            Some(key) if !key.is_empty() => herald_store::SecretBox::with_key(key),
            _ => Ok(herald_store::SecretBox::plaintext()),
        }
    }

    pub fn queue_config(&self) -> QueueConfig {
        let mut config = QueueConfig::new(&self.amqp_url, &self.queue_prefix);
        config.queue_type = self.queue_type;
        config.schedule = self.schedule.clone();
        config
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn config_refresh(&self) -> Duration {
        Duration::from_millis(self.config_refresh_ms)
    }
}

/// The subcommands both services take.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

/// What both binaries do first: logging, the TLS crypto provider, and the
/// `migrate` subcommand. Returns the shutdown token (fed by SIGINT/SIGTERM)
/// when the service is to run, `None` when the command is done.
pub async fn start(
    command: Option<Command>,
    common: &CommonOptions,
) -> Result<Option<CancellationToken>, herald_store::StoreError> {
    init_logging(&common.log_format);
    // One crypto provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            herald_store::migrate(&common.database_url).await?;
            tracing::info!("migrations applied");
            Ok(None)
        }
        Command::Serve => Ok(Some(shutdown_on_signals())),
    }
}

/// Installs the tracing subscriber (RUST_LOG filters; default `info`).
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}
