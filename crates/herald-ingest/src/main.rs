//! `herald-ingest`: runs the ingest gRPC service, or its migrations. The
//! options live in the library (`herald_ingest::IngestArgs`); this file only
//! binds the listeners and installs the process-wide metrics recorder.

use anyhow::Context;
use clap::Parser;
use herald_ingest::{IngestArgs, IngestConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = IngestArgs::parse();
    let Some(started) = herald_service::start(args.command, &args.common, "herald-ingest").await?
    else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut config = IngestConfig::from_args(&args)?;
    config.queue.tracing = started.telemetry.tracing();
    config.metrics =
        Some(herald_service::http::install_prometheus().context("installing metrics")?);
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    let ran = herald_ingest::run(config, listener, Some(metrics), started.shutdown).await;
    started
        .telemetry
        .shutdown(herald_service::TELEMETRY_FLUSH_TIMEOUT)
        .await;
    ran.context("ingest failed")
}
