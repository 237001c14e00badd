//! Keeps an in-memory copy of a table fresh: a dedicated connection runs
//! `LISTEN <channel>` (a trigger on the table notifies on every change) and
//! reloads on every notification; a periodic reload is the safety net for
//! notifications lost while nobody listened. Used by the webhook
//! configuration ([`ConfigCache`](crate::ConfigCache)) and the API keys
//! ([`ApiKeyCache`](crate::ApiKeyCache)).

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{StoreError, parse_url};
use herald_core::backoff::Backoff;

/// Upper bound for one reload, so that a hung connection cannot stall the
/// watcher (and with it the reaction to shutdown) indefinitely.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for the liveness check of the listening connection.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest periodic refresh; `tokio::time::interval` refuses a zero
/// period, and reloading more often than this would only load Postgres.
const MIN_REFRESH: Duration = Duration::from_millis(10);

/// An in-memory copy that a watcher keeps fresh.
pub(crate) trait Watched: Clone + Send + Sync + 'static {
    /// What is kept, for log lines ("webhook configuration").
    const WHAT: &'static str;
    /// The notification channel the table's trigger notifies.
    const CHANNEL: &'static str;

    /// Reads the table and installs what changed.
    fn reload(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Spawns the watcher of `watched`; it runs until `shutdown` is cancelled.
pub(crate) fn spawn<W: Watched>(
    watched: W,
    database_url: &str,
    refresh_every: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(watch(
        watched,
        database_url.to_owned(),
        refresh_every.max(MIN_REFRESH),
        shutdown,
    ));
}

/// Reloads, logging instead of returning failures: the watcher keeps the
/// last copy when Postgres cannot be read. Returns whether it worked.
async fn reload_logged<W: Watched>(watched: &W, why: &'static str) -> bool {
    match tokio::time::timeout(RELOAD_TIMEOUT, watched.reload()).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            warn!(
                error = &err as &dyn std::error::Error,
                what = W::WHAT,
                why,
                "reloading failed; keeping the last copy"
            );
            false
        }
        Err(_) => {
            warn!(
                what = W::WHAT,
                why,
                timeout = ?RELOAD_TIMEOUT,
                "reloading timed out; keeping the last copy"
            );
            false
        }
    }
}

/// The watcher: listen, reload on notification and periodically, reconnect
/// with backoff when the listening connection is lost.
async fn watch<W: Watched>(
    watched: W,
    database_url: String,
    refresh_every: Duration,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = Listener::connect(&database_url, W::CHANNEL) => connected,
        };
        match connected {
            Ok(mut listener) => {
                backoff.reset();
                debug!(what = W::WHAT, "listening for changes");
                if listener
                    .serve(&watched, refresh_every, &shutdown)
                    .await
                    .is_break()
                {
                    return;
                }
            }
            Err(err) => {
                let delay = backoff.next_delay();
                warn!(
                    error = &err as &dyn std::error::Error,
                    what = W::WHAT,
                    retry_in = ?delay,
                    "cannot listen for changes; serving the last copy"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A dedicated connection subscribed to one notification channel.
struct Listener {
    client: tokio_postgres::Client,
    /// Receives one item per notification burst; closed when the connection
    /// ends.
    notified: mpsc::Receiver<()>,
    driver: JoinHandle<()>,
}

impl Listener {
    async fn connect(database_url: &str, channel: &str) -> Result<Listener, StoreError> {
        let config = parse_url(database_url)?;
        let (client, mut connection) = config.connect(NoTls).await?;
        // Capacity one: a pending signal already means "reload", so further
        // notifications arriving before the reload starts add nothing.
        let (signal, notified) = mpsc::channel(1);
        let driver = tokio::spawn(async move {
            // The connection must be polled for messages (not just awaited)
            // for notifications to be seen; this also drives the client's
            // own queries.
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if let Err(mpsc::error::TrySendError::Closed(())) = signal.try_send(()) {
                            return;
                        }
                    }
                    Ok(AsyncMessage::Notice(notice)) => {
                        debug!(%notice, "notice on a listening connection");
                    }
                    Ok(_) => {}
                    Err(err) => {
                        debug!(
                            error = &err as &dyn std::error::Error,
                            "listening connection failed"
                        );
                        return;
                    }
                }
            }
        });
        let listener = Listener {
            client,
            notified,
            driver,
        };
        listener
            .client
            .batch_execute(&format!("LISTEN {channel}"))
            .await?;
        Ok(listener)
    }

    /// Reacts to notifications and refreshes periodically until the
    /// connection breaks (`Continue`: reconnect) or shutdown (`Break`).
    async fn serve<W: Watched>(
        &mut self,
        watched: &W,
        refresh_every: Duration,
        shutdown: &CancellationToken,
    ) -> ControlFlow<()> {
        let mut refresh = tokio::time::interval_at(Instant::now() + refresh_every, refresh_every);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A failed reload is retried with backoff instead of waiting for the
        // next notification or refresh, which could be far away.
        let mut retry = Backoff::new();
        let mut retry_at: Option<Instant> = None;
        // Changes made while nobody listened (before the first connection, or
        // during an outage) sent notifications that were lost, so catch up
        // once now.
        let mut why = Some("listening started");
        loop {
            if let Some(why) = why.take() {
                if reload_logged(watched, why).await {
                    retry.reset();
                    retry_at = None;
                } else {
                    retry_at = Some(Instant::now() + retry.next_delay());
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return ControlFlow::Break(()),
                signal = self.notified.recv() => {
                    if signal.is_none() {
                        warn!(what = W::WHAT, "lost the listening connection; reconnecting");
                        return ControlFlow::Continue(());
                    }
                    why = Some("change notified");
                }
                () = sleep_until_some(retry_at) => why = Some("retrying a failed reload"),
                _ = refresh.tick() => {
                    // A connection that silently died (no RST, e.g. a dropped
                    // network path) would never report an error by itself;
                    // the periodic query finds out.
                    let alive = tokio::time::timeout(PING_TIMEOUT, self.client.simple_query(""))
                        .await;
                    if !matches!(alive, Ok(Ok(_))) {
                        warn!(what = W::WHAT, "the listening connection stopped answering; reconnecting");
                        return ControlFlow::Continue(());
                    }
                    why = Some("periodic refresh");
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Dropping the client closes the connection, which ends the driver;
        // aborting as well makes sure no task outlives the listener.
        self.driver.abort();
    }
}
