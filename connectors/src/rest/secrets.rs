//! Secrets written into a source file where only a secret source may stand, found on
//! the parsed document before serde reads it, so the error names the exact field and
//! place and never repeats the value.

use serde::Deserialize;
use toml::de::DeTable;

use crate::headers::{literal_credential_problem, looks_like_credential};

/// The dotted field a line being written defines (`auth.token` for `token = "...`
/// under `[auth]`), for a syntax error the parser could not place in the document.
pub(super) fn field_on_line(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = text[start..].lines().next().unwrap_or_default();
    let Some((key, _)) = line.split_once('=') else {
        return String::new();
    };
    let key = key.trim().trim_matches('"');
    let table = before[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_owned(),
    }
}

/// The fields of `[auth]` that hold a secret.
const SECRET_FIELDS: [&str; 5] = ["token", "value", "client_id", "client_secret", "password"];

/// A secret written into the file where only a secret source may stand: a field of
/// `[auth]` that holds a credential, or a header whose name says it carries one (or any
/// header whose value is neither text nor a source). Found on the parsed document, so
/// the error names the exact field and place; its message never holds the value.
/// `api` is the table that describes the API (the file's root for a source), and
/// `prefix` its dotted path with a trailing dot (empty for the root).
pub(super) fn literal_secret(
    api: &DeTable<'_>,
    prefix: &str,
) -> Option<(std::ops::Range<usize>, String, String)> {
    use toml::de::DeValue;
    let table = |name: &str| match api.get(name).map(toml::Spanned::get_ref) {
        Some(DeValue::Table(table)) => Some(table),
        _ => None,
    };
    // A table where a secret source goes is judged by the one rule for secret sources.
    let source_problem = |value: &DeValue<'_>| {
        let DeValue::Table(table) = value else {
            return None;
        };
        let shape: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .map(|(key, value)| {
                let value = match value.get_ref() {
                    DeValue::String(text) => serde_json::Value::from(text.as_ref()),
                    _ => serde_json::Value::from(0),
                };
                (key.get_ref().to_string(), value)
            })
            .collect();
        crate::secret::SecretSource::deserialize(serde_json::Value::Object(shape))
            .err()
            .map(|err| err.to_string())
    };
    if let Some(auth) = table("auth") {
        for (key, value) in auth.iter() {
            let key = key.get_ref().as_ref();
            if let Some(problem) = SECRET_FIELDS
                .contains(&key)
                .then(|| source_problem(value.get_ref()))
                .flatten()
            {
                return Some((value.span(), format!("{prefix}auth.{key}"), problem));
            }
            if SECRET_FIELDS.contains(&key) && !matches!(value.get_ref(), DeValue::Table(_)) {
                return Some((
                    value.span(),
                    format!("{prefix}auth.{key}"),
                    format!(
                        "a secret cannot be written into a source file (the value is not \
                         shown); {}",
                        crate::secret::SECRET_FORMS
                    ),
                ));
            }
        }
    }
    if let Some(headers) = table("headers") {
        for (name, value) in headers.iter() {
            let name = name.get_ref().as_ref();
            let problem = match value.get_ref() {
                DeValue::Table(_) => match source_problem(value.get_ref()) {
                    Some(problem) => problem,
                    None => continue,
                },
                DeValue::String(_) if !looks_like_credential(name) => continue,
                DeValue::String(_) => literal_credential_problem(name),
                _ => format!(
                    "a header's value is a string, or a secret source ({}); what is written \
                     there is neither (it is not shown)",
                    crate::secret::SECRET_FORMS
                ),
            };
            return Some((value.span(), format!("{prefix}headers.{name}"), problem));
        }
    }
    None
}
