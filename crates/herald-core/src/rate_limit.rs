//! A webhook's rate limit: how many requests per second the whole deployment
//! may send it, however many senders run, and how long a sender waits before
//! it asks the shared bucket for tokens again.
//!
//! The bucket itself lives in Postgres (herald-store's `RateBuckets`): every
//! sender takes tokens from the same row, so the limit holds for the fleet
//! whatever the number of senders and whichever of them holds the
//! deliveries. This module holds the parts that are plain arithmetic: the
//! limit as a parsed value, its default burst, and the wait until the bucket
//! has a batch worth asking for.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::ValidationError;

/// Highest rate a webhook may be limited to; above it a limit would cost
/// more bucket round trips than it saves a receiver.
pub const MAX_PER_SECOND: u32 = 100_000;

/// Shortest pause between two asks of one sender for one webhook's tokens;
/// it bounds the round trips an empty bucket costs.
pub const MIN_WAIT: Duration = Duration::from_millis(5);

/// Longest pause between two asks: a sender that was outrun by the others
/// looks again at least this often.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Requests per second, with a burst: a token bucket that holds at most
/// `burst` tokens and gains `per_second` each second. Over any window of
/// `t` seconds the receiver gets at most `burst + per_second × t` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl RateLimit {
    /// Parses a limit as an API receives it: `per_second` 0 means no limit
    /// (`None`); `burst` 0 means the default, [`RateLimit::default_burst`].
    pub fn parse(per_second: u32, burst: u32) -> Result<Option<Self>, ValidationError> {
        let Some(rate) = NonZeroU32::new(per_second) else {
            if burst != 0 {
                return Err(ValidationError::new(
                    "rate_limit.burst",
                    "is given without rate_limit.per_second; set the rate as well, or neither",
                ));
            }
            return Ok(None);
        };
        if per_second > MAX_PER_SECOND {
            return Err(ValidationError::new(
                "rate_limit.per_second",
                format!("{per_second} is above the maximum of {MAX_PER_SECOND}"),
            ));
        }
        if burst > per_second.saturating_mul(10) {
            return Err(ValidationError::new(
                "rate_limit.burst",
                format!(
                    "{burst} is more than ten seconds' worth of the rate ({per_second}/s); \
                     use at most {}",
                    per_second.saturating_mul(10)
                ),
            ));
        }
        let burst = NonZeroU32::new(burst).unwrap_or_else(|| Self::default_burst(rate));
        Ok(Some(Self {
            per_second: rate,
            burst,
        }))
    }

    /// The burst of a limit that names none: a fifth of a second's worth,
    /// at least 1. A receiver then sees the rate spread out rather than in
    /// one-second lumps, and a sender asks the shared bucket about five
    /// times a second per webhook when it runs at full pace.
    pub fn default_burst(per_second: NonZeroU32) -> NonZeroU32 {
        NonZeroU32::new(per_second.get().div_ceil(5)).unwrap_or(NonZeroU32::MIN)
    }

    pub fn per_second(self) -> u32 {
        self.per_second.get()
    }

    pub fn burst(self) -> u32 {
        self.burst.get()
    }

    /// How long to wait before asking the bucket again, after an ask for
    /// `wanted` tokens left `remaining` (fractional) tokens in it and gave
    /// none: until the bucket holds as many as are wanted (never more than
    /// a burst), within [`MIN_WAIT`] and [`MAX_WAIT`]. Waiting for a batch
    /// rather than for one token keeps the round trips to a few per second
    /// at any rate.
    pub fn wait_after_empty(self, remaining: f64, wanted: u32) -> Duration {
        let batch = f64::from(wanted.clamp(1, self.burst()));
        let missing = (batch - remaining).max(0.0);
        let seconds = missing / f64::from(self.per_second());
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_WAIT)
            .clamp(MIN_WAIT, MAX_WAIT)
    }

    /// How many deliveries of one webhook a sender keeps waiting for tokens
    /// at most; further ones are parked, so that a backlog of a limited
    /// webhook cannot hold every prefetch slot of a sender. Two seconds'
    /// worth: enough that parking never starves the bucket, since parked
    /// deliveries come back within the parking delay.
    pub fn max_waiting(self) -> usize {
        usize::try_from(self.per_second().saturating_mul(2).max(self.burst())).unwrap_or(usize::MAX)
    }
}

