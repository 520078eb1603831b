//! Reading runs the way users look for them: by workflow, status, time, parent and
//! idempotency key, and any step's output in full.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{RunStatus, RunSummary};
use crate::seal::STEP_OUTPUTS;
use crate::{Client, EngineError, RunId};

/// Which runs [`Client::runs`] lists; every field left `None` matches all runs.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// Runs of this workflow.
    pub workflow: Option<String>,
    /// Runs in this status.
    pub status: Option<RunStatus>,
    /// Runs created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Runs created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Children of this run.
    pub parent: Option<RunId>,
    /// Runs started with this idempotency key.
    pub idempotency_key: Option<String>,
    /// Runs listed after this one (its creation instant and id) newest first: the next
    /// page of a listing that ended there.
    pub after: Option<(DateTime<Utc>, RunId)>,
    /// At most this many, newest first.
    pub limit: i64,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            workflow: None,
            status: None,
            created_after: None,
            created_before: None,
            parent: None,
            idempotency_key: None,
            after: None,
            limit: 100,
        }
    }
}

impl Client {
    /// The runs `filter` matches, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, EngineError> {
        sqlx::query_as(
            "SELECT id, workflow, queue, status, idempotency_key, priority, concurrency_key,
                    wake_at, claims, created_at, finished_at
               FROM cairn.runs
              WHERE ($1::text IS NULL OR workflow = $1)
                AND ($2::text IS NULL OR status = $2)
                AND ($3::timestamptz IS NULL OR created_at >= $3)
                AND ($4::timestamptz IS NULL OR created_at < $4)
                AND ($5::uuid IS NULL OR parent_id = $5)
                AND ($6::text IS NULL OR idempotency_key = $6)
                AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9))
              ORDER BY created_at DESC, id DESC
              LIMIT $7",
        )
        .bind(filter.workflow.as_deref())
        .bind(filter.status)
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(filter.parent)
        .bind(filter.idempotency_key.as_deref())
        .bind(filter.limit.max(0))
        .bind(filter.after.map(|(at, _)| at))
        .bind(filter.after.map(|(_, id)| id))
        .fetch_all(self.pool())
        .await
        .map_err(EngineError::db)
    }

    /// The run of `workflow` started with `idempotency_key`, if there is one; unlike a
    /// start with that key, it never creates one.
    pub async fn find(
        &self,
        workflow: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunSummary>, EngineError> {
        let filter = RunFilter {
            workflow: Some(workflow.to_owned()),
            idempotency_key: Some(idempotency_key.to_owned()),
            limit: 1,
            ..RunFilter::default()
        };
        Ok(self.runs(&filter).await?.into_iter().next())
    }

    /// The stored output of the step at `position` of `run`, whatever its size
    /// ([`Client::show`] leaves large ones out); `None` when the step has none (yet).
    pub async fn step_output(
        &self,
        run: RunId,
        position: i32,
    ) -> Result<Option<Value>, EngineError> {
        let row: Option<(Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT output::text, output_sealed FROM cairn.steps
              WHERE run_id = $1 AND position = $2",
        )
        .bind(run)
        .bind(position)
        .fetch_optional(self.pool())
        .await
        .map_err(EngineError::db)?;
        let text = match row {
            Some((plain, sealed)) => {
                self.store()
                    .sealer()
                    .read(&STEP_OUTPUTS, plain, sealed.as_deref())?
            }
            None => None,
        };
        match text {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| EngineError::Database(sqlx::Error::Decode(Box::new(source)))),
            None => Ok(None),
        }
    }
}
