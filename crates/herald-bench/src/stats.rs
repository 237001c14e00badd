//! Load generators (closed loop, open loop), latency summaries and the
//! median that several runs are judged on.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a load loop observed.
#[derive(Debug, Default)]
pub struct LoopOutcome {
    pub elapsed: Duration,
    /// Latency of every successful operation.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl LoopOutcome {
    pub fn ok(&self) -> usize {
        self.latencies.len()
    }

    pub fn rate(&self) -> f64 {
        per_second(self.ok(), self.elapsed)
    }

    pub fn summary(&mut self) -> Latency {
        Latency::of(&mut self.latencies)
    }
}

pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        Self {
            p50_ms: ms(percentile(samples, 50.0)),
            p99_ms: ms(percentile(samples, 99.0)),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `total` operations with `concurrency` workers, each starting its
/// next operation as soon as the previous one finished. `op(i, started)`
/// gets the operation's index and start time.
pub async fn closed_loop<F, Fut>(total: usize, concurrency: usize, op: F) -> LoopOutcome
where
    F: Fn(usize, Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let op = op.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut outcome = LoopOutcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    match op(i, t).await {
                        Ok(()) => outcome.latencies.push(t.elapsed()),
                        Err(e) => {
                            outcome.errors += 1;
                            outcome.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let mut all = LoopOutcome::default();
    for worker in workers {
        if let Ok(outcome) = worker.await {
            merge(&mut all, outcome);
        }
    }
    all.elapsed = started.elapsed();
    all
}

/// Starts operation `i` at `start + i / rate` whether or not earlier ones
/// finished (open loop), so back-pressure cannot hide latency; each latency
/// is measured from the scheduled start.
pub async fn open_loop<F, Fut>(total: usize, rate: f64, op: F) -> LoopOutcome
where
    F: Fn(usize, Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now() + Duration::from_millis(10);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let result = op(i, scheduled).await;
            (result, scheduled.elapsed())
        }));
    }
    let mut all = LoopOutcome::default();
    for task in tasks {
        match task.await {
            Ok((Ok(()), latency)) => all.latencies.push(latency),
            Ok((Err(e), _)) => {
                all.errors += 1;
                all.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    all.elapsed = started.elapsed();
    all
}

fn merge(all: &mut LoopOutcome, outcome: LoopOutcome) {
    all.latencies.extend(outcome.latencies);
    all.errors += outcome.errors;
    if all.first_error.is_none() {
        all.first_error = outcome.first_error;
    }
}

/// The median of `values` (the upper one of an even count; 0 for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let latency = Latency::of(&mut samples);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[tokio::test]
    async fn closed_loop_runs_every_operation_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let outcome = closed_loop(100, 8, move |i, _| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(i);
                if i == 7 {
                    anyhow::bail!("seven")
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(outcome.ok(), 99);
        assert_eq!(outcome.errors, 1);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_upper_middle_one() {
        assert_eq!(median([0.9, 0.7, 1.0]), 0.9);
        assert_eq!(median([0.8, 0.6]), 0.8);
        assert_eq!(median([0.5]), 0.5);
        assert_eq!(median([]), 0.0);
    }
}
