//! The ingest service: `Ingest.Fire` and `Ingest.ListEvents` for shop
//! back-ends, and the `Admin` API that configures webhooks.
//!
//! Fire validates against the cached configuration, publishes one delivery
//! per enabled webhook with publisher confirms and answers only once every
//! confirm arrived; it never waits for a target. Without an idempotency key
//! it never touches Postgres, so it keeps working while Postgres is briefly
//! down; with a key it records the key and its delivery ids in one Postgres
//! transaction (and answers UNAVAILABLE while Postgres is down). This crate
//! must not send HTTP requests or record attempts: that is the sender's job.
//! It reads the webhooks' circuit breakers (`breakers`) and never changes
//! them: the senders own them.

mod admin;
mod api_keys;
mod args;
mod auth;
mod breakers;
mod convert;
mod cors;
mod delivery_log;
mod ingest;
pub mod json_door;
pub mod openapi;
mod ordering;
mod reads;
mod request_size;
mod scheduled;
mod traces;

use std::time::Duration;

use herald_core::Secret;
use herald_proto::v1::{admin_server::AdminServer, ingest_server::IngestServer};
use herald_queue::{Publisher, QueueConfig};
use herald_service::http::Reply;
use herald_store::{ApiKeyCache, ConfigCache, SecretBox, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{AdminService, TargetPolicy};
pub use args::{ArgsError, IngestArgs};
pub use auth::{AuthMode, BootstrapKey, GrpcTls, Principal};
pub use cors::CorsOrigins;
pub use ingest::IngestService;
pub use request_size::max_request_bytes;

/// Everything the ingest service needs to run. Its defaults are those of
/// [`IngestArgs`]: `IngestConfig::default()` or [`IngestConfig::from_args`].
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// May hold a password: `Debug` prints it redacted.
    pub database_url: Secret<String>,
    pub db_pool_size: usize,
    pub queue: QueueConfig,
    /// Largest `data` a Fire call may carry.
    pub max_payload_bytes: usize,
    /// Safety-net reload interval of the configuration cache.
    pub config_refresh: Duration,
    /// Channels of the publishing connection. One is the fastest on a
    /// quorum queue: the broker confirms a channel's publishes in larger
    /// groups (`multiple`), so fewer frames and wake-ups per Fire
    /// (docs/performance.md, item 6).
    pub publish_channels: usize,
    /// How long shutdown waits for calls in flight.
    pub drain_timeout: Duration,
    /// Renders `/metrics`; `None` when no recorder is installed (tests).
    pub metrics: Option<PrometheusHandle>,
    /// What webhook targets may be saved (HTTPS only, SSRF allowlist).
    pub targets: TargetPolicy,
    /// Seals secret header values and signing secrets at rest.
    pub secrets: SecretBox,
    /// Whether calls need an API key (docs/api.md, "Authentication").
    pub auth: AuthMode,
    /// The admin key from configuration, which works without any key in
    /// the database (to create the first ones).
    pub admin_key: Option<BootstrapKey>,
    /// TLS (and optionally client certificates) for the gRPC listener;
    /// `None` serves plaintext gRPC.
    pub tls: Option<GrpcTls>,
    /// How long a Fire idempotency key is remembered.
    pub idempotency_window: Duration,
    /// A read replica for the delivery log; `None` reads the primary. May
    /// hold a password: `Debug` prints it redacted.
    pub read_database_url: Option<Secret<String>>,
    /// Browser origins allowed to call the JSON door and gRPC-Web from
    /// another site; `None` sends no CORS headers.
    pub cors: Option<CorsOrigins>,
}

