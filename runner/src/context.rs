//! The workflow's handle on its run: checkpointed steps, transactional steps and
//! durable timers.
//!
//! Every call that makes a checkpoint takes the next **position** in the run. On replay
//! the stored checkpoint at that position is returned without running anything, so a
//! workflow must call the same steps in the same order every time it runs; a name that
//! differs from the stored one fails the run with a non-determinism error.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::Notify;
use tracing::{Instrument, debug, info_span, warn};

use crate::db_retry::{DbFailure, retry_db};
use crate::error::{ErrorReport, panic_message};
use crate::group_commit::GroupCommit;
use crate::model::{RunStatus, StepKind, StepRecord, StepStatus};
use crate::store::{Fenced, Lease, OwnedStep, StepWrite, Store, already_completed};
use crate::waits::{Park, Timer, Waits};
use crate::{Clock, CrashPlan, CrashPoint, Error, RetryPolicy, RunId, Stored};

/// The handle a workflow gets on its run. Cheap to clone.
///
/// # How a run replays
///
/// A workflow function does not resume where it stopped: after every park (a durable
/// sleep, a rate-limit wait, a long backoff, an event wait, a child wait), after a crash
/// and after a lost lease, a worker calls it **again from the top** with the same input.
/// Each step, transaction, sleep and wait takes the next place of its branch when it is
/// first polled; a place that holds a checkpoint returns the stored result at once,
/// without running anything. So:
///
/// - Code outside steps runs again on every replay: a `Utc::now()`, a random value, a
///   log line or a side effect there happens each time. Put side effects in steps, and
///   take time and randomness from [`Context::now`], [`Context::random`] and
///   [`Context::uuid`], which are recorded once.
/// - Call the same steps in the same order every time; a different name at a stored
///   place fails the run with a [`NonDeterminism`] error naming both. Change a workflow
///   behind [`Context::patched`].
/// - Steps awaited together on one `Context` (a `join!` of steps) take their places in
///   the order they are first polled, which replays only while each future is a single
///   step. Give every sequence of steps that runs beside another a branch of its own
///   ([`Context::fork`], [`Context::parallel`]).
/// - `ctx.step` is at least once (a crash after its effect and before its checkpoint
///   runs it again); `ctx.transaction` is exactly once for what it writes on its
///   transaction.
#[derive(Clone)]
pub struct Context {
    run: Arc<RunState>,
    branch: Arc<Branch>,
}

/// A branch of a run: the main one, or one of those [`Context::fork`] made. Its steps
/// replay in the order the branch took them, whatever other branches did meanwhile.
struct Branch {
    /// `""` for the main branch; a fork's is its parent's, its fork's ordinal and its
    /// index (`"0.1"`, `"0.1/2.0"`).
    id: String,
    /// Steps taken in this branch so far.
    taken: AtomicUsize,
    /// Forks made from this branch so far.
    forks: AtomicUsize,
}

impl Branch {
    fn new(id: String) -> Arc<Self> {
        Arc::new(Self {
            id,
            taken: AtomicUsize::new(0),
            forks: AtomicUsize::new(0),
        })
    }
}

/// Why the worker must stop executing a run before its workflow returned.
#[derive(Debug)]
pub(crate) enum Halt {
    /// The run was parked (durable timer, rate limit, long backoff) and holds no worker.
    Parked(DateTime<Utc>),
    /// Cancellation was requested: end the run as cancelled.
    Cancelled,
    /// The worker is shutting down, or the run must go on from its stored checkpoints
    /// rather than from memory: hand the run back to the queue.
    Released,
    /// The lease is gone: drop the run without writing anything.
    Lost,
    /// The run cannot go on (non-determinism, an unreadable checkpoint): end it failed.
    Failed(ErrorReport),
}

/// Flags the worker and the run share.
#[derive(Default)]
pub(crate) struct Signals {
    pub(crate) cancel: AtomicBool,
    pub(crate) lost: AtomicBool,
    halt: Mutex<Option<Halt>>,
    pub(crate) halted: Notify,
}

/// What a sleep step stores (written by the park statement): when the timer fires.
#[derive(serde::Deserialize)]
struct SleepOutput {
    wake_at: DateTime<Utc>,
}

impl Signals {
    /// Records why the run must stop (the first reason wins) and wakes the worker.
    pub(crate) fn halt(&self, why: Halt) {
        let mut slot = self.halt.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(why);
            self.halted.notify_one();
        }
    }

    pub(crate) fn take_halt(&self) -> Option<Halt> {
        self.halt.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Settings the worker hands every run.
#[derive(Clone)]
pub(crate) struct RunSettings {
    pub(crate) store: Store,
    /// Where plain steps' checkpoints and runs' ends are written, sharing commits
    /// between runs.
    pub(crate) group_commit: GroupCommit,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) default_retry: RetryPolicy,
    /// Backoffs up to this long are waited out in the worker; longer ones park the run.
    pub(crate) inline_backoff: Duration,
    pub(crate) lease: Duration,
    /// What durable time is measured by.
    pub(crate) clock: Clock,
    /// Where a test stops the worker dead.
    pub(crate) crash: CrashPlan,
    /// The workflows this worker knows: children started here are checked against it.
    pub(crate) registry: Arc<crate::Registry>,
}

