//! Landing a page: the one-statement upsert and the quarantine insert.
//!
//! A page travels as few parameters: the landing records as one JSON array of the
//! vendor's own texts (`$1`, parsed once into `jsonb`: it becomes `_raw`, every number
//! with the digits the vendor sent), `_synced_at` (`$2`), the primary keys
//! (`$3`, `text[]`) and cursor instants (`$4`, `timestamptz[]`), then one parameter per
//! typed column: a `timestamptz[]` of its values for timestamp columns (sent in binary,
//! so the server parses no timestamp text), otherwise the field's name, which the
//! statement uses with `->>` / `->`; `$5` is how far the vendor's clock may lag ours. `ROWS FROM` zips the arrays with the records.
//!
//! Values were checked against their column types before (see `classify`), so no cast
//! can fail halfway through a page; vendor names appear in the statement only as
//! columns quoted by [`quote_ident`] and are otherwise bound as parameters.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};

use cairn_runner::seal::{Kept, QUARANTINED_RECORDS, Sealer};
use sha2::{Digest, Sha256};

use super::classify::{Drift, Landing, Quarantined};
use super::error::WarehouseError;
use super::ident::quote_ident;
use super::schema::{Field, Shape};
use super::types::{ColumnType, timestamp};
use crate::record::{Record, Unreadable};

