//! What a template is rendered with: the event's data and facts
//! ([`TemplateContext`], [`EventInfo`]) and the bottom frame of Liquid's
//! runtime stack that serves them leniently ([`LenientFrame`]).

use std::cell::RefCell;
use std::collections::BTreeSet;

use liquid_core::model::{
    KString, KStringCow, KStringRef, Object, Scalar, ScalarCow, Value, ValueCow, ValueView,
};
use liquid_core::runtime::{PartialStore, Registers, RuntimeCore};
use liquid_core::{Result as LiquidResult, Runtime};

use super::values::{Lenient, NIL};
use crate::Payload;

/// What a template can say about the event, besides its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub name: String,
    pub tenant: String,
    pub delivery_id: uuid::Uuid,
    pub attempt: u32,
    pub fired_at_unix_ms: i64,
}

/// The values a template is rendered with; build once per delivery attempt.
#[derive(Debug, Clone)]
pub struct TemplateContext {
    data: Lenient,
    event: Lenient,
}

impl TemplateContext {
    pub fn new(payload: &Payload, event: EventInfo) -> Self {
        let data = match payload {
            Payload::Text(text) => Lenient::Scalar(Scalar::new(KString::from_ref(text))),
            Payload::Json(doc) => match serde_json::from_str::<serde_json::Value>(doc) {
                Ok(value) => Lenient::from_json(value),
                // Validated at Fire time; a broken document is text.
                Err(_) => Lenient::Scalar(Scalar::new(KString::from_ref(doc))),
            },
        };
        let event = Lenient::object(vec![
            (
                KString::from_static("name"),
                Lenient::Scalar(Scalar::new(KString::from_string(event.name))),
            ),
            (
                KString::from_static("tenant"),
                Lenient::Scalar(Scalar::new(KString::from_string(event.tenant))),
            ),
            (
                KString::from_static("delivery_id"),
                Lenient::Scalar(Scalar::new(KString::from_string(
                    event.delivery_id.to_string(),
                ))),
            ),
            (
                KString::from_static("attempt"),
                Lenient::Scalar(Scalar::new(i64::from(event.attempt))),
            ),
            (
                KString::from_static("fired_at"),
                Lenient::Scalar(Scalar::new(KString::from_string(rfc3339_millis(
                    event.fired_at_unix_ms,
                )))),
            ),
        ]);
        Self { data, event }
    }

    fn root(&self, name: &str) -> &Lenient {
        match name {
            "data" | "item" => &self.data,
            "event" => &self.event,
            _ => &NIL,
        }
    }
}

const ROOTS: [&str; 3] = ["data", "item", "event"];

/// The bottom of the runtime stack: serves `data`, `item` and `event` by
/// reference (so their leniency survives into filters and `for` loops) and
/// `nil` for any other root name. Assignments live in the [`GlobalFrame`]
/// above it and shadow these roots.
pub(super) struct LenientFrame<'c> {
    core: RuntimeCore<'static>,
    ctx: &'c TemplateContext,
    /// `{% increment %}` / `{% decrement %}` counters.
    indexes: RefCell<Object>,
}

impl<'c> LenientFrame<'c> {
    pub(super) fn new(ctx: &'c TemplateContext) -> Self {
        Self {
            core: RuntimeCore::new(),
            ctx,
            indexes: RefCell::default(),
        }
    }

    fn lookup(&self, path: &[ScalarCow<'_>]) -> ValueCow<'_> {
        let Some((first, rest)) = path.split_first() else {
            return ValueCow::Borrowed(&NIL);
        };
        let root = self.ctx.root(first.to_kstr().as_str());
        // Only a member of a string or number can be missing here.
        liquid_core::model::try_find(root, rest).unwrap_or(ValueCow::Borrowed(&NIL))
    }
}

impl Runtime for LenientFrame<'_> {
    fn partials(&self) -> &dyn PartialStore {
        self.core.partials()
    }

    fn name(&self) -> Option<KStringRef<'_>> {
        None
    }

    fn roots(&self) -> BTreeSet<KStringCow<'_>> {
        ROOTS.iter().map(|r| KStringCow::from_static(r)).collect()
    }

    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        Some(self.lookup(path))
    }

    fn get(&self, path: &[ScalarCow<'_>]) -> LiquidResult<ValueCow<'_>> {
        Ok(self.lookup(path))
    }

    /// Never reached: the [`GlobalFrame`] above keeps assignments.
    fn set_global(&self, _name: KString, _val: Value) -> Option<Value> {
        None
    }

    fn set_index(&self, name: KString, val: Value) -> Option<Value> {
        self.indexes.borrow_mut().insert(name, val)
    }

    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.indexes
            .borrow()
            .get(name)
            .map(|v| ValueCow::Owned(v.clone()))
    }

    fn registers(&self) -> &Registers {
        self.core.registers()
    }
}

/// `2026-11-23T12:00:00.123Z` for a Unix time in milliseconds.
pub fn rfc3339_millis(unix_ms: i64) -> String {
    // Fire times are never before 1970; clamp rather than fail.
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}