/// The shortest time between two progress reports written with checkpoints. Writing
/// one updates the run's row, which waits for every transactional step in flight to
/// commit (each holds that row under a share lock): written with every checkpoint, it
/// put a sync's page landings in single file. A few reports a second are plenty for
/// people watching.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// A progress report waiting for a checkpoint, and when the last one was written.
#[derive(Default)]
struct ProgressSlot {
    pending: Option<Value>,
    written_at: Option<Instant>,
}

impl RunState {
    /// The progress report no checkpoint has carried yet.
    pub(crate) fn pending_progress(&self) -> Option<Value> {
        self.progress_slot().pending.clone()
    }

    /// The progress report for the next checkpoint to carry: the pending one, unless a
    /// report was written less than [`PROGRESS_INTERVAL`] ago.
    fn due_progress(&self) -> Option<Value> {
        let slot = self.progress_slot();
        match slot.written_at {
            Some(at) if at.elapsed() < PROGRESS_INTERVAL => None,
            _ => slot.pending.clone(),
        }
    }

    fn progress_slot(&self) -> std::sync::MutexGuard<'_, ProgressSlot> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct RunState {
    pub(crate) lease: Lease,
    workflow: String,
    /// The stored steps not replayed yet, by branch and place in it.
    history: Mutex<HashMap<(String, i32), StepRecord>>,
    /// The position the next new step of a forked branch takes (a main-branch step's
    /// position is its place in the main branch).
    next_forked: AtomicI32,
    /// A progress report for a checkpoint to carry.
    progress: Mutex<ProgressSlot>,
    pub(crate) signals: Signals,
    /// What the run's branches are doing: steps running, durable waits.
    pub(crate) waits: Waits,
    /// When the run must have ended.
    deadline: Option<DateTime<Utc>>,
    /// The run's priority, which its children inherit.
    pub(crate) priority: i32,
    pub(crate) settings: RunSettings,
}

/// Where a step starts from when it is not settled in the history.
struct Progress {
    attempts: i32,
    throttled: i32,
    started_at: DateTime<Utc>,
    /// Since when attempts have failed because the engine's database was unreachable,
    /// and how often.
    unreachable_since: Option<(Instant, u32)>,
}

enum Replay<T> {
    Settled(Result<T, Error>),
    Resume(Progress),
}

/// The code of a run no longer calls the steps its history recorded.
#[derive(Debug, thiserror::Error)]
#[error(
    "non-determinism in workflow `{workflow}` at step position {position}: the code now calls \
     {found_kind} `{found}` where the run's history has {stored_kind} `{stored}`; a workflow \
     must call the same steps in the same order on replay (ship changed workflows under a new \
     name, or let old runs finish first)"
)]
pub struct NonDeterminism {
    /// The workflow.
    pub workflow: String,
    /// The step position where code and history part.
    pub position: i32,
    /// The name in the history.
    pub stored: String,
    /// The kind in the history.
    pub stored_kind: &'static str,
    /// The name the code uses now.
    pub found: String,
    /// The kind the code uses now.
    pub found_kind: &'static str,
}

/// A step's stored final error, replayed.
#[derive(Debug, thiserror::Error)]
#[error("step `{name}` failed earlier in this run: {message}")]
pub(crate) struct StoredFailure {
    pub(crate) name: String,
    pub(crate) message: String,
}

enum TxOutcome<T> {
    Committed(T),
    Failed(Error),
}

impl Context {
    pub(crate) fn new(
        lease: Lease,
        workflow: String,
        history: Vec<StepRecord>,
        deadline: Option<DateTime<Utc>>,
        priority: i32,
        settings: RunSettings,
    ) -> Self {
        let next_forked = history
            .iter()
            .map(|s| s.position + 1)
            .filter(|p| *p > FORKED_POSITIONS)
            .max()
            .unwrap_or(FORKED_POSITIONS);
        let history = history
            .into_iter()
            .map(|s| ((s.branch.clone(), s.seq), s))
            .collect();
        Self {
            branch: Branch::new(String::new()),
            run: Arc::new(RunState {
                lease,
                workflow,
                history: Mutex::new(history),
                next_forked: AtomicI32::new(next_forked),
                progress: Mutex::default(),
                signals: Signals::default(),
                waits: Waits::default(),
                deadline,
                priority,
                settings,
            }),
        }
    }

    pub(crate) fn state(&self) -> &Arc<RunState> {
        &self.run
    }

    /// The id of this run.
    pub fn run_id(&self) -> RunId {
        self.run.lease.run_id
    }

    /// A branch beside this one: the `index`-th of this branch's `fork`-th fork. Its
    /// id depends only on where the fork is in the workflow, so a replay finds it again.
    pub(crate) fn branch_of_fork(&self, fork: usize, index: usize) -> Self {
        let parent = &self.branch.id;
        let id = if parent.is_empty() {
            format!("{fork}.{index}")
        } else {
            format!("{parent}/{fork}.{index}")
        };
        Self {
            run: Arc::clone(&self.run),
            branch: Branch::new(id),
        }
    }

    /// The id of this context's branch (`""` for the main one).
    pub(crate) fn branch_id(&self) -> &str {
        &self.branch.id
    }

    /// The run's shared state: what its branches wait on.
    pub(crate) fn waits(&self) -> &Waits {
        &self.run.waits
    }

    /// The lease this execution holds.
    pub(crate) fn lease(&self) -> Lease {
        self.run.lease
    }

