//! Where the delivery log is read: a read replica
//! (`HERALD_READ_DATABASE_URL`) when one is configured, the primary
//! otherwise.
//!
//! Only reads that nothing decides on go to the replica: GetDelivery,
//! ListDeliveries, GetWebhookSummary and the tenant check of a delivery.
//! Configuration, API keys, idempotency keys, resends and replays (which
//! decide what to send from what they read) always use the primary store;
//! this module never sees them.
//!
//! Replica lag must not make a delivery that was just fired look unknown, so
//! a delivery looked up by id that the replica does not have is looked up on
//! the primary before the caller hears NOT_FOUND. Lists and summaries are
//! read from the replica as it is and may be behind by its lag, which
//! `herald_read_replica_lag_seconds` shows. A replica that fails a read is
//! skipped for [`REPLICA_RETRY`] (the read and those after it go to the
//! primary, counted in `herald_read_replica_fallbacks_total`), with one
//! warning per outage, so that an unreachable replica costs neither errors
//! nor a connect timeout per call.
//!
//! This module must not query Postgres itself: it only chooses which
//! [`Store`] answers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_store::{
    Cursor, DeliveryFilter, DeliveryPage, DeliveryView, Store, StoreError, TimelineBucket,
    WebhookSummaryView,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long reads skip a replica after it failed one; the lag poll tries it
/// again on its own schedule too.
pub(crate) const REPLICA_RETRY: Duration = Duration::from_secs(5);
/// How often the replica's lag is measured for the gauge.
pub(crate) const LAG_POLL: Duration = Duration::from_secs(5);

/// The stores the delivery-log reads use. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct LogReads {
    primary: Store,
    replica: Option<Arc<Replica>>,
}

#[derive(Debug)]
struct Replica {
    store: Store,
    /// When the replica last failed, while it is considered down.
    down_since: Mutex<Option<Instant>>,
}

/// Why a read went to the primary instead of the replica.
#[derive(Clone, Copy)]
enum Fallback {
    /// The replica failed the read, or failed one less than
    /// [`REPLICA_RETRY`] ago.
    Unavailable,
    /// The replica does not have the delivery (yet).
    NotFound,
}

fn count_fallback(reason: Fallback) {
    let reason = match reason {
        Fallback::Unavailable => "unavailable",
        Fallback::NotFound => "not_found",
    };
    metrics::counter!("herald_read_replica_fallbacks_total", "reason" => reason).increment(1);
}

impl Replica {
    /// Whether reads should try the replica now.
    fn usable(&self) -> bool {
        let down_since = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        down_since.is_none_or(|since| since.elapsed() >= REPLICA_RETRY)
    }

    fn answered(&self) {
        let mut down_since = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if down_since.take().is_some() {
            tracing::info!("the read replica answers again; delivery-log reads use it again");
        }
    }

    fn failed(&self, error: &StoreError) {
        let mut down_since = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if down_since.is_none() {
            tracing::warn!(
                error = error as &dyn std::error::Error,
                "the read replica (HERALD_READ_DATABASE_URL) failed; delivery-log reads go to \
                 the primary until it answers again"
            );
        }
        // Restarted on every failure: the replica is tried again one
        // REPLICA_RETRY after its last failure.
        *down_since = Some(Instant::now());
    }
}

impl LogReads {
    /// Every read on `primary`: no replica configured.
    pub(crate) fn primary(primary: Store) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    /// Reads on `replica`, falling back to `primary`.
    pub(crate) fn with_replica(primary: Store, replica: Store) -> Self {
        Self {
            primary,
            replica: Some(Arc::new(Replica {
                store: replica,
                down_since: Mutex::new(None),
            })),
        }
    }

    /// Runs `read` on the replica if there is a usable one, and on the
    /// primary if there is none, the replica failed, or `retry_not_found`
    /// and the replica answered NOT_FOUND.
    async fn read<'a, T, F, Fut>(&'a self, retry_not_found: bool, read: F) -> Result<T, StoreError>
    where
        F: Fn(&'a Store) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + 'a,
    {
        let Some(replica) = &self.replica else {
            return read(&self.primary).await;
        };
        if !replica.usable() {
            count_fallback(Fallback::Unavailable);
            return read(&self.primary).await;
        }
        match read(&replica.store).await {
            Ok(value) => {
                replica.answered();
                Ok(value)
            }
            Err(e) if e.is_not_found() => {
                replica.answered();
                if !retry_not_found {
                    return Err(e);
                }
                // Not replayed yet, or really unknown: only the primary
                // can tell.
                count_fallback(Fallback::NotFound);
                read(&self.primary).await
            }
            Err(e) => {
                replica.failed(&e);
                count_fallback(Fallback::Unavailable);
                read(&self.primary).await
            }
        }
    }

    /// A delivery with its attempts; NOT_FOUND only if the primary does not
    /// have it either.
    pub(crate) async fn get_delivery(&self, id: Uuid) -> Result<DeliveryView, StoreError> {
        self.read(true, |store| store.get_delivery(id)).await
    }

    /// A page of the log, as the replica has it (behind by its lag).
    pub(crate) async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page_size: u32,
        after: Option<Cursor>,
    ) -> Result<DeliveryPage, StoreError> {
        self.read(false, |store| {
            store.list_deliveries(filter, page_size, after)
        })
        .await
    }

    /// A webhook's counts, as the replica has them (behind by its lag).
    pub(crate) async fn webhook_summary(
        &self,
        webhook_id: Uuid,
        from: Option<std::time::SystemTime>,
        to: Option<std::time::SystemTime>,
    ) -> Result<WebhookSummaryView, StoreError> {
        self.read(false, |store| store.webhook_summary(webhook_id, from, to))
            .await
    }

    /// Measures the replica's lag every [`LAG_POLL`] into
    /// `herald_read_replica_lag_seconds` until `shutdown`; a failed
    /// measurement counts as a failed read, a good one brings the replica
    /// back into use. Nothing to do without a replica.
    pub(crate) async fn webhook_timeline(
        &self,
        webhook_id: Uuid,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
        bucket: Duration,
    ) -> Result<Vec<TimelineBucket>, StoreError> {
        self.read(false, |store| {
            store.webhook_timeline(webhook_id, from, to, bucket)
        })
        .await
    }

    pub(crate) async fn resent_as(&self, id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        self.read(false, |store| store.resent_as(id)).await
    }

    pub(crate) fn spawn_lag_poll(&self, shutdown: CancellationToken) {
        let Some(replica) = self.replica.clone() else {
            return;
        };
        tokio::spawn(async move {
            let gauge = metrics::gauge!("herald_read_replica_lag_seconds");
            let mut ticks = tokio::time::interval(LAG_POLL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match replica.store.replica_lag().await {
                    Ok(lag) => {
                        gauge.set(lag.as_secs_f64());
                        replica.answered();
                    }
                    Err(e) => replica.failed(&e),
                }
            }
        });
    }
}
