//! Vendor names into SQL identifiers: the one quoting/validation function and the
//! deterministic mapping from field names to column names.
//!
//! Nothing vendor-supplied reaches SQL text except through [`quote_ident`]. Names it
//! would refuse (empty, longer than Postgres' 63-byte identifier limit, holding a NUL
//! character) or that clash with the warehouse's own columns are mapped by
//! [`column_name`] to a sanitised prefix and a hash of the whole name, so two names
//! that differ only beyond byte 63 still get different columns.

use sha2::{Digest, Sha256};

use super::error::WarehouseError;

/// The longest identifier Postgres keeps (`NAMEDATALEN - 1` bytes); longer ones are
/// silently truncated by the server, which would make distinct names collide.
pub const MAX_IDENT_BYTES: usize = 63;

/// The warehouse's own columns; a vendor field with one of these names is mapped away.
pub const RESERVED_COLUMNS: [&str; 4] = ["_raw", "_synced_at", "_source_updated_at", "_deleted_at"];

/// Bytes of the readable prefix kept in a mapped name, before `_` and the hash.
const PREFIX_BYTES: usize = 40;
/// Hex digits of the SHA-256 of the whole name appended to a mapped name.
const HASH_HEX: usize = 16;

/// Validates `name` as a Postgres identifier and returns it double-quoted, with inner
/// double quotes doubled. This is the only way a name reaches SQL text.
///
/// Refuses the empty name, names longer than [`MAX_IDENT_BYTES`] bytes (the server would
/// truncate them) and names holding a NUL character (Postgres cannot store one).
///
/// ```
/// use cairn_connectors::warehouse::quote_ident;
///
/// assert_eq!(quote_ident("x\"; DROP TABLE t; --").unwrap(), r#""x""; DROP TABLE t; --""#);
/// assert!(quote_ident("").is_err());
/// ```
pub fn quote_ident(name: &str) -> Result<String, WarehouseError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_IDENT_BYTES {
        Some("it is longer than 63 bytes")
    } else if name.contains('\0') {
        Some("it holds a NUL character")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(WarehouseError::InvalidIdentifier {
            name: name.escape_debug().to_string(),
            reason,
        });
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

/// Why `name` cannot be a source's warehouse schema, or `None` when it can.
///
/// A schema name is written unquoted in users' SQL, so it must be a plain lower-case
/// identifier: ASCII letters, digits and `_`, not starting with a digit, at most 63
/// bytes; and it must not be one of PostgreSQL's or cairn's own (`pg_*`, `public`,
/// `information_schema`, `cairn`).
pub fn schema_name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    let plain = match chars.next() {
        Some(first) => {
            (first.is_ascii_lowercase() || first == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }
        None => return Some("it is empty"),
    };
    if !plain {
        Some(
            "a schema name takes lower-case ASCII letters, digits and `_`, and does not start with a digit",
        )
    } else if name.len() > MAX_IDENT_BYTES {
        Some("it is longer than 63 bytes")
    } else if name.starts_with("pg_") || ["public", "information_schema", "cairn"].contains(&name) {
        Some("PostgreSQL or cairn uses that schema")
    } else {
        None
    }
}

/// The warehouse schema a source lands in by default, derived from its name: lower-cased,
/// with every character but ASCII letters, digits and `_` replaced by `_`
/// (`sandbox-stripe` → `sandbox_stripe`). The result still has to pass
/// [`schema_name_problem`]. The legacy migration `0010` derived the same name in SQL.
pub fn derived_schema_name(source: &str) -> String {
    source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The column (or table) name a vendor name maps to when it is free: the name itself
/// when [`quote_ident`] accepts it and it is not reserved, otherwise [`hashed_name`].
pub fn column_name(name: &str) -> String {
    if quote_ident(name).is_ok() && !RESERVED_COLUMNS.contains(&name) {
        name.to_owned()
    } else {
        hashed_name(name, 0)
    }
}

/// A name that is always a valid identifier and never reserved: up to 40 bytes of
/// `name` with anything but ASCII letters, digits and `_` replaced by `_`, then `_` and
/// 16 hex digits of the SHA-256 of `name` (and of `attempt`, when a mapped name is
/// already taken, so a collision still maps somewhere new and deterministic).
pub fn hashed_name(name: &str, attempt: u32) -> String {
    let mut prefix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(PREFIX_BYTES)
        .collect();
    // A leading underscore could read as one of the warehouse's own columns.
    if prefix.is_empty() || prefix.starts_with('_') {
        prefix.insert(0, 'f');
    }
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    if attempt > 0 {
        hasher.update(attempt.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut name = prefix;
    name.push('_');
    for byte in &digest[..HASH_HEX / 2] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// A vendor name for messages: quoted and escaped, and shortened when very long, so a
/// hostile name can neither break a log line nor flood it. A shortened name keeps the
/// hash of [`hashed_name`], so two long names never read the same.
pub fn display_name(name: &str) -> String {
    const KEEP: usize = 80;
    if name.chars().count() <= KEEP {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(KEEP).collect();
        let hashed = hashed_name(name, 0);
        let hash = hashed.rsplit('_').next().unwrap_or_default();
        format!("{head:?}… ({} bytes, #{hash})", name.len())
    }
}

#[cfg(test)]
mod tests {
    use super::{
        MAX_IDENT_BYTES, column_name, derived_schema_name, hashed_name, quote_ident,
        schema_name_problem,
    };

    #[test]
    fn source_names_derive_plain_schema_names_or_say_why_not() {
        assert_eq!(derived_schema_name("sandbox-Stripe"), "sandbox_stripe");
        assert_eq!(derived_schema_name("crm.eu 2"), "crm_eu_2");
        assert_eq!(derived_schema_name("Ünï"), "_n_");
        assert_eq!(schema_name_problem("sandbox_stripe"), None);
        assert_eq!(schema_name_problem("_x1"), None);
        for bad in [
            "",
            "1crm",
            "Crm",
            "a-b",
            "pg_crm",
            "public",
            "cairn",
            &"x".repeat(64),
        ] {
            assert!(schema_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn quoting_doubles_quotes_and_refuses_what_postgres_cannot_hold() {
        assert_eq!(quote_ident("email").unwrap(), "\"email\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
        assert!(quote_ident(&"x".repeat(64)).is_err());
        assert!(quote_ident(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn unusable_and_reserved_names_map_to_distinct_valid_identifiers() {
        let long_a = format!("{}a", "x".repeat(70));
        let long_b = format!("{}b", "x".repeat(70));
        let names = [
            column_name(""),
            column_name("a\0b"),
            column_name("_raw"),
            column_name(&long_a),
            column_name(&long_b),
            column_name(&"é".repeat(150)),
        ];
        for name in &names {
            assert!(quote_ident(name).is_ok(), "{name}");
            assert!(name.len() <= MAX_IDENT_BYTES);
            assert!(!name.starts_with('_'));
        }
        assert_ne!(names[3], names[4]);
        assert_eq!(column_name("email"), "email");
        assert_eq!(column_name(&long_a), names[3], "deterministic");
        assert_ne!(hashed_name("x", 0), hashed_name("x", 1));
    }
}
