//! A vendor's records kept exactly as they were sent.
//!
//! A page is read without ever turning a record into anything lossy on the way to the
//! warehouse: each [`Record`] holds the vendor's own JSON text (what checkpoints store
//! and what lands in `_raw`, so `12345678901234567890123` keeps every digit) beside a
//! parsed [`Value`] for looking at its fields (where such a number would be rounded: it
//! is never read back from there). [`Record::field_text`] gives a top-level scalar's exact
//! text, for keys and cursors.
//!
//! One bad record never sinks its page: a record nested deeper than [`MAX_DEPTH`] levels
//! (or holding a number no parser here can read) becomes an [`Unreadable`] with its
//! reason and the start of its text, and the rest of the page goes on. A byte-order mark
//! before the body is skipped ([`listing`]), and escapes PostgreSQL cannot hold are
//! rewritten where the record lands ([`escapes`]).

pub mod escapes;
pub mod listing;

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::paginate::{JsonPath, scalar_text};

/// The deepest nesting a record may have (serde's own limit): deeper ones are
/// [`Unreadable`].
pub const MAX_DEPTH: usize = 128;

/// How much of an unreadable record's text is kept, for a human to look at.
const KEPT_TEXT_BYTES: usize = 4096;

/// One record: the vendor's exact JSON text, and a parsed view of it.
#[derive(Clone, Debug)]
pub struct Record {
    raw: Box<RawValue>,
    value: Value,
}

/// A record that could not be read, kept for quarantine: why, and the start of its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// What is wrong with it.
    pub reason: String,
    /// Up to the first 4 KiB of its text.
    pub text: String,
    /// The SHA-256 of its whole text (hex): the same record met again is quarantined once.
    pub digest: String,
}

impl Record {
    /// Reads one record from its JSON text (already known to be syntactically valid).
    pub fn parse(raw: Box<RawValue>) -> Result<Self, Unreadable> {
        let text = raw.get();
        // A lone surrogate escape would stop the parse; the parsed view reads a repaired
        // copy, while the text stays as sent (the warehouse repairs it when it lands).
        let repaired = escapes::rewrite(text, false);
        let readable = repaired.as_ref().map_or(text, |(text, _)| text.as_str());
        match serde_json::from_str::<Value>(readable) {
            Ok(value) => Ok(Self { raw, value }),
            Err(err) => Err(Unreadable {
                reason: if err.to_string().contains("recursion limit") {
                    format!("the record is nested deeper than {MAX_DEPTH} levels")
                } else {
                    format!("the record cannot be read: {err}")
                },
                text: kept_text(text),
                digest: hex_digest(text),
            }),
        }
    }

    /// A record built in memory (tests, tools, corrected records given by hand).
    pub fn from_value(value: Value) -> Self {
        let raw = serde_json::value::to_raw_value(&value)
            .unwrap_or_else(|_| serde_json::value::to_raw_value(&Value::Null).expect("null"));
        Self { raw, value }
    }

    /// Records built in memory, one per value.
    pub fn from_values(values: &[Value]) -> Vec<Self> {
        values.iter().cloned().map(Self::from_value).collect()
    }

    /// The vendor's JSON text, exactly as sent.
    pub fn raw(&self) -> &str {
        self.raw.get()
    }

    /// The parsed view. Numbers beyond what an `f64` holds exactly are rounded here:
    /// read exact digits with [`field_text`](Self::field_text) or [`raw`](Self::raw).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The exact text of the scalar at `path` (see [`field_text`](Self::field_text)); the
    /// record itself for the empty path (an ids listing of bare ids). Below the top
    /// level, a number beyond `f64` precision comes from the parsed view.
    pub fn text_at(&self, path: &JsonPath) -> Option<Cow<'_, str>> {
        match path.keys() {
            [] => match &self.value {
                Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
                    Some(Cow::Owned(self.raw.get().trim().to_owned()))
                }
                other => scalar_text(other).map(Cow::Owned),
            },
            [field] => self.field_text(field),
            _ => path.get(&self.value).and_then(scalar_text).map(Cow::Owned),
        }
    }

    /// The exact text of a top-level scalar field: a string's contents, or a number's
    /// digits as the vendor wrote them (`12345678901234567890123`, `1.50`); `None` for a
    /// missing field, null, an object or an array.
    pub fn field_text(&self, field: &str) -> Option<Cow<'_, str>> {
        match self.value.get(field)? {
            Value::String(text) => Some(Cow::Borrowed(text)),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Cow::Owned(n.to_string())),
            Value::Number(_) => {
                // Rounded in the parsed view: take the digits from the text.
                let fields: HashMap<Cow<'_, str>, &RawValue> =
                    serde_json::from_str(self.raw.get()).ok()?;
                Some(Cow::Owned(fields.get(field)?.get().trim().to_owned()))
            }
            Value::Bool(flag) => Some(Cow::Owned(flag.to_string())),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::parse(raw).map_err(|unreadable| D::Error::custom(unreadable.reason))
    }
}

/// The SHA-256 of `text`, in hex.
fn hex_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Up to [`KEPT_TEXT_BYTES`] of `text`, cut at a character boundary.
fn kept_text(text: &str) -> String {
    if text.len() <= KEPT_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = KEPT_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::Record;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid JSON")
    }

    #[test]
    fn numbers_keep_their_digits_in_the_text_and_in_field_text() {
        let text = r#"{"id": 12345678901234567890123, "n": 9223372036854775809, "d": 0.123456789012345678901234567890, "s": "x"}"#;
        let record = Record::parse(raw(text)).expect("readable");
        assert_eq!(record.raw(), text);
        assert_eq!(record.field_text("id").unwrap(), "12345678901234567890123");
        assert_eq!(record.field_text("n").unwrap(), "9223372036854775809");
        assert_eq!(
            record.field_text("d").unwrap(),
            "0.123456789012345678901234567890"
        );
        assert_eq!(record.field_text("s").unwrap(), "x");
        assert!(record.field_text("missing").is_none());
        let stored = serde_json::to_string(&vec![record.clone()]).unwrap();
        let back: Vec<Record> = serde_json::from_str(&stored).unwrap();
        assert_eq!(back[0].raw(), text, "a checkpoint keeps the text");
    }

    #[test]
    fn too_deep_records_are_unreadable_and_lone_surrogates_are_read() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let unreadable = Record::parse(raw(&deep)).unwrap_err();
        assert!(
            unreadable.reason.contains("deeper than 128"),
            "{unreadable:?}"
        );
        assert!(unreadable.text.len() < 4100);
        let cut = Record::parse(raw(r#"{"id":"1","emoji":"\ud83d"}"#)).expect("readable");
        assert_eq!(cut.value()["emoji"], "\u{fffd}");
        assert_eq!(cut.raw(), r#"{"id":"1","emoji":"\ud83d"}"#, "kept as sent");
    }
}
