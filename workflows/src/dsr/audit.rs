//! The audit trail of privacy requests: an append-only table (a trigger refuses updates,
//! deletes and truncation) whose entries are chained. Each entry's hash is a keyed hash
//! (HMAC-SHA-256 under the [`AuditKey`]) of the previous entry's hash and its own fields,
//! so an entry changed, removed or inserted by anyone without the key breaks the chain
//! at that entry, and [`verify`] names it. Identifiers (an e-mail address, a record's
//! id) appear only as keyed hashes ([`AuditKey::identifier`]).

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use sqlx::{PgConnection, Row};

/// The previous hash of the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The advisory lock that serializes appends, so the chain has one order.
const APPEND_LOCK: i64 = 0x0d5a_a0d1;

/// The key of the audit trail's hashes: 32 bytes, base64, from `CAIRN_AUDIT_KEY` or the
/// file `CAIRN_AUDIT_KEY_FILE` names. Kept apart from the encryption keys, because it
/// never rotates: the chain's old links are verified with it for as long as they exist.
#[derive(Clone)]
pub struct AuditKey(zeroize::Zeroizing<[u8; 32]>);

/// Why the audit key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    /// Neither variable is set.
    #[error(
        "privacy requests need the audit trail's key: set CAIRN_AUDIT_KEY (or \
         CAIRN_AUDIT_KEY_FILE) to 32 random bytes in base64, e.g. the output of `cairn keys new`, \
         and keep it: the trail is verified with it for as long as it exists"
    )]
    Missing,
    /// The key file cannot be read.
    #[error("cannot read the audit key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The value is not 32 bytes of base64 (the value itself is never repeated).
    #[error("the audit key ({from}) is not 32 bytes of base64")]
    Malformed {
        /// Where it came from.
        from: &'static str,
    },
}

impl AuditKey {
    /// A key from its base64 text.
    pub fn parse(text: &str, from: &'static str) -> Result<Self, AuditKeyError> {
        let bytes = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| AuditKeyError::Malformed { from })?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AuditKeyError::Malformed { from })?;
        Ok(Self(zeroize::Zeroizing::new(key)))
    }

    /// A random key for a trail that lives no longer than the process: a throwaway
    /// database's (a demo, a benchmark).
    pub fn ephemeral() -> Self {
        use rand::Rng as _;
        Self(zeroize::Zeroizing::new(rand::rng().random()))
    }

    /// The process's key, from `CAIRN_AUDIT_KEY` or `CAIRN_AUDIT_KEY_FILE`.
    pub fn from_env() -> Result<Self, AuditKeyError> {
        if let Ok(text) = std::env::var("CAIRN_AUDIT_KEY") {
            return Self::parse(&text, "CAIRN_AUDIT_KEY");
        }
        if let Ok(path) = std::env::var("CAIRN_AUDIT_KEY_FILE") {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|source| AuditKeyError::File { path, source })?,
            );
            return Self::parse(&text, "CAIRN_AUDIT_KEY_FILE");
        }
        Err(AuditKeyError::Missing)
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        hex(&mac.finalize().into_bytes())
    }

    /// The keyed hash of an identifier of kind `kind` (`email`, `id`, `record`): the same
    /// for the same value under the same key, and no use to anyone without the key.
    /// E-mail addresses are compared without regard to case, so they are hashed
    /// lower-cased and trimmed.
    pub fn identifier(&self, kind: &str, value: &str) -> String {
        let value = if kind == "email" {
            value.trim().to_lowercase()
        } else {
            value.to_owned()
        };
        format!(
            "{kind}:{}",
            &self.mac(&[b"identifier", kind.as_bytes(), value.as_bytes()])[..32]
        )
    }

    fn link(&self, prev: &str, entry: &Entry) -> String {
        let at = entry.at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let seq = entry.seq.to_string();
        let detail = canonical(&entry.detail);
        self.mac(&[
            b"link",
            prev.as_bytes(),
            seq.as_bytes(),
            entry.request_id.as_bytes(),
            at.as_bytes(),
            entry.action.as_bytes(),
            entry.source.as_bytes(),
            entry.outcome.as_bytes(),
            detail.as_bytes(),
        ])
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// JSON text with object keys sorted at every level: what is hashed does not depend on
/// the order a database hands keys back in.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|key| format!("{}:{}", Value::from(key.as_str()), canonical(&fields[key])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// One entry to append: what happened to which request, where, and how it ended.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The request.
    pub request: &'a str,
    /// What happened: `opened`, `phase`, `lookup`, `warehouse_search`, `erase`, ...
    pub action: &'a str,
    /// The source it happened at, or `""`.
    pub source: &'a str,
    /// How it ended: `ok`, `found`, `failed`, ...
    pub outcome: &'a str,
    /// Counts, names and keyed hashes: never a personal value.
    pub detail: Value,
}

