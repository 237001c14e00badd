//! The retry decision: what happens to a delivery after one of its attempts
//! (or after it could not even be attempted because its webhook was busy).
//!
//! [`decide`] is the only place that rule lives. It takes the attempt's
//! [`Outcome`], the attempt number, the schedule and the delay queues the
//! broker has declared, and returns the [`Next`] step; the sender carries that
//! step out and decides nothing itself. Queue names, publishing and acks are
//! herald-queue's and herald-sender's business: this module must never touch
//! them, nor do I/O or read a clock, so every case is a plain table test.
//!
//! The rule, in short:
//! - any 2xx answer delivers the webhook;
//! - any other answer, a timeout or a connection error is retried on the
//!   schedule until it is exhausted (Herald's documented behaviour: 3xx and
//!   4xx answers are retried too, unlike svix, which gives up on them);
//! - a request that cannot be built, or a target the SSRF policy refuses,
//!   fails at once: another attempt could not change it;
//! - a `Retry-After` on a 429 or 503 answer makes the next attempt wait at
//!   least that long, never less than the schedule says;
//! - a delivery whose webhook has its maximum of requests in flight is
//!   parked: it waits [`PARK_DELAY`] and comes back without an attempt;
//! - a delivery whose webhook's circuit breaker is open is parked until
//!   about the end of the cool-down (see [`DelayQueues::for_breaker`]), also
//!   without an attempt.

use std::time::Duration;

use crate::delivery::ErrorKind;
use crate::schedule::{RetryDecision, Schedule};

/// How long a parked delivery waits before it is offered to senders again.
///
/// Long enough that a hanging webhook's parked deliveries cost little broker
/// work while they circle; a parked delivery is late by at most this much
/// once its webhook has a free slot again. It always has a delay queue of
/// its own (see [`DelayQueues`]).
pub const PARK_DELAY: Duration = Duration::from_secs(5);

/// The delay queue every broker also has for deliveries held by an open
/// circuit breaker: the default cool-down.
///
/// Without it, a dead webhook's deliveries would circle through the
/// [`PARK_DELAY`] queue six times per 30-second cool-down, each round a
/// publish, a dead-lettering and a consume; the bench measured that churn
/// taking a third of the healthy webhooks' rate (docs/performance.md).
pub const BREAKER_PARK_DELAY: Duration = Duration::from_secs(30);

/// What became of one attempt of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No attempt was made: the webhook already has its maximum of requests
    /// in flight, or more of its deliveries wait for its rate limit than a
    /// sender keeps.
    Busy,
    /// No attempt was made: the webhook's circuit breaker is open for
    /// `remaining` still (zero: its probe is out elsewhere).
    BreakerOpen { remaining: Duration },
    /// The target answered 2xx.
    Delivered,
    /// The attempt failed.
    Failed {
        /// What kind of failure it was.
        kind: ErrorKind,
        /// The answer's status, if the target answered.
        status: Option<u16>,
        /// The pause the target asked for in `Retry-After`, if any. It
        /// counts only on the statuses [`honours_retry_after`] names.
        retry_after: Option<Duration>,
    },
}

/// What happens to the delivery next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: the delivery is finished.
    Succeed,
    /// Attempt `attempt` is made after `delay`, which is a declared delay
    /// queue's (or zero: straight back to the work queue).
    Retry { attempt: u32, delay: Duration },
    /// The same message comes back after `delay` without an attempt; parking
    /// is not an attempt and records nothing.
    Park { delay: Duration },
    /// The delivery has failed for good.
    Fail,
}

/// What to do when Postgres refuses, as data, the record of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfRefused {
    /// Something else carries the delivery on: a queued retry makes its
    /// attempts on schedule (and a park records nothing); the message may be
    /// acked once that retry is confirmed.
    CarryOn,
    /// The delivery ends here and its record cannot be kept: the message
    /// goes to the dead-letter queue, so that an operator sees it.
    DeadLetter,
}

impl Next {
    /// What to do when the record of this step cannot be stored.
    pub fn when_record_refused(self) -> IfRefused {
        match self {
            Self::Retry { .. } | Self::Park { .. } => IfRefused::CarryOn,
            Self::Succeed | Self::Fail => IfRefused::DeadLetter,
        }
    }
}

