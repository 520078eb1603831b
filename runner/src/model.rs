//! The records the engine stores and shows: runs, steps and their statuses.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RunId;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker.
    Pending,
    /// Leased by a worker that is executing it.
    Running,
    /// Parked on a durable timer (`ctx.sleep`).
    Sleeping,
    /// Parked because the vendor rate limited it, until a known instant.
    Parked,
    /// Backing off after a transient step failure.
    Retrying,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life order.
    pub const ALL: [RunStatus; 8] = [
        Self::Pending,
        Self::Running,
        Self::Sleeping,
        Self::Parked,
        Self::Retrying,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::Parked => "parked",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended and will never execute again on its own.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`RunStatus::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown run status `{0}`; expected one of: pending, running, sleeping, parked, retrying, completed, failed, cancelled"
)]
pub struct UnknownStatus(String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What kind of checkpoint a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// `ctx.step`: at-least-once.
    Step,
    /// `ctx.transaction`: effect and checkpoint commit together, exactly once.
    Transaction,
    /// `ctx.sleep`: a durable timer.
    Sleep,
}

impl StepKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Transaction => "transaction",
            Self::Sleep => "sleep",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Its output is stored; replay returns it without running the step.
    Completed,
    /// Attempts failed and more are due.
    Retrying,
    /// Its final error was returned to the workflow; replay returns that error.
    Failed,
}

impl StepStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as listed by `runs list`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RunSummary {
    /// The run's id.
    pub id: RunId,
    /// The workflow it executes.
    pub workflow: String,
    /// The queue it waits in.
    pub queue: String,
    /// Where it is.
    pub status: RunStatus,
    /// The key it was started with, if any.
    pub idempotency_key: Option<String>,
    /// Its priority: higher is claimed first.
    #[sqlx(default)]
    #[serde(default)]
    pub priority: i32,
    /// The concurrency key it counts against, if any.
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// When it becomes runnable (meaningful while waiting).
    pub wake_at: DateTime<Utc>,
    /// How often a worker claimed it: more than once means it was resumed.
    pub claims: i32,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One run with everything `runs show` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    /// The listing fields.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Its input.
    pub input: Value,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Its error, once failed.
    pub error: Option<Value>,
    /// The worker holding it, while running.
    pub lease_owner: Option<String>,
    /// When the current lease expires, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether cancellation was asked for and not yet honoured.
    pub cancel_requested: bool,
    /// When a worker first picked it up.
    pub started_at: Option<DateTime<Utc>>,
    /// What the workflow last reported about its progress.
    pub progress: Option<Value>,
    /// Its steps in order.
    pub steps: Vec<StepRecord>,
}

/// The most bytes a step output may take to store and still be included in a run's
/// display. Ids, counts and cursors fit; a sync's fetched pages (tens to hundreds of
/// kilobytes each) do not, and a display of all of them would be a copy of the vendor's
/// data. Outputs this small are stored uncompressed, so the figure is their JSON size.
pub const SHOWN_OUTPUT_BYTES: i64 = 2 * 1024;

/// One step of a run, as checkpointed.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct StepRecord {
    /// Its place in the run, from 0: unique in the run, in the order steps were first
    /// taken.
    pub position: i32,
    /// The branch of the run it belongs to (`""` for the main branch): a branch's
    /// steps replay in their order within it.
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    /// Its place in its branch, the replay key with the branch (a main-branch step's
    /// is its position).
    #[sqlx(default)]
    #[serde(skip)]
    pub(crate) seq: i32,
    /// The name the workflow gave it.
    pub name: String,
    /// Plain step, transaction or sleep.
    pub kind: StepKind,
    /// Where it is.
    pub status: StepStatus,
    /// The stored output, once completed. A run's display ([`crate::Client::show`])
    /// leaves out outputs that take more than [`SHOWN_OUTPUT_BYTES`] to store, such as
    /// a fetched page of records; replay always reads them in full.
    pub output: Option<Value>,
    /// In a run's display, how many bytes the output takes to store (after compression,
    /// which large outputs get).
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_stored_bytes: Option<i64>,
    /// The output as stored, read for replay: a step's output is deserialized from
    /// the text it was written as, never through a [`Value`], which would round a
    /// number that does not fit an `f64` and could not hold a raw JSON value.
    #[sqlx(default)]
    #[serde(skip)]
    pub(crate) stored_output: Option<String>,
    /// The output as sealed (when keys were configured as it was written), until
    /// [`StepRecord::unseal`] opens it into `output` or `stored_output`.
    #[sqlx(default)]
    #[serde(skip)]
    pub(crate) sealed_output: Option<Vec<u8>>,
    /// Attempts made (failed ones and the successful one).
    pub attempts: i32,
    /// Attempts refused by a rate limit (these do not use up the retry policy).
    pub throttled: i32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When its first attempt started.
    pub started_at: DateTime<Utc>,
    /// When its last attempt ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long its last attempt took.
    pub duration_ms: Option<f64>,
}

impl StepRecord {
    /// Opens a sealed output into `stored_output` (for replay) or `output` (for display).
    pub(crate) fn unseal(
        &mut self,
        sealer: &crate::seal::Sealer,
        for_replay: bool,
    ) -> Result<(), crate::seal::OpenError> {
        let Some(sealed) = self.sealed_output.take() else {
            return Ok(());
        };
        let text = sealer.read(&crate::seal::STEP_OUTPUTS, None, Some(&sealed))?;
        if for_replay {
            self.stored_output = text;
        } else {
            self.output = text.and_then(|text| serde_json::from_str(&text).ok());
        }
        Ok(())
    }
}
