//! Ordered delivery per key: the decisions, free of I/O.
//!
//! A webhook marked ordered gets the deliveries that share an
//! [`OrderingKey`] (an order id, say) attempted strictly in Fire order: the
//! next one starts only after the previous one succeeded, finally failed or
//! was cancelled. Deliveries of one (webhook, key) always go to the same
//! partition queue, [`partition_of`]; exactly one sender at a time consumes
//! a partition (RabbitMQ's single active consumer), and that sender runs
//! each key's deliveries one after the other. [`OnFinalFailure`] says what
//! a key's later deliveries do once one of them failed for good.
//!
//! The partition is FNV-1a over the webhook id and the key, as
//! [`crate::shard::shard_of`] is over the delivery id, and for the same
//! reason: two Herald builds must agree on it during a rolling upgrade.

use std::fmt;

use uuid::Uuid;

use crate::webhook::ValidationError;

/// Longest ordering key, in bytes.
pub const MAX_ORDERING_KEY_LEN: usize = 200;
/// The most partition queues an installation may have
/// (`HERALD_ORDERED_PARTITIONS`).
pub const MAX_PARTITIONS: u16 = 256;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// What a Fire call orders its deliveries by, e.g. an order id: at most
/// [`MAX_ORDERING_KEY_LEN`] bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderingKey(String);

impl OrderingKey {
    /// Parses Fire's `ordering_key`; the empty string means no key (`None`).
    pub fn parse(key: String) -> Result<Option<Self>, ValidationError> {
        if key.is_empty() {
            return Ok(None);
        }
        Self::check(&key)?;
        Ok(Some(Self(key)))
    }

    /// Checks a non-empty key by the rule [`Self::parse`] holds, without
    /// taking it (the sender's queue decoder).
    pub fn check(key: &str) -> Result<(), ValidationError> {
        if key.len() > MAX_ORDERING_KEY_LEN {
            return Err(ValidationError::new(
                "ordering_key",
                format!(
                    "is {} bytes long; at most {MAX_ORDERING_KEY_LEN} are allowed",
                    key.len()
                ),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "ordering_key",
                "contains a control character; use printable text such as an order id",
            ));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for OrderingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an ordered webhook does with a key's later deliveries once one of
/// them failed for good (its whole schedule used up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFinalFailure {
    /// The key stops: its later deliveries are not attempted but recorded
    /// as cancelled ("held"), and so is every later Fire with the key, until
    /// an operator resumes the key (and, if they choose, resends what was
    /// held, in order). The default, because a receiver that asked for
    /// order would otherwise see `order.paid` for an order it never saw
    /// created, which is exactly what ordering exists to prevent; a stop is
    /// visible and loses nothing.
    #[default]
    Stop,
    /// The next delivery of the key goes ahead: the failed one stays failed
    /// in the log (it can be resent, out of order).
    Continue,
}

impl OnFinalFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Continue => "continue",
        }
    }

    /// Parses the API's and the database's spelling; the empty string is
    /// the default.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "" | "stop" => Ok(Self::Stop),
            "continue" => Ok(Self::Continue),
            other => Err(ValidationError::new(
                "ordered_on_failure",
                format!("{other:?} is not a choice; use stop (the default) or continue"),
            )),
        }
    }
}

/// The partition (0-based, below `partitions`) of a webhook's deliveries
/// with this key. One partition (or zero, read as one) is always 0.
pub fn partition_of(webhook_id: Uuid, key: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut hash = FNV_OFFSET;
    // A separator byte that no UUID ends with would not be needed: the id is
    // always 16 bytes, so (id, key) pairs never run into each other.
    for byte in webhook_id.as_bytes().iter().chain(key.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // The remainder is below `partitions`, a u16.
    (hash % u64::from(partitions)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_a_fixed_function_of_webhook_and_key() {
        // A table, not a property: these values must never change, or a
        // rolling upgrade would put one key's deliveries in two partitions.
        let webhook: Uuid = "01936b2e-7c4a-7d3e-9f10-2b6c8d4e5a71".parse().unwrap();
        // (Checked against an independent FNV-1a 64 implementation.)
        let table: [(&str, u16, u16); 7] = [
            ("order-1", 1, 0),
            ("order-1", 0, 0),
            ("order-1", 16, 3),
            ("", 16, 11),
            ("order-2", 16, 6),
            ("order-1", 256, 19),
            ("order-2", 7, 4),
        ];
        for (key, partitions, expected) in table {
            assert_eq!(
                partition_of(webhook, key, partitions),
                expected,
                "{key:?} of {partitions}"
            );
        }
    }

    #[test]
    fn keys_spread_over_the_partitions() {
        let webhook = Uuid::nil();
        let mut counts = [0u32; 16];
        for n in 0..1600 {
            counts[usize::from(partition_of(webhook, &format!("order-{n}"), 16))] += 1;
        }
        assert!(
            counts.iter().all(|c| (50..=150).contains(c)),
            "uneven spread: {counts:?}"
        );
    }

    #[test]
    fn keys_are_parsed_once() {
        assert_eq!(OrderingKey::parse(String::new()).unwrap(), None);
        assert_eq!(
            OrderingKey::parse("order-1".into())
                .unwrap()
                .unwrap()
                .as_str(),
            "order-1"
        );
        let long = OrderingKey::parse("k".repeat(201)).unwrap_err();
        assert_eq!(long.field, "ordering_key");
        assert!(long.message.contains("201 bytes"));
        let control = OrderingKey::parse("a\nb".into()).unwrap_err();
        assert!(control.message.contains("control"));
    }

    #[test]
    fn the_failure_choice_defaults_to_stop() {
        assert_eq!(OnFinalFailure::parse("").unwrap(), OnFinalFailure::Stop);
        assert_eq!(OnFinalFailure::parse("stop").unwrap(), OnFinalFailure::Stop);
        assert_eq!(
            OnFinalFailure::parse("continue").unwrap(),
            OnFinalFailure::Continue
        );
        let wrong = OnFinalFailure::parse("skip").unwrap_err();
        assert_eq!(wrong.field, "ordered_on_failure");
        assert!(wrong.message.contains("stop (the default) or continue"));
    }
}
