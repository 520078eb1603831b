//! The destination's records, one collection per stream, and the rules a write follows:
//! versions and ETags, the memory of idempotency keys, and the count of creations per
//! record that tells a duplicate from a retry.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

/// The field of a posted record that names it in the source: what creations are
/// counted by, since the destination gives a posted record an id of its own.
pub const EXTERNAL_ID: &str = "external_id";

/// The field "another user" sets when they edit a record under a client's feet.
pub const EDITED_BY: &str = "edited_by";

/// One record as the destination holds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Item {
    pub(crate) body: Map<String, Value>,
    pub(crate) version: u64,
}

impl Item {
    pub(crate) fn etag(&self) -> String {
        format!("\"v{}\"", self.version)
    }

    /// The record as the API shows it: its fields, its id and its version.
    pub(crate) fn to_json(&self, id: &str) -> Value {
        let mut body = self.body.clone();
        body.insert("id".to_owned(), Value::from(id));
        body.insert("version".to_owned(), Value::from(self.version));
        Value::Object(body)
    }
}

/// A `POST` answered once, replayed for a repeated `Idempotency-Key`.
#[derive(Clone, Debug)]
pub(crate) struct Replay {
    pub(crate) request: Value,
    pub(crate) id: String,
}

/// What a write did, for the client's answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Written {
    /// The record is new (201).
    Created { id: String, item: Item },
    /// The record existed and was changed (200).
    Updated { id: String, item: Item },
    /// A repeated `Idempotency-Key`: the first answer again, nothing written (201).
    Replayed { id: String, item: Item },
}

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// 404: no record with that id.
    NotFound,
    /// 412: `If-Match` names another version than the current one.
    Stale { current: String },
    /// 422: this `Idempotency-Key` came with another body before.
    KeyReused,
    /// 400: a record must be a JSON object.
    NotAnObject,
}

/// A write's preconditions: `If-Match` (the record is at this version, or exists for
/// `*`) and `If-None-Match` (it is not at this version, or does not exist for `*`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Conditions<'a> {
    pub(crate) if_match: Option<&'a str>,
    pub(crate) if_none_match: Option<&'a str>,
}

/// Counters a test compares with what the client believes it did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WriteCounts {
    /// Records created (`PUT` of a new id, or `POST`).
    pub created: u64,
    /// Records changed in place.
    pub updated: u64,
    /// `POST`s answered from the idempotency memory.
    pub replayed: u64,
    /// Writes refused with 412 for a stale `If-Match`.
    pub stale: u64,
    /// Writes refused with 409 or 422 for the record itself.
    pub rejected: u64,
    /// Records edited by "another user".
    pub edited_by_others: u64,
    /// Writes applied whose answer was never sent (the connection was reset).
    pub acks_lost: u64,
    /// Writes refused with 503 before they were applied.
    pub unavailable: u64,
}

/// One stream's records.
#[derive(Default)]
pub(crate) struct Collection {
    items: BTreeMap<String, Item>,
    next_id: u64,
    replays: HashMap<String, Replay>,
    /// How many times each record was created: by id for `PUT`, by [`EXTERNAL_ID`]
    /// (or the new id when there is none) for `POST`. More than one is a duplicate.
    creations: HashMap<String, u32>,
    pub(crate) counts: WriteCounts,
}

impl Collection {
    pub(crate) fn get(&self, id: &str) -> Option<&Item> {
        self.items.get(id)
    }

    pub(crate) fn items(&self) -> impl Iterator<Item = (&String, &Item)> {
        self.items.iter()
    }

    pub(crate) fn creations(&self) -> &HashMap<String, u32> {
        &self.creations
    }

    fn check(&self, id: &str, conditions: Conditions<'_>) -> Result<Option<&Item>, Refused> {
        let current = self.items.get(id);
        let etag = current.map(Item::etag);
        let stale = || Refused::Stale {
            current: etag.clone().unwrap_or_default(),
        };
        if let Some(condition) = conditions.if_match
            && !etag.as_deref().is_some_and(|etag| matches(condition, etag))
        {
            return Err(stale());
        }
        if let Some(condition) = conditions.if_none_match
            && etag.as_deref().is_some_and(|etag| matches(condition, etag))
        {
            return Err(stale());
        }
        Ok(current)
    }

    /// `PUT`: creates the record or replaces its fields, under its conditions.
    pub(crate) fn put(
        &mut self,
        id: &str,
        body: Value,
        conditions: Conditions<'_>,
    ) -> Result<Written, Refused> {
        let body = object(body)?;
        let current = self.check(id, conditions)?;
        let created = current.is_none();
        let version = current.map_or(1, |item| item.version + 1);
        let item = Item { body, version };
        self.items.insert(id.to_owned(), item.clone());
        let id = id.to_owned();
        if created {
            self.created(&id);
            Ok(Written::Created { id, item })
        } else {
            self.counts.updated += 1;
            Ok(Written::Updated { id, item })
        }
    }

    /// `PATCH`: merges `patch` into an existing record (RFC 7396: `null` removes a
    /// field), under its conditions.
    pub(crate) fn patch(
        &mut self,
        id: &str,
        patch: Value,
        conditions: Conditions<'_>,
    ) -> Result<Written, Refused> {
        let patch = object(patch)?;
        let Some(current) = self.check(id, conditions)? else {
            return Err(Refused::NotFound);
        };
        let mut item = current.clone();
        for (field, value) in patch {
            if value.is_null() {
                item.body.remove(&field);
            } else {
                item.body.insert(field, value);
            }
        }
        item.version += 1;
        self.items.insert(id.to_owned(), item.clone());
        self.counts.updated += 1;
        Ok(Written::Updated {
            id: id.to_owned(),
            item,
        })
    }

