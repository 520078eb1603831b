//! Workers announce themselves while they run (`cairn.workers`), so a client can tell
//! whether any live worker serves a workflow on a queue.

use std::time::Duration;

use sqlx::PgPool;
use tracing::warn;

use crate::{Client, EngineError};

/// Keeps this worker's row fresh every `every` until the future is dropped; rows of
/// workers unseen for a day are swept on the way.
pub(crate) async fn announce(
    pool: PgPool,
    id: String,
    queue: String,
    workflows: Vec<String>,
    every: Duration,
) {
    loop {
        let seen = sqlx::query(
            "WITH swept AS (
                 DELETE FROM cairn.workers WHERE seen_at < now() - interval '1 day'
             )
             INSERT INTO cairn.workers (id, queue, workflows) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET seen_at = now(), workflows = EXCLUDED.workflows",
        )
        .bind(&id)
        .bind(&queue)
        .bind(&workflows)
        .execute(&pool)
        .await;
        if let Err(err) = seen {
            warn!(error = %err, "could not announce this worker");
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes this worker's row when it stops cleanly.
pub(crate) async fn withdraw(pool: &PgPool, id: &str) {
    let gone = sqlx::query("DELETE FROM cairn.workers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await;
    if let Err(err) = gone {
        warn!(error = %err, "could not withdraw this worker's announcement");
    }
}

/// How often a worker announces itself, and how recently it must have to count as live.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

impl Client {
    /// How many live workers (seen in the last 15 seconds) serve `workflow` on `queue`:
    /// none means a run started there waits until one starts.
    pub async fn workers_serving(&self, queue: &str, workflow: &str) -> Result<i64, EngineError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM cairn.workers
              WHERE queue = $1 AND $2 = ANY(workflows)
                AND seen_at > now() - make_interval(secs => $3)",
        )
        .bind(queue)
        .bind(workflow)
        .bind(3.0 * ANNOUNCE_EVERY.as_secs_f64())
        .fetch_one(self.store().pool())
        .await
        .map_err(EngineError::db)
    }
}
