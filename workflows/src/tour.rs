//! `tour`: a short workflow that shows every kind of step.
//!
//! It counts the runs in the database (a plain step), records a visit in a table
//! exactly once (a transactional step), sleeps on a durable timer, calls a flaky
//! service that fails its first attempts (and succeeds on retry), and summarises.

use std::time::Duration;

use cairn_runner::{Context, Error, RetryPolicy};
use serde::{Deserialize, Serialize};

/// The stable name this workflow is registered under.
pub const NAME: &str = "tour";

/// What `tour` takes. Every field has a default, so `{}` is a valid input.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TourInput {
    /// Who the tour is for.
    pub visitor: String,
    /// How long the durable sleep lasts, in milliseconds.
    pub sleep_ms: u64,
    /// How many attempts of the flaky step fail before one succeeds.
    pub flaky_failures: u32,
}

impl Default for TourInput {
    fn default() -> Self {
        Self {
            visitor: "world".to_owned(),
            sleep_ms: 2_000,
            flaky_failures: 2,
        }
    }
}

/// What `tour` returns.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TourOutput {
    /// A greeting for the visitor.
    pub greeting: String,
    /// Runs in the database when the tour started.
    pub runs_seen: i64,
    /// The visitor's visit number, counted exactly once per run.
    pub visit: i64,
    /// The attempt on which the flaky step succeeded.
    pub flaky_succeeded_on: u32,
}

/// The flaky service failed, as it does on its first attempts.
#[derive(Debug, thiserror::Error)]
#[error("the flaky service is unavailable (attempt {0})")]
struct Unavailable(u32);

/// The workflow.
pub async fn tour(ctx: Context, input: TourInput) -> Result<TourOutput, Error> {
    let greeting = ctx
        .step("greet", || async {
            Ok(format!("hello, {}", input.visitor))
        })
        .await?;

    let runs_seen: i64 = ctx
        .step("count runs", || async {
            Ok(sqlx::query_scalar("SELECT count(*) FROM cairn.runs")
                .fetch_one(ctx.pool())
                .await?)
        })
        .await?;

    let visitor = &input.visitor;
    let visit: i64 = ctx
        .transaction("record visit", |tx| async move {
            let mut conn = tx.conn().await?;
            // Concurrent CREATE TABLE IF NOT EXISTS can collide; the lock serialises it.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cairn_tour_visits'))")
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS public.cairn_tour_visits (
                     visitor text PRIMARY KEY, visits bigint NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            Ok(sqlx::query_scalar(
                "INSERT INTO public.cairn_tour_visits (visitor, visits) VALUES ($1, 1)
                 ON CONFLICT (visitor) DO UPDATE SET visits = cairn_tour_visits.visits + 1
                 RETURNING visits",
            )
            .bind(visitor)
            .fetch_one(&mut *conn)
            .await?)
        })
        .await?;

    ctx.sleep(Duration::from_millis(input.sleep_ms)).await;

    let mut attempt = 0;
    let flaky_succeeded_on = ctx
        .with_retry(
            RetryPolicy::attempts(input.flaky_failures + 3)
                .backoff(Duration::from_millis(100), Duration::from_millis(500)),
        )
        .step("call flaky service", || {
            attempt += 1;
            let attempt = attempt;
            async move {
                if attempt <= input.flaky_failures {
                    return Err(Error::transient(Unavailable(attempt)));
                }
                Ok(attempt)
            }
        })
        .await?;

    Ok(TourOutput {
        greeting,
        runs_seen,
        visit,
        flaky_succeeded_on,
    })
}
