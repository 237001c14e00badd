//! The retry schedule: the delay before each attempt of a delivery.
//!
//! `5s,240s,480s` means: attempt 1 five seconds after Fire, attempt 2 four
//! minutes after attempt 1 failed, attempt 3 eight minutes after attempt 2
//! failed; at most three attempts. Each delay maps to one RabbitMQ delay
//! queue whose name carries the delay, so changing the schedule never
//! collides with queues a running broker already has.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The delays before attempts 1..=n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    delays: Vec<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the schedule is empty: give at least one delay, e.g. \"5s,240s,480s\"")]
    Empty,
    #[error(
        "schedule entry {index} ({entry:?}) is not a duration: use a number with unit ms, s, m or h, e.g. \"240s\""
    )]
    BadEntry { index: usize, entry: String },
    #[error(
        "schedule entry {index} ({entry:?}) is longer than 24h; RabbitMQ TTLs that long are not supported"
    )]
    TooLong { index: usize, entry: String },
    #[error("the schedule has {0} entries; at most 25 attempts are supported")]
    TooMany(usize),
}

/// What to do after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Publish attempt `attempt` to the delay queue of `delay`.
    Retry { attempt: u32, delay: Duration },
    /// The schedule is exhausted: the delivery has failed for good.
    GiveUp,
}

impl Schedule {
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if delays.len() > 25 {
            return Err(ScheduleError::TooMany(delays.len()));
        }
        for (index, d) in delays.iter().enumerate() {
            if *d > Duration::from_secs(24 * 3600) {
                return Err(ScheduleError::TooLong {
                    index,
                    entry: format_duration(*d),
                });
            }
        }
        Ok(Self { delays })
    }

    /// All delays, in attempt order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets at most.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32
    }

    /// The delay before the 1-based `attempt`, if the schedule has one.
    pub fn delay_before(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.delays.get(index).copied()
    }

    /// What follows a failed `attempt` (1-based).
    pub fn after_failure(&self, attempt: u32) -> RetryDecision {
        let next = attempt.saturating_add(1);
        match self.delay_before(next) {
            Some(delay) => RetryDecision::Retry {
                attempt: next,
                delay,
            },
            None => RetryDecision::GiveUp,
        }
    }
}

impl Default for Schedule {
    /// The schedule shops know from PARTS SOFT: 5 s, 240 s, 480 s.
    fn default() -> Self {
        Self {
            delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(240),
                Duration::from_secs(480),
            ],
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let delays = s
            .split(',')
            .enumerate()
            .map(|(index, entry)| {
                parse_duration(entry.trim()).ok_or_else(|| ScheduleError::BadEntry {
                    index,
                    entry: entry.trim().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(delays)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.delays.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses one delay with `humantime` (`250ms`, `5s`, `4m`, `1h`, and its
/// other forms such as `1m30s`), or a bare number of seconds.
///
/// humantime wants a unit after every number but `0`, while schedules have
/// always taken a bare number as seconds, so that form is read here first.
/// Delays become RabbitMQ TTLs, which count whole milliseconds, so a finer
/// delay (`1us`, `1.0005s`) is refused rather than silently rounded.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = s.parse().ok()?;
        return Some(Duration::from_millis(seconds.checked_mul(1_000)?));
    }
    let d = humantime::parse_duration(s).ok()?;
    d.subsec_nanos().is_multiple_of(1_000_000).then_some(d)
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_parts_soft_schedule() {
        let s = Schedule::default();
        assert_eq!(s.to_string(), "5s,240s,480s");
        assert_eq!(s.max_attempts(), 3);
        assert_eq!("5s,240s,480s".parse::<Schedule>().unwrap(), s);
    }

    #[test]
    fn parses_units_and_immediate_first_attempt() {
        let s: Schedule = "0s, 250ms,2m,1h".parse().unwrap();
        assert_eq!(
            s.delays(),
            &[
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert_eq!(s.to_string(), "0s,250ms,120s,3600s");
    }

    #[test]
    fn parses_every_form_schedules_have_accepted() {
        for (entry, expected) in [
            ("0", Duration::ZERO),
            ("7", Duration::from_secs(7)),
            ("0s", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("4m", Duration::from_secs(240)),
            ("1h", Duration::from_secs(3600)),
            ("0ms", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
        ] {
            assert_eq!(parse_duration(entry), Some(expected), "{entry:?}");
        }
        for entry in ["", "s", "-5s", "+5s", "soon", "5x", "1us", "1.0005s"] {
            assert_eq!(parse_duration(entry), None, "{entry:?}");
        }
        // Too large for milliseconds in a u64, as before.
        assert_eq!(parse_duration("18446744073709552"), None);
    }

    #[test]
    fn rejects_bad_schedules_with_the_entry() {
        assert_eq!("".parse::<Schedule>(), Err(ScheduleError::Empty));
        assert_eq!(
            "5s,soon".parse::<Schedule>(),
            Err(ScheduleError::BadEntry {
                index: 1,
                entry: "soon".into()
            })
        );
        assert!(matches!(
            "25h".parse::<Schedule>(),
            Err(ScheduleError::TooLong { .. })
        ));
        assert!("-5s".parse::<Schedule>().is_err());
        assert!("5d".parse::<Schedule>().is_err());
    }

    #[test]
    fn after_failure_walks_the_schedule_then_gives_up() {
        let s = Schedule::default();
        assert_eq!(s.delay_before(0), None);
        assert_eq!(s.delay_before(1), Some(Duration::from_secs(5)));
        assert_eq!(
            s.after_failure(1),
            RetryDecision::Retry {
                attempt: 2,
                delay: Duration::from_secs(240)
            }
        );
        assert_eq!(
            s.after_failure(2),
            RetryDecision::Retry {
                attempt: 3,
                delay: Duration::from_secs(480)
            }
        );
        assert_eq!(s.after_failure(3), RetryDecision::GiveUp);
        assert_eq!(s.after_failure(u32::MAX), RetryDecision::GiveUp);
    }

    /// Replays the schedule on tokio's paused clock: the instants at which
    /// attempts become due are the cumulative sums of the delays.
    #[tokio::test(start_paused = true)]
    async fn attempts_fall_due_on_the_schedule() {
        let s: Schedule = "5s,240s,480s".parse().unwrap();
        let fired = tokio::time::Instant::now();
        let mut due = Vec::new();
        let mut attempt = 1;
        tokio::time::sleep(s.delay_before(1).unwrap()).await;
        loop {
            due.push(fired.elapsed());
            match s.after_failure(attempt) {
                RetryDecision::Retry {
                    attempt: next,
                    delay,
                } => {
                    tokio::time::sleep(delay).await;
                    attempt = next;
                }
                RetryDecision::GiveUp => break,
            }
        }
        assert_eq!(
            due,
            vec![
                Duration::from_secs(5),
                Duration::from_secs(245),
                Duration::from_secs(725)
            ]
        );
    }
}
