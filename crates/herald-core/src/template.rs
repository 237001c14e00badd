//! Request templates: the webhook URL, custom header values and the body can
//! be Liquid templates rendered per delivery attempt.
//!
//! Two syntaxes are accepted and may be mixed:
//!
//! - Liquid (`{{ data.customer.email | url_encode }}`, `{% if … %}`), with
//!   Liquid's standard filters plus `json_escape` (escapes a value for use
//!   inside a JSON string literal, without the quotes), `json` (renders a
//!   value as a JSON document) and Shopify's `url_escape` and
//!   `url_param_escape`. `url_encode` is Herald's own and writes what
//!   Shopify Liquid and python-liquid write, byte for byte (a space as `+`),
//!   not what liquid-rust's does.
//! - Ellity's `#customer.email#`, which means exactly
//!   `{{ data.customer.email }}`. Only `#`, an identifier path
//!   (`[A-Za-z_][A-Za-z0-9_]*` followed by any number of `.[A-Za-z0-9_]+`) and
//!   a closing `#` count; anything else (`#fragment`, `# 1`, `##`) is literal
//!   text. Inside Liquid markup (`{{ … }}`, `{% … %}`) and `{% raw %}` blocks
//!   nothing is replaced.
//!
//! The root objects are `data` (the fired JSON document, or the text for text
//! payloads; also reachable as `item`, the PARTS SOFT name) and `event`
//! (`name`, `tenant`, `delivery_id`, `attempt`, `fired_at` as RFC 3339 UTC with
//! milliseconds).
//!
//! Unlike stock liquid-rust, a variable the event lacks renders as an empty
//! string in both syntaxes (and is `nil` for `default`, `if`, `==`), however
//! deep the path: `data.a.b.c` with no `a` is empty, not an error; so is an
//! index out of range and an unknown root name. Objects and arrays of the
//! data render as compact JSON; fractions as serde_json writes them (`12.50`
//! becomes `12.5`). `for` loop variables stay lenient for missing keys, but
//! Liquid's own frames copy what they print: `{{ o }}` of an object inside a
//! loop renders Liquid-style, and a member of a string or number there
//! (`{{ o.name.x }}`) is an error. Values copied with `{% assign %}` are plain
//! Liquid values and lose the leniency.
//!
//! Templates are compiled once with a [`TemplateEngine`] and rendered many
//! times; rendering does no I/O.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};

use liquid_core::model::{
    ArrayView, DisplayCow, KString, KStringCow, KStringRef, Object, ObjectView, Scalar, ScalarCow,
    State, Value, ValueCow, ValueView,
};
use liquid_core::parser::{Language, ParseBlock, ParseTag};
use liquid_core::runtime::{GlobalFrame, PartialStore, Registers, RuntimeCore};
use liquid_core::{
    Display_filter, Filter, FilterReflection, ParseFilter, Renderable, Result as LiquidResult,
    Runtime,
};
use liquid_lib::stdlib;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Payload;

/// Longest template source accepted (64 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// How much of a rendered body a [`TemplateError::NotJson`] quotes.
const NOT_JSON_EXCERPT_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the template is {len} bytes; the limit is {limit} bytes")]
    TooLong { len: usize, limit: usize },
    /// The source does not parse. `line` and `column` (1-based, columns in
    /// characters) point into the source as written, when Liquid reported a
    /// position.
    #[error("{}", syntax_message(*.line, *.column, .message))]
    Syntax {
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Rendering failed (a filter refused its input, an unknown partial…).
    #[error("the template could not be rendered: {message}")]
    Render { message: String },
    /// A body declared JSON rendered to something that is not JSON.
    #[error("the rendered body is not valid JSON: {detail}")]
    NotJson { detail: String },
}

fn syntax_message(line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => {
            format!("template syntax error at line {line}, column {column}: {message}")
        }
        _ => format!("template syntax error: {message}"),
    }
}

/// Compiles templates; holds the Liquid language (standard tags, blocks and
/// filters plus Herald's). Build one and share it (it is `Send + Sync`).
pub struct TemplateEngine {
    language: Language,
}

impl fmt::Debug for TemplateEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateEngine").finish_non_exhaustive()
    }
}

impl Default for TemplateEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateEngine {
    pub fn new() -> Self {
        Self {
            language: language(),
        }
    }

    /// Compiles `source` (Liquid and/or Ellity syntax).
    pub fn compile(&self, source: &str) -> Result<CompiledTemplate, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong {
                len: source.len(),
                limit: MAX_TEMPLATE_BYTES,
            });
        }
        let pre = preprocess(source);
        let is_static = !pre.has_markup && pre.shifts.is_empty();
        let template = if is_static {
            None
        } else {
            let elements = liquid_core::parser::parse(&pre.text, &self.language)
                .map_err(|e| syntax_error(&e, &pre))?;
            Some(liquid_core::runtime::Template::new(elements))
        };
        Ok(CompiledTemplate {
            source: source.to_owned(),
            uses_data: pre.uses_data,
            template,
        })
    }
}

/// A compiled template: cheap to render, `Send + Sync`.
pub struct CompiledTemplate {
    source: String,
    uses_data: bool,
    /// `None` when the source is static text.
    template: Option<liquid_core::runtime::Template>,
}

impl fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("source", &self.source)
            .field("uses_data", &self.uses_data)
            .field("is_static", &self.is_static())
            .finish()
    }
}

impl CompiledTemplate {
    /// The source as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template refers to `data` or `item` (in Liquid or Ellity
    /// syntax). A textual check: it may say `true` for a template that only
    /// shadows those names, never `false` for one that reads the data.
    pub fn uses_data(&self) -> bool {
        self.uses_data
    }

    /// True when the source has no `{{`, `{%` or Ellity variable: rendering
    /// returns it unchanged.
    pub fn is_static(&self) -> bool {
        self.template.is_none()
    }

