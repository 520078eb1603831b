//! Templates in a source file: `{since}` (and a lookup's `{email}` or `{id}`) in query
//! values and in the strings of a JSON body, filled with a value that stays data. In a
//! body it stays inside its JSON string, so a value cannot change the body's shape.

use serde_json::Value;

/// `template` with each placeholder replaced by its value.
pub(crate) fn fill_text(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (placeholder, value)| {
            text.replace(placeholder, value)
        })
}

/// `body` with each placeholder in its strings replaced by its value.
pub(crate) fn fill(body: &Value, values: &[(&str, &str)]) -> Value {
    match body {
        Value::String(text) => Value::String(fill_text(text, values)),
        Value::Array(items) => Value::Array(items.iter().map(|item| fill(item, values)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, item)| (name.clone(), fill(item, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fill;

    #[test]
    fn values_fill_strings_and_stay_inside_them() {
        let body = json!({"filters": [{"value": "{email}", "op": "EQ"}], "limit": 10});
        let hostile = "a\"}],\"limit\":1e9,\"x\":[{\"y\":\"";
        let filled = fill(&body, &[("{email}", hostile)]);
        assert_eq!(filled["filters"][0]["value"], json!(hostile));
        assert_eq!(filled["limit"], json!(10));
        assert_eq!(filled.as_object().map(|o| o.len()), Some(2));
    }
}
