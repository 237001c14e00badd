//! Times as the pages show them (UTC) and as their forms give them.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

const SHOWN: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
const INPUT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]");
const INPUT_SECONDS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

fn at(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// `2026-12-07 10:02:03.456` (UTC).
pub fn show(ms: i64) -> String {
    at(ms)
        .and_then(|t| t.format(SHOWN).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The value of a `datetime-local` input for `ms` (UTC, to the minute).
pub fn input_value(ms: i64) -> String {
    at(ms)
        .and_then(|t| t.format(INPUT).ok())
        .unwrap_or_default()
}

/// A `datetime-local` value (`2026-12-07T10:02`, seconds optional), read as
/// UTC, in Unix milliseconds; `None` for an empty field.
pub fn parse_input(field: &str, text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = PrimitiveDateTime::parse(text, INPUT_SECONDS)
        .or_else(|_| PrimitiveDateTime::parse(text, INPUT))
        .map_err(|_| {
            format!("{field}: {text:?} is not a time; give it as 2026-12-07T10:00 (UTC)")
        })?;
    let ms = parsed.assume_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms)
        .map(Some)
        .map_err(|_| format!("{field}: {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_the_form() {
        let ms = 1_765_000_000_000;
        assert_eq!(show(ms), "2025-12-06 05:46:40.000");
        assert_eq!(input_value(ms), "2025-12-06T05:46");
        // The input is to the minute; seconds are optional.
        assert_eq!(
            parse_input("from", "2025-12-06T05:46"),
            Ok(Some(ms - 40_000))
        );
        assert_eq!(parse_input("from", "2025-12-06T05:46:40"), Ok(Some(ms)));
        assert_eq!(parse_input("from", " "), Ok(None));
        assert!(
            parse_input("from", "yesterday")
                .unwrap_err()
                .contains("from")
        );
    }
}
