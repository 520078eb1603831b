//! Deciding, for each record of a page, whether it lands or goes to quarantine, and
//! what the page needs the table's shape to become. Pure: no database.
//!
//! Against the registered shape (plus what earlier records of the same page added):
//!
//! - a field some records of the page carry and others leave out is **omitted** where it
//!   is missing: it lands as NULL, and the field is registered as optional, so its
//!   absence never counts against a record again;
//! - a registered field that is not optional and that **no** record of the page carries
//!   is a **removed field**, unless a field the registry does not know appears in the
//!   same record with a value that fits the missing field's type, which is a **rename**;
//! - a value that does not fit its column's type is a **type change**;
//! - a record that is not an object, has no usable primary key (missing, not a string or
//!   number, over 1 KiB, holding a NUL) or cannot be read is an **invalid record**;
//! - a record whose cursor is missing, does not read as the stream's cursor type, holds
//!   a NUL or lies too far ahead of now has an **invalid cursor**.
//!
//! What PostgreSQL cannot store is repaired by one rule: a NUL (`\u0000`) or an unpaired
//! UTF-16 surrogate escape in a field name or a string value becomes U+FFFD (see
//! [`escapes`]), the record lands, and the page reports it.
//!
//! Records without drift land; their new fields become columns (or registry entries
//! without a column while only nulls are seen, or for good once the table has
//! [`MAX_COLUMNS`]). A quarantined record adds nothing, so the table keeps its prior
//! shape until someone maps the drift.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::StreamSpec;
use super::ident::display_name;
use super::schema::{NewField, Shape, ShapeChange};
use super::types::{ColumnType, cursor_instant, json_kind};
use crate::record::{Record, escapes};

/// The longest primary key stored: keys are indexed, and a btree entry over about 2.7 kB
/// would fail the whole page.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// The most fields of a table that get a column of their own; later fields are kept in
/// `_raw` only. PostgreSQL allows 1,600 columns, but a row must fit a page: 400
/// fixed-width or out-of-line values still do.
pub const MAX_COLUMNS: usize = 400;

/// Why a record was quarantined. The detail names the fields and is what alerts are
/// deduplicated on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    /// `removed_field`, `type_change`, `rename` or `invalid_record`.
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
}

/// A record that lands: its position in the page, primary key and cursor instant, and
/// the repaired record when NULs or lone surrogates had to be replaced.
#[derive(Debug)]
pub(crate) struct Landing {
    pub(crate) index: usize,
    pub(crate) key: String,
    pub(crate) cursor: Option<DateTime<Utc>>,
    /// The cursor value as the vendor wrote it (checked against the stream's type).
    pub(crate) cursor_text: Option<String>,
    pub(crate) repaired: Option<Record>,
}

impl Landing {
    /// The record as it lands.
    pub(crate) fn record<'a>(&'a self, records: &'a [Record]) -> &'a Record {
        self.repaired.as_ref().unwrap_or(&records[self.index])
    }
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
    /// Landing records whose NULs or lone surrogates were replaced by U+FFFD.
    pub(crate) repaired: u64,
    /// New fields that got no column because the table has [`MAX_COLUMNS`].
    pub(crate) raw_only: Vec<String>,
}

/// Where a field stands while a page is classified.
#[derive(Clone, Copy)]
struct Known {
    ty: Option<ColumnType>,
    /// Registered before this page (else: added by an earlier record of the page).
    registered: bool,
    /// Its absence is an omission, not a removal.
    optional: bool,
    /// Kept in `_raw` only: any value fits.
    raw_only: bool,
}

