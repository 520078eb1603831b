//! The fenced checkpoint writer: the one statement that writes step rows under their
//! runs' leases, for one run on any connection (the pool, or a step's own transaction)
//! or for many runs at once, and the pieces [`super::writes`]'s park statement shares
//! with it.
//!
//! A step row's columns are bound by one list ([`bind_columns`]) and read back as a
//! table of rows ([`step_rows`]) or as one row (`one_row!`); its upsert is written once
//! ([`save_steps`]) and its fence is `cairn.lease_held`. Adding a column to steps changes
//! this file, [`StepWrite`] and a migration.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::PgArguments;

use super::{Fenced, Lease, StepWrite, Store};
use crate::RunId;
use crate::model::{StepKind, StepStatus};
use crate::seal::{Kept, STEP_OUTPUTS, Sealer};

impl Store {
    /// Writes a step row under the lease on any connection (the pool for plain steps,
    /// a step's own transaction for the steps that commit other writes with it).
    /// Returns whether cancellation was requested, or [`Fenced::Lost`].
    pub async fn write_step<'c, E>(
        &self,
        executor: E,
        lease: Lease,
        step: &StepWrite<'_>,
    ) -> Result<Fenced<bool>, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        let sql = match step.progress {
            Some(_) => STEP_REPORT_SQL,
            None => STEP_WRITE_SQL,
        };
        let written = bind_row(sqlx::query_scalar(sql), lease, step, &self.sealer)?
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
        let held: Vec<(RunId, bool)> =
            bind_rows(sqlx::query_as(STEPS_WRITE_SQL), &rows, &self.sealer)?
                .fetch_all(&self.pool)
                .await?;
        Ok(each_fenced(steps.iter().map(|(lease, _)| lease), &held))
    }

    /// Writes a transactional step's checkpoint in its transaction and commits it. When
    /// the write is refused the statement raises, and nothing commits. A progress report
    /// is never written here: it would hold the run's row locked until the commit.
    ///
    /// The checkpoint is a statement of its own, prepared once per connection: sending
    /// it with the `COMMIT` in one simple query, as literals, saves a round trip but
    /// costs the server a fresh plan every time, and measured no faster (`cairn bench
    /// steps`).
    pub async fn commit_with_step(
        &self,
        mut tx: sqlx::Transaction<'static, Postgres>,
        lease: Lease,
        step: &StepWrite<'_>,
    ) -> Result<Fenced<bool>, sqlx::Error> {
        debug_assert!(step.progress.is_none());
        let written = self.write_step(&mut *tx, lease, step).await?;
        if let Fenced::Held(_) = written {
            tx.commit().await?;
        }
        Ok(written)
    }
}

/// The step rows bound as `$1` to `$16` by [`bind_rows`], as a table `w`.
macro_rules! step_rows {
    () => {
        "SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::int[], $9::int[], $10::text[],
                              $11::timestamptz[], $12::float8[], $13::text[], $14::int[],
                              $15::jsonb[], $16::bytea[])
             AS w(run_id, epoch, position, name, kind, status, output, attempts, throttled,
                  last_error, started_at, duration_ms, branch, seq, progress, output_sealed)"
    };
}

/// The step row upsert, from the rows `w` of `$from`, with `$output` and `$sealed` as
/// the stored output, plain or sealed. A completed step is never overwritten; the saved
/// rows are returned.
macro_rules! save_steps {
    (output: $output:expr, sealed: $sealed:expr, from: $from:expr) => {
        concat!(
            "INSERT INTO cairn.steps AS s (run_id, position, name, kind, status, output,
                                           output_sealed, attempts, throttled, last_error,
                                           started_at, finished_at, duration_ms, branch, seq)
             SELECT w.run_id, w.position, w.name, w.kind, w.status, ",
            $output,
            ", ",
            $sealed,
            ", w.attempts, w.throttled, w.last_error, w.started_at, now(), w.duration_ms,
                    w.branch, w.seq
               FROM ",
            $from,
            " ON CONFLICT (run_id, position) DO UPDATE
                  SET status = EXCLUDED.status, output = EXCLUDED.output,
                      output_sealed = EXCLUDED.output_sealed,
                      attempts = EXCLUDED.attempts, throttled = EXCLUDED.throttled,
                      last_error = EXCLUDED.last_error, finished_at = EXCLUDED.finished_at,
                      duration_ms = EXCLUDED.duration_ms
                WHERE s.status <> 'completed'
            RETURNING s.run_id"
        )
    };
}