    /// `POST`: creates a record with an id of the destination's. A repeated
    /// `Idempotency-Key` with the same body replays the first answer; with another body
    /// it is refused.
    pub(crate) fn post(
        &mut self,
        stream: &str,
        body: Value,
        key: Option<&str>,
    ) -> Result<Written, Refused> {
        if let Some(replay) = key.and_then(|key| self.replays.get(key)) {
            if replay.request != body {
                return Err(Refused::KeyReused);
            }
            let id = replay.id.clone();
            // The record may have been edited since: the replay shows it as it is now.
            let item = self.items.get(&id).cloned().ok_or(Refused::NotFound)?;
            self.counts.replayed += 1;
            return Ok(Written::Replayed { id, item });
        }
        let fields = object(body.clone())?;
        self.next_id += 1;
        let id = format!("{stream}-{}", self.next_id);
        let counted = match fields.get(EXTERNAL_ID) {
            Some(Value::String(external)) => external.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            _ => id.clone(),
        };
        let item = Item {
            body: fields,
            version: 1,
        };
        self.items.insert(id.clone(), item.clone());
        self.created(&counted);
        if let Some(key) = key {
            self.replays.insert(
                key.to_owned(),
                Replay {
                    request: body,
                    id: id.clone(),
                },
            );
        }
        Ok(Written::Created { id, item })
    }

    /// Puts record `id` as someone else wrote it: a creation, counted as such.
    pub(crate) fn seed(&mut self, id: &str, body: Value) {
        let _ = self.put(id, body, Conditions::default());
    }

    /// "Another user" edits record `id`: a new version the client has not seen.
    pub(crate) fn edit_by_other(&mut self, id: &str) {
        if let Some(item) = self.items.get_mut(id) {
            item.version += 1;
            item.body
                .insert(EDITED_BY.to_owned(), Value::from("another-user"));
            self.counts.edited_by_others += 1;
        }
    }

    fn created(&mut self, counted: &str) {
        *self.creations.entry(counted.to_owned()).or_default() += 1;
        self.counts.created += 1;
    }
}

/// Whether an `If-Match` value names `etag` (or is `*`).
fn matches(condition: &str, etag: &str) -> bool {
    condition
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

fn object(body: Value) -> Result<Map<String, Value>, Refused> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(Refused::NotAnObject),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn matching(etag: &str) -> Conditions<'_> {
        Conditions {
            if_match: Some(etag),
            if_none_match: None,
        }
    }

    #[test]
    fn a_put_creates_then_replaces_under_its_etag() {
        let mut c = Collection::default();
        let Ok(Written::Created { item, .. }) = c.put("a", json!({"n": 1}), Conditions::default())
        else {
            panic!("created");
        };
        assert_eq!(item.etag(), "\"v1\"");
        assert_eq!(
            c.put("a", json!({"n": 2}), matching("\"v7\"")),
            Err(Refused::Stale {
                current: "\"v1\"".into()
            })
        );
        let new_only = Conditions {
            if_none_match: Some("*"),
            ..Conditions::default()
        };
        assert!(matches!(
            c.put("a", json!({"n": 2}), new_only),
            Err(Refused::Stale { .. })
        ));
        assert!(matches!(
            c.put("a", json!({"n": 2}), matching("\"v1\"")),
            Ok(Written::Updated { .. })
        ));
        assert_eq!(c.creations()["a"], 1);
        assert_eq!(c.counts.updated, 1);
    }

    #[test]
    fn a_patch_merges_and_a_null_removes() {
        let mut c = Collection::default();
        c.put("a", json!({"n": 1, "m": 2}), Conditions::default())
            .unwrap();
        assert_eq!(
            c.patch("b", json!({}), Conditions::default()),
            Err(Refused::NotFound)
        );
        c.patch("a", json!({"n": 5, "m": null}), matching("\"v1\""))
            .unwrap();
        assert_eq!(
            c.get("a").unwrap().body,
            json!({"n": 5}).as_object().cloned().unwrap()
        );
        c.edit_by_other("a");
        assert!(matches!(
            c.patch("a", json!({"n": 6}), matching("\"v2\"")),
            Err(Refused::Stale { .. })
        ));
    }

    #[test]
    fn a_post_with_a_key_is_created_once_and_replayed_after() {
        let mut c = Collection::default();
        let body = json!({"external_id": "src-1", "n": 1});
        let first = c.post("contacts", body.clone(), Some("k1")).unwrap();
        let again = c.post("contacts", body.clone(), Some("k1")).unwrap();
        let (Written::Created { id: a, .. }, Written::Replayed { id: b, .. }) = (first, again)
        else {
            panic!("created, then replayed");
        };
        assert_eq!(a, b);
        assert_eq!(c.creations()["src-1"], 1);
        assert_eq!(
            c.post("contacts", json!({"n": 2}), Some("k1")),
            Err(Refused::KeyReused)
        );
        // Without a key, a second post is a second record: the duplicate is counted.
        c.post("contacts", body.clone(), None).unwrap();
        c.post("contacts", body, None).unwrap();
        assert_eq!(c.creations()["src-1"], 3);
    }
}
