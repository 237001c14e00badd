//! The lenient value tree: fired JSON as templates see it, where a member
//! the data lacks (at any depth) is `nil` and renders as an empty string.

use std::collections::HashMap;
use std::fmt;

use liquid_core::model::{
    ArrayView, DisplayCow, KString, KStringCow, ObjectView, Scalar, ScalarCow, State, Value,
    ValueView,
};

use super::filters::write_json;

/// Data as templates see it: a JSON value whose missing members (at any
/// depth) are `nil`, which renders as an empty string.
#[derive(Debug, Clone)]
pub(super) enum Lenient {
    Nil,
    /// Strings, booleans and integers that fit `i64`.
    Scalar(Scalar),
    /// Any other JSON number; renders exactly as written.
    Number {
        text: KString,
        value: f64,
    },
    Array(Vec<Lenient>),
    Object(LenientObject),
}

#[derive(Debug, Clone)]
pub(super) struct LenientObject {
    /// In document order.
    entries: Vec<(KString, Lenient)>,
    index: HashMap<KString, usize>,
    /// `size`, for `{{ data.obj.size }}` when the object has no such key.
    size: Scalar,
}

pub(super) static NIL: Lenient = Lenient::Nil;

impl Lenient {
    pub(super) fn from_json(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Self::Nil,
            serde_json::Value::Bool(b) => Self::Scalar(Scalar::new(b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Self::Scalar(Scalar::new(i)),
                None => Self::Number {
                    value: n.as_f64().unwrap_or(f64::NAN),
                    text: KString::from_string(n.to_string()),
                },
            },
            serde_json::Value::String(s) => Self::Scalar(Scalar::new(KString::from_string(s))),
            serde_json::Value::Array(items) => {
                Self::Array(items.into_iter().map(Self::from_json).collect())
            }
            serde_json::Value::Object(fields) => Self::object(
                fields
                    .into_iter()
                    .map(|(k, v)| (KString::from_string(k), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    pub(super) fn object(entries: Vec<(KString, Lenient)>) -> Self {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let size = Scalar::new(entries.len() as i64);
        Self::Object(LenientObject {
            entries,
            index,
            size,
        })
    }
}

/// Renders nested data as compact JSON.
struct JsonDisplay<'a>(&'a dyn ValueView);

impl fmt::Display for JsonDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_json(f, self.0)
    }
}

impl ValueView for Lenient {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }

    fn render(&self) -> DisplayCow<'_> {
        match self {
            Self::Nil => DisplayCow::Borrowed(&""),
            Self::Scalar(s) => s.render(),
            Self::Number { text, .. } => DisplayCow::Borrowed(text),
            Self::Array(_) | Self::Object(_) => DisplayCow::Owned(Box::new(JsonDisplay(self))),
        }
    }

    fn source(&self) -> DisplayCow<'_> {
        match self {
            Self::Nil => DisplayCow::Borrowed(&"nil"),
            Self::Scalar(s) => s.source(),
            Self::Number { text, .. } => DisplayCow::Borrowed(text),
            Self::Array(_) | Self::Object(_) => DisplayCow::Owned(Box::new(JsonDisplay(self))),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::Nil => "nil",
            Self::Scalar(s) => s.type_name(),
            Self::Number { .. } => "fractional number",
            Self::Array(_) => "array",
            Self::Object(_) => "object",
        }
    }

    fn query_state(&self, state: State) -> bool {
        match self {
            Self::Nil => !matches!(state, State::Truthy),
            Self::Scalar(s) => s.query_state(state),
            Self::Number { .. } => matches!(state, State::Truthy),
            Self::Array(items) => match state {
                State::Truthy => true,
                State::DefaultValue | State::Empty | State::Blank => items.is_empty(),
            },
            Self::Object(o) => match state {
                State::Truthy => true,
                State::DefaultValue | State::Empty | State::Blank => o.entries.is_empty(),
            },
        }
    }

    fn to_kstr(&self) -> KStringCow<'_> {
        match self {
            Self::Nil => KStringCow::from_static(""),
            Self::Scalar(s) => s.to_kstr(),
            Self::Number { text, .. } => KStringCow::from(text),
            Self::Array(_) | Self::Object(_) => {
                KStringCow::from_string(JsonDisplay(self).to_string())
            }
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Self::Nil => Value::Nil,
            Self::Scalar(s) => Value::Scalar(s.clone()),
            Self::Number { value, .. } => Value::scalar(*value),
            Self::Array(items) => Value::Array(items.iter().map(ValueView::to_value).collect()),
            Self::Object(o) => Value::Object(
                o.entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        match self {
            Self::Scalar(s) => Some(s.as_ref()),
            Self::Number { value, .. } => Some(ScalarCow::new(*value)),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&dyn ArrayView> {
        match self {
            Self::Array(_) => Some(self),
            _ => None,
        }
    }

    /// `nil` is an (empty) object too, so that a path through a missing
    /// member (`data.a.b` without `a`) keeps resolving to `nil`.
    fn as_object(&self) -> Option<&dyn ObjectView> {
        match self {
            Self::Object(_) | Self::Nil => Some(self),
            _ => None,
        }
    }

    fn is_nil(&self) -> bool {
        matches!(self, Self::Nil)
    }
}

impl ArrayView for Lenient {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        match self {
            Self::Array(items) => items.len() as i64,
            _ => 0,
        }
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Self::Array(items) => Box::new(items.iter().map(|v| v as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn contains_key(&self, index: i64) -> bool {
        self.array_slot(index).is_some()
    }

    /// Out of range is `nil`, not an error.
    fn get(&self, index: i64) -> Option<&dyn ValueView> {
        Some(self.array_slot(index).unwrap_or(&NIL))
    }
}

impl Lenient {
    fn array_slot(&self, index: i64) -> Option<&Lenient> {
        let Self::Array(items) = self else {
            return None;
        };
        let len = i64::try_from(items.len()).ok()?;
        let index = if index < 0 { index + len } else { index };
        usize::try_from(index)
            .ok()
            .and_then(|i| <[Lenient]>::get(items, i))
    }

    fn object_entries(&self) -> &[(KString, Lenient)] {
        match self {
            Self::Object(o) => &o.entries,
            _ => &[],
        }
    }
}

impl ObjectView for Lenient {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        self.object_entries().len() as i64
    }

    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(
            self.object_entries()
                .iter()
                .map(|(k, _)| KStringCow::from(k)),
        )
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(
            self.object_entries()
                .iter()
                .map(|(_, v)| v as &dyn ValueView),
        )
    }

    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            self.object_entries()
                .iter()
                .map(|(k, v)| (KStringCow::from(k), v as &dyn ValueView)),
        )
    }

    /// Truthful (`{% if data contains "x" %}` relies on it); lookups go
    /// through [`Self::get`], which never fails.
    fn contains_key(&self, index: &str) -> bool {
        match self {
            Self::Object(o) => o.index.contains_key(index),
            _ => false,
        }
    }

    /// A missing member is `nil`, not an error.
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        let Self::Object(o) = self else {
            return Some(&NIL);
        };
        match o.index.get(index) {
            Some(&i) => Some(&o.entries[i].1),
            None if index == "size" => Some(&o.size),
            None => Some(&NIL),
        }
    }
}
