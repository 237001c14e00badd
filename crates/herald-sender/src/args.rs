//! The `herald-sender` command line ([`SenderArgs`]: every flag, its
//! `HERALD_*` environment variable and its default) and how it becomes a
//! [`SenderConfig`]. The defaults are written here once: `SenderConfig`'s
//! `Default` is these arguments with nothing given.
//!
//! This module must not install anything process-wide (the metrics
//! recorder, logging, the async runtime) or bind sockets: `main.rs` does
//! that.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_service::{Command, CommonOptions};
use herald_store::{RetentionPolicy, WriterConfig};

use crate::{SenderConfig, WrittenHeaderName};

/// The options of `herald-sender`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "herald-sender",
    version,
    about = "Herald sender: delivers webhooks"
)]
pub struct SenderArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: CommonOptions,
    /// Deliveries in flight at once (AMQP prefetch). With several work
    /// queues each queue's consumer gets prefetch / HERALD_WORK_QUEUES,
    /// rounded up (quorum queues allow no channel-wide prefetch).
    #[arg(long, env = "HERALD_PREFETCH", default_value_t = herald_queue::DEFAULT_PREFETCH,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Messages each ordered partition's consumer holds at once
    /// (docs/ordering.md): keys of one partition run side by side within
    /// this window, so a key with more deliveries than this waiting behind
    /// a failing one holds up the other keys of its partition too.
    #[arg(long, env = "HERALD_ORDERED_PREFETCH", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ordered_prefetch: u16,
    /// Request header carrying the delivery id (same on every attempt).
    /// Webhooks may name their own (id_header). Sent as written over HTTP/1.1.
    #[arg(long, env = "HERALD_ID_HEADER", default_value = crate::DEFAULT_ID_HEADER)]
    pub id_header: WrittenHeaderName,
    /// Request header carrying the attempt number (sent as written).
    #[arg(long, env = "HERALD_ATTEMPT_HEADER", default_value = crate::DEFAULT_ATTEMPT_HEADER)]
    pub attempt_header: WrittenHeaderName,
    /// PEM file of extra CA certificates to trust for HTTPS targets.
    #[arg(long, env = "HERALD_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,
    /// Most attempt records per Postgres transaction; best at about the
    /// prefetch divided by the 4 writers (see docs/performance.md).
    #[arg(long, env = "HERALD_WRITE_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub write_batch: u32,
    /// Milliseconds a writer waits for more attempt records before it writes
    /// a batch that is not full (0: write at once). Only the queue ack waits
    /// for it; fewer, larger batches cost Postgres and the sender less CPU.
    #[arg(long, env = "HERALD_WRITE_LINGER_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub write_linger_ms: u64,
    /// Address of the HTTP endpoint: /healthz, /readyz, /metrics.
    #[arg(long, env = "HERALD_HTTP_LISTEN", default_value = "127.0.0.1:9090")]
    pub http_listen: SocketAddr,
    /// Days deliveries and their attempts are kept; 0 keeps them forever.
    #[arg(long, env = "HERALD_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub retention_days: u32,
    /// Days payloads are kept (then set to NULL; the log keeps its rows); 0
    /// keeps them as long as the deliveries. At most --retention-days.
    #[arg(long, env = "HERALD_PAYLOAD_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub payload_retention_days: u32,
    /// Seconds between two retention runs (one sender works at a time).
    #[arg(long, env = "HERALD_RETENTION_INTERVAL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(10..=604_800))]
    pub retention_interval_secs: u64,
    /// Requests in flight to one webhook at most, per sender. Deliveries
    /// beyond it wait for a slot while the webhook makes progress, and are
    /// parked for 5 s (not an attempt) once it made none for
    /// --park-after-ms, so a hanging target cannot block the others.
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT_PER_WEBHOOK", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight_per_webhook: u32,
    /// Milliseconds a webhook at its limit may go without a request starting
    /// or finishing before its waiting deliveries are parked.
    #[arg(long, env = "HERALD_PARK_AFTER_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub park_after_ms: u64,
    /// Rate limit of webhooks that set none of their own, for the whole
    /// deployment: requests per second, optionally /burst (50 or 50/20);
    /// 0 = no limit (docs/protection.md).
    #[arg(long, env = "HERALD_DEFAULT_RATE_LIMIT", default_value = "0",
          value_name = "PER_SECOND[/BURST]",
          value_parser = herald_core::rate_limit::parse_spec)]
    pub default_rate_limit: (u32, u32),
    /// Consecutive failed attempts (timeouts, connection errors, 5xx, 408,
    /// 429) that open a webhook's circuit breaker, unless the webhook sets
    /// its own (docs/protection.md).
    #[arg(long, env = "HERALD_BREAKER_FAILURES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub breaker_failures: u32,
    /// Milliseconds an open breaker parks a webhook's deliveries before one
    /// probe attempt, unless the webhook sets its own; doubles after each
    /// failed probe.
    #[arg(long, env = "HERALD_BREAKER_COOLDOWN_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub breaker_cooldown_ms: u64,
    /// Longest cool-down the doubling reaches, in milliseconds.
    #[arg(long, env = "HERALD_BREAKER_MAX_COOLDOWN_MS", default_value_t = 600_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub breaker_max_cooldown_ms: u64,
    /// Seconds every attempt of a webhook may fail before Herald disables
    /// it (its pending deliveries are cancelled), unless the webhook sets
    /// its own; 0 = never. Default: 5 days.
    #[arg(long, env = "HERALD_AUTO_DISABLE_AFTER_SECS", default_value_t = 432_000,
          value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub auto_disable_after_secs: u64,
    /// Disable a webhook at once when its receiver answers 410 Gone.
    #[arg(long, env = "HERALD_DISABLE_ON_GONE", default_value_t = true,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_on_gone: bool,
    /// Threads of the sender's async runtime; 0 = one per CPU core. A sender
    /// waits on the network most of the time, so more threads mostly add
    /// wake-ups between them: where it shares few cores with RabbitMQ and
    /// Postgres, 1 costs less CPU per delivery (docs/performance.md). Run
    /// more senders to use more cores.
    #[arg(long, env = "HERALD_WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,
}

