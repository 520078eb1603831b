//! The dead-letter list: what could not be done automatically, for an operator to see
//! and act on.
//!
//! Two kinds of entries:
//!
//! - **Runs** ([`DeadRun`]): a run that failed — a step met a permanent error or used up
//!   its retries, or the workflow itself gave up — with the error's category and chain,
//!   the failing step and its attempts. [`DeadLetters::retry`] resumes it from the
//!   failing step: completed checkpoints before it are kept (those steps are not
//!   executed again) and the run is claimed afresh, fenced as any claim.
//! - **Records** ([`DeadRecord`]): a record the warehouse could not hold (a value that
//!   does not fit its typed column, schema drift, a missing key), kept in
//!   `cairn.quarantine` by the warehouse sink while the rest of its page landed. They
//!   are retried by re-applying the record through the sink (see `cairn dlq retry`),
//!   after which [`DeadLetters::remove_record`] drops the entry.
//!
//! An entry handled another way is taken off the list with [`DeadLetters::dismiss`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::seal::{QUARANTINED_RECORDS, Sealer};
use crate::store::WAKEUP_CHANNEL;
use crate::{EngineError, RunId};

/// The id of a dead-letter entry: a run id, or `record:<n>` for a quarantined record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum DeadLetterId {
    /// A failed run.
    Run(RunId),
    /// A quarantined record.
    Record(i64),
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(id) => id.fmt(f),
            Self::Record(id) => write!(f, "record:{id}"),
        }
    }
}

impl FromStr for DeadLetterId {
    type Err = DeadLetterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(n) = s.strip_prefix("record:") {
            return n
                .parse()
                .map(Self::Record)
                .map_err(|_| DeadLetterError::BadId(s.to_owned()));
        }
        RunId::from_str(s)
            .map(Self::Run)
            .map_err(|_| DeadLetterError::BadId(s.to_owned()))
    }
}

/// A failed run in the dead-letter list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadRun {
    /// The run.
    pub run_id: RunId,
    /// Its workflow.
    pub workflow: String,
    /// Its queue.
    pub queue: String,
    /// The key it was started with (`schedule:...` for scheduled runs).
    pub idempotency_key: Option<String>,
    /// How the error was classified (`permanent`, or `cancelled`, `transient` as stored).
    pub class: Option<String>,
    /// The category the error was tagged with (`auth`, `config`, `schema`, ...).
    pub category: Option<String>,
    /// The whole error message.
    pub message: Option<String>,
    /// The message of each error in the chain, outermost first.
    pub chain: Vec<String>,
    /// The first step that failed for good, if one did: where a retry resumes.
    pub failed_step: Option<FailedStep>,
    /// When the run failed.
    pub failed_at: Option<DateTime<Utc>>,
    /// Completed checkpoints before the failing step (kept by a retry).
    pub completed_steps: i64,
}

/// The step a dead run failed at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedStep {
    /// Its position in the run.
    pub position: i32,
    /// Its name.
    pub name: String,
    /// Attempts made.
    pub attempts: i32,
    /// Its last error.
    pub last_error: Option<String>,
}

/// A quarantined record in the dead-letter list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadRecord {
    /// Its entry number (`record:<id>`).
    pub id: i64,
    /// The source it came from (empty when neither it nor its table names one).
    pub source: String,
    /// The warehouse schema it was headed for.
    pub schema_name: String,
    /// Its stream.
    pub stream: String,
    /// Its primary key, when it had a usable one.
    pub record_id: Option<String>,
    /// Why it was set aside (`type_change`, `invalid_record`, `removed_field`, ...).
    pub kind: String,
    /// The details.
    pub reason: String,
    /// The record as received.
    pub record: Value,
    /// The record's text as stored, exactly as received (numbers keep every digit).
    #[serde(skip)]
    pub record_text: String,
    /// When the sync that met it ran.
    pub synced_at: DateTime<Utc>,
    /// When it was first set aside.
    pub first_seen: DateTime<Utc>,
    /// When it was last set aside.
    pub last_seen: DateTime<Utc>,
    /// How many times it was met (a record a vendor sends on every sync is kept once).
    pub times: i64,
}

