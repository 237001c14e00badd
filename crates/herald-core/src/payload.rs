//! The data a shop fires, and where it goes in the HTTP request.
//!
//! WEBSALE's ASSE rules, which every platform here shares: text is sent
//! exactly as given (never URL-encoded); a JSON object or list goes out as
//! JSON; GET and DELETE put the data in the URL, POST/PUT/PATCH in the body.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Largest payload accepted by default (1 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The fired data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Sent exactly as given.
    Text(String),
    /// A validated JSON document, kept as the shop wrote it.
    Json(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error(
        "data is {size} bytes; the limit is {limit} bytes: send less data or raise HERALD_MAX_PAYLOAD_BYTES"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "data.json is not valid JSON: {0}; send a JSON document, or use data.text for plain text"
    )]
    InvalidJson(String),
}

/// Bytes that cannot stand in a URI's query as they are. Everything else of
/// the shop's text, including `=`, `&` and `%`, is kept exactly as given.
const QUERY_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Encoding of a single query parameter name or value (RFC 3986 unreserved kept).
const COMPONENT: &AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Payload {
    /// Checks the size limit and, for JSON, that the document parses.
    pub fn validated(self, limit: usize) -> Result<Self, PayloadError> {
        let size = self.as_str().len();
        if size > limit {
            return Err(PayloadError::TooLarge { size, limit });
        }
        if let Self::Json(doc) = &self {
            serde_json::from_str::<serde::de::IgnoredAny>(doc)
                .map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
        }
        Ok(self)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Text(s) | Self::Json(s) => s,
        }
    }

    /// The data as fired, without a copy.
    pub fn into_string(self) -> String {
        match self {
            Self::Text(s) | Self::Json(s) => s,
        }
    }

    /// A payload as a delivery row stores it: its text and its
    /// [`kind`](Self::kind) (`"json"`, else text).
    pub fn from_stored(kind: &str, text: String) -> Self {
        match kind {
            "json" => Self::Json(text),
            _ => Self::Text(text),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Json(_) => "json",
        }
    }

    /// The Content-Type of a body carrying this payload.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Text(_) => "text/plain; charset=utf-8",
            Self::Json(_) => "application/json",
        }
    }

    /// The query string this payload becomes on a GET or DELETE.
    ///
    /// Text goes in as given (only bytes a URI cannot hold are escaped). A
    /// JSON object becomes one parameter per top-level field, properly
    /// encoded (nested values as compact JSON); any other JSON value becomes
    /// `data=<compact JSON>`.
    pub fn query_string(&self) -> String {
        match self {
            Self::Text(text) => utf8_percent_encode(text, QUERY_UNSAFE).to_string(),
            Self::Json(doc) => match serde_json::from_str::<serde_json::Value>(doc) {
                Ok(serde_json::Value::Object(fields)) => fields
                    .iter()
                    .map(|(name, value)| {
                        let value: Cow<'_, str> = match value {
                            serde_json::Value::String(s) => Cow::Borrowed(s),
                            serde_json::Value::Null => Cow::Borrowed(""),
                            other => Cow::Owned(other.to_string()),
                        };
                        format!(
                            "{}={}",
                            utf8_percent_encode(name, COMPONENT),
                            utf8_percent_encode(&value, COMPONENT)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("&"),
                Ok(other) => format!(
                    "data={}",
                    utf8_percent_encode(&other.to_string(), COMPONENT)
                ),
                // Validated at Fire time; a broken document is sent as text.
                Err(_) => utf8_percent_encode(doc, QUERY_UNSAFE).to_string(),
            },
        }
    }

    /// `url` with this payload appended to its query (`?` or `&`).
    pub fn append_to_url(&self, url: &str) -> String {
        let query = self.query_string();
        if query.is_empty() {
            return url.to_owned();
        }
        let separator = match url.find('?') {
            None => '?',
            Some(i) if i + 1 == url.len() || url.ends_with('&') => return format!("{url}{query}"),
            Some(_) => '&',
        };
        format!("{url}{separator}{query}")
    }
}

/// A JSON document without the whitespace between its tokens: the compact
/// form Herald sends, with strings, numbers and key order exactly as the shop
/// wrote them. Borrows when there is nothing to remove, which is the usual
/// case, so the hot path neither parses nor allocates. `doc` is expected to
/// be valid JSON (ingest validated it); anything else only loses whitespace
/// outside what looks like strings.
pub fn compact_json(doc: &str) -> Cow<'_, str> {
    let bytes = doc.as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut in_string = false;
    let mut escaped = false;
    let mut out: Option<Vec<u8>> = None;
    for (i, &b) in bytes.iter().enumerate() {
        let keep = if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            true
        } else if b == b'"' {
            in_string = true;
            true
        } else {
            !is_space(b)
        };
        match (&mut out, keep) {
            (Some(out), true) => out.push(b),
            (None, false) => {
                let mut started = Vec::with_capacity(bytes.len());
                started.extend_from_slice(&bytes[..i]);
                out = Some(started);
            }
            _ => {}
        }
    }
    match out {
        None => Cow::Borrowed(doc),
        // Only ASCII whitespace outside strings was dropped, so the bytes are
        // still the UTF-8 they were; the lossy path is never taken.
        Some(out) => Cow::Owned(
            String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_payload_comes_back_as_it_was() {
        for payload in [
            Payload::Json("{\"a\":1}".into()),
            Payload::Text("hi".into()),
        ] {
            let kind = payload.kind();
            assert_eq!(
                Payload::from_stored(kind, payload.clone().into_string()),
                payload
            );
        }
    }

    #[test]
    fn limits_and_json_validation() {
        assert!(Payload::Text("x".repeat(11)).validated(10).is_err());
        assert!(Payload::Text("x".repeat(10)).validated(10).is_ok());
        let err = Payload::Json("{\"a\":".into()).validated(100).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        assert!(Payload::Json("[1,2]".into()).validated(100).is_ok());
        assert!(Payload::Json("\"s\"".into()).validated(100).is_ok());
        assert!(Payload::Json(String::new()).validated(100).is_err());
    }

    #[test]
    fn asse_text_goes_into_the_query_as_given() {
        let p = Payload::Text("userid=42".into());
        assert_eq!(
            p.append_to_url("https://a.example/x"),
            "https://a.example/x?userid=42"
        );
        assert_eq!(
            p.append_to_url("https://a.example/x?key=1"),
            "https://a.example/x?key=1&userid=42"
        );
        assert_eq!(
            p.append_to_url("https://a.example/x?"),
            "https://a.example/x?userid=42"
        );
        // Already-encoded text is not encoded twice.
        let p = Payload::Text("q=a%20b&r=1".into());
        assert_eq!(p.query_string(), "q=a%20b&r=1");
        // Only what a URI cannot hold is escaped.
        assert_eq!(Payload::Text("a b".into()).query_string(), "a%20b");
        assert_eq!(
            Payload::Text(String::new()).append_to_url("https://a/"),
            "https://a/"
        );
    }

    #[test]
    fn json_objects_become_encoded_parameters() {
        let p =
            Payload::Json(r#"{"id":7,"email":"a+b@x.example","tags":["x","y"],"n":null}"#.into());
        assert_eq!(
            p.query_string(),
            "id=7&email=a%2Bb%40x.example&tags=%5B%22x%22%2C%22y%22%5D&n="
        );
        assert_eq!(
            Payload::Json("[1,2]".into()).query_string(),
            "data=%5B1%2C2%5D"
        );
        // Found by the property tests: numbers keep every digit (serde_json's
        // float_roundtrip), not a neighbouring float.
        assert_eq!(
            Payload::Json(r#"{"x":-2.2533573158688283e-237}"#.into()).query_string(),
            "x=-2.2533573158688283e-237"
        );
    }

    #[test]
    fn compact_json_drops_whitespace_between_tokens_only() {
        assert!(matches!(compact_json(r#"{"a":[1,2]}"#), Cow::Borrowed(_)));
        assert_eq!(
            compact_json("{ \"a b\" : [ 1 ,\n\t2 ] ,\r\n \"c\":\"x \\\" y\" }\n"),
            r#"{"a b":[1,2],"c":"x \" y"}"#
        );
        // Escapes, number forms and duplicate keys stay as written.
        assert_eq!(
            compact_json(r#"{ "e":"\u00e9\\", "n": 1E2, "n": -0.0 }"#),
            r#"{"e":"\u00e9\\","n":1E2,"n":-0.0}"#
        );
        assert_eq!(compact_json(" \"ü  ß\" "), "\"ü  ß\"");
    }

    #[test]
    fn content_types_follow_the_kind() {
        assert_eq!(
            Payload::Json("{}".into()).content_type(),
            "application/json"
        );
        assert!(
            Payload::Text(String::new())
                .content_type()
                .starts_with("text/plain")
        );
    }
}