impl IngestConfig {
    /// The default configuration (see [`IngestArgs`]) with this database
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
pub enum IngestError {
    #[error("configuration store")]
    Store(#[from] herald_store::StoreError),
    #[error("gRPC server")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection set-up")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC TLS set-up (check HERALD_GRPC_TLS_CERT, _KEY and _CLIENT_CA)")]
    Tls(#[source] tonic::transport::Error),
}

/// Runs ingest on `listener` (gRPC) and `http` (health and metrics) until
/// `shutdown` is cancelled, then stops accepting calls, answers those in
/// flight (up to the drain timeout) and returns.
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    herald_store::migrate(config.database_url.expose()).await?;
    let pool = herald_store::pool(config.database_url.expose(), config.db_pool_size)?;
    let store = Store::new(pool).with_secrets(config.secrets.clone());
    let cache = ConfigCache::start(
        store.clone(),
        config.database_url.expose(),
        config.config_refresh,
        shutdown.child_token(),
    )
    .await?;
    let api_keys = ApiKeyCache::start(
        store.clone(),
        config.database_url.expose(),
        config.config_refresh,
        shutdown.child_token(),
    )
    .await?;
    let authenticator = auth_at_start(&config, api_keys.clone());
    let reads = match &config.read_database_url {
        // Its own pool of the same size: the log reads it takes off the
        // primary are the ones that used the primary's pool before. No
        // migration: a standby is read-only and replays the primary's.
        Some(url) => {
            let replica = Store::new(herald_store::pool(url.expose(), config.db_pool_size)?)
                .with_secrets(config.secrets.clone());
            tracing::info!("delivery-log reads go to the read replica (HERALD_READ_DATABASE_URL)");
            reads::LogReads::with_replica(store.clone(), replica)
        }
        None => reads::LogReads::primary(store.clone()),
    };
    reads.spawn_lag_poll(shutdown.child_token());

    let publisher = Publisher::new(
        config.queue.clone(),
        "herald-ingest",
        config.publish_channels,
    );
    // Connect eagerly so that the topology exists before the first Fire; a
    // broker that is down now only means Fire answers UNAVAILABLE until it
    // is back.
    if let Err(e) = publisher.ensure_connected().await {
        tracing::warn!(error = %e, "broker not reachable at start-up; Fire will retry on each call");
    }

    // Stopped only after the server: calls still draining log their
    // deliveries too.
    let log_stop = CancellationToken::new();
    let (log, log_done) = herald_store::ScheduledLog::start(
        store.pool().clone(),
        herald_store::ScheduledLogConfig::default(),
        log_stop.clone(),
    );
    let ingest = IngestService::new(
        cache.clone(),
        publisher.clone(),
        config.max_payload_bytes,
        herald_store::FireKeys::new(store.pool().clone(), config.idempotency_window),
        log.clone(),
        breakers::OpenBreakers::start(
            herald_store::HealthStore::new(store.pool().clone()),
            shutdown.child_token(),
        ),
    );
    let admin = AdminService::new(store, cache, publisher.clone(), config.targets.clone(), log)
        .with_max_payload_bytes(config.max_payload_bytes)
        .with_api_keys(api_keys)
        .with_reads(reads);
    // A hard cap well above the payload limit, so that Herald's own check
    // (with the data's size and HERALD_MAX_PAYLOAD_BYTES) answers every
    // request up to it; see `request_size`.
    let max_message = max_request_bytes(config.max_payload_bytes);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(herald_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both reflection versions: older grpcurl and IDE clients only speak v1alpha.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    if let Some(http) = http {
        let metrics = config.metrics.clone();
        tokio::spawn(herald_service::http::serve(
            http,
            move |path: String| {
                let metrics = metrics.clone();
                async move { http_route(&path, metrics.as_ref()) }
            },
            shutdown.clone(),
        ));
    }

    let address = listener.local_addr().ok();
    tracing::info!(
        ?address,
        tls = config.tls.is_some(),
        client_certificates = config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_pem.is_some()),
        "ingest listening"
    );
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IngestServer::new(ingest).max_decoding_message_size(max_message))
        .add_service(AdminServer::new(admin).max_decoding_message_size(max_message))
        .prepare();
    let max_payload_bytes = config.max_payload_bytes;
    // HTTP/1.1 besides HTTP/2: the JSON door and gRPC-Web callers
    // (browsers, PHP's curl) speak it; gRPC clients keep HTTP/2.
    let mut builder = tonic::transport::Server::builder().accept_http1(true);
    if config.queue.tracing.is_on() {
        builder = builder.trace_fn(traces::call_span);
    }
    if let Some(tls) = &config.tls {
        // tonic applies the TLS acceptor to a caller's incoming stream too,
        // so TCP_NODELAY below and TLS combine.
        builder = builder
            .tls_config(tls.server_config())
            .map_err(IngestError::Tls)?;
    }
    let server = builder.serve_with_incoming_shutdown(
        // Every call is authenticated before it reaches a service (health
        // and reflection excepted); a JSON call is transcoded into the gRPC
        // call it names and goes through the same authentication.
        // gRPC-Web is translated in front of the gRPC services only: its
        // layer refuses any other HTTP/1.1 request, the JSON door's too.
        // tonic refuses a request over the cap in its own words; Herald's
        // name the setting that raises the cap. Reworded right at the
        // services, so that gRPC-Web and the JSON door carry the same words.
        json_door::router(
            tower::Layer::layer(
                &tonic_web::GrpcWebLayer::new(),
                tower::util::MapResponse::new(
                    auth::Authenticate::new(routes, authenticator),
                    move |response| {
                        request_size::reword_too_large(response, max_message, max_payload_bytes)
                    },
                ),
            ),
            max_message.saturating_mul(2),
            config.cors.as_ref().map(CorsOrigins::layer),
        ),
        // TCP_NODELAY: tonic ignores `Server::tcp_nodelay` for a caller's
        // incoming stream, and with Nagle a response's last frame waits
        // for the client's delayed ACK, which dominated the p99 latency at
        // any load (docs/performance.md, item 1).
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        shutdown.clone().cancelled_owned(),
    );
    // Calls in flight get the drain timeout to finish once shutdown began.
    let drain_timeout = config.drain_timeout;
    let deadline = async {
        shutdown.cancelled().await;
        health
            .set_not_serving::<IngestServer<IngestService>>()
            .await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!(?drain_timeout, "drain timeout: calls still in flight are dropped"),
    }
    publisher.manager().close().await;
    log_stop.cancel();
    let _ = log_done.await;
    tracing::info!("ingest stopped");
    Ok(())
}

/// The authenticator for `config`, with a warning where the configuration
/// leaves the API open or closed to everybody.
fn auth_at_start(config: &IngestConfig, api_keys: ApiKeyCache) -> auth::Authenticator {
    match config.auth {
        AuthMode::Disabled => tracing::warn!(
            "authentication is DISABLED (HERALD_AUTH=disabled): anybody who can reach the gRPC \
             port can fire events and change webhooks; use this only for local development"
        ),
        AuthMode::Required if config.admin_key.is_none() && api_keys.is_empty() => tracing::warn!(
            "authentication is required but there is no API key yet and no bootstrap admin key: \
             every call will be refused; set HERALD_ADMIN_KEY to create the first keys"
        ),
        AuthMode::Required => tracing::info!(
            api_keys = api_keys.len(),
            bootstrap_admin_key = config.admin_key.is_some(),
            "authentication required"
        ),
    }
    auth::Authenticator::new(config.auth, config.admin_key.clone(), api_keys)
}

fn http_route(path: &str, metrics: Option<&PrometheusHandle>) -> Reply {
    match (path, metrics) {
        ("/healthz", _) => Reply::text(200, "ok\n"),
        ("/metrics", Some(handle)) => Reply::metrics(handle.render()),
        _ => Reply::text(404, "not found\n"),
    }
}
