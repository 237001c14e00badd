//! The `herald-ingest` command line ([`IngestArgs`]: every flag, its
//! `HERALD_*` environment variable and its default) and how it becomes an
//! [`IngestConfig`]. The defaults are written here once: `IngestConfig`'s
//! `Default` is these arguments with nothing given.
//!
//! This module may read the files the options name (TLS certificates and
//! keys). It must not install anything process-wide (the metrics recorder,
//! logging) or bind sockets: `main.rs` does that.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_core::Secret;
use herald_service::{Command, CommonOptions};

use crate::{AuthMode, BootstrapKey, CorsOrigins, GrpcTls, IngestConfig, TargetPolicy};

/// The options of `herald-ingest`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "herald-ingest",
    version,
    about = "Herald ingest: gRPC Fire and Admin API"
)]
pub struct IngestArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: CommonOptions,
    /// Address the gRPC server listens on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the HTTP endpoint: /healthz, /metrics.
    #[arg(long, env = "HERALD_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Accept `http://` webhook targets (development only; HTTPS otherwise).
    #[arg(long, env = "HERALD_ALLOW_HTTP", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_http: bool,
    /// Largest `data` a Fire call may carry, in bytes. Ingest reads requests
    /// of up to 4 × this + 64 KiB and answers larger data with its size; a
    /// request over that cap is refused unread.
    #[arg(long, env = "HERALD_MAX_PAYLOAD_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub max_payload_bytes: u64,
    /// Whether gRPC calls need an API key: required, or disabled
    /// (development and local benchmarks only; logs a warning).
    #[arg(long, env = "HERALD_AUTH", value_enum, default_value = "required")]
    pub auth: AuthMode,
    /// Bootstrap admin key (at least 16 characters): an API key with every
    /// scope for every tenant that needs no database row, to create the
    /// first keys. Never logged.
    #[arg(long, env = "HERALD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<Secret<String>>,
    /// PEM certificate chain: serve gRPC over TLS (with --grpc-tls-key).
    #[arg(long, env = "HERALD_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "HERALD_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require every client to present a certificate
    /// signed by one of them (mutual TLS). Needs --grpc-tls-cert.
    #[arg(long, env = "HERALD_GRPC_TLS_CLIENT_CA", requires = "grpc_tls_cert")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Hours a Fire idempotency key is remembered: a repeat within them
    /// answers the first call's delivery ids and sends nothing new.
    #[arg(long, env = "HERALD_IDEMPOTENCY_WINDOW_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u32).range(1..=720))]
    pub idempotency_window_hours: u32,
    /// Browser origins that may call the JSON door and gRPC-Web from
    /// another site (CORS): `*`, or a comma-separated list such as
    /// `https://admin.shop.example`. Unset: no CORS headers, so browsers
    /// allow same-origin pages only. The API key is needed either way.
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_parser = CorsOrigins::parse)]
    pub cors_origins: Option<CorsOrigins>,
    /// AMQP channels Fire publishes on (one connection). Concurrent calls
    /// share them and each awaits its own confirm; see docs/performance.md
    /// for why the default is what it is.
    #[arg(long, env = "HERALD_PUBLISH_CHANNELS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub publish_channels: u16,
    /// Postgres URL of a read replica (a streaming standby of the primary):
    /// the delivery-log reads of the Admin API (GetDelivery, ListDeliveries,
    /// GetWebhookSummary) go there, with the pool size of the primary's;
    /// configuration, writes and idempotency stay on the primary. A delivery
    /// the replica does not have yet is looked up on the primary, and an
    /// unreachable replica means reading the primary. Unset or empty: every
    /// read goes to the primary. Never logged.
    #[arg(long, env = "HERALD_READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<Secret<String>>,
}

