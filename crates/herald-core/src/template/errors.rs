//! Template errors, and how Liquid's errors become them: one line of text,
//! with positions mapped back to the source as written.

use super::ellity::{Preprocessed, Shift};

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

/// Turns a Liquid parse error into a [`TemplateError::Syntax`] that points
/// into the source as written.
///
/// The position is read from the error's display text because liquid-core
/// (0.26.11, pinned in `Cargo.lock`) exposes none: its parser flattens pest's
/// error, position included, into the message string of an opaque
/// `liquid_core::Error` with no cause attached. The test
/// `liquid_error_text_is_pinned` below holds that text byte for byte, so an
/// upgrade that changes it fails there rather than losing positions quietly.
pub(super) fn syntax_error(err: &liquid_core::Error, pre: &Preprocessed) -> TemplateError {
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
pub(super) fn liquid_message(err: &liquid_core::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn liquid_error(src: &str) -> String {
        liquid_core::parser::parse(src, &crate::template::filters::language())
            .err()
            .unwrap_or_else(|| panic!("{src:?} parsed"))
            .to_string()
    }

    /// The display text of liquid-core 0.26.11's parse errors, which
    /// [`syntax_error`] reads positions and reasons from (the library
    /// exposes neither otherwise). If this fails after an upgrade, adapt
    /// [`find_position`] and [`one_line`] to the new text.
    #[test]
    fn liquid_error_text_is_pinned() {
        let positioned = liquid_error("ok\n{{ data.x | }}");
        assert_eq!(
            positioned,
            "liquid:  --> 2:13\n  |\n2 | {{ data.x | }}\n  |             ^---\n  |\n  \
             = expected Identifier\n"
        );
        assert_eq!(find_position(&positioned), Some((2, 13)));
        assert_eq!(one_line(&positioned), "expected Identifier");

        let unpositioned = liquid_error("{{ x | nosuch }}");
        assert!(
            unpositioned.starts_with(
                "liquid: Unknown filter\n  with:\n    requested filter=nosuch\n    \
                 available filters=abs, append, "
            ),
            "{unpositioned:?}"
        );
        assert_eq!(find_position(&unpositioned), None);
        assert_eq!(
            one_line(&unpositioned),
            "Unknown filter (requested filter=nosuch)"
        );
    }
}
