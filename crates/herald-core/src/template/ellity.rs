//! Source preprocessing: Ellity's `#customer.email#` variables become
//! Liquid markup, with the shifts needed to map error positions back to the
//! source as written; also notes whether the source has markup at all and
//! whether it reads the data.

use std::fmt::Write as _;

/// One Ellity variable replaced by Liquid markup, for mapping error
/// positions back to the source as written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shift {
    /// 1-based line (replacements never span lines).
    pub(super) line: usize,
    /// 1-based character column of the replacement in the preprocessed text.
    pub(super) new_col: usize,
    pub(super) new_len: usize,
    /// 1-based character column of the `#` in the source.
    pub(super) orig_col: usize,
    pub(super) orig_len: usize,
}

pub(super) struct Preprocessed {
    pub(super) text: String,
    pub(super) shifts: Vec<Shift>,
    pub(super) has_markup: bool,
    pub(super) uses_data: bool,
}

pub(super) fn preprocess(source: &str) -> Preprocessed {
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
