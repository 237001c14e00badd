//! Per-webhook concurrency: how many requests one sender has in flight to
//! one webhook at most.
//!
//! Without a limit, a target that hangs would soon hold every prefetch slot
//! (each waiting for its timeout) and deliveries to healthy webhooks would
//! queue behind it: head-of-line blocking. With it, a delivery whose webhook
//! is at its limit waits briefly for a free slot and is otherwise parked in
//! the deferral delay queue (no attempt is made or recorded), freeing its
//! prefetch slot for other webhooks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The in-flight limit of every webhook, for one sender.
pub(crate) struct WebhookLimits {
    per_webhook: usize,
    /// How long a delivery waits for a free slot before it is parked. Long
    /// enough that a fast webhook under a burst (slots freed every few
    /// milliseconds) is never parked; short enough that deliveries to a
    /// hanging webhook do not hold prefetch slots for long.
    wait: Duration,
    webhooks: Mutex<HashMap<Uuid, Arc<Slots>>>,
}

/// One webhook's request slots and the deliveries waiting for one.
struct Slots {
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Decrements the waiting count however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WebhookLimits {
    pub(crate) fn new(per_webhook: usize, wait: Duration) -> Self {
        Self {
            per_webhook: per_webhook.max(1),
            wait,
            webhooks: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one request to `webhook`, or `None` when the webhook stayed
    /// at its limit for the whole wait (the caller parks the delivery).
    pub(crate) async fn acquire(&self, webhook: Uuid) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut webhooks = self.webhooks.lock().unwrap_or_else(PoisonError::into_inner);
            webhooks
                .entry(webhook)
                .or_insert_with(|| {
                    Arc::new(Slots {
                        semaphore: Arc::new(Semaphore::new(self.per_webhook)),
                        waiting: AtomicUsize::new(0),
                    })
                })
                .clone()
        };
        if let Ok(permit) = slots.semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        // As many deliveries as the webhook has slots are already waiting:
        // this one could not get a slot within the wait anyway, so it is
        // parked at once instead of holding a prefetch slot for nothing.
        if slots.waiting.fetch_add(1, Ordering::SeqCst) >= self.per_webhook {
            slots.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let _waiting = Waiting(&slots.waiting);
        tokio::time::timeout(self.wait, slots.semaphore.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_webhook_parks_while_others_proceed() {
        let limits = WebhookLimits::new(2, Duration::from_millis(200));
        let sick = Uuid::now_v7();
        let healthy = Uuid::now_v7();
        let first = limits.acquire(sick).await.expect("slot 1");
        let _second = limits.acquire(sick).await.expect("slot 2");
        assert!(
            limits.acquire(sick).await.is_none(),
            "the third request to a full webhook is parked after the wait"
        );
        assert!(
            limits.acquire(healthy).await.is_some(),
            "another webhook has its own slots"
        );
        // A slot freed during the wait is taken instead of parking; while
        // as many deliveries wait as there are slots, more are parked at once.
        let limits = Arc::new(limits);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limits = limits.clone();
                // The permit is returned, so it stays taken until the end.
                tokio::spawn(async move { limits.acquire(sick).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = tokio::time::Instant::now();
        assert!(limits.acquire(sick).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO, "parked without waiting");
        tokio::time::sleep(Duration::from_millis(40)).await;
        drop(first);
        let got: Vec<bool> = futures_util::future::join_all(waiters)
            .await
            .into_iter()
            .map(|r| r.expect("joined").is_some())
            .collect();
        assert_eq!(
            got.iter().filter(|g| **g).count(),
            1,
            "one waiter got the freed slot, the other was parked after the wait: {got:?}"
        );
    }
}