    pub fn render(&self, ctx: &TemplateContext) -> Result<String, TemplateError> {
        match &self.template {
            None => Ok(self.source.clone()),
            Some(template) => {
                let mut out = Vec::with_capacity(self.source.len() + 64);
                // Liquid's integer filters do unchecked arithmetic: `{{
                // data.n | divided_by: -1 }}` panics for the smallest i64
                // (and `plus`, `times`... overflow in debug builds). Fired
                // data must not crash a sender, so a panic is a render error.
                let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let runtime = GlobalFrame::new(LenientFrame::new(ctx));
                    template.render_to(&mut out, &runtime)
                }))
                .map_err(|_| TemplateError::Render {
                    message: "a filter failed on this data (an integer overflow, such as the \
                              smallest integer divided by -1)"
                        .into(),
                })?;
                rendered.map_err(|e| TemplateError::Render {
                    message: liquid_message(&e),
                })?;
                String::from_utf8(out).map_err(|_| TemplateError::Render {
                    message: "the output is not UTF-8".into(),
                })
            }
        }
    }

    /// Renders a body declared JSON and checks that the result parses.
    pub fn render_json(&self, ctx: &TemplateContext) -> Result<String, TemplateError> {
        let out = self.render(ctx)?;
        check_json(&out)?;
        Ok(out)
    }
}

/// Renders `template` and checks the output is a JSON document (for bodies
/// of webhooks declared JSON).
pub fn render_json_body(
    template: &CompiledTemplate,
    ctx: &TemplateContext,
) -> Result<String, TemplateError> {
    template.render_json(ctx)
}

fn check_json(out: &str) -> Result<(), TemplateError> {
    match serde_json::from_str::<serde::de::IgnoredAny>(out) {
        Ok(_) => Ok(()),
        Err(e) => {
            let excerpt: String = out.chars().take(NOT_JSON_EXCERPT_CHARS).collect();
            let more = if excerpt.len() < out.len() { "…" } else { "" };
            Err(TemplateError::NotJson {
                detail: format!("{e} (output: {excerpt}{more})"),
            })
        }
    }
}

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
struct LenientFrame<'c> {
    core: RuntimeCore<'static>,
    ctx: &'c TemplateContext,
    /// `{% increment %}` / `{% decrement %}` counters.
    indexes: RefCell<Object>,
}

impl<'c> LenientFrame<'c> {
    fn new(ctx: &'c TemplateContext) -> Self {
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

/// Liquid's standard library (as `liquid::ParserBuilder::with_stdlib`
/// registers it, but with Herald's `url_encode`) plus `url_escape`,
/// `url_param_escape`, `json_escape` and `json`.
fn language() -> Language {
    fn tag(lang: &mut Language, tag: impl ParseTag + 'static) {
        let name = tag.reflection().tag().to_owned();
        lang.tags.register(name, Box::new(tag));
    }
    fn block(lang: &mut Language, block: impl ParseBlock + 'static) {
        let name = block.reflection().start_tag().to_owned();
        lang.blocks.register(name, Box::new(block));
    }
    fn filter(lang: &mut Language, filter: impl ParseFilter + 'static) {
        let name = filter.reflection().name().to_owned();
        lang.filters.register(name, Box::new(filter));
    }

    let mut lang = Language::empty();
    let l = &mut lang;
    tag(l, stdlib::AssignTag);
    tag(l, stdlib::BreakTag);
    tag(l, stdlib::ContinueTag);
    tag(l, stdlib::CycleTag);
    tag(l, stdlib::IncludeTag);
    tag(l, stdlib::IncrementTag);
    tag(l, stdlib::DecrementTag);
    tag(l, stdlib::RenderTag);
    block(l, stdlib::RawBlock);
    block(l, stdlib::IfBlock);
    block(l, stdlib::UnlessBlock);
    block(l, stdlib::IfChangedBlock);
    block(l, stdlib::ForBlock);
    block(l, stdlib::TableRowBlock);
    block(l, stdlib::CommentBlock);
    block(l, stdlib::CaptureBlock);
    block(l, stdlib::CaseBlock);
    filter(l, stdlib::Abs);
    filter(l, stdlib::Append);
    filter(l, stdlib::AtLeast);
    filter(l, stdlib::AtMost);
    filter(l, stdlib::Capitalize);
    filter(l, stdlib::Ceil);
    filter(l, stdlib::Compact);
    filter(l, stdlib::Concat);
    filter(l, stdlib::Date);
    filter(l, stdlib::Default);
    filter(l, stdlib::DividedBy);
    filter(l, stdlib::Downcase);
    filter(l, stdlib::Escape);
    filter(l, stdlib::EscapeOnce);
    filter(l, stdlib::First);
    filter(l, stdlib::Floor);
    filter(l, stdlib::Join);
    filter(l, stdlib::Last);
    filter(l, stdlib::Lstrip);
    filter(l, stdlib::Map);
    filter(l, stdlib::Minus);
    filter(l, stdlib::Modulo);
    filter(l, stdlib::NewlineToBr);
    filter(l, stdlib::Plus);
    filter(l, stdlib::Prepend);
    filter(l, stdlib::Remove);
    filter(l, stdlib::RemoveFirst);
    filter(l, stdlib::Replace);
    filter(l, stdlib::ReplaceFirst);
    filter(l, stdlib::Reverse);
    filter(l, stdlib::Round);
    filter(l, stdlib::Rstrip);
    filter(l, stdlib::Size);
    filter(l, stdlib::Slice);
    filter(l, stdlib::Sort);
    filter(l, stdlib::SortNatural);
    filter(l, stdlib::Split);
    filter(l, stdlib::Strip);
    filter(l, stdlib::StripHtml);
    filter(l, stdlib::StripNewlines);
    filter(l, stdlib::Times);
    filter(l, stdlib::Truncate);
    filter(l, stdlib::TruncateWords);
    filter(l, stdlib::Uniq);
    filter(l, stdlib::Upcase);
    filter(l, stdlib::UrlDecode);
    filter(l, UrlEncode);
    filter(l, UrlEscape);
    filter(l, UrlParamEscape);
    filter(l, stdlib::Where);
    filter(l, JsonEscape);
    filter(l, Json);
    lang
}

// ---------------------------------------------------------------------------
// The lenient value tree.

/// Data as templates see it: a JSON value whose missing members (at any
/// depth) are `nil`, which renders as an empty string.
#[derive(Debug, Clone)]
enum Lenient {
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
struct LenientObject {
    /// In document order.
    entries: Vec<(KString, Lenient)>,
    index: HashMap<KString, usize>,
    /// `size`, for `{{ data.obj.size }}` when the object has no such key.
    size: Scalar,
}

static NIL: Lenient = Lenient::Nil;

impl Lenient {
    fn from_json(value: serde_json::Value) -> Self {
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

    fn object(entries: Vec<(KString, Lenient)>) -> Self {
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

// ---------------------------------------------------------------------------
// Filters.

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "json_escape",
    description = "Escapes a value for use inside a JSON string literal (without the quotes).",
    parsed(JsonEscapeFilter)
)]
struct JsonEscape;

#[derive(Debug, Default, Display_filter)]
#[name = "json_escape"]
struct JsonEscapeFilter;

impl Filter for JsonEscapeFilter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> LiquidResult<Value> {
        if input.is_nil() {
            return Ok(Value::scalar(""));
        }
        let mut out = String::new();
        escape_json_into(&mut out, input.to_kstr().as_str());
        Ok(Value::scalar(out))
    }
}

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "json",
    description = "Renders a value as a JSON document (strings quoted, nil as null).",
    parsed(JsonFilter)
)]
struct Json;

#[derive(Debug, Default, Display_filter)]
#[name = "json"]
struct JsonFilter;

impl Filter for JsonFilter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> LiquidResult<Value> {
        let mut out = String::new();
        write_json(&mut out, input).map_err(|_| liquid_core::Error::with_msg("json failed"))?;
        Ok(Value::scalar(out))
    }
}