/// Why the options do not make a configuration. Each variant names the
/// setting to fix; none repeats a key's value.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("HERALD_AMQP_URL is not usable")]
    AmqpUrl(#[source] herald_queue::QueueError),
    #[error("HERALD_ENCRYPTION_KEY is not a valid key")]
    EncryptionKey(#[source] herald_store::SecretBoxError),
    #[error(
        "--payload-retention-days ({payload_days}) must not be longer than --retention-days \
         ({days})"
    )]
    PayloadRetention { days: u32, payload_days: u32 },
    #[error("HERALD_DEFAULT_RATE_LIMIT: {0}")]
    RateLimit(String),
    #[error("{setting} does not fit this platform's memory")]
    TooLarge {
        setting: &'static str,
        #[source]
        source: std::num::TryFromIntError,
    },
}

impl SenderConfig {
    /// The configuration the options describe. `metrics` stays `None` and
    /// `name` is `herald-sender`; the binary installs the recorder and adds
    /// its process id to the name.
    pub fn from_args(args: &SenderArgs) -> Result<SenderConfig, ArgsError> {
        let common = &args.common;
        let too_large = |setting| move |source| ArgsError::TooLarge { setting, source };
        Ok(SenderConfig {
            database_url: common.database_url.clone(),
            db_pool_size: usize::from(common.db_pool_size),
            queue: common.queue_config().map_err(ArgsError::AmqpUrl)?,
            prefetch: args.prefetch,
            ordered_prefetch: args.ordered_prefetch,
            id_header: args.id_header.clone(),
            attempt_header: args.attempt_header.clone(),
            extra_ca_file: args.extra_ca_file.clone(),
            config_refresh: common.config_refresh(),
            writer: WriterConfig {
                max_batch: usize::try_from(args.write_batch).map_err(too_large("--write-batch"))?,
                linger: Duration::from_millis(args.write_linger_ms),
                ..WriterConfig::default()
            },
            drain_timeout: common.drain_timeout(),
            name: "herald-sender".into(),
            metrics: None,
            addresses: common.ssrf_allow.clone(),
            secrets: common.secret_box().map_err(ArgsError::EncryptionKey)?,
            retention: retention_policy(args.retention_days, args.payload_retention_days)?,
            retention_interval: Duration::from_secs(args.retention_interval_secs),
            max_in_flight_per_webhook: usize::try_from(args.max_in_flight_per_webhook)
                .map_err(too_large("--max-in-flight-per-webhook"))?,
            park_after: Duration::from_millis(args.park_after_ms),
            default_rate_limit: herald_core::RateLimit::parse(
                args.default_rate_limit.0,
                args.default_rate_limit.1,
            )
            .map_err(|e| ArgsError::RateLimit(e.message))?,
            breaker: herald_core::breaker::BreakerPolicy {
                failures: std::num::NonZeroU32::new(args.breaker_failures)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                cooldown: Duration::from_millis(args.breaker_cooldown_ms),
                max_cooldown: Duration::from_millis(args.breaker_max_cooldown_ms),
            },
            auto_disable: crate::AutoDisable {
                after: Duration::from_secs(args.auto_disable_after_secs),
                on_gone: args.disable_on_gone,
            },
        })
    }
}

