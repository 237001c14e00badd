//! The Liquid language Herald compiles with: the standard library plus
//! Herald's filters (`json_escape`, `json`, and the URL filters written to
//! match the Liquid reference implementations byte for byte), and the
//! compact JSON writer they share with the value tree.

use std::fmt::{self, Write as _};

use liquid_core::model::{Value, ValueView};
use liquid_core::parser::{Language, ParseBlock, ParseTag};
use liquid_core::{
    Display_filter, Filter, FilterReflection, ParseFilter, Result as LiquidResult, Runtime,
};
use liquid_lib::stdlib;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Liquid's standard library (as `liquid::ParserBuilder::with_stdlib`
/// registers it, but with Herald's `url_encode`) plus `url_escape`,
/// `url_param_escape`, `json_escape` and `json`.
pub(super) fn language() -> Language {
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
pub(super) fn write_json(out: &mut dyn fmt::Write, value: &dyn ValueView) -> fmt::Result {
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
