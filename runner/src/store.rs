//! Every statement the engine runs against PostgreSQL.
//!
//! Each write a worker makes on behalf of a run is **fenced**: it names the lease epoch
//! the worker claimed the run with and succeeds only while that lease is current and
//! unexpired, checked under a row lock in the same statement. A worker that lost its
//! lease (expired, or taken over after a pause) gets [`Fenced::Lost`] and writes nothing.
//! Every hot-path write is a single statement, so a plain step's checkpoint costs one
//! round trip, and a transactional step's checkpoint travels in the message that
//! commits it, adding none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres};

use crate::model::{
    RunDetail, RunStatus, RunSummary, SHOWN_OUTPUT_BYTES, StepKind, StepRecord, StepStatus,
};
use crate::new_run::NewRun;
use crate::{EngineError, RunId};

/// The channel workers listen on; the payload is the queue that has new work.
pub const WAKEUP_CHANNEL: &str = "cairn_wakeup";
/// The channel a finished run is announced on; the payload is its id.
pub const FINISHED_CHANNEL: &str = "cairn_run_finished";

/// The right to write on behalf of one run: its id and the epoch it was claimed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run_id: RunId,
    /// The claim epoch; any later claim invalidates this lease.
    pub epoch: i64,
}

/// The outcome of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced<T> {
    /// The lease was current and the write happened.
    Held(T),
    /// The lease expired or was taken over; nothing was written.
    Lost,
}

impl<T> Fenced<T> {
    /// The held value passed through `f`; a lost lease stays lost.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fenced<U> {
        match self {
            Fenced::Held(value) => Fenced::Held(f(value)),
            Fenced::Lost => Fenced::Lost,
        }
    }
}

/// A run just claimed by a worker.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The lease to write with.
    pub lease: Lease,
    /// The workflow to execute.
    pub workflow: String,
    /// Its input.
    pub input: Value,
    /// Whether an operator asked to cancel it.
    pub cancel_requested: bool,
    /// When the run must have ended, if it has a deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Its priority: children it starts inherit it.
    pub priority: i32,
    /// The concurrency key it counts against, if any.
    pub concurrency_key: Option<String>,
    /// Its checkpoints so far, in position order.
    pub history: Vec<StepRecord>,
}

/// A step row to write along with a fenced operation.
#[derive(Debug, Clone)]
pub struct StepWrite<'a> {
    /// The step's position.
    pub position: i32,
    /// The branch of the run it belongs to (`""` for the main branch).
    pub branch: &'a str,
    /// Its place in its branch, for a step of a forked branch (a main-branch step's
    /// place is its position).
    pub seq: Option<i32>,
    /// Its name.
    pub name: &'a str,
    /// Its kind.
    pub kind: StepKind,
    /// Its new status.
    pub status: StepStatus,
    /// Its output as JSON text (completed steps only), stored as it is: serializing
    /// straight to text spares a `Value` copy of a large output, such as a fetched page.
    pub output: Option<&'a str>,
    /// Attempts so far, absolute (so a repeated write is idempotent).
    pub attempts: i32,
    /// Rate-limited attempts so far, absolute.
    pub throttled: i32,
    /// The last failure.
    pub last_error: Option<&'a str>,
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// How long the last attempt took.
    pub duration: Duration,
    /// The run's progress report, written with the checkpoint (completed steps only).
    pub progress: Option<&'a Value>,
}

/// How a run ended, as [`Store::finish_runs`] records it.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// Completed, failed or cancelled.
    pub status: RunStatus,
    /// The workflow's output (completed runs).
    pub output: Option<Value>,
    /// The error report (failed and cancelled runs).
    pub error: Option<Value>,
    /// The last progress report, when no checkpoint carried it.
    pub progress: Option<Value>,
}

