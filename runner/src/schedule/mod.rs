//! Cron schedules: start a workflow's run at every fire time of a cron expression.
//!
//! Schedules live in `cairn.schedules`. Every worker runs a [`Scheduler`]; a due
//! schedule row is handled by one worker at a time (`FOR UPDATE SKIP LOCKED`) and each
//! fire time starts its run with the idempotency key `schedule:<name>:<fire time>`, so a
//! fire time starts exactly one run however many workers are up, crashes included.
//!
//! Two policies shape what runs:
//!
//! - [`Overlap`]: `skip` starts no run while the schedule's previous run is still going
//!   (the fire time is counted as skipped); `allow` starts it anyway.
//! - [`CatchUp`], for fire times missed while no scheduler was up (a fire time is
//!   missed when it is older than the scheduler's misfire grace and a later one is due,
//!   or when it is the latest and older than the grace): `skip` drops them, `once`
//!   starts one run for the latest of them, `all` starts one per missed fire time, the
//!   newest `cap` of them.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), cairn_runner::schedule::ScheduleError> {
//! use cairn_runner::schedule::{CatchUp, Overlap, ScheduleSpec, Schedules};
//!
//! let spec = ScheduleSpec::new("nightly-ledger", "0 3 * * *", "ledger")?
//!     .with_timezone("Europe/Berlin")?
//!     .with_catch_up(CatchUp::Once)
//!     .with_overlap(Overlap::Skip);
//! Schedules::new(pool).add(&spec, false).await?;
//! # Ok(()) }
//! ```

mod cron_expr;
mod scheduler;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use crate::{EngineError, RunId};

pub use cron_expr::{Cron, CronError};
pub use scheduler::{Clock, Scheduler, SchedulerConfig, SystemClock, TickReport, fire_key};

/// What happens to a fire time while the schedule's previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Start no run; the fire time counts as skipped.
    #[default]
    Skip,
    /// Start the run anyway.
    Allow,
}

/// What happens to fire times missed while no scheduler was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", tag = "policy")]
pub enum CatchUp {
    /// Drop them; the schedule goes on from the next fire time.
    #[default]
    Skip,
    /// Start one run, for the latest missed fire time.
    Once,
    /// Start one run per missed fire time, the newest `cap` of them.
    All {
        /// The most runs started for missed fire times at once.
        cap: u32,
    },
}

impl CatchUp {
    fn name(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Once => "once",
            Self::All { .. } => "all",
        }
    }

    fn cap(self) -> i32 {
        match self {
            Self::All { cap } => cap.max(1).min(i32::MAX as u32) as i32,
            Self::Skip | Self::Once => 10,
        }
    }

    fn from_stored(name: &str, cap: i32) -> Self {
        match name {
            "once" => Self::Once,
            "all" => Self::All {
                cap: cap.max(1) as u32,
            },
            _ => Self::Skip,
        }
    }
}

impl FromStr for Overlap {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "allow" => Ok(Self::Allow),
            other => Err(ScheduleError::Policy(format!(
                "unknown overlap policy `{other}`; expected skip or allow"
            ))),
        }
    }
}

impl FromStr for CatchUp {
    type Err = ScheduleError;

    /// `skip`, `once`, `all` (cap 10) or `all:<cap>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "skip" => Ok(Self::Skip),
            None if s == "once" => Ok(Self::Once),
            None if s == "all" => Ok(Self::All { cap: 10 }),
            Some(("all", cap)) => match cap.parse::<u32>() {
                Ok(cap) if cap >= 1 => Ok(Self::All { cap }),
                _ => Err(ScheduleError::Policy(format!(
                    "catch-up cap `{cap}` must be a whole number of at least 1 (as in all:10)"
                ))),
            },
            _ => Err(ScheduleError::Policy(format!(
                "unknown catch-up policy `{s}`; expected skip, once, all or all:<cap>"
            ))),
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All { cap } => write!(f, "all:{cap}"),
            other => f.write_str(other.name()),
        }
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Skip => "skip",
            Self::Allow => "allow",
        })
    }
}

