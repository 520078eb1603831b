//! Retention: once a finished run is older than its window, its step outputs (fetched
//! pages, and whatever personal data they hold), its own output and the events sent to
//! it are purged. Its
//! metadata stays for audit: the run's workflow, status, times and error, and each
//! step's name, kind, status, attempts, timings and error.
//!
//! A purged run is marked (`outputs_purged_at`), so that nothing replays it into wrong
//! results: a retry from the dead-letter list refuses it, saying why.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::worker::Retention;
use crate::{BoxError, Client, EngineError, Registry};

/// A purge of records other crates keep beside runs, given a pool and the instant
/// before which they go; it returns how many went.
pub type SetAsidePurge = Arc<
    dyn Fn(PgPool, DateTime<Utc>) -> futures::future::BoxFuture<'static, Result<u64, BoxError>>
        + Send
        + Sync,
>;

/// Records set aside beside runs that crates other than the engine keep (quarantined
/// records, writes a destination refused), purged by workers once older than
/// [`Retention::set_aside`]. Kept in the registry: `registry.provided_mut::<SetAside>()`.
#[derive(Default)]
pub struct SetAside {
    purges: Vec<(&'static str, SetAsidePurge)>,
}

impl SetAside {
    /// Adds (or replaces) the purge of `what`, e.g. `"quarantine"`.
    pub fn add(&mut self, what: &'static str, purge: SetAsidePurge) -> &mut Self {
        self.purges.retain(|(name, _)| *name != what);
        self.purges.push((what, purge));
        self
    }
}

/// What to purge.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Runs that completed or were cancelled before this instant.
    pub completed_before: DateTime<Utc>,
    /// Failed runs (the dead-letter list) that failed before this instant; `None` keeps
    /// every failed run's outputs, so that it can still be retried.
    pub failed_before: Option<DateTime<Utc>>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Count what would be purged, and purge nothing.
    pub dry_run: bool,
    /// Runs purged per transaction: each batch is short, so workers go on meanwhile.
    pub batch: i64,
}

/// What a purge did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Runs whose outputs were purged.
    pub runs: u64,
    /// Step outputs purged.
    pub steps: u64,
    /// Their stored size, in bytes (compressed, as PostgreSQL keeps them).
    pub bytes: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// The runs a purge takes, as `batch`: finished, not purged yet, in the window.
const CANDIDATES: &str = "
    SELECT id FROM cairn.runs
     WHERE finished_at IS NOT NULL AND outputs_purged_at IS NULL
       AND ((status IN ('completed', 'cancelled') AND finished_at < $1)
            OR (status = 'failed' AND finished_at < $2))
       AND ($3::text IS NULL OR workflow = $3)";

impl Client {
    /// Purges the outputs of the finished runs `options` selects, in batches of
    /// `options.batch` runs, each in a transaction of its own.
    pub async fn purge(&self, options: &PurgeOptions) -> Result<PurgeReport, EngineError> {
        let pool = self.pool();
        if options.dry_run {
            let (runs, steps, bytes): (i64, i64, i64) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "WITH batch AS ({CANDIDATES})
                     SELECT (SELECT count(*) FROM batch),
                            count(s.output) + count(s.output_sealed),
                            coalesce(sum(coalesce(pg_column_size(s.output),
                                                  pg_column_size(s.output_sealed))), 0)::bigint
                       FROM cairn.steps s JOIN batch ON s.run_id = batch.id"
                )))
                .bind(options.completed_before)
                .bind(options.failed_before)
                .bind(&options.workflow)
                .fetch_one(pool)
                .await?;
            return Ok(PurgeReport {
                runs: runs.unsigned_abs(),
                steps: steps.unsigned_abs(),
                bytes: bytes.unsigned_abs(),
                dry_run: true,
            });
        }
        let mut report = PurgeReport::default();
        loop {
            let (runs, steps, bytes): (i64, i64, i64) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "WITH batch AS ({CANDIDATES} ORDER BY finished_at LIMIT $4
                                   FOR UPDATE SKIP LOCKED),
                     sized AS (
                        SELECT s.run_id, s.position,
                               coalesce(pg_column_size(s.output),
                                        pg_column_size(s.output_sealed)) AS size
                          FROM cairn.steps s JOIN batch ON s.run_id = batch.id
                         WHERE s.output IS NOT NULL OR s.output_sealed IS NOT NULL
                     ),
                     events AS (
                        DELETE FROM cairn.events e USING batch WHERE e.run_id = batch.id
                     ),
                     steps AS (
                        UPDATE cairn.steps s SET output = NULL, output_sealed = NULL
                          FROM sized
                         WHERE s.run_id = sized.run_id AND s.position = sized.position
                        RETURNING s.run_id
                     ),
                     runs AS (
                        UPDATE cairn.runs r SET outputs_purged_at = now(), output = NULL
                          FROM batch WHERE r.id = batch.id
                        RETURNING r.id
                     )
                     SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps),
                            (SELECT coalesce(sum(size), 0)::bigint FROM sized)"
                )))
                .bind(options.completed_before)
                .bind(options.failed_before)
                .bind(&options.workflow)
                .bind(options.batch.max(1))
                .fetch_one(pool)
                .await?;
            report.runs += runs.unsigned_abs();
            report.steps += steps.unsigned_abs();
            report.bytes += bytes.unsigned_abs();
            if runs < options.batch.max(1) {
                return Ok(report);
            }
        }
    }
}

/// Runs purged per transaction by a worker's own purges.
const WORKER_BATCH: i64 = 500;

/// A worker's purges: every `retention.every`, each workflow `registry` serves is purged
/// by its own window (or the default), and its failed runs by the dead letters' window.
/// A failed purge is logged and tried again next time.
pub(crate) async fn keep(pool: PgPool, registry: Arc<Registry>, retention: Retention) {
    let client = Client::new(pool);
    // A window too long to subtract keeps everything.
    let before = |now: DateTime<Utc>, window: std::time::Duration| {
        chrono::Duration::from_std(window)
            .ok()
            .and_then(|window| now.checked_sub_signed(window))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    loop {
        let now = Utc::now();
        for workflow in registry.names() {
            let keep = registry.retention(&workflow).unwrap_or(retention.default);
            let options = PurgeOptions {
                completed_before: before(now, keep),
                failed_before: retention.dead_letters.map(|d| before(now, d)),
                workflow: Some(workflow.clone()),
                dry_run: false,
                batch: WORKER_BATCH,
            };
            match client.purge(&options).await {
                Ok(report) if report.runs > 0 => tracing::info!(
                    workflow = %workflow,
                    runs = report.runs,
                    steps = report.steps,
                    bytes = report.bytes,
                    "purged the step outputs of runs past their retention window"
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    workflow = %workflow,
                    error = %err,
                    "cannot purge past their retention window; trying again later"
                ),
            }
        }
        if let (Some(window), Some(set_aside)) =
            (retention.set_aside, registry.provided::<SetAside>())
        {
            for (what, purge) in &set_aside.purges {
                match purge(client.pool().clone(), before(now, window)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(what, records = n, "purged records set aside"),
                    Err(err) => tracing::warn!(
                        what,
                        error = %err,
                        "cannot purge records set aside; trying again later"
                    ),
                }
            }
        }
        tokio::time::sleep(retention.every).await;
    }
}
