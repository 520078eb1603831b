//! The admin API's vocabulary: changes to the data and to its shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A change to one stream, made through `POST /admin/streams/{stream}/mutate`
/// (the JSON body is this enum, tagged by `op`) or in-process through
/// [`Vendor::mutate`](super::Vendor::mutate).
///
/// Record changes stamp `updated_at` with the vendor's time. Schema changes
/// leave `updated_at` alone unless `touch` is set — as real vendors do, which
/// is why an incremental sync only notices drift on records that change later.
/// Schema changes apply to top-level fields and also shape every record
/// created afterwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    /// Changes `count` random records and bumps their `updated_at`.
    Update {
        /// How many records (capped at the stream's size).
        count: usize,
    },
    /// Creates `count` records with new, higher ids.
    Create {
        /// How many records.
        count: usize,
    },
    /// Deletes `count` random records.
    Delete {
        /// How many records (capped at the stream's size).
        count: usize,
    },
    /// Arms a change that lands behind a paging cursor: once `after_pages`
    /// more page requests for the stream have been served, just before the
    /// next one, `count` records that the traversal has already passed are
    /// updated. The traversal never sees those updates; only a later
    /// incremental sync can.
    UpdateWhilePaging {
        /// How many records to update behind the cursor.
        count: usize,
        /// Page requests to let through first.
        after_pages: u32,
    },
    /// Adds a field to every record.
    AddField {
        /// The new field's name.
        field: String,
        /// Its value on every record; `None` gives each record `"<field>-<id>"`.
        #[serde(default)]
        value: Option<Value>,
        /// Whether to bump `updated_at` of the records changed.
        #[serde(default)]
        touch: bool,
    },
    /// Renames a field on every record that has it.
    RenameField {
        /// The current name.
        from: String,
        /// The new name, which no record may have yet.
        to: String,
        /// Whether to bump `updated_at` of the records changed.
        #[serde(default)]
        touch: bool,
    },
    /// Removes a field from every record.
    RemoveField {
        /// The field.
        field: String,
        /// Whether to bump `updated_at` of the records changed.
        #[serde(default)]
        touch: bool,
    },
    /// Serves a top-level field of `count` random records (every record when absent)
    /// as the JSON text `json`, exactly: values no `serde_json::Value` can hold, such as
    /// `12345678901234567890123`, `"a\u0000b"`, `"\ud83d"` or an array nested 10,000
    /// deep. `updated_at` may be set too (a cursor that is missing, not a date or far in
    /// the future): the record still counts as changed now for listings' filters, and
    /// its next update gives it a proper `updated_at` again. So may `id` (a record
    /// without a usable key): listings still page by the record's own id. Bumps the
    /// records' change time.
    SetRawField {
        /// The field: any name, the empty one included.
        field: String,
        /// Its value, as JSON text.
        json: String,
        /// How many records; all of them when absent.
        #[serde(default)]
        count: Option<usize>,
    },
    /// Sets a top-level field of the records with these ids (those that exist) to a
    /// value, bumping their change time: how a test plants one person's records.
    Assign {
        /// The field.
        field: String,
        /// Its new value.
        value: Value,
        /// The records' ids.
        ids: Vec<String>,
    },
    /// Gives `count` random records `fields` more fields each (`extra_0`, `extra_1`,
    /// ...), bumping their change time.
    AddFields {
        /// How many records.
        count: usize,
        /// How many fields each gets.
        fields: usize,
    },
    /// Converts a field's values to another JSON type.
    ChangeFieldType {
        /// The field.
        field: String,
        /// The type its values become.
        to: FieldType,
        /// Whether to bump `updated_at` of the records changed.
        #[serde(default)]
        touch: bool,
    },
}

/// The JSON type a [`Mutation::ChangeFieldType`] converts values to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Strings stay; other values become their JSON text (`42` → `"42"`).
    String,
    /// Numbers are truncated, numeric strings parsed, booleans become 0/1,
    /// anything else null.
    Integer,
    /// A value `v` becomes `[v]`; null stays null.
    Array,
    /// A value `v` becomes `{"value": v}`; null stays null.
    Object,
}

/// What a [`Mutation`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutationOutcome {
    /// The ids of the records created, changed or deleted (empty for an
    /// armed [`Mutation::UpdateWhilePaging`]).
    pub ids: Vec<String>,
}