/// A schedule to create: what to start, when, and under which policies.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// The schedule's unique name.
    pub name: String,
    /// When it fires.
    pub cron: Cron,
    /// The workflow each fire time starts.
    pub workflow: String,
    /// The input of every run.
    pub input: Value,
    /// The queue the runs wait in.
    pub queue: String,
    /// See [`Overlap`].
    pub overlap: Overlap,
    /// See [`CatchUp`].
    pub catch_up: CatchUp,
}

impl ScheduleSpec {
    /// A schedule `name` starting `workflow` with input `{}` at every fire time of `cron`
    /// (read in UTC), on the default queue, skipping overlaps and missed fire times.
    pub fn new(name: &str, cron: &str, workflow: &str) -> Result<Self, ScheduleError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ScheduleError::Policy(
                "a schedule needs a non-empty name".to_owned(),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            cron: Cron::parse(cron, "UTC")?,
            workflow: workflow.to_owned(),
            input: Value::Object(Default::default()),
            queue: "default".to_owned(),
            overlap: Overlap::default(),
            catch_up: CatchUp::default(),
        })
    }

    /// Reads the expression in `timezone` (an IANA name).
    pub fn with_timezone(mut self, timezone: &str) -> Result<Self, ScheduleError> {
        self.cron = Cron::parse(self.cron.expression(), timezone)?;
        Ok(self)
    }

    /// Every run gets `input`.
    #[must_use]
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Runs wait in `queue`.
    #[must_use]
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the overlap policy.
    #[must_use]
    pub fn with_overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// Sets the catch-up policy.
    #[must_use]
    pub fn with_catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }
}

/// A stored schedule, as `cairn schedule list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    /// Its unique name.
    pub name: String,
    /// The cron expression as written.
    pub cron: String,
    /// The time zone it is read in.
    pub timezone: String,
    /// The workflow each fire time starts.
    pub workflow: String,
    /// The input of every run.
    pub input: Value,
    /// The queue runs wait in.
    pub queue: String,
    /// Whether it fires (false while paused).
    pub enabled: bool,
    /// See [`Overlap`].
    pub overlap: Overlap,
    /// See [`CatchUp`].
    pub catch_up: CatchUp,
    /// The latest fire time handled (started or skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The next fire time (none while paused).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The run the latest started fire time created.
    pub last_run_id: Option<RunId>,
    /// Runs started so far.
    pub runs_started: i64,
    /// Fire times skipped so far (overlap, or missed under catch-up `skip`).
    pub fires_skipped: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    name: String,
    cron: String,
    timezone: String,
    workflow: String,
    input: Value,
    queue: String,
    enabled: bool,
    overlap: String,
    catch_up: String,
    catch_up_cap: i32,
    last_fire_at: Option<DateTime<Utc>>,
    next_fire_at: Option<DateTime<Utc>>,
    last_run_id: Option<RunId>,
    runs_started: i64,
    fires_skipped: i64,
    created_at: DateTime<Utc>,
}

pub(crate) const SCHEDULE_COLUMNS: &str = "name, cron, timezone, workflow, input, queue, enabled, \
     overlap, catch_up, catch_up_cap, last_fire_at, next_fire_at, last_run_id, runs_started, \
     fires_skipped, created_at";

impl From<ScheduleRow> for Schedule {
    fn from(row: ScheduleRow) -> Self {
        Self {
            overlap: Overlap::from_str(&row.overlap).unwrap_or_default(),
            catch_up: CatchUp::from_stored(&row.catch_up, row.catch_up_cap),
            name: row.name,
            cron: row.cron,
            timezone: row.timezone,
            workflow: row.workflow,
            input: row.input,
            queue: row.queue,
            enabled: row.enabled,
            last_fire_at: row.last_fire_at,
            next_fire_at: row.next_fire_at,
            last_run_id: row.last_run_id,
            runs_started: row.runs_started,
            fires_skipped: row.fires_skipped,
            created_at: row.created_at,
        }
    }
}

/// What went wrong with a schedule operation.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression or time zone cannot be used.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// A policy or name is not valid.
    #[error("{0}")]
    Policy(String),
    /// A schedule of that name exists already.
    #[error("a schedule named `{0}` exists already; remove it first or add it with --replace")]
    Exists(String),
    /// No schedule has that name.
    #[error("no schedule named `{0}`; see `cairn schedule list`")]
    NotFound(String),
    /// The database refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ScheduleError {
    /// Whether the caller is at fault (bad expression, time zone, policy or name); the
    /// CLI exits 2 for these.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Engine(err) => err.is_bad_input(),
            Self::Cron(_) | Self::Policy(_) | Self::Exists(_) | Self::NotFound(_) => true,
        }
    }
}

