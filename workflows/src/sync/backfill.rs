//! `sync.backfill`: the stream's full history on a run of its own.

use cairn_connectors::paginate::PageCursor;
use cairn_runner::{Context, Error};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{Sync, SyncInput, SyncReport, state};

/// Moves the stream's watermark to this launch (so incremental runs start at once and
/// cover what changes from now on), then fetches and lands the whole history through
/// the same upsert.
pub async fn backfill(ctx: Context, input: SyncInput) -> Result<SyncReport, Error> {
    let sync = Sync::open(&ctx, &input).await?;
    let sync = &sync;
    let skew = chrono::Duration::seconds(input.clock_skew_secs as i64);
    let launched_at: DateTime<Utc> = ctx
        .transaction("launch", |tx| async move {
            let mut conn = tx.conn().await?;
            let now = Utc::now();
            let launch = (now - skew).to_rfc3339_opts(SecondsFormat::Micros, true);
            state::launch_backfill(&mut conn, &sync.key(), &launch).await?;
            Ok(now)
        })
        .await?;
    tracing::info!(stream = %input.stream, %launched_at, "backfill launched");
    sync.traverse(&ctx, PageCursor::start(), None).await
}
