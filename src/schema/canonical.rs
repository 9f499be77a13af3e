//! Canonical text of a value of each logical type (docs/FORMAT.md, "CSV dialect").
//! Pure functions; the only place values are parsed.

use std::borrow::Cow;

use arrow::compute::kernels::cast_utils::Parser;
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::ColumnType;

/// The value does not parse as its column's type.
#[derive(Debug, PartialEq, Eq)]
pub struct Unparseable;

/// Canonical text of `raw` for a column of type `ty`.
///
/// Numbers keep the API's digits (validated, never re-printed); timestamps become
/// `YYYY-MM-DDTHH:MM:SS.sssZ` in UTC (from RFC 3339 or epoch milliseconds); dates
/// `YYYY-MM-DD`; booleans `true`/`false`. An empty string in a typed column is NULL rather
/// than an error: HubSpot sends `""` for a cleared number or date.
/// `Ok(None)` means NULL: the empty string in a typed column.
///
/// Whatever this accepts, the Parquet writer's cast accepts too (the same parsers decide
/// numbers, and instants and dates must come out in their four-digit-year canonical shape),
/// so a value is NULL in a CSV part exactly when it is NULL in a Parquet part.
pub fn canonicalize(raw: &str, ty: ColumnType) -> Result<Option<Cow<'_, str>>, Unparseable> {
    if raw.is_empty() && !matches!(ty, ColumnType::Utf8 | ColumnType::Json) {
        return Ok(None);
    }
    canonical_text(raw, ty).map(Some)
}

fn canonical_text(raw: &str, ty: ColumnType) -> Result<Cow<'_, str>, Unparseable> {
    match ty {
        ColumnType::Utf8 | ColumnType::Json => Ok(Cow::Borrowed(raw)),
        ColumnType::Int64 | ColumnType::Int32 => {
            let n: i64 = raw.trim().parse().map_err(|_| Unparseable)?;
            if ty == ColumnType::Int32 && i32::try_from(n).is_err() {
                return Err(Unparseable);
            }
            let text = if raw.len() == raw.trim().len() && !raw.starts_with('+') && !has_leading_zero(raw) {
                Cow::Borrowed(raw)
            } else {
                Cow::Owned(n.to_string())
            };
            let typed_ok = match ty {
                ColumnType::Int32 => Int32Type::parse(&text).is_some(),
                _ => Int64Type::parse(&text).is_some(),
            };
            if typed_ok { Ok(text) } else { Err(Unparseable) }
        }
        ColumnType::Float64 => {
            let t = raw.trim();
            let ok = t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
                && t.parse::<f64>().is_ok_and(f64::is_finite)
                && Float64Type::parse(t).is_some_and(f64::is_finite);
            if !ok {
                return Err(Unparseable);
            }
            Ok(if t.len() == raw.len() { Cow::Borrowed(raw) } else { Cow::Owned(t.to_string()) })
        }
        ColumnType::Boolean => match raw.trim() {
            "true" => Ok(Cow::Borrowed("true")),
            "false" => Ok(Cow::Borrowed("false")),
            t if t.eq_ignore_ascii_case("true") => Ok(Cow::Borrowed("true")),
            t if t.eq_ignore_ascii_case("false") => Ok(Cow::Borrowed("false")),
            _ => Err(Unparseable),
        },
        ColumnType::Timestamp => {
            if is_canonical_instant(raw) {
                return Ok(Cow::Borrowed(raw));
            }
            let dt = parse_instant(raw.trim()).ok_or(Unparseable)?;
            let text = dt.to_rfc3339_opts(SecondsFormat::Millis, true);
            // Years before 0 or after 9999 have no place in the canonical shape.
            if !is_canonical_instant(&text) {
                return Err(Unparseable);
            }
            Ok(if text == raw { Cow::Borrowed(raw) } else { Cow::Owned(text) })
        }
        ColumnType::Date32 => {
            if raw.len() == 10 && fixed_digits(raw.as_bytes(), &DATE_SHAPE).is_some_and(|n| valid_date(&n)) {
                return Ok(Cow::Borrowed(raw));
            }
            let t = raw.trim();
            let date = match NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                Ok(d) => d,
                Err(_) => parse_instant(t).ok_or(Unparseable)?.date_naive(),
            };
            let text = date.format("%Y-%m-%d").to_string();
            if !(text.len() == 10 && fixed_digits(text.as_bytes(), &DATE_SHAPE).is_some()) {
                return Err(Unparseable);
            }
            Ok(if text == raw { Cow::Borrowed(raw) } else { Cow::Owned(text) })
        }
    }
}

fn has_leading_zero(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    digits.len() > 1 && digits.starts_with('0')
}

/// `YYYY-MM-DD`: digits (`d`) and the separators between them.
const DATE_SHAPE: [u8; 10] = *b"dddd-dd-dd";
/// `YYYY-MM-DDTHH:MM:SS.sssZ`, the canonical instant.
const INSTANT_SHAPE: [u8; 24] = *b"dddd-dd-ddTdd:dd:dd.dddZ";

