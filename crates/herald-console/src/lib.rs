//! Herald Console: the delivery log and the webhook configuration in a
//! browser (docs/console.md).
//!
//! It owns the HTML pages, the sign-in sessions and their CSRF tokens. It
//! acts only through ingest's Admin gRPC API, with the signed-in person's
//! own API key on every call, so every tenant rule and scope check stays in
//! ingest. It must never hold database or broker credentials, never talk to
//! Postgres or RabbitMQ, and never render a secret (secret header values,
//! API keys; a signing secret only on the page that created or rotated it).
//!
//! Every value a page shows goes through maud, which escapes it: payloads
//! and response excerpts are attacker-controlled text.

mod api;
mod args;
mod handlers;
mod pages;
mod serve;
mod session;
mod time_fmt;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::Api;
pub use args::{ConsoleArgs, ConsoleConfig};

/// Why the console could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the ingest URL {url:?} is not usable: {source}")]
    IngestUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    pub api: Api,
    pub sessions: session::Sessions,
    /// Mark cookies `Secure` (served over TLS, here or by a proxy).
    pub secure_cookies: bool,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// How often expired sessions are dropped.
const SESSION_SWEEP: Duration = Duration::from_secs(60);

/// Serves the console on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ConsoleConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ConsoleError> {
    let api = Api::connect(&config.ingest_url, config.ingest_ca.as_deref())?;
    let tls = config.tls_acceptor()?;
    let state = AppState(Arc::new(Shared {
        api,
        sessions: session::Sessions::new(config.session_ttl),
        secure_cookies: config.secure_cookies || tls.is_some(),
    }));
    let sweeper = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SESSION_SWEEP);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => state.sessions.sweep(),
                }
            }
        })
    };
    let local = listener.local_addr().map_err(ConsoleError::Serve)?;
    tracing::info!(
        address = %local,
        tls = tls.is_some(),
        ingest = %config.ingest_url,
        "console listening"
    );
    let router = handlers::router(state);
    let served = serve::serve(listener, router, tls, shutdown).await;
    sweeper.abort();
    served
}
