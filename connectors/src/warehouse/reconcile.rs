//! Delete reconciliation: the vendor's full id set is staged page by page in
//! `cairn.reconcile_ids`, then applied in one go — rows absent from it are marked
//! deleted (`_deleted_at`), rows present are undeleted. A set that looks incomplete
//! (far fewer ids than live rows) is refused with an alert unless forced, so a failed
//! or truncated listing never wipes the warehouse.

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgConnection};

use super::alerts::{NewAlert, raise_alerts};
use super::classify::MAX_KEY_BYTES;
use super::error::WarehouseError;
use super::schema::Shape;

/// What [`Warehouse::apply_deletes`](super::Warehouse::apply_deletes) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReconcileOutcome {
    /// The id set was applied and its staging removed.
    Applied {
        /// Distinct ids in the staged set.
        ids: u64,
        /// Live rows before applying.
        live: u64,
        /// Rows marked deleted.
        deleted: u64,
        /// Deleted rows that came back and were undeleted.
        undeleted: u64,
    },
    /// The id set looks incomplete: nothing was changed, an `incomplete_id_set` alert was
    /// raised, and the staged ids are kept so a forced apply can use them.
    Refused {
        /// Distinct ids in the staged set.
        ids: u64,
        /// Live rows in the warehouse.
        live: u64,
        /// The share of live rows allowed to be missing.
        max_missing_share: f64,
    },
}

/// Stages one page of ids with COPY. Ids holding a NUL character or longer than the
/// longest key stored are skipped: no row has them. An id staged twice (a listing that
/// repeats itself) counts once when the set is applied.
pub(crate) async fn stage(
    conn: &mut PgConnection,
    stream: &str,
    reconcile_id: &str,
    ids: &[String],
) -> Result<(), WarehouseError> {
    let db = |during| WarehouseError::db(stream, during);
    let prefix = format!("{}\t{}\t", copy_text(reconcile_id), copy_text(stream));
    let mut rows = String::with_capacity(ids.len() * (prefix.len() + 16));
    for id in ids {
        if id.contains('\0') || id.len() > MAX_KEY_BYTES {
            continue;
        }
        rows.push_str(&prefix);
        rows.push_str(&copy_text(id));
        rows.push('\n');
    }
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = conn
        .copy_in_raw("COPY cairn.reconcile_ids (reconcile_id, stream, id) FROM STDIN")
        .await
        .map_err(db("staging ids"))?;
    if let Err(err) = copy.send(rows.into_bytes()).await {
        // The connection must leave COPY mode before it can say anything else.
        let _ = copy.abort("staging failed").await;
        return Err(db("staging ids")(err));
    }
    copy.finish().await.map_err(db("staging ids"))?;
    Ok(())
}

/// `text` escaped for COPY's text format.
fn copy_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '\t', '\n', '\r']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The rules an id set is held to before it is applied.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// The share of live rows allowed to be missing from the set, in `[0, 1]`.
    pub max_missing_share: f64,
    /// The vendor's total for the listing, when it reports one: a set with fewer
    /// distinct ids is incomplete.
    pub vendor_total: Option<u64>,
    /// Apply even a set that looks incomplete.
    pub force: bool,
}