/// What `url_encode` escapes: everything but ASCII letters, digits and
/// `_ . - ~`, as Shopify Liquid (Ruby's `CGI.escape`) and python-liquid
/// (`urllib.parse.quote_plus`) do. The space is left out here only because
/// it becomes `+` afterwards.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b' ');

/// What Shopify's `url_escape` escapes (Ruby's
/// `URI::DEFAULT_PARSER.escape`): everything but ASCII letters, digits and
/// RFC 2396's unreserved and reserved characters (with RFC 2732's brackets),
/// `- _ . ! ~ * ' ( ) ; / ? : @ & = + $ , [ ]`.
const URL_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b';')
    .remove(b'/')
    .remove(b'?')
    .remove(b':')
    .remove(b'@')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b',')
    .remove(b'[')
    .remove(b']');

/// What Shopify's `url_param_escape` escapes: as `url_escape`, and `&` too,
/// so that a value cannot end its query parameter.
const URL_PARAM_ESCAPE: &AsciiSet = &URL_ESCAPE.add(b'&');

/// `url_encode`: a value for a query parameter or a form body, byte for
/// byte as the Liquid reference implementations write it (a space is `+`).
/// liquid-rust's own filter writes a space as `%20` and keeps other
/// characters the reference escapes, so templates written for Shopify or
/// python-liquid would send something else.
fn url_encode(s: &str) -> String {
    // `+` is in the escaped set, so every `+` left after encoding was a space.
    utf8_percent_encode(s, URL_ENCODE)
        .to_string()
        .replace(' ', "+")
}

/// `url_escape`: Shopify's filter for a whole URL or path; keeps the
/// characters that give a URL its structure (`/ ? & = :` …) and escapes the
/// rest (a space is `%20`).
fn url_escape(s: &str) -> String {
    utf8_percent_encode(s, URL_ESCAPE).to_string()
}

/// `url_param_escape`: `url_escape`, with `&` escaped as well.
fn url_param_escape(s: &str) -> String {
    utf8_percent_encode(s, URL_PARAM_ESCAPE).to_string()
}

/// Applies one of the URL filters to a value; `nil` (a value the data
/// lacks) renders empty, as it does with `json_escape`.
fn url_filter(input: &dyn ValueView, encode: fn(&str) -> String) -> Value {
    if input.is_nil() {
        return Value::scalar("");
    }
    Value::scalar(encode(input.to_kstr().as_str()))
}

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "url_encode",
    description = "Encodes a value for a query parameter or form body (a space as +), as Shopify Liquid does.",
    parsed(UrlEncodeFilter)
)]
struct UrlEncode;

#[derive(Debug, Default, Display_filter)]
#[name = "url_encode"]
struct UrlEncodeFilter;

impl Filter for UrlEncodeFilter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> LiquidResult<Value> {
        Ok(url_filter(input, url_encode))
    }
}

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "url_escape",
    description = "Escapes the characters a URL cannot hold, keeping its structure (/ ? & = : ...).",
    parsed(UrlEscapeFilter)
)]
struct UrlEscape;

#[derive(Debug, Default, Display_filter)]
#[name = "url_escape"]
struct UrlEscapeFilter;

impl Filter for UrlEscapeFilter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> LiquidResult<Value> {
        Ok(url_filter(input, url_escape))
    }
}

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "url_param_escape",
    description = "Escapes like url_escape, and & too.",
    parsed(UrlParamEscapeFilter)
)]
struct UrlParamEscape;

#[derive(Debug, Default, Display_filter)]
#[name = "url_param_escape"]
struct UrlParamEscapeFilter;

impl Filter for UrlParamEscapeFilter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> LiquidResult<Value> {
        Ok(url_filter(input, url_param_escape))
    }
}

/// Writes `s` escaped as the inside of a JSON string literal.
fn escape_json_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Writes `value` as compact JSON. Numbers keep their rendered text when it
/// is a valid JSON number; objects keep their key order.
fn write_json(out: &mut dyn fmt::Write, value: &dyn ValueView) -> fmt::Result {
    if value.is_nil() || value.is_state() {
        return out.write_str("null");
    }
    if let Some(items) = value.as_array() {
        out.write_char('[')?;
        for (i, item) in items.values().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            write_json(out, item)?;
        }
        return out.write_char(']');
    }
    if let Some(fields) = value.as_object() {
        out.write_char('{')?;
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            write_json_string(out, k.as_str())?;
            out.write_char(':')?;
            write_json(out, v)?;
        }
        return out.write_char('}');
    }
    match value.as_scalar() {
        Some(scalar) => match scalar.type_name() {
            "boolean" => out.write_str(if scalar.to_bool().unwrap_or(false) {
                "true"
            } else {
                "false"
            }),
            "whole number" | "fractional number" => {
                let text = value.render().to_string();
                if serde_json::from_str::<serde_json::Number>(&text).is_ok() {
                    out.write_str(&text)
                } else {
                    match scalar.to_float().and_then(serde_json::Number::from_f64) {
                        Some(n) => write!(out, "{n}"),
                        None => out.write_str("null"),
                    }
                }
            }
            _ => write_json_string(out, scalar.to_kstr().as_str()),
        },
        None => write_json_string(out, value.to_kstr().as_str()),
    }
}

