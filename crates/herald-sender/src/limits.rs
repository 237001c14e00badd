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
    semaphores: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

impl WebhookLimits {
    pub(crate) fn new(per_webhook: usize, wait: Duration) -> Self {
        Self {
            per_webhook: per_webhook.max(1),
            wait,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one request to `webhook`, or `None` when the webhook stayed
    /// at its limit for the whole wait (the caller parks the delivery).
    pub(crate) async fn acquire(&self, webhook: Uuid) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut semaphores = self
                .semaphores
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            semaphores
                .entry(webhook)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_webhook)))
                .clone()
        };
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(self.wait, semaphore.acquire_owned())
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
        // A slot freed during the wait is taken instead of parking.
        let waiter = tokio::spawn({
            let limits = Arc::new(limits);
            async move { limits.acquire(sick).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert!(waiter.await.expect("joined"));
    }
}
