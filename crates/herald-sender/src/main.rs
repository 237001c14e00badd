//! `herald-sender`: runs the sender service, or the migrations. The options
//! live in the library (`herald_sender::SenderArgs`); this file only starts
//! the async runtime, binds the HTTP endpoint and installs the process-wide
//! metrics recorder.

use anyhow::Context;
use clap::Parser;
use herald_sender::{SenderArgs, SenderConfig};

fn main() -> anyhow::Result<()> {
    let args = SenderArgs::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if args.worker_threads > 0 {
        runtime.worker_threads(usize::from(args.worker_threads));
    }
    runtime
        .build()
        .context("starting the async runtime")?
        .block_on(serve(args))
}

async fn serve(args: SenderArgs) -> anyhow::Result<()> {
    let Some(started) = herald_service::start(args.command, &args.common, "herald-sender").await?
    else {
        return Ok(());
    };
    let mut config = SenderConfig::from_args(&args)?;
    config.queue.tracing = started.telemetry.tracing();
    config.metrics =
        Some(herald_service::http::install_prometheus().context("installing metrics")?);
    // The process id tells apart the senders sharing one broker.
    config.name = format!("herald-sender-{}", std::process::id());
    let http = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding {}", args.http_listen))?;
    let ran = herald_sender::run(config, Some(http), started.shutdown).await;
    started
        .telemetry
        .shutdown(herald_service::TELEMETRY_FLUSH_TIMEOUT)
        .await;
    ran.context("sender failed")
}
