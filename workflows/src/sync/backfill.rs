//! `sync.backfill`: the stream's full history on a run of its own.

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_runner::{Context, Error};
use chrono::{SecondsFormat, Utc};

use super::traverse::Keeps;
use super::{Sync, SyncInput, SyncReport, state};

/// Moves the stream's watermark to this launch (so incremental runs start at once and
/// cover what changes from now on), then fetches and lands the whole history through
/// the same upsert. The stream's history is complete once the last page has landed.
///
/// A backfill of a stream whose last backfill failed or was cancelled carries on from
/// the first page that one had not landed (every landing records how far the landed
/// batches reach), without moving the watermark again. If this one fails, it raises an
/// `incomplete_history` alert on its way out.
pub async fn backfill(ctx: Context, input: SyncInput) -> Result<SyncReport, Error> {
    let sync = Sync::open(&ctx, &input).await?;
    let sync = &sync;
    let skew = chrono::Duration::seconds(input.clock_skew_secs as i64);
    let run = ctx.run_id();
    let resume: Option<state::Resume> = ctx
        .transaction("launch", |tx| async move {
            let mut conn = tx.conn().await?;
            let launch = (Utc::now() - skew).to_rfc3339_opts(SecondsFormat::Micros, true);
            state::launch_backfill(&mut conn, &sync.key(), &launch, run).await
        })
        .await?;
    let traversal = match &resume {
        Some(at) => {
            tracing::info!(stream = %input.stream, page = at.page, "backfill resumed");
            Traversal::resume(at.cursor.clone(), at.page, at.records)
        }
        None => {
            tracing::info!(stream = %input.stream, "backfill launched");
            Traversal::new(PageCursor::start())
        }
    };
    match sync.traverse(&ctx, traversal, Keeps::Backfill).await {
        Ok(report) => Ok(report),
        Err(err) => {
            let why = err.to_string();
            let why = &why;
            ctx.transaction("alert incomplete history", |tx| async move {
                let mut conn = tx.conn().await?;
                let key = sync.key();
                let history = state::history(&mut conn, &key).await?;
                let message = history.failed(&key.stream, run, why);
                state::alert_incomplete(&mut conn, &key, &message).await
            })
            .await?;
            Err(err)
        }
    }
}