    /// Takes the next fork ordinal of this branch.
    pub(crate) fn next_fork(&self) -> usize {
        self.branch.forks.fetch_add(1, Ordering::Relaxed)
    }

    /// Where a test's crash plan stops this worker dead (see [`CrashPlan`]).
    async fn crash_point(&self, step: &str, point: CrashPoint) {
        self.run.settings.crash.pass(step, point).await;
    }

    /// The clock this run's durable time is measured by.
    pub(crate) fn clock(&self) -> &Clock {
        &self.run.settings.clock
    }

    /// The name of the workflow this run executes.
    pub fn workflow(&self) -> &str {
        &self.run.workflow
    }

    /// The engine's database pool, for reads and for plain steps that write elsewhere.
    /// Writes that must happen exactly once belong in [`Context::transaction`].
    pub fn pool(&self) -> &PgPool {
        self.run.settings.store.pool()
    }

    /// Records what the run has done so far (records, pages, estimates) for
    /// `cairn runs show` to display. The report rides on the run's next plain step
    /// checkpoint (in the same statement; at most four times a second) or on the run's
    /// end, so it costs no round trip of its own.
    pub fn set_progress(&self, progress: &impl Serialize) -> Result<(), Error> {
        let progress = crate::redact::redact_json(serde_json::to_value(progress)?);
        self.run.progress_slot().pending = Some(progress);
        Ok(())
    }

    /// Forgets a progress report once a checkpoint has carried it.
    fn progress_written(&self, written: &Option<Value>) {
        if written.is_some() {
            let mut slot = self.run.progress_slot();
            slot.written_at = Some(Instant::now());
            if slot.pending == *written {
                slot.pending = None;
            }
        }
    }