/// Classifies `records` against `shape` (`None`: the stream has no table yet).
pub(crate) fn classify(shape: Option<&Shape>, spec: &StreamSpec, records: &[Record]) -> Plan {
    let mut plan = Plan::default();
    let mut known: HashMap<String, Known> = HashMap::new();
    // Registration order, so "missing" is reported in a stable order.
    let mut order: Vec<String> = Vec::new();
    let mut columns = 0;
    if let Some(shape) = shape {
        for field in &shape.fields {
            known.insert(
                field.name.clone(),
                Known {
                    ty: field.ty,
                    registered: true,
                    optional: field.optional,
                    raw_only: field.raw_only,
                },
            );
            order.push(field.name.clone());
        }
        columns = shape.typed().count();
    }

    let kept = keep_newest(spec, records, &mut plan);

    // NULs and lone surrogates are replaced before anything is read from a record.
    let mut repaired: Vec<Option<Record>> = Vec::with_capacity(kept.len());
    let mut candidates: Vec<Landing> = Vec::with_capacity(kept.len());
    for landing in kept {
        match escapes::rewrite(records[landing.index].raw(), true) {
            None => repaired.push(None),
            Some((text, _)) => {
                match RawValue::from_string(text)
                    .ok()
                    .and_then(|raw| Record::parse(raw).ok())
                {
                    Some(record) => repaired.push(Some(record)),
                    None => {
                        let detail = "record cannot be repaired for PostgreSQL".to_owned();
                        plan.quarantine
                            .push(invalid(landing.index, Some(landing.key), detail));
                        continue;
                    }
                }
            }
        }
        candidates.push(landing);
    }
    let empty = Map::new();
    let maps: Vec<&Map<String, Value>> = candidates
        .iter()
        .zip(&repaired)
        .map(|(landing, fixed)| {
            // Kept records are objects (their keys were read); a repaired one too.
            fixed
                .as_ref()
                .unwrap_or(&records[landing.index])
                .value()
                .as_object()
                .unwrap_or(&empty)
        })
        .collect();

    // A registered field no candidate carries was removed (unless optional); one that
    // some carry and some do not is optional from now on.
    let mut presence: HashMap<&str, usize> = HashMap::new();
    for map in &maps {
        for name in map.keys() {
            *presence.entry(name.as_str()).or_default() += 1;
        }
    }
    let mut removed: Vec<String> = Vec::new();
    for name in &order {
        let field = known[name];
        let seen = presence.get(name.as_str()).copied().unwrap_or(0);
        if seen == 0 && !maps.is_empty() && !field.optional && !field.raw_only {
            removed.push(name.clone());
        } else if seen < maps.len() && !field.optional {
            plan.change.optional.push(name.clone());
        }
    }
    for name in &plan.change.optional {
        if let Some(field) = known.get_mut(name) {
            field.optional = true;
        }
    }

    let mut verdicts: Vec<Vec<Drift>> = Vec::with_capacity(maps.len());
    for map in &maps {
        let drifts = drifts(map, &spec.primary_key, &known, &order, &removed);
        if drifts.is_empty() {
            for (name, value) in *map {
                let settled = known
                    .get(name.as_str())
                    .is_some_and(|field| field.ty.is_some() || field.raw_only || value.is_null());
                if !settled && name != &spec.primary_key {
                    let carried = presence.get(name.as_str()).copied().unwrap_or(0);
                    let optional = carried < maps.len();
                    learn(
                        &mut plan,
                        &mut known,
                        &mut order,
                        &mut columns,
                        name,
                        value,
                        optional,
                    );
                }
            }
        }
        verdicts.push(drifts);
    }
    drop(maps);
    for ((mut landing, fixed), drifts) in candidates.into_iter().zip(repaired).zip(verdicts) {
        if drifts.is_empty() {
            plan.repaired += u64::from(fixed.is_some());
            landing.repaired = fixed;
            plan.land.push(landing);
        } else {
            plan.quarantine.push(Quarantined {
                index: landing.index,
                key: Some(landing.key),
                drifts,
            });
        }
    }

    for name in order {
        if let Some(k) = known.get(&name).filter(|k| !k.registered) {
            plan.change.new_fields.push(NewField {
                name,
                ty: k.ty,
                optional: k.optional,
                raw_only: k.raw_only,
            });
        }
    }
    plan
}