/// Reads a limit as people write it on a command line or in a variable:
/// `PER_SECOND`, `PER_SECOND/BURST`, or `none` (the same as `0`: no limit).
/// Returns the two numbers as an API takes them; [`RateLimit::parse`]
/// checks their ranges.
pub fn parse_spec(text: &str) -> Result<(u32, u32), String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok((0, 0));
    }
    let number = |part: &str, what: &str| {
        part.trim().parse::<u32>().map_err(|_| {
            format!("{what} {part:?} is not a whole number; write e.g. 50, 50/20 or none")
        })
    };
    match text.split_once('/') {
        Some((rate, burst)) => Ok((number(rate, "rate")?, number(burst, "burst")?)),
        None => Ok((number(text, "rate")?, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit::parse(per_second, burst).unwrap().unwrap()
    }

    #[test]
    fn parses_what_an_api_sends() {
        assert_eq!(RateLimit::parse(0, 0).unwrap(), None, "0 = no limit");
        let l = limit(50, 0);
        assert_eq!(
            (l.per_second(), l.burst()),
            (50, 10),
            "default burst: a fifth"
        );
        assert_eq!(limit(1, 0).burst(), 1, "at least one");
        assert_eq!(limit(3, 0).burst(), 1);
        assert_eq!(limit(6, 0).burst(), 2, "rounded up");
        assert_eq!(limit(50, 500).burst(), 500, "ten seconds' worth is allowed");
        for (per_second, burst, field) in [
            (0, 5, "rate_limit.burst"),
            (MAX_PER_SECOND + 1, 0, "rate_limit.per_second"),
            (50, 501, "rate_limit.burst"),
        ] {
            let e = RateLimit::parse(per_second, burst).unwrap_err();
            assert_eq!(e.field, field, "{per_second}/{burst}: {e}");
        }
    }

    #[test]
    fn waits_for_a_batch_within_bounds() {
        let l = limit(50, 10);
        // (remaining, wanted, wait)
        let table = [
            (0.0, 10, Duration::from_millis(200)),
            (0.0, 100, Duration::from_millis(200)),
            (0.5, 1, Duration::from_millis(10)),
            (0.99, 1, MIN_WAIT),
            (5.0, 10, Duration::from_millis(100)),
            (0.0, 0, Duration::from_millis(20)),
        ];
        for (remaining, wanted, expected) in table {
            let wait = l.wait_after_empty(remaining, wanted);
            let diff = wait.abs_diff(expected);
            assert!(
                diff < Duration::from_micros(100),
                "{remaining}/{wanted}: {wait:?}, not {expected:?}"
            );
        }
        assert_eq!(limit(1, 1).wait_after_empty(0.0, 1), MAX_WAIT);
        assert_eq!(limit(100_000, 0).wait_after_empty(0.0, 1), MIN_WAIT);
    }

    #[test]
    fn reads_what_people_write() {
        assert_eq!(parse_spec("50"), Ok((50, 0)));
        assert_eq!(parse_spec("50/20"), Ok((50, 20)));
        assert_eq!(parse_spec(" 7 / 3 "), Ok((7, 3)));
        assert_eq!(parse_spec("none"), Ok((0, 0)));
        assert_eq!(parse_spec("0"), Ok((0, 0)));
        assert!(parse_spec("fast").unwrap_err().contains("50/20"));
        assert!(parse_spec("50/").is_err());
        assert!(parse_spec("-1").is_err());
    }

    #[test]
    fn keeps_two_seconds_waiting() {
        assert_eq!(limit(50, 0).max_waiting(), 100);
        assert_eq!(limit(1, 10).max_waiting(), 10, "at least a burst");
    }
}
