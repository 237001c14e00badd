//! The options every Herald service takes ([`CommonOptions`]), the
//! subcommands both binaries share, and [`defaults`], which reads the
//! defaults out of a clap struct so that they are written once: in the
//! `#[arg(default_value...)]` attributes.
//!
//! This module owns option declarations only. It must not read files, open
//! connections or install anything process-wide; turning options into a
//! service configuration is the service crate's `args` module's job.

use std::time::Duration;

use clap::Parser;
use herald_core::ssrf::AddressPolicy;
use herald_core::{Schedule, Secret};
use herald_queue::{QueueConfig, QueueType};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

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
    pub database_url: Secret<String>,

    /// RabbitMQ connection URL, or the URLs of a cluster's nodes separated
    /// by commas (each connection picks a reachable node, spread over the
    /// list). May contain passwords; never logged.
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        default_value = herald_queue::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: Secret<String>,

    /// Prefix of every RabbitMQ exchange and queue name.
    #[arg(long, env = "HERALD_QUEUE_PREFIX", default_value = herald_queue::DEFAULT_QUEUE_PREFIX)]
    pub queue_prefix: String,

    /// RabbitMQ queue type: quorum (production) or classic.
    #[arg(long, env = "HERALD_QUEUE_TYPE", value_enum, default_value = "quorum")]
    pub queue_type: QueueType,

    /// Cluster nodes holding a replica of each quorum queue Herald creates
    /// (`x-quorum-initial-group-size`; odd, at most the node count). Unset:
    /// RabbitMQ's default, a replica on every node. Every service must use
    /// the same value, fixed before the queues are first declared.
    #[arg(long, env = "HERALD_QUORUM_INITIAL_GROUP_SIZE",
          value_parser = clap::value_parser!(u16).range(1..=99))]
    pub quorum_initial_group_size: Option<u16>,

    /// Delays before attempts 1, 2, 3, ... (ms, s, m, h); `0s` first means an
    /// immediate first attempt. Ingest and senders must use the same value.
    #[arg(long, env = "HERALD_SCHEDULE", default_value = "5s,240s,480s")]
    pub schedule: Schedule,

    /// Work queues (shards) deliveries are spread over, so that on a
    /// RabbitMQ cluster several queue leaders share the work; a delivery
    /// stays in one shard, chosen by its id. Ingest and senders must use
    /// the same value. Grow it freely; before shrinking it, drain the
    /// queues it drops (docs/operations.md).
    #[arg(long, env = "HERALD_WORK_QUEUES", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=herald_core::shard::MAX_WORK_QUEUES as i64))]
    pub work_queues: u16,

    /// Partition queues of ordered delivery (docs/ordering.md): a hash of
    /// webhook and ordering key picks one, and one sender at a time
    /// consumes each, so more partitions spread ordered work over more
    /// senders. Ingest and senders must use the same value; change it only
    /// while no ordered delivery is queued.
    #[arg(long, env = "HERALD_ORDERED_PARTITIONS", default_value_t = herald_queue::DEFAULT_ORDERED_PARTITIONS,
          value_parser = clap::value_parser!(u16).range(1..=herald_core::ordering::MAX_PARTITIONS as i64))]
    pub ordered_partitions: u16,

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
    pub encryption_key: Option<Secret<String>>,

    /// Log format: text or json.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn parse_address_policy(list: &str) -> Result<AddressPolicy, String> {
    AddressPolicy::parse_allowlist(list)
}

impl CommonOptions {
    /// How secrets are sealed at rest; fails on a malformed key.
    pub fn secret_box(&self) -> Result<herald_store::SecretBox, herald_store::SecretBoxError> {
        match &self.encryption_key {
            Some(key) if !key.expose().is_empty() => {
                herald_store::SecretBox::with_key(key.expose())
            }
            _ => Ok(herald_store::SecretBox::plaintext()),
        }
    }