/// Takes in one field of a landing record: a new field is registered, a field seen only
/// as null so far gets its type; either gets a column while the table has fewer than
/// [`MAX_COLUMNS`], else it stays in `_raw` only.
fn learn(
    plan: &mut Plan,
    known: &mut HashMap<String, Known>,
    order: &mut Vec<String>,
    columns: &mut usize,
    name: &str,
    value: &Value,
    optional: bool,
) {
    let inferred = ColumnType::infer(value);
    let field = known.entry(name.to_owned()).or_insert_with(|| {
        order.push(name.to_owned());
        Known {
            ty: None,
            registered: false,
            optional,
            raw_only: false,
        }
    });
    let Some(ty) = inferred.filter(|_| field.ty.is_none() && !field.raw_only) else {
        return;
    };
    if *columns < MAX_COLUMNS {
        *columns += 1;
        field.ty = Some(ty);
        if field.registered {
            plan.change.typed.push((name.to_owned(), ty));
        }
    } else {
        field.raw_only = true;
        plan.raw_only.push(name.to_owned());
        if field.registered {
            plan.change.raw_only.push(name.to_owned());
        }
    }
}

/// Keeps one version per key (the newest by cursor, the later one on a tie: a statement
/// cannot write the same row twice), in page order; quarantines records without a usable
/// key, and records whose cursor cannot place them in time (see [`crate::watermark`]).
fn keep_newest(spec: &StreamSpec, records: &[Record], plan: &mut Plan) -> Vec<Landing> {
    let now = Utc::now();
    let mut kept: Vec<Landing> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let Some(map) = record.value().as_object() else {
            plan.quarantine.push(invalid(
                index,
                None,
                "record is not a JSON object".to_owned(),
            ));
            continue;
        };
        let key = match map.get(&spec.primary_key) {
            Some(Value::String(_) | Value::Number(_)) => record.field_text(&spec.primary_key),
            _ => None,
        };
        let Some(key) = key.map(std::borrow::Cow::into_owned) else {
            let detail = format!(
                "record without a string or number primary key {}",
                display_name(&spec.primary_key)
            );
            plan.quarantine.push(invalid(index, None, detail));
            continue;
        };
        if key.len() > MAX_KEY_BYTES {
            let detail = format!(
                "record with a primary key {} longer than {MAX_KEY_BYTES} bytes",
                display_name(&spec.primary_key)
            );
            plan.quarantine.push(invalid(index, None, detail));
            continue;
        }
        if key.contains('\0') {
            let detail = format!(
                "record whose primary key {} holds a NUL character",
                display_name(&spec.primary_key)
            );
            plan.quarantine
                .push(invalid(index, Some(key.escape_debug().to_string()), detail));
            continue;
        }
        let cursor_text = match &spec.cursor_field {
            Some(field) => {
                let text = record.field_text(field);
                let checked =
                    spec.cursor_type
                        .check(field, text.as_deref(), now, spec.max_future_skew_secs);
                if let Err(detail) = checked {
                    plan.quarantine.push(Quarantined {
                        index,
                        key: Some(key),
                        drifts: vec![Drift {
                            kind: "invalid_cursor",
                            detail,
                        }],
                    });
                    continue;
                }
                text.map(std::borrow::Cow::into_owned)
            }
            None => None,
        };
        let cursor = spec
            .cursor_field
            .as_ref()
            .and_then(|field| map.get(field))
            .and_then(cursor_instant);
        let landing = Landing {
            index,
            key,
            cursor,
            cursor_text,
            repaired: None,
        };
        match by_key.get(&landing.key) {
            Some(&slot) if kept[slot].cursor <= cursor => {
                kept[slot] = landing;
                plan.superseded += 1;
            }
            Some(_) => plan.superseded += 1,
            None => {
                by_key.insert(landing.key.clone(), kept.len());
                kept.push(landing);
            }
        }
    }
    kept.sort_unstable_by_key(|landing| landing.index);
    kept
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

