//! A stream's incremental state in `cairn.sync_cursors`.

use cairn_connectors::paginate::PageCursor;
use cairn_connectors::source::parse_instant;
use cairn_connectors::warehouse::{NewAlert, Warehouse, raise_alerts, resolve_alerts};
use cairn_connectors::watermark::CursorType;
use cairn_runner::{Error, RunId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// The alert kind of a stream whose backfill has not completed.
pub(crate) const INCOMPLETE_HISTORY: &str = "incomplete_history";
/// The alert kind of a stream whose new columns are being filled on older rows.
pub(crate) const NEW_COLUMNS: &str = "new_columns";

/// Which stream's state: a source's stream landing in one schema's table.
#[derive(Debug, Clone)]
pub(crate) struct StreamKey {
    pub(crate) source: String,
    pub(crate) schema: String,
    pub(crate) stream: String,
}

/// The watermark the next incremental run starts from, if any.
pub(crate) async fn watermark(
    conn: &mut PgConnection,
    key: &StreamKey,
) -> Result<Option<String>, Error> {
    let found: Option<Option<String>> = sqlx::query_scalar(
        "SELECT watermark FROM cairn.sync_cursors
          WHERE source = $1 AND schema_name = $2 AND stream = $3",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .fetch_optional(conn)
    .await?;
    Ok(found.flatten())
}

/// Records a finished traversal with its last page: the highest marker it saw
/// (`pending`), the watermark the next run starts from (`promote`) and the records it
/// fetched. Written once per traversal, so concurrent page landings never queue on
/// this row.
pub(crate) async fn record_traversal(
    conn: &mut PgConnection,
    key: &StreamKey,
    pending: Option<&str>,
    promote: Option<&str>,
    records: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cairn.sync_cursors
                (source, schema_name, stream, pending_watermark, watermark, records)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (source, schema_name, stream) DO UPDATE
            SET pending_watermark = coalesce($4, cairn.sync_cursors.pending_watermark),
                watermark = coalesce($5, cairn.sync_cursors.watermark),
                records = cairn.sync_cursors.records + $6,
                updated_at = now()",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .bind(pending)
    .bind(promote)
    .bind(records)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a stream's history stands: whether a full read has completed since the last
/// backfill was launched, and, while not, what is known of the backfill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Whether every record from before the watermark is known to have been read.
    pub complete: bool,
    /// When the last backfill was launched.
    pub launched_at: Option<DateTime<Utc>>,
    /// When a full read last completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The backfill under way, or the last one if it failed or was cancelled.
    pub run: Option<RunId>,
    /// That run's status (`running`, `failed`, `cancelled`, ...).
    pub run_status: Option<String>,
    /// Pages and records the backfill has landed so far.
    pub landed: Option<Resume>,
    /// The vendor's total for the stream, as the backfill last saw it.
    pub total: Option<i64>,
}

impl History {
    /// Why the history is incomplete, and what to do, for reports and alerts; `None`
    /// when it is complete.
    pub fn problem(&self, stream: &str) -> Option<String> {
        if self.complete {
            return None;
        }
        let run = self
            .run
            .map(|run| format!("backfill run {run}"))
            .unwrap_or_else(|| "the backfill".to_owned());
        let state = match self.run_status.as_deref() {
            Some("failed") => "failed",
            Some("cancelled") => "was cancelled",
            Some(_) => "has not finished yet",
            None => "never finished",
        };
        Some(self.explain(stream, &format!("{run} {state}")))
    }

    /// The message of a backfill `run` failing with `why`.
    pub fn failed(&self, stream: &str, run: RunId, why: &str) -> String {
        self.explain(stream, &format!("backfill run {run} failed ({why})"))
    }

    fn explain(&self, stream: &str, what: &str) -> String {
        let reached = self
            .landed
            .as_ref()
            .map(|r| format!(" after {} records in {} pages", r.records, r.page))
            .unwrap_or_default();
        format!(
            "stream {stream:?} is incomplete: {what}{reached}, so records from before its \
             launch may be missing; incremental syncs go on meanwhile. Run `cairn sync \
             <source> --stream {stream} --mode backfill` to resume it"
        )
    }
}

/// Where a backfill resumes: the first page not known to have landed, and how much came
/// before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// Pages fetched before it.
    pub page: u64,
    /// Records fetched before it.
    pub records: u64,
    /// The cursor to fetch it with.
    pub cursor: PageCursor,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    backfill_launched_at: Option<DateTime<Utc>>,
    backfill_completed_at: Option<DateTime<Utc>>,
    backfill_run: Option<RunId>,
    run_status: Option<String>,
    backfill_resume: Option<sqlx::types::Json<Resume>>,
    backfill_total: Option<i64>,
}

/// The stream's history as the database says.
pub(crate) async fn history(conn: &mut PgConnection, key: &StreamKey) -> Result<History, Error> {
    let row: Option<HistoryRow> = sqlx::query_as(
        "SELECT c.backfill_launched_at, c.backfill_completed_at, c.backfill_run,
                r.status AS run_status, c.backfill_resume, c.backfill_total
           FROM cairn.sync_cursors c LEFT JOIN cairn.runs r ON r.id = c.backfill_run
          WHERE c.source = $1 AND c.schema_name = $2 AND c.stream = $3",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        // Never synced: nothing is known to be missing yet.
        None => History {
            complete: true,
            ..History::default()
        },
        Some(row) => History {
            complete: match (row.backfill_launched_at, row.backfill_completed_at) {
                (Some(launched), Some(completed)) => completed >= launched,
                (Some(_), None) => false,
                (None, _) => true,
            },
            launched_at: row.backfill_launched_at,
            completed_at: row.backfill_completed_at,
            run: row.backfill_run,
            run_status: row.run_status,
            landed: row.backfill_resume.map(|r| r.0),
            total: row.backfill_total,
        },
    })
}

