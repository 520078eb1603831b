//! Claiming runs, holding their leases and handing them back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ClaimedRun, Lease, Store, WAKEUP_CHANNEL};
use crate::model::StepRecord;
use crate::{EngineError, RunId};

impl Store {
    /// Leases up to `limit` runnable runs of `workflows` on `queue` for `lease`: runs whose
    /// wake time has come and runs whose previous lease expired.
    #[cfg(test)]
    pub async fn claim(
        &self,
        queue: &str,
        workflows: &[String],
        limit: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, sqlx::Error> {
        self.claim_due(&Claim {
            queue,
            workflows,
            limit,
            owner,
            lease,
            clock_ahead_ms: 0,
            keys: &KeyRoom::default(),
            own_leases: false,
        })
        .await
    }

    /// When the earliest waiting run wakes; see [`crate::Client::next_wake`].
    pub(crate) async fn next_wake(&self) -> Result<Option<DateTime<Utc>>, EngineError> {
        Ok(sqlx::query_scalar(
            "SELECT min(wake_at) FROM cairn.runs
              WHERE status IN ('pending', 'sleeping', 'parked', 'retrying')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// [`Store::claim`] by a clock `clock_ahead_ms` ahead of the database's (see
    /// [`crate::Clock`]): wake times up to that far in the future have come.
    pub(crate) async fn claim_due(
        &self,
        &Claim {
            queue,
            workflows,
            limit,
            owner,
            lease,
            clock_ahead_ms,
            keys,
            own_leases,
        }: &Claim<'_>,
    ) -> Result<Vec<ClaimedRun>, sqlx::Error> {
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "WITH ready AS (
                 SELECT id, priority, wake_at, concurrency_key FROM cairn.runs
                  WHERE queue = $1 AND status IN ('pending', 'sleeping', 'parked', 'retrying')
                    AND wake_at <= now() + make_interval(secs => $6) AND workflow = ANY($2)
                    AND (concurrency_key IS NULL OR concurrency_key <> ALL($7))
                  ORDER BY priority DESC, wake_at LIMIT $3 * $11
                    FOR NO KEY UPDATE SKIP LOCKED
             ), lapsed AS (
                 SELECT id, priority, wake_at, concurrency_key FROM cairn.runs
                  WHERE queue = $1 AND status = 'running'
                    AND (lease_expires_at <= now() OR ($12 AND lease_owner = $4))
                    AND workflow = ANY($2)
                    AND (concurrency_key IS NULL OR concurrency_key <> ALL($7))
                  LIMIT $3
                    FOR NO KEY UPDATE SKIP LOCKED
             ), due AS (
                 SELECT * FROM ready UNION ALL SELECT * FROM lapsed
             ), ranked AS (
                 SELECT due.*, row_number() OVER (
                            PARTITION BY concurrency_key ORDER BY priority DESC, wake_at) AS nth
                   FROM due
             ), picked AS (
                 SELECT ranked.id FROM ranked
                   LEFT JOIN unnest($8::text[], $9::int[]) AS room(key, free)
                          ON room.key = ranked.concurrency_key
                  WHERE ranked.concurrency_key IS NULL
                     OR ranked.nth <= coalesce(room.free, $10, 2147483647)
                  ORDER BY priority DESC, wake_at
                  LIMIT $3
             )
             UPDATE cairn.runs r
                SET status = 'running', lease_epoch = r.lease_epoch + 1, lease_owner = $4,
                    lease_expires_at = now() + make_interval(secs => $5), claims = r.claims + 1,
                    started_at = coalesce(r.started_at, now()), updated_at = now()
               FROM picked WHERE r.id = picked.id
             RETURNING r.id, r.lease_epoch, r.workflow, r.input, r.cancel_requested, r.claims,
                       r.deadline, r.priority, r.concurrency_key",
        )
        .bind(queue)
        .bind(workflows)
        .bind(limit as i64)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(clock_ahead_ms as f64 / 1000.0)
        .bind(&keys.full)
        .bind(&keys.limited)
        .bind(&keys.free)
        .bind(keys.default_free)
        // Runs of a key at its limit are left out as they are picked: look further.
        .bind(if keys.is_unlimited() { 1i64 } else { 4 })
        .bind(own_leases)
        .fetch_all(&self.pool)
        .await?;

        let resumed: Vec<RunId> = rows
            .iter()
            .filter(|row| row.claims > 1)
            .map(|row| row.id)
            .collect();
        let mut history = if resumed.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as::<_, HistoryRow>(
                "SELECT run_id, position, branch, coalesce(seq, position) AS seq, name, kind,
                        status, NULL::json AS output,
                        output::text AS stored_output, output_sealed AS sealed_output,
                        attempts, throttled, last_error,
                        started_at, finished_at, duration_ms
                   FROM cairn.steps WHERE run_id = ANY($1) ORDER BY run_id, position",
            )
            .bind(&resumed)
            .fetch_all(&self.pool)
            .await?
        };
        for row in &mut history {
            row.step
                .unseal(&self.sealer, true)
                .map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
        }

        Ok(rows
            .into_iter()
            .map(|row| ClaimedRun {
                lease: Lease {
                    run_id: row.id,
                    epoch: row.lease_epoch,
                },
                history: history
                    .extract_if(.., |step| step.run_id == row.id)
                    .map(|step| step.step)
                    .collect(),
                workflow: row.workflow,
                input: row.input,
                cancel_requested: row.cancel_requested,
                deadline: row.deadline,
                priority: row.priority,
                concurrency_key: row.concurrency_key,
            })
            .collect())
    }

    /// Extends every lease in `leases` still held; returns the runs still held with
    /// whether cancellation was requested for each. A run missing from the answer was lost.
    /// The runs are locked in id order, like every statement that locks several runs.
    pub async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, sqlx::Error> {
        let ids: Vec<RunId> = leases.iter().map(|l| l.run_id).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
        sqlx::query_as(
            "WITH held AS (
                 SELECT r.id FROM cairn.runs r
                   JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, epoch) ON r.id = h.id
                  WHERE cairn.lease_held(r, h.epoch)
                  ORDER BY r.id
                    FOR NO KEY UPDATE OF r
             )
             UPDATE cairn.runs r SET lease_expires_at = now() + make_interval(secs => $3)
               FROM held WHERE r.id = held.id
             RETURNING r.id, r.cancel_requested",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await
    }

