//! Every statement the engine runs against PostgreSQL.
//!
//! Each write a worker makes on behalf of a run is **fenced**: it names the lease epoch
//! the worker claimed the run with and succeeds only while that lease is current and
//! unexpired, checked under a row lock in the same statement. A worker that lost its
//! lease (expired, or taken over after a pause) gets [`Fenced::Lost`] and writes nothing.
//! Every hot-path write is a single statement, so a plain step's checkpoint costs one
//! round trip, and a transactional step's one more before its commit. Checkpoints are
//! written by one fenced writer (`checkpoints.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::model::{RunStatus, StepKind, StepRecord, StepStatus};
use crate::new_run::NewRun;
use crate::seal::Sealer;
use crate::{EngineError, RunId};

mod checkpoints;
mod claims;
mod runs;
mod writes;

pub(crate) use checkpoints::{OwnedStep, already_completed};
pub(crate) use claims::{Claim, KeyRoom};

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
    sealer: Sealer,
}

impl Store {
    /// A store over `pool`, sealing with this process's keys ([`Sealer::process`]).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sealer: Sealer::process(),
        }
    }

    /// The store sealing with `sealer` instead.
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// What the store seals step outputs and events with.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
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
}
