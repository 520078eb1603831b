//! The one redactor of the process: every secret cairn reads or receives (API keys,
//! client secrets, access tokens, passwords) is registered here when it comes into being,
//! and every channel that shows text to a person or stores it (errors, stored step and
//! run errors, dead letters, alerts, log lines, `--json` output) passes it through
//! [`redact`] on the way out. A vendor that echoes a token in an error body cannot get it
//! into a log or a table: the echo is masked wherever it ends up.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, RwLock};

use zeroize::Zeroizing;

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

/// Secrets shorter than this are not registered: masking every `abc` in every message
/// would hide more than it protects, and no real credential is that short.
pub const MIN_SECRET_LEN: usize = 4;

/// How many distinct secrets are kept: access tokens rotate, so a long-lived worker
/// keeps the newest ones (an old token that was revoked long ago leaks nothing).
const MAX_SECRETS: usize = 4096;

/// A registered form of a secret: shared by both lists, and wiped from memory when the
/// last of them lets it go.
type Form = Arc<Zeroizing<String>>;

/// The registered forms, longest first so a secret that contains another is masked
/// whole, and in the order they came (for evicting the oldest).
#[derive(Default)]
struct Registry {
    by_length: Vec<Form>,
    arrival: std::collections::VecDeque<Form>,
}

static SECRETS: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

/// Registers `secret` (and the forms it takes when echoed inside a URL or a JSON string)
/// so that [`redact`] masks it from now on, in this whole process. Each form is built
/// in a buffer sized for it up front (so no reallocation leaves a copy behind) and
/// wiped when it is evicted or found already known.
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut plain = Zeroizing::new(String::with_capacity(secret.len()));
    plain.push_str(secret);
    let forms = [plain, percent_encoded(secret), json_escaped(secret)];
    let mut registry = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if registry.by_length.iter().any(|known| ***known == *form) {
            continue;
        }
        let form: Form = Arc::new(form);
        let at = registry
            .by_length
            .partition_point(|known| known.len() >= form.len());
        registry.by_length.insert(at, Arc::clone(&form));
        registry.arrival.push_back(form);
        if registry.arrival.len() > MAX_SECRETS
            && let Some(oldest) = registry.arrival.pop_front()
        {
            registry
                .by_length
                .retain(|known| !Arc::ptr_eq(known, &oldest));
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`]. Borrows when there is
/// nothing to mask, which is nearly always.
pub fn redact(text: &str) -> Cow<'_, str> {
    let registry = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in &registry.by_length {
        let secret: &str = secret;
        if out.contains(secret) {
            out = Cow::Owned(out.replace(secret, MASK));
        }
    }
    out
}

/// A JSON value with every registered secret masked in its strings and its keys.
pub fn redact_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(redact(&text).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (redact(&key).into_owned(), redact_json(value)))
                .collect(),
        ),
        other => other,
    }
}

/// Percent-encoding as in a query string (unreserved characters kept).
fn percent_encoded(secret: &str) -> Zeroizing<String> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Zeroizing::new(String::with_capacity(secret.len() * 3));
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// The secret as it appears inside a JSON string literal (as `serde_json` writes it).
fn json_escaped(secret: &str) -> Zeroizing<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Zeroizing::new(String::with_capacity(secret.len() * 6));
    for c in secret.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let byte = u32::from(c) as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_in_every_form() {
        register("tok-Zq9/x+\"y");
        let text =
            r#"bad token tok-Zq9/x+"y, in a URL tok-Zq9%2Fx%2B%22y, in JSON "tok-Zq9/x+\"y""#;
        let masked = redact(text);
        assert!(!masked.contains("Zq9"), "{masked}");
        assert_eq!(masked.matches(MASK).count(), 3, "{masked}");
        assert_eq!(redact("nothing here"), Cow::Borrowed("nothing here"));
        register("abc");
        assert_eq!(redact("abc"), "abc", "too short to be a credential");
    }

    #[test]
    fn the_escaped_forms_are_what_serde_json_and_urls_write() {
        for secret in ["plain-token-1", "q\"uo\\te\n\t\u{1}\u{1f}é/+ ="] {
            let quoted = serde_json::Value::from(secret).to_string();
            assert_eq!(*json_escaped(secret), quoted[1..quoted.len() - 1]);
        }
        assert_eq!(*percent_encoded("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn a_secret_containing_another_is_masked_whole() {
        register("inner-secret-17");
        register("outer-inner-secret-17-tail");
        assert_eq!(
            redact("x outer-inner-secret-17-tail y"),
            format!("x {MASK} y")
        );
        let json = serde_json::json!({"inner-secret-17": ["inner-secret-17", 1]});
        assert_eq!(redact_json(json), serde_json::json!({ MASK: [MASK, 1] }));
    }
}
