//! `sync.reconcile`: rows the vendor no longer has are marked deleted.

use cairn_connectors::paginate::{PageCursor, SeenIds, Traversal};
use cairn_connectors::source::IdPage;
use cairn_connectors::warehouse::{Checks, NewAlert, ReconcileOutcome, raise_alerts};
use cairn_runner::{Context, Error};
use serde::{Deserialize, Serialize};

use super::{Sync, SyncInput};

/// What a reconciliation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// The stream.
    pub stream: String,
    /// Ids the vendor listed.
    pub vendor_ids: u64,
    /// Pages of ids fetched.
    pub pages: u64,
    /// What applying the id set did (or why it was refused).
    pub outcome: ReconcileOutcome,
}

/// Fetches the vendor's whole id set page by page (each page checkpointed and staged),
/// then marks live rows absent from it deleted and undeletes rows that came back, in one
/// transaction. An id listing that fails, or a set far smaller than the warehouse,
/// deletes nothing: the run fails or refuses with an alert, and the warehouse is intact.
pub async fn reconcile(ctx: Context, input: SyncInput) -> Result<ReconcileReport, Error> {
    let sync = Sync::open(&ctx, &input).await?;
    let sync = &sync;
    let reconcile_id = ctx.run_id().to_string();
    let reconcile_id = &reconcile_id;
    let mut traversal = Traversal::new(PageCursor::start());
    let mut seen = SeenIds::default();
    while let Some(cursor) = traversal.cursor().cloned() {
        let number = traversal.pages();
        let fetched = ctx
            .step(format!("fetch ids {number}"), || async {
                Ok(sync.source.list_ids(&sync.stream.name, &cursor).await?)
            })
            .await;
        let ids: IdPage = match fetched {
            Ok(ids) => ids,
            Err(err) => {
                let message = format!(
                    "the id listing failed on page {number}, so no deletes were applied: {err}"
                );
                alert(&ctx, sync, &message).await?;
                return Err(err);
            }
        };
        seen.add(&ids.ids);
        let bounded = traversal
            .advance(&ids)
            .and_then(|()| match traversal.is_done() {
                true => Ok(()),
                false => seen.may_continue(&cursor.position, sync.stream.max_pages),
            });
        if let Err(err) = bounded {
            let message =
                format!("the id listing cannot be trusted, so no deletes were applied: {err}");
            alert(&ctx, sync, &message).await?;
            return Err(Error::permanent(err).with_category("pagination"));
        }
        let ids = &ids;
        ctx.transaction(format!("stage ids {number}"), |tx| async move {
            let mut conn = tx.conn().await?;
            sync.warehouse
                .stage_ids(&mut conn, &sync.stream.name, reconcile_id, &ids.ids)
                .await?;
            Ok(ids.ids.len())
        })
        .await?;
    }
    let checks = Checks {
        max_missing_share: input.max_missing_share,
        vendor_total: traversal.total(),
        force: input.force,
    };
    let outcome = ctx
        .transaction("apply deletes", |tx| async move {
            let mut conn = tx.conn().await?;
            Ok(sync
                .warehouse
                .apply_deletes(&mut conn, &sync.spec, reconcile_id, checks)
                .await?)
        })
        .await?;
    Ok(ReconcileReport {
        stream: sync.stream.name.clone(),
        vendor_ids: traversal.fetched(),
        pages: traversal.pages(),
        outcome,
    })
}

async fn alert(ctx: &Context, sync: &Sync, message: &str) -> Result<(), Error> {
    let alert = [NewAlert {
        kind: "incomplete_id_set".to_owned(),
        source: sync.source_name.clone(),
        stream: sync.stream.name.clone(),
        detail: "the id listing failed".to_owned(),
        message: message.to_owned(),
    }];
    let alert = &alert;
    ctx.transaction("alert incomplete id set", |tx| async move {
        let mut conn = tx.conn().await?;
        raise_alerts(&mut conn, alert).await?;
        Ok(())
    })
    .await
}