/// Why the options do not make a configuration. Each variant names the
/// setting to fix; none repeats a key's value.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("HERALD_AMQP_URL is not usable")]
    AmqpUrl(#[source] herald_queue::QueueError),
    #[error("HERALD_ADMIN_KEY is not a valid bootstrap key")]
    AdminKey(#[source] herald_core::ValidationError),
    #[error("HERALD_ENCRYPTION_KEY is not a valid key")]
    EncryptionKey(#[source] herald_store::SecretBoxError),
    #[error("HERALD_MAX_PAYLOAD_BYTES does not fit this platform's memory")]
    PayloadTooLarge(#[source] std::num::TryFromIntError),
    #[error("reading {setting} {}", path.display())]
    ReadFile {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl IngestConfig {
    /// The configuration the options describe: reads the TLS files they
    /// name and validates the keys. `metrics` stays `None`; the binary
    /// installs the recorder.
    pub fn from_args(args: &IngestArgs) -> Result<IngestConfig, ArgsError> {
        let common = &args.common;
        Ok(IngestConfig {
            database_url: common.database_url.clone(),
            db_pool_size: usize::from(common.db_pool_size),
            queue: common.queue_config().map_err(ArgsError::AmqpUrl)?,
            max_payload_bytes: usize::try_from(args.max_payload_bytes)
                .map_err(ArgsError::PayloadTooLarge)?,
            config_refresh: common.config_refresh(),
            publish_channels: usize::from(args.publish_channels),
            drain_timeout: common.drain_timeout(),
            metrics: None,
            targets: TargetPolicy {
                allow_http: args.allow_http,
                addresses: common.ssrf_allow.clone(),
            },
            secrets: common.secret_box().map_err(ArgsError::EncryptionKey)?,
            auth: args.auth,
            // An empty variable (a compose file's `${HERALD_ADMIN_KEY:-}`)
            // means none.
            admin_key: match args.admin_key.as_ref().map(|key| key.expose().as_str()) {
                Some(key) if !key.is_empty() => {
                    Some(BootstrapKey::new(key).map_err(ArgsError::AdminKey)?)
                }
                _ => None,
            },
            tls: grpc_tls(args)?,
            idempotency_window: Duration::from_secs(
                u64::from(args.idempotency_window_hours) * 3600,
            ),
            // Empty means none, as for the admin key.
            read_database_url: args
                .read_database_url
                .clone()
                .filter(|url| !url.expose().is_empty()),
            cors: args.cors_origins.clone(),
        })
    }
}

impl Default for IngestConfig {
    /// The configuration of `herald-ingest` started with no option and no
    /// `HERALD_*` variable.
    fn default() -> Self {
        IngestConfig::from_args(&herald_service::defaults::<IngestArgs>())
            .expect("the default options make a configuration")
    }
}

/// Reads the TLS files of the gRPC listener, if configured.
fn grpc_tls(args: &IngestArgs) -> Result<Option<GrpcTls>, ArgsError> {
    let read = |path: &Path, setting: &'static str| {
        std::fs::read(path).map_err(|source| ArgsError::ReadFile {
            setting,
            path: path.to_owned(),
            source,
        })
    };
    let (Some(cert), Some(key)) = (&args.grpc_tls_cert, &args.grpc_tls_key) else {
        return Ok(None);
    };
    Ok(Some(GrpcTls {
        cert_pem: read(cert, "HERALD_GRPC_TLS_CERT")?,
        key_pem: read(key, "HERALD_GRPC_TLS_KEY")?,
        client_ca_pem: args
            .grpc_tls_client_ca
            .as_deref()
            .map(|ca| read(ca, "HERALD_GRPC_TLS_CLIENT_CA"))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_are_the_declared_ones() {
        let config = IngestConfig::default();
        assert_eq!(config.db_pool_size, 8);
        assert_eq!(
            config.max_payload_bytes,
            herald_core::payload::DEFAULT_MAX_PAYLOAD_BYTES
        );
        assert_eq!(config.config_refresh, Duration::from_secs(5));
        assert_eq!(config.publish_channels, 1);
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert!(!config.targets.allow_http);
        // Secure by default.
        assert_eq!(config.auth, AuthMode::Required);
        assert!(config.admin_key.is_none());
        assert!(config.tls.is_none());
        assert_eq!(config.idempotency_window, Duration::from_secs(24 * 3600));
        assert_eq!(config.queue.prefix, herald_queue::DEFAULT_QUEUE_PREFIX);
        assert!(config.metrics.is_none());
        assert!(config.read_database_url.is_none());
    }

    #[test]
    fn an_empty_read_database_url_means_none() {
        let mut args = herald_service::defaults::<IngestArgs>();
        args.read_database_url = Some(Secret::from(""));
        assert!(
            IngestConfig::from_args(&args)
                .unwrap()
                .read_database_url
                .is_none()
        );
        args.read_database_url = Some(Secret::from("postgres://replica/herald"));
        let config = IngestConfig::from_args(&args).unwrap();
        assert_eq!(
            config
                .read_database_url
                .as_ref()
                .map(|url| url.expose().as_str()),
            Some("postgres://replica/herald")
        );
    }

    #[test]
    fn auth_lists_its_values_and_parses_them() {
        let args = IngestArgs::try_parse_from(["herald-ingest", "--auth", "disabled"]).unwrap();
        assert_eq!(args.auth, AuthMode::Disabled);
        assert!(IngestArgs::try_parse_from(["herald-ingest", "--auth", "off"]).is_err());
    }

    #[test]
    fn an_empty_admin_key_means_none_and_a_short_one_is_refused() {
        let mut args = herald_service::defaults::<IngestArgs>();
        args.admin_key = Some(Secret::from(""));
        assert!(IngestConfig::from_args(&args).unwrap().admin_key.is_none());
        args.admin_key = Some(Secret::from("short"));
        assert!(matches!(
            IngestConfig::from_args(&args),
            Err(ArgsError::AdminKey(_))
        ));
    }

    #[test]
    fn debug_of_the_config_hides_passwords_and_keys() {
        let args = IngestArgs::try_parse_from([
            "herald-ingest",
            "--database-url",
            "postgres://herald:pg-hunter2@db/herald",
            "--amqp-url",
            "amqp://herald:mq-hunter2@broker/%2f",
            "--admin-key",
            "admin-key-hunter2-0123456789",
            "--read-database-url",
            "postgres://herald:replica-hunter2@replica/herald",
        ])
        .unwrap();
        assert!(!format!("{args:?}").contains("hunter2"), "{args:?}");
        let config = IngestConfig::from_args(&args).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn a_missing_tls_file_names_its_setting() {
        let args = IngestArgs::try_parse_from([
            "herald-ingest",
            "--grpc-tls-cert",
            "/nonexistent/cert.pem",
            "--grpc-tls-key",
            "/nonexistent/key.pem",
        ])
        .unwrap();
        let error = IngestConfig::from_args(&args).unwrap_err();
        assert!(
            error.to_string().contains("HERALD_GRPC_TLS_CERT"),
            "{error}"
        );
    }
}
