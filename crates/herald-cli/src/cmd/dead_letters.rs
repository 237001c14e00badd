//! `herald dead-letters`: the messages no sender could finish, read from and
//! moved out of the dead-letter queue `<prefix>.dead` straight on RabbitMQ.
//!
//! This is the CLI's one exception to going through ingest's API (see the
//! crate header): the queue lives on the broker and reading it needs no
//! database, while an Admin call for it would make ingest read and move
//! broker queues on behalf of admins. This module must never touch Postgres
//! or the work and delay queues beyond publishing a requeued message to the
//! work exchange.
//!
//! Listing takes the messages without acking them and closes the channel, so
//! the broker keeps every one. Requeueing publishes each to the work exchange
//! (where ingest publishes a first attempt), routed to the delivery's work
//! queue when there are several (`--work-queues`), waits for the broker's confirm
//! and only then acks it in the dead-letter queue: a message is never in
//! neither queue.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use herald_queue::QueueConfig;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// RabbitMQ connection URL of the installation, or its cluster nodes'
    /// URLs comma-separated (as its services use). Never printed.
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        default_value = herald_queue::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: herald_core::Secret<String>,
    /// Queue name prefix of the installation (HERALD_QUEUE_PREFIX).
    #[arg(long, env = "HERALD_QUEUE_PREFIX", default_value = herald_queue::DEFAULT_QUEUE_PREFIX)]
    pub prefix: String,
    /// Work queues of the installation (HERALD_WORK_QUEUES): a requeued
    /// delivery goes back to the one its id belongs to.
    #[arg(long, env = "HERALD_WORK_QUEUES", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=herald_core::shard::MAX_WORK_QUEUES as i64))]
    pub work_queues: u16,
    /// Move them back to the work queue, to be sent again (after fixing
    /// what made them fail), instead of listing them.
    #[arg(long)]
    pub requeue: bool,
    /// At most this many messages.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub output: crate::cli::OutputArgs,
}

/// One message of the dead-letter queue; `--json` prints it with these
/// field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// From the message, or its AMQP `message_id` when it does not decode.
    pub delivery_id: Option<String>,
    /// Empty when the message does not decode as a delivery.
    pub tenant: String,
    pub event: String,
    pub attempt: u32,
    /// Why it was moved aside (the `x-herald-dead-reason` header).
    pub reason: String,
    pub bytes: usize,
}

fn queue_config(amqp_url: &str, prefix: &str) -> QueueConfig {
    let mut config = QueueConfig::new(amqp_url, prefix);
    config.connect_timeout = Duration::from_secs(10);
    config
}

/// Lists up to `limit` messages of the dead-letter queue; they all stay.
pub async fn list(amqp_url: &str, prefix: &str, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let config = queue_config(amqp_url, prefix);
    let connection = herald_queue::connect(&config, "herald-cli")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    let queue = config.topology().dead_queue();
    let mut letters = Vec::new();
    while letters.len() < limit {
        // Not acked: closing the channel gives them all back.
        let Some(message) = get(&channel, &queue).await? else {
            break;
        };
        letters.push(describe(&message.delivery));
    }
    let _ = connection.close(200, "listed".into()).await;
    Ok(letters)
}