fn write_json_string(out: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    let mut escaped = String::with_capacity(s.len() + 2);
    escaped.push('"');
    escape_json_into(&mut escaped, s);
    escaped.push('"');
    out.write_str(&escaped)
}

// ---------------------------------------------------------------------------
// Source preprocessing: Ellity variables, markup detection, `data` use.

/// One Ellity variable replaced by Liquid markup, for mapping error
/// positions back to the source as written.
#[derive(Debug, Clone, Copy)]
struct Shift {
    /// 1-based line (replacements never span lines).
    line: usize,
    /// 1-based character column of the replacement in the preprocessed text.
    new_col: usize,
    new_len: usize,
    /// 1-based character column of the `#` in the source.
    orig_col: usize,
    orig_len: usize,
}

struct Preprocessed {
    text: String,
    shifts: Vec<Shift>,
    has_markup: bool,
    uses_data: bool,
}

fn preprocess(source: &str) -> Preprocessed {
    let mut text = String::with_capacity(source.len() + 16);
    let mut shifts = Vec::new();
    let mut has_markup = false;
    let mut uses_data = false;
    // Position tracking in characters, for both texts.
    let mut line = 1;
    let mut orig_col = 1;
    let mut new_col = 1;
    let mut in_raw = false;

    let mut rest = source;
    while !rest.is_empty() {
        // Liquid markup is copied as it is.
        if rest.starts_with("{{") || rest.starts_with("{%") {
            has_markup = true;
            let close = if rest.starts_with("{{") { "}}" } else { "%}" };
            let end = rest[2..]
                .find(close)
                .map_or(rest.len(), |i| i + 2 + close.len());
            let markup = &rest[..end];
            if markup.starts_with("{%") {
                let inner = markup
                    .trim_start_matches("{%")
                    .trim_end_matches("%}")
                    .trim_matches(|c: char| c == '-' || c.is_whitespace());
                let tag = inner.split_whitespace().next().unwrap_or("");
                if tag == "raw" {
                    in_raw = true;
                } else if tag == "endraw" {
                    in_raw = false;
                }
            }
            if !in_raw && markup_reads_data(markup) {
                uses_data = true;
            }
            advance(markup, &mut line, &mut orig_col, &mut new_col, &mut text);
            rest = &rest[end..];
            continue;
        }
        if !in_raw
            && rest.starts_with('#')
            && let Some(path) = ellity_path(rest)
        {
            let replacement = format!("{{{{ {} }}}}", liquid_path(path));
            let orig_len = path.chars().count() + 2;
            let new_len = replacement.chars().count();
            shifts.push(Shift {
                line,
                new_col,
                new_len,
                orig_col,
                orig_len,
            });
            text.push_str(&replacement);
            orig_col += orig_len;
            new_col += new_len;
            uses_data = true;
            rest = &rest[path.len() + 2..];
            continue;
        }
        let c = rest.chars().next().expect("rest is not empty");
        let len = c.len_utf8();
        advance(
            &rest[..len],
            &mut line,
            &mut orig_col,
            &mut new_col,
            &mut text,
        );
        rest = &rest[len..];
    }
    Preprocessed {
        text,
        shifts,
        has_markup,
        uses_data,
    }
}

fn advance(s: &str, line: &mut usize, orig_col: &mut usize, new_col: &mut usize, out: &mut String) {
    for c in s.chars() {
        if c == '\n' {
            *line += 1;
            *orig_col = 1;
            *new_col = 1;
        } else {
            *orig_col += 1;
            *new_col += 1;
        }
    }
    out.push_str(s);
}

/// The identifier path of an Ellity variable at the start of `s` (which
/// starts with `#`), without the `#`s.
fn ellity_path(s: &str) -> Option<&str> {
    let body = &s[1..];
    let bytes = body.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let first = *bytes.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let mut i = 1;
    loop {
        while i < bytes.len() && word(bytes[i]) {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'#') => return Some(&body[..i]),
            Some(b'.') if bytes.get(i + 1).is_some_and(|&b| word(b)) => i += 1,
            _ => return None,
        }
    }
}

/// `customer.email` → `data.customer.email`; segments Liquid cannot take
/// after a dot become indexes (`items.0` → `data.items[0]`).
fn liquid_path(path: &str) -> String {
    let mut out = String::from("data");
    for segment in path.split('.') {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            let _ = write!(out, "[{segment}]");
        } else if segment.as_bytes()[0].is_ascii_digit() {
            let _ = write!(out, "[\"{segment}\"]");
        } else {
            out.push('.');
            out.push_str(segment);
        }
    }
    out
}

/// Whether Liquid markup mentions the `data` or `item` root (outside string
/// literals and not as a member after `.`).
fn markup_reads_data(markup: &str) -> bool {
    let bytes = markup.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut i = 0;
    let mut prev_significant = 0u8;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' {
            i = markup[i + 1..]
                .find(b as char)
                .map_or(bytes.len(), |j| i + j + 2);
            prev_significant = b;
            continue;
        }
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &markup[start..i];
            if prev_significant != b'.' && (word == "data" || word == "item") {
                return true;
            }
            prev_significant = b'a';
            continue;
        }
        if !b.is_ascii_whitespace() {
            prev_significant = b;
        }
        i += 1;
    }
    false
}

// ---------------------------------------------------------------------------
// Errors.

fn syntax_error(err: &liquid_core::Error, pre: &Preprocessed) -> TemplateError {
    let text = err.to_string();
    let Some((line, col)) = find_position(&text) else {
        return TemplateError::Syntax {
            line: None,
            column: None,
            message: one_line(&text),
        };
    };
    // pest reports where it gave up, which for a forgotten `}}` is somewhere
    // inside the markup ("expected Literal"); the fix is at the opening
    // delimiter, so name that one.
    if let Some(open) = unclosed_markup(&pre.text, line, col) {
        let (open_text, close_text, what) = if open.is_tag {
            ("{%", "%}", "tag")
        } else {
            ("{{", "}}", "variable")
        };
        return TemplateError::Syntax {
            line: Some(open.line),
            column: Some(original_column(&pre.shifts, open.line, open.col)),
            message: format!("\"{open_text}\" is not closed; end the {what} with \"{close_text}\""),
        };
    }
    TemplateError::Syntax {
        line: Some(line),
        column: Some(original_column(&pre.shifts, line, col)),
        message: one_line(&text),
    }
}