struct Entry {
    seq: i64,
    request_id: String,
    at: DateTime<Utc>,
    action: String,
    source: String,
    outcome: String,
    detail: Value,
}

/// Appends `event` to the trail in `conn`'s transaction (it is part of the change it
/// records: both commit or neither), after every entry committed before it.
pub async fn append(
    conn: &mut PgConnection,
    key: &AuditKey,
    event: Event<'_>,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *conn)
        .await?;
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM cairn.dsr_audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
    };
    let now = Utc::now();
    let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let entry = Entry {
        seq,
        request_id: event.request.to_owned(),
        at,
        action: event.action.to_owned(),
        source: event.source.to_owned(),
        outcome: event.outcome.to_owned(),
        detail: event.detail,
    };
    let hash = key.link(&prev, &entry);
    sqlx::query(
        "INSERT INTO cairn.dsr_audit (seq, request_id, at, action, source, outcome, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(entry.seq)
    .bind(&entry.request_id)
    .bind(entry.at)
    .bind(&entry.action)
    .bind(&entry.source)
    .bind(&entry.outcome)
    .bind(&entry.detail)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    Ok(seq)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Entries checked.
    pub entries: i64,
    /// The first broken link, if any: its sequence number and what is wrong there.
    pub broken: Option<BrokenLink>,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokenLink {
    /// The sequence number of the first entry that does not verify.
    pub seq: i64,
    /// The request it belongs to.
    pub request_id: String,
    /// What is wrong.
    pub problem: String,
}

/// Recomputes the whole chain in order and names the first entry that does not verify:
/// one missing (its number skipped), one whose previous hash is not its predecessor's
/// hash, or one whose hash does not match its content.
pub async fn verify(conn: &mut PgConnection, key: &AuditKey) -> Result<Verification, sqlx::Error> {
    use futures::TryStreamExt as _;
    let mut rows = sqlx::query(
        "SELECT seq, request_id, at, action, source, outcome, detail, prev_hash, hash
         FROM cairn.dsr_audit ORDER BY seq",
    )
    .fetch(&mut *conn);
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut entries = 0;
    while let Some(row) = rows.try_next().await? {
        let entry = Entry {
            seq: row.try_get("seq")?,
            request_id: row.try_get("request_id")?,
            at: row.try_get("at")?,
            action: row.try_get("action")?,
            source: row.try_get("source")?,
            outcome: row.try_get("outcome")?,
            detail: row.try_get("detail")?,
        };
        let stored_prev: String = row.try_get("prev_hash")?;
        let stored_hash: String = row.try_get("hash")?;
        let broken = |problem: String| BrokenLink {
            seq: entry.seq,
            request_id: entry.request_id.clone(),
            problem,
        };
        let problem = if entry.seq != expected_seq {
            Some(format!(
                "entry {expected_seq} is missing: the chain goes from entry {} to entry {}",
                expected_seq - 1,
                entry.seq
            ))
        } else if stored_prev != prev {
            Some(format!(
                "its previous hash is not entry {}'s hash: an entry was removed, inserted or \
                 rewritten before it",
                entry.seq - 1
            ))
        } else if key.link(&prev, &entry) != stored_hash {
            Some(
                "its hash does not match its content: the entry was changed after it was \
                 written (or the trail is verified with another key)"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            return Ok(Verification {
                entries,
                broken: Some(broken(problem)),
            });
        }
        entries += 1;
        expected_seq += 1;
        prev = stored_hash;
    }
    Ok(Verification {
        entries,
        broken: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{AuditKey, canonical};

    fn key(byte: u8) -> AuditKey {
        use base64::Engine as _;
        AuditKey::parse(
            &base64::engine::general_purpose::STANDARD.encode([byte; 32]),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn identifiers_hash_the_same_address_alike_and_differ_by_key() {
        let k = key(1);
        assert_eq!(
            k.identifier("email", " Ada@Example.com"),
            k.identifier("email", "ada@example.com")
        );
        assert_ne!(
            k.identifier("email", "ada@example.com"),
            key(2).identifier("email", "ada@example.com")
        );
        assert!(!k.identifier("email", "ada@example.com").contains("ada"));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        assert_eq!(
            canonical(&json!({"b": 1, "a": {"d": [2, {"f": 1, "e": 0}], "c": "x"}})),
            r#"{"a":{"c":"x","d":[2,{"e":0,"f":1}]},"b":1}"#
        );
    }

    #[test]
    fn a_malformed_key_is_refused_without_repeating_it() {
        let error = AuditKey::parse("c2VjcmV0", "CAIRN_AUDIT_KEY").unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
    }
}
