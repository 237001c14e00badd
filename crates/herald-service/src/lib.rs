//! Plumbing shared by `herald-ingest` and `herald-sender`: the options both
//! accept (`options`: clap flags with `HERALD_*` environment variables), the
//! generated configuration reference (`options_doc`), the probe and metrics
//! endpoint (`http`), logging and OpenTelemetry trace set-up (`telemetry`),
//! and the one shutdown token fed by SIGINT/SIGTERM.
//!
//! It must not hold service logic: services are libraries with a thin
//! `main.rs` that uses these helpers.

pub mod http;
pub mod options;
pub mod options_doc;
pub mod telemetry;

use tokio_util::sync::CancellationToken;

pub use options::{Command, CommonOptions, LogFormat, defaults};
pub use telemetry::{Telemetry, TelemetryError};

/// A service that is to run: its shutdown token (fed by SIGINT/SIGTERM) and
/// its telemetry, to shut down after the service stopped.
pub struct Started {
    pub shutdown: CancellationToken,
    pub telemetry: Telemetry,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("running migrations")]
    Migrate(#[from] herald_store::StoreError),
}

/// What both binaries do first: logging and traces (as `service_name`),
/// the TLS crypto provider, and the `migrate` subcommand. Returns what the
/// service needs to run, or `None` when the command is done.
pub async fn start(
    command: Option<Command>,
    common: &CommonOptions,
    service_name: &'static str,
) -> Result<Option<Started>, StartError> {
    let telemetry = telemetry::init(common.log_format, service_name)?;
    // One crypto provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            herald_store::migrate(common.database_url.expose()).await?;
            tracing::info!("migrations applied");
            telemetry.shutdown(TELEMETRY_FLUSH_TIMEOUT).await;
            Ok(None)
        }
        Command::Serve => Ok(Some(Started {
            shutdown: shutdown_on_signals(),
            telemetry,
        })),
    }
}

/// How long a stopping service waits for its last spans to be exported.
pub const TELEMETRY_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
