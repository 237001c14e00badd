//! Which events a webhook listens to: a list of exact event names and
//! patterns (`order.*`, `*`), parsed once where a webhook is saved.
//!
//! Matching is a pure function of the list and the fired event's name, so
//! ingest can fan out from its in-memory configuration without asking
//! Postgres. This module never touches I/O.

use std::fmt;

use crate::name::EventName;
use crate::webhook::ValidationError;

/// Most entries one webhook may subscribe to.
pub const MAX_ENTRIES: usize = 100;

/// One entry of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    /// Exactly this event name.
    Exact(String),
    /// Every event whose name starts with this prefix, which ends with the
    /// `.` before the `*` (`order.*` is `Prefix("order.")`).
    Prefix(String),
    /// Every event of the webhook's tenant (`*`).
    All,
}

impl EventPattern {
    /// Parses one entry: an event name, a name prefix followed by `.*`, or
    /// `*`. The error names the `events` field and says what to write.
    pub fn parse(entry: &str) -> Result<Self, ValidationError> {
        if entry == "*" {
            return Ok(Self::All);
        }
        let name = entry.strip_suffix(".*").unwrap_or(entry);
        EventName::check(name).map_err(|e| ValidationError::new("events", e.message))?;
        if name.contains('*') {
            return Err(ValidationError::new(
                "events",
                format!(
                    "{entry:?}: `*` may only stand alone (every event) or end a pattern after a \
                     dot, as in \"order.*\""
                ),
            ));
        }
        Ok(if name.len() < entry.len() {
            Self::Prefix(format!("{name}."))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    /// Reads an entry as stored. Rows written before patterns existed may
    /// hold any event name, so nothing is refused here: what is not a
    /// pattern is an exact name.
    pub fn from_stored(entry: &str) -> Self {
        Self::parse(entry).unwrap_or_else(|_| Self::Exact(entry.to_owned()))
    }

    pub fn matches(&self, event: &str) -> bool {
        match self {
            Self::Exact(name) => name == event,
            Self::Prefix(prefix) => event.starts_with(prefix.as_str()),
            Self::All => true,
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::All => f.write_str("*"),
        }
    }
}

/// The events a webhook listens to: one entry at least, none twice, in the
/// order they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription(Vec<EventPattern>);

impl Subscription {
    /// Parses a list of entries (see [`EventPattern::parse`]).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, ValidationError> {
        if entries.is_empty() {
            return Err(ValidationError::new(
                "events",
                "name at least one event, e.g. \"order.created\", a pattern such as \"order.*\", \
                 or \"*\" for every event of the tenant",
            ));
        }
        if entries.len() > MAX_ENTRIES {
            return Err(ValidationError::new(
                "events",
                format!(
                    "lists {} entries; at most {MAX_ENTRIES} are allowed (a pattern such as \
                     \"order.*\" can stand for many)",
                    entries.len()
                ),
            ));
        }
        let mut out: Vec<EventPattern> = Vec::with_capacity(entries.len());
        for entry in entries {
            let pattern = EventPattern::parse(entry.as_ref())?;
            if out.contains(&pattern) {
                return Err(ValidationError::new(
                    "events",
                    format!("{:?} is listed twice", entry.as_ref()),
                ));
            }
            out.push(pattern);
        }
        Ok(Self(out))
    }

    /// Reads a subscription as stored: the first entry (the `event` column)
    /// and the rest.
    pub fn from_stored(first: &str, rest: &[String]) -> Self {
        Self(
            std::iter::once(first)
                .chain(rest.iter().map(String::as_str))
                .map(EventPattern::from_stored)
                .collect(),
        )
    }

    pub fn entries(&self) -> &[EventPattern] {
        &self.0
    }

    /// The first entry, as written: what the `event` column and the API's
    /// single `event` field hold.
    pub fn first(&self) -> String {
        self.0.first().map(ToString::to_string).unwrap_or_default()
    }

    /// Every entry after the first, as written.
    pub fn rest(&self) -> Vec<String> {
        self.0.iter().skip(1).map(ToString::to_string).collect()
    }

    /// Every entry, as written.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn matches(&self, event: &str) -> bool {
        self.0.iter().any(|p| p.matches(event))
    }

    /// The exact event names of the subscription.
    pub fn exact(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            EventPattern::Exact(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// An event name the subscription reaches, for a test send: its first
    /// exact name, else `test` under its first pattern (`order.test`), else
    /// `herald.test`.
    pub fn sample_event(&self) -> String {
        if let Some(name) = self.exact().next() {
            return name.to_owned();
        }
        self.0
            .iter()
            .find_map(|p| match p {
                EventPattern::Prefix(prefix) => Some(format!("{prefix}test")),
                _ => None,
            })
            .unwrap_or_else(|| "herald.test".to_owned())
    }

    /// Whether some entry is a pattern rather than an exact name.
    pub fn has_patterns(&self) -> bool {
        self.0.iter().any(|p| !matches!(p, EventPattern::Exact(_)))
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_to_names_prefixes_or_everything() {
        let cases: &[(&str, Result<EventPattern, &str>)] = &[
            (
                "order.created",
                Ok(EventPattern::Exact("order.created".into())),
            ),
            ("order.*", Ok(EventPattern::Prefix("order.".into()))),
            (
                "shop.order.*",
                Ok(EventPattern::Prefix("shop.order.".into())),
            ),
            ("*", Ok(EventPattern::All)),
            ("order*", Err("`*` may only stand alone")),
            ("order.*.paid", Err("`*` may only stand alone")),
            ("*.created", Err("`*` may only stand alone")),
            (".*", Err("is required")),
            ("", Err("is required")),
            ("order created", Err("whitespace")),
        ];
        for (entry, expected) in cases {
            match (EventPattern::parse(entry), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{entry:?}"),
                (Err(e), Err(hint)) => {
                    assert_eq!(e.field, "events", "{entry:?}");
                    assert!(e.message.contains(hint), "{entry:?}: {}", e.message);
                }
                (got, want) => panic!("{entry:?}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn patterns_match_by_whole_name_or_dotted_prefix() {
        let cases: &[(&str, &str, bool)] = &[
            ("order.created", "order.created", true),
            ("order.created", "order.created.v2", false),
            ("order.*", "order.created", true),
            ("order.*", "order.paid.partly", true),
            ("order.*", "order", false),
            ("order.*", "orders.created", false),
            ("*", "anything.at.all", true),
        ];
        for (entry, event, matches) in cases {
            let pattern = EventPattern::parse(entry).unwrap();
            assert_eq!(pattern.matches(event), *matches, "{entry} vs {event}");
            assert_eq!(pattern.to_string(), *entry);
        }
    }

    #[test]
    fn lists_need_an_entry_and_no_repeats() {
        let sub = Subscription::parse(&["order.created", "order.*"]).unwrap();
        assert!(sub.matches("order.paid"));
        assert!(!sub.matches("invoice.paid"));
        assert_eq!(sub.first(), "order.created");
        assert_eq!(sub.rest(), ["order.*"]);
        assert!(sub.has_patterns());
        assert_eq!(sub.exact().collect::<Vec<_>>(), ["order.created"]);
        assert_eq!(sub.sample_event(), "order.created");
        assert_eq!(
            Subscription::parse(&["*", "order.*"])
                .unwrap()
                .sample_event(),
            "order.test"
        );
        assert_eq!(
            Subscription::parse(&["*"]).unwrap().sample_event(),
            "herald.test"
        );
        let none: &[&str] = &[];
        assert!(
            Subscription::parse(none)
                .unwrap_err()
                .message
                .contains("at least one")
        );
        let twice = Subscription::parse(&["a.b", "a.b"]).unwrap_err();
        assert!(twice.message.contains("listed twice"), "{}", twice.message);
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("e{i}")).collect();
        assert!(
            Subscription::parse(&many)
                .unwrap_err()
                .message
                .contains("at most")
        );
    }

    #[test]
    fn stored_rows_of_any_age_are_read() {
        let sub = Subscription::from_stored("legacy*name", &["order.*".into()]);
        assert!(sub.matches("legacy*name"));
        assert!(sub.matches("order.x"));
        assert_eq!(sub.to_strings(), ["legacy*name", "order.*"]);
    }
}