    /// Steps started through the returned handle use `policy` instead of the default
    /// retry policy: `ctx.with_retry(RetryPolicy::attempts(10)).step("fetch", ...)`.
    pub fn with_retry(&self, policy: RetryPolicy) -> Steps<'_> {
        Steps {
            ctx: self,
            how: How {
                policy,
                timeout: None,
            },
        }
    }

    /// Steps started through the returned handle give up an attempt that runs longer
    /// than `timeout` (a transient failure in the `timeout` category, retried under the
    /// retry policy): `ctx.with_timeout(Duration::from_secs(30)).step("call", ...)`.
    pub fn with_timeout(&self, timeout: Duration) -> Steps<'_> {
        self.with_retry(self.run.settings.default_retry)
            .with_timeout(timeout)
    }

    /// Runs `f` once and checkpoints its output; on replay returns the stored output
    /// without running `f`.
    ///
    /// At-least-once: if the process dies after `f`'s side effect but before the
    /// checkpoint commits, `f` runs again on recovery. Transient errors are retried with
    /// the default [`RetryPolicy`]; [`Error::rate_limited_until`] parks the run; after the
    /// last attempt, or on a permanent error, the error is returned.
    pub async fn step<T, F, Fut>(&self, name: impl Into<String>, f: F) -> Result<T, Error>
    where
        T: Stored,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let how = How {
            policy: self.run.settings.default_retry,
            timeout: None,
        };
        self.run_step(name.into(), how, f).await
    }

    /// Runs `f` inside a database transaction whose commit also stores the step's
    /// checkpoint, so the step's writes take effect **exactly once**: a crash before the
    /// commit rolls both back, and the step runs again; after it, replay returns the
    /// stored output. Warehouse upserts and cursor advances belong here.
    ///
    /// The closure gets a [`Tx`] handle (an owned value, so the closure's future stays
    /// `Send` and may borrow from the workflow); `tx.conn()` is the connection to run
    /// statements on, and the transaction begins at its first call. The checkpoint is sent
    /// in the same message as the COMMIT, so it adds no round trip to the transaction.
    /// The closure runs again if the transaction is retried.
    ///
    /// ```no_run
    /// # use cairn_runner::{Context, Error};
    /// # async fn example(ctx: Context, rows: Vec<(i64, String)>) -> Result<(), Error> {
    /// let rows = &rows;
    /// let written = ctx
    ///     .transaction("upsert", |tx| async move {
    ///         let mut conn = tx.conn().await?;
    ///         for (id, name) in rows {
    ///             sqlx::query("INSERT INTO contacts (id, name) VALUES ($1, $2)
    ///                          ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name")
    ///                 .bind(id)
    ///                 .bind(name)
    ///                 .execute(&mut *conn)
    ///                 .await?;
    ///         }
    ///         Ok(rows.len())
    ///     })
    ///     .await?;
    /// # let _ = written; Ok(()) }
    /// ```
    pub async fn transaction<T, F, Fut>(&self, name: impl Into<String>, f: F) -> Result<T, Error>
    where
        T: Stored,
        F: FnMut(Tx) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let how = How {
            policy: self.run.settings.default_retry,
            timeout: None,
        };
        self.run_transaction(name.into(), how, f).await
    }

    /// A durable timer: this branch of the run waits until `duration` has passed.
    /// When nothing else in the run can go on meanwhile (no step running beside it in a
    /// `join`), the run is parked and no worker holds it. Survives restarts; on replay a
    /// timer that has fired returns at once.
    pub async fn sleep(&self, duration: Duration) {
        let Slot {
            position,
            seq,
            stored,
        } = self.next_slot();
        let name = "sleep";
        let (started_at, wake_at) = match stored {
            Some(record) => {
                self.check_same(&record, name, StepKind::Sleep).await;
                let wake_at = record
                    .stored_output
                    .as_deref()
                    .and_then(|o| serde_json::from_str::<SleepOutput>(o).ok())
                    .map(|o| o.wake_at);
                match wake_at {
                    Some(at) => (record.started_at, at),
                    None => return,
                }
            }
            None => {
                self.boundary().await;
                let now = self.clock().now();
                let at =
                    now + chrono::Duration::from_std(duration).unwrap_or(chrono::TimeDelta::MAX);
                let output = serde_json::json!({ "wake_at": at }).to_string();
                let mut write = self.sleep_write(position, seq, name, &now);
                write.output = Some(&output);
                let group_commit = &self.run.settings.group_commit;
                let lease = self.run.lease;
                match self
                    .persist(name, || group_commit.write_step(lease, &write))
                    .await
                {
                    Ok(cancel) => self.note_cancel(cancel),
                    Err(err) => self.halt::<()>(Halt::Failed(err.report())).await,
                }
                (now, at)
            }
        };
        if wake_at <= self.clock().now() {
            return;
        }
        let output = serde_json::json!({ "wake_at": wake_at }).to_string();
        let mut write = self.sleep_write(position, seq, name, &started_at);
        write.output = Some(&output);
        self.wait_until(position, wake_at, RunStatus::Sleeping, &write, false)
            .await;
    }

    /// Waits in this branch until `at`, registered as a durable wait: if the run parks
    /// meanwhile (every branch waits), it parks in `status` and `step` is the step row
    /// its park writes. `active`: the caller is a step attempt, waiting rather than
    /// running until then.
    pub(crate) async fn wait_until(
        &self,
        position: i32,
        at: DateTime<Utc>,
        status: RunStatus,
        step: &StepWrite<'_>,
        active: bool,
    ) {
        self.within_deadline().await;
        let timer = Timer {
            at,
            status,
            step: OwnedStep::new(step),
        };
        let _registered = self.run.waits.register(position, timer, active);
        self.clock().sleep_until(at).await;
    }

    fn sleep_write<'a>(
        &'a self,
        position: i32,
        seq: Option<i32>,
        name: &'a str,
        started_at: &DateTime<Utc>,
    ) -> StepWrite<'a> {
        StepWrite {
            position,
            branch: &self.branch.id,
            seq,
            name,
            kind: StepKind::Sleep,
            status: StepStatus::Completed,
            output: None,
            attempts: 1,
            throttled: 0,
            last_error: None,
            started_at: *started_at,
            duration: Duration::ZERO,
            progress: None,
        }
    }

    async fn run_step<T, F, Fut>(
        &self,
        name: String,
        How { policy, timeout }: How,
        mut f: F,
    ) -> Result<T, Error>
    where
        T: Stored,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let Slot {
            position,
            seq,
            stored,
        } = self.next_slot();
        let span = info_span!("step", step = %name, position);
        let mut progress = match self.replay(position, stored, &name, StepKind::Step).await {
            Replay::Settled(result) => return result,
            Replay::Resume(progress) => progress,
        };
        let _active = self.run.waits.active();
        loop {
            self.boundary().await;
            progress.attempts += 1;
            let started = Instant::now();
            let result = within(timeout, unpanicked(f()))
                .instrument(span.clone())
                .await;
            let elapsed = started.elapsed();
            let output = match result.and_then(|value| {
                value
                    .to_json()
                    .map(|json| (value, json))
                    .map_err(|e| Error::permanent(e).with_category("output"))
            }) {
                Ok(output) => output,
                Err(err) => {
                    let kind = StepKind::Step;
                    match self
                        .after_failure(
                            (position, seq),
                            &name,
                            kind,
                            &policy,
                            &mut progress,
                            err,
                            elapsed,
                        )
                        .instrument(span.clone())
                        .await
                    {
                        Some(err) => return Err(err),
                        None => continue,
                    }
                }
            };
            let (value, json) = output;
            self.crash_point(&name, CrashPoint::BeforeCheckpoint).await;
            let report = self.run.due_progress();
            let write = StepWrite {
                position,
                branch: &self.branch.id,
                seq,
                name: &name,
                kind: StepKind::Step,
                status: StepStatus::Completed,
                output: Some(&json),
                attempts: progress.attempts,
                throttled: progress.throttled,
                last_error: None,
                started_at: progress.started_at,
                duration: elapsed,
                progress: report.as_ref(),
            };
            let group_commit = &self.run.settings.group_commit;
            let lease = self.run.lease;
            let saved = self
                .persist(&name, || group_commit.write_step(lease, &write))
                .instrument(span.clone())
                .await;
            match saved {
                Ok(cancel) => {
                    self.progress_written(&report);
                    self.note_cancel(cancel);
                    debug!(parent: &span, attempts = progress.attempts, ?elapsed, "step completed");
                    self.crash_point(&name, CrashPoint::AfterCheckpoint).await;
                    return Ok(value);
                }
                Err(err) => {
                    let kind = StepKind::Step;
                    if let Some(err) = self
                        .after_failure(
                            (position, seq),
                            &name,
                            kind,
                            &policy,
                            &mut progress,
                            err,
                            elapsed,
                        )
                        .await
                    {
                        return Err(err);
                    }
                }
            }
        }
    }

    async fn run_transaction<T, F, Fut>(
        &self,
        name: String,
        How { policy, timeout }: How,
        mut f: F,
    ) -> Result<T, Error>
    where
        T: Stored,
        F: FnMut(Tx) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let Slot {
            position,
            seq,
            stored,
        } = self.next_slot();
        let span = info_span!("step", step = %name, position, transactional = true);
        let mut progress = match self
            .replay(position, stored, &name, StepKind::Transaction)
            .await
        {
            Replay::Settled(result) => return result,
            Replay::Resume(progress) => progress,
        };
        let _active = self.run.waits.active();
        loop {
            self.boundary().await;
            progress.attempts += 1;
            let started = Instant::now();
            let outcome = self
                .attempt_transaction(
                    (position, seq),
                    &name,
                    &progress,
                    (&mut f, timeout),
                    started,
                )
                .instrument(span.clone())
                .await;
            let elapsed = started.elapsed();
            match outcome {
                TxOutcome::Committed(value) => {
                    debug!(parent: &span, attempts = progress.attempts, ?elapsed, "transaction committed");
                    self.crash_point(&name, CrashPoint::AfterCheckpoint).await;
                    return Ok(value);
                }
                TxOutcome::Failed(err) => {
                    let kind = StepKind::Transaction;
                    if let Some(err) = self
                        .after_failure(
                            (position, seq),
                            &name,
                            kind,
                            &policy,
                            &mut progress,
                            err,
                            elapsed,
                        )
                        .instrument(span.clone())
                        .await
                    {
                        return Err(err);
                    }
                }
            }
        }
    }

    async fn attempt_transaction<T, F, Fut>(
        &self,
        (position, seq): (i32, Option<i32>),
        name: &str,
        progress: &Progress,
        (f, timeout): (&mut F, Option<Duration>),
        started: Instant,
    ) -> TxOutcome<T>
    where
        T: Stored,
        F: FnMut(Tx) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let store = &self.run.settings.store;
        let handle = Tx::new(store.pool().clone(), position);
        let result = within(timeout, unpanicked(f(handle.clone()))).await;
        let Some(state) = handle.take() else {
            return TxOutcome::Failed(Error::permanent(
                "the transaction handle was still in use after the step's closure returned",
            ));
        };
        let value = match result {
            Ok(value) => value,
            Err(err) => return TxOutcome::Failed(err),
        };
        let json = match value.to_json() {
            Ok(json) => json,
            Err(err) => return TxOutcome::Failed(Error::permanent(err).with_category("output")),
        };
        let write = StepWrite {
            position,
            branch: &self.branch.id,
            seq,
            name,
            kind: StepKind::Transaction,
            status: StepStatus::Completed,
            output: Some(&json),
            attempts: progress.attempts,
            throttled: progress.throttled,
            last_error: None,
            started_at: progress.started_at,
            duration: started.elapsed(),
            // Writing progress would lock the run's row until this transaction commits,
            // stalling the run's other checkpoints; the next plain checkpoint or the
            // run's end carries it instead.
            progress: None,
        };
        self.crash_point(name, CrashPoint::BeforeCheckpoint).await;
        let lease = self.run.lease;
        let written = match state {
            TxState::Open(mut tx) => Store::commit_with_step(&mut tx, lease, &write).await,
            // The closure never used its transaction: there is nothing to commit with the
            // checkpoint, which is written on its own.
            TxState::Unused(_) | TxState::Ended => {
                self.run
                    .settings
                    .group_commit
                    .write_step(lease, &write)
                    .await
            }
        };
        match written {
            Ok(Fenced::Held(cancel)) => {
                self.note_cancel(cancel);
                TxOutcome::Committed(value)
            }
            Ok(Fenced::Lost) => self.halt(Halt::Lost).await,
            Err(err) if already_completed(&err) => {
                warn!("an earlier attempt of this step committed; resuming from its checkpoint");
                self.halt(Halt::Released).await
            }
            // Refused before anything was sent (a NUL in a literal): nothing committed.
            Err(err @ sqlx::Error::Encode(_)) => TxOutcome::Failed(err.into()),
            Err(err) => {
                // The commit may have happened even though its answer was lost: the
                // checkpoint tells.
                warn!(error = %err, "commit outcome unknown; checking the checkpoint");
                match store.step(lease.run_id, position).await {
                    Ok(Some(step)) if step.status == StepStatus::Completed => {
                        TxOutcome::Committed(value)
                    }
                    _ => TxOutcome::Failed(err.into()),
                }
            }
        }
    }

    /// Decides what a failed attempt leads to. Returns the final error, or `None` when
    /// the step should be attempted again now.
    #[allow(clippy::too_many_arguments)]
    async fn after_failure(
        &self,
        (position, seq): (i32, Option<i32>),
        name: &str,
        kind: StepKind,
        policy: &RetryPolicy,
        progress: &mut Progress,
        err: Error,
        elapsed: Duration,
    ) -> Option<Error> {
        let message = sanitize(&err.to_string());
        if err.is_database_unreachable() && !self.engine_reachable().await {
            // Not the step's failure: the engine's own database is away (restarting, cut
            // off). Nothing can be recorded meanwhile; the attempt does not count, and the
            // step runs again once the database answers, for as long as the lease could
            // still be ours. After that another worker takes the run over.
            progress.attempts -= 1;
            let (since, waits) = progress
                .unreachable_since
                .get_or_insert_with(|| (Instant::now(), 0));
            *waits += 1;
            if since.elapsed() >= self.run.settings.lease {
                warn!(error = %message, "the database stayed unreachable past the lease; letting go");
                self.halt(Halt::Lost).await
            }
            let delay = RetryPolicy::default()
                .backoff(Duration::from_millis(100), Duration::from_secs(2))
                .delay(*waits);
            warn!(error = %message, ?delay, "the database is unreachable; waiting for it");
            tokio::time::sleep(delay).await;
            return None;
        }
        progress.unreachable_since = None;
        let mut write = StepWrite {
            position,
            branch: &self.branch.id,
            seq,
            name,
            kind,
            status: StepStatus::Retrying,
            output: None,
            attempts: progress.attempts,
            throttled: progress.throttled,
            last_error: Some(&message),
            started_at: progress.started_at,
            duration: elapsed,
            progress: None,
        };
        match err.class() {
            crate::ErrorClass::RateLimited { until } => {
                // A throttled attempt does not count against the retry policy.
                progress.attempts -= 1;
                progress.throttled += 1;
                write.attempts = progress.attempts;
                write.throttled = progress.throttled;
                warn!(%until, error = %message, "rate limited; waiting");
                self.write_retrying(name, &write).await;
                self.wait_until(position, until, RunStatus::Parked, &write, true)
                    .await;
                None
            }
            crate::ErrorClass::Transient if progress.attempts < policy.max_attempts as i32 => {
                let delay = policy.delay(progress.attempts as u32);
                warn!(attempt = progress.attempts, ?delay, error = %message, "step failed; retrying");
                self.write_retrying(name, &write).await;
                if delay > self.run.settings.inline_backoff {
                    let at =
                        self.clock().now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    self.wait_until(position, at, RunStatus::Retrying, &write, true)
                        .await;
                } else {
                    tokio::time::sleep(delay).await;
                }
                None
            }
            _ => {
                warn!(attempts = progress.attempts, error = %message, "step failed for good");
                write.status = StepStatus::Failed;
                let group_commit = &self.run.settings.group_commit;
                let lease = self.run.lease;
                if let Ok(cancel) = self
                    .persist(name, || group_commit.write_step(lease, &write))
                    .await
                {
                    self.note_cancel(cancel);
                }
                Some(err.into_permanent())
            }
        }
    }

    /// Whether the engine's database answers now (within two seconds).
    async fn engine_reachable(&self) -> bool {
        let probe = sqlx::query("SELECT 1").execute(self.pool());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(_))
        )
    }

    /// Writes through `op`, retrying database outages for as long as the lease could
    /// still be ours. A lost lease halts the run; an error the database will never
    /// accept (say, a NUL in a JSON string) is returned as the step's permanent error.
    pub(crate) async fn persist<'w, Op, Fut>(&self, what: &str, mut op: Op) -> Result<bool, Error>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<Fenced<bool>, sqlx::Error>> + 'w,
    {
        let checkpoint = format!("checkpointing `{what}`");
        match retry_db(&checkpoint, self.run.settings.lease, &mut op).await {
            Ok(Fenced::Held(cancel)) => Ok(cancel),
            Ok(Fenced::Lost) => self.halt(Halt::Lost).await,
            Err(DbFailure::Outlasted(err)) => {
                warn!(error = %err, "{checkpoint} failed past the lease; letting go");
                self.halt(Halt::Lost).await
            }
            Err(DbFailure::Refused(err)) => Err(Error::permanent(err).with_category("checkpoint")),
        }
    }

    /// Records a step that will be attempted again (its error, its attempts so far).
    pub(crate) async fn write_retrying(&self, name: &str, write: &StepWrite<'_>) {
        let group_commit = &self.run.settings.group_commit;
        let lease = self.run.lease;
        if let Ok(cancel) = self
            .persist(name, || group_commit.write_step(lease, write))
            .await
        {
            self.note_cancel(cancel);
        }
    }

    /// Parks the run (one fenced statement): every branch of the run waits, the
    /// earliest until `park.timer.at` (or an event, when one came since its waits
    /// looked). Says how the run's execution ends.
    pub(crate) async fn park(&self, park: &Park) -> Halt {
        let timer = &park.timer;
        let store = &self.run.settings.store;
        let step = timer.step.as_write();
        let parked = retry_db("parking the run", self.run.settings.lease, || {
            store.park(
                self.run.lease,
                timer.status,
                timer.at,
                &step,
                park.events_seen,
            )
        })
        .await;
        match parked {
            Ok(Fenced::Held(wake_at)) => Halt::Parked(wake_at),
            Ok(Fenced::Lost) => Halt::Lost,
            Err(DbFailure::Outlasted(err) | DbFailure::Refused(err)) => {
                warn!(error = %err, "cannot park the run; letting go");
                Halt::Lost
            }
        }
    }

    async fn replay<T: Stored>(
        &self,
        position: i32,
        stored: Option<StepRecord>,
        name: &str,
        kind: StepKind,
    ) -> Replay<T> {
        let Some(record) = stored else {
            return Replay::Resume(Progress {
                attempts: 0,
                throttled: 0,
                started_at: Utc::now(),
                unreachable_since: None,
            });
        };
        self.check_same(&record, name, kind).await;
        match record.status {
            StepStatus::Completed => {
                let stored = record.stored_output.as_deref().unwrap_or("null");
                match T::from_json(stored) {
                    Ok(value) => Replay::Settled(Ok(value)),
                    Err(err) => {
                        let err = Error::permanent(err).with_category("replay");
                        let mut report = err.report();
                        report.message = format!(
                            "the stored output of step `{name}` (position {position}) no longer \
                             deserializes into the step's output type: {}",
                            report.message
                        );
                        self.halt(Halt::Failed(report)).await
                    }
                }
            }
            StepStatus::Failed => Replay::Settled(Err(Error::permanent(StoredFailure {
                name: name.to_owned(),
                message: record.last_error.unwrap_or_default(),
            }))),
            StepStatus::Retrying => Replay::Resume(Progress {
                attempts: record.attempts,
                throttled: record.throttled,
                started_at: record.started_at,
                unreachable_since: None,
            }),
        }
    }

    pub(crate) async fn check_same(&self, record: &StepRecord, name: &str, kind: StepKind) {
        if record.name != name || record.kind != kind {
            let err = Error::permanent(NonDeterminism {
                workflow: self.run.workflow.clone(),
                position: record.position,
                stored: record.name.clone(),
                stored_kind: record.kind.as_str(),
                found: name.to_owned(),
                found_kind: kind.as_str(),
            })
            .with_category("non_determinism");
            self.halt::<()>(Halt::Failed(err.report())).await;
        }
    }

    /// Honours lost leases, cancellation, shutdown and the run's deadline before a step
    /// runs.
    pub(crate) async fn boundary(&self) {
        self.within_deadline().await;
        let signals = &self.run.signals;
        if signals.lost.load(Ordering::Acquire) {
            self.halt::<()>(Halt::Lost).await;
        }
        if signals.cancel.load(Ordering::Acquire) {
            self.halt::<()>(Halt::Cancelled).await;
        }
        if self.run.settings.shutdown.load(Ordering::Acquire) {
            self.halt::<()>(Halt::Released).await;
        }
    }

    /// Ends the run in the `deadline` category, with an alert, once its deadline has
    /// passed.
    async fn within_deadline(&self) {
        let Some(deadline) = self.run.deadline.filter(|at| *at <= self.clock().now()) else {
            return;
        };
        let message = format!(
            "run {} of workflow `{}` passed its deadline {} and was stopped at a step boundary",
            self.run_id(),
            self.run.workflow,
            deadline.to_rfc3339()
        );
        let alert = sqlx::query(
            "INSERT INTO cairn.alerts (kind, source, stream, detail, message)
             VALUES ('deadline_exceeded', $1, '', $2, $3)
             ON CONFLICT (kind, source, stream, detail) WHERE resolved_at IS NULL
             DO UPDATE SET count = alerts.count + 1, last_seen = now(), message = EXCLUDED.message",
        )
        .bind(&self.run.workflow)
        .bind(self.run_id().to_string())
        .bind(&message)
        .execute(self.pool())
        .await;
        if let Err(error) = alert {
            warn!(%error, "cannot raise the deadline alert");
        }
        let err = Error::permanent(message).with_category("deadline");
        self.halt::<()>(Halt::Failed(err.report())).await;
    }

    pub(crate) fn note_cancel(&self, cancel: bool) {
        if cancel {
            self.run.signals.cancel.store(true, Ordering::Release);
        }
    }

    /// Tells the worker to stop this run and never returns: the worker drops the
    /// workflow's future, so user code cannot swallow the halt.
    pub(crate) async fn halt<T>(&self, why: Halt) -> T {
        self.run.signals.halt(why);
        std::future::pending().await
    }

    /// The next step of this branch: its place in the branch, its position, and its
    /// stored record when the run did it before. Steps take their places in the order
    /// they are first polled; a main-branch step's position is its place, as it always
    /// was, and a forked branch's steps take positions from [`FORKED_POSITIONS`] on.
    pub(crate) fn next_slot(&self) -> Slot {
        let seq = self.branch.taken.fetch_add(1, Ordering::Relaxed) as i32;
        let stored = {
            let mut history = self.run.history.lock().unwrap_or_else(|e| e.into_inner());
            // A run's first execution has no history: no key to build per step.
            if history.is_empty() {
                None
            } else {
                history.remove(&(self.branch.id.clone(), seq))
            }
        };
        let main = self.branch.id.is_empty();
        let position = match (&stored, main) {
            (Some(record), _) => record.position,
            (None, true) => seq,
            (None, false) => self.run.next_forked.fetch_add(1, Ordering::Relaxed),
        };
        Slot {
            position,
            seq: (!main).then_some(seq),
            stored,
        }
    }
}

