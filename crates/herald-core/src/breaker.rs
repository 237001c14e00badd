//! The circuit breaker of a webhook: after enough consecutive failed
//! attempts its deliveries stop being attempted for a cool-down (they are
//! parked, which is not an attempt), then one probe attempt decides whether
//! the receiver is back.
//!
//! The breaker's state lives in Postgres (herald-store's `HealthStore`) so
//! that every sender sees it; this module holds the rules that are plain
//! values: which attempts count, the policy and its cool-down doubling, and
//! what a failed probe does to its delivery's schedule.

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use crate::ValidationError;
use crate::delivery::ErrorKind;
use crate::retry::{Next, Outcome};

/// What an attempt says about the receiver's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A 2xx answer: the receiver works.
    Up,
    /// A timeout, a connection error, a 5xx, a 408 or a 429: the receiver
    /// is down or overloaded. Only these open the breaker.
    Down,
    /// Any other failure: a 3xx or 4xx answer (the receiver is up, but
    /// refuses this request), or a request Herald could not build or send.
    /// It does not open the breaker, and it does not close it either,
    /// except as a probe's answer (the receiver answered).
    Refused,
}

impl Health {
    /// What `outcome` says; `None` for a delivery that was not attempted.
    pub fn of(outcome: &Outcome) -> Option<Self> {
        Some(match outcome {
            Outcome::Busy | Outcome::BreakerOpen { .. } => return None,
            Outcome::Delivered => Self::Up,
            Outcome::Failed { kind, status, .. } => match (kind, status) {
                (ErrorKind::Timeout | ErrorKind::Connection, _) => Self::Down,
                (ErrorKind::HttpStatus, Some(408 | 429 | 500..)) => Self::Down,
                _ => Self::Refused,
            },
        })
    }

    /// Whether the attempt failed (for how long a webhook has failed).
    pub fn failed(self) -> bool {
        self != Self::Up
    }
}

/// Deployment-wide defaults of the breaker.
pub const DEFAULT_FAILURES: u32 = 10;
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// Longest cool-down a webhook may ask for.
pub const MAX_COOLDOWN_MS: u32 = 3_600_000;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive `Down` attempts that open it.
    pub failures: NonZeroU32,
    /// The first cool-down of an outage.
    pub cooldown: Duration,
    /// The cool-down doubles after each failed probe up to this (a first
    /// cool-down longer than it stays as it is).
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: NonZeroU32::new(DEFAULT_FAILURES).unwrap_or(NonZeroU32::MIN),
            cooldown: DEFAULT_COOLDOWN,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
        }
    }
}

impl BreakerPolicy {
    /// The policy for a webhook: its own settings over the deployment's.
    pub fn for_webhook(self, own: Option<BreakerSettings>) -> Self {
        let Some(own) = own else { return self };
        Self {
            failures: own.failures.unwrap_or(self.failures),
            cooldown: own.cooldown.unwrap_or(self.cooldown),
            max_cooldown: self.max_cooldown,
        }
    }

    /// The cool-down after a failed probe that followed `current`.
    pub fn next_cooldown(self, current: Duration) -> Duration {
        current
            .saturating_mul(2)
            .min(self.max_cooldown)
            .max(self.cooldown)
    }
}

/// A webhook's own breaker settings; `None` = the deployment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerSettings {
    pub failures: Option<NonZeroU32>,
    pub cooldown: Option<Duration>,
}

impl BreakerSettings {
    /// Parses the settings as an API receives them; 0 = the deployment's
    /// default, and both 0 = no settings of its own.
    pub fn parse(failures: u32, cooldown_ms: u32) -> Result<Option<Self>, ValidationError> {
        if failures > 10_000 {
            return Err(ValidationError::new(
                "breaker.failures",
                format!("{failures} is above the maximum of 10000"),
            ));
        }
        if cooldown_ms > MAX_COOLDOWN_MS {
            return Err(ValidationError::new(
                "breaker.cooldown_ms",
                format!("{cooldown_ms} is above the maximum of {MAX_COOLDOWN_MS} (one hour)"),
            ));
        }
        if failures == 0 && cooldown_ms == 0 {
            return Ok(None);
        }
        Ok(Some(Self {
            failures: NonZeroU32::new(failures),
            cooldown: (cooldown_ms > 0).then(|| Duration::from_millis(u64::from(cooldown_ms))),
        }))
    }

