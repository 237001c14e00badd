//! Per-webhook concurrency: how many requests one sender has in flight to
//! one webhook at most, and when a delivery is parked instead of waiting.
//!
//! Without a limit, a target that hangs would soon hold every prefetch slot
//! (each waiting for its timeout) and deliveries to healthy webhooks would
//! queue behind it: head-of-line blocking. With it, a delivery whose webhook
//! is at its limit waits for a free slot as long as the webhook makes
//! progress (a request started or finished within the park-after window);
//! once it has made none for that long, the delivery is parked in the
//! parking delay queue (no attempt is made or recorded), freeing its
//! prefetch slot for other webhooks. A fast webhook under a burst frees
//! slots every few milliseconds, however many deliveries wait, so it is
//! never parked; a hanging one is parked at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

/// The in-flight limit of every webhook, for one sender.
pub(crate) struct WebhookLimits {
    per_webhook: usize,
    /// How long a webhook at its limit may go without progress before its
    /// waiting deliveries are parked.
    park_after: Duration,
    /// Time zero of the progress stamps.
    epoch: Instant,
    webhooks: Mutex<HashMap<Uuid, Arc<Slots>>>,
}

/// One webhook's request slots.
struct Slots {
    semaphore: Arc<Semaphore>,
    /// When a request to it last started or finished (µs since `epoch`).
    progress_us: AtomicU64,
}

/// A slot for one request; dropping it frees the slot and counts as progress.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
    epoch: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.mark(self.epoch);
    }
}

impl Slots {
    fn mark(&self, epoch: Instant) {
        let now = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.progress_us.fetch_max(now, Ordering::SeqCst);
    }

    fn idle_for(&self, epoch: Instant) -> Duration {
        let last = Duration::from_micros(self.progress_us.load(Ordering::SeqCst));
        epoch.elapsed().saturating_sub(last)
    }
}

impl WebhookLimits {
    pub(crate) fn new(per_webhook: usize, park_after: Duration) -> Self {
        Self {
            per_webhook: per_webhook.max(1),
            park_after,
            epoch: Instant::now(),
            webhooks: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one request to `webhook`, or `None` when the webhook is at
    /// its limit and has made no progress for the park-after window (the
    /// caller parks the delivery).
    pub(crate) async fn acquire(&self, webhook: Uuid) -> Option<Slot> {
        let slots = {
            let mut webhooks = self.webhooks.lock().unwrap_or_else(PoisonError::into_inner);
            webhooks
                .entry(webhook)
                .or_insert_with(|| {
                    Arc::new(Slots {
                        semaphore: Arc::new(Semaphore::new(self.per_webhook)),
                        progress_us: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        let slot = |permit| {
            slots.mark(self.epoch);
            Slot {
                _permit: permit,
                slots: slots.clone(),
                epoch: self.epoch,
            }
        };
        if let Ok(permit) = slots.semaphore.clone().try_acquire_owned() {
            return Some(slot(permit));
        }
        loop {
            let idle = slots.idle_for(self.epoch);
            if idle >= self.park_after {
                return None;
            }
            // Wait until the window since the last progress has passed, then
            // look again: progress in between means the webhook is busy,
            // not stuck, and the delivery keeps waiting its turn.
            let acquire = slots.semaphore.clone().acquire_owned();
            match tokio::time::timeout(self.park_after - idle, acquire).await {
                Ok(Ok(permit)) => return Some(slot(permit)),
                Ok(Err(_closed)) => return None,
                Err(_elapsed) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARK_AFTER: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn a_stuck_webhook_parks_while_others_proceed() {
        let limits = Arc::new(WebhookLimits::new(2, PARK_AFTER));
        let sick = Uuid::now_v7();
        let healthy = Uuid::now_v7();
        let _first = limits.acquire(sick).await.expect("slot 1");
        let _second = limits.acquire(sick).await.expect("slot 2");
        let started = Instant::now();
        assert!(
            limits.acquire(sick).await.is_none(),
            "a full webhook without progress parks the next delivery"
        );
        assert_eq!(started.elapsed(), PARK_AFTER, "after the park-after window");
        let started = Instant::now();
        assert!(limits.acquire(sick).await.is_none());
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "once stuck for the window, parked at once"
        );
        assert!(
            limits.acquire(healthy).await.is_some(),
            "another webhook has its own slots"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_webhook_that_makes_progress_is_never_parked() {
        let limits = Arc::new(WebhookLimits::new(2, PARK_AFTER));
        let busy = Uuid::now_v7();
        // 40 deliveries, each request taking 50 ms with 2 slots: the last
        // waits about a second, far past the window, but slots keep freeing.
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let limits = limits.clone();
                tokio::spawn(async move {
                    let slot = limits.acquire(busy).await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(slot);
                    Some(())
                })
            })
            .collect();
        let started = Instant::now();
        for task in tasks {
            assert!(
                task.await.expect("joined").is_some(),
                "a delivery was parked"
            );
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
    }
}