/// What the next place of a branch holds, looked at without taking it.
pub(crate) enum Ahead {
    /// A stored step, by its name and kind.
    Stored(String, StepKind),
    /// Nothing stored, but later places of the branch hold steps: the code that ran
    /// before passed this place without a step (or with one that never checkpointed).
    Passed,
    /// Nothing stored here or after: the run is doing this for the first time.
    New,
}

impl Context {
    /// What the next place of this branch holds (see [`Ahead`]), without taking it.
    pub(crate) fn ahead(&self) -> Ahead {
        let seq = self.branch.taken.load(Ordering::Relaxed) as i32;
        let history = self.run.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = history.get(&(self.branch.id.clone(), seq)) {
            return Ahead::Stored(record.name.clone(), record.kind);
        }
        if history
            .keys()
            .any(|(branch, later)| *branch == self.branch.id && *later > seq)
        {
            Ahead::Passed
        } else {
            Ahead::New
        }
    }
}

/// Where a step goes: see [`Context::next_slot`].
pub(crate) struct Slot {
    pub(crate) position: i32,
    /// Its place in a forked branch (`None` in the main branch).
    pub(crate) seq: Option<i32>,
    pub(crate) stored: Option<StepRecord>,
}

/// The first position of the steps of forked branches: far above any main branch's
/// steps, so both number their steps without meeting.
const FORKED_POSITIONS: i32 = 1 << 30;