    pub fn failures_or_zero(self) -> u32 {
        self.failures.map_or(0, NonZeroU32::get)
    }

    pub fn cooldown_ms_or_zero(self) -> u32 {
        self.cooldown
            .map_or(0, |c| u32::try_from(c.as_millis()).unwrap_or(u32::MAX))
    }
}

/// What follows a probe attempt that found the receiver still down
/// ([`Health::Down`]; other failures follow the schedule): a probe is made
/// because the
/// breaker let one delivery through, not because its schedule was due, so
/// it never ends its delivery for lack of attempts. Where the schedule has
/// no attempt left, the delivery comes back after `park` as the next
/// attempt, like a parked one.
pub fn after_failed_probe(next: Next, attempt: u32, park: Duration) -> Next {
    match next {
        Next::Fail => Next::Retry {
            attempt: attempt.saturating_add(1),
            delay: park,
        },
        other => other,
    }
}

/// The deployment's default for how long a webhook may fail every attempt
/// before Herald disables it (as Svix does).
pub const DEFAULT_AUTO_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);
/// Longest time a webhook may ask to fail before it is disabled: a year.
pub const MAX_AUTO_DISABLE_AFTER_S: u32 = 365 * 24 * 3600;

/// Why Herald disables a webhook after an attempt, if it does: the
/// receiver answered `410 Gone` (and `disable_on_gone` is set), or every
/// attempt has failed for `window` or longer (`failing_for`; a zero window
/// never disables).
pub fn disable_reason(
    status: Option<u16>,
    failing_for: Option<Duration>,
    window: Duration,
    disable_on_gone: bool,
) -> Option<String> {
    if disable_on_gone && status == Some(410) {
        return Some("the receiver answered 410 Gone".to_owned());
    }
    let failing_for = failing_for?;
    (!window.is_zero() && failing_for >= window).then(|| {
        format!(
            "every attempt failed for {} s (the limit is {} s)",
            failing_for.as_secs(),
            window.as_secs()
        )
    })
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    /// Deliveries are attempted.
    #[default]
    Closed,
    /// Deliveries are parked until the cool-down ends.
    Open,
    /// The cool-down is over and one probe attempt is out (or may go).
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "closed" => Self::Closed,
            "open" => Self::Open,
            "half_open" => Self::HalfOpen,
            _ => return None,
        })
    }
}

/// A webhook's health as every sender shares it (one row in Postgres).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthRecord {
    /// `Down` attempts in a row.
    pub consecutive_failures: u32,
    /// The first failed attempt since the last success; `None` while the
    /// last attempt succeeded.
    pub failing_since: Option<SystemTime>,
    pub state: BreakerState,
    /// When the breaker opened in this outage.
    pub opened_at: Option<SystemTime>,
    /// When the current cool-down ends.
    pub open_until: Option<SystemTime>,
    /// The current cool-down.
    pub cooldown: Option<Duration>,
}

/// A change of the breaker worth telling people about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened after enough consecutive failures.
    Opened,
    /// A probe failed: open again, for a longer cool-down.
    Reopened,
    /// A success closed an open breaker.
    Recovered,
}