/// Engine statements over one pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for workflows and tools that share it.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates a run, or returns the existing one when its idempotency key was used
    /// before for its workflow. Returns the run id and whether it was created now.
    pub(crate) async fn start(&self, run: &NewRun<'_>) -> Result<(RunId, bool), EngineError> {
        // A concurrent start with the same key may commit between our insert and our
        // select; a second pass then sees it.
        for _ in 0..3 {
            if let Some(found) = run.insert(&self.pool).await.map_err(EngineError::db)? {
                return Ok(found);
            }
        }
        Err(EngineError::Database(sqlx::Error::Protocol(
            "idempotent start found neither a new nor an existing run".into(),
        )))
    }

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
        }: &Claim<'_>,
    ) -> Result<Vec<ClaimedRun>, sqlx::Error> {
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "WITH due AS (
                 (SELECT id, priority, wake_at, concurrency_key FROM cairn.runs
                   WHERE queue = $1 AND status IN ('pending', 'sleeping', 'parked', 'retrying')
                     AND wake_at <= now() + make_interval(secs => $6) AND workflow = ANY($2)
                     AND (concurrency_key IS NULL OR concurrency_key <> ALL($7))
                   ORDER BY priority DESC, wake_at LIMIT $3 * $11)
                 UNION ALL
                 (SELECT id, priority, wake_at, concurrency_key FROM cairn.runs
                   WHERE queue = $1 AND status = 'running' AND lease_expires_at <= now()
                     AND workflow = ANY($2)
                     AND (concurrency_key IS NULL OR concurrency_key <> ALL($7))
                   LIMIT $3)
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
             ), locked AS (
                 SELECT r.id FROM cairn.runs r JOIN picked USING (id)
                  WHERE (r.status IN ('pending', 'sleeping', 'parked', 'retrying')
                         AND r.wake_at <= now() + make_interval(secs => $6))
                     OR (r.status = 'running' AND r.lease_expires_at <= now())
                  FOR UPDATE OF r SKIP LOCKED
             )
             UPDATE cairn.runs r
                SET status = 'running', lease_epoch = r.lease_epoch + 1, lease_owner = $4,
                    lease_expires_at = now() + make_interval(secs => $5), claims = r.claims + 1,
                    started_at = coalesce(r.started_at, now()), updated_at = now()
               FROM locked WHERE r.id = locked.id
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
                        output::text AS stored_output, attempts, throttled, last_error,
                        started_at, finished_at, duration_ms
                   FROM cairn.steps WHERE run_id = ANY($1) ORDER BY run_id, position",
            )
            .bind(&resumed)
            .fetch_all(&self.pool)
            .await?
        };

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
                   JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, epoch)
                     ON r.id = h.id AND r.lease_epoch = h.epoch
                  WHERE r.status = 'running' AND r.lease_expires_at > now()
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

    /// Writes a step row under the lease on any connection (the pool for plain steps,
    /// the step's own transaction for transactional ones). Returns whether cancellation
    /// was requested, or [`Fenced::Lost`].
    pub async fn write_step<'c, E>(
        executor: E,
        lease: Lease,
        step: &StepWrite<'_>,
    ) -> Result<Fenced<bool>, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        let written = bind_step(sqlx::query_scalar(STEP_WRITE_SQL), lease, step)
            .bind(step.progress)
            .bind(step.branch)
            .bind(step.seq)
            .fetch_one(executor)
            .await;
        fenced(written)
    }

    /// Writes the checkpoints of several runs' plain steps in one statement, so that many
    /// runs' steps share one commit. Each row is fenced by its own lease: the answer has
    /// one entry per row, in order. The runs must differ (one row per run), and no row
    /// may carry a progress report: updating a run's row would wait for that run's
    /// transactional step in flight, and hold up every other row of the batch with it.
    pub async fn write_steps(
        &self,
        steps: &[(Lease, StepWrite<'_>)],
    ) -> Result<Vec<Fenced<bool>>, sqlx::Error> {
        debug_assert!(steps.iter().all(|(_, step)| step.progress.is_none()));
        let held: Vec<(RunId, bool)> = sqlx::query_as(STEPS_WRITE_SQL)
            .bind(column(steps, |(l, _)| l.run_id))
            .bind(column(steps, |(l, _)| l.epoch))
            .bind(column(steps, |(_, s)| s.position))
            .bind(column(steps, |(_, s)| s.name))
            .bind(column(steps, |(_, s)| s.kind.as_str()))
            .bind(column(steps, |(_, s)| s.status.as_str()))
            .bind(column(steps, |(_, s)| s.output))
            .bind(column(steps, |(_, s)| s.attempts))
            .bind(column(steps, |(_, s)| s.throttled))
            .bind(column(steps, |(_, s)| s.last_error))
            .bind(column(steps, |(_, s)| s.started_at))
            .bind(column(steps, |(_, s)| s.duration.as_secs_f64() * 1000.0))
            .bind(column(steps, |(_, s)| s.branch))
            .bind(column(steps, |(_, s)| s.seq))
            .fetch_all(&self.pool)
            .await?;
        Ok(each_fenced(steps.iter().map(|(lease, _)| lease), &held))
    }

    /// Writes a transactional step's checkpoint and commits its transaction, in one
    /// message: `SELECT cairn.write_step(...); COMMIT; BEGIN`. Sent as one simple query,
    /// the checkpoint costs no round trip beyond the commit; the price is that its values
    /// travel as escaped literals. When the lease is lost the function raises,
    /// the server skips the rest of the message and nothing commits.
    ///
    /// `tx` must be dropped afterwards. sqlx still counts it as open and ends it with a
    /// `ROLLBACK` that it queues without waiting; the trailing `BEGIN` gives that
    /// `ROLLBACK` an empty transaction to end, so the server sees no stray `ROLLBACK`.
    /// A progress report is never written here: it would hold the run's row locked.
    pub async fn commit_with_step(
        tx: &mut sqlx::Transaction<'static, Postgres>,
        lease: Lease,
        step: &StepWrite<'_>,
    ) -> Result<Fenced<bool>, sqlx::Error> {
        let mut sql = Literals::new("SELECT cairn.write_step(");
        sql.uuid(lease.run_id.as_uuid())
            .number(lease.epoch)
            .number(step.position)
            .text(Some(step.name))?
            .text(Some(step.kind.as_str()))?
            .text(Some(step.status.as_str()))?
            .text(step.output)?
            .number(step.attempts)
            .number(step.throttled)
            .text(step.last_error)?
            .text(Some(&step.started_at.to_rfc3339()))?
            .number(step.duration.as_secs_f64() * 1000.0)
            .text(None)?
            .text(Some(step.branch))?
            .optional_number(step.seq);
        let sql = sql.finish(") AS cancel; COMMIT; BEGIN");
        let written = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut **tx)
            .await
            .and_then(|rows| match rows.first() {
                Some(row) => sqlx::Row::try_get::<bool, _>(row, "cancel"),
                None => Err(sqlx::Error::RowNotFound),
            });
        fenced(written)
    }

    /// Releases the run from its worker until `wake` with `status` (sleeping, parked or
    /// retrying), writing `step` in the same statement. For a sleep step the stored output
    /// is the wake time.
    ///
    /// `events_seen`: the run waits for events, and had seen this many sent; if more
    /// have been sent since, it wakes at once.
    pub async fn park(
        &self,
        lease: Lease,
        status: RunStatus,
        wake_at: DateTime<Utc>,
        step: &StepWrite<'_>,
        events_seen: Option<i64>,
    ) -> Result<Fenced<DateTime<Utc>>, sqlx::Error> {
        let wake_at: Option<DateTime<Utc>> = bind_step(sqlx::query_scalar(PARK_SQL), lease, step)
            .bind(status)
            .bind(wake_at)
            .bind(step.branch)
            .bind(step.seq)
            .bind(events_seen)
            .fetch_optional(&self.pool)
            .await?;
        Ok(wake_at.map_or(Fenced::Lost, Fenced::Held))
    }

    /// Ends the run as `end` says: its status, its output or error, and its last progress
    /// report (when no checkpoint carried it). The end is announced if a client waits for
    /// it (see [`Store::await_end`]).
    pub async fn finish(&self, lease: Lease, end: &RunEnd) -> Result<Fenced<()>, sqlx::Error> {
        let mut fenced = self.finish_runs(&[(lease, end)]).await?;
        Ok(fenced.pop().unwrap_or(Fenced::Lost))
    }

    /// Ends several runs in one statement, as [`Store::finish`] ends one, so that many
    /// runs' ends can share one commit. Each run is fenced by its own lease: the answer has
    /// one entry per run, in order. The runs must differ.
    pub async fn finish_runs(
        &self,
        ends: &[(Lease, &RunEnd)],
    ) -> Result<Vec<Fenced<()>>, sqlx::Error> {
        let done: Vec<RunId> = sqlx::query_scalar(FINISH_RUNS_SQL)
            .bind(column(ends, |(l, _)| l.run_id))
            .bind(column(ends, |(l, _)| l.epoch))
            .bind(column(ends, |(_, e)| e.status.as_str()))
            .bind(column(ends, |&(_, e)| e.output.as_ref()))
            .bind(column(ends, |&(_, e)| e.error.as_ref()))
            .bind(column(ends, |&(_, e)| e.progress.as_ref()))
            .bind(FINISHED_CHANNEL)
            .fetch_all(&self.pool)
            .await?;
        let held: Vec<(RunId, ())> = done.into_iter().map(|id| (id, ())).collect();
        Ok(each_fenced(ends.iter().map(|(lease, _)| lease), &held))
    }

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

    /// The stored row of one step, if any (to settle a transaction whose commit
    /// outcome is unknown).
    pub async fn step(
        &self,
        run_id: RunId,
        position: i32,
    ) -> Result<Option<StepRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT position, branch, name, kind, status, output, attempts, throttled,
                    last_error, started_at, finished_at, duration_ms
               FROM cairn.steps WHERE run_id = $1 AND position = $2",
        )
        .bind(run_id)
        .bind(position)
        .fetch_optional(&self.pool)
        .await
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
        let steps: Vec<StepRecord> = sqlx::query_as(
            "SELECT position, branch, name, kind, status,
                    CASE WHEN pg_column_size(output) <= $2 THEN output END AS output,
                    pg_column_size(output)::bigint AS output_stored_bytes,
                    attempts, throttled, last_error, started_at, finished_at, duration_ms
               FROM cairn.steps WHERE run_id = $1 ORDER BY position",
        )
        .bind(id)
        .bind(SHOWN_OUTPUT_BYTES)
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::db)?;
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