/// Applies a staged id set to the table of `shape` (`None`: the stream has no table).
///
/// Linear in the ids and the rows: the staging is analyzed first, so the anti-join that
/// finds the rows the vendor no longer has is a hash join, never a nested loop over an
/// estimate of one row. Keys compare under the database's default collation, the one
/// of the staged ids (the table's keys are byte-ordered; equality is the same either
/// way).
pub(crate) async fn apply(
    conn: &mut PgConnection,
    (source, stream): (&str, &str),
    shape: Option<&Shape>,
    reconcile_id: &str,
    checks: Checks,
) -> Result<ReconcileOutcome, WarehouseError> {
    let Checks {
        max_missing_share,
        vendor_total,
        force,
    } = checks;
    if !(0.0..=1.0).contains(&max_missing_share) {
        return Err(WarehouseError::InvalidShare(max_missing_share));
    }
    let db = |during| WarehouseError::db(stream, during);
    sqlx::query("ANALYZE cairn.reconcile_ids")
        .execute(&mut *conn)
        .await
        .map_err(db("analyzing staged ids"))?;
    let ids: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT DISTINCT id FROM cairn.reconcile_ids
                                WHERE reconcile_id = $1 AND stream = $2) d",
    )
    .bind(reconcile_id)
    .bind(stream)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("counting staged ids"))?;
    let ids = u64::try_from(ids).unwrap_or_default();
    if let Some(total) = vendor_total.filter(|total| ids < *total && !force) {
        let alert = NewAlert {
            kind: "incomplete_id_set".to_owned(),
            source: source.to_owned(),
            stream: stream.to_owned(),
            detail: "the id listing held fewer distinct ids than its total".to_owned(),
            message: format!(
                "reconciliation {reconcile_id:?} of stream {stream:?} refused: the id listing \
                 held {ids} distinct ids but reported a total of {total}; nothing was deleted \
                 — check the source, or apply with force"
            ),
        };
        raise_alerts(conn, &[alert]).await?;
        return Ok(ReconcileOutcome::Refused {
            ids,
            live: 0,
            max_missing_share,
        });
    }
    let (live, deleted, undeleted) = match shape {
        None => (0, 0, 0),
        Some(shape) => {
            let table = &shape.table;
            let pk = &shape.pk_column;
            let live: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE \"_deleted_at\" IS NULL"
            )))
            .fetch_one(&mut *conn)
            .await
            .map_err(db("counting live rows"))?;
            let live = u64::try_from(live).unwrap_or_default();
            let incomplete = (ids as f64) < (1.0 - max_missing_share) * live as f64;
            if incomplete && !force {
                let alert = NewAlert {
                    kind: "incomplete_id_set".to_owned(),
                    source: source.to_owned(),
                    stream: stream.to_owned(),
                    detail: "the vendor's id set is much smaller than the warehouse".to_owned(),
                    message: format!(
                        "reconciliation {reconcile_id:?} of stream {stream:?} refused: {ids} ids \
                         for {live} live rows (at most {:.1}% may be missing); nothing was \
                         deleted — check the source, or apply with force",
                        max_missing_share * 100.0
                    ),
                };
                raise_alerts(conn, &[alert]).await?;
                return Ok(ReconcileOutcome::Refused {
                    ids,
                    live,
                    max_missing_share,
                });
            }
            let deleted = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} AS t SET \"_deleted_at\" = now()
                  WHERE t.\"_deleted_at\" IS NULL AND NOT EXISTS (
                        SELECT 1 FROM cairn.reconcile_ids r
                         WHERE r.reconcile_id = $1 AND r.stream = $2
                           AND r.id = t.{pk} COLLATE \"default\")"
            )))
            .bind(reconcile_id)
            .bind(stream)
            .execute(&mut *conn)
            .await
            .map_err(db("marking rows deleted"))?
            .rows_affected();
            let undeleted = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} AS t SET \"_deleted_at\" = NULL
                  WHERE t.\"_deleted_at\" IS NOT NULL AND EXISTS (
                        SELECT 1 FROM cairn.reconcile_ids r
                         WHERE r.reconcile_id = $1 AND r.stream = $2
                           AND r.id = t.{pk} COLLATE \"default\")"
            )))
            .bind(reconcile_id)
            .bind(stream)
            .execute(&mut *conn)
            .await
            .map_err(db("undeleting rows"))?
            .rows_affected();
            (live, deleted, undeleted)
        }
    };
    sqlx::query("DELETE FROM cairn.reconcile_ids WHERE reconcile_id = $1 AND stream = $2")
        .bind(reconcile_id)
        .bind(stream)
        .execute(&mut *conn)
        .await
        .map_err(db("removing staged ids"))?;
    Ok(ReconcileOutcome::Applied {
        ids,
        live,
        deleted,
        undeleted,
    })
}