/// Steps with a retry policy of their own; see [`Context::with_retry`].
pub struct Steps<'a> {
    ctx: &'a Context,
    how: How,
}

/// How a step's attempts run: retried under `policy`, each given up after `timeout`.
#[derive(Clone, Copy)]
struct How {
    policy: RetryPolicy,
    timeout: Option<Duration>,
}

/// A step attempt gave up after its timeout.
#[derive(Debug, thiserror::Error)]
#[error("the step's attempt took longer than its timeout of {0:?}")]
struct AttemptTimedOut(Duration);

/// A step attempt's body, a panic in it turned into a permanent failure in the `panic`
/// category: the step is recorded as failed with the panic's message, and the workflow
/// gets the error like any other.
async fn unpanicked<T>(body: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match AssertUnwindSafe(body).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(Error::permanent(format!(
            "the step panicked: {}",
            panic_message(panic.as_ref())
        ))
        .with_category("panic")),
    }
}

/// `attempt`, given up after `timeout` when there is one.
async fn within<T>(
    timeout: Option<Duration>,
    attempt: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match timeout {
        None => attempt.await,
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::transient(AttemptTimedOut(limit)).with_category("timeout"))
            }),
    }
}

impl Steps<'_> {
    /// The same handle, giving up each attempt after `timeout` (see
    /// [`Context::with_timeout`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.how.timeout = Some(timeout);
        self
    }

    /// [`Context::step`] with this handle's retry policy.
    pub async fn step<T, F, Fut>(&self, name: impl Into<String>, f: F) -> Result<T, Error>
    where
        T: Stored,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.ctx.run_step(name.into(), self.how, f).await
    }

    /// [`Context::transaction`] with this handle's retry policy.
    pub async fn transaction<T, F, Fut>(&self, name: impl Into<String>, f: F) -> Result<T, Error>
    where
        T: Stored,
        F: FnMut(Tx) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.ctx.run_transaction(name.into(), self.how, f).await
    }
}