    /// The broker configuration; fails on a malformed URL in
    /// `--amqp-url`, naming its position in the list but never its text.
    /// (Checked here rather than by clap, whose message would quote the
    /// value with its password.)
    pub fn queue_config(&self) -> Result<QueueConfig, herald_queue::QueueError> {
        herald_queue::Brokers::parse(self.amqp_url.expose())?;
        let mut config = QueueConfig::new(self.amqp_url.clone(), &self.queue_prefix);
        config.queue_type = self.queue_type;
        config.quorum_initial_group_size = self.quorum_initial_group_size;
        config.schedule = self.schedule.clone();
        config.work_queues = self.work_queues;
        config.ordered_partitions = self.ordered_partitions;
        Ok(config)
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

/// The options of `T` as if none were given: every field at its declared
/// default. Environment variables are ignored on purpose, so that the
/// defaults (what `Default` of a service configuration and the generated
/// documentation use) never depend on the shell the tests run in.
///
/// # Panics
///
/// If `T` has a required option, which would have no default; Herald's
/// service options have none, and the crates' tests call this for each.
pub fn defaults<T: Parser>() -> T {
    // `Arg::env` reads the variable when the command is built; clearing it
    // drops both the name and the value read.
    let command = T::command().mut_args(|arg| arg.env(None::<&'static str>));
    let name = command.get_name().to_owned();
    let matches = command
        .try_get_matches_from([name])
        .expect("every service option has a default");
    T::from_arg_matches(&matches).expect("the defaults parse as the options")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// A stand-in for a service's argument struct.
    #[derive(Debug, Parser)]
    #[command(name = "herald-test")]
    struct Args {
        #[command(subcommand)]
        command: Option<Command>,
        #[command(flatten)]
        common: CommonOptions,
    }

    #[test]
    fn defaults_are_the_declared_ones() {
        let args = defaults::<Args>();
        assert!(args.command.is_none());
        let common = args.common;
        assert_eq!(
            common.database_url.expose(),
            "postgres://postgres@127.0.0.1:5432/herald"
        );
        assert_eq!(common.amqp_url.expose(), herald_queue::DEFAULT_AMQP_URL);
        assert_eq!(common.queue_prefix, herald_queue::DEFAULT_QUEUE_PREFIX);
        assert_eq!(common.queue_type, QueueType::Quorum);
        assert_eq!(common.schedule, Schedule::default());
        assert_eq!(common.work_queues, 1, "no shards unless asked for");
        assert_eq!(common.queue_config().unwrap().work_queues, 1);
        assert_eq!(common.db_pool_size, 8);
        assert_eq!(common.config_refresh(), Duration::from_secs(5));
        assert_eq!(common.drain_timeout(), Duration::from_secs(30));
        assert!(common.encryption_key.is_none());
        assert_eq!(common.log_format, LogFormat::Text);
    }

    #[test]
    fn debug_of_the_options_hides_passwords_and_keys() {
        let args = Args::try_parse_from([
            "herald-test",
            "--database-url",
            "postgres://herald:pg-hunter2@db/herald",
            "--amqp-url",
            "amqp://herald:mq-hunter2@broker/%2f",
            "--encryption-key",
            "key-hunter2",
        ])
        .unwrap();
        let debug = format!("{args:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            args.common.database_url.expose(),
            "postgres://herald:pg-hunter2@db/herald"
        );
        let debug = format!("{:?}", args.common.queue_config().unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn a_cluster_s_urls_are_checked_before_the_service_starts() {
        let parse = |list: &str| {
            Args::try_parse_from([
                "herald-test",
                "--amqp-url",
                list,
                "--quorum-initial-group-size",
                "3",
            ])
            .unwrap()
            .common
        };
        let common = parse("amqp://u:mq-hunter2@mq-0/h,amqp://u:mq-hunter2@mq-1/h");
        let config = common.queue_config().unwrap();
        assert_eq!(config.quorum_initial_group_size, Some(3));
        let err = parse("amqp://u:mq-hunter2@mq-0/h,,amqp://u:mq-hunter2@mq-1/h")
            .queue_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("URL 2 of the list is empty"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_work_queue_count_reaches_the_topology_within_its_range() {
        let parse = |n: &str| Args::try_parse_from(["herald-test", "--work-queues", n]);
        let common = parse("4").unwrap().common;
        assert_eq!(common.queue_config().unwrap().topology().shard_count(), 4);
        assert!(parse("64").is_ok());
        for refused in ["0", "65", "-1"] {
            assert!(parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn enum_options_list_their_values() {
        let command = Args::command();
        let values = |id: &str| -> Vec<String> {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap()
                .get_possible_values()
                .iter()
                .map(|value| value.get_name().to_owned())
                .collect()
        };
        assert_eq!(values("queue_type"), ["quorum", "classic"]);
        assert_eq!(values("log_format"), ["text", "json"]);
    }

    #[test]
    fn flags_parse_into_enums() {
        let args = Args::try_parse_from([
            "herald-test",
            "--queue-type",
            "classic",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.common.queue_type, QueueType::Classic);
        assert_eq!(args.common.log_format, LogFormat::Json);
        assert!(
            Args::try_parse_from(["herald-test", "--log-format", "yaml"]).is_err(),
            "an unknown log format is refused"
        );
    }
}
