//! Re-sealing under the current key, while workers run: each batch reads rows not yet
//! sealed with it (plain ones included), seals their values again and writes them back
//! only where the row has not changed meanwhile, so a concurrent write is never undone.

use sqlx::PgPool;

use super::{Column, Kept, KeyId, OpenError, Sealer};

/// How many values of a column one key sealed (`key: None` counts plain values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    /// The column.
    pub column: Column,
    /// The key, or `None` for values stored plain.
    pub key: Option<KeyId>,
    /// How many rows hold such a value.
    pub rows: i64,
}

/// What [`rotate`] did to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The column.
    pub column: Column,
    /// Values now sealed with the current key: plain ones, and those an earlier key
    /// sealed.
    pub rewritten: u64,
    /// Values that changed between their read and their write, left for the next pass
    /// (the writer of the change sealed them with its own key).
    pub changed: u64,
}

/// Why a rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No key to rotate to.
    #[error(
        "no encryption key is configured: set {} or {}",
        super::KEY_ENV,
        super::KEY_FILE_ENV
    )]
    NoKey,
    /// A value did not open.
    #[error("{0}")]
    Open(#[from] OpenError),
    /// The keys could not be read.
    #[error("{0}")]
    Keys(#[from] super::KeyError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// How many rows of each column each key sealed, and how many are plain.
pub async fn census(pool: &PgPool, columns: &[Column]) -> Result<Vec<KeyCount>, sqlx::Error> {
    let mut counts = Vec::new();
    for column in columns {
        let Column {
            table,
            plain,
            sealed,
            ..
        } = column;
        let rows: Vec<(Option<Vec<u8>>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT substring({sealed} FROM 1 FOR 5), count(*)
               FROM cairn.{table}
              WHERE {plain} IS NOT NULL OR {sealed} IS NOT NULL
              GROUP BY 1 ORDER BY 2 DESC"
        )))
        .fetch_all(pool)
        .await?;
        for (head, n) in rows {
            counts.push(KeyCount {
                column: *column,
                key: head.as_deref().and_then(KeyId::of_sealed),
                rows: n,
            });
        }
    }
    Ok(counts)
}

/// Seals every value of `columns` not sealed with the current key (plain values and
/// those of earlier keys), `batch` rows per statement, each batch its own transaction,
/// so that workers go on meanwhile. Values that change under a batch are counted in
/// [`Rotation::changed`] and tried again in a later pass (at most a few).
pub async fn rotate(
    pool: &PgPool,
    sealer: &Sealer,
    columns: &[Column],
    batch: u32,
) -> Result<Vec<Rotation>, RotateError> {
    let keys = sealer.keys()?.ok_or(RotateError::NoKey)?;
    let current = keys.current().bytes().to_vec();
    let mut done = Vec::new();
    for column in columns {
        let mut rotation = Rotation {
            column: *column,
            rewritten: 0,
            changed: 0,
        };
        for _pass in 0..3 {
            let changed = pass(pool, sealer, column, &current, batch, &mut rotation).await?;
            if changed == 0 {
                break;
            }
        }
        done.push(rotation);
    }
    Ok(done)
}

/// One pass over a column in `ctid` order; returns how many rows changed under it.
async fn pass(
    pool: &PgPool,
    sealer: &Sealer,
    column: &Column,
    current: &[u8],
    batch: u32,
    rotation: &mut Rotation,
) -> Result<u64, RotateError> {
    let Column {
        table,
        plain,
        sealed,
        ..
    } = column;
    let select = format!(
        "SELECT t.ctid::text AS at, t.{plain}::text, t.{sealed}
           FROM cairn.{table} t
          WHERE t.ctid > $1::text::tid
            AND (t.{plain} IS NOT NULL
                 OR (t.{sealed} IS NOT NULL AND substring(t.{sealed} FROM 2 FOR 4) <> $2))
          ORDER BY t.ctid LIMIT $3"
    );
    let update = format!(
        "UPDATE cairn.{table} t SET {sealed} = u.new, {plain} = NULL
           FROM unnest($1::text[]::tid[], $2::text[], $3::bytea[], $4::bytea[])
                AS u(at, old_plain, old_sealed, new)
          WHERE t.ctid = ANY($1::text[]::tid[]) AND t.ctid = u.at
            AND t.{plain}::text IS NOT DISTINCT FROM u.old_plain
            AND t.{sealed} IS NOT DISTINCT FROM u.old_sealed"
    );
    let mut after = "(0,0)".to_owned();
    let mut changed = 0;
    loop {
        let rows: Vec<(String, Option<String>, Option<Vec<u8>>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(select.as_str()))
                .bind(&after)
                .bind(current)
                .bind(i64::from(batch))
                .fetch_all(pool)
                .await?;
        let Some((last, _, _)) = rows.last() else {
            return Ok(changed);
        };
        after = last.clone();
        let mut at = Vec::with_capacity(rows.len());
        let mut olds_plain = Vec::with_capacity(rows.len());
        let mut olds_sealed = Vec::with_capacity(rows.len());
        let mut new = Vec::with_capacity(rows.len());
        for (ctid, text, old) in rows {
            let Some(value) = sealer.read(column, text.clone(), old.as_deref())? else {
                continue;
            };
            let Kept::Sealed(bytes) = sealer.store(column, &value)? else {
                return Err(RotateError::NoKey);
            };
            at.push(ctid);
            olds_plain.push(text);
            olds_sealed.push(old);
            new.push(bytes);
        }
        let written = sqlx::query(sqlx::AssertSqlSafe(update.as_str()))
            .bind(&at)
            .bind(&olds_plain)
            .bind(&olds_sealed)
            .bind(&new)
            .execute(pool)
            .await?
            .rows_affected();
        let missed = (at.len() as u64).saturating_sub(written);
        changed += missed;
        rotation.rewritten += written;
        rotation.changed += missed;
    }
}