/// The numbers between the separators of `text` if it has exactly `shape` (`d` a digit,
/// anything else that byte), else `None`.
fn fixed_digits(text: &[u8], shape: &[u8]) -> Option<[u32; 7]> {
    if text.len() != shape.len() {
        return None;
    }
    let mut numbers = [0u32; 7];
    let mut field = 0;
    let mut in_number = false;
    for (&b, &want) in text.iter().zip(shape) {
        if want == b'd' {
            if !b.is_ascii_digit() {
                return None;
            }
            numbers[field] = numbers[field] * 10 + u32::from(b - b'0');
            in_number = true;
        } else {
            if b != want {
                return None;
            }
            if in_number {
                field += 1;
                in_number = false;
            }
        }
    }
    Some(numbers)
}

fn valid_date(n: &[u32; 7]) -> bool {
    NaiveDate::from_ymd_opt(n[0] as i32, n[1], n[2]).is_some()
}

/// Whether `text` is already a canonical instant (`YYYY-MM-DDTHH:MM:SS.sssZ`, a real date
/// and time): the form HubSpot sends nearly every timestamp in, recognised without going
/// through chrono's parser and formatter. Such texts also sort as their instants do.
pub fn is_canonical_instant(text: &str) -> bool {
    fixed_digits(text.as_bytes(), &INSTANT_SHAPE).is_some_and(|n| valid_date(&n) && n[3] < 24 && n[4] < 60 && n[5] < 60)
}

/// The canonical text of an instant: `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An instant from RFC 3339 text, from epoch milliseconds (HubSpot sends both), or from
/// Pipedrive v1's `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_instant(t: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    if t.len() == 19 && t.as_bytes()[10] == b' ' {
        return chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok().map(|d| d.and_utc());
    }
    if !t.is_empty() && t.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-')) {
        let ms: i64 = t.parse().ok()?;
        return DateTime::from_timestamp_millis(ms);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    fn c(raw: &str, ty: ColumnType) -> Option<String> {
        canonicalize(raw, ty).ok().flatten().map(|c| c.into_owned())
    }

    #[test]
    fn numbers_keep_their_digits() {
        assert_eq!(c("1234.50", Float64).as_deref(), Some("1234.50"));
        assert_eq!(c("1e3", Float64).as_deref(), Some("1e3"));
        assert_eq!(c(" 7 ", Float64).as_deref(), Some("7"));
        assert_eq!(c("N/A", Float64), None);
        assert_eq!(c("inf", Float64), None);
        assert_eq!(c("NaN", Float64), None);
        assert_eq!(canonicalize("", Float64), Ok(None));
        assert_eq!(c("0012", Int64).as_deref(), Some("12"));
        assert_eq!(c("3000000000", Int32), None);
        assert_eq!(c("12.5", Int64), None);
    }

    #[test]
    fn instants_and_dates_normalise_to_utc_text() {
        assert_eq!(c("2019-10-30T03:30:17.883Z", Timestamp).as_deref(), Some("2019-10-30T03:30:17.883Z"));
        assert_eq!(c("1970-01-01T00:00:00Z", Timestamp).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(c("2024-01-01T02:00:00+02:00", Timestamp).as_deref(), Some("2024-01-01T00:00:00.000Z"));
        assert_eq!(c("1695938616824", Timestamp).as_deref(), Some("2023-09-28T22:03:36.824Z"));
        assert_eq!(c("yesterday", Timestamp), None);
        assert_eq!(c("2024-02-29", Date32).as_deref(), Some("2024-02-29"));
        assert_eq!(c("2024-02-30", Date32), None);
        assert_eq!(c("1709251200000", Date32).as_deref(), Some("2024-03-01"));
        assert_eq!(c("2024-02-30T00:00:00.000Z", Timestamp), None, "not a real date, canonical shape or not");
        assert_eq!(c("2024-01-01T24:00:00.000Z", Timestamp), None);
        assert!(is_canonical_instant("2019-10-30T03:30:17.883Z"));
        assert!(!is_canonical_instant("2019-10-30T03:30:17Z"));
        assert!(!is_canonical_instant("2019-10-30T03:30:17.883+00:00"));
        assert_eq!(c("2024-13-01", Date32), None);
        assert_eq!(c("TRUE", Boolean).as_deref(), Some("true"));
        assert_eq!(c("yes", Boolean), None);
        assert_eq!(c("", Utf8).as_deref(), Some(""));
    }

    #[test]
    fn instants_and_dates_outside_four_digit_years_are_unparseable() {
        assert_eq!(c("999999999999999", Timestamp), None, "year 33658");
        assert_eq!(c("-99999999999999", Timestamp), None, "before year 0");
        assert_eq!(c("999999999999999", Date32), None, "year 33658");
        assert_eq!(c("9999-12-31T23:59:59.999Z", Timestamp).as_deref(), Some("9999-12-31T23:59:59.999Z"));
    }
}