/// Creating, listing, pausing, resuming and removing schedules.
#[derive(Debug, Clone)]
pub struct Schedules {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl Schedules {
    /// Schedules over `pool`, on the system clock.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same, judging "now" (the first fire time of a new or resumed schedule) by
    /// `clock`; tests pass the clock they give the [`Scheduler`].
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Stores `spec`. Its first fire time is the first after now. With `replace`, a
    /// schedule of the same name is redefined (its history of fires is kept); without,
    /// it is an error.
    pub async fn add(&self, spec: &ScheduleSpec, replace: bool) -> Result<Schedule, ScheduleError> {
        let next = spec.cron.next_after(self.clock.now());
        let row: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cairn.schedules AS s (name, cron, timezone, workflow, input, queue,
                                               overlap, catch_up, catch_up_cap, next_fire_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (name) DO UPDATE
                SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
                    workflow = EXCLUDED.workflow, input = EXCLUDED.input,
                    queue = EXCLUDED.queue, overlap = EXCLUDED.overlap,
                    catch_up = EXCLUDED.catch_up, catch_up_cap = EXCLUDED.catch_up_cap,
                    next_fire_at = CASE WHEN s.enabled THEN EXCLUDED.next_fire_at END,
                    updated_at = now()
              WHERE $11
             RETURNING {SCHEDULE_COLUMNS}"
        )))
        .bind(&spec.name)
        .bind(spec.cron.expression())
        .bind(spec.cron.timezone())
        .bind(&spec.workflow)
        .bind(&spec.input)
        .bind(&spec.queue)
        .bind(spec.overlap.to_string())
        .bind(spec.catch_up.name())
        .bind(spec.catch_up.cap())
        .bind(next)
        .bind(replace)
        .fetch_optional(&self.pool)
        .await
        .map_err(EngineError::db)?;
        row.map(Schedule::from)
            .ok_or_else(|| ScheduleError::Exists(spec.name.clone()))
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<Schedule>, ScheduleError> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM cairn.schedules ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::db)?;
        Ok(rows.into_iter().map(Schedule::from).collect())
    }

    /// One schedule.
    pub async fn get(&self, name: &str) -> Result<Schedule, ScheduleError> {
        let row: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM cairn.schedules WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(EngineError::db)?;
        row.map(Schedule::from)
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))
    }

    /// Stops the schedule firing. Idempotent.
    pub async fn pause(&self, name: &str) -> Result<Schedule, ScheduleError> {
        self.set_enabled(name, false).await
    }

    /// Makes a paused schedule fire again from its next fire time after now: fire
    /// times that passed while it was paused are not caught up. Idempotent.
    pub async fn resume(&self, name: &str) -> Result<Schedule, ScheduleError> {
        self.set_enabled(name, true).await
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Schedule, ScheduleError> {
        let current = self.get(name).await?;
        let next = if enabled {
            let cron = Cron::parse(&current.cron, &current.timezone)?;
            match current.next_fire_at {
                Some(next) if current.enabled => Some(next),
                _ => cron.next_after(self.clock.now()),
            }
        } else {
            None
        };
        let row: Option<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE cairn.schedules SET enabled = $2, next_fire_at = $3, updated_at = now()
              WHERE name = $1 RETURNING {SCHEDULE_COLUMNS}"
        )))
        .bind(name)
        .bind(enabled)
        .bind(next)
        .fetch_optional(&self.pool)
        .await
        .map_err(EngineError::db)?;
        row.map(Schedule::from)
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))
    }

    /// Deletes the schedule; runs it started are kept.
    pub async fn remove(&self, name: &str) -> Result<(), ScheduleError> {
        let done = sqlx::query("DELETE FROM cairn.schedules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(EngineError::db)?;
        if done.rows_affected() == 0 {
            return Err(ScheduleError::NotFound(name.to_owned()));
        }
        Ok(())
    }
}
