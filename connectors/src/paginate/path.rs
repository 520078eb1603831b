//! Dotted paths into JSON bodies: `paging.next.after`, `records`, or the
//! empty path for the body itself.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Where a value sits in a JSON body, as object keys from the root.
///
/// Written `paging.next.after` in source files; the empty string names the
/// body itself (a listing that answers a bare array). Keys are object keys
/// only: vendors put cursors, totals and record lists in objects, and keeping
/// the syntax that small means a path can never be ambiguous.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct JsonPath(Vec<String>);

/// A path with an empty segment, such as `paging..after` or `records.`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a path: write object keys separated by single dots, e.g. \"paging.next.after\""
)]
pub struct InvalidPath(pub String);

impl JsonPath {
    /// The body itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// The value at this path in `body`, if every key along it exists.
    pub fn get<'v>(&self, body: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(body, |value, key| value.as_object()?.get(key))
    }

    /// Moves the value at this path out of `body`, leaving null in its place;
    /// how a page's records leave its body without being copied.
    pub fn take(&self, body: &mut Value) -> Option<Value> {
        self.0
            .iter()
            .try_fold(body, |value, key| value.as_object_mut()?.get_mut(key))
            .map(Value::take)
    }

    /// Puts `value` at this path in `body`, making the objects missing on the way: how a
    /// request body gets its page token or watermark. `false` (and `body` unchanged)
    /// when a value on the way is not an object, or the path is the root.
    pub fn set(&self, body: &mut Value, value: Value) -> bool {
        let Some((last, parents)) = self.0.split_last() else {
            return false;
        };
        let mut at = body;
        for key in parents {
            let Some(object) = at.as_object_mut() else {
                return false;
            };
            at = object
                .entry(key.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
        match at.as_object_mut() {
            Some(object) => {
                object.insert(last.clone(), value);
                true
            }
            None => false,
        }
    }

    /// Its keys, from the root.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// Whether this is the path of the body itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for JsonPath {
    type Err = InvalidPath;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Ok(Self::root());
        }
        let keys: Vec<String> = text.split('.').map(str::to_owned).collect();
        if keys.iter().any(String::is_empty) {
            return Err(InvalidPath(text.to_owned()));
        }
        Ok(Self(keys))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A scalar as the text a query parameter or an id carries: strings as they
/// are, numbers and booleans in their JSON form; `None` for null, arrays and
/// objects.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{JsonPath, scalar_text};

    #[test]
    fn paths_walk_objects_and_the_empty_path_is_the_body() {
        let body = json!({"paging": {"next": {"after": "25"}}, "records": [1, 2]});
        let path: JsonPath = "paging.next.after".parse().expect("a path");
        assert_eq!(path.get(&body), Some(&json!("25")));
        assert_eq!(path.to_string(), "paging.next.after");
        let root: JsonPath = "".parse().expect("the root");
        assert_eq!(root.get(&body), Some(&body));
        let missing: JsonPath = "paging.previous".parse().expect("a path");
        assert_eq!(missing.get(&body), None);
        let mut body = body;
        let records: JsonPath = "records".parse().expect("a path");
        assert_eq!(records.take(&mut body), Some(json!([1, 2])));
        assert_eq!(body["records"], json!(null));
        assert!("records.".parse::<JsonPath>().is_err());
        assert!("a..b".parse::<JsonPath>().is_err());
    }

    #[test]
    fn set_makes_the_objects_on_the_way_and_refuses_to_overwrite_a_scalar() {
        let mut body = json!({"variables": {"first": 100}, "limit": 5});
        let after: JsonPath = "variables.after".parse().expect("a path");
        assert!(after.set(&mut body, json!("42")));
        assert_eq!(
            body,
            json!({"variables": {"first": 100, "after": "42"}, "limit": 5})
        );
        let deep: JsonPath = "a.b.c".parse().expect("a path");
        assert!(deep.set(&mut body, json!(1)));
        assert_eq!(body["a"], json!({"b": {"c": 1}}));
        let through_scalar: JsonPath = "limit.after".parse().expect("a path");
        let before = body.clone();
        assert!(!through_scalar.set(&mut body, json!(1)));
        assert!(!JsonPath::root().set(&mut body, json!(1)));
        assert_eq!(body, before);
    }

    #[test]
    fn scalars_become_parameter_text() {
        assert_eq!(scalar_text(&json!("abc")), Some("abc".to_owned()));
        assert_eq!(scalar_text(&json!(42)), Some("42".to_owned()));
        assert_eq!(scalar_text(&json!(null)), None);
        assert_eq!(scalar_text(&json!({"a": 1})), None);
    }
}