/// Whether a `Retry-After` header on an answer of `status` asks Herald for a
/// pause: only "too many requests" and "unavailable" do; on other answers
/// the header means nothing to a sender.
pub fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// The delays that have a delay queue on the broker: every non-zero delay of
/// the schedule, [`PARK_DELAY`] and [`BREAKER_PARK_DELAY`]. Only those can be waited, so every
/// delay [`decide`] returns is one of them (or zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayQueues {
    /// Sorted, without duplicates, none zero; never empty (the parking
    /// delays are always there).
    delays: Vec<Duration>,
}

impl DelayQueues {
    /// The delay queues a broker running `schedule` has.
    pub fn for_schedule(schedule: &Schedule) -> Self {
        let mut delays: Vec<Duration> = schedule
            .delays()
            .iter()
            .copied()
            .filter(|d| !d.is_zero())
            .chain([PARK_DELAY, BREAKER_PARK_DELAY])
            .collect();
        delays.sort();
        delays.dedup();
        Self { delays }
    }

    /// Every declared delay, shortest first.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The wait of the queue for a delivery that should come back after
    /// about `delay` but not later: the longest declared delay within it,
    /// and never shorter than [`PARK_DELAY`] (so that parked deliveries do
    /// not circle faster than that).
    pub fn at_most(&self, delay: Duration) -> Duration {
        self.delays
            .iter()
            .copied()
            .filter(|d| *d >= PARK_DELAY && *d <= delay)
            .max()
            .unwrap_or(PARK_DELAY)
    }

    /// The wait of the queue for a delivery held by a breaker that stays open
    /// for `remaining` still (zero: its probe is out elsewhere).
    ///
    /// The shortest declared delay that covers the rest of the cool-down,
    /// when it is at most one and a half times that rest; otherwise the
    /// longest one within it ([`Self::at_most`]). So a held delivery is back
    /// at most half the rest it was parked for after the cool-down ends (and
    /// at most [`PARK_DELAY`] late when less than that was left), and it
    /// circles about once per cool-down rather than once per [`PARK_DELAY`].
    pub fn for_breaker(&self, remaining: Duration) -> Duration {
        let covering = self.at_least(remaining.max(PARK_DELAY));
        if covering >= remaining && covering * 2 <= remaining * 3 {
            covering
        } else {
            self.at_most(remaining)
        }
    }

    /// The wait of the queue for a delivery that must wait at least `delay`:
    /// the shortest declared delay that is as long, or the longest one when
    /// none is (a `Retry-After` longer than every queue). Zero stays zero:
    /// nothing to wait for.
    pub fn at_least(&self, delay: Duration) -> Duration {
        if delay.is_zero() {
            return Duration::ZERO;
        }
        self.delays
            .iter()
            .copied()
            .find(|d| *d >= delay)
            .or_else(|| self.delays.last().copied())
            .unwrap_or(PARK_DELAY)
    }
}