impl HealthRecord {
    /// The record after an attempt whose answer says `health`, made at
    /// `now` (the database's clock); `probe` = the attempt was the probe of
    /// a half-open breaker. Returns the new record and the transition, if
    /// the breaker changed.
    pub fn after(
        &self,
        health: Health,
        probe: bool,
        policy: BreakerPolicy,
        now: SystemTime,
    ) -> (Self, Option<Transition>) {
        let mut next = *self;
        match health {
            Health::Up => {
                let was_open = self.state != BreakerState::Closed;
                return (Self::default(), was_open.then_some(Transition::Recovered));
            }
            Health::Refused => {
                next.failing_since = self.failing_since.or(Some(now));
                // The receiver answered the probe: it is up, if picky.
                if probe && self.state == BreakerState::HalfOpen {
                    next.state = BreakerState::Closed;
                    next.consecutive_failures = 0;
                    next.open_until = None;
                    next.cooldown = None;
                    next.opened_at = None;
                    return (next, Some(Transition::Recovered));
                }
                return (next, None);
            }
            Health::Down => {
                next.failing_since = self.failing_since.or(Some(now));
                next.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
        }
        match self.state {
            BreakerState::Closed if next.consecutive_failures >= policy.failures.get() => {
                next.state = BreakerState::Open;
                next.opened_at = Some(now);
                next.cooldown = Some(policy.cooldown);
                next.open_until = Some(now + policy.cooldown);
                (next, Some(Transition::Opened))
            }
            BreakerState::HalfOpen => {
                let cooldown = policy.next_cooldown(self.cooldown.unwrap_or(policy.cooldown));
                next.state = BreakerState::Open;
                next.opened_at = self.opened_at.or(Some(now));
                next.cooldown = Some(cooldown);
                next.open_until = Some(now + cooldown);
                (next, Some(Transition::Reopened))
            }
            // Closed below the threshold, or open already (an attempt that
            // started before it opened).
            _ => (next, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: ErrorKind, status: Option<u16>) -> Outcome {
        Outcome::Failed {
            kind,
            status,
            retry_after: None,
        }
    }

    #[test]
    fn which_attempts_count() {
        let table = [
            (Outcome::Delivered, Some(Health::Up)),
            (Outcome::Busy, None),
            (failed(ErrorKind::Timeout, None), Some(Health::Down)),
            (failed(ErrorKind::Connection, None), Some(Health::Down)),
            (failed(ErrorKind::HttpStatus, Some(500)), Some(Health::Down)),
            (failed(ErrorKind::HttpStatus, Some(503)), Some(Health::Down)),
            (failed(ErrorKind::HttpStatus, Some(429)), Some(Health::Down)),
            (failed(ErrorKind::HttpStatus, Some(408)), Some(Health::Down)),
            (
                failed(ErrorKind::HttpStatus, Some(404)),
                Some(Health::Refused),
            ),
            (
                failed(ErrorKind::HttpStatus, Some(410)),
                Some(Health::Refused),
            ),
            (
                failed(ErrorKind::HttpStatus, Some(301)),
                Some(Health::Refused),
            ),
            (
                failed(ErrorKind::InvalidRequest, None),
                Some(Health::Refused),
            ),
            (failed(ErrorKind::Refused, None), Some(Health::Refused)),
        ];
        for (outcome, health) in table {
            assert_eq!(Health::of(&outcome), health, "{outcome:?}");
        }
        assert!(Health::Refused.failed() && Health::Down.failed() && !Health::Up.failed());
    }

    #[test]
    fn the_cool_down_doubles_up_to_its_maximum() {
        let policy = BreakerPolicy::default();
        let s = Duration::from_secs;
        let table = [
            (s(30), s(60)),
            (s(60), s(120)),
            (s(480), s(600)),
            (s(600), s(600)),
        ];
        for (current, next) in table {
            assert_eq!(policy.next_cooldown(current), next, "after {current:?}");
        }
        assert_eq!(
            policy.next_cooldown(Duration::ZERO),
            s(30),
            "never below the first"
        );
    }

    #[test]
    fn a_webhooks_own_settings_win() {
        let deployment = BreakerPolicy::default();
        assert_eq!(deployment.for_webhook(None), deployment);
        let own = BreakerSettings::parse(3, 0).unwrap();
        let p = deployment.for_webhook(own);
        assert_eq!((p.failures.get(), p.cooldown), (3, DEFAULT_COOLDOWN));
        let long = BreakerSettings::parse(0, 1_200_000).unwrap();
        let p = deployment.for_webhook(long);
        assert_eq!(p.failures.get(), DEFAULT_FAILURES);
        assert_eq!(p.cooldown, Duration::from_secs(1200));
        assert_eq!(
            p.next_cooldown(p.cooldown),
            Duration::from_secs(1200),
            "a first cool-down above the maximum stays as it is"
        );
        assert_eq!(BreakerSettings::parse(0, 0).unwrap(), None);
        assert_eq!(
            BreakerSettings::parse(10_001, 0).unwrap_err().field,
            "breaker.failures"
        );
        assert_eq!(
            BreakerSettings::parse(0, MAX_COOLDOWN_MS + 1)
                .unwrap_err()
                .field,
            "breaker.cooldown_ms"
        );
    }

    #[test]
    fn the_breaker_opens_probes_and_closes() {
        let policy = BreakerPolicy {
            failures: NonZeroU32::new(3).unwrap(),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(100),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = HealthRecord::default();
        let step = |h: &mut HealthRecord, health, probe, now| {
            let (next, change) = h.after(health, probe, policy, now);
            *h = next;
            change
        };
        assert_eq!(step(&mut h, Health::Down, false, at(0)), None);
        assert_eq!(
            step(&mut h, Health::Refused, false, at(1)),
            None,
            "a 404 does not count"
        );
        assert_eq!(step(&mut h, Health::Down, false, at(2)), None);
        assert_eq!(h.consecutive_failures, 2);
        assert_eq!(
            step(&mut h, Health::Down, false, at(3)),
            Some(Transition::Opened)
        );
        assert_eq!(h.state, BreakerState::Open);
        assert_eq!((h.opened_at, h.open_until), (Some(at(3)), Some(at(33))));
        assert_eq!(h.failing_since, Some(at(0)), "since the first failure");
        assert_eq!(
            step(&mut h, Health::Down, false, at(4)),
            None,
            "a straggler changes nothing"
        );
        assert_eq!(h.open_until, Some(at(33)));

        // The probe fails: open again for twice as long, then capped.
        h.state = BreakerState::HalfOpen;
        assert_eq!(
            step(&mut h, Health::Down, true, at(40)),
            Some(Transition::Reopened)
        );
        assert_eq!((h.state, h.open_until), (BreakerState::Open, Some(at(100))));
        h.state = BreakerState::HalfOpen;
        assert_eq!(
            step(&mut h, Health::Down, true, at(100)),
            Some(Transition::Reopened)
        );
        assert_eq!(h.cooldown, Some(Duration::from_secs(100)), "capped");
        assert_eq!(h.opened_at, Some(at(3)), "the outage's start is kept");

        // A probe that succeeds closes it and forgets the outage.
        h.state = BreakerState::HalfOpen;
        assert_eq!(
            step(&mut h, Health::Up, true, at(200)),
            Some(Transition::Recovered)
        );
        assert_eq!(h, HealthRecord::default());

        // A 4xx answer to a probe closes it too, but the webhook still fails.
        for s in 0..3 {
            step(&mut h, Health::Down, false, at(300 + s));
        }
        h.state = BreakerState::HalfOpen;
        assert_eq!(
            step(&mut h, Health::Refused, true, at(340)),
            Some(Transition::Recovered)
        );
        assert_eq!(h.state, BreakerState::Closed);
        assert_eq!(h.failing_since, Some(at(300)));
        assert_eq!(
            step(&mut h, Health::Up, false, at(341)),
            None,
            "closed already"
        );
        assert_eq!(h.failing_since, None);
    }

    #[test]
    fn when_herald_disables_a_webhook() {
        let day = Duration::from_secs(86_400);
        let window = 5 * day;
        let table = [
            (Some(410), None, true, Some("410 Gone")),
            (Some(410), None, false, None),
            (Some(500), Some(4 * day), true, None),
            (
                Some(500),
                Some(5 * day),
                true,
                Some("every attempt failed for 432000 s"),
            ),
            (None, Some(6 * day), true, Some("(the limit is 432000 s)")),
            (Some(404), None, true, None),
        ];
        for (status, failing_for, on_gone, reason) in table {
            let got = disable_reason(status, failing_for, window, on_gone);
            match (reason, &got) {
                (None, None) => {}
                (Some(part), Some(text)) if text.contains(part) => {}
                _ => panic!("{status:?} {failing_for:?} {on_gone}: {got:?}"),
            }
        }
        assert_eq!(
            disable_reason(None, Some(100 * day), Duration::ZERO, true),
            None,
            "a zero window never disables"
        );
    }

    #[test]
    fn a_failed_probe_never_ends_its_delivery() {
        let park = Duration::from_secs(5);
        assert_eq!(
            after_failed_probe(Next::Fail, 3, park),
            Next::Retry {
                attempt: 4,
                delay: park
            }
        );
        let retry = Next::Retry {
            attempt: 2,
            delay: Duration::from_secs(240),
        };
        assert_eq!(
            after_failed_probe(retry, 1, park),
            retry,
            "the schedule goes on"
        );
    }
}
