//! The scheduler every worker runs: starts the runs of due fire times, exactly once each.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tracing::{debug, info, warn};

use super::{CatchUp, Cron, Overlap, SCHEDULE_COLUMNS, Schedule, ScheduleRow};
use crate::new_run::NewRun;
use crate::store::Store;
use crate::{EngineError, Registry, RetryPolicy, RunId};

/// Where the scheduler reads the time. Injected so tests can step through fire times
/// and downtimes without waiting for them.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// A worker's clock drives a scheduler too: with a [`crate::Clock::skippable`] one,
/// skipped time makes schedules fire.
impl Clock for crate::Clock {
    fn now(&self) -> DateTime<Utc> {
        crate::Clock::now(self)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The longest wait between looks for due schedules (a schedule added meanwhile is
    /// noticed this soon); the scheduler otherwise sleeps until the next fire time.
    pub poll: Duration,
    /// A fire time noticed within this long of it is on time; older ones count as
    /// missed and follow the schedule's [`CatchUp`] policy.
    pub misfire_grace: Duration,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            misfire_grace: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What one [`Scheduler::tick`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickReport {
    /// Runs started: schedule, fire time, run.
    pub started: Vec<(String, DateTime<Utc>, RunId)>,
    /// Fire times that started nothing (overlap, or missed under catch-up `skip`/`once`).
    pub skipped: u64,
    /// The earliest next fire time of any enabled schedule.
    pub next_due: Option<DateTime<Utc>>,
}

/// The idempotency key of the run a schedule starts for a fire time.
pub fn fire_key(schedule: &str, fire: DateTime<Utc>) -> String {
    format!(
        "schedule:{schedule}:{}",
        fire.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

/// Starts the runs of due fire times. Any number may run against one database.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    config: SchedulerConfig,
    /// The workflows' default timeouts, when the scheduler knows the registry.
    registry: Option<Arc<Registry>>,
}

/// Due schedules handled per transaction; the rest wait for the next tick.
const BATCH: i64 = 50;

impl Scheduler {
    /// A scheduler over `pool`.
    pub fn new(pool: PgPool, config: SchedulerConfig) -> Self {
        Self {
            store: Store::new(pool),
            config,
            registry: None,
        }
    }

    /// Gives each scheduled run its workflow's default timeout from `registry`
    /// ([`Registry::set_timeout`]) as a deadline from its start.
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Handles every due schedule once: locks its row (rows another scheduler holds are
    /// left to it), starts the runs its policies call for with idempotent keys, and
    /// moves its next fire time past now, all before the row is released.
    pub async fn tick(&self) -> Result<TickReport, EngineError> {
        let now = self.config.clock.now();
        let mut report = TickReport::default();
        let mut tx = self.store.pool().begin().await.map_err(EngineError::db)?;
        let due: Vec<ScheduleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM cairn.schedules
              WHERE enabled AND next_fire_at <= $1
              ORDER BY next_fire_at LIMIT $2
              FOR UPDATE SKIP LOCKED"
        )))
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(EngineError::db)?;
        for row in due {
            self.fire(&mut tx, Schedule::from(row), now, &mut report)
                .await?;
        }
        tx.commit().await.map_err(EngineError::db)?;
        report.next_due =
            sqlx::query_scalar("SELECT min(next_fire_at) FROM cairn.schedules WHERE enabled")
                .fetch_one(self.store.pool())
                .await
                .map_err(EngineError::db)?;
        Ok(report)
    }

    async fn fire(
        &self,
        conn: &mut PgConnection,
        schedule: Schedule,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), EngineError> {
        let Some(first) = schedule.next_fire_at else {
            return Ok(());
        };
        let cron = match Cron::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron,
            Err(err) => {
                // Validated when added; only a time zone dropped from the database can
                // get here. Pausing it keeps the scheduler from tripping on it forever.
                warn!(schedule = %schedule.name, error = %err, "pausing a schedule that no longer parses");
                sqlx::query("UPDATE cairn.schedules SET enabled = false, next_fire_at = NULL WHERE name = $1")
                    .bind(&schedule.name)
                    .execute(&mut *conn)
                    .await
                    .map_err(EngineError::db)?;
                return Ok(());
            }
        };
        let plan = plan(
            &cron,
            first,
            now,
            self.config.misfire_grace,
            schedule.catch_up,
        );
        let mut skipped = plan.skipped;
        let mut last_run = schedule.last_run_id;
        let mut started = 0i64;
        for fire in plan.fire {
            if schedule.overlap == Overlap::Skip
                && let Some(previous) = last_run
                && self.still_going(previous).await?
            {
                debug!(schedule = %schedule.name, %fire, %previous, "previous run still going; skipping");
                skipped += 1;
                continue;
            }
            let key = fire_key(&schedule.name, fire);
            let deadline = self
                .registry
                .as_ref()
                .and_then(|registry| registry.timeout(&schedule.workflow))
                .map(|timeout| {
                    self.config.clock.now()
                        + chrono::Duration::from_std(timeout).unwrap_or(TimeDelta::MAX)
                });
            let run = NewRun {
                idempotency_key: Some(&key),
                deadline,
                ..NewRun::new(&schedule.workflow, &schedule.queue, &schedule.input)
            };
            let (run_id, created) = self.store.start(&run).await?;
            if created {
                info!(schedule = %schedule.name, %fire, %run_id, "scheduled run started");
            }
            report.started.push((schedule.name.clone(), fire, run_id));
            last_run = Some(run_id);
            started += 1;
        }
        report.skipped += skipped;
        sqlx::query(
            "UPDATE cairn.schedules
                SET last_fire_at = $2, next_fire_at = $3, last_run_id = $4,
                    runs_started = runs_started + $5, fires_skipped = fires_skipped + $6,
                    updated_at = now()
              WHERE name = $1",
        )
        .bind(&schedule.name)
        .bind(plan.latest)
        .bind(cron.next_after(now))
        .bind(last_run)
        .bind(started)
        .bind(skipped as i64)
        .execute(&mut *conn)
        .await
        .map_err(EngineError::db)?;
        Ok(())
    }

    /// Whether a schedule's previous run has yet to end (a run that no longer exists
    /// has).
    async fn still_going(&self, run: RunId) -> Result<bool, EngineError> {
        match self.store.status(run).await {
            Ok(status) => Ok(!status.is_terminal()),
            Err(EngineError::RunNotFound(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Ticks until `shutdown` completes, sleeping until the next fire time (at most the
    /// poll interval) in between. Database outages are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let wait = match self.tick().await {
                Ok(report) => {
                    failures = 0;
                    // Wake just after the next fire time, at once if it has passed
                    // while this tick ran.
                    let until_due = report.next_due.map(|at| {
                        (at - self.config.clock.now())
                            .to_std()
                            .map_or(Duration::ZERO, |d| d + Duration::from_millis(2))
                    });
                    until_due.map_or(self.config.poll, |d| d.min(self.config.poll))
                }
                Err(err) => {
                    failures += 1;
                    let delay = RetryPolicy::default()
                        .backoff(Duration::from_millis(200), Duration::from_secs(10))
                        .ceiling(failures);
                    warn!(error = %err, ?delay, "scheduler tick failed; retrying");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return,
            }
        }
    }
}

/// The fire times of one due schedule to start runs for.
#[derive(Debug, PartialEq)]
struct Plan {
    fire: Vec<DateTime<Utc>>,
    skipped: u64,
    latest: Option<DateTime<Utc>>,
}

/// Decides which due fire times (from `first` up to `now`) start runs: the on-time one
/// (the latest, if within `grace`) always; the missed ones as `catch_up` says.
fn plan(
    cron: &Cron,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
    catch_up: CatchUp,
) -> Plan {
    // The newest missed fire times the policy may start, plus the on-time one.
    let keep = match catch_up {
        CatchUp::All { cap } => cap as usize + 1,
        CatchUp::Once => 2,
        CatchUp::Skip => 1,
    };
    // Only the newest few matter; a long downtime of a per-second schedule must not
    // build a list of every second it missed.
    let mut tail: VecDeque<DateTime<Utc>> = VecDeque::with_capacity(keep + 1);
    let mut due = 0u64;
    for fire in cron.between(first, now) {
        due += 1;
        if tail.len() == keep {
            tail.pop_front();
        }
        tail.push_back(fire);
    }
    let Some(&latest) = tail.back() else {
        return Plan {
            fire: Vec::new(),
            skipped: 0,
            latest: None,
        };
    };
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let on_time = now - latest <= grace;
    let missed: Vec<DateTime<Utc>> = if on_time {
        tail.iter().rev().skip(1).rev().copied().collect()
    } else {
        tail.into_iter().collect()
    };
    let missed_total = due - u64::from(on_time);
    let mut fire = match catch_up {
        CatchUp::Skip => Vec::new(),
        CatchUp::Once => missed.last().copied().into_iter().collect(),
        CatchUp::All { cap } => {
            let from = missed.len().saturating_sub(cap as usize);
            missed[from..].to_vec()
        }
    };
    if missed_total > 0 {
        debug!(missed = missed_total, %catch_up, "fire times missed");
    }
    if on_time {
        fire.push(latest);
    }
    Plan {
        skipped: due - fire.len() as u64,
        fire,
        latest: Some(latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn catch_up_policies() {
        let cron = Cron::parse("* * * * *", "UTC").unwrap();
        let first = at("2026-01-01T10:01:00Z");
        let now = at("2026-01-01T10:05:30Z");
        let grace = Duration::from_secs(10);
        let skip = plan(&cron, first, now, grace, CatchUp::Skip);
        assert_eq!(skip.fire, Vec::<DateTime<Utc>>::new());
        assert_eq!(skip.skipped, 5);
        let once = plan(&cron, first, now, grace, CatchUp::Once);
        assert_eq!(once.fire, [at("2026-01-01T10:05:00Z")]);
        let all = plan(&cron, first, now, grace, CatchUp::All { cap: 3 });
        assert_eq!(
            all.fire,
            [
                at("2026-01-01T10:03:00Z"),
                at("2026-01-01T10:04:00Z"),
                at("2026-01-01T10:05:00Z")
            ]
        );
        assert_eq!(all.skipped, 2);
        // On time: the latest runs whatever the policy; the missed follow it.
        let late = at("2026-01-01T10:05:02Z");
        let skip = plan(&cron, first, late, grace, CatchUp::Skip);
        assert_eq!(skip.fire, [at("2026-01-01T10:05:00Z")]);
        let once = plan(&cron, first, late, grace, CatchUp::Once);
        assert_eq!(
            once.fire,
            [at("2026-01-01T10:04:00Z"), at("2026-01-01T10:05:00Z")]
        );
    }
}