/// Starts a backfill for `run`: a new one moves the watermark to `launch` (incremental
/// runs cover what changes from there); one of a stream whose last backfill did not
/// complete carries on from where that one's landed batches reach, without moving the
/// watermark again. Returns where to start.
pub(crate) async fn launch_backfill(
    conn: &mut PgConnection,
    key: &StreamKey,
    launch: &str,
    run: RunId,
) -> Result<Option<Resume>, Error> {
    let current = history(conn, key).await?;
    if !current.complete {
        sqlx::query(
            "UPDATE cairn.sync_cursors SET backfill_run = $4, updated_at = now()
              WHERE source = $1 AND schema_name = $2 AND stream = $3",
        )
        .bind(&key.source)
        .bind(&key.schema)
        .bind(&key.stream)
        .bind(run)
        .execute(conn)
        .await?;
        return Ok(current.landed);
    }
    sqlx::query(
        "INSERT INTO cairn.sync_cursors
                (source, schema_name, stream, watermark, backfill_launched_at, backfill_run)
         VALUES ($1, $2, $3, $4, now(), $5)
         ON CONFLICT (source, schema_name, stream) DO UPDATE
            SET watermark = $4, backfill_launched_at = now(), backfill_run = $5,
                backfill_resume = NULL, updated_at = now()",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .bind(launch)
    .bind(run)
    .execute(conn)
    .await?;
    Ok(None)
}

/// Records how far a backfill's landed batches reach; never moves it back (landings
/// commit in any order, and each passes a point all before it had reached).
pub(crate) async fn backfill_reached(
    conn: &mut PgConnection,
    key: &StreamKey,
    resume: &Resume,
    total: Option<u64>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE cairn.sync_cursors
            SET backfill_resume = $4, backfill_total = coalesce($5, backfill_total),
                updated_at = now()
          WHERE source = $1 AND schema_name = $2 AND stream = $3
            AND (backfill_resume IS NULL OR (backfill_resume->>'page')::bigint < $6)",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .bind(sqlx::types::Json(resume))
    .bind(total.map(|t| t as i64))
    .bind(resume.page as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// A full read of the stream completed: its history is whole. Resolves the alerts that
/// said it was not.
pub(crate) async fn history_complete(
    conn: &mut PgConnection,
    key: &StreamKey,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cairn.sync_cursors (source, schema_name, stream, backfill_completed_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (source, schema_name, stream) DO UPDATE
            SET backfill_completed_at = now(), backfill_resume = NULL, updated_at = now()",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .execute(&mut *conn)
    .await?;
    resolve_alerts(conn, INCOMPLETE_HISTORY, &key.source, &key.stream).await?;
    Ok(())
}

/// A column fill ended: resolves the alerts that said rows were being filled.
pub(crate) async fn columns_filled(conn: &mut PgConnection, key: &StreamKey) -> Result<(), Error> {
    resolve_alerts(conn, NEW_COLUMNS, &key.source, &key.stream).await?;
    Ok(())
}

/// Rows of the stream's table synced before `at` (none when it has no table).
pub(crate) async fn rows_synced_before(
    pool: &sqlx::PgPool,
    warehouse: &Warehouse,
    key: &StreamKey,
    at: DateTime<Utc>,
) -> Result<i64, Error> {
    let mut conn = pool.acquire().await?;
    Ok(warehouse
        .count_rows_synced_before(&mut conn, &key.stream, at)
        .await?)
}

/// Raises (or repeats) the alert that the stream's history is incomplete.
pub(crate) async fn alert_incomplete(
    conn: &mut PgConnection,
    key: &StreamKey,
    message: &str,
) -> Result<(), Error> {
    let alert = NewAlert {
        kind: INCOMPLETE_HISTORY.to_owned(),
        source: key.source.clone(),
        stream: key.stream.clone(),
        detail: "the backfill has not completed".to_owned(),
        message: message.to_owned(),
    };
    raise_alerts(conn, &[alert]).await?;
    Ok(())
}

/// How an incremental traversal moves the watermark when it ends.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkPlan {
    /// What the cursor field holds.
    pub(crate) cursor_type: CursorType,
    /// The watermark the traversal started from.
    pub(crate) old: Option<String>,
    /// When the traversal started, on our clock.
    pub(crate) started_at: DateTime<Utc>,
    /// How far the vendor's clock may lag ours.
    pub(crate) skew: chrono::Duration,
}

impl WatermarkPlan {
    /// The watermark for the next run, given the highest marker the traversal saw.
    ///
    /// For instants: `min(seen + 1 s, start − skew)`, never below the old watermark.
    /// A boundary instant older than the traversal's start cannot gain new records (they
    /// would have been seen), so it is excluded and its records are not read again; a
    /// recent one is re-read only until the skew window has passed. Changes made while
    /// the traversal paged, even behind its cursor, are after its start and so are read
    /// by the next run. Integer and string cursors move to the highest value seen,
    /// never backwards.
    pub(crate) fn next(&self, seen: Option<&str>) -> String {
        if self.cursor_type != CursorType::Timestamp {
            let next = self
                .cursor_type
                .later(self.old.clone(), seen.map(str::to_owned));
            return next.unwrap_or_default();
        }
        let horizon = self.started_at - self.skew;
        let candidate = match seen {
            Some(seen) => match parse_instant(seen) {
                Some(at) => (at + chrono::Duration::seconds(1)).min(horizon),
                None => return seen.to_owned(),
            },
            None => horizon,
        };
        match self.old.as_deref() {
            Some(old) => match parse_instant(old) {
                Some(old_at) => render(candidate.max(old_at)),
                None => old.to_owned(),
            },
            None => render(candidate),
        }
    }
}

fn render(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn plan(old: Option<&str>) -> WatermarkPlan {
        WatermarkPlan {
            cursor_type: CursorType::Timestamp,
            old: old.map(str::to_owned),
            started_at: Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
            skew: chrono::Duration::seconds(5),
        }
    }

    #[test]
    fn an_old_boundary_is_excluded_and_a_recent_one_kept_within_the_skew() {
        let p = plan(None);
        assert_eq!(
            p.next(Some("2026-01-01T10:00:00Z")),
            "2026-01-01T10:00:01.000000Z"
        );
        assert_eq!(
            p.next(Some("2026-01-01T11:59:58Z")),
            "2026-01-01T11:59:55.000000Z"
        );
    }

    #[test]
    fn the_watermark_never_moves_back_and_tokens_pass_through() {
        let p = plan(Some("2026-01-01T11:59:59Z"));
        assert_eq!(
            p.next(Some("2026-01-01T10:00:00Z")),
            "2026-01-01T11:59:59.000000Z"
        );
        assert_eq!(p.next(None), "2026-01-01T11:59:59.000000Z");
        assert_eq!(plan(None).next(None), "2026-01-01T11:59:55.000000Z");
        let tokens = |old: &str| WatermarkPlan {
            cursor_type: CursorType::Integer,
            ..plan(Some(old))
        };
        assert_eq!(tokens("9").next(Some("10")), "10");
        assert_eq!(tokens("10").next(Some("9")), "10", "never backwards");
        assert_eq!(tokens("10").next(None), "10");
    }
}
