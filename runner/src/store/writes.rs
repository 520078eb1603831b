//! The fenced writes that end a run's time on a worker: parks and ends.

use chrono::{DateTime, Utc};

use super::checkpoints::{bind_rows, column, each_fenced, save_steps, step_rows};
use super::{FINISHED_CHANNEL, Fenced, Lease, RunEnd, StepWrite, Store};
use crate::RunId;
use crate::model::RunStatus;

impl Store {
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
            bind_rows(sqlx::query_scalar(PARK_SQL), &[(lease, step)], &self.sealer)?
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

/// Many runs' ends at once, fenced and announced as [`Store::finish`] does for one; the
/// runs are locked in id order, as the checkpoint writer locks them.
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

/// Parks the run under its lease and saves the step that parked it; a sleep step's
/// stored output is the time the run wakes.
const PARK_SQL: &str = concat!(
    "WITH w AS (",
    step_rows!(),
    "), parked AS (
        UPDATE cairn.runs r
           SET status = $17,
               wake_at = CASE WHEN $19::bigint IS NOT NULL AND r.events_sent <> $19 THEN now()
                              ELSE least($18, r.deadline) END,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          FROM w
         WHERE r.id = w.run_id AND cairn.lease_held(r, w.epoch)
        RETURNING r.id, r.wake_at
    ), saved AS (",
    save_steps!(
        output: "CASE WHEN w.kind = 'sleep' THEN json_build_object('wake_at', parked.wake_at)
                      ELSE w.output::json END",
        sealed: "CASE WHEN w.kind = 'sleep' THEN NULL ELSE w.output_sealed END",
        from: "w JOIN parked ON parked.id = w.run_id"
    ),
    ") SELECT wake_at FROM parked"
);