pub(super) use {save_steps, step_rows};

/// Many runs' plain checkpoints at once, each answered by whether its lease was held.
/// Each run's row is locked to share while its checkpoint commits, in id order, as the
/// heartbeat locks them, so that two statements that each lock several runs never wait
/// for each other in a cycle.
const STEPS_WRITE_SQL: &str = concat!(
    "WITH w AS (",
    step_rows!(),
    "), fenced AS (
        SELECT r.id, r.cancel_requested
          FROM cairn.runs r JOIN w ON r.id = w.run_id
         WHERE cairn.lease_held(r, w.epoch)
         ORDER BY r.id
           FOR SHARE OF r
    ), saved AS (",
    save_steps!(
        output: "w.output::json",
        sealed: "w.output_sealed",
        from: "w JOIN fenced ON fenced.id = w.run_id"
    ),
    ") SELECT id, cancel_requested FROM fenced"
);

/// One step row bound as `$1` to `$16` by [`bind_row`], as [`step_rows`] lays rows out.
macro_rules! one_row {
    () => {
        "SELECT $1::uuid AS run_id, $2::bigint AS epoch, $3::int AS position, $4::text AS name,
                $5::text AS kind, $6::text AS status, $7::text AS output, $8::int AS attempts,
                $9::int AS throttled, $10::text AS last_error, $11::timestamptz AS started_at,
                $12::float8 AS duration_ms, $13::text AS branch, $14::int AS seq,
                $15::jsonb AS progress, $16::bytea AS output_sealed"
    };
}

/// One checkpoint: the fence on the run's row (`$fenced`, a CTE named `fenced` over
/// `cairn.runs r`), the upsert, and the answer: whether its run was asked to cancel, or
/// an error that aborts the statement (and the transaction it travels with) when the
/// lease is lost ([`LEASE_LOST`]) or a transactional step finds its checkpoint already
/// completed ([`ALREADY_COMPLETED`]). The row's values are parameters rather than a
/// table of rows as in [`STEPS_WRITE_SQL`], so that the run is found by its key and the
/// plan is as lean as a one-row write's can be: a plain step's checkpoint costs what it
/// cost through a database function (`cairn bench steps`).
macro_rules! one_checkpoint {
    ($fenced:literal) => {
        concat!(
            "WITH ",
            $fenced,
            ", saved AS (",
            save_steps!(
                output: "w.output::json",
                sealed: "w.output_sealed",
                from: concat!("(", one_row!(), ") w JOIN fenced ON true")
            ),
            ") SELECT CASE
                WHEN NOT EXISTS (SELECT FROM fenced) THEN cairn.refuse('CN001',
                    format('the lease on run %s (epoch %s) is no longer held', $1, $2))
                WHEN $5 = 'transaction' AND $6 = 'completed'
                     AND NOT EXISTS (SELECT FROM saved) THEN cairn.refuse('CN002',
                    format('step %s of run %s was already completed by an earlier attempt',
                           $3, $1))
                ELSE (SELECT cancel_requested FROM fenced)
              END"
        )
    };
}

/// One checkpoint, its run's row locked to share until it commits.
const STEP_WRITE_SQL: &str = one_checkpoint!(
    "fenced AS (
        SELECT r.cancel_requested FROM cairn.runs r
         WHERE r.id = $1 AND cairn.lease_held(r, $2)
           FOR SHARE
    )"
);

/// One checkpoint with a progress report for its run.
const STEP_REPORT_SQL: &str = one_checkpoint!(
    "fenced AS (
        UPDATE cairn.runs r SET progress = $15
         WHERE r.id = $1 AND cairn.lease_held(r, $2)
        RETURNING r.cancel_requested
    )"
);

/// The SQLSTATE the writer raises when the lease is no longer held.
const LEASE_LOST: &str = "CN001";

/// The SQLSTATE the writer raises when a transactional step finds its checkpoint
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

/// A single checkpoint's answer: the writer raises [`LEASE_LOST`] when the lease is no
/// longer held.
fn fenced(written: Result<bool, sqlx::Error>) -> Result<Fenced<bool>, sqlx::Error> {
    match written {
        Ok(cancel) => Ok(Fenced::Held(cancel)),
        Err(err) if has_sqlstate(&err, LEASE_LOST) => Ok(Fenced::Lost),
        Err(err) => Err(err),
    }
}

