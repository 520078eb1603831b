//! `ledger`: a chain of steps that writes one ledger row per step execution.
//!
//! Tests and benchmarks use it to count exactly what ran: a plain step's row is written
//! outside its checkpoint (so a crash between the two shows up as a second row), a
//! transactional step's row inside it (so it can never appear twice).

use std::time::Duration;

use cairn_runner::{Context, Error, Tx};
use serde::{Deserialize, Serialize};

/// The stable name this workflow is registered under.
pub const NAME: &str = "ledger";

/// What `ledger` takes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerInput {
    /// Steps in the chain.
    pub steps: u32,
    /// How long each step works before it returns, in milliseconds.
    pub step_ms: u64,
    /// Every n-th step (1-based) is transactional; 0 makes none transactional.
    pub transactional_every: u32,
    /// Whether steps write ledger rows (benchmarks of bare step overhead turn it off).
    pub record: bool,
}

impl Default for LedgerInput {
    fn default() -> Self {
        Self {
            steps: 10,
            step_ms: 0,
            transactional_every: 2,
            record: true,
        }
    }
}

/// What `ledger` returns.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct LedgerOutput {
    /// Steps completed.
    pub steps: u32,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS public.cairn_ledger (
    run_id      uuid        NOT NULL,
    step        integer     NOT NULL,
    kind        text        NOT NULL,
    executed_at timestamptz NOT NULL DEFAULT clock_timestamp()
)";

async fn prepare(tx: Tx) -> Result<(), Error> {
    let mut conn = tx.conn().await?;
    // Concurrent CREATE TABLE IF NOT EXISTS can collide; the lock serialises it.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cairn_ledger'))")
        .execute(&mut *conn)
        .await?;
    sqlx::query(CREATE).execute(&mut *conn).await?;
    Ok(())
}

async fn write_row<'c, E>(executor: E, ctx: &Context, step: u32, kind: &str) -> Result<(), Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query("INSERT INTO public.cairn_ledger (run_id, step, kind) VALUES ($1, $2, $3)")
        .bind(ctx.run_id().as_uuid())
        .bind(step as i32)
        .bind(kind)
        .execute(executor)
        .await?;
    Ok(())
}

/// A step's simulated work. No work means no timer at all: even a zero sleep waits
/// for the runtime's next timer tick, about a millisecond.
async fn pause(work: Duration) {
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
}

/// The workflow.
pub async fn ledger(ctx: Context, input: LedgerInput) -> Result<LedgerOutput, Error> {
    if input.record {
        ctx.transaction("prepare ledger", prepare).await?;
    }
    let work = Duration::from_millis(input.step_ms);
    for step in 1..=input.steps {
        let transactional = input.transactional_every > 0 && step % input.transactional_every == 0;
        if transactional {
            let ctx = &ctx;
            ctx.transaction(format!("tx {step}"), |tx| async move {
                if input.record {
                    let mut conn = tx.conn().await?;
                    write_row(&mut *conn, ctx, step, "transaction").await?;
                }
                pause(work).await;
                Ok(step)
            })
            .await?;
        } else {
            ctx.step(format!("step {step}"), || async {
                if input.record {
                    write_row(ctx.pool(), &ctx, step, "step").await?;
                }
                pause(work).await;
                Ok(step)
            })
            .await?;
        }
    }
    Ok(LedgerOutput { steps: input.steps })
}
