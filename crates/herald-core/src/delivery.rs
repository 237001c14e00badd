//! Delivery states and attempt errors, as stored in the dashboard tables.

use std::fmt;

/// The `deliveries.state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Fired and queued; no attempt has been made yet (written by ingest).
    Scheduled,
    /// Attempted at least once and waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Succeeded,
    /// Every attempt of the schedule failed, or the target was refused.
    Failed,
    /// The webhook was disabled or deleted before the attempt; nothing sent.
    Cancelled,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "pending" => Self::Pending,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Scheduled | Self::Pending)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `delivery_attempts.error_kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The target answered, but not with 2xx.
    HttpStatus,
    /// No complete answer within the webhook's timeout.
    Timeout,
    /// DNS, TCP, TLS or protocol failure.
    Connection,
    /// The request could not be built (e.g. the URL with the data is invalid,
    /// or a JSON body template rendered invalid JSON).
    InvalidRequest,
    /// The target resolves to an address Herald may not connect to (SSRF
    /// guard).
    Refused,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpStatus => "http_status",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::InvalidRequest => "invalid_request",
            Self::Refused => "refused",
        }
    }

    /// Whether another attempt could change the outcome.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::InvalidRequest | Self::Refused)
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}