/// Binds the lease and the step row as `$1` to `$12`, the layout both step-writing
/// statements share.
fn bind_step<'q, O>(
    query: sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments>,
    lease: Lease,
    step: &StepWrite<'q>,
) -> sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(lease.run_id)
        .bind(lease.epoch)
        .bind(step.position)
        .bind(step.name)
        .bind(step.kind)
        .bind(step.status)
        .bind(step.output)
        .bind(step.attempts)
        .bind(step.throttled)
        .bind(step.last_error)
        .bind(step.started_at)
        .bind(step.duration.as_secs_f64() * 1000.0)
}

/// One array parameter of a statement over many rows: `f` of each row, in order.
fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// The answer for each lease, in order, from the runs a statement over many runs found
/// held and what it read for each: a run it did not find was lost.
fn each_fenced<'a, T: Copy>(
    leases: impl Iterator<Item = &'a Lease>,
    held: &[(RunId, T)],
) -> Vec<Fenced<T>> {
    leases
        .map(|lease| {
            held.iter()
                .find(|(id, _)| *id == lease.run_id)
                .map_or(Fenced::Lost, |&(_, read)| Fenced::Held(read))
        })
        .collect()
}

/// A copy of a [`StepWrite`] that can wait: in the group commit's queue, or with a
/// durable wait until the run parks.
#[derive(Clone, Debug)]
pub(crate) struct OwnedStep {
    position: i32,
    branch: String,
    seq: Option<i32>,
    name: String,
    kind: StepKind,
    status: StepStatus,
    output: Option<String>,
    attempts: i32,
    throttled: i32,
    last_error: Option<String>,
    started_at: DateTime<Utc>,
    duration: Duration,
}

