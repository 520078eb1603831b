//! Rewriting the `\u` escapes of JSON text that PostgreSQL (and serde) cannot hold, in
//! place, without parsing: a JSON text holds a backslash only inside a string, so a
//! linear scan that steps over each escape sees every `\u` escape there is.
//!
//! - An **unpaired UTF-16 surrogate** (`\ud83d` not followed by a low surrogate, or a
//!   low surrogate alone: an emoji cut in half) becomes `\ufffd`, U+FFFD REPLACEMENT
//!   CHARACTER, as a browser's decoder would write it.
//! - A **NUL** (`\u0000`), which neither `text` nor `jsonb` can store, becomes `\ufffd`
//!   when asked for (the warehouse asks, for fields other than a record's key and
//!   cursor).

/// What [`rewrite`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// Unpaired surrogate escapes replaced.
    pub surrogates: usize,
    /// NUL escapes replaced.
    pub nuls: usize,
}

impl Rewritten {
    /// Whether anything was replaced.
    pub fn any(self) -> bool {
        self.surrogates + self.nuls > 0
    }
}

const REPLACEMENT: &[u8] = b"\\ufffd";

/// The value of the four hex digits at `at`, if they are four hex digits.
fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

/// `text` with unpaired surrogate escapes (and, with `nuls`, NUL escapes) replaced by
/// `\ufffd`; `None` when there is nothing to replace, which is the common case and
/// costs one search for `\u`.
pub fn rewrite(text: &str, nuls: bool) -> Option<(String, Rewritten)> {
    if !text.contains("\\u") {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut done = Rewritten::default();
    // Bytes before `copied` are already in `out` (once anything was replaced).
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(&kind) = bytes.get(i + 1) else {
            break;
        };
        if kind != b'u' {
            i += 2;
            continue;
        }
        let Some(unit) = hex4(bytes, i + 2) else {
            i += 2;
            continue;
        };
        let replace = match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                    .then(|| hex4(bytes, i + 8))
                    .flatten();
                if low.is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) {
                    // A whole pair: step over both halves.
                    i += 12;
                    continue;
                }
                done.surrogates += 1;
                true
            }
            0xDC00..=0xDFFF => {
                done.surrogates += 1;
                true
            }
            0 if nuls => {
                done.nuls += 1;
                true
            }
            _ => false,
        };
        if replace {
            out.extend_from_slice(&bytes[copied..i]);
            out.extend_from_slice(REPLACEMENT);
            copied = i + 6;
        }
        i += 6;
    }
    if !done.any() {
        return None;
    }
    out.extend_from_slice(&bytes[copied..]);
    // Only ASCII escapes were swapped for ASCII escapes: still UTF-8.
    let out = String::from_utf8(out).ok()?;
    Some((out, done))
}

#[cfg(test)]
mod tests {
    use super::{Rewritten, rewrite};

    #[test]
    fn unpaired_surrogates_become_replacement_characters_and_pairs_stay() {
        let (text, done) = rewrite(r#"{"a":"x\ud83d","b":"\ud83d\ude00","c":"\ude00y"}"#, false)
            .expect("two to replace");
        assert_eq!(text, r#"{"a":"x\ufffd","b":"\ud83d\ude00","c":"\ufffdy"}"#);
        assert_eq!(
            done,
            Rewritten {
                surrogates: 2,
                nuls: 0
            }
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("now valid");
        assert_eq!(parsed["b"], "😀");
        // A high surrogate followed by another high one: both are alone.
        let (text, _) = rewrite(r#"["\ud83d\ud83d"]"#, false).unwrap();
        assert_eq!(text, r#"["\ufffd\ufffd"]"#);
    }

    #[test]
    fn nuls_only_when_asked_and_escaped_backslashes_are_not_escapes() {
        let text = r#"{"a":"x\u0000y","b":"\\u0000 is text","c":"\\\u0000"}"#;
        let (out, done) = rewrite(text, true).expect("two NULs");
        assert_eq!(
            out,
            r#"{"a":"x\ufffdy","b":"\\u0000 is text","c":"\\\ufffd"}"#
        );
        assert_eq!(done.nuls, 2);
        assert!(rewrite(text, false).is_none());
        assert!(rewrite(r#"{"plain":"text \u00e9"}"#, true).is_none());
        assert!(rewrite(r#"{"cut":"\u12"}"#, true).is_none());
    }
}