/// Every dead letter, as `cairn dlq list` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// Failed runs, newest first.
    pub runs: Vec<DeadRun>,
    /// Quarantined records, newest first.
    pub records: Vec<DeadRecord>,
}

/// What [`DeadLetters::retry`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retried {
    /// The run, now pending.
    pub run_id: RunId,
    /// The step it resumes from (executed again, with every later one).
    pub from_step: Option<FailedStep>,
    /// Completed checkpoints kept: those steps are replayed, not executed.
    pub kept_steps: i64,
}

/// What went wrong with a dead-letter operation.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Not a run id nor `record:<n>`.
    #[error(
        "`{0}` is not a dead-letter id; use a run id (a UUID) or record:<n>, see `cairn dlq list`"
    )]
    BadId(String),
    /// No failed run has that id.
    #[error(
        "run {0} is not in the dead-letter list (no such run, or it has not failed); see `cairn dlq list`"
    )]
    NotDead(RunId),
    /// No quarantined record has that number.
    #[error("no dead-letter record:{0}; see `cairn dlq list`")]
    NoRecord(i64),
    /// The run's step outputs were purged: replaying it would run its workflow without
    /// what its completed steps returned.
    #[error(
        "run {0}'s step outputs were purged at {1} (retention), so it cannot resume from its \
         checkpoints; start a new run of its workflow instead"
    )]
    Purged(RunId, DateTime<Utc>),
    /// The database refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl DeadLetterError {
    /// Whether the caller is at fault (bad or unknown id); the CLI exits 2 for these.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Engine(err) => err.is_bad_input(),
            Self::BadId(_) | Self::NotDead(_) | Self::NoRecord(_) | Self::Purged(..) => true,
        }
    }
}

fn db(err: sqlx::Error) -> DeadLetterError {
    DeadLetterError::Engine(EngineError::db(err))
}

/// Reading and acting on the dead-letter list.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pool: PgPool,
    sealer: Sealer,
}

/// A quarantined record as read: `json` travels as text because it may hold what
/// `jsonb` refuses (a NUL escape).
#[derive(sqlx::FromRow)]
struct DeadRecordRow {
    id: i64,
    source: String,
    schema_name: String,
    stream: String,
    record_id: Option<String>,
    kind: String,
    reason: String,
    record: Option<String>,
    record_sealed: Option<Vec<u8>>,
    synced_at: DateTime<Utc>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    times: i64,
}

impl DeadRecordRow {
    /// The record, its stored text opened when it was sealed.
    fn open(mut self, sealer: &Sealer) -> Result<DeadRecord, DeadLetterError> {
        let text = sealer
            .read(
                &QUARANTINED_RECORDS,
                self.record.take(),
                self.record_sealed.as_deref(),
            )
            .map_err(EngineError::from)?
            .unwrap_or_default();
        Ok(DeadRecord::from_row(self.id, text, self))
    }
}

impl DeadRecord {
    fn from_row(id: i64, record: String, row: DeadRecordRow) -> Self {
        Self {
            id,
            source: row.source,
            schema_name: row.schema_name,
            stream: row.stream,
            record_id: row.record_id,
            kind: row.kind,
            reason: row.reason,
            // Text is kept if it ever does not parse (a record nested too deep, say).
            record: serde_json::from_str(&record).unwrap_or(Value::String(record.clone())),
            record_text: record,
            synced_at: row.synced_at,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            times: row.times,
        }
    }
}

#[derive(sqlx::FromRow)]
struct DeadRunRow {
    id: RunId,
    workflow: String,
    queue: String,
    idempotency_key: Option<String>,
    error: Option<Value>,
    finished_at: Option<DateTime<Utc>>,
    step_position: Option<i32>,
    step_name: Option<String>,
    step_attempts: Option<i32>,
    step_error: Option<String>,
    completed_steps: i64,
}

