//! What tools ask of the warehouse besides landing pages: which table holds a stream,
//! when a record last landed, and dropping a schema with its registry rows.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::WarehouseError;
use super::ident::quote_ident;

/// Where a stream lands: its table and the primary key field its rows are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTable {
    /// The table, in the stream's schema.
    pub table: String,
    /// The record field that identifies a row.
    pub primary_key: String,
}

fn failed(stream: &str, during: &'static str) -> impl FnOnce(sqlx::Error) -> WarehouseError {
    let stream = stream.to_owned();
    move |source| WarehouseError::Database {
        stream,
        during,
        source,
    }
}

/// The table stream `stream` of schema `schema` lands in, once a sync has created it.
pub async fn stream_table(
    conn: &mut PgConnection,
    schema: &str,
    stream: &str,
) -> Result<Option<StreamTable>, WarehouseError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT table_name, primary_key FROM cairn.warehouse_tables
          WHERE schema_name = $1 AND stream = $2",
    )
    .bind(schema)
    .bind(stream)
    .fetch_optional(conn)
    .await
    .map_err(failed(stream, "reading the schema registry"))?;
    Ok(row.map(|(table, primary_key)| StreamTable { table, primary_key }))
}

/// When the record with primary key value `id` last landed in `table` of `schema`.
pub async fn last_landed(
    conn: &mut PgConnection,
    schema: &str,
    table: &StreamTable,
    id: &str,
) -> Result<Option<DateTime<Utc>>, WarehouseError> {
    let qualified = format!("{}.{}", quote_ident(schema)?, quote_ident(&table.table)?);
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(\"_synced_at\") FROM {qualified} WHERE \"_raw\" ->> $1 = $2"
    )))
    .bind(&table.primary_key)
    .bind(id)
    .fetch_one(conn)
    .await
    .map_err(failed(&table.table, "reading when a record landed"))
}

/// Drops warehouse schema `schema` with every table in it, and their registry rows.
pub async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), WarehouseError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(failed(schema, "opening a transaction"))?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(schema)?
    )))
    .execute(&mut *tx)
    .await
    .map_err(failed(schema, "dropping the schema"))?;
    sqlx::query("DELETE FROM cairn.warehouse_tables WHERE schema_name = $1")
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(failed(schema, "forgetting the schema's tables"))?;
    tx.commit()
        .await
        .map_err(failed(schema, "committing the drop"))
}

/// Forgets the quarantined records last met before `before` (retention: a quarantined
/// record holds a vendor's data as it was sent). Returns how many there were; with
/// `dry_run`, only counts them.
pub async fn purge_quarantine(
    pool: &PgPool,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64, WarehouseError> {
    let sql = if dry_run {
        "SELECT count(*) FROM cairn.quarantine WHERE last_seen < $1"
    } else {
        "WITH gone AS (DELETE FROM cairn.quarantine WHERE last_seen < $1 RETURNING 1)
         SELECT count(*) FROM gone"
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(before)
        .fetch_one(pool)
        .await
        .map_err(failed("(every stream)", "purging the quarantine"))?;
    Ok(n.unsigned_abs())
}
