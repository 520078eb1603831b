//! `sync.incremental`: changed records since the stream's watermark.

use cairn_connectors::paginate::PageCursor;
use cairn_runner::{Context, Error};
use chrono::{DateTime, Utc};

use super::{Sync, SyncInput, SyncReport, state};

/// Loads the watermark, then fetches and lands every page of records changed since it
/// (inclusively, so records sharing the boundary instant are never skipped), and moves
/// the watermark with the last page to `min(highest seen + 1 s, start − clock skew)`,
/// never backwards: a boundary safely in the past is not read again, and changes made
/// while the run paged are read by the next run.
pub async fn incremental(ctx: Context, input: SyncInput) -> Result<SyncReport, Error> {
    let sync = Sync::open(&ctx, &input).await?;
    let (watermark, started_at): (Option<String>, DateTime<Utc>) = ctx
        .step("load watermark", || async {
            let mut conn = ctx.pool().acquire().await?;
            let watermark = state::watermark(&mut conn, &sync.key()).await?;
            Ok((watermark, Utc::now()))
        })
        .await?;
    let start = match &watermark {
        Some(watermark) => PageCursor::since(watermark.clone()),
        None => PageCursor::start(),
    };
    let plan = state::WatermarkPlan {
        cursor_type: sync.spec.cursor_type,
        old: watermark,
        started_at,
        skew: chrono::Duration::seconds(input.clock_skew_secs as i64),
    };
    sync.traverse(&ctx, start, Some(plan)).await
}