/// The failed runs with their failing step — the first step that failed for good; a
/// later failure may be a consequence of it (the workflow caught the error and went
/// another way), so a retry starts there — and the completed checkpoints before it.
const DEAD_RUNS_SQL: &str = "
    SELECT r.id, r.workflow, r.queue, r.idempotency_key, r.error, r.finished_at,
           s.position AS step_position, s.name AS step_name, s.attempts AS step_attempts,
           s.last_error AS step_error,
           (SELECT count(*) FROM cairn.steps c
             WHERE c.run_id = r.id AND c.status = 'completed'
               AND (s.position IS NULL OR c.position < s.position)) AS completed_steps
      FROM cairn.runs r
      LEFT JOIN LATERAL (
          SELECT position, name, attempts, last_error FROM cairn.steps
           WHERE run_id = r.id AND status = 'failed'
           ORDER BY position LIMIT 1
      ) s ON true
     WHERE r.status = 'failed'
       AND (($1::uuid IS NULL AND r.dead_letter_dismissed_at IS NULL) OR r.id = $1)
     ORDER BY r.finished_at DESC NULLS LAST, r.id DESC
     LIMIT $2";

const DEAD_RECORDS_SQL: &str = "
    SELECT id, coalesce(source, (SELECT t.source FROM cairn.warehouse_tables t
                                  WHERE t.schema_name = q.schema_name AND t.stream = q.stream),
                        '') AS source,
           schema_name, stream, record_id, kind, reason, record::text AS record, record_sealed,
           synced_at, first_seen, last_seen, times
      FROM cairn.quarantine q";

