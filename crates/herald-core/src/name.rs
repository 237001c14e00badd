//! The names a delivery is addressed by: its [`Tenant`] (shop or subshop)
//! and its [`EventName`].
//!
//! Each type's `parse` holds the one rule for its name, and a value of the
//! type is a name that passed it. Names are parsed where they enter Herald
//! (a Fire or admin call), so code that takes a `Tenant` or an `EventName`
//! never checks it again. The sender's queue decoder applies the same rule
//! with `check`, which borrows the name (see [`Tenant::check`] for why).

use std::fmt;
use std::ops::Deref;

use crate::webhook::{MAX_NAME_LEN, ValidationError};

/// A tenant: a shop or subshop. The empty name is the default tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant(String);

/// The name of an event a shop fires, such as `order.created`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName(String);

impl Tenant {
    /// Parses a tenant name: empty (the default tenant) or at most
    /// [`MAX_NAME_LEN`] bytes without whitespace or control characters.
    /// The error names the `tenant` field.
    pub fn parse(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(name))
    }

    /// Checks `name` by the rule [`Self::parse`] holds, without taking it.
    /// For the queue decoder, whose message must keep its own strings: it is
    /// encoded again for retries, and a parsed copy beside it would add to
    /// the memory every waiting delivery holds.
    pub fn check(name: &str) -> Result<(), ValidationError> {
        check_name("tenant", name, true)
    }

    /// The default tenant (the empty name).
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl EventName {
    /// Parses an event name: required, at most [`MAX_NAME_LEN`] bytes,
    /// without whitespace or control characters. The error names the
    /// `event` field.
    pub fn parse(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(name))
    }

    /// Checks `name` by the rule [`Self::parse`] holds, without taking it
    /// (see [`Tenant::check`] for who needs that).
    pub fn check(name: &str) -> Result<(), ValidationError> {
        check_name("event", name, false)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The rule both names share; only whether the name may be empty differs.
fn check_name(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), ValidationError> {
    if value.is_empty() {
        if may_be_empty {
            return Ok(());
        }
        return Err(ValidationError::new(
            field,
            "is required, e.g. \"order.created\"",
        ));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            field,
            format!("must not contain whitespace or control characters (found {c:?})"),
        ));
    }
    Ok(())
}

macro_rules! name_traits {
    ($name:ident) => {
        /// Read-only access as a string: every string operation is safe on a
        /// name that passed its rule.
        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_traits!(Tenant);
name_traits!(EventName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_tenant_is_the_empty_name() {
        let tenant = Tenant::parse("").unwrap();
        assert!(tenant.is_default());
        assert_eq!(tenant, Tenant::default());
        assert!(!Tenant::parse("shop-1").unwrap().is_default());
    }

    #[test]
    fn an_event_name_is_required() {
        assert_eq!(
            EventName::parse("").unwrap_err().to_string(),
            "event: is required, e.g. \"order.created\""
        );
        assert_eq!(EventName::parse("order.created").unwrap(), "order.created");
    }

    #[test]
    fn names_are_short_and_without_spaces() {
        let longest = "a".repeat(MAX_NAME_LEN);
        assert_eq!(Tenant::parse(longest.clone()).unwrap().as_str(), longest);
        assert_eq!(
            EventName::parse(format!("{longest}a"))
                .unwrap_err()
                .to_string(),
            format!(
                "event: is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                MAX_NAME_LEN + 1
            )
        );
        assert_eq!(
            Tenant::parse("shop 1").unwrap_err().to_string(),
            "tenant: must not contain whitespace or control characters (found ' ')"
        );
        assert_eq!(EventName::parse("order\u{7}").unwrap_err().field, "event");
    }

    #[test]
    fn check_and_parse_apply_the_same_rule() {
        for name in [
            "",
            "shop-1",
            "shop 1",
            "x\ny",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(
                Tenant::check(name),
                Tenant::parse(name).map(|_| ()),
                "{name:?}"
            );
            assert_eq!(
                EventName::check(name),
                EventName::parse(name).map(|_| ()),
                "{name:?}"
            );
        }
    }
}
