//! The command line's shape: the top-level [`Cli`], the options every
//! subcommand shares (server, authentication, `--json`) and the list of
//! subcommands. Each command group's own arguments live beside the code that
//! runs it, in [`crate::cmd`].
//!
//! This module only declares what clap parses; it must never connect to
//! anything or print.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd::{
    api_keys::ApiKeysCommand, dead_letters::DeadLettersArgs, delivery_log::DeliveryLogCommand,
    fire::FireArgs, receive::ReceiveArgs, webhooks::WebhooksCommand,
};

/// Talks to Herald's gRPC API (herald-ingest) and runs a demo webhook receiver.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, propagate_version = true)]
pub struct Cli {
    /// Address of herald-ingest's gRPC API.
    #[arg(
        long,
        env = "HERALD_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Print the API's answer as JSON instead of a table (after the
    /// subcommand too, except `fire`, where `--json` is the data).
    #[arg(long)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// How the tool authenticates to the API and trusts its TLS certificate.
#[derive(Debug, Args, Default, Clone)]
pub struct AuthArgs {
    /// API key, sent as `authorization: Bearer <key>` on every call (see
    /// `herald keys create`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA certificate that signed the server's certificate (for an
    /// https:// --server with a private CA); the platform's roots otherwise.
    #[arg(long, env = "HERALD_CA_CERT", value_name = "PEM", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS).
    #[arg(
        long,
        env = "HERALD_CLIENT_CERT",
        value_name = "PEM",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "HERALD_CLIENT_KEY",
        value_name = "PEM",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the configured events of a tenant with their webhooks.
    Events {
        /// Tenant (shop or subshop); empty is the default tenant.
        #[arg(long, env = "HERALD_TENANT", default_value = "")]
        tenant: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create, change, inspect and delete webhooks.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Fire an event: one delivery per enabled webhook of the event.
    Fire(FireArgs),
    /// Show a delivery and its attempts.
    Delivery {
        /// Delivery id, as printed by `herald fire`.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create, list and revoke API keys.
    // Named `keys` on the command line; `ApiKeys` in code so that it is not
    // read as idempotency or signing keys.
    #[command(subcommand, name = "keys")]
    ApiKeys(ApiKeysCommand),
    /// Run a demo HTTP receiver that prints every request it gets.
    Receive(ReceiveArgs),
    /// List the messages no sender could finish (the dead-letter queue, read
    /// on RabbitMQ), or move them back to be sent again (--requeue).
    ///
    /// Unlike every other command, this one talks to RabbitMQ, not to
    /// herald-ingest's API: the dead-letter queue lives on the broker and
    /// reading it needs no database, while an API call for it would make
    /// ingest read and move broker queues on behalf of admins. It therefore
    /// needs the installation's --amqp-url (HERALD_AMQP_URL) and --prefix;
    /// --server, --token and the TLS options do not apply.
    DeadLetters(DeadLettersArgs),
    #[command(flatten)]
    DeliveryLog(DeliveryLogCommand),
}

/// `--json` after the subcommand.
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct OutputArgs {
    /// Print the API's answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Command {
    /// The `--json` given after the subcommand, if it takes one.
    pub fn output(&self) -> OutputArgs {
        match self {
            Self::Events { output, .. } | Self::Delivery { output, .. } => *output,
            Self::Webhooks(w) => match w {
                WebhooksCommand::List { output, .. }
                | WebhooksCommand::Get { output, .. }
                | WebhooksCommand::Delete { output, .. }
                | WebhooksCommand::Enable { output, .. }
                | WebhooksCommand::Disable { output, .. }
                | WebhooksCommand::Secret { output, .. }
                | WebhooksCommand::ResumeKey { output, .. }
                | WebhooksCommand::StoppedKeys { output, .. } => *output,
                WebhooksCommand::Create(a) => a.output,
                WebhooksCommand::Update(a) => a.output,
                WebhooksCommand::RotateSecret(a) => a.output,
            },
            Self::Fire(_) | Self::Receive(_) => OutputArgs::default(),
            Self::DeadLetters(a) => a.output,
            Self::DeliveryLog(command) => command.output(),
            Self::ApiKeys(command) => command.output(),
        }
    }
}

/// Parses `herald <args>` as the binary would, for the tests of every
/// command module.
#[cfg(test)]
pub(crate) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("herald").chain(args.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_output_goes_before_or_after_the_subcommand() {
        let cli = parse(&["webhooks", "list", "--json", "--server", "http://h:1"]).unwrap();
        assert!(!cli.json && cli.command.output().json);
        assert_eq!(cli.server, "http://h:1");
        let cli = parse(&["--json", "delivery", "abc"]).unwrap();
        assert!(cli.json);
        for args in [
            &["events", "--json"][..],
            &["delivery", "x", "--json"],
            &["webhooks", "get", "x", "--json"],
            &["webhooks", "delete", "x", "--json"],
            &["webhooks", "enable", "x", "--json"],
            &["webhooks", "disable", "x", "--json"],
            &[
                "webhooks",
                "create",
                "--event",
                "e",
                "--url",
                "http://a/",
                "--json",
            ],
            &["webhooks", "update", "x", "--url", "http://a/", "--json"],
        ] {
            assert!(parse(args).unwrap().command.output().json, "{args:?}");
        }
    }
}