impl DeadLetters {
    /// The dead-letter list over `pool`, opening sealed records with this process's
    /// keys.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sealer: Sealer::process(),
        }
    }

    /// Failed runs and quarantined records, newest first, at most `limit` of each.
    pub async fn list(&self, limit: i64) -> Result<DeadLetterList, DeadLetterError> {
        let rows: Vec<DeadRunRow> = sqlx::query_as(DEAD_RUNS_SQL)
            .bind(None::<RunId>)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let records = self.records(None, limit).await?;
        Ok(DeadLetterList {
            runs: rows.into_iter().map(dead_run).collect(),
            records,
        })
    }

    /// One failed run.
    pub async fn run(&self, id: RunId) -> Result<DeadRun, DeadLetterError> {
        let row: Option<DeadRunRow> = sqlx::query_as(DEAD_RUNS_SQL)
            .bind(Some(id))
            .bind(1i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(dead_run).ok_or(DeadLetterError::NotDead(id))
    }

    /// One quarantined record.
    pub async fn record(&self, id: i64) -> Result<DeadRecord, DeadLetterError> {
        self.records(Some(id), 1)
            .await?
            .pop()
            .ok_or(DeadLetterError::NoRecord(id))
    }

    /// Quarantined records, newest first, at most `limit`, optionally of one source
    /// and one stream.
    pub async fn quarantined(
        &self,
        source: Option<&str>,
        stream: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadRecord>, DeadLetterError> {
        let rows: Vec<DeadRecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM ({DEAD_RECORDS_SQL}) r
              WHERE ($1::text IS NULL OR r.source = $1) AND ($2::text IS NULL OR r.stream = $2)
              ORDER BY last_seen DESC, id DESC LIMIT $3"
        )))
        .bind(source)
        .bind(stream)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(|row| row.open(&self.sealer)).collect()
    }

    async fn records(
        &self,
        id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeadRecord>, DeadLetterError> {
        let rows: Vec<DeadRecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{DEAD_RECORDS_SQL} WHERE $1::bigint IS NULL OR id = $1
              ORDER BY last_seen DESC, id DESC LIMIT $2"
        )))
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(|row| row.open(&self.sealer)).collect()
    }

    /// Locks a quarantined record for re-applying it in the caller's transaction; the
    /// caller removes it with [`DeadLetters::remove_record`] once it landed.
    pub async fn lock_record(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<DeadRecord, DeadLetterError> {
        let row: Option<DeadRecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{DEAD_RECORDS_SQL} WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
        row.ok_or(DeadLetterError::NoRecord(id))?.open(&self.sealer)
    }

    /// Drops a quarantined record that has now landed.
    pub async fn remove_record(conn: &mut PgConnection, id: i64) -> Result<(), DeadLetterError> {
        sqlx::query("DELETE FROM cairn.quarantine WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Takes an entry off the list without retrying it: a quarantined record is
    /// deleted; a failed run stays failed (and in `cairn runs list`) but is no longer
    /// listed as a dead letter. For what an operator has handled another way.
    pub async fn dismiss(&self, id: DeadLetterId) -> Result<(), DeadLetterError> {
        let done = match id {
            DeadLetterId::Run(run) => sqlx::query(
                "UPDATE cairn.runs SET dead_letter_dismissed_at = now()
                  WHERE id = $1 AND status = 'failed'",
            )
            .bind(run)
            .execute(&self.pool)
            .await
            .map_err(db)?,
            DeadLetterId::Record(n) => sqlx::query("DELETE FROM cairn.quarantine WHERE id = $1")
                .bind(n)
                .execute(&self.pool)
                .await
                .map_err(db)?,
        };
        if done.rows_affected() == 0 {
            return Err(match id {
                DeadLetterId::Run(run) => DeadLetterError::NotDead(run),
                DeadLetterId::Record(n) => DeadLetterError::NoRecord(n),
            });
        }
        Ok(())
    }

    /// Puts a failed run back in its queue so it resumes from the step that failed.
    ///
    /// In one transaction: the failing step's row and every later one are removed (a
    /// workflow may have run other steps after catching the error; they are executed
    /// again, so replay follows the path the retried step now takes), the completed
    /// checkpoints before it are kept, and the run becomes `pending` with its error
    /// cleared. Its next claim bumps the lease epoch as every claim does.
    pub async fn retry(&self, id: RunId) -> Result<Retried, DeadLetterError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let locked: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT queue, outputs_purged_at FROM cairn.runs
              WHERE id = $1 AND status = 'failed' FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some((queue, purged)) = locked else {
            return Err(DeadLetterError::NotDead(id));
        };
        if let Some(at) = purged {
            return Err(DeadLetterError::Purged(id, at));
        }
        let row: DeadRunRow = sqlx::query_as(DEAD_RUNS_SQL)
            .bind(Some(id))
            .bind(1i64)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(position) = row.step_position {
            sqlx::query("DELETE FROM cairn.steps WHERE run_id = $1 AND position >= $2")
                .bind(id)
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        sqlx::query(
            "UPDATE cairn.runs
                SET status = 'pending', wake_at = now(), error = NULL, output = NULL,
                    finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                    cancel_requested = false, dead_letter_dismissed_at = NULL,
                    updated_at = now()
              WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKEUP_CHANNEL)
            .bind(&queue)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let run = dead_run(row);
        Ok(Retried {
            run_id: id,
            from_step: run.failed_step,
            kept_steps: run.completed_steps,
        })
    }
}

fn dead_run(row: DeadRunRow) -> DeadRun {
    let error = row.error.unwrap_or(Value::Null);
    let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    let chain = error
        .get("chain")
        .and_then(Value::as_array)
        .map(|chain| {
            chain
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let failed_step = match (row.step_position, row.step_name) {
        (Some(position), Some(name)) => Some(FailedStep {
            position,
            name,
            attempts: row.step_attempts.unwrap_or(0),
            last_error: row.step_error,
        }),
        _ => None,
    };
    DeadRun {
        run_id: row.id,
        workflow: row.workflow,
        queue: row.queue,
        idempotency_key: row.idempotency_key,
        class: text("class"),
        category: text("category"),
        message: text("message"),
        chain,
        failed_step,
        failed_at: row.finished_at,
        completed_steps: row.completed_steps,
    }
}
