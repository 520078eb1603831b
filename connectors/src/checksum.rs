//! The record-set checksum that lets a warehouse prove it matches the vendor.
//!
//! Definition, for one stream:
//!
//! 1. Each record is a JSON object whose `"id"` is a JSON string.
//! 2. It is written as *canonical JSON*: object keys sorted by their UTF-8
//!    bytes at every depth, no whitespace, strings and numbers exactly as
//!    `serde_json` writes them (the sandbox's data holds integers only, so no
//!    float formatting is involved).
//! 3. Records are ordered by `id`, compared as UTF-8 bytes (`"10"` sorts
//!    before `"9"`).
//! 4. The checksum is `"sha256:"` followed by the lowercase hex SHA-256 of the
//!    concatenation of every canonical record, each followed by `"\n"`. An
//!    empty stream hashes the empty string.
//!
//! Deleted records are simply absent. A warehouse recomputes it from the rows
//! it holds (minus its own bookkeeping columns) with [`checksum_records`].

use std::fmt::Write as _;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Records that have no checksum.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChecksumError {
    /// The record at this position (in the order given) is not a JSON object.
    #[error("record {0} is not a JSON object")]
    NotAnObject(usize),
    /// The record at this position has no `"id"` string.
    #[error("record {0} has no string \"id\" field")]
    MissingId(usize),
    /// Two records share an id.
    #[error("two records have id {0:?}")]
    DuplicateId(String),
}

/// The checksum of one stream's records, as defined in this module's docs.
/// Order of the input does not matter.
pub fn checksum_records<'a, I>(records: I) -> Result<String, ChecksumError>
where
    I: IntoIterator<Item = &'a Value>,
{
    let mut maps = Vec::new();
    for (position, record) in records.into_iter().enumerate() {
        let map = record
            .as_object()
            .ok_or(ChecksumError::NotAnObject(position))?;
        maps.push((position, map));
    }
    checksum_maps(maps)
}

/// [`checksum_records`] over records already held as JSON objects, each with its place
/// in the input (for errors): what a vendor that stores maps computes without copying.
pub fn checksum_maps<'a>(
    records: impl IntoIterator<Item = (usize, &'a Map<String, Value>)>,
) -> Result<String, ChecksumError> {
    let mut lines = Vec::new();
    for (position, map) in records {
        let id = map
            .get("id")
            .and_then(Value::as_str)
            .ok_or(ChecksumError::MissingId(position))?;
        let mut line = String::new();
        write_canonical_map(&mut line, map);
        lines.push((id, line));
    }
    lines.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if let Some(pair) = lines.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(ChecksumError::DuplicateId(pair[0].0.to_owned()));
    }
    let mut hasher = Sha256::new();
    for (_, line) in &lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    let mut hex = String::from("sha256:");
    for byte in hasher.finalize() {
        // Writing into a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Writes `value` as canonical JSON (see the module docs).
pub fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => write_canonical_map(out, map),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::String(s) => write_string(out, s),
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_canonical_map(out: &mut String, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_canonical(out, value);
    }
    out.push('}');
}

fn write_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{ChecksumError, checksum_records, write_canonical};

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = String::new();
        write_canonical(&mut out, &json!({"b": [{"z": 1, "a": null}], "a": "x\"y"}));
        assert_eq!(out, r#"{"a":"x\"y","b":[{"a":null,"z":1}]}"#);
    }

    #[test]
    fn order_of_input_does_not_matter_but_content_does() {
        let a = json!({"id": "1", "n": 1});
        let b = json!({"id": "2", "n": 2});
        let forward = checksum_records([&a, &b]).unwrap();
        assert_eq!(forward, checksum_records([&b, &a]).unwrap());
        let changed = json!({"id": "2", "n": 3});
        assert_ne!(forward, checksum_records([&a, &changed]).unwrap());
    }

    #[test]
    fn empty_set_is_the_hash_of_nothing() {
        assert_eq!(
            checksum_records([]).unwrap(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn bad_records_are_named() {
        let a = json!({"id": "1"});
        assert_eq!(
            checksum_records([&a, &a]),
            Err(ChecksumError::DuplicateId("1".to_owned()))
        );
        assert_eq!(
            checksum_records([&json!({"id": 1})]),
            Err(ChecksumError::MissingId(0))
        );
        assert_eq!(
            checksum_records([&json!([])]),
            Err(ChecksumError::NotAnObject(0))
        );
    }
}
