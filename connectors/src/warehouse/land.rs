//! Landing a page: the one-statement upsert and the quarantine insert.
//!
//! A page travels as few parameters: the landing records as one JSON array (`$1`,
//! parsed once into `jsonb`: it becomes `_raw`), `_synced_at` (`$2`), the primary keys
//! (`$3`, `text[]`) and cursor instants (`$4`, `timestamptz[]`), then one parameter per
//! typed column: a `timestamptz[]` of its values for timestamp columns (sent in binary,
//! so the server parses no timestamp text), otherwise the field's name, which the
//! statement uses with `->>` / `->`. `ROWS FROM` zips the arrays with the records.
//!
//! Values were checked against their column types before (see `classify`), so no cast
//! can fail halfway through a page; vendor names appear in the statement only as
//! columns quoted by [`quote_ident`] and are otherwise bound as parameters.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};

use super::classify::{Drift, Landing, Quarantined};
use super::error::WarehouseError;
use super::ident::quote_ident;
use super::schema::{Field, Shape};
use super::types::{ColumnType, timestamp};

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
        let param = i + 5;
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
                OR EXCLUDED.\"_source_updated_at\" >= t.\"_source_updated_at\")
           AND (t.\"_raw\" IS DISTINCT FROM EXCLUDED.\"_raw\" OR t.\"_deleted_at\" IS NOT NULL)"
    ))
}

/// Runs the upsert for the landing records of a page; returns the rows written.
pub(crate) async fn upsert(
    conn: &mut PgConnection,
    stream: &str,
    shape: &Shape,
    records: &[Value],
    land: &[Landing],
    synced_at: DateTime<Utc>,
) -> Result<u64, WarehouseError> {
    let mut page = Vec::with_capacity(land.len() * 512);
    page.push(b'[');
    for (n, landing) in land.iter().enumerate() {
        if n > 0 {
            page.push(b',');
        }
        write_in_jsonb_order(&mut page, &records[landing.index]).map_err(|source| {
            WarehouseError::Encode {
                stream: stream.to_owned(),
                source,
            }
        })?;
    }
    page.push(b']');
    // serde_json writes UTF-8 only, so the lossy path is never taken.
    let page = String::from_utf8(page)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let keys: Vec<&str> = land.iter().map(|l| l.key.as_str()).collect();
    let cursors: Vec<Option<DateTime<Utc>>> = land.iter().map(|l| l.cursor).collect();

    let mut query = sqlx::query(AssertSqlSafe(std::sync::Arc::clone(&shape.upsert_sql)))
        .bind(page)
        .bind(synced_at)
        .bind(keys)
        .bind(cursors);
    for (field, ty) in shape.typed() {
        query = match ty {
            ColumnType::Timestamptz => {
                let values: Vec<Option<DateTime<Utc>>> = land
                    .iter()
                    .map(|l| match records[l.index].get(&field.name) {
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

/// Writes `value` as JSON with object keys in the order `jsonb` keeps them (shorter
/// keys first, then by bytes). The server sorts every object's keys while parsing;
/// input already in that order takes its sort's presorted fast path, which is a
/// measurable share of landing a page.
fn write_in_jsonb_order(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| {
                (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes()))
            });
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_in_jsonb_order(out, value)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_in_jsonb_order(out, item)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
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

/// Stores quarantined records, one row per record id and reason holding the latest
/// version; re-quarantining an identical record changes nothing.
pub(crate) async fn quarantine(
    conn: &mut PgConnection,
    (source, schema): (&str, &str),
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
        reasons.push(reason(&q.drifts));
        // `json` keeps escapes such as \u0000 as text, so every record can be stored.
        bodies.push(serde_json::to_string(&records[q.index]).map_err(|source| {
            WarehouseError::Encode {
                stream: stream.to_owned(),
                source,
            }
        })?);
    }
    sqlx::query(
        "INSERT INTO cairn.quarantine (schema_name, stream, record_id, kind, reason, record, synced_at, source)
         SELECT $1, $2, i, k, r, b::json, $7, $8
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
    .bind(source)
    .execute(conn)
    .await
    .map_err(WarehouseError::db(stream, "quarantining records"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Drift, reason, write_in_jsonb_order};

    #[test]
    fn keys_are_written_shorter_first_then_by_bytes_at_every_depth() {
        let mut out = Vec::new();
        let value = json!({"bb": 1, "a": [{"zz": "x\"", "y": null}], "ab": {"c": true, "b": 2}});
        write_in_jsonb_order(&mut out, &value).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":[{"y":null,"zz":"x\""}],"ab":{"b":2,"c":true},"bb":1}"#
        );
    }

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
