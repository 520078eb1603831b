//! The one statement that creates runs, for every way a run starts: a client's start,
//! a schedule's fire and a workflow's child.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use crate::RunId;
use crate::store::WAKEUP_CHANNEL;

/// A run to create.
pub(crate) struct NewRun<'a> {
    pub(crate) workflow: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) input: &'a Value,
    /// Creating twice with one key (per workflow) finds the first run instead.
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) priority: i32,
    pub(crate) concurrency_key: Option<&'a str>,
    /// The run that started it, and whether cancelling that one cancels it.
    pub(crate) parent: Option<(RunId, bool)>,
}

impl<'a> NewRun<'a> {
    /// A run of `workflow` with `input` on `queue`, nothing else set.
    pub(crate) fn new(workflow: &'a str, queue: &'a str, input: &'a Value) -> Self {
        Self {
            workflow,
            queue,
            input,
            idempotency_key: None,
            deadline: None,
            priority: 0,
            concurrency_key: None,
            parent: None,
        }
    }

    /// Creates the run and wakes the queue's workers, or finds the run its idempotency
    /// key already names: the id, and whether it was created now. `None` when a
    /// concurrent start with the same key committed between the insert and the look
    /// (asking again finds it).
    pub(crate) async fn insert(
        &self,
        conn: impl PgExecutor<'_>,
    ) -> Result<Option<(RunId, bool)>, sqlx::Error> {
        let (parent, cancel_with_parent) = match self.parent {
            Some((parent, cancel)) => (Some(parent), cancel),
            None => (None, true),
        };
        sqlx::query_as(
            "WITH ins AS (
                 INSERT INTO cairn.runs (id, workflow, queue, input, idempotency_key, deadline,
                                         priority, concurrency_key, parent_id,
                                         cancel_with_parent)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (workflow, idempotency_key) DO NOTHING
                 RETURNING id
             )
             SELECT ins.id, true FROM ins CROSS JOIN LATERAL (SELECT pg_notify($11, $3)) n
             UNION ALL
             SELECT id, false FROM cairn.runs
              WHERE workflow = $2 AND idempotency_key = $5
                AND NOT EXISTS (SELECT 1 FROM ins)",
        )
        .bind(RunId::new())
        .bind(self.workflow)
        .bind(self.queue)
        .bind(self.input)
        .bind(self.idempotency_key)
        .bind(self.deadline)
        .bind(self.priority)
        .bind(self.concurrency_key)
        .bind(parent)
        .bind(cancel_with_parent)
        .bind(WAKEUP_CHANNEL)
        .fetch_optional(conn)
        .await
    }
}
