//! The fenced writes a worker makes for a run: checkpoints, parks and ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::PgArguments;

use super::{FINISHED_CHANNEL, Fenced, Lease, RunEnd, StepWrite, Store};
use crate::RunId;
use crate::model::{RunStatus, StepKind, StepStatus};

impl Store {
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
        let rows: Vec<(Lease, &StepWrite<'_>)> =
            steps.iter().map(|(lease, step)| (*lease, step)).collect();
        let held: Vec<(RunId, bool)> = bind_rows(sqlx::query_as(STEPS_WRITE_SQL), &rows)
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
        let wake_at: Option<DateTime<Utc>> =
            bind_rows(sqlx::query_scalar(PARK_SQL), &[(lease, step)])
                .bind(status)
                .bind(wake_at)
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
}

/// Binds the lease and the step row as `$1` to `$12`, the layout both step-writing
/// statements share.
fn bind_step<'q, O>(
    query: sqlx::query::QueryScalar<'q, Postgres, O, PgArguments>,
    lease: Lease,
    step: &StepWrite<'q>,
) -> sqlx::query::QueryScalar<'q, Postgres, O, PgArguments> {
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

/// Binds step rows as `$1` to `$14`, a column each, for [`step_rows`] to read back.
fn bind_rows<'q, Q: BindColumn<'q>>(query: Q, rows: &[(Lease, &StepWrite<'q>)]) -> Q {
    query
        .bind_column(column(rows, |(l, _)| l.run_id))
        .bind_column(column(rows, |(l, _)| l.epoch))
        .bind_column(column(rows, |(_, s)| s.position))
        .bind_column(column(rows, |(_, s)| s.name))
        .bind_column(column(rows, |(_, s)| s.kind.as_str()))
        .bind_column(column(rows, |(_, s)| s.status.as_str()))
        .bind_column(column(rows, |(_, s)| s.output))
        .bind_column(column(rows, |(_, s)| s.attempts))
        .bind_column(column(rows, |(_, s)| s.throttled))
        .bind_column(column(rows, |(_, s)| s.last_error))
        .bind_column(column(rows, |(_, s)| s.started_at))
        .bind_column(column(rows, |(_, s)| s.duration.as_secs_f64() * 1000.0))
        .bind_column(column(rows, |(_, s)| s.branch))
        .bind_column(column(rows, |(_, s)| s.seq))
}

/// A query that takes an array parameter, whatever it returns.
trait BindColumn<'q>: Sized {
    fn bind_column<T>(self, column: Vec<T>) -> Self
    where
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>;
}

impl<'q, O> BindColumn<'q> for sqlx::query::QueryScalar<'q, Postgres, O, PgArguments> {
    fn bind_column<T>(self, column: Vec<T>) -> Self
    where
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        self.bind(column)
    }
}

impl<'q, O> BindColumn<'q> for sqlx::query::QueryAs<'q, Postgres, O, PgArguments> {
    fn bind_column<T>(self, column: Vec<T>) -> Self
    where
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        self.bind(column)
    }
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

/// A checkpoint through `cairn.write_step` (`runner/migrations/0001_engine.sql`), which holds the
/// fence and the step row upsert for both ways a single checkpoint is written.
const STEP_WRITE_SQL: &str = "SELECT cairn.write_step($1, $2, $3, $4, $5, $6, $7::json, $8, $9, \
     $10, $11, $12, $13, $14, $15)";

/// The step rows bound as `$1` to `$14` by [`bind_rows`], as a table `w`.
macro_rules! step_rows {
    () => {
        "SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::int[], $9::int[], $10::text[],
                              $11::timestamptz[], $12::float8[], $13::text[], $14::int[])
             AS w(run_id, epoch, position, name, kind, status, output, attempts, throttled,
                  last_error, started_at, duration_ms, branch, seq)"
    };
}

/// The step row upsert of the statements written here, from the rows `w` of `$from`, with
/// `$output` as the stored output: the same as `cairn.write_step`'s (the engine's first migration). A
/// completed step is never overwritten.
macro_rules! save_steps {
    (output: $output:literal, from: $from:literal) => {
        concat!(
            "INSERT INTO cairn.steps AS s (run_id, position, name, kind, status, output,
                                           attempts, throttled, last_error, started_at,
                                           finished_at, duration_ms, branch, seq)
             SELECT w.run_id, w.position, w.name, w.kind, w.status, ",
            $output,
            ", w.attempts, w.throttled, w.last_error, w.started_at, now(), w.duration_ms,
                    w.branch, w.seq
               FROM ",
            $from,
            " ON CONFLICT (run_id, position) DO UPDATE
                  SET status = EXCLUDED.status, output = EXCLUDED.output,
                      attempts = EXCLUDED.attempts, throttled = EXCLUDED.throttled,
                      last_error = EXCLUDED.last_error, finished_at = EXCLUDED.finished_at,
                      duration_ms = EXCLUDED.duration_ms
                WHERE s.status <> 'completed'"
        )
    };
}

/// Many runs' plain checkpoints at once: the same fence (`cairn.lease_held`) and upsert
/// as `cairn.write_step`, row by row. The upsert is written out here (see [`save_steps`])
/// rather than called in the database: a call per batch, with its rows built into an
/// array and unnested again, cost a plain step 12% (`cairn bench steps`). The runs are
/// locked in id order, as the heartbeat locks them, so that two statements that each
/// lock several runs never wait for each other in a cycle.
const STEPS_WRITE_SQL: &str = concat!(
    "WITH w AS (",
    step_rows!(),
    "), held AS (
        SELECT r.id, r.cancel_requested
          FROM cairn.runs r JOIN w ON r.id = w.run_id
         WHERE cairn.lease_held(r, w.epoch)
         ORDER BY r.id
           FOR SHARE OF r
    ), saved AS (",
    save_steps!(output: "w.output::json", from: "w JOIN held ON held.id = w.run_id"),
    ") SELECT id, cancel_requested FROM held"
);

/// Many runs' ends at once, fenced and announced as [`Store::finish`] does for one; the
/// runs are locked in id order (see [`STEPS_WRITE_SQL`]).
const FINISH_RUNS_SQL: &str = "
    WITH f AS (
        SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[], $5::jsonb[],
                             $6::jsonb[])
            AS f(id, epoch, status, output, error, progress)
    ), held AS (
        SELECT r.id FROM cairn.runs r JOIN f ON r.id = f.id
         WHERE cairn.lease_held(r, f.epoch)
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

/// Parks the run under its lease and saves the step that parked it; a sleep step's
/// stored output is the time the run wakes.
const PARK_SQL: &str = concat!(
    "WITH w AS (",
    step_rows!(),
    "), parked AS (
        UPDATE cairn.runs r
           SET status = $15,
               wake_at = CASE WHEN $17::bigint IS NOT NULL AND r.events_sent <> $17 THEN now()
                              ELSE least($16, r.deadline) END,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          FROM w
         WHERE r.id = w.run_id AND cairn.lease_held(r, w.epoch)
        RETURNING r.id, r.wake_at
    ), saved AS (",
    save_steps!(
        output: "CASE WHEN w.kind = 'sleep' THEN json_build_object('wake_at', parked.wake_at)
                      ELSE w.output::json END",
        from: "w JOIN parked ON parked.id = w.run_id"
    ),
    ") SELECT wake_at FROM parked"
);

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
