//! What a stream's cursor field holds, and which values a watermark may move on.
//!
//! A stream declares its cursor's type (`cursor_type` in a source file): `timestamp`
//! (the default: RFC 3339, Salesforce's `+0000` form, a naive date-time taken as UTC, or
//! Unix seconds or milliseconds, as text or as a JSON number), `integer` (a change
//! number; any number of digits) or `string` (an opaque token ordered byte by byte).
//! A record whose cursor is missing, does not read as that type, holds a NUL, or (for
//! timestamps) lies more than `max_future_skew` ahead of now cannot be placed in time:
//! it is quarantined with its reason, and it never moves the watermark.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::source::parse_instant;

/// How far ahead of now a timestamp cursor may lie before it is refused: one day.
pub const DEFAULT_MAX_FUTURE_SKEW_SECS: u64 = 24 * 3600;

/// The type a stream's cursor field holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorType {
    /// An instant (the default).
    #[default]
    Timestamp,
    /// A whole number, of any size.
    Integer,
    /// An opaque token, ordered by its bytes.
    String,
}

impl CursorType {
    /// The name a source file uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::Integer => "integer",
            Self::String => "string",
        }
    }

    /// Why the cursor value `text` (`None`: missing or null) cannot place a record, or
    /// `Ok` when it can. `field` names the cursor field in the reason, which is stable
    /// (it never holds the value), so alerts about it deduplicate.
    pub fn check(
        self,
        field: &str,
        text: Option<&str>,
        now: DateTime<Utc>,
        max_future_skew_secs: u64,
    ) -> Result<(), String> {
        let Some(text) = text else {
            return Err(format!("cursor field {field:?} is missing or null"));
        };
        if text.contains('\0') {
            return Err(format!("cursor field {field:?} holds a NUL character"));
        }
        match self {
            Self::Timestamp => {
                let at = parse_instant(text)
                    .ok_or_else(|| format!("cursor field {field:?} is not a timestamp"))?;
                let skew = chrono::Duration::seconds(
                    i64::try_from(max_future_skew_secs).unwrap_or(i64::MAX / 1000),
                );
                if now.checked_add_signed(skew).is_some_and(|limit| at > limit) {
                    return Err(format!(
                        "cursor field {field:?} lies more than {max_future_skew_secs} s \
                         (max_future_skew) ahead of now"
                    ));
                }
                Ok(())
            }
            Self::Integer => integer(text)
                .map(|_| ())
                .ok_or_else(|| format!("cursor field {field:?} is not an integer")),
            Self::String if text.is_empty() => Err(format!("cursor field {field:?} is empty")),
            Self::String => Ok(()),
        }
    }

    /// Orders two values that passed [`check`](Self::check).
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Self::Timestamp => parse_instant(a).cmp(&parse_instant(b)),
            Self::Integer => match (integer(a), integer(b)) {
                (Some(a), Some(b)) => a.cmp(&b),
                (a, b) => a.is_some().cmp(&b.is_some()),
            },
            Self::String => a.as_bytes().cmp(b.as_bytes()),
        }
    }

    /// The later of two values; `None` only when both are.
    pub fn later(self, a: Option<String>, b: Option<String>) -> Option<String> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if self.compare(&b, &a) == Ordering::Greater {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }
}

/// An integer of any size, as a sortable key: sign, then magnitude by length and digits.
fn integer(text: &str) -> Option<(bool, usize, String)> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if negative && digits != "0" {
        // Larger magnitudes sort lower: complement the digits.
        let flipped: String = digits
            .bytes()
            .map(|b| char::from(b'9' - (b - b'0')))
            .collect();
        Some((false, usize::MAX - digits.len(), flipped))
    } else {
        Some((true, digits.len(), digits.to_owned()))
    }
}

/// A duration in a source file: whole seconds (`86400`), or a number with a unit
/// (`30s`, `15m`, `12h`, `1d`).
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration (write 30s, 15m, 12h or 1d)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a duration (write 30s, 15m, 12h or 1d)"))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use chrono::{TimeZone, Utc};

    use super::{CursorType, parse_duration_secs};

    #[test]
    fn values_a_watermark_cannot_use_say_why() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ts = CursorType::Timestamp;
        let day = 86_400;
        assert!(
            ts.check("u", Some("2025-12-31T10:00:00Z"), now, day)
                .is_ok()
        );
        assert!(ts.check("u", Some("1767225600"), now, day).is_ok());
        assert!(
            ts.check("u", Some("2026-01-01T23:00:00Z"), now, day)
                .is_ok()
        );
        for (value, why) in [
            (None, "missing"),
            (Some("soon"), "not a timestamp"),
            (Some("2026-01-01\u{0}"), "NUL"),
            (Some("2100-01-01T00:00:00Z"), "ahead of now"),
        ] {
            let err = ts.check("updated_at", value, now, day).unwrap_err();
            assert!(err.contains(why), "{value:?}: {err}");
        }
        assert!(
            CursorType::Integer
                .check("v", Some("123456789012345678901234567890"), now, day)
                .is_ok()
        );
        assert!(
            CursorType::Integer
                .check("v", Some("12a"), now, day)
                .is_err()
        );
        assert!(CursorType::String.check("v", Some(""), now, day).is_err());
    }

    #[test]
    fn values_order_by_their_type() {
        let int = CursorType::Integer;
        assert_eq!(int.compare("9", "10"), Ordering::Less);
        assert_eq!(int.compare("-10", "-9"), Ordering::Less);
        assert_eq!(int.compare("-1", "0"), Ordering::Less);
        assert_eq!(int.compare("007", "7"), Ordering::Equal);
        assert_eq!(
            int.compare("123456789012345678901234567890", "99999999999999999999"),
            Ordering::Greater
        );
        assert_eq!(CursorType::String.compare("b", "a"), Ordering::Greater);
        assert_eq!(
            CursorType::Timestamp.compare("2026-01-01T10:00:00+02:00", "2026-01-01T09:00:00Z"),
            Ordering::Less
        );
        assert_eq!(
            int.later(Some("9".into()), Some("10".into())),
            Some("10".into())
        );
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration_secs("86400"), Ok(86_400));
        assert_eq!(parse_duration_secs("1d"), Ok(86_400));
        assert_eq!(parse_duration_secs("12h"), Ok(43_200));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert!(parse_duration_secs("1w").is_err());
        assert!(parse_duration_secs("d").is_err());
    }
}