/// Postgres text cannot hold NUL; an error message must still be storable.
fn sanitize(message: &str) -> String {
    message.replace('\0', "\u{FFFD}")
}

/// The transaction of a transactional step, handed to its closure.
///
/// The transaction begins when the closure first asks for its connection, so a step
/// that writes nothing pays for no transaction. Cloning the handle is cheap; once the
/// closure returns, the engine takes the transaction back to store the checkpoint and
/// commit, and the handle no longer works.
#[derive(Clone)]
pub struct Tx {
    slot: Arc<tokio::sync::Mutex<TxState>>,
    position: i32,
}

enum TxState {
    /// Not begun yet: the pool to begin it on.
    Unused(PgPool),
    Open(sqlx::Transaction<'static, Postgres>),
    /// The step took the transaction back.
    Ended,
}

/// The step's transaction, borrowed: use `&mut *conn` as a `sqlx` executor.
pub struct TxConn<'a> {
    guard: tokio::sync::MappedMutexGuard<'a, sqlx::Transaction<'static, Postgres>>,
}

/// A [`Tx`] was used after its step ended.
#[derive(Debug, thiserror::Error)]
#[error("this transaction belongs to a step that has already ended")]
pub struct TxFinished;

impl Tx {
    fn new(pool: PgPool, position: i32) -> Self {
        Self {
            slot: Arc::new(tokio::sync::Mutex::new(TxState::Unused(pool))),
            position,
        }
    }

    /// The step's position in its run: unique in the run, the same on every attempt.
    pub fn position(&self) -> i32 {
        self.position
    }

    /// The connection of the step's transaction, which begins on the first call.
    pub async fn conn(&self) -> Result<TxConn<'_>, Error> {
        let mut guard = self.slot.lock().await;
        match &*guard {
            TxState::Open(_) => {}
            TxState::Ended => return Err(Error::permanent(TxFinished)),
            TxState::Unused(pool) => {
                let tx = pool.begin().await?;
                *guard = TxState::Open(tx);
            }
        }
        tokio::sync::MutexGuard::try_map(guard, |state| match state {
            TxState::Open(tx) => Some(tx),
            TxState::Unused(_) | TxState::Ended => None,
        })
        .map(|guard| TxConn { guard })
        .map_err(|_| Error::permanent(TxFinished))
    }

    fn take(&self) -> Option<TxState> {
        let mut slot = self.slot.try_lock().ok()?;
        Some(std::mem::replace(&mut *slot, TxState::Ended))
    }
}

impl std::ops::Deref for TxConn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.guard
    }
}

impl std::ops::DerefMut for TxConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.guard
    }
}
