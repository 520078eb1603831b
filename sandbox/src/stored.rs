//! One record as the sandbox keeps and serves it: its fields, the fields set to raw
//! JSON text (values no `serde_json::Value` can hold, such as a 23-digit integer, a lone
//! surrogate escape or an array 10,000 levels deep), and its JSON pre-serialized, so a
//! page response is a concatenation.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::generate::timestamp;

pub(crate) struct StoredRecord {
    pub(crate) created: i64,
    pub(crate) updated: i64,
    pub(crate) fields: Map<String, Value>,
    /// Fields served as this exact JSON text, after the others.
    pub(crate) raw_fields: Vec<(String, Box<RawValue>)>,
    pub(crate) json: Bytes,
}

impl StoredRecord {
    pub(crate) fn new(
        created: i64,
        updated: i64,
        fields: Map<String, Value>,
        omit_nulls: bool,
    ) -> Self {
        let mut record = Self {
            created,
            updated,
            fields,
            raw_fields: Vec::new(),
            json: Bytes::new(),
        };
        record.refresh(omit_nulls);
        record
    }

    /// Re-serializes after a change. With `omit_nulls`, null fields are left out, as
    /// vendors that omit what is empty do.
    pub(crate) fn refresh(&mut self, omit_nulls: bool) {
        if omit_nulls {
            self.fields.retain(|_, value| !value.is_null());
        }
        let mut json = serde_json::to_vec(&self.fields).expect("a JSON map always serializes");
        if !self.raw_fields.is_empty() {
            json.pop();
            for (name, raw) in &self.raw_fields {
                if json.len() > 1 {
                    json.push(b',');
                }
                json.extend_from_slice(Value::from(name.as_str()).to_string().as_bytes());
                json.push(b':');
                json.extend_from_slice(raw.get().as_bytes());
            }
            json.push(b'}');
        }
        self.json = Bytes::from(json);
    }

    /// The text of string field `field`, whether set plainly or as raw JSON.
    pub(crate) fn text(&self, field: &str) -> Option<String> {
        if let Some(Value::String(text)) = self.fields.get(field) {
            return Some(text.clone());
        }
        let (_, raw) = self.raw_fields.iter().find(|(name, _)| name == field)?;
        match serde_json::from_str(raw.get()) {
            Ok(Value::String(text)) => Some(text),
            _ => None,
        }
    }

    /// Bumps `updated_at` to `stamp`; a cursor value set by hand goes.
    pub(crate) fn touch(&mut self, stamp: i64) {
        self.updated = stamp;
        self.raw_fields.retain(|(name, _)| name != "updated_at");
        self.fields
            .insert("updated_at".to_owned(), Value::from(timestamp(stamp)));
    }

    /// Serves `field` as `raw` from now on, in place of any value it had.
    pub(crate) fn set_raw(&mut self, field: &str, raw: Box<RawValue>) {
        self.fields.remove(field);
        self.raw_fields.retain(|(name, _)| name != field);
        self.raw_fields.push((field.to_owned(), raw));
    }

    /// The record as a client parsing it with `serde_json` would see it: raw fields
    /// parsed (numbers beyond `f64` rounded as such a client rounds them), or, where they
    /// cannot be parsed at all, their text as a string.
    pub(crate) fn view(&self) -> Map<String, Value> {
        let mut view = self.fields.clone();
        for (name, raw) in &self.raw_fields {
            let value = serde_json::from_str(raw.get())
                .unwrap_or_else(|_| Value::String(raw.get().to_owned()));
            view.insert(name.clone(), value);
        }
        view
    }
}