/// An opening `{{` or `{%`, at a 1-based line and character column of the
/// preprocessed text.
#[derive(Debug, PartialEq, Eq)]
struct Opening {
    line: usize,
    col: usize,
    is_tag: bool,
}

/// The markup Liquid failed in, when that markup is never closed: the last
/// `{{` or `{%` before the error position (`line`, `col`) of `text`, if no
/// matching `}}` / `%}` follows it before the next opening delimiter or the
/// end. Only the markup the error is in counts, so an error in closed
/// markup after a `{{` inside a string literal keeps Liquid's message.
fn unclosed_markup(text: &str, line: usize, col: usize) -> Option<Opening> {
    let mut last: Option<(usize, Opening)> = None;
    let (mut at_line, mut at_col) = (1, 1);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if (at_line, at_col) >= (line, col) {
            break;
        }
        if c == '{'
            && let Some(&(_, next @ ('{' | '%'))) = chars.peek()
        {
            last = Some((
                i,
                Opening {
                    line: at_line,
                    col: at_col,
                    is_tag: next == '%',
                },
            ));
            // The second character of the delimiter cannot start another.
            chars.next();
            at_col += 2;
            continue;
        }
        if c == '\n' {
            at_line += 1;
            at_col = 1;
        } else {
            at_col += 1;
        }
    }
    let (at, opening) = last?;
    let inside = &text[at + 2..];
    let close = if opening.is_tag { "%}" } else { "}}" };
    let next_open = [inside.find("{{"), inside.find("{%")]
        .into_iter()
        .flatten()
        .min();
    let unclosed = match inside.find(close) {
        None => true,
        Some(closed_at) => next_open.is_some_and(|next| next < closed_at),
    };
    unclosed.then_some(opening)
}

/// Liquid's error text on one line: the reason and its context, without the
/// `liquid: ` prefix, pest's source excerpt (which shows the preprocessed
/// text) and lists of everything available.
fn liquid_message(err: &liquid_core::Error) -> String {
    one_line(&err.to_string())
}

fn one_line(text: &str) -> String {
    let mut reason = String::new();
    let mut context = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("liquid:").map_or(line, str::trim);
        if let Some(r) = line.strip_prefix("= ") {
            reason = r.trim().to_owned();
        } else if line.is_empty()
            || line == "with:"
            || line == "|"
            || line.starts_with("-->")
            || line.starts_with('|')
            || line
                .split_once(" |")
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        {
            // pest's excerpt and the framing of the context.
        } else if line.starts_with("available ") {
            // The whole list of filters or keys: too long to be useful.
        } else if reason.is_empty() {
            reason = line.to_owned();
        } else {
            context.push(line.to_owned());
        }
    }
    if context.is_empty() {
        reason
    } else {
        format!("{reason} ({})", context.join(", "))
    }
}