/// The drifts of one record against the fields known so far: its values that do not
/// fit their columns, and the page's removed fields (each a rename when a field the
/// registry does not know could hold its values).
fn drifts(
    map: &Map<String, Value>,
    primary_key: &str,
    known: &HashMap<String, Known>,
    order: &[String],
    removed: &[String],
) -> Vec<Drift> {
    let mut found = Vec::new();
    for name in order {
        let field = known[name.as_str()];
        if let Some(value) = map.get(name.as_str())
            && let Some(ty) = field.ty.filter(|ty| !field.raw_only && !ty.fits(value))
        {
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
    if removed.is_empty() {
        return found;
    }
    let mut unknown: Vec<(&str, &Value)> = map
        .iter()
        .filter(|(name, _)| name.as_str() != primary_key && !known.contains_key(name.as_str()))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    for name in removed {
        let field = known[name.as_str()];
        // A new field that could hold the missing one's values is a rename.
        let fits = |value: &Value| field.ty.is_none_or(|ty| ty.fits(value));
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
    found
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::classify;
    use crate::record::Record;
    use crate::warehouse::StreamSpec;

    fn spec() -> StreamSpec {
        StreamSpec::new("contacts", "id").with_cursor("updated_at")
    }

    fn records(values: &[Value]) -> Vec<Record> {
        values.iter().cloned().map(Record::from_value).collect()
    }

    #[test]
    fn a_new_stream_lands_everything_and_registers_every_field() {
        let records = records(&[
            json!({"id": "1", "a": null, "b": 1, "updated_at": "2026-01-01T00:00:00Z"}),
            json!({"id": "2", "a": "x", "b": 2, "c": [1], "updated_at": "2026-01-01T00:00:00Z"}),
        ]);
        let plan = classify(None, &spec(), &records);
        assert_eq!(plan.land.len(), 2);
        assert!(plan.quarantine.is_empty());
        let names: Vec<_> = plan
            .change
            .new_fields
            .iter()
            .map(|f| (f.name.as_str(), f.ty, f.optional))
            .collect();
        use crate::warehouse::ColumnType::*;
        assert_eq!(
            names,
            [
                ("a", Some(Text), false),
                ("b", Some(Bigint), false),
                ("updated_at", Some(Timestamptz), false),
                ("c", Some(Array), true)
            ]
        );
    }

    #[test]
    fn later_values_that_do_not_fit_are_type_changes_and_duplicates_keep_the_newest() {
        let records = records(&[
            json!({"id": "1", "n": 1, "updated_at": "2026-01-02T00:00:00Z"}),
            json!({"id": "1", "n": 2, "updated_at": "2026-01-01T00:00:00Z"}),
            json!({"id": "2", "n": "one", "updated_at": "2026-01-01T00:00:00Z"}),
            json!({"n": 3}),
            json!(7),
        ]);
        let plan = classify(None, &spec(), &records);
        assert_eq!(plan.superseded, 1);
        assert_eq!(plan.land.len(), 1);
        assert_eq!(plan.land[0].index, 0);
        let kinds: Vec<_> = plan.quarantine.iter().map(|q| q.drifts[0].kind).collect();
        assert_eq!(kinds, ["invalid_record", "invalid_record", "type_change"]);
    }

    #[test]
    fn nuls_and_lone_surrogates_are_repaired_unless_in_the_key() {
        let raw = |text: &str| {
            Record::parse(serde_json::value::RawValue::from_string(text.to_owned()).unwrap())
                .unwrap()
        };
        let records = [
            raw(r#"{"id":"1","name":"a\u0000b","bio":"cut \ud83d"}"#),
            raw(r#"{"id":"2\u0000","name":"x","bio":"y"}"#),
        ];
        let plan = classify(None, &StreamSpec::new("contacts", "id"), &records);
        assert_eq!(plan.repaired, 1);
        assert_eq!(plan.land.len(), 1);
        let landed = plan.land[0].record(&records);
        assert_eq!(
            landed.raw(),
            r#"{"id":"1","name":"a\ufffdb","bio":"cut \ufffd"}"#
        );
        assert_eq!(plan.quarantine.len(), 1);
        assert!(plan.quarantine[0].drifts[0].detail.contains("NUL"));
    }
}
