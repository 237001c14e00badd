//! The `herald` command-line tool: configure webhooks, fire events, inspect
//! deliveries, and run a demo HTTP receiver.
//!
//! This crate owns the command line only. It is a client of Herald's public
//! gRPC API (`Ingest` and `Admin` in `proto/herald/v1/herald.proto`) plus a
//! stand-alone demo receiver. It must not touch Postgres, and everything it
//! shows comes through the API, so it sees exactly what any other client
//! sees, with one exception: `herald dead-letters` ([`cmd::dead_letters`])
//! reads and requeues the dead-letter queue on RabbitMQ directly. That queue
//! lives on the broker and reading it needs no database, while an Admin call
//! for it would make ingest, which otherwise only publishes, read and move
//! broker queues on behalf of admins. No other command may talk to RabbitMQ.
//!
//! Output is a simple aligned table by default, or with `--json` the proto
//! message as JSON (field names as in the proto file). `--json` goes before
//! the subcommand (`herald --json delivery ID`) or, except for `fire`, after
//! it; `herald fire EVENT --json DOC` gives the data to fire. Errors end the
//! process with `error: <message>` on stderr and exit code 1.
//!
//! The modules, as mini-redis's: [`cli`] declares the command line,
//! [`client`] connects and authenticates to the API, [`output`] prints, and
//! [`cmd`] holds one module per command group with its arguments and the
//! code that runs it. [`run`] only dispatches.

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod client;
pub mod cmd;
pub mod output;

pub use cli::{AuthArgs, Cli, Command, OutputArgs};
pub use client::Connection;

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json || cli.command.output().json;
    let conn = Connection {
        server: cli.server,
        auth: cli.auth,
    };
    match cli.command {
        Command::Receive(args) => cmd::receive::run(args).await,
        Command::DeadLetters(args) => cmd::dead_letters::run(json, args).await,
        Command::Events { tenant, .. } => cmd::events::run(&conn, json, tenant).await,
        Command::Fire(args) => cmd::fire::run(&conn, json, args).await,
        Command::Delivery { id, .. } => cmd::delivery_log::show(&conn, json, id).await,
        Command::Webhooks(command) => cmd::webhooks::run(&conn, json, command).await,
        Command::DeliveryLog(command) => cmd::delivery_log::run(&conn, json, command).await,
        Command::ApiKeys(command) => cmd::api_keys::run(&conn, json, command).await,
    }
}

/// An error and its causes as one line, `a: b: c`, without the repeats some
/// transport errors have.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn error_chains_print_once() {
        let e = anyhow!("c").context("b").context("b").context("a");
        assert_eq!(error_message(&e), "a: b: c");
    }
}
