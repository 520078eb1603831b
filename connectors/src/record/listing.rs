//! Reading a listing's body: the envelope (tokens, flags, totals) as a [`Value`], and the
//! items at the records path as each item's own JSON text, so that one item a parser
//! cannot hold (nested 10,000 levels deep, say) costs only itself, and the items are
//! never parsed into anything lossy on the way.

use std::fmt;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::paginate::JsonPath;

/// A listing body, read.
#[derive(Debug)]
pub struct ListingBody {
    /// Everything but the items, which are null in their place.
    pub envelope: Value,
    /// What was at the records path.
    pub items: Items,
}

/// What a body holds at the records path.
#[derive(Debug)]
pub enum Items {
    /// An array: each item's exact text.
    Found(Vec<Box<RawValue>>),
    /// Something else, of this JSON kind.
    NotArray(&'static str),
    /// Nothing: a key on the path is missing, or a value on it is not an object.
    Missing,
}

/// The UTF-8 byte-order mark some servers put before a body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads `body` (a byte-order mark before it is skipped) with the items at `path`.
pub fn read(body: &[u8], path: &JsonPath) -> Result<ListingBody, serde_json::Error> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let (envelope, items) = At(path.keys()).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(ListingBody { envelope, items })
}

/// Reads the value at the rest of the path (`keys`) below here.
struct At<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = (Value, Items);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl At<'_> {
    /// A value that is not an array at the end of the path, or not an object before it.
    fn other(&self, value: Value) -> (Value, Items) {
        let items = if self.0.is_empty() {
            Items::NotArray(crate::paginate::kind_of(&value))
        } else {
            Items::Missing
        };
        (value, items)
    }
}

impl<'de> Visitor<'de> for At<'_> {
    type Value = (Value, Items);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.0.is_empty() {
            let value = Value::deserialize(SeqAccessDeserializer::new(seq))?;
            return Ok((value, Items::Missing));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element::<Box<RawValue>>()? {
            items.push(item);
        }
        Ok((Value::Null, Items::Found(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((key, rest)) = self.0.split_first() else {
            let value = Value::deserialize(MapAccessDeserializer::new(map))?;
            return Ok(self.other(value));
        };
        let mut envelope = Map::new();
        let mut items = Items::Missing;
        while let Some(name) = map.next_key::<String>()? {
            if &name == key && matches!(items, Items::Missing) {
                let (value, found) = map.next_value_seed(At(rest))?;
                envelope.insert(name, value);
                items = found;
            } else {
                let value = map.next_value::<Value>()?;
                envelope.insert(name, value);
            }
        }
        Ok((Value::Object(envelope), items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.other(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.other(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.other(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.other(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.other(Value::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.other(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Items, read};

    #[test]
    fn items_come_out_as_text_and_the_envelope_stays() {
        let body =
            br#"{"paging":{"next":"b"},"data":{"rows":[{"id":1},{"id":12345678901234567890123}]}}"#;
        let listing = read(body, &"data.rows".parse().unwrap()).unwrap();
        assert_eq!(
            listing.envelope,
            json!({"paging": {"next": "b"}, "data": {"rows": null}})
        );
        let Items::Found(items) = listing.items else {
            panic!("{:?}", listing.items)
        };
        let texts: Vec<&str> = items.iter().map(|i| i.get()).collect();
        assert_eq!(texts, [r#"{"id":1}"#, r#"{"id":12345678901234567890123}"#]);
    }

    #[test]
    fn a_bom_is_skipped_a_deep_item_costs_only_itself_and_kinds_are_named() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let body = format!("\u{feff}[{{\"id\":\"1\"}},{deep}]");
        let listing = read(body.as_bytes(), &"".parse().unwrap()).unwrap();
        let Items::Found(items) = listing.items else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        let listing = read(br#"{"data":{"a":1}}"#, &"data".parse().unwrap()).unwrap();
        assert!(matches!(listing.items, Items::NotArray("an object")));
        let listing = read(br#"{"other":[]}"#, &"data".parse().unwrap()).unwrap();
        assert!(matches!(listing.items, Items::Missing));
        assert!(read(br#"{"data":[1,"#, &"data".parse().unwrap()).is_err());
    }
}
