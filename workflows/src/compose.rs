//! `compose`: a workflow made of every composition primitive, in the order an author
//! would meet them: recorded time and ids, branches side by side (one of them asleep),
//! child runs joined, a value published for callers, an event awaited with a timeout,
//! and a patch marker. Its effects are counted in a table, so a test that SIGKILLs the
//! worker anywhere can check that nothing checkpointed ran twice.

use std::time::Duration;

use cairn_runner::{Context, Error};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ledger::{self, LedgerInput, LedgerOutput};

/// The stable name this workflow is registered under.
pub const NAME: &str = "compose";

/// What `compose` takes. Every field has a default, so `{}` is a valid input.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeInput {
    /// Branches run side by side, each three transactional steps.
    pub branches: u32,
    /// How long the first branch sleeps, in milliseconds (durably).
    pub nap_ms: u64,
    /// Child `ledger` runs started and joined.
    pub children: u32,
    /// How long to wait for the `approval` event, in milliseconds.
    pub approval_timeout_ms: u64,
}

impl Default for ComposeInput {
    fn default() -> Self {
        Self {
            branches: 4,
            nap_ms: 1_000,
            children: 3,
            approval_timeout_ms: 60_000,
        }
    }
}

/// What `compose` returns.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ComposeOutput {
    /// When the run began, recorded once.
    pub started_at: DateTime<Utc>,
    /// An id drawn once for the run.
    pub token: uuid::Uuid,
    /// Each branch's sum of its step numbers, in branch order.
    pub branches: Vec<u64>,
    /// The steps each child completed, in child order.
    pub children: Vec<u32>,
    /// The `approval` event's data, or `None` when it timed out.
    pub approval: Option<String>,
}

/// The table each branch step writes its row to, inside its checkpoint's transaction.
const EFFECTS: &str = "CREATE TABLE IF NOT EXISTS public.cairn_compose_effects (
    run_id uuid NOT NULL,
    step   text NOT NULL
)";

/// The workflow.
pub async fn compose(ctx: Context, input: ComposeInput) -> Result<ComposeOutput, Error> {
    let started_at = ctx.now().await?;
    let token = ctx.uuid().await?;
    ctx.set_event("stage", &"branches").await?;
    let nap = Duration::from_millis(input.nap_ms);
    let run = ctx.run_id();
    let branches = ctx
        .parallel(4, 0..input.branches, |ctx, branch| async move {
            let mut sum = 0u64;
            for step in 0..3u64 {
                let name = format!("branch {branch} step {step}");
                let name = &name;
                sum += ctx
                    .transaction(name.clone(), |tx| async move {
                        let mut conn = tx.conn().await?;
                        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cairn_compose'))")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query(EFFECTS).execute(&mut *conn).await?;
                        sqlx::query(
                            "INSERT INTO public.cairn_compose_effects (run_id, step) VALUES ($1, $2)",
                        )
                        .bind(run)
                        .bind(name)
                        .execute(&mut *conn)
                        .await?;
                        Ok(step)
                    })
                    .await?;
                if branch == 0 && step == 0 {
                    ctx.sleep(nap).await;
                }
            }
            Ok::<_, Error>(sum)
        })
        .await
        .into_iter()
        .collect::<Result<Vec<u64>, Error>>()?;
    ctx.set_event("stage", &"children").await?;
    let child = LedgerInput {
        steps: 2,
        ..LedgerInput::default()
    };
    let child = &child;
    let children = ctx
        .parallel(4, 0..input.children, |ctx, _| async move {
            let done: LedgerOutput = ctx.child(ledger::NAME, child).await?;
            Ok::<_, Error>(done.steps)
        })
        .await
        .into_iter()
        .collect::<Result<Vec<u32>, Error>>()?;
    ctx.set_event("stage", &"awaiting approval").await?;
    let approval: Option<String> = ctx
        .wait_for_event("approval", Duration::from_millis(input.approval_timeout_ms))
        .await?;
    // A change made while runs were in flight: runs that passed here before it keep the
    // approver's name as sent.
    let approval = if ctx.patched("compose.trimmed-approval").await? {
        approval.map(|name| name.trim().to_owned())
    } else {
        approval
    };
    ctx.set_event("stage", &"done").await?;
    Ok(ComposeOutput {
        started_at,
        token,
        branches,
        children,
        approval,
    })
}