impl OwnedStep {
    pub(crate) fn new(step: &StepWrite<'_>) -> Self {
        Self {
            position: step.position,
            branch: step.branch.to_owned(),
            seq: step.seq,
            name: step.name.to_owned(),
            kind: step.kind,
            status: step.status,
            output: step.output.map(str::to_owned),
            attempts: step.attempts,
            throttled: step.throttled,
            last_error: step.last_error.map(str::to_owned),
            started_at: step.started_at,
            duration: step.duration,
        }
    }

    pub(crate) fn as_write(&self) -> StepWrite<'_> {
        StepWrite {
            position: self.position,
            branch: &self.branch,
            seq: self.seq,
            name: &self.name,
            kind: self.kind,
            status: self.status,
            output: self.output.as_deref(),
            attempts: self.attempts,
            throttled: self.throttled,
            last_error: self.last_error.as_deref(),
            started_at: self.started_at,
            duration: self.duration,
            progress: None,
        }
    }
}

/// A checkpoint through `cairn.write_step` (migration 0008), which holds the fence and
/// the step row upsert once for both ways a checkpoint is written.
const STEP_WRITE_SQL: &str = "SELECT cairn.write_step($1, $2, $3, $4, $5, $6, $7::json, $8, $9, \
     $10, $11, $12, $13, $14, $15)";

