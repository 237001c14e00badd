//! The jittered exponential back-off every reconnect, rewrite and accept
//! loop uses (the configuration watcher, the attempt writer, the sender's
//! consumer, the probe endpoint's accept loop).
//!
//! It owns only the sequence of waits, built on `backon`'s exponential
//! back-off. It must never sleep or read a clock itself: the loops that use
//! it sleep on tokio's timer, so they can be tested on paused time.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Waits from [`Backoff::MIN`] up to [`Backoff::MAX`], doubling, each with a
/// random part so that many clients that lost the same server at once do
/// not all come back at the same instant.
///
/// The first wait is short because most failures are a single dropped
/// connection; the cap keeps a long outage from being noticed late once it
/// is over.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    waits: ExponentialBackoff,
}

impl Backoff {
    /// The shortest wait: the first one is between this and twice this.
    pub const MIN: Duration = Duration::from_millis(100);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(5);

    /// Waits from [`Backoff::MIN`] to [`Backoff::MAX`]: for reconnecting to
    /// a server.
    pub fn new() -> Self {
        Self::between(Self::MIN, Self::MAX)
    }

    /// Waits from `min` (the first is between it and twice it) up to `max`,
    /// for a loop whose retries are cheaper or costlier than a reconnect
    /// (an accept loop starts at a few milliseconds).
    pub fn between(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            waits: Self::builder(min, max).build(),
        }
    }

    /// `backon` adds a jitter of up to the whole delay (a delay `d` becomes
    /// `d..2d`), so the delay itself stops doubling at half the cap: waits
    /// at the cap then still spread over `max / 2..max`.
    fn builder(min: Duration, max: Duration) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    /// The wait before the next try; the one after is about twice as long.
    pub fn next_delay(&mut self) -> Duration {
        // Without a maximum number of tries the iterator never ends; the
        // clamp keeps float rounding in the jitter from passing the bounds.
        self.waits
            .next()
            .unwrap_or(self.max)
            .clamp(self.min, self.max)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.waits = Self::builder(self.min, self.max).build();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_start_over() {
        for _ in 0..100 {
            let mut backoff = Backoff::new();
            let waits: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
            // The un-jittered delays are 100 ms, 200 ms, ... 1.6 s, then 2.5 s
            // for good; each wait is that delay plus up to as much again.
            let mut base = Backoff::MIN;
            for (n, wait) in waits.iter().enumerate() {
                assert!(
                    *wait >= base && *wait <= (base * 2).min(Backoff::MAX),
                    "wait {n} is {wait:?}, expected {base:?}..{:?}",
                    base * 2
                );
                base = (base * 2).min(Backoff::MAX / 2);
            }
            backoff.reset();
            assert!(backoff.next_delay() < Backoff::MIN * 2, "starts over");
        }
    }

    #[test]
    fn waits_are_spread() {
        let firsts: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| Backoff::new().next_delay()).collect();
        assert!(firsts.len() > 1, "twenty first waits were all {firsts:?}");
    }

    /// A reconnect loop as the services write it, on tokio's paused clock:
    /// ten failed tries take between the sum of the un-jittered delays and
    /// twice that, and no single wait passes the cap.
    #[tokio::test(start_paused = true)]
    async fn a_retry_loop_on_paused_time_stays_within_the_bounds() {
        let mut backoff = Backoff::new();
        let start = tokio::time::Instant::now();
        let mut longest = Duration::ZERO;
        for _ in 0..10 {
            let before = tokio::time::Instant::now();
            tokio::time::sleep(backoff.next_delay()).await;
            longest = longest.max(before.elapsed());
        }
        let took = start.elapsed();
        // 100 + 200 + 400 + 800 + 1600 ms, then five times 2.5 s.
        // The timer rounds each sleep up to the next millisecond.
        let tick = Duration::from_millis(1);
        let base = Duration::from_millis(3_100) + Duration::from_millis(12_500);
        assert!(
            took >= base && took <= base * 2 + tick * 10,
            "ten tries took {took:?}"
        );
        assert!(longest <= Backoff::MAX + tick, "a wait of {longest:?}");
    }
}
