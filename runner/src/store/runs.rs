//! What clients ask of runs: show, progress, status, cancel, and an end announced.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{FINISHED_CHANNEL, Store};
use crate::model::{RunDetail, RunStatus, RunSummary, SHOWN_OUTPUT_BYTES, StepRecord};
use crate::{EngineError, RunId};

impl Store {
    /// Marks the run as awaited, so that its end is announced on [`FINISHED_CHANNEL`].
    /// Call it after listening and before reading the status: a run that ends before the
    /// mark is seen ended by that read, and one that ends after it is announced.
    pub async fn await_end(&self, id: RunId) -> Result<(), EngineError> {
        sqlx::query("UPDATE cairn.runs SET awaited = true WHERE id = $1 AND NOT awaited")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(EngineError::db)?;
        Ok(())
    }

    /// The stored row of one step, if any (to settle a transaction whose commit
    /// outcome is unknown).
    pub async fn step(
        &self,
        run_id: RunId,
        position: i32,
    ) -> Result<Option<StepRecord>, sqlx::Error> {
        let step: Option<StepRecord> = sqlx::query_as(
            "SELECT position, branch, name, kind, status, output,
                    output_sealed AS sealed_output, attempts, throttled,
                    last_error, started_at, finished_at, duration_ms
               FROM cairn.steps WHERE run_id = $1 AND position = $2",
        )
        .bind(run_id)
        .bind(position)
        .fetch_optional(&self.pool)
        .await?;
        step.map(|mut step| {
            step.unseal(&self.sealer, false)
                .map(|()| step)
                .map_err(|err| sqlx::Error::Decode(Box::new(err)))
        })
        .transpose()
    }

    /// One run with its steps.
    pub async fn show(&self, id: RunId) -> Result<RunDetail, EngineError> {
        let run = sqlx::query_as::<_, RunRow>(
            "SELECT id, workflow, queue, status, idempotency_key, priority, concurrency_key,
                    wake_at, claims, created_at, finished_at, input, output, error, lease_owner, lease_expires_at,
                    cancel_requested, started_at, progress
               FROM cairn.runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(EngineError::db)?
        .ok_or(EngineError::RunNotFound(id))?;
        // `pg_column_size` reads a value's stored size from its header, without
        // fetching or decompressing it, so a large output costs nothing here.
        let mut steps: Vec<StepRecord> = sqlx::query_as(
            "SELECT position, branch, name, kind, status,
                    CASE WHEN pg_column_size(output) <= $2 THEN output END AS output,
                    CASE WHEN pg_column_size(output_sealed) <= $2 THEN output_sealed END
                        AS sealed_output,
                    coalesce(pg_column_size(output), pg_column_size(output_sealed))::bigint
                        AS output_stored_bytes,
                    attempts, throttled, last_error, started_at, finished_at, duration_ms
               FROM cairn.steps WHERE run_id = $1 ORDER BY position",
        )
        .bind(id)
        .bind(SHOWN_OUTPUT_BYTES)
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::db)?;
        for step in &mut steps {
            step.unseal(&self.sealer, false)?;
        }
        Ok(RunDetail {
            summary: run.summary,
            input: run.input,
            output: run.output,
            error: run.error,
            lease_owner: run.lease_owner,
            lease_expires_at: run.lease_expires_at,
            cancel_requested: run.cancel_requested,
            started_at: run.started_at,
            progress: run.progress,
            steps,
        })
    }

    /// Cancels a run: at once when no worker holds it, otherwise at its worker's next step
    /// boundary. Returns the status after the request.
    pub async fn cancel(&self, id: RunId) -> Result<RunStatus, EngineError> {
        let changed: Option<RunStatus> = sqlx::query_scalar(
            "WITH changed AS (
                 UPDATE cairn.runs r
                    SET cancel_requested = true,
                        status = CASE WHEN r.status = 'running' THEN 'running' ELSE 'cancelled' END,
                        finished_at = CASE WHEN r.status = 'running' THEN NULL ELSE now() END,
                        updated_at = now()
                  WHERE r.id = $1 AND r.status NOT IN ('completed', 'failed', 'cancelled')
                 RETURNING r.id, r.status
             )
             SELECT changed.status FROM changed
              CROSS JOIN LATERAL (
                  SELECT CASE WHEN changed.status = 'cancelled'
                              THEN pg_notify($2, changed.id::text) END
              ) n",
        )
        .bind(id)
        .bind(FINISHED_CHANNEL)
        .fetch_optional(&self.pool)
        .await
        .map_err(EngineError::db)?;
        match changed {
            Some(status) => Ok(status),
            None => self.status(id).await,
        }
    }

    /// A run's status and its last progress report: what watching a run needs, without
    /// its steps.
    pub async fn progress(&self, id: RunId) -> Result<(RunStatus, Option<Value>), EngineError> {
        sqlx::query_as("SELECT status, progress FROM cairn.runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(EngineError::db)?
            .ok_or(EngineError::RunNotFound(id))
    }

    /// The status of one run.
    pub async fn status(&self, id: RunId) -> Result<RunStatus, EngineError> {
        sqlx::query_scalar("SELECT status FROM cairn.runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(EngineError::db)?
            .ok_or(EngineError::RunNotFound(id))
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    #[sqlx(flatten)]
    summary: RunSummary,
    input: Value,
    output: Option<Value>,
    error: Option<Value>,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
    started_at: Option<DateTime<Utc>>,
    progress: Option<Value>,
}