/// Binds step rows as `$1` to `$16`, a column each, for [`step_rows`] to read back.
pub(super) fn bind_rows<'q, Q: Bind<'q>>(
    query: Q,
    rows: &[(Lease, &StepWrite<'q>)],
    sealer: &Sealer,
) -> Result<Q, sqlx::Error> {
    Ok(bind_columns(Columns(query), rows, sealer)?.0)
}

/// Binds one step row as `$1` to `$16`, for `one_row!` to read back.
fn bind_row<'q, Q: Bind<'q>>(
    query: Q,
    lease: Lease,
    step: &StepWrite<'q>,
    sealer: &Sealer,
) -> Result<Q, sqlx::Error> {
    Ok(bind_columns(OneRow(query), &[(lease, step)], sealer)?.0)
}

/// The step row's columns, in the order [`step_rows`] and `one_row!` read them. Outputs
/// are sealed here, the one place step outputs are written from.
fn bind_columns<'q, B: BindColumn<'q>>(
    binder: B,
    rows: &[(Lease, &StepWrite<'q>)],
    sealer: &Sealer,
) -> Result<B, sqlx::Error> {
    let outputs = rows
        .iter()
        .map(|(_, s)| s.output.map(|o| sealer.store(&STEP_OUTPUTS, o)).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    let plain = outputs
        .iter()
        .map(|o| o.as_ref().and_then(Kept::plain))
        .collect();
    let sealed = outputs
        .into_iter()
        .map(|o| match o {
            Some(Kept::Sealed(bytes)) => Some(bytes),
            _ => None,
        })
        .collect();
    Ok(binder
        .column(column(rows, |(l, _)| l.run_id))
        .column(column(rows, |(l, _)| l.epoch))
        .column(column(rows, |(_, s)| s.position))
        .column(column(rows, |(_, s)| s.name))
        .column(column(rows, |(_, s)| s.kind.as_str()))
        .column(column(rows, |(_, s)| s.status.as_str()))
        .column::<Option<&str>>(plain)
        .column(column(rows, |(_, s)| s.attempts))
        .column(column(rows, |(_, s)| s.throttled))
        .column(column(rows, |(_, s)| s.last_error))
        .column(column(rows, |(_, s)| s.started_at))
        .column(column(rows, |(_, s)| duration_ms(s.duration)))
        .column(column(rows, |(_, s)| s.branch))
        .column(column(rows, |(_, s)| s.seq))
        .column(column(rows, |(_, s)| s.progress))
        .column::<Option<Vec<u8>>>(sealed))
}

fn duration_ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A query that takes parameters, whatever it returns.
pub(super) trait Bind<'q>: Sized {
    fn bind_value<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(
        self,
        value: T,
    ) -> Self;
}

impl<'q, O> Bind<'q> for sqlx::query::QueryScalar<'q, Postgres, O, PgArguments> {
    fn bind_value<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(
        self,
        value: T,
    ) -> Self {
        self.bind(value)
    }
}

impl<'q, O> Bind<'q> for sqlx::query::QueryAs<'q, Postgres, O, PgArguments> {
    fn bind_value<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(
        self,
        value: T,
    ) -> Self {
        self.bind(value)
    }
}

/// Binds a column of values: as an array ([`Columns`]), or as the one row's value
/// ([`OneRow`]).
trait BindColumn<'q>: Sized {
    fn column<T>(self, values: Vec<T>) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>;
}

struct Columns<Q>(Q);

impl<'q, Q: Bind<'q>> BindColumn<'q> for Columns<Q> {
    fn column<T>(self, values: Vec<T>) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        Self(self.0.bind_value(values))
    }
}

struct OneRow<Q>(Q);

impl<'q, Q: Bind<'q>> BindColumn<'q> for OneRow<Q> {
    fn column<T>(self, values: Vec<T>) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        Self(self.0.bind_value(values.into_iter().next()))
    }
}

/// One array parameter of a statement over many rows: `f` of each row, in order.
pub(super) fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// The answer for each lease, in order, from the runs a statement over many runs found
/// held and what it read for each: a run it did not find was lost.
pub(super) fn each_fenced<'a, T: Copy>(
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