/// Many runs' plain checkpoints at once: the same fence and upsert as `cairn.write_step`,
/// row by row. The runs are locked in id order, as the heartbeat locks them, so that two
/// statements that each lock several runs never wait for each other in a cycle.
const STEPS_WRITE_SQL: &str = "
    WITH w AS (
        SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::int[], $9::int[], $10::text[],
                             $11::timestamptz[], $12::float8[], $13::text[], $14::int[])
            AS w(run_id, epoch, position, name, kind, status, output, attempts, throttled,
                 last_error, started_at, duration_ms, branch, seq)
    ), held AS (
        SELECT r.id, r.cancel_requested
          FROM cairn.runs r JOIN w ON r.id = w.run_id AND r.lease_epoch = w.epoch
         WHERE r.status = 'running' AND r.lease_expires_at > clock_timestamp()
         ORDER BY r.id
           FOR SHARE OF r
    ), saved AS (
        INSERT INTO cairn.steps AS s (run_id, position, name, kind, status, output, attempts,
                                      throttled, last_error, started_at, finished_at, duration_ms,
                                      branch, seq)
        SELECT w.run_id, w.position, w.name, w.kind, w.status, w.output::json, w.attempts,
               w.throttled, w.last_error, w.started_at, now(), w.duration_ms, w.branch, w.seq
          FROM w JOIN held ON held.id = w.run_id
        ON CONFLICT (run_id, position) DO UPDATE
           SET status = EXCLUDED.status, output = EXCLUDED.output, attempts = EXCLUDED.attempts,
               throttled = EXCLUDED.throttled, last_error = EXCLUDED.last_error,
               finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms
         WHERE s.status <> 'completed'
    )
    SELECT id, cancel_requested FROM held";

/// Many runs' ends at once, fenced and announced as [`Store::finish`] does for one; the
/// runs are locked in id order (see [`STEPS_WRITE_SQL`]).
const FINISH_RUNS_SQL: &str = "
    WITH f AS (
        SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[], $5::jsonb[],
                             $6::jsonb[])
            AS f(id, epoch, status, output, error, progress)
    ), held AS (
        SELECT r.id FROM cairn.runs r JOIN f ON r.id = f.id AND r.lease_epoch = f.epoch
         WHERE r.status = 'running' AND r.lease_expires_at > clock_timestamp()
         ORDER BY r.id
           FOR NO KEY UPDATE OF r
    ), done AS (
        UPDATE cairn.runs r
           SET status = f.status, output = f.output, error = f.error, finished_at = now(),
               updated_at = now(), lease_owner = NULL, lease_expires_at = NULL,
               progress = coalesce(f.progress, r.progress)
          FROM f JOIN held ON held.id = f.id
         WHERE r.id = f.id
        RETURNING r.id, r.awaited
    )
    SELECT done.id FROM done CROSS JOIN LATERAL (
        SELECT CASE WHEN done.awaited THEN pg_notify($7, done.id::text) END
    ) n";

/// The SQLSTATE `cairn.write_step` raises when the lease is no longer held.
const LEASE_LOST: &str = "CN001";

/// The SQLSTATE `cairn.write_step` raises when a transactional step finds its checkpoint
/// already completed by an earlier attempt whose commit answer was lost.
const ALREADY_COMPLETED: &str = "CN002";

/// Whether a transactional checkpoint was refused because an earlier attempt of the step
/// had already committed; this attempt's writes were rolled back with it.
pub fn already_completed(err: &sqlx::Error) -> bool {
    has_sqlstate(err, ALREADY_COMPLETED)
}