impl Default for SenderConfig {
    /// The configuration of `herald-sender` started with no option and no
    /// `HERALD_*` variable.
    fn default() -> Self {
        SenderConfig::from_args(&herald_service::defaults::<SenderArgs>())
            .expect("the default options make a configuration")
    }
}

/// The retention options as a policy. 0 retention days keeps deliveries
/// forever; 0 payload days keeps payloads as long as their deliveries.
fn retention_policy(days: u32, payload_days: u32) -> Result<RetentionPolicy, ArgsError> {
    if days != 0 && payload_days > days {
        return Err(ArgsError::PayloadRetention { days, payload_days });
    }
    Ok(RetentionPolicy::days(days, payload_days))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_are_the_declared_ones() {
        let config = SenderConfig::default();
        assert_eq!(config.db_pool_size, 8);
        assert_eq!(config.prefetch, herald_queue::DEFAULT_PREFETCH);
        assert_eq!(config.id_header.as_written(), crate::DEFAULT_ID_HEADER);
        assert_eq!(
            config.attempt_header.as_written(),
            crate::DEFAULT_ATTEMPT_HEADER
        );
        assert!(config.extra_ca_file.is_none());
        assert_eq!(config.config_refresh, Duration::from_secs(5));
        // The store's own defaults agree with the options'.
        assert_eq!(config.writer.max_batch, WriterConfig::default().max_batch);
        assert_eq!(config.writer.linger, WriterConfig::default().linger);
        assert_eq!(config.writer.max_batch, 64);
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert_eq!(config.name, "herald-sender");
        assert_eq!(config.retention, RetentionPolicy::days(30, 7));
        assert_eq!(config.retention_interval, Duration::from_secs(3600));
        assert_eq!(config.max_in_flight_per_webhook, 32);
        assert_eq!(config.park_after, Duration::from_millis(200));
        assert_eq!(
            config.breaker,
            herald_core::breaker::BreakerPolicy::default()
        );
        assert!(config.metrics.is_none());
    }

    #[test]
    fn debug_of_the_config_hides_passwords_and_keys() {
        let args = SenderArgs::try_parse_from([
            "herald-sender",
            "--database-url",
            "postgres://herald:pg-hunter2@db/herald",
            "--amqp-url",
            "amqp://herald:mq-hunter2@broker/%2f",
        ])
        .unwrap();
        assert!(!format!("{args:?}").contains("hunter2"), "{args:?}");
        let config = SenderConfig::from_args(&args).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn payload_retention_may_not_outlast_the_deliveries() {
        let args = SenderArgs::try_parse_from([
            "herald-sender",
            "--retention-days",
            "3",
            "--payload-retention-days",
            "7",
        ])
        .unwrap();
        let error = SenderConfig::from_args(&args).unwrap_err();
        assert!(matches!(
            error,
            ArgsError::PayloadRetention {
                days: 3,
                payload_days: 7
            }
        ));
        // 0 days keeps deliveries forever, so any payload retention fits.
        let args = SenderArgs::try_parse_from(["herald-sender", "--retention-days", "0"]).unwrap();
        assert!(SenderConfig::from_args(&args).is_ok());
    }
}
