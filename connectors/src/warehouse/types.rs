//! Column types inferred from JSON values, and whether a later value still fits.

use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use serde_json::{Number, Value};

/// The type of a warehouse column, decided by the first non-null value of its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Strings that are not RFC 3339 timestamps.
    Text,
    /// Integral numbers within `i64`.
    Bigint,
    /// Other numbers (fractions, integers beyond `i64`), kept exact.
    Numeric,
    /// `true` and `false`.
    Boolean,
    /// Strings that parse as RFC 3339 timestamps.
    Timestamptz,
    /// Objects: a `jsonb` column that holds JSON objects only.
    Object,
    /// Arrays: a `jsonb` column that holds JSON arrays only.
    Array,
    /// A `jsonb` column of a table whose registry does not say which kind it holds (made
    /// by hand, or before the kind was recorded): objects and arrays both fit.
    Jsonb,
}

impl ColumnType {
    /// The SQL type name, as written in DDL and stored in the registry.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Bigint => "bigint",
            Self::Numeric => "numeric",
            Self::Boolean => "boolean",
            Self::Timestamptz => "timestamptz",
            Self::Object | Self::Array | Self::Jsonb => "jsonb",
        }
    }

    /// The type for messages, naming the JSON kind a `jsonb` column holds.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Object => "jsonb (objects)",
            Self::Array => "jsonb (arrays)",
            other => other.sql(),
        }
    }

    /// The column comment recording which JSON kind a `jsonb` column holds (the registry
    /// stores the SQL type only); `None` for the other types.
    pub(crate) fn comment(self) -> Option<&'static str> {
        match self {
            Self::Object => Some(OBJECT_COMMENT),
            Self::Array => Some(ARRAY_COMMENT),
            _ => None,
        }
    }

    /// The type a registered `jsonb` column holds, from its comment.
    pub(crate) fn from_comment(comment: &str) -> Option<Self> {
        match comment {
            OBJECT_COMMENT => Some(Self::Object),
            ARRAY_COMMENT => Some(Self::Array),
            _ => None,
        }
    }

    /// The type a registry entry names; `None` for a name this version does not know.
    pub fn from_sql(name: &str) -> Option<Self> {
        Some(match name {
            "text" => Self::Text,
            "bigint" => Self::Bigint,
            "numeric" => Self::Numeric,
            "boolean" => Self::Boolean,
            "timestamptz" => Self::Timestamptz,
            "jsonb" => Self::Jsonb,
            _ => return None,
        })
    }

    /// The type a non-null value infers; `None` for null, which decides nothing.
    pub fn infer(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Self::Boolean,
            Value::Number(n) if n.is_i64() => Self::Bigint,
            Value::Number(_) => Self::Numeric,
            Value::String(s) if timestamp(s).is_some() => Self::Timestamptz,
            Value::String(_) => Self::Text,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        })
    }

    /// Whether `value` can be stored in a column of this type without changing what it
    /// means. Null fits every column; an integer fits a numeric column; any string fits
    /// a text column, but only a timestamp fits a timestamptz one; an object column
    /// takes objects and an array column arrays.
    pub fn fits(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) => true,
            (Self::Text, Value::String(_)) | (Self::Boolean, Value::Bool(_)) => true,
            (Self::Bigint, Value::Number(n)) => n.is_i64(),
            (Self::Numeric, Value::Number(_)) => true,
            (Self::Timestamptz, Value::String(s)) => timestamp(s).is_some(),
            (Self::Object, Value::Object(_)) | (Self::Array, Value::Array(_)) => true,
            (Self::Jsonb, Value::Array(_) | Value::Object(_)) => true,
            _ => false,
        }
    }
}

const OBJECT_COMMENT: &str = "cairn: holds JSON objects";
const ARRAY_COMMENT: &str = "cairn: holds JSON arrays";

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql())
    }
}

/// The JSON kind of a value, for drift messages ("got string").
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An RFC 3339 timestamp Postgres can hold. Years outside 1–9999 (after conversion to
/// UTC) are refused: the server has no year 0 and its parser stops at four digits.
pub fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    // Cheap rejection first: most text is not a timestamp.
    let bytes = s.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || !bytes[0].is_ascii_digit() {
        return None;
    }
    let at = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    (1..=9999).contains(&at.year()).then_some(at)
}

/// The instant a cursor value stands for, ordering versions of a record: an RFC 3339
/// string, or an integer count of Unix seconds. Anything else orders nothing.
pub fn cursor_instant(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => timestamp(s),
        Value::Number(n) => n
            .as_i64()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .filter(|at| (1..=9999).contains(&at.year())),
        _ => None,
    }
}

/// The text of a primary key value: strings as they are, numbers as JSON writes them.
pub fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(Number::to_string(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::ColumnType;

    #[test]
    fn first_value_decides_and_later_values_must_fit() {
        let cases = [
            (json!("hello"), ColumnType::Text),
            (json!(42), ColumnType::Bigint),
            (json!(1.5), ColumnType::Numeric),
            (json!(u64::MAX), ColumnType::Numeric),
            (json!(true), ColumnType::Boolean),
            (json!("2026-01-02T03:04:05Z"), ColumnType::Timestamptz),
            (
                json!("2026-01-02T03:04:05.123+02:00"),
                ColumnType::Timestamptz,
            ),
            (json!("2026-01-02"), ColumnType::Text),
            (json!("0000-01-01T00:00:00Z"), ColumnType::Text),
            (json!({"a": 1}), ColumnType::Object),
            (json!([1]), ColumnType::Array),
        ];
        for (value, ty) in &cases {
            assert_eq!(ColumnType::infer(value), Some(*ty), "{value}");
            assert!(ty.fits(value));
            assert!(ty.fits(&json!(null)));
        }
        assert_eq!(ColumnType::infer(&json!(null)), None);
        assert!(ColumnType::Numeric.fits(&json!(3)));
        assert!(ColumnType::Text.fits(&json!("2026-01-02T03:04:05Z")));
        assert!(!ColumnType::Bigint.fits(&json!("42")));
        assert!(!ColumnType::Bigint.fits(&json!(1.5)));
        assert!(!ColumnType::Text.fits(&json!(42)));
        assert!(!ColumnType::Timestamptz.fits(&json!("soon")));
        assert!(!ColumnType::Jsonb.fits(&json!("x")));
        assert!(ColumnType::Jsonb.fits(&json!([])) && ColumnType::Jsonb.fits(&json!({})));
        assert!(!ColumnType::Object.fits(&json!([])));
        assert!(!ColumnType::Array.fits(&json!({})));
    }
}
