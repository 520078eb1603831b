//! The sandbox's request signatures (`--auth signed`), in the style of vendors that
//! sign each request rather than send a fixed key.
//!
//! A request carries `X-Signature-Timestamp: <Unix seconds>` and `X-Signature:
//! <lower-case hex HMAC-SHA256>` of the text
//!
//! ```text
//! GET\n<path>\n<query>\n<timestamp>
//! ```
//!
//! under the signing key, where path and query are exactly as sent (percent-encoded,
//! the query without its `?`, empty when there is none). A timestamp more than
//! [`MAX_SKEW_SECS`] from the vendor's clock is refused, so a captured request cannot be
//! replayed later.

use ring::hmac;

/// The header holding the signature.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// The header holding the Unix second the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// How far a signature's timestamp may be from the vendor's clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The text a request's signature covers.
pub fn signed_text(method: &str, path: &str, query: &str, timestamp: i64) -> String {
    format!("{method}\n{path}\n{query}\n{timestamp}")
}

/// The signature of `text` under `key`, as lower-case hex.
pub fn sign(key: &[u8], text: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, text.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `signature` (hex) signs `text` under `key`, compared in constant time.
pub(crate) fn verify(key: &[u8], text: &str, signature: &str) -> bool {
    let Some(bytes) = unhex(signature) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, text.as_bytes(), &bytes).is_ok()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{sign, signed_text, verify};

    #[test]
    fn a_signature_verifies_only_for_its_key_and_text() {
        let text = signed_text("GET", "/rest/contacts", "limit=10", 1_767_225_600);
        let signature = sign(b"key", &text);
        assert_eq!(signature.len(), 64);
        assert!(verify(b"key", &text, &signature));
        assert!(!verify(b"other", &text, &signature));
        assert!(!verify(b"key", &text.replace("10", "11"), &signature));
        assert!(!verify(b"key", &text, "zz"));
        assert!(!verify(b"key", &text, "é"));
    }
}
