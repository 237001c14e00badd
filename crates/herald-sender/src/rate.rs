//! Rate limits per webhook, held for the whole deployment: before a
//! request to a rate-limited webhook starts, it takes a token, and the
//! tokens come from the webhook's one bucket in Postgres
//! (`herald_store::RateBuckets`) that every sender shares.
//!
//! A sender asks the bucket for as many tokens as it has deliveries waiting
//! (one ask per webhook at a time), keeps what it got as local permits, and
//! when the bucket is empty waits until a batch has refilled before asking
//! again, so a webhook at full pace costs a few round trips a second per
//! sender, and a webhook without a limit none at all. A sender that holds
//! more deliveries of one webhook than two seconds' worth parks the rest
//! (the parking delay queue, no attempt), so a backlog of a limited webhook
//! cannot take every prefetch slot from the others, and the deliveries
//! spread back over whichever senders have room.
//!
//! This module decides nothing about retries, and a delivery held back here
//! is never an attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use herald_core::RateLimit;
use herald_core::rate_limit::MAX_WAIT;
use herald_store::RateBuckets;
use metrics::Counter;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// What to do with a delivery after its turn at the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// It holds a token: the request may start.
    Go,
    /// Too many of this webhook's deliveries wait here already (or the
    /// bucket cannot be reached): park it.
    Park,
}

/// The rate limits of every webhook, for one sender.
pub(crate) struct RateLimiter {
    buckets: RateBuckets,
    webhooks: Mutex<HashMap<Uuid, Arc<Local>>>,
    waited: Counter,
    parked: Counter,
}

/// One webhook's side of the limit in this sender.
struct Local {
    /// Tokens this sender took from the bucket and has not used yet.
    permits: Semaphore,
    /// Held by the one delivery that asks the bucket for more.
    asking: tokio::sync::Mutex<()>,
    /// Deliveries waiting for a token here.
    waiting: AtomicUsize,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            permits: Semaphore::new(0),
            asking: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// Counts a delivery as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RateLimiter {
    pub(crate) fn new(buckets: RateBuckets) -> Self {
        let counted =
            |what: &'static str| metrics::counter!("herald_rate_limited_total", "outcome" => what);
        Self {
            buckets,
            webhooks: Mutex::new(HashMap::new()),
            waited: counted("waited"),
            parked: counted("parked"),
        }
    }

    /// Waits for a token of `webhook`'s bucket under `limit`. With
    /// `may_park`, a delivery beyond the ones this sender keeps waiting is
    /// told to park instead; without it (ordered deliveries, which wait in
    /// the sender anyway) it waits however long it takes.
    pub(crate) async fn turn(&self, webhook: Uuid, limit: RateLimit, may_park: bool) -> Turn {
        let local = {
            let mut webhooks = self.webhooks.lock().unwrap_or_else(PoisonError::into_inner);
            webhooks.entry(webhook).or_default().clone()
        };
        if let Ok(permit) = local.permits.try_acquire() {
            permit.forget();
            return Turn::Go;
        }
        if may_park && local.waiting.load(Ordering::SeqCst) >= limit.max_waiting() {
            self.parked.increment(1);
            return Turn::Park;
        }
        self.waited.increment(1);
        let _waiting = Waiting::new(&local.waiting);
        loop {
            tokio::select! {
                biased;
                permit = local.permits.acquire() => {
                    if let Ok(permit) = permit {
                        permit.forget();
                    }
                    return Turn::Go;
                }
                asking = local.asking.lock() => {
                    if let Ok(permit) = local.permits.try_acquire() {
                        permit.forget();
                        return Turn::Go;
                    }
                    let wanted = u32::try_from(local.waiting.load(Ordering::SeqCst))
                        .unwrap_or(u32::MAX)
                        .clamp(1, limit.burst());
                    match self.buckets.take(webhook, limit, wanted).await {
                        Ok(take) if take.granted > 0 => {
                            // One for this delivery, the rest for those
                            // waiting behind it.
                            let rest = usize::try_from(take.granted - 1).unwrap_or(0);
                            local.permits.add_permits(rest);
                            return Turn::Go;
                        }
                        Ok(take) => {
                            tokio::time::sleep(limit.wait_after_empty(take.remaining, wanted)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, %webhook, "the rate-limit bucket cannot be read");
                            if may_park {
                                self.parked.increment(1);
                                return Turn::Park;
                            }
                            tokio::time::sleep(MAX_WAIT).await;
                        }
                    }
                    drop(asking);
                }
            }
        }
    }
}

