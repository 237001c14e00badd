//! `Secret<T>`: a value that must never reach a log line, such as a URL that
//! can carry a password or a key. Its `Debug` prints `Secret([REDACTED])`,
//! so a configuration struct that derives `Debug` stays safe to log, and the
//! value is read only through [`Secret::expose`], which makes every use easy
//! to find in review (zero2prod's `Secret<String>` is the model).
//!
//! This module owns the wrapper only. It must never implement `Display` or
//! `Serialize` for it: both would print the value without an `expose()` at
//! the call site.

use std::fmt;

/// A value whose `Debug` output is redacted; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself. Call this only where the value is used (to connect,
    /// to derive a key), never to log or format it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

/// So that call sites with a string literal (tests, the CLI) need no
/// `to_owned()`.
impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let secret = Secret::from("amqp://guest:hunter2@broker/%2f");
        assert_eq!(format!("{secret:?}"), "Secret([REDACTED])");
        assert_eq!(format!("{secret:#?}"), "Secret([REDACTED])");
        let inside: Option<Secret<String>> = Some(secret.clone());
        assert!(!format!("{inside:?}").contains("hunter2"));
    }

    #[test]
    fn expose_reads_the_value() {
        let secret = Secret::new(String::from("key"));
        assert_eq!(secret.expose(), "key");
        assert_eq!(secret.into_inner(), "key");
    }
}