/// The upsert for a table of this shape. A row is rewritten only when the incoming
/// version is not older by cursor and differs from the stored one (or the row was
/// marked deleted), so re-applying a page writes nothing. A stored cursor is trusted no
/// further than the time its row was synced, less how far the vendor's clock may lag
/// ours (`$5`, seconds): a row that once landed with a cursor in the future still takes
/// the vendor's later correction, even one stamped in the same second.
pub(crate) fn upsert_sql(
    table: &str,
    pk_column: &str,
    fields: &[Field],
) -> Result<String, WarehouseError> {
    let mut columns =
        format!(r#"{pk_column}, "_raw", "_synced_at", "_source_updated_at", "_deleted_at""#);
    let mut select = String::from("x.k, x.r, $2, x.u, NULL");
    let mut rows = String::from(
        "jsonb_array_elements($1::jsonb), unnest($3::text[]), unnest($4::timestamptz[])",
    );
    let mut aliases = String::from("r, k, u");
    let mut updates = String::from(
        r#""_raw" = EXCLUDED."_raw", "_synced_at" = EXCLUDED."_synced_at", "_source_updated_at" = EXCLUDED."_source_updated_at", "_deleted_at" = NULL"#,
    );
    for (i, (field, ty)) in fields
        .iter()
        .filter_map(|f| f.ty.map(|ty| (f, ty)))
        .enumerate()
    {
        let column = quote_ident(&field.column)?;
        let param = i + 6;
        // Writing into a String cannot fail.
        let _ = write!(columns, ", {column}");
        let _ = match ty {
            ColumnType::Timestamptz => {
                let _ = write!(rows, ", unnest(${param}::timestamptz[])");
                let _ = write!(aliases, ", t{i}");
                write!(select, ", x.t{i}")
            }
            ColumnType::Text => write!(select, ", x.r ->> ${param}::text"),
            ColumnType::Bigint | ColumnType::Numeric | ColumnType::Boolean => {
                write!(select, ", (x.r ->> ${param}::text)::{ty}")
            }
            // JSON null is SQL NULL in every column, jsonb ones included.
            ColumnType::Object | ColumnType::Array | ColumnType::Jsonb => {
                write!(select, ", NULLIF(x.r -> ${param}::text, 'null')")
            }
        };
        let _ = write!(updates, ", {column} = EXCLUDED.{column}");
    }
    Ok(format!(
        "INSERT INTO {table} AS t ({columns})
         SELECT {select} FROM ROWS FROM ({rows}) AS x({aliases})
         ON CONFLICT ({pk_column}) DO UPDATE SET {updates}
         WHERE (t.\"_source_updated_at\" IS NULL OR EXCLUDED.\"_source_updated_at\" IS NULL
                OR EXCLUDED.\"_source_updated_at\"
                   >= least(t.\"_source_updated_at\",
                            t.\"_synced_at\" - make_interval(secs => $5::float8)))
           AND (t.\"_raw\" IS DISTINCT FROM EXCLUDED.\"_raw\" OR t.\"_deleted_at\" IS NOT NULL)"
    ))
}

/// Runs the upsert for the landing records of a page; returns the rows written.
pub(crate) async fn upsert(
    conn: &mut PgConnection,
    (stream, clock_lag_secs): (&str, u64),
    shape: &Shape,
    records: &[Record],
    land: &[Landing],
    synced_at: DateTime<Utc>,
) -> Result<u64, WarehouseError> {
    let size = land
        .iter()
        .map(|l| l.record(records).raw().len() + 1)
        .sum::<usize>()
        + 2;
    let mut page = String::with_capacity(size);
    page.push('[');
    for (n, landing) in land.iter().enumerate() {
        if n > 0 {
            page.push(',');
        }
        page.push_str(landing.record(records).raw());
    }
    page.push(']');
    let keys: Vec<&str> = land.iter().map(|l| l.key.as_str()).collect();
    let cursors: Vec<Option<DateTime<Utc>>> = land.iter().map(|l| l.cursor).collect();

    let mut query = sqlx::query(AssertSqlSafe(std::sync::Arc::clone(&shape.upsert_sql)))
        .bind(page)
        .bind(synced_at)
        .bind(keys)
        .bind(cursors)
        .bind(clock_lag_secs as f64);
    for (field, ty) in shape.typed() {
        query = match ty {
            ColumnType::Timestamptz => {
                let values: Vec<Option<DateTime<Utc>>> = land
                    .iter()
                    .map(|l| match l.record(records).value().get(&field.name) {
                        Some(Value::String(s)) => timestamp(s),
                        _ => None,
                    })
                    .collect();
                query.bind(values)
            }
            _ => query.bind(field.name.as_str()),
        };
    }
    let done = query
        .execute(conn)
        .await
        .map_err(WarehouseError::db(stream, "upserting a page"))?;
    Ok(done.rows_affected())
}

/// The longest reason stored: reasons are indexed with the record id, and a btree
/// entry over about 2.7 kB would fail the whole page.
const MAX_REASON_BYTES: usize = 1000;

/// The drifts of a record as one reason, the later ones counted rather than listed
/// once it gets long.
fn reason(drifts: &[Drift]) -> String {
    let mut reason = String::new();
    for (i, drift) in drifts.iter().enumerate() {
        if i > 0 && reason.len() + drift.detail.len() > MAX_REASON_BYTES {
            let _ = write!(reason, "; and {} more", drifts.len() - i);
            break;
        }
        if i > 0 {
            reason.push_str("; ");
        }
        reason.push_str(&drift.detail);
    }
    reason
}

/// Drops the quarantined versions of records that have now landed: whatever kept them
/// out is behind them.
pub(crate) async fn clear_quarantine(
    conn: &mut PgConnection,
    schema: &str,
    stream: &str,
    land: &[Landing],
) -> Result<(), WarehouseError> {
    let keys: Vec<&str> = land.iter().map(|l| l.key.as_str()).collect();
    sqlx::query(
        "DELETE FROM cairn.quarantine
          WHERE schema_name = $1 AND stream = $2 AND record_key = ANY($3::text[])",
    )
    .bind(schema)
    .bind(stream)
    .bind(&keys)
    .execute(conn)
    .await
    .map_err(WarehouseError::db(stream, "clearing records that landed"))?;
    Ok(())
}

/// One record set aside: what the quarantine stores of it.
pub(crate) struct SetAside {
    /// The record's primary key, when it has a usable one.
    pub(crate) id: Option<String>,
    /// `invalid_record`, `type_change`, ...
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
    /// The record's JSON text as the vendor sent it (or, for one that could not be
    /// read, a JSON string holding the start of it).
    pub(crate) body: String,
    /// What identifies it: its key, or else a hash of its whole text.
    pub(crate) record_key: String,
}

impl SetAside {
    /// A record of the page quarantined by classification.
    pub(crate) fn quarantined(records: &[Record], q: &Quarantined) -> Self {
        let body = records[q.index].raw().to_owned();
        Self {
            record_key: q.key.clone().unwrap_or_else(|| content_key(&body)),
            id: q.key.clone(),
            kind: q.drifts.first().map_or("invalid_record", |d| d.kind),
            reason: reason(&q.drifts),
            body,
        }
    }

    /// A record of the page that could not be read at all.
    pub(crate) fn unreadable(unreadable: &Unreadable) -> Self {
        Self {
            id: None,
            kind: "invalid_record",
            reason: unreadable.reason.clone(),
            body: Value::String(unreadable.text.clone()).to_string(),
            record_key: format!("sha256:{}", unreadable.digest),
        }
    }
}

/// The identity of a record without a usable key: a hash of its text.
fn content_key(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut key = String::with_capacity(7 + 64);
    key.push_str("sha256:");
    for byte in digest {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// Stores records set aside, one row per source, stream, record and reason holding the
/// latest version: a record met again (on every sync, say) is counted in `times`, not
/// stored again.
pub(crate) async fn quarantine(
    conn: &mut PgConnection,
    (source, schema): (&str, &str),
    stream: &str,
    set_aside: &[SetAside],
    (synced_at, sealer): (DateTime<Utc>, &Sealer),
) -> Result<(), WarehouseError> {
    // One statement cannot update a row twice: the last of a repeated record wins.
    let mut unique: Vec<&SetAside> = Vec::with_capacity(set_aside.len());
    let mut at: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for item in set_aside {
        match at.get(&(item.record_key.as_str(), item.reason.as_str())) {
            Some(&slot) => unique[slot] = item,
            None => {
                at.insert((&item.record_key, &item.reason), unique.len());
                unique.push(item);
            }
        }
    }
    let column = |f: fn(&SetAside) -> &str| unique.iter().map(|s| f(s)).collect::<Vec<&str>>();
    let ids: Vec<Option<&str>> = unique.iter().map(|s| s.id.as_deref()).collect();
    let stored = unique
        .iter()
        .map(|s| sealer.store(&QUARANTINED_RECORDS, &s.body))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| WarehouseError::Keys {
            stream: stream.to_owned(),
            source: err,
        })?;
    let plain: Vec<Option<&str>> = stored.iter().map(Kept::plain).collect();
    let sealed: Vec<Option<&[u8]>> = stored.iter().map(Kept::sealed).collect();
    sqlx::query(
        "INSERT INTO cairn.quarantine
                (schema_name, stream, record_id, kind, reason, record, record_sealed, synced_at,
                 source, record_key)
         SELECT $1, $2, i, k, r, b::json, bs, $7, $8, rk
           FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $9::text[], $10::bytea[])
                AS u(i, k, r, b, rk, bs)
         ON CONFLICT (schema_name, stream, record_key, reason) DO UPDATE
            SET record = EXCLUDED.record, record_sealed = EXCLUDED.record_sealed,
                kind = EXCLUDED.kind, synced_at = EXCLUDED.synced_at,
                source = EXCLUDED.source, last_seen = now(), times = quarantine.times + 1",
    )
    .bind(schema)
    .bind(stream)
    .bind(&ids)
    .bind(column(|s| s.kind))
    .bind(column(|s| &s.reason))
    .bind(&plain)
    .bind(synced_at)
    .bind(source)
    .bind(column(|s| &s.record_key))
    .bind(&sealed)
    .execute(conn)
    .await
    .map_err(WarehouseError::db(stream, "quarantining records"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Drift, reason};

    #[test]
    fn long_reasons_count_their_tail() {
        let drifts: Vec<Drift> = (0..100)
            .map(|i| Drift {
                kind: "removed_field",
                detail: format!("removed field \"field_number_{i}\""),
            })
            .collect();
        let text = reason(&drifts);
        assert!(text.len() <= 1100, "{}", text.len());
        assert!(text.starts_with("removed field \"field_number_0\"; removed field"));
        assert!(text.ends_with(" more"), "{text}");
        assert_eq!(reason(&drifts[..1]), "removed field \"field_number_0\"");
    }
}
