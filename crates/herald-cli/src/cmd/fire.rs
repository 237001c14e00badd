//! `herald fire`: fire an event through `Ingest.Fire`, with the data from a
//! flag, a file or standard input.
//!
//! This module must never shape or validate the data beyond reading it:
//! ingest validates a fire exactly as it does for any other client.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use herald_proto::v1::{FireRequest, fire_request};

use crate::client::{Connection, api, connect};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct FireArgs {
    /// Event name, e.g. order.created.
    pub event: String,
    /// Tenant (shop or subshop); empty is the default tenant.
    #[arg(long, env = "HERALD_TENANT", default_value = "")]
    pub tenant: String,
    /// The data as a JSON document (here `--json` is the data; for JSON
    /// output write `herald --json fire ...`).
    #[arg(long = "json", value_name = "DOC", group = "source")]
    pub data: Option<String>,
    /// The data as plain text, sent exactly as given.
    #[arg(long, value_name = "TEXT", group = "source")]
    pub text: Option<String>,
    /// Read the data from a file (JSON unless --text-file).
    #[arg(long, value_name = "PATH", group = "source")]
    pub file: Option<PathBuf>,
    /// The file (or standard input) holds plain text, not JSON.
    #[arg(long, conflicts_with_all = ["data", "text"])]
    pub text_file: bool,
    /// Idempotency key: repeating it (same event and data) within the
    /// window (default 24 h) answers the first call's delivery ids and sends
    /// nothing new.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Ordering key (e.g. the order id): ordered webhooks get the
    /// deliveries of one key strictly in Fire order.
    #[arg(long)]
    pub ordering_key: Option<String>,
}

impl FireArgs {
    /// The data to fire: from a flag, a file or standard input.
    fn data(&self) -> anyhow::Result<fire_request::Data> {
        if let Some(doc) = &self.data {
            return Ok(fire_request::Data::Json(doc.clone()));
        }
        if let Some(text) = &self.text {
            return Ok(fire_request::Data::Text(text.clone()));
        }
        let content = match &self.file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    eprintln!(
                        "reading the data from standard input (end with Ctrl-D); or give --json, --text or --file"
                    );
                }
                let mut content = String::new();
                stdin
                    .lock()
                    .read_to_string(&mut content)
                    .context("cannot read standard input")?;
                content
            }
        };
        Ok(if self.text_file {
            fire_request::Data::Text(content)
        } else {
            fire_request::Data::Json(content)
        })
    }
}

/// `herald fire`: prints the delivery ids, one per line.
pub async fn run(conn: &Connection, json: bool, args: FireArgs) -> anyhow::Result<()> {
    let data = args.data()?;
    let mut c = connect(conn).await?;
    let answer = api(c
        .ingest
        .fire(FireRequest {
            tenant: args.tenant.clone(),
            event: args.event.clone(),
            data: Some(data),
            idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
            ordering_key: args.ordering_key.clone().unwrap_or_default(),
        })
        .await)?;
    if json {
        print_json(&answer);
    } else {
        if answer.delivery_ids.is_empty() {
            eprintln!(
                "no enabled webhook for event {:?} of tenant {:?}: nothing to deliver",
                args.event, args.tenant
            );
        }
        for id in &answer.delivery_ids {
            println!("{id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, parse};

    #[test]
    fn fire_sources_are_exclusive() {
        assert!(parse(&["fire", "e", "--json", "{}", "--text", "x"]).is_err());
        assert!(
            parse(&["fire", "e", "--json"]).is_err(),
            "--json needs the document"
        );
        assert!(parse(&["fire", "e", "--text", "x", "--text-file"]).is_err());
        assert!(parse(&["fire", "e", "--file", "f", "--text-file"]).is_ok());
        let cli = parse(&["--json", "fire", "e", "--json", "{\"a\":1}"]).unwrap();
        assert!(cli.json, "JSON output before the subcommand");
        let Command::Fire(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            args.data().unwrap(),
            fire_request::Data::Json("{\"a\":1}".into())
        );
    }

    #[test]
    fn fire_reads_a_text_file() {
        let path = std::env::temp_dir().join(format!("herald-cli-test-{}.txt", std::process::id()));
        std::fs::write(&path, "userid=42").unwrap();
        let cli = parse(&["fire", "e", "--file", path.to_str().unwrap(), "--text-file"]).unwrap();
        let Command::Fire(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            args.data().unwrap(),
            fire_request::Data::Text("userid=42".into())
        );
        std::fs::remove_file(path).unwrap();
    }
}