/// Moves up to `limit` messages from the dead-letter queue to the work
/// exchange, each to its delivery's shard of `work_queues`; returns how
/// many were moved.
pub async fn requeue(
    amqp_url: &str,
    prefix: &str,
    work_queues: u16,
    limit: usize,
) -> anyhow::Result<usize> {
    let mut config = queue_config(amqp_url, prefix);
    config.work_queues = work_queues;
    let connection = herald_queue::connect(&config, "herald-cli")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let topology = config.topology();
    let queue = topology.dead_queue();
    let mut moved = 0;
    while moved < limit {
        let Some(message) = get(&channel, &queue).await? else {
            break;
        };
        let delivery = &message.delivery;
        // The same body and id; without the reason, which no longer holds.
        let delivery_id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        let properties = herald_queue::message_properties(delivery_id);
        // The shard the delivery's id hashes to, as ingest would choose it
        // (without an id, which only an unreadable message lacks, shard 0).
        let shard = delivery_id.map_or(0, |id| topology.shard_of(id.as_bytes()));
        let work = topology.shard(shard).route_after(Duration::ZERO);
        let confirm = channel
            .basic_publish(
                work.exchange.as_str().into(),
                work.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &delivery.data,
                properties,
            )
            .await?
            .await
            .context("waiting for the broker's confirm")?;
        match confirm {
            Confirmation::Ack(None) => {}
            other => anyhow::bail!(
                "the broker did not take the message back into {} ({other:?}); it stays in {queue}",
                work.exchange
            ),
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .context("acking the moved message in the dead-letter queue")?;
        moved += 1;
    }
    let _ = connection.close(200, "requeued".into()).await;
    Ok(moved)
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> anyhow::Result<Option<lapin::message::BasicGetMessage>> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .with_context(|| {
            format!(
                "reading the dead-letter queue {queue} (check --prefix; a sender of this \
                 version declares the queue when it starts)"
            )
        })
}

fn describe(delivery: &lapin::message::Delivery) -> DeadLetter {
    let reason = herald_queue::dead_reason(&delivery.properties).unwrap_or_default();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string());
    match herald_queue::decode(&delivery.data) {
        Ok(message) => DeadLetter {
            delivery_id: Uuid::from_slice(&message.delivery_id)
                .ok()
                .map(|id| id.to_string())
                .or(message_id),
            tenant: message.tenant,
            event: message.event,
            attempt: message.attempt,
            reason,
            bytes: delivery.data.len(),
        },
        Err(_) => DeadLetter {
            delivery_id: message_id,
            tenant: String::new(),
            event: String::new(),
            attempt: 0,
            reason,
            bytes: delivery.data.len(),
        },
    }
}

/// The letters as a table for people.
pub fn table(letters: &[DeadLetter]) -> String {
    let mut out = String::from(
        "DELIVERY                              EVENT                 ATTEMPT  REASON\n",
    );
    for l in letters {
        out.push_str(&format!(
            "{:<37} {:<21} {:<8} {}\n",
            l.delivery_id.as_deref().unwrap_or("-"),
            if l.event.is_empty() { "-" } else { &l.event },
            l.attempt,
            l.reason
        ));
    }
    out
}

/// `herald dead-letters`.
pub async fn run(json_output: bool, args: DeadLettersArgs) -> anyhow::Result<()> {
    if args.requeue {
        let moved = requeue(
            args.amqp_url.expose(),
            &args.prefix,
            args.work_queues,
            args.limit,
        )
        .await?;
        if json_output {
            crate::output::print_json(&serde_json::json!({ "requeued": moved }));
        } else if args.work_queues > 1 {
            println!(
                "{moved} message(s) moved back to the {} work queues {}.work*",
                args.work_queues, args.prefix
            );
        } else {
            println!("{moved} message(s) moved back to {}.work", args.prefix);
        }
        return Ok(());
    }
    let letters = list(args.amqp_url.expose(), &args.prefix, args.limit).await?;
    if json_output {
        crate::output::print_json(&letters);
    } else if letters.is_empty() {
        eprintln!("the dead-letter queue {}.dead is empty", args.prefix);
    } else {
        print!("{}", table(&letters));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::{Cli, Command, parse};

    #[test]
    fn help_says_why_this_command_talks_to_rabbitmq() {
        let mut cli = Cli::command();
        let command = cli
            .find_subcommand_mut("dead-letters")
            .expect("a dead-letters subcommand");
        let help = command.render_long_help().to_string();
        assert!(
            help.contains("this one talks to RabbitMQ, not to herald-ingest's API"),
            "{help}"
        );
        assert!(
            help.contains("needs no database") && help.contains("on behalf of admins"),
            "{help}"
        );
    }

    #[test]
    fn dead_letters_list_by_default_and_requeue_on_request() {
        let Command::DeadLetters(a) = parse(&["dead-letters"]).unwrap().command else {
            panic!()
        };
        assert!(!a.requeue);
        assert_eq!((a.prefix.as_str(), a.limit), ("herald", 100));
        let Command::DeadLetters(a) = parse(&[
            "dead-letters",
            "--requeue",
            "--limit",
            "5",
            "--prefix",
            "shop",
            "--json",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert!(a.requeue && a.output.json);
        assert_eq!((a.prefix.as_str(), a.limit), ("shop", 5));
    }
}
