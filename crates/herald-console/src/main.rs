//! `herald-console`: serves Herald Console. The options live in the library
//! (`herald_console::ConsoleArgs`); this file only binds the listener and
//! sets up logging and the shutdown token.

use anyhow::Context;
use clap::Parser;
use herald_console::{ConsoleArgs, ConsoleConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ConsoleArgs::parse();
    let telemetry = herald_service::telemetry::init(args.log_format, "herald-console")?;
    // One crypto provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = herald_service::shutdown_on_signals();
    let config = ConsoleConfig::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let ran = herald_console::run(config, listener, shutdown).await;
    telemetry
        .shutdown(herald_service::TELEMETRY_FLUSH_TIMEOUT)
        .await;
    ran.context("console failed")
}
