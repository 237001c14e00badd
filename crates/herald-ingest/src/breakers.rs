//! Which webhooks' circuit breakers are open, as ingest sees them.
//!
//! Read from `webhook_health` every second, so that Fire can publish a
//! delivery to a webhook whose breaker is open straight into a delay queue
//! for about the rest of the cool-down, where a sender would only have
//! taken it from the work queue to park it there: that round is a
//! consume, a publish and an ack for nothing, and under load it is what a
//! down webhook costs the healthy ones (docs/performance.md). Ingest only
//! reads the breakers; the senders own every change to them
//! (herald-sender's `breaker`), and a delivery published to the work queue
//! while ingest's view is a second old is parked by the sender as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herald_core::breaker::BreakerState;
use herald_store::HealthStore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often ingest reads the open breakers: as often as a sender does.
const REFRESH: Duration = Duration::from_secs(1);

pub struct OpenBreakers {
    /// When each open breaker's cool-down ends.
    open: Mutex<HashMap<Uuid, Instant>>,
    /// Whether any breaker is open: with none (nearly always), Fire does
    /// not even take the lock.
    any: AtomicBool,
}

impl OpenBreakers {
    /// A view with no breaker open, never refreshed (tests, and a Fire
    /// that must not depend on one).
    pub(crate) fn none() -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
        })
    }

    /// Starts the view's refresh from `store`, which runs until `stop`.
    pub(crate) fn start(store: HealthStore, stop: CancellationToken) -> Arc<Self> {
        let breakers = Self::none();
        let refreshing = breakers.clone();
        tokio::spawn(async move {
            loop {
                refreshing.refresh(&store).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REFRESH) => {}
                }
            }
        });
        breakers
    }

    async fn refresh(&self, store: &HealthStore) {
        match store.troubled().await {
            Ok(troubled) => {
                let now = Instant::now();
                let open: HashMap<Uuid, Instant> = troubled
                    .into_iter()
                    .filter(|t| t.state == BreakerState::Open && !t.wait.is_zero())
                    .map(|t| (t.webhook_id, now + t.wait))
                    .collect();
                let mut view = self.open.lock().unwrap_or_else(PoisonError::into_inner);
                self.any.store(!open.is_empty(), Ordering::Release);
                *view = open;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhooks' breakers; keeping the last view");
            }
        }
    }

    /// How long `webhook`'s breaker stays open still, if it is open.
    pub(crate) fn remaining(&self, webhook: Uuid) -> Option<Duration> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let until = *self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&webhook)?;
        let remaining = until.saturating_duration_since(Instant::now());
        (!remaining.is_zero()).then_some(remaining)
    }
}
