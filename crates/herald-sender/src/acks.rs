//! Acks in batches: one `basic.ack` with `multiple` for every run of
//! finished deliveries, instead of one frame (and, on a quorum queue, one
//! Raft command) per delivery.
//!
//! A delivery is acked only after its attempt is stored and its retry
//! confirmed, as before: the task reports it *finished* and the flusher
//! sends the ack a millisecond or so later, together with its neighbours.
//! `multiple` acks every unacked tag up to the given one, so a multiple ack
//! only ever covers tags below the oldest delivery still being processed.
//! Finished deliveries above a slow one (a webhook that takes seconds) are
//! acked one by one after a short hold, so a slow delivery never keeps the
//! others unacked and the prefetch window full.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the flusher waits after a delivery finished for more to finish.
const COALESCE: Duration = Duration::from_millis(1);
/// How long a finished delivery above a slower one waits for its ack.
const MAX_HOLD: Duration = Duration::from_millis(10);
/// Finished deliveries above a slower one that are acked at once however
/// long they waited.
const MAX_HELD: usize = 64;

/// The ack state of one consumer channel.
pub(crate) struct Acks {
    channel: Channel,
    state: Mutex<State>,
    finished: Notify,
}

#[derive(Default)]
struct State {
    /// Received and still being processed.
    processing: BTreeSet<u64>,
    /// Finished (attempt stored, retry confirmed), ack not sent yet.
    finished: BTreeMap<u64, Instant>,
}

/// What one flush sends.
#[derive(Debug, PartialEq, Eq)]
struct Batch {
    /// Acks every unacked tag up to this one.
    multiple: Option<u64>,
    /// Acked one by one.
    single: Vec<u64>,
}

impl State {
    fn take_batch(&mut self, now: Instant) -> Batch {
        let lowest_processing = self.processing.first().copied();
        let below: Vec<u64> = match lowest_processing {
            Some(low) => self.finished.range(..low).map(|(tag, _)| *tag).collect(),
            None => self.finished.keys().copied().collect(),
        };
        for tag in &below {
            self.finished.remove(tag);
        }
        let single: Vec<u64> = if self.finished.len() >= MAX_HELD {
            self.finished.keys().copied().collect()
        } else {
            self.finished
                .iter()
                .filter(|(_, at)| now.duration_since(**at) >= MAX_HOLD)
                .map(|(tag, _)| *tag)
                .collect()
        };
        for tag in &single {
            self.finished.remove(tag);
        }
        Batch {
            multiple: below.last().copied(),
            single,
        }
    }
}

impl Acks {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            channel,
            state: Mutex::new(State::default()),
            finished: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery arrived (called in tag order, before its task starts).
    pub(crate) fn received(&self, tag: u64) {
        self.state().processing.insert(tag);
    }

    /// The delivery may be acked: its attempt is stored, its retry queued.
    pub(crate) fn finished(&self, tag: u64) {
        let mut state = self.state();
        state.processing.remove(&tag);
        state.finished.insert(tag, Instant::now());
        drop(state);
        self.finished.notify_one();
    }

    /// The delivery was settled on its own (nacked or rejected).
    pub(crate) fn settled(&self, tag: u64) {
        self.state().processing.remove(&tag);
        self.finished.notify_one();
    }

    /// Sends the acks that can be sent now.
    pub(crate) async fn flush(&self) -> Result<(), lapin::Error> {
        let batch = self.state().take_batch(Instant::now());
        if let Some(tag) = batch.multiple {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        for tag in batch.single {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await?;
        }
        Ok(())
    }

    /// Flushes as deliveries finish until `stop`; the caller flushes once
    /// more after the last delivery finished.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        loop {
            let holding = !self.state().finished.is_empty();
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.finished.notified() => {}
                () = tokio::time::sleep(MAX_HOLD), if holding => {}
            }
            tokio::time::sleep(COALESCE).await;
            if let Err(e) = self.flush().await {
                // The channel is gone; the broker redelivers what was unacked.
                tracing::warn!(error = %e, "acks could not be sent");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(processing: &[u64], finished: &[(u64, u64)], now: Instant) -> State {
        State {
            processing: processing.iter().copied().collect(),
            finished: finished
                .iter()
                .map(|(tag, ms_ago)| (*tag, now - Duration::from_millis(*ms_ago)))
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn finished_runs_below_the_oldest_in_process_go_in_one_multiple_ack() {
        let now = Instant::now() + Duration::from_secs(1);
        let mut s = state(&[5, 9], &[(1, 0), (2, 0), (4, 0), (6, 0), (7, 0)], now);
        assert_eq!(
            s.take_batch(now),
            Batch {
                multiple: Some(4),
                single: vec![]
            },
            "1, 2, 4 below 5 (3 was nacked on its own); 6 and 7 wait for 5"
        );
        // Once 6 and 7 were held long enough, they go one by one.
        let later = now + MAX_HOLD;
        assert_eq!(
            s.take_batch(later),
            Batch {
                multiple: None,
                single: vec![6, 7]
            }
        );
        assert!(s.finished.is_empty());
        // Nothing in process: everything finished goes at once.
        let mut s = state(&[], &[(10, 0), (11, 0)], now);
        assert_eq!(
            s.take_batch(now),
            Batch {
                multiple: Some(11),
                single: vec![]
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn many_finished_above_a_slow_delivery_are_acked_at_once() {
        let now = Instant::now() + Duration::from_secs(1);
        let finished: Vec<(u64, u64)> = (2..2 + MAX_HELD as u64).map(|t| (t, 0)).collect();
        let mut s = state(&[1], &finished, now);
        let batch = s.take_batch(now);
        assert_eq!(batch.multiple, None, "tag 1 is still in process");
        assert_eq!(batch.single.len(), MAX_HELD);
    }
}
