//! `sync.incremental`: changed records since the stream's watermark.

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_runner::{Context, Error};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::traverse::Keeps;
use super::{Sync, SyncInput, SyncReport, fill, state};

/// Where an incremental run starts: read once, in a checkpointed step.
#[derive(Serialize, Deserialize)]
#[serde(from = "Stored")]
struct Start {
    watermark: Option<String>,
    started_at: DateTime<Utc>,
    history: state::History,
}

/// A `Start` as stored, now or by builds before the history was read with it (a run
/// under way across an upgrade replays its checkpoint either way).
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Now {
        watermark: Option<String>,
        started_at: DateTime<Utc>,
        history: state::History,
    },
    Before(Option<String>, DateTime<Utc>),
}

impl From<Stored> for Start {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Now {
                watermark,
                started_at,
                history,
            } => Self {
                watermark,
                started_at,
                history,
            },
            // Nothing was known of the history then: it is not reported incomplete.
            Stored::Before(watermark, started_at) => Self {
                watermark,
                started_at,
                history: state::History {
                    complete: true,
                    ..state::History::default()
                },
            },
        }
    }
}

/// Loads the watermark, then fetches and lands every page of records changed since it
/// (inclusively, so records sharing the boundary instant are never skipped), and moves
/// the watermark with the last page to `min(highest seen + 1 s, start − clock skew)`,
/// never backwards: a boundary safely in the past is not read again, and changes made
/// while the run paged are read by the next run.
///
/// A run from no watermark reads everything, which completes the stream's history. While
/// a backfill has not completed, the run still lands what changed, but reports the
/// stream incomplete and raises an `incomplete_history` alert.
///
/// A run that added columns to a table holding rows synced before it starts a column
/// fill ([`fill`](super::fill())), so the new columns reach the old rows.
pub async fn incremental(ctx: Context, input: SyncInput) -> Result<SyncReport, Error> {
    let sync = Sync::open(&ctx, &input).await?;
    let start: Start = ctx
        .step("load watermark", || async {
            let mut conn = ctx.pool().acquire().await?;
            let key = sync.key();
            Ok(Start {
                watermark: state::watermark(&mut conn, &key).await?,
                started_at: Utc::now(),
                history: state::history(&mut conn, &key).await?,
            })
        })
        .await?;
    let cursor = match &start.watermark {
        Some(watermark) => PageCursor::since(watermark.clone()),
        None => PageCursor::start(),
    };
    let keeps = Keeps::Watermark {
        full_read: start.watermark.is_none(),
        incomplete: start.history.problem(&sync.stream.name),
        plan: state::WatermarkPlan {
            cursor_type: sync.spec.cursor_type,
            old: start.watermark,
            started_at: start.started_at,
            skew: chrono::Duration::seconds(input.clock_skew_secs as i64),
        },
    };
    let report = sync.traverse(&ctx, Traversal::new(cursor), keeps).await?;
    if !report.columns_added.is_empty() {
        let columns = &report.columns_added;
        let (ctx_ref, sync, input) = (&ctx, &sync, &input);
        ctx.step("start column fill", || async move {
            fill::start_fill(ctx_ref, sync, input, columns, start.started_at).await
        })
        .await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::Start;

    #[test]
    fn a_start_stored_before_the_history_was_kept_still_replays() {
        let old: Start = serde_json::from_str(r#"["2026-01-01T00:00:00Z","2026-01-02T00:00:00Z"]"#)
            .expect("the old form");
        assert_eq!(old.watermark.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert!(old.history.complete);
        let now = serde_json::to_string(&old).unwrap();
        let again: Start = serde_json::from_str(&now).expect("the new form");
        assert_eq!(again.started_at, old.started_at);
    }
}
