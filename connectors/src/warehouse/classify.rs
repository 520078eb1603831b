//! Deciding, for each record of a page, whether it lands or goes to quarantine, and
//! what the page needs the table's shape to become. Pure: no database.
//!
//! Against the registered shape (plus what earlier records of the same page added):
//!
//! - a registered field whose key is absent (not null) is a **removed field** — unless
//!   a field the registry does not know appears in the same record with a value that
//!   fits the missing field's type, which is a **rename**;
//! - a value that does not fit its column's type is a **type change**;
//! - a record that is not an object, has no usable primary key or holds a NUL character
//!   (which Postgres cannot store) is an **invalid record**.
//!
//! Records without drift land; their new fields become columns (or registry entries
//! without a column while only nulls are seen). A quarantined record adds nothing, so
//! the table keeps its prior shape until someone maps the drift.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::StreamSpec;
use super::ident::display_name;
use super::schema::{Shape, ShapeChange};
use super::types::{ColumnType, cursor_instant, json_kind, key_text};

/// The longest primary key stored: keys are indexed, and a btree entry over about 2.7 kB
/// would fail the whole page.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// Why a record was quarantined. The detail names the fields and is what alerts are
/// deduplicated on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    /// `removed_field`, `type_change`, `rename` or `invalid_record`.
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
}

/// A record that lands: its position in the page, primary key and cursor instant.
#[derive(Debug)]
pub(crate) struct Landing {
    pub(crate) index: usize,
    pub(crate) key: String,
    pub(crate) cursor: Option<DateTime<Utc>>,
}

/// A record that goes to quarantine.
#[derive(Debug)]
pub(crate) struct Quarantined {
    pub(crate) index: usize,
    /// The primary key for display (escaped when it holds a NUL), if the record has one.
    pub(crate) key: Option<String>,
    pub(crate) drifts: Vec<Drift>,
}

/// The verdict on a page.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) land: Vec<Landing>,
    pub(crate) quarantine: Vec<Quarantined>,
    pub(crate) change: ShapeChange,
    /// Records dropped because a newer version of the same key is in the page.
    pub(crate) superseded: u64,
}

/// Where a field stands while a page is classified.
#[derive(Clone, Copy)]
struct Known {
    ty: Option<ColumnType>,
    /// Registered before this page (else: added by an earlier record of the page).
    registered: bool,
}

/// Classifies `records` against `shape` (`None`: the stream has no table yet).
pub(crate) fn classify(shape: Option<&Shape>, spec: &StreamSpec, records: &[Value]) -> Plan {
    let mut plan = Plan::default();
    let mut known: HashMap<&str, Known> = HashMap::new();
    // Registration order, so "missing" is reported in a stable order.
    let mut order: Vec<&str> = Vec::new();
    if let Some(shape) = shape {
        for field in &shape.fields {
            known.insert(
                &field.name,
                Known {
                    ty: field.ty,
                    registered: true,
                },
            );
            order.push(&field.name);
        }
    }

    // Known fields still without a type: while there are any, every landing record is
    // looked at field by field.
    let mut untyped = known.values().filter(|k| k.ty.is_none()).count();
    let mut kept: Vec<(&Map<String, Value>, Landing)> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let Some(map) = record.as_object() else {
            plan.quarantine.push(invalid(
                index,
                None,
                "record is not a JSON object".to_owned(),
            ));
            continue;
        };
        let key = map.get(&spec.primary_key).and_then(key_text);
        if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_BYTES) {
            let detail = format!(
                "record with a primary key {} longer than {MAX_KEY_BYTES} bytes",
                display_name(&spec.primary_key)
            );
            plan.quarantine.push(invalid(index, None, detail));
            continue;
        }
        let Some(key) = key else {
            let detail = format!(
                "record without a string or number primary key {}",
                display_name(&spec.primary_key)
            );
            plan.quarantine.push(invalid(index, None, detail));
            continue;
        };
        let cursor = spec
            .cursor_field
            .as_ref()
            .and_then(|field| map.get(field))
            .and_then(cursor_instant);
        let landing = Landing { index, key, cursor };
        // One version per key and page, the newest by cursor (the later one on a tie):
        // a statement cannot write the same row twice.
        match by_key.get(&landing.key) {
            Some(&slot) if kept[slot].1.cursor <= cursor => {
                kept[slot] = (map, landing);
                plan.superseded += 1;
            }
            Some(_) => plan.superseded += 1,
            None => {
                by_key.insert(landing.key.clone(), kept.len());
                kept.push((map, landing));
            }
        }
    }
    kept.sort_unstable_by_key(|(_, landing)| landing.index);

    for (map, landing) in kept {
        let index = landing.index;
        if holds_nul(map) {
            let detail = "record holds a NUL character, which Postgres cannot store".to_owned();
            plan.quarantine.push(invalid(
                index,
                Some(landing.key.escape_debug().to_string()),
                detail,
            ));
            continue;
        }
        let drifts = drifts(map, &spec.primary_key, &known, &order);
        if !drifts.is_empty() {
            plan.quarantine.push(Quarantined {
                index,
                key: Some(landing.key),
                drifts,
            });
            continue;
        }
        // Every known field is present (no drift), so a record with one more key than
        // there are known fields (its primary key) brings nothing new.
        if untyped > 0 || map.len() != known.len() + 1 {
            for (name, value) in map {
                if name == &spec.primary_key {
                    continue;
                }
                let inferred = ColumnType::infer(value);
                match known.get_mut(name.as_str()) {
                    Some(field) => {
                        if field.ty.is_none() && inferred.is_some() {
                            field.ty = inferred;
                            untyped -= 1;
                        }
                    }
                    None => {
                        untyped += usize::from(inferred.is_none());
                        let field = Known {
                            ty: inferred,
                            registered: false,
                        };
                        known.insert(name, field);
                        order.push(name);
                    }
                }
            }
        }
        plan.land.push(landing);
    }

    if let Some(shape) = shape {
        for field in &shape.fields {
            if field.ty.is_none()
                && let Some(ty) = known.get(field.name.as_str()).and_then(|k| k.ty)
            {
                plan.change.typed.push((field.name.clone(), ty));
            }
        }
    }
    for name in order {
        if let Some(k) = known.get(name).filter(|k| !k.registered) {
            plan.change.new_fields.push((name.to_owned(), k.ty));
        }
    }
    plan
}

