//! The workflow's handle on its run: checkpointed steps, transactional steps and
//! durable timers.
//!
//! Every call that makes a checkpoint takes the next **position** in the run. On replay
//! the stored checkpoint at that position is returned without running anything, so a
//! workflow must call the same steps in the same order every time it runs; a name that
//! differs from the stored one fails the run with a non-determinism error.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::error::ErrorReport;
use crate::group_commit::GroupCommit;
use crate::model::{RunStatus, StepKind, StepRecord};
use crate::store::{Lease, Store};
use crate::waits::Waits;
use crate::{Clock, CrashPlan, CrashPoint, Error, RetryPolicy, RunId, Stored};

mod attempts;
mod timers;
mod tx;

use attempts::How;
pub use attempts::Steps;
pub use tx::{Tx, TxConn, TxFinished};

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
/// A step's future, as [`Context::step`] returns it: a type of its own, so that a step
/// whose output cannot be stored gets one short compiler error where it is called.
#[must_use = "a step does nothing until it is awaited"]
pub struct StepFuture<'a, T>(Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>);

impl<T> Future for StepFuture<'_, T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        self.get_mut().0.as_mut().poll(cx)
    }
}

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

/// The code of a run no longer calls the steps its history recorded.
#[derive(Debug, thiserror::Error)]
#[error(
    "non-determinism in workflow `{workflow}` at step position {position}: the code now calls \
     {found_kind} `{found}` where the run's history has {stored_kind} `{stored}`; a workflow \
     must call the same steps in the same order on replay (put the change behind \
     `ctx.patched`, ship it under a new name, or let old runs finish first)"
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

    /// The value of type `T` the worker's registry was given with
    /// [`Registry::provide`](crate::Registry::provide): configuration and clients
    /// that every run of a workflow shares.
    pub fn provided<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.run.settings.registry.provided()
    }

    /// The engine's database pool, for reads and for plain steps that write elsewhere.
    /// Writes that must happen exactly once belong in [`Context::transaction`].
    pub fn pool(&self) -> &PgPool {
        self.run.settings.store.pool()
    }

    /// What the run's store seals personal data with: workflows that keep vendors' data
    /// in tables of their own seal it with this too, so that one key setting covers the
    /// engine's tables and theirs.
    pub fn sealer(&self) -> &crate::seal::Sealer {
        self.run.settings.store.sealer()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.run.settings.store
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
    pub fn step<'a, T, F, Fut>(&'a self, name: impl Into<String>, f: F) -> StepFuture<'a, T>
    where
        T: Stored + Send + 'a,
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, Error>> + Send + 'a,
    {
        let how = How {
            policy: self.run.settings.default_retry,
            timeout: None,
        };
        StepFuture(Box::pin(self.run_step(name.into(), how, f)))
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
    ///                 .execute(&mut conn)
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
