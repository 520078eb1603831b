//! `sync.backfill`: the stream's full history on a run of its own.

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_runner::{Context, Error};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::traverse::Keeps;
use super::{Sync, SyncInput, SyncReport, state};

/// What the launch step stored: where to start, or (builds before backfills resumed)
/// the launch instant, for a run under way across an upgrade, which starts over.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Launched {
    Resume(Option<state::Resume>),
    At(DateTime<Utc>),
}

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
    let launched: Launched = ctx
        .transaction("launch", |tx| async move {
            let mut conn = tx.conn().await?;
            let launch = (Utc::now() - skew).to_rfc3339_opts(SecondsFormat::Micros, true);
            let resume = state::launch_backfill(&mut conn, &sync.key(), &launch, run).await?;
            Ok(Launched::Resume(resume))
        })
        .await?;
    let resume = match launched {
        Launched::Resume(resume) => resume,
        Launched::At(_) => None,
    };
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

#[cfg(test)]
mod tests {
    use super::Launched;

    #[test]
    fn a_launch_stored_before_backfills_resumed_starts_over() {
        let old: Launched = serde_json::from_str(r#""2026-01-02T00:00:00Z""#).unwrap();
        assert!(matches!(old, Launched::At(_)));
        let fresh: Launched = serde_json::from_str("null").unwrap();
        assert!(matches!(fresh, Launched::Resume(None)));
    }
}