fn invalid(index: usize, key: Option<String>, detail: String) -> Quarantined {
    Quarantined {
        index,
        key,
        drifts: vec![Drift {
            kind: "invalid_record",
            detail,
        }],
    }
}

/// The drifts of one record against the fields known so far.
fn drifts(
    map: &Map<String, Value>,
    primary_key: &str,
    known: &HashMap<&str, Known>,
    order: &[&str],
) -> Vec<Drift> {
    let mut found = Vec::new();
    // The fields the registry does not know, gathered only once one is missing.
    let mut unknown: Option<Vec<(&str, &Value)>> = None;
    for &name in order {
        let field = known[name];
        match map.get(name) {
            Some(value) => {
                if let Some(ty) = field.ty.filter(|ty| !ty.fits(value)) {
                    found.push(Drift {
                        kind: "type_change",
                        detail: format!(
                            "type change of field {}: the column is {}, the value is {}",
                            display_name(name),
                            ty.describe(),
                            json_kind(value)
                        ),
                    });
                }
            }
            None => {
                // A new field that could hold the missing one's values is a rename.
                let fits = |value: &Value| field.ty.is_none_or(|ty| ty.fits(value));
                let unknown = unknown.get_or_insert_with(|| {
                    map.iter()
                        .filter(|(name, _)| {
                            name.as_str() != primary_key && !known.contains_key(name.as_str())
                        })
                        .map(|(name, value)| (name.as_str(), value))
                        .collect()
                });
                if let Some(at) = unknown.iter().position(|(_, value)| fits(value)) {
                    let (to, _) = unknown.remove(at);
                    found.push(Drift {
                        kind: "rename",
                        detail: format!(
                            "rename of field {} to {}",
                            display_name(name),
                            display_name(to)
                        ),
                    });
                } else {
                    found.push(Drift {
                        kind: "removed_field",
                        detail: format!("removed field {}", display_name(name)),
                    });
                }
            }
        }
    }
    found
}

/// Whether any key or string in the record holds a NUL character.
fn holds_nul(map: &Map<String, Value>) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(value),
            Value::Object(map) => holds_nul(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    map.iter().any(|(k, v)| k.contains('\0') || value(v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::classify;
    use crate::warehouse::StreamSpec;

    fn spec() -> StreamSpec {
        StreamSpec::new("contacts", "id").with_cursor("updated_at")
    }

    #[test]
    fn a_new_stream_lands_everything_and_registers_every_field() {
        let records = [
            json!({"id": "1", "a": null, "b": 1, "updated_at": "2026-01-01T00:00:00Z"}),
            json!({"id": "2", "a": "x", "b": 2, "c": [1], "updated_at": "2026-01-01T00:00:00Z"}),
        ];
        let plan = classify(None, &spec(), &records);
        assert_eq!(plan.land.len(), 2);
        assert!(plan.quarantine.is_empty());
        let names: Vec<_> = plan
            .change
            .new_fields
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect();
        use crate::warehouse::ColumnType::*;
        assert_eq!(
            names,
            [
                ("a", Some(Text)),
                ("b", Some(Bigint)),
                ("updated_at", Some(Timestamptz)),
                ("c", Some(Array))
            ]
        );
    }

    #[test]
    fn later_values_that_do_not_fit_are_type_changes_and_duplicates_keep_the_newest() {
        let records = [
            json!({"id": "1", "n": 1, "updated_at": "2026-01-02T00:00:00Z"}),
            json!({"id": "1", "n": 2, "updated_at": "2026-01-01T00:00:00Z"}),
            json!({"id": "2", "n": "one", "updated_at": "2026-01-01T00:00:00Z"}),
            json!({"n": 3}),
            json!(7),
        ];
        let plan = classify(None, &spec(), &records);
        assert_eq!(plan.superseded, 1);
        assert_eq!(plan.land.len(), 1);
        assert_eq!(plan.land[0].index, 0);
        let kinds: Vec<_> = plan.quarantine.iter().map(|q| q.drifts[0].kind).collect();
        assert_eq!(kinds, ["invalid_record", "invalid_record", "type_change"]);
    }
}
