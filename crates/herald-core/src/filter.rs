//! Payload filters: an optional expression per webhook, in the Common
//! Expression Language (CEL), that decides for each fired event whether the
//! webhook gets a delivery. CEL is not Turing-complete (no loops, no
//! recursion), so a filter always finishes, and the `cel` crate evaluates
//! it without I/O.
//!
//! A filter sees three variables: `data` (the fired JSON document, or the
//! fired text as a string), `event` (the event's name) and `tenant`. It is
//! parsed where a webhook is saved, so a wrong one is refused with a
//! message that says what is wrong; when it is evaluated, anything but
//! `true` (false, another type, an error such as a missing field) means
//! "no delivery", and never a failed Fire.

use std::fmt;
use std::sync::Arc;

use crate::webhook::ValidationError;

/// Longest filter, in bytes: long enough for any guard a shop writes,
/// short enough that parsing stays cheap.
pub const MAX_FILTER_LEN: usize = 2_000;

/// The variables a filter may use.
pub const VARIABLES: &[&str] = &["data", "event", "tenant"];

/// CEL's parser is recursive and takes a lot of stack for deeply nested
/// input (several MiB in debug builds), more than a Tokio worker has, so
/// parsing runs on a thread of its own with this much.
const PARSE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// A parsed filter and its source text.
#[derive(Clone)]
pub struct Filter {
    source: String,
    program: Arc<cel::Program>,
}

impl Filter {
    /// Parses `source`; the error names the `filter` field.
    pub fn parse(source: &str) -> Result<Self, ValidationError> {
        let invalid = |message: String| ValidationError::new("filter", message);
        if source.trim().is_empty() {
            return Err(invalid(
                "is empty; give an expression such as data.total >= 100, or none".into(),
            ));
        }
        if source.len() > MAX_FILTER_LEN {
            return Err(invalid(format!(
                "is {} bytes long; at most {MAX_FILTER_LEN} are allowed",
                source.len()
            )));
        }
        let owned = source.to_owned();
        let compiled = std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn(move || cel::Program::compile(&owned).map_err(|e| e.to_string()))
            .map_err(|e| invalid(format!("could not be parsed now ({e}); try again")))?
            .join()
            .map_err(|_| invalid("could not be parsed (the parser failed)".into()))?;
        let program = compiled.map_err(|e| {
            invalid(format!(
                "is not a valid CEL expression: {}",
                e.lines().next().unwrap_or_default()
            ))
        })?;
        let references = program.references();
        if let Some(unknown) = references
            .variables()
            .into_iter()
            .find(|v| !VARIABLES.contains(v))
        {
            return Err(invalid(format!(
                "uses {unknown:?}, which is not a variable; a filter sees data (the fired \
                 JSON), event and tenant, e.g. data.total >= 100 && data.country == \"CZ\""
            )));
        }
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the event gets a delivery: only a result of `true` says so.
    /// The error says why the filter did not answer `true` or `false`.
    pub fn matches(&self, input: &FilterInput) -> Result<bool, String> {
        match self.program.execute(&input.context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the filter gave {other:?}, not true or false")),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Filter {}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

/// The fired data as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub enum FilterData<'a> {
    Json(&'a serde_json::Value),
    Text(&'a str),
}

/// One fired event's variables, built once and shared by every filter of
/// the fan-out.
pub struct FilterInput {
    context: cel::Context<'static>,
}

impl FilterInput {
    pub fn new(tenant: &str, event: &str, data: FilterData<'_>) -> Self {
        let mut context = cel::Context::default();
        context.add_variable_from_value("tenant", tenant.to_owned());
        context.add_variable_from_value("event", event.to_owned());
        match data {
            FilterData::Json(value) => {
                // A JSON value always converts; should it not, `data` stays
                // unset and filters that read it do not match.
                let _ = context.add_variable("data", value);
            }
            FilterData::Text(text) => context.add_variable_from_value("data", text.to_owned()),
        }
        Self { context }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> serde_json::Value {
        serde_json::json!({
            "total": 149.9, "items": 3, "country": "CZ",
            "customer": {"vip": true, "email": "jane@example.com"},
            "tags": ["b2b", "rush"]
        })
    }

    #[test]
    fn filters_decide_on_the_fired_json() {
        let data = order();
        let input = FilterInput::new("shop-1", "order.created", FilterData::Json(&data));
        let cases: &[(&str, Result<bool, &str>)] = &[
            ("data.total >= 100 && data.country == \"CZ\"", Ok(true)),
            ("data.total >= 100 && data.country == \"DE\"", Ok(false)),
            // Integers and floats compare with each other.
            ("data.items > 2.5 && data.total < 150", Ok(true)),
            ("data.customer.vip", Ok(true)),
            ("\"rush\" in data.tags", Ok(true)),
            ("data.customer.email.endsWith(\"@example.com\")", Ok(true)),
            (
                "event.startsWith(\"order.\") && tenant == \"shop-1\"",
                Ok(true),
            ),
            ("has(data.coupon) && data.coupon == \"X\"", Ok(false)),
            // A missing field is an error, which means no delivery.
            ("data.coupon == \"X\"", Err("coupon")),
            ("data.total", Err("not true or false")),
        ];
        for (source, expected) in cases {
            let filter = Filter::parse(source).unwrap_or_else(|e| panic!("{source}: {e:?}"));
            match (filter.matches(&input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{source}"),
                (Err(e), Err(hint)) => assert!(e.contains(hint), "{source}: {e}"),
                (got, want) => panic!("{source}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn text_data_is_a_string() {
        let input = FilterInput::new("", "note", FilterData::Text("urgent: call back"));
        let filter = Filter::parse("data.startsWith(\"urgent\")").unwrap();
        assert_eq!(filter.matches(&input), Ok(true));
    }

    #[test]
    fn wrong_filters_are_refused_with_what_to_fix() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("data.total >= ", "not a valid CEL expression"),
            ("payload.total > 1", "\"payload\", which is not a variable"),
            (&"1 == 1 && ".repeat(300), "at most 2000"),
        ];
        for (source, hint) in cases {
            let e = Filter::parse(source).unwrap_err();
            assert_eq!(e.field, "filter");
            assert!(e.message.contains(hint), "{source:?}: {}", e.message);
        }
    }

    #[test]
    fn deep_nesting_is_parsed_or_refused_without_crashing() {
        let source = format!("{}true{}", "(".repeat(400), ")".repeat(400));
        // Either answer is fine; what matters is that the process lives.
        let _ = Filter::parse(&source);
    }
}