/// What follows `outcome` of the 1-based `attempt` of a delivery, under
/// `schedule`, with `delays` the delay queues the broker has.
pub fn decide(outcome: Outcome, attempt: u32, schedule: &Schedule, delays: &DelayQueues) -> Next {
    match outcome {
        Outcome::Busy => Next::Park {
            delay: delays.at_least(PARK_DELAY),
        },
        Outcome::BreakerOpen { remaining } => Next::Park {
            delay: delays.for_breaker(remaining),
        },
        Outcome::Delivered => Next::Succeed,
        Outcome::Failed {
            kind,
            status,
            retry_after,
        } => {
            if !kind.is_retryable() {
                return Next::Fail;
            }
            match schedule.after_failure(attempt) {
                RetryDecision::GiveUp => Next::Fail,
                RetryDecision::Retry {
                    attempt: next,
                    delay,
                } => {
                    // A target that asked for a pause gets at least that,
                    // and never sooner than the schedule says.
                    let asked = match (status, retry_after) {
                        (Some(status), Some(pause)) if honours_retry_after(status) => {
                            delay.max(pause)
                        }
                        _ => delay,
                    };
                    Next::Retry {
                        attempt: next,
                        delay: delays.at_least(asked),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn status(status: u16) -> Outcome {
        Outcome::Failed {
            kind: ErrorKind::HttpStatus,
            status: Some(status),
            retry_after: None,
        }
    }

    fn pause(status: u16, after: Duration) -> Outcome {
        Outcome::Failed {
            kind: ErrorKind::HttpStatus,
            status: Some(status),
            retry_after: Some(after),
        }
    }

    fn error(kind: ErrorKind) -> Outcome {
        Outcome::Failed {
            kind,
            status: None,
            retry_after: None,
        }
    }

    fn retry(attempt: u32, delay: Duration) -> Next {
        Next::Retry { attempt, delay }
    }

    /// Each case: what happened, the attempt it happened to, what follows.
    /// The schedule is the default one (5 s, 240 s, 480 s: three attempts).
    #[test]
    fn every_outcome_gets_its_next_step() {
        let schedule = Schedule::default();
        let delays = DelayQueues::for_schedule(&schedule);
        let cases: &[(&str, Outcome, u32, Next)] = &[
            (
                "a 2xx answer delivers",
                Outcome::Delivered,
                1,
                Next::Succeed,
            ),
            (
                "a 2xx answer on the last attempt delivers",
                Outcome::Delivered,
                3,
                Next::Succeed,
            ),
            ("a 500 is retried", status(500), 1, retry(2, secs(240))),
            ("a 502 is retried", status(502), 2, retry(3, secs(480))),
            (
                "a 503 without a pause is retried",
                status(503),
                1,
                retry(2, secs(240)),
            ),
            ("a 408 is retried", status(408), 1, retry(2, secs(240))),
            ("a 429 is retried", status(429), 1, retry(2, secs(240))),
            (
                "a 400 is retried like any non-2xx answer",
                status(400),
                1,
                retry(2, secs(240)),
            ),
            ("a 404 is retried", status(404), 2, retry(3, secs(480))),
            (
                "a redirect is not followed but retried",
                status(301),
                1,
                retry(2, secs(240)),
            ),
            (
                "a timeout is retried",
                error(ErrorKind::Timeout),
                1,
                retry(2, secs(240)),
            ),
            (
                "a connection error is retried",
                error(ErrorKind::Connection),
                2,
                retry(3, secs(480)),
            ),
            (
                "a request that cannot be built fails at once",
                error(ErrorKind::InvalidRequest),
                1,
                Next::Fail,
            ),
            (
                "a refused target fails at once",
                error(ErrorKind::Refused),
                1,
                Next::Fail,
            ),
            (
                "a 500 on the last attempt fails",
                status(500),
                3,
                Next::Fail,
            ),
            (
                "a timeout on the last attempt fails",
                error(ErrorKind::Timeout),
                3,
                Next::Fail,
            ),
            (
                "an attempt past the schedule fails",
                status(500),
                u32::MAX,
                Next::Fail,
            ),
            (
                "a 429 asking for less than the schedule waits the schedule",
                pause(429, secs(2)),
                1,
                retry(2, secs(240)),
            ),
            (
                "a 429 asking for more waits the shortest queue that covers it",
                pause(429, secs(300)),
                1,
                retry(2, secs(480)),
            ),
            (
                "a 503 asking for more than every queue waits the longest",
                pause(503, secs(3_600)),
                1,
                retry(2, secs(480)),
            ),
            (
                "a Retry-After on a 500 is ignored",
                pause(500, secs(300)),
                1,
                retry(2, secs(240)),
            ),
            (
                "a Retry-After on the last attempt changes nothing",
                pause(429, secs(60)),
                3,
                Next::Fail,
            ),
            (
                "a busy webhook parks the delivery",
                Outcome::Busy,
                1,
                Next::Park { delay: PARK_DELAY },
            ),
            (
                "parking does not depend on the attempt",
                Outcome::Busy,
                3,
                Next::Park { delay: PARK_DELAY },
            ),
            (
                "an open breaker parks for the longest queue within its rest",
                Outcome::BreakerOpen {
                    remaining: secs(300),
                },
                3,
                Next::Park { delay: secs(240) },
            ),
            (
                "most of a default cool-down left parks until its end",
                Outcome::BreakerOpen {
                    remaining: secs(25),
                },
                1,
                Next::Park {
                    delay: BREAKER_PARK_DELAY,
                },
            ),
            (
                "less than two thirds of it left parks for the parking delay",
                Outcome::BreakerOpen {
                    remaining: secs(19),
                },
                1,
                Next::Park { delay: PARK_DELAY },
            ),
            (
                "an open breaker with a short rest parks for the parking delay",
                Outcome::BreakerOpen { remaining: secs(2) },
                1,
                Next::Park { delay: PARK_DELAY },
            ),
            (
                "a probe out elsewhere parks for the parking delay",
                Outcome::BreakerOpen {
                    remaining: Duration::ZERO,
                },
                2,
                Next::Park { delay: PARK_DELAY },
            ),
        ];
        for (name, outcome, attempt, expected) in cases {
            assert_eq!(
                decide(*outcome, *attempt, &schedule, &delays),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_retry_after_picks_among_the_declared_queues_and_the_parking_one() {
        let schedule: Schedule = "0s,250ms,240s".parse().unwrap();
        let delays = DelayQueues::for_schedule(&schedule);
        assert_eq!(
            delays.delays(),
            &[ms(250), PARK_DELAY, BREAKER_PARK_DELAY, secs(240)]
        );
        let after = |pause: Duration| decide(self::pause(429, pause), 1, &schedule, &delays);
        assert_eq!(after(ms(100)), retry(2, ms(250)), "the schedule wins");
        assert_eq!(
            after(ms(251)),
            retry(2, PARK_DELAY),
            "parking's queue covers it"
        );
        assert_eq!(after(secs(120)), retry(2, secs(240)));
        // A zero first delay is the work queue itself, not a delay queue.
        let immediate: Schedule = "250ms,0s".parse().unwrap();
        let delays = DelayQueues::for_schedule(&immediate);
        assert_eq!(
            decide(status(500), 1, &immediate, &delays),
            retry(2, Duration::ZERO)
        );
        assert_eq!(
            decide(pause(503, secs(1)), 1, &immediate, &delays),
            retry(2, PARK_DELAY),
            "a pause turns an immediate retry into a wait"
        );
    }

    #[test]
    fn at_least_takes_the_shortest_declared_delay_that_covers_it() {
        let delays = DelayQueues::for_schedule(&"0s,250ms,240s,240s".parse().unwrap());
        assert_eq!(
            delays.delays(),
            &[ms(250), PARK_DELAY, BREAKER_PARK_DELAY, secs(240)]
        );
        assert_eq!(delays.at_least(Duration::ZERO), Duration::ZERO);
        assert_eq!(delays.at_least(ms(1)), ms(250));
        assert_eq!(delays.at_least(ms(250)), ms(250));
        assert_eq!(delays.at_least(ms(251)), PARK_DELAY);
        assert_eq!(delays.at_least(secs(29)), BREAKER_PARK_DELAY);
        assert_eq!(delays.at_least(secs(120)), secs(240));
        assert_eq!(delays.at_least(secs(3_600)), secs(240), "the longest");
        assert_eq!(delays.at_least(PARK_DELAY), PARK_DELAY);
    }

    #[test]
    fn only_a_step_that_carries_the_delivery_on_survives_a_refused_record() {
        for (next, expected) in [
            (retry(2, secs(240)), IfRefused::CarryOn),
            (Next::Park { delay: PARK_DELAY }, IfRefused::CarryOn),
            (Next::Succeed, IfRefused::DeadLetter),
            (Next::Fail, IfRefused::DeadLetter),
        ] {
            assert_eq!(next.when_record_refused(), expected, "{next:?}");
        }
    }

    #[test]
    fn only_429_and_503_ask_for_a_pause() {
        for status in [429, 503] {
            assert!(honours_retry_after(status), "{status}");
        }
        for status in [200, 301, 400, 408, 500, 502, 504] {
            assert!(!honours_retry_after(status), "{status}");
        }
    }
}