    /// Hands runs back to the queue at once (graceful shutdown), so another worker can
    /// take them without waiting for the leases to expire.
    pub async fn release(&self, leases: &[Lease], queue: &str) -> Result<u64, sqlx::Error> {
        let ids: Vec<RunId> = leases.iter().map(|l| l.run_id).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
        let released: Vec<RunId> = sqlx::query_scalar(
            "WITH held AS (
                 SELECT r.id FROM cairn.runs r
                   JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, epoch)
                     ON r.id = h.id AND r.lease_epoch = h.epoch
                  -- Not cairn.lease_held: a lease that lapsed is still this worker's to
                  -- hand back until another worker claims the run (moving its epoch).
                  WHERE r.status = 'running'
                  ORDER BY r.id
                    FOR NO KEY UPDATE OF r
             ), released AS (
                 UPDATE cairn.runs r
                    SET status = 'pending', wake_at = now(), lease_owner = NULL,
                        lease_expires_at = NULL, updated_at = now()
                   FROM held WHERE r.id = held.id
                 RETURNING r.id
             )
             SELECT id FROM released
              CROSS JOIN LATERAL (SELECT pg_notify($3, $4)) n",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(WAKEUP_CHANNEL)
        .bind(queue)
        .fetch_all(&self.pool)
        .await?;
        Ok(released.len() as u64)
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: RunId,
    lease_epoch: i64,
    workflow: String,
    input: Value,
    cancel_requested: bool,
    claims: i32,
    deadline: Option<DateTime<Utc>>,
    priority: i32,
    concurrency_key: Option<String>,
}

/// What a worker asks for when it claims runs; see [`Store::claim_due`].
pub(crate) struct Claim<'a> {
    pub(crate) queue: &'a str,
    pub(crate) workflows: &'a [String],
    pub(crate) limit: usize,
    pub(crate) owner: &'a str,
    pub(crate) lease: Duration,
    /// How far the worker's clock is ahead of the database's.
    pub(crate) clock_ahead_ms: i64,
    pub(crate) keys: &'a KeyRoom,
    /// Also the runs leased to `owner` whatever their lease: the first claim of a
    /// worker that holds a lasting identity, taking back what it held before it
    /// restarted (see [`crate::identity`]).
    pub(crate) own_leases: bool,
}

/// How many more runs of each concurrency key a worker may take: keys with no room,
/// keys with some (and how much), and the room of keys it runs none of.
#[derive(Debug, Default)]
pub(crate) struct KeyRoom {
    pub(crate) full: Vec<String>,
    pub(crate) limited: Vec<String>,
    pub(crate) free: Vec<i32>,
    /// `None`: keys without a limit of their own have none.
    pub(crate) default_free: Option<i32>,
}

impl KeyRoom {
    fn is_unlimited(&self) -> bool {
        self.full.is_empty() && self.limited.is_empty() && self.default_free.is_none()
    }
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    run_id: RunId,
    #[sqlx(flatten)]
    step: StepRecord,
}