/// The `line:column` of pest's ` --> 1:9` marker.
fn find_position(message: &str) -> Option<(usize, usize)> {
    let at = message.find("--> ")? + 4;
    let rest = &message[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(rest.len());
    let (line, col) = rest[..end].split_once(':')?;
    Some((line.parse().ok()?, col.parse().ok()?))
}

fn original_column(shifts: &[Shift], line: usize, col: usize) -> usize {
    let mut delta: isize = 0;
    for s in shifts.iter().filter(|s| s.line == line) {
        if col < s.new_col {
            break;
        }
        if col < s.new_col + s.new_len {
            return s.orig_col;
        }
        delta += s.new_len as isize - s.orig_len as isize;
    }
    col.saturating_add_signed(-delta).max(1)
}

// ---------------------------------------------------------------------------
// Time.

/// `2026-11-23T12:00:00.123Z` for a Unix time in milliseconds.
pub fn rfc3339_millis(unix_ms: i64) -> String {
    // Fire times are never before 1970; clamp rather than fail.
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> TemplateEngine {
        TemplateEngine::new()
    }

    fn event() -> EventInfo {
        EventInfo {
            name: "order.created".into(),
            tenant: "shop-1".into(),
            delivery_id: uuid::Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001),
            attempt: 2,
            fired_at_unix_ms: 1_795_435_200_123,
        }
    }

    fn json_ctx(doc: &str) -> TemplateContext {
        TemplateContext::new(&Payload::Json(doc.into()), event())
    }

    fn render(src: &str, ctx: &TemplateContext) -> String {
        engine()
            .compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .render(ctx)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn ellity_url() {
        let src = "https://x.example/hook?id=#customer.id#&email=#customer.email#";
        let ctx = json_ctx(r#"{"customer":{"id":7,"email":"a@b.cz"}}"#);
        assert_eq!(
            render(src, &ctx),
            "https://x.example/hook?id=7&email=a@b.cz"
        );
        let ctx = json_ctx(r#"{"customer":{"id":7}}"#);
        assert_eq!(render(src, &ctx), "https://x.example/hook?id=7&email=");
        let ctx = json_ctx(r#"{}"#);
        assert_eq!(render(src, &ctx), "https://x.example/hook?id=&email=");
    }

    #[test]
    fn ellity_json_body() {
        let src = r##"{"email": "#customer.email#", "custom": "#custom.field#"}"##;
        let ctx = json_ctx(r#"{"customer":{"email":"a@b.cz"}}"#);
        let t = engine().compile(src).unwrap();
        assert_eq!(
            t.render_json(&ctx).unwrap(),
            r#"{"email": "a@b.cz", "custom": ""}"#
        );
    }

    #[test]
    fn ellity_only_takes_identifier_paths() {
        let ctx = json_ctx(r#"{"a":{"b":"X"},"items":[{"n":"first"}],"2fa":"on"}"#);
        for literal in [
            "https://x.example/p#fragment",
            "# 1",
            "##",
            "a # b",
            "#a.#",
            "#.a#",
            "#1a#",
            "#a..b#",
            "#a b#",
        ] {
            let t = engine().compile(literal).unwrap();
            assert!(t.is_static(), "{literal}");
            assert_eq!(t.render(&ctx).unwrap(), literal);
        }
        assert_eq!(render("#a.b#", &ctx), "X");
        assert_eq!(render("##a.b##", &ctx), "#X#");
        assert_eq!(render("#a#b#", &ctx), r#"{"b":"X"}b#"#);
        assert_eq!(render("#items.0.n#", &ctx), "first");
        assert_eq!(render("#_x#|#a.2fa#", &ctx), "|");
        // Not replaced inside Liquid markup or raw blocks.
        assert_eq!(render(r##"{{ "#a.b#" }}"##, &ctx), "#a.b#");
        assert_eq!(render("{% raw %}#a.b#{% endraw %}#a.b#", &ctx), "#a.b#X");
        // A URL whose fragment looks like a variable is a variable.
        assert_eq!(
            render("https://x.example/#a.b#", &ctx),
            "https://x.example/X"
        );
    }

    #[test]
    fn parts_soft_lead_body_url_encode() {
        let src = "phone={{ item.phone | url_encode }}&name={{ item.name | url_encode }}";
        let ctx = json_ctx(r#"{"phone":"+7 900 123-45-67","name":"Иван Петров"}"#);
        // As python-liquid 2.3.6 renders it: a space is `+`, a `+` is `%2B`.
        assert_eq!(
            render(src, &ctx),
            "phone=%2B7+900+123-45-67&name=%D0%98%D0%B2%D0%B0%D0%BD+%D0%9F%D0%B5%D1%82%D1%80%D0%BE%D0%B2"
        );
    }

    /// Inputs of the URL filter tables, with what each filter writes.
    /// `url_encode`'s column is python-liquid 2.3.6's output (the Liquid
    /// reference, the same as Ruby's `CGI.escape`); the other two follow
    /// the character sets Shopify documents for `url_escape` and
    /// `url_param_escape` (Ruby's `URI::DEFAULT_PARSER.escape`).
    const URL_FILTER_CASES: &[(&str, &str, &str, &str)] = &[
        // (input, url_encode, url_escape, url_param_escape)
        (
            "Tetsuro Takara",
            "Tetsuro+Takara",
            "Tetsuro%20Takara",
            "Tetsuro%20Takara",
        ),
        (
            "john@liquid.com",
            "john%40liquid.com",
            "john@liquid.com",
            "john@liquid.com",
        ),
        ("a+b", "a%2Bb", "a+b", "a+b"),
        ("a&b=c", "a%26b%3Dc", "a&b=c", "a%26b=c"),
        (
            "Привет мир",
            "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82+%D0%BC%D0%B8%D1%80",
            "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82%20%D0%BC%D0%B8%D1%80",
            "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82%20%D0%BC%D0%B8%D1%80",
        ),
        (
            "🎉 party",
            "%F0%9F%8E%89+party",
            "%F0%9F%8E%89%20party",
            "%F0%9F%8E%89%20party",
        ),
        ("/path/to?x", "%2Fpath%2Fto%3Fx", "/path/to?x", "/path/to?x"),
        ("q?x#frag", "q%3Fx%23frag", "q?x%23frag", "q?x%23frag"),
        ("100% sure", "100%25+sure", "100%25%20sure", "100%25%20sure"),
        ("~_.-*", "~_.-%2A", "~_.-*", "~_.-*"),
        ("tab\there", "tab%09here", "tab%09here", "tab%09here"),
        (
            "it's (ok)!",
            "it%27s+%28ok%29%21",
            "it's%20(ok)!",
            "it's%20(ok)!",
        ),
        // Shopify's documentation examples of url_escape and
        // url_param_escape.
        (
            "<p>Health & Love potions</p>",
            "%3Cp%3EHealth+%26+Love+potions%3C%2Fp%3E",
            "%3Cp%3EHealth%20&%20Love%20potions%3C/p%3E",
            "%3Cp%3EHealth%20%26%20Love%20potions%3C/p%3E",
        ),
        ("", "", "", ""),
    ];

    #[test]
    fn url_filters_match_the_liquid_reference_byte_for_byte() {
        for &(input, encoded, escaped, param_escaped) in URL_FILTER_CASES {
            let ctx = json_ctx(&serde_json::json!({ "s": input }).to_string());
            for (filter, expected) in [
                ("url_encode", encoded),
                ("url_escape", escaped),
                ("url_param_escape", param_escaped),
            ] {
                assert_eq!(
                    render(&format!("{{{{ data.s | {filter} }}}}"), &ctx),
                    expected,
                    "{input:?} | {filter}"
                );
            }
            // Text data goes through the same filters.
            let text = TemplateContext::new(&Payload::Text(input.into()), event());
            assert_eq!(render("{{ data | url_encode }}", &text), encoded);
        }
        // A literal in the template, as Shopify's documentation writes it.
        let ctx = json_ctx("{}");
        assert_eq!(
            render("{{ '<p>Health & Love potions</p>' | url_escape }}", &ctx),
            "%3Cp%3EHealth%20&%20Love%20potions%3C/p%3E"
        );
        assert_eq!(
            render(
                "{{ '<p>Health & Love potions</p>' | url_param_escape }}",
                &ctx
            ),
            "%3Cp%3EHealth%20%26%20Love%20potions%3C/p%3E"
        );
        // Numbers are encoded as they render; nil renders empty.
        let ctx = json_ctx(r#"{"n": 12.50, "i": -3}"#);
        assert_eq!(
            render(
                "{{ data.n | url_encode }}|{{ data.i | url_escape }}|{{ data.missing | url_encode }}|{{ data.missing | url_escape }}|{{ data.missing | url_param_escape }}|{{ nil | url_encode }}",
                &ctx
            ),
            "12.5|-3||||"
        );
    }

    #[test]
    fn url_decode_undoes_url_encode() {
        for &(input, encoded, escaped, param_escaped) in URL_FILTER_CASES {
            let ctx = json_ctx(
                &serde_json::json!({ "e": encoded, "u": escaped, "p": param_escaped, "s": input })
                    .to_string(),
            );
            assert_eq!(render("{{ data.e | url_decode }}", &ctx), input);
            assert_eq!(
                render("{{ data.s | url_encode | url_decode }}", &ctx),
                input
            );
            // url_decode reads `+` as a space, so the escapes that keep a
            // `+` as it is only round-trip when the value has none.
            if !input.contains('+') {
                assert_eq!(render("{{ data.u | url_decode }}", &ctx), input);
                assert_eq!(render("{{ data.p | url_decode }}", &ctx), input);
            }
        }
        assert_eq!(
            render("{{ 'a+b%2Bc' | url_decode }}", &json_ctx("{}")),
            "a b+c"
        );
    }

    #[test]
    fn json_escape_keeps_the_body_valid() {
        let note = "He said \"hi\"\\ then\nleft\ttab \u{1} end ünï";
        let doc = serde_json::json!({ "note": note }).to_string();
        let ctx = json_ctx(&doc);
        let t = engine()
            .compile(r#"{"note": "{{ data.note | json_escape }}"}"#)
            .unwrap();
        let out = t.render_json(&ctx).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["note"], note);
        assert!(out.contains("\\u0001"), "{out}");
        assert_eq!(render("{{ data.missing | json_escape }}", &ctx), "");
    }

    #[test]
    fn json_filter() {
        let doc = r#"{"o":{"b":2,"a":[1,2.5,"x",null,true]},"s":"q\"","n":12.50,"big":18446744073709551615,"e":1e300}"#;
        let ctx = json_ctx(doc);
        assert_eq!(
            render("{{ data.o | json }}", &ctx),
            r#"{"b":2,"a":[1,2.5,"x",null,true]}"#
        );
        assert_eq!(render("{{ data.s | json }}", &ctx), r#""q\"""#);
        // Fractions are written as serde_json writes them (shortest form).
        assert_eq!(render("{{ data.n | json }}", &ctx), "12.5");
        assert_eq!(render("{{ data.n }}", &ctx), "12.5");
        assert_eq!(render("{{ data.e }}", &ctx), "1e+300");
        assert_eq!(render("{{ data.big }}", &ctx), "18446744073709551615");
        assert_eq!(render("{{ data.missing | json }}", &ctx), "null");
        assert_eq!(render("{{ 5 | json }}", &ctx), "5");
        assert_eq!(
            render("{{ data | json }}", &ctx),
            doc.replace("12.50", "12.5").replace("1e300", "1e+300")
        );
        // Nested data renders as JSON without the filter too.
        assert_eq!(render("{{ data.o.a }}", &ctx), r#"[1,2.5,"x",null,true]"#);
        let t = engine()
            .compile(r#"{"payload": {{ data | json }}}"#)
            .unwrap();
        assert!(t.render_json(&ctx).is_ok());
    }

    #[test]
    fn event_and_text_data() {
        let ctx = json_ctx("{}");
        assert_eq!(
            render(
                "{{ event.name }}/{{ event.attempt }}/{{ event.delivery_id }}/{{ event.tenant }}",
                &ctx
            ),
            "order.created/2/01920000-0000-7000-8000-000000000001/shop-1"
        );
        assert_eq!(
            render("{{ event.fired_at }}", &ctx),
            "2026-11-23T12:00:00.123Z"
        );
        let text = TemplateContext::new(&Payload::Text("userid=42&x=1".into()), event());
        assert_eq!(
            render("{{ data }}|{{ item }}", &text),
            "userid=42&x=1|userid=42&x=1"
        );
        assert_eq!(render("{{ data.x }}", &text), "");
        assert_eq!(render("[{{ nope.x }}][{{ nope }}]", &ctx), "[][]");
    }

    #[test]
    fn missing_values_are_empty_and_nil() {
        let ctx =
            json_ctx(r#"{"a":{"b":1},"list":[1,2],"orders":[{"n":1},{}],"empty":"","t":true}"#);
        assert_eq!(render("[{{ data.missing }}]", &ctx), "[]");
        assert_eq!(render("[{{ data.x.y.z }}]", &ctx), "[]");
        assert_eq!(render("[{{ data.a.c.d }}]", &ctx), "[]");
        assert_eq!(render("[{{ data.a.b.c }}]", &ctx), "[]");
        assert_eq!(
            render("[{{ data.list[5] }}][{{ data.list[5].x }}]", &ctx),
            "[][]"
        );
        assert_eq!(render("[{{ data.list[-1] }}]", &ctx), "[2]");
        assert_eq!(render(r#"{{ data.missing | default: "x" }}"#, &ctx), "x");
        assert_eq!(render(r#"{{ data.a.b | default: "x" }}"#, &ctx), "1");
        assert_eq!(render(r#"{{ data.empty | default: "x" }}"#, &ctx), "x");
        assert_eq!(
            render("{% if data.missing %}y{% else %}n{% endif %}", &ctx),
            "n"
        );
        assert_eq!(
            render("{% if data.missing == nil %}nil{% endif %}", &ctx),
            "nil"
        );
        assert_eq!(render("{% if data.t %}t{% endif %}", &ctx), "t");
        assert_eq!(
            render(
                r#"{% if data contains "a" %}a{% endif %}{% if data contains "zz" %}zz{% endif %}"#,
                &ctx
            ),
            "a"
        );
        assert_eq!(
            render(
                "{% for o in data.orders %}{{ o.n }}{{ o.nope.deeper }},{% endfor %}",
                &ctx
            ),
            "1,,"
        );
        assert_eq!(
            render("{% for x in data.list %}{{ x }},{% endfor %}", &ctx),
            "1,2,"
        );
        assert_eq!(
            render("{% for x in data.nope %}{{ x }}{% endfor %}.", &ctx),
            "."
        );
        assert_eq!(
            render("{{ data.list.size }}/{{ data.a.size }}", &ctx),
            "2/1"
        );
        assert_eq!(
            render(
                "{{ data.missing | upcase }}|{{ data.missing | url_encode }}",
                &ctx
            ),
            "|"
        );
        // A key named `size` wins over the count.
        let ctx = json_ctx(r#"{"size":"XL"}"#);
        assert_eq!(render("{{ data.size }}", &ctx), "XL");
    }

    #[test]
    fn syntax_errors_say_where() {
        // An unclosed variable is reported where it opens.
        let err = engine().compile("{{ data.x ").unwrap_err();
        assert_eq!(
            err,
            TemplateError::Syntax {
                line: Some(1),
                column: Some(1),
                message: r#""{{" is not closed; end the variable with "}}""#.into(),
            }
        );
        let err = engine().compile("{% if %}").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }), "{err:?}");
        let err = engine().compile("ok\n{{ data.x ").unwrap_err();
        assert!(err.to_string().contains("line 2, column 1"), "{err}");
        // Some Liquid errors carry no position, only what is wrong.
        let err = engine().compile("{{ data.x | nosuchfilter }}").unwrap_err();
        assert!(
            matches!(err, TemplateError::Syntax { line: None, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("nosuchfilter"), "{err}");
        // Positions point into the source as written, past Ellity variables.
        let err = engine().compile("#a.b# #c# {{ data.x | }}").unwrap_err();
        let TemplateError::Syntax { line, column, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*line, Some(1));
        let column = column.expect("a column");
        assert!((11..=24).contains(&column), "{err}");
        let err = engine()
            .compile(&"x".repeat(MAX_TEMPLATE_BYTES + 1))
            .unwrap_err();
        assert!(matches!(err, TemplateError::TooLong { .. }), "{err:?}");
    }

    #[test]
    fn static_and_data_use() {
        let e = engine();
        let t = e.compile("https://x.example/hook#top").unwrap();
        assert!(t.is_static());
        assert!(!t.uses_data());
        let t = e.compile("https://x.example/{{ event.name }}").unwrap();
        assert!(!t.is_static());
        assert!(!t.uses_data());
        for src in [
            "#customer.id#",
            "{{ data }}",
            "{{item.x}}",
            "{% if data.x %}{% endif %}",
            "{{ event.name | append: data.x }}",
            "{%- for i in item -%}{%- endfor -%}",
        ] {
            assert!(e.compile(src).unwrap().uses_data(), "{src}");
        }
        for src in [
            r#"{{ "data" }}"#,
            "{{ event.data }}",
            "{{ metadata }}",
            "{% raw %}{{ data }}{% endraw %}",
            "data item",
        ] {
            assert!(!e.compile(src).unwrap().uses_data(), "{src}");
        }
    }

    #[test]
    fn json_bodies_must_render_json() {
        let ctx = json_ctx(r#"{"x":"a\"b"}"#);
        let t = engine().compile(r#"{"x": "{{ data.x }}"}"#).unwrap();
        let err = t.render_json(&ctx).unwrap_err();
        assert!(matches!(err, TemplateError::NotJson { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("the rendered body is not valid JSON: "),
            "{msg}"
        );
        assert!(msg.contains(r#"{"x": "a"b"}"#), "{msg}");
        assert!(render_json_body(&t, &json_ctx(r#"{"x":"ok"}"#)).is_ok());
    }

    #[test]
    fn syntax_error_messages() {
        for (src, message) in [
            (
                "{{ data.x ",
                r#"template syntax error at line 1, column 1: "{{" is not closed; end the variable with "}}""#,
            ),
            (
                "{% if %}",
                "template syntax error at line 1, column 6: Value expected.",
            ),
            (
                "#a.b# #c# {{ data.x | }}",
                "template syntax error at line 1, column 23: expected Identifier",
            ),
            (
                "{% foo %}",
                "template syntax error at line 1, column 4: Unknown tag. (requested=foo)",
            ),
            (
                "{{ x | nosuch }}",
                "template syntax error: Unknown filter (requested filter=nosuch)",
            ),
        ] {
            assert_eq!(engine().compile(src).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn unclosed_markup_is_named_where_it_opens() {
        let unclosed_variable = r#""{{" is not closed; end the variable with "}}""#;
        let unclosed_tag = r#""{%" is not closed; end the tag with "%}""#;
        for (src, line, column, message) in [
            ("{{ data.x ", 1, 1, unclosed_variable),
            ("{{- data.x -}", 1, 1, unclosed_variable),
            // The README's example.
            (r#"{"id": {{ data.id }"#, 1, 8, unclosed_variable),
            // Closed by the other kind of delimiter.
            ("{{ data.x %}", 1, 1, unclosed_variable),
            ("{% if data.x }}y{% endif %}", 1, 1, unclosed_tag),
            ("{% if data.x ", 1, 1, unclosed_tag),
            ("  {%- if data.x ", 1, 3, unclosed_tag),
            // The next markup starts before this one ends.
            ("{{ data.a {{ data.b }}", 1, 1, unclosed_variable),
            ("{% if data.a {% endif %}", 1, 1, unclosed_tag),
            // After closed markup, on a later line, past multi-byte text.
            ("{{ data.a }}{{", 1, 13, unclosed_variable),
            (
                "first {{ data.a }}\nsecond\n  ünï {{ data.b | upcase ",
                3,
                7,
                unclosed_variable,
            ),
            ("ok\n\n{% if data.a %}x{% endif ", 3, 17, unclosed_tag),
            // Columns in the source as written, past Ellity variables.
            ("#a.b# #c# {{ data.x ", 1, 11, unclosed_variable),
        ] {
            let err = engine().compile(src).unwrap_err();
            assert_eq!(
                err,
                TemplateError::Syntax {
                    line: Some(line),
                    column: Some(column),
                    message: message.into(),
                },
                "{src:?}"
            );
        }
        // Errors in closed markup keep Liquid's message, also when a
        // string literal holds a delimiter.
        for src in [
            "{{ data.a | }}",
            "{{}}",
            r#"{{ "{{" }} {{ | }}"#,
            "{{ | }} {{ x",
        ] {
            let err = engine().compile(src).unwrap_err();
            let TemplateError::Syntax { message, .. } = &err else {
                panic!("{src:?}: {err:?}");
            };
            assert!(!message.contains("is not closed"), "{src:?}: {err}");
        }
        // Closed markup compiles.
        for src in [
            "{{ data.a }}{% if data.b %}{{ data.b }}{% endif %}",
            "{{- data.a -}}\n{%- if data.b -%}x{%- endif -%}",
            r#"{{ "{{" }}{{ "%}" }}"#,
        ] {
            assert!(engine().compile(src).is_ok(), "{src:?}");
        }
    }

    #[test]
    fn render_errors_are_errors() {
        let ctx = json_ctx("{}");
        let t = engine().compile("{{ 1 | divided_by: 0 }}").unwrap();
        assert!(matches!(t.render(&ctx), Err(TemplateError::Render { .. })));
        // Found by the property tests: Liquid's integer filters panic on
        // overflow; the panic must come back as an error.
        let ctx = json_ctx(r#"{"n": -9223372036854775808}"#);
        for src in ["{{ data.n | divided_by: -1 }}", "{{ data.n | modulo: -1 }}"] {
            let t = engine().compile(src).unwrap();
            assert!(
                matches!(t.render(&ctx), Err(TemplateError::Render { .. })),
                "{src}"
            );
        }
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TemplateEngine>();
        assert_send_sync::<CompiledTemplate>();
        assert_send_sync::<TemplateContext>();
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_435_200_123),
            "2026-11-23T12:00:00.123Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(-1),
            "1970-01-01T00:00:00.000Z",
            "clamped to the epoch"
        );
    }
}
