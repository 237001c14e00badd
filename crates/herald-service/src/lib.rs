//! Plumbing shared by `herald-ingest` and `herald-sender`: the options both
//! accept (`options`: clap flags with `HERALD_*` environment variables), the
//! generated configuration reference (`options_doc`), the probe and metrics
//! endpoint (`http`), logging set-up, and the one shutdown token fed by
//! SIGINT/SIGTERM.
//!
//! It must not hold service logic: services are libraries with a thin
//! `main.rs` that uses these helpers.

pub mod http;
pub mod options;
pub mod options_doc;

use tokio_util::sync::CancellationToken;

pub use options::{Command, CommonOptions, LogFormat, defaults};

/// What both binaries do first: logging, the TLS crypto provider, and the
/// `migrate` subcommand. Returns the shutdown token (fed by SIGINT/SIGTERM)
/// when the service is to run, `None` when the command is done.
pub async fn start(
    command: Option<Command>,
    common: &CommonOptions,
) -> Result<Option<CancellationToken>, herald_store::StoreError> {
    init_logging(common.log_format);
    // One crypto provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            herald_store::migrate(common.database_url.expose()).await?;
            tracing::info!("migrations applied");
            Ok(None)
        }
        Command::Serve => Ok(Some(shutdown_on_signals())),
    }
}

/// Installs the tracing subscriber (RUST_LOG filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}
