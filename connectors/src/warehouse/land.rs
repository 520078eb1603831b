//! Landing a page: the one-statement upsert and the quarantine insert.
//!
//! The page travels as one `json` parameter holding an array of flat objects — the
//! primary key (`k`), the whole record (`r`, for `_raw`), its cursor instant (`u`) and
//! one short key per typed column (`c0`, `c1`, ...) — that `json_to_recordset` turns into
//! typed rows. Values are checked against their column types before (see
//! [`classify`](super::classify)) and timestamps are normalised, so no cast can fail
//! halfway through a page. Vendor names never appear in the statement except as columns
//! quoted by [`quote_ident`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};

use super::classify::{Landing, Quarantined};
use super::error::WarehouseError;
use super::ident::quote_ident;
use super::schema::{Field, Shape};
use super::types::{ColumnType, timestamp, timestamp_literal};

/// The upsert for a table of this shape. A row is rewritten only when the incoming
/// version is not older by cursor and differs from the stored one (or the row was
/// marked deleted), so re-applying a page writes nothing.
pub(crate) fn upsert_sql(
    table: &str,
    pk_column: &str,
    fields: &[Field],
) -> Result<String, WarehouseError> {
    let mut columns =
        format!(r#"{pk_column}, "_raw", "_synced_at", "_source_updated_at", "_deleted_at""#);
    let mut select = String::from("x.k, x.r, $2, x.u, NULL");
    let mut recordset = String::from("k text, r jsonb, u timestamptz");
    let mut updates = String::from(
        r#""_raw" = EXCLUDED."_raw", "_synced_at" = EXCLUDED."_synced_at", "_source_updated_at" = EXCLUDED."_source_updated_at", "_deleted_at" = NULL"#,
    );
    for (i, (field, ty)) in fields
        .iter()
        .filter_map(|f| f.ty.map(|ty| (f, ty)))
        .enumerate()
    {
        let column = quote_ident(&field.column)?;
        // Writing into a String cannot fail.
        let _ = write!(columns, ", {column}");
        let _ = write!(select, ", x.c{i}");
        let _ = write!(recordset, ", c{i} {ty}");
        let _ = write!(updates, ", {column} = EXCLUDED.{column}");
    }
    Ok(format!(
        "INSERT INTO {table} AS t ({columns})
         SELECT {select} FROM json_to_recordset($1::json) AS x({recordset})
         ON CONFLICT ({pk_column}) DO UPDATE SET {updates}
         WHERE (t.\"_source_updated_at\" IS NULL OR EXCLUDED.\"_source_updated_at\" IS NULL
                OR EXCLUDED.\"_source_updated_at\" >= t.\"_source_updated_at\")
           AND (t.\"_raw\" IS DISTINCT FROM EXCLUDED.\"_raw\" OR t.\"_deleted_at\" IS NOT NULL)"
    ))
}

/// The `json` parameter of the upsert for the landing records of a page.
pub(crate) fn encode_page(
    shape: &Shape,
    records: &[Value],
    land: &[Landing],
) -> Result<String, serde_json::Error> {
    let typed: Vec<(&str, ColumnType)> =
        shape.typed().map(|(f, ty)| (f.name.as_str(), ty)).collect();
    let keys: Vec<String> = (0..typed.len()).map(|i| format!(",\"c{i}\":")).collect();
    let mut out = Vec::with_capacity(land.len() * 512);
    out.push(b'[');
    for (n, landing) in land.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let record = &records[landing.index];
        out.extend_from_slice(b"{\"k\":");
        serde_json::to_writer(&mut out, &landing.key)?;
        out.extend_from_slice(b",\"r\":");
        serde_json::to_writer(&mut out, record)?;
        out.extend_from_slice(b",\"u\":");
        serde_json::to_writer(&mut out, &landing.cursor.map(timestamp_literal))?;
        for ((name, ty), key) in typed.iter().zip(&keys) {
            let value = record.get(name).unwrap_or(&Value::Null);
            out.extend_from_slice(key.as_bytes());
            match (ty, value) {
                (ColumnType::Timestamptz, Value::String(s)) => {
                    serde_json::to_writer(&mut out, &timestamp(s).map(timestamp_literal))?;
                }
                _ => serde_json::to_writer(&mut out, value)?,
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    // serde_json writes UTF-8 only, so the lossy path is never taken.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Runs the upsert; returns the number of rows written.
pub(crate) async fn upsert(
    conn: &mut PgConnection,
    stream: &str,
    shape: &Shape,
    page: String,
    synced_at: DateTime<Utc>,
) -> Result<u64, WarehouseError> {
    let done = sqlx::query(AssertSqlSafe(std::sync::Arc::clone(&shape.upsert_sql)))
        .bind(page)
        .bind(synced_at)
        .execute(conn)
        .await
        .map_err(WarehouseError::db(stream, "upserting a page"))?;
    Ok(done.rows_affected())
}

/// Stores quarantined records, one row per record id and reason holding the latest
/// version; re-quarantining an identical record changes nothing.
pub(crate) async fn quarantine(
    conn: &mut PgConnection,
    schema: &str,
    stream: &str,
    records: &[Value],
    quarantined: &[Quarantined],
    synced_at: DateTime<Utc>,
) -> Result<(), WarehouseError> {
    let mut ids = Vec::with_capacity(quarantined.len());
    let mut kinds = Vec::with_capacity(quarantined.len());
    let mut reasons = Vec::with_capacity(quarantined.len());
    let mut bodies = Vec::with_capacity(quarantined.len());
    for q in quarantined {
        ids.push(q.key.as_deref());
        kinds.push(q.drifts.first().map_or("invalid_record", |d| d.kind));
        let reason: Vec<&str> = q.drifts.iter().map(|d| d.detail.as_str()).collect();
        reasons.push(reason.join("; "));
        // `json` keeps escapes such as \u0000 as text, so every record can be stored.
        bodies.push(serde_json::to_string(&records[q.index]).map_err(|source| {
            WarehouseError::Encode {
                stream: stream.to_owned(),
                source,
            }
        })?);
    }
    sqlx::query(
        "INSERT INTO cairn.quarantine (schema_name, stream, record_id, kind, reason, record, synced_at)
         SELECT $1, $2, i, k, r, b::json, $7
           FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS u(i, k, r, b)
         ON CONFLICT (schema_name, stream, record_id, reason) DO UPDATE
            SET record = EXCLUDED.record, kind = EXCLUDED.kind,
                synced_at = EXCLUDED.synced_at, last_seen = now()
          WHERE quarantine.record::text IS DISTINCT FROM EXCLUDED.record::text",
    )
    .bind(schema)
    .bind(stream)
    .bind(&ids)
    .bind(&kinds)
    .bind(&reasons)
    .bind(&bodies)
    .bind(synced_at)
    .execute(conn)
    .await
    .map_err(WarehouseError::db(stream, "quarantining records"))?;
    Ok(())
}