/// A mutation the sandbox refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutationError {
    /// `id`, `created_at` and `updated_at` carry paging and cursors; changing
    /// them would break every paginator rather than test one.
    #[error("{0:?} is a system field and cannot be changed")]
    SystemField(String),
    /// A field name must not be empty.
    #[error("a field name must not be empty")]
    EmptyField,
    /// No record has the field.
    #[error("no record has a field named {0:?}")]
    UnknownField(String),
    /// A record already has the field.
    #[error("records already have a field named {0:?}")]
    FieldExists(String),
    /// A raw value that is not JSON.
    #[error("the raw value is not JSON: {0}")]
    InvalidJson(String),
}

pub(crate) const SYSTEM_FIELDS: [&str; 3] = ["id", "created_at", "updated_at"];

/// A schema change, kept per stream so records created later have the same
/// shape as the ones already changed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SchemaChange {
    Add { field: String, value: Option<Value> },
    Rename { from: String, to: String },
    Remove { field: String },
    Retype { field: String, to: FieldType },
}

impl SchemaChange {
    /// Checks the change against the fields present now (`has` answers whether
    /// any record has a field).
    pub(crate) fn check(&self, has: impl Fn(&str) -> bool) -> Result<(), MutationError> {
        let named = |field: &str| -> Result<(), MutationError> {
            if field.is_empty() {
                Err(MutationError::EmptyField)
            } else if SYSTEM_FIELDS.contains(&field) {
                Err(MutationError::SystemField(field.to_owned()))
            } else {
                Ok(())
            }
        };
        let present = |field: &str| -> Result<(), MutationError> {
            named(field)?;
            if has(field) {
                Ok(())
            } else {
                Err(MutationError::UnknownField(field.to_owned()))
            }
        };
        let absent = |field: &str| -> Result<(), MutationError> {
            named(field)?;
            if has(field) {
                Err(MutationError::FieldExists(field.to_owned()))
            } else {
                Ok(())
            }
        };
        match self {
            SchemaChange::Add { field, .. } => absent(field),
            SchemaChange::Rename { from, to } => present(from).and_then(|()| absent(to)),
            SchemaChange::Remove { field } | SchemaChange::Retype { field, .. } => present(field),
        }
    }

    /// Applies the change to one record; returns whether it changed.
    pub(crate) fn apply(&self, id: u64, fields: &mut Map<String, Value>) -> bool {
        match self {
            SchemaChange::Add { field, value } => {
                let value = value
                    .clone()
                    .unwrap_or_else(|| Value::from(format!("{field}-{id}")));
                fields.insert(field.clone(), value);
                true
            }
            SchemaChange::Rename { from, to } => match fields.remove(from) {
                Some(value) => {
                    fields.insert(to.clone(), value);
                    true
                }
                None => false,
            },
            SchemaChange::Remove { field } => fields.remove(field).is_some(),
            SchemaChange::Retype { field, to } => match fields.get_mut(field) {
                Some(value) => {
                    *value = convert(value.take(), *to);
                    true
                }
                None => false,
            },
        }
    }
}

fn convert(value: Value, to: FieldType) -> Value {
    match (to, value) {
        (_, Value::Null) => Value::Null,
        (FieldType::String, Value::String(s)) => Value::String(s),
        (FieldType::String, other) => Value::String(other.to_string()),
        (FieldType::Integer, Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok()))
            .map_or_else(
                || {
                    n.as_f64()
                        .map_or(Value::Null, |f| Value::from(f.trunc() as i64))
                },
                Value::from,
            ),
        (FieldType::Integer, Value::String(s)) => {
            s.trim().parse::<i64>().map_or(Value::Null, Value::from)
        }
        (FieldType::Integer, Value::Bool(b)) => Value::from(i64::from(b)),
        (FieldType::Integer, _) => Value::Null,
        (FieldType::Array, Value::Array(items)) => Value::Array(items),
        (FieldType::Array, other) => Value::Array(vec![other]),
        (FieldType::Object, Value::Object(map)) => Value::Object(map),
        (FieldType::Object, other) => {
            let mut map = Map::new();
            map.insert("value".to_owned(), other);
            Value::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{FieldType, convert};

    #[test]
    fn conversions_follow_the_documented_rules() {
        assert_eq!(convert(json!(42), FieldType::String), json!("42"));
        assert_eq!(convert(json!("7"), FieldType::Integer), json!(7));
        assert_eq!(convert(json!("x"), FieldType::Integer), json!(null));
        assert_eq!(convert(json!(true), FieldType::Integer), json!(1));
        assert_eq!(convert(json!("a"), FieldType::Array), json!(["a"]));
        assert_eq!(convert(json!(3), FieldType::Object), json!({"value": 3}));
        assert_eq!(convert(json!(null), FieldType::Array), json!(null));
    }
}
