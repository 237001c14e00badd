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
//!
//! This module holds the public API (compiling and rendering); the parts
//! live beside it: `ellity` rewrites Ellity variables into Liquid markup,
//! `filters` builds the Liquid language with Herald's filters, `values` is
//! the lenient value tree, `context` what a template is rendered with, and
//! `errors` the error type and how Liquid's errors become it.

mod context;
mod ellity;
mod errors;
mod filters;
mod values;

#[cfg(test)]
mod tests;

use std::fmt;

use liquid_core::Renderable;
use liquid_core::parser::Language;
use liquid_core::runtime::GlobalFrame;

pub use context::{EventInfo, TemplateContext, rfc3339_millis};
pub use errors::TemplateError;

use context::LenientFrame;
use ellity::preprocess;
use errors::{liquid_message, syntax_error};
use filters::language;

/// Longest template source accepted (64 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// How much of a rendered body a [`TemplateError::NotJson`] quotes.
const NOT_JSON_EXCERPT_CHARS: usize = 200;

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