/// Whether the database refused with SQLSTATE `code`.
fn has_sqlstate(err: &sqlx::Error, code: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

const PARK_SQL: &str = "
    WITH parked AS (
        UPDATE cairn.runs
           SET status = $13,
               wake_at = CASE WHEN $17::bigint IS NOT NULL AND events_sent <> $17 THEN now()
                              ELSE least($14, deadline) END,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = $1 AND lease_epoch = $2 AND status = 'running'
           AND lease_expires_at > clock_timestamp()
        RETURNING id, wake_at
    ), saved AS (
        INSERT INTO cairn.steps AS s (run_id, position, name, kind, status, output, attempts,
                                      throttled, last_error, started_at, finished_at, duration_ms,
                                      branch, seq)
        SELECT id, $3, $4, $5, $6,
               CASE WHEN $5 = 'sleep' THEN json_build_object('wake_at', wake_at) ELSE $7::json END,
               $8, $9, $10, $11, now(), $12, $15, $16 FROM parked
        ON CONFLICT (run_id, position) DO UPDATE
           SET status = EXCLUDED.status, output = EXCLUDED.output, attempts = EXCLUDED.attempts,
               throttled = EXCLUDED.throttled, last_error = EXCLUDED.last_error,
               finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms
         WHERE s.status <> 'completed'
    )
    SELECT wake_at FROM parked";

/// A fenced write's answer: `cairn.write_step` raises [`LEASE_LOST`] when the lease is
/// no longer held.
fn fenced(written: Result<bool, sqlx::Error>) -> Result<Fenced<bool>, sqlx::Error> {
    match written {
        Ok(cancel) => Ok(Fenced::Held(cancel)),
        Err(err) if has_sqlstate(&err, LEASE_LOST) => Ok(Fenced::Lost),
        Err(err) => Err(err),
    }
}

/// A function call's arguments written as SQL literals, for the one message that cannot
/// carry bind parameters: a simple query, which may hold several statements. Text goes
/// in escape strings (`E'...'`), which read the same whatever the server's
/// `standard_conforming_strings`; a NUL, which no PostgreSQL text holds and which would
/// end the message early, is refused.
struct Literals {
    sql: String,
    first: bool,
}

impl Literals {
    fn new(head: &str) -> Self {
        Self {
            sql: head.to_owned(),
            first: true,
        }
    }

    fn next(&mut self) -> &mut String {
        if !self.first {
            self.sql.push_str(", ");
        }
        self.first = false;
        &mut self.sql
    }

    fn uuid(&mut self, id: uuid::Uuid) -> &mut Self {
        let sql = self.next();
        sql.push('\'');
        sql.push_str(&id.hyphenated().to_string());
        sql.push('\'');
        self
    }

    /// A finite number (integers, and milliseconds measured from a `Duration`).
    fn number(&mut self, n: impl std::fmt::Display) -> &mut Self {
        let text = n.to_string();
        self.next().push_str(&text);
        self
    }

    /// A number, or NULL.
    fn optional_number(&mut self, n: Option<impl std::fmt::Display>) -> &mut Self {
        match n {
            Some(n) => self.number(n),
            None => {
                self.next().push_str("NULL");
                self
            }
        }
    }

    fn text(&mut self, text: Option<&str>) -> Result<&mut Self, sqlx::Error> {
        let Some(text) = text else {
            self.next().push_str("NULL");
            return Ok(self);
        };
        if text.contains('\0') {
            return Err(sqlx::Error::Encode(
                format!(
                    "a checkpoint's text cannot hold a NUL character (found in `{}`)",
                    text.escape_debug().take(80).collect::<String>()
                )
                .into(),
            ));
        }
        let sql = self.next();
        sql.reserve(text.len() + 4);
        sql.push_str("E'");
        for c in text.chars() {
            match c {
                '\'' => sql.push_str("''"),
                '\\' => sql.push_str("\\\\"),
                c => sql.push(c),
            }
        }
        sql.push('\'');
        Ok(self)
    }

    fn finish(mut self, tail: &str) -> String {
        self.sql.push_str(tail);
        self.sql
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