/// A webhook's limit in force: its own, or else the senders' default.
pub(crate) fn limit_of(
    webhook: &herald_core::Webhook,
    default: Option<RateLimit>,
) -> Option<RateLimit> {
    webhook.rate_limit.or(default)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long a test may wait for one token at most (generous: a loaded
    /// CI host is slow).
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A limiter on a database the test creates and drops itself.
    struct Db {
        admin: herald_store::Pool,
        name: String,
        limiter: RateLimiter,
        webhook: Uuid,
    }

    async fn db() -> Db {
        let admin_url = std::env::var("HERALD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = herald_store::pool(&admin_url, 1).unwrap();
        let name = format!("herald_sender_rate_{}", Uuid::new_v4().simple());
        admin
            .get()
            .await
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = herald_store::with_database(&admin_url, &name);
        herald_store::migrate(&url).await.unwrap();
        let pool = herald_store::pool(&url, 4).unwrap();
        let webhook = Uuid::now_v7();
        pool.get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO webhooks (id, event, method, url) \
                 VALUES ($1, 'order.created', 'POST', 'https://example.com/')",
                &[&webhook],
            )
            .await
            .unwrap();
        Db {
            admin,
            name,
            limiter: RateLimiter::new(RateBuckets::new(pool)),
            webhook,
        }
    }

    impl Db {
        async fn drop_database(self) {
            let Db {
                admin,
                name,
                limiter,
                ..
            } = self;
            drop(limiter);
            admin
                .get()
                .await
                .unwrap()
                .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_limiters_share_one_bucket_and_park_the_excess() {
        let first = db().await;
        let a = Arc::new(RateLimiter::new(first.limiter.buckets.clone()));
        let b = Arc::new(RateLimiter::new(first.limiter.buckets.clone()));
        let limit = RateLimit::parse(20, 4).unwrap().unwrap();
        let started = tokio::time::Instant::now();
        // 44 turns over two "senders", 11 at a time each: the burst of 4 at
        // once, then 20/s.
        let turns = |limiter: Arc<RateLimiter>, webhook| async move {
            let mut tasks = Vec::new();
            for _ in 0..11 {
                let limiter = limiter.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..2 {
                        let turn = limiter.turn(webhook, limit, false);
                        let turn = tokio::time::timeout(PATIENCE, turn).await;
                        assert_eq!(turn.unwrap(), Turn::Go);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            22
        };
        let (x, y) = tokio::join!(turns(a.clone(), first.webhook), turns(b, first.webhook));
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(x + y, 44);
        // 40 tokens beyond the burst at 20/s take 2 s: never less.
        assert!(
            elapsed >= 1.9,
            "44 turns in {elapsed:.2} s is over the limit"
        );
        assert!(elapsed < 4.0, "44 turns took {elapsed:.2} s");

        // With more waiting than two seconds' worth, the next one parks.
        let tight = RateLimit::parse(1, 1).unwrap().unwrap();
        let limiter = a;
        // At most one of three gets the bucket's one token at once.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.turn(first.webhook, tight, true).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            limiter.turn(first.webhook, tight, true).await,
            Turn::Park,
            "one more beyond 2 s of a 1/s limit parks"
        );
        for waiter in waiters {
            waiter.abort();
        }
        first.drop_database().await;
    }
}
