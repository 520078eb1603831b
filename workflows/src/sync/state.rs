//! A stream's incremental state in `cairn.sync_cursors`.

use cairn_connectors::source::parse_instant;
use cairn_connectors::watermark::CursorType;
use cairn_runner::Error;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgConnection;

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

/// Moves the watermark to a backfill's launch: incremental runs cover everything from
/// there while the backfill covers everything before.
pub(crate) async fn launch_backfill(
    conn: &mut PgConnection,
    key: &StreamKey,
    launch: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cairn.sync_cursors (source, schema_name, stream, watermark, backfill_launched_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (source, schema_name, stream) DO UPDATE
            SET watermark = $4, backfill_launched_at = now(), updated_at = now()",
    )
    .bind(&key.source)
    .bind(&key.schema)
    .bind(&key.stream)
    .bind(launch)
    .execute(conn)
    .await?;
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
