//! The sender's metric handles, registered once at start-up.
//!
//! `metrics::counter!` and friends look their key up in the recorder's
//! registry (hashing name and labels) on every call; at tens of thousands of
//! deliveries a second that showed in profiles. The handles are resolved once
//! here and then only incremented. Without an installed recorder (tests) they
//! are no-ops.

use metrics::{Counter, Gauge, Histogram};

use crate::AttemptOutcome;
use herald_core::ErrorKind;

/// How one delivery message ended, as counted in `herald_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Succeeded,
    Retried,
    Failed,
    Cancelled,
    Parked,
    /// Moved to the dead-letter queue: undecodable, or its record refused.
    Dead,
}

/// The HTTP result class of an attempt (`status_class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    Success,
    Redirect,
    ClientError,
    ServerError,
    Timeout,
    Error,
}

impl StatusClass {
    /// Every class, each at the index of its discriminant.
    const ALL: [Self; 6] = [
        Self::Success,
        Self::Redirect,
        Self::ClientError,
        Self::ServerError,
        Self::Timeout,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }

    fn of(outcome: &AttemptOutcome) -> Self {
        match (outcome.status_code, &outcome.error) {
            (Some(200..=299), _) => Self::Success,
            (Some(300..=399), _) => Self::Redirect,
            (Some(400..=499), _) => Self::ClientError,
            (Some(_), _) => Self::ServerError,
            (None, Some(e)) if e.kind == ErrorKind::Timeout => Self::Timeout,
            (None, _) => Self::Error,
        }
    }
}

pub(crate) struct Stats {
    pub in_flight: Gauge,
    succeeded: Counter,
    retried: Counter,
    failed: Counter,
    cancelled: Counter,
    parked: Counter,
    dead: Counter,
    durations: [Histogram; 6],
}

impl Stats {
    /// Registers the handles with the recorder installed now (if any).
    pub fn register() -> Self {
        let outcome =
            |name: &'static str| metrics::counter!("herald_deliveries_total", "outcome" => name);
        Self {
            in_flight: metrics::gauge!("herald_deliveries_in_flight"),
            succeeded: outcome("succeeded"),
            retried: outcome("retried"),
            failed: outcome("failed"),
            cancelled: outcome("cancelled"),
            parked: outcome("parked"),
            dead: outcome("dead"),
            durations: StatusClass::ALL.map(|class| {
                metrics::histogram!("herald_attempt_duration_seconds", "status_class" => class.label())
            }),
        }
    }

    pub fn count(&self, fate: Fate) {
        match fate {
            Fate::Succeeded => &self.succeeded,
            Fate::Retried => &self.retried,
            Fate::Failed => &self.failed,
            Fate::Cancelled => &self.cancelled,
            Fate::Parked => &self.parked,
            Fate::Dead => &self.dead,
        }
        .increment(1);
    }

    /// Records an attempt's duration under its status class.
    pub fn attempt(&self, outcome: &AttemptOutcome) {
        self.durations[StatusClass::of(outcome) as usize].record(outcome.duration.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_class_has_its_own_label() {
        let labels: std::collections::BTreeSet<&str> =
            StatusClass::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), StatusClass::ALL.len());
        for (index, class) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, index, "ALL is in discriminant order");
        }
    }
}
