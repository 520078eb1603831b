//! How a step's attempts run: the body under its timeout, panics caught, failures
//! classified and retried or parked, outputs checkpointed (for a transactional step,
//! in the same commit as its writes), and stored results replayed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tracing::{Instrument, debug, info_span, warn};

use super::tx::{Tx, TxState};
use super::{Context, Halt, RunStatus, Slot, StoredFailure};
use crate::db_retry::{DbFailure, retry_db};
use crate::error::panic_message;
use crate::model::{StepKind, StepRecord, StepStatus};
use crate::observe;
use crate::store::{Fenced, StepWrite, already_completed};
use crate::waits::Park;
use crate::{CrashPoint, Error, RetryPolicy, Stored};

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

enum TxOutcome<T> {
    Committed(T),
    Failed(Error),
}

impl Context {
    pub(super) async fn run_step<T, F, Fut>(
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
        let mut progress = match self.replay(position, stored, &name, StepKind::Step).await {
            Replay::Settled(result) => return result,
            Replay::Resume(progress) => progress,
        };
        // Only steps that execute get a span: a replay does no work worth tracing.
        let span = self.step_span(&name, position, StepKind::Step);
        let _active = self.run.waits.active();
        loop {
            self.boundary().await;
            progress.attempts += 1;
            span.record("attempt", progress.attempts);
            observe::step_started(self.workflow(), StepKind::Step);
            let started = Instant::now();
            let result = within(timeout, unpanicked(f()))
                .instrument(span.clone())
                .await;
            let elapsed = started.elapsed();
            // The attempt's value, checkpointed; any failure on the way is the attempt's.
            let checkpointed: Result<T, Error> = async {
                let value = result?;
                let json = value
                    .to_json()
                    .map_err(|e| Error::permanent(e).with_category("output"))?;
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
                let cancel = self
                    .persist(&name, || group_commit.write_step(lease, &write))
                    .instrument(span.clone())
                    .await?;
                self.progress_written(&report);
                self.note_cancel(cancel);
                debug!(parent: &span, attempts = progress.attempts, ?elapsed, "step completed");
                observe::step_completed(self.workflow(), StepKind::Step, elapsed);
                self.crash_point(&name, CrashPoint::AfterCheckpoint).await;
                Ok(value)
            }
            .await;
            let err = match checkpointed {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let kind = StepKind::Step;
            span.record("category", err.category().unwrap_or("uncategorised"));
            let failed = self
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
                .await;
            if let Some(err) = failed {
                return Err(err);
            }
        }
    }

    pub(super) async fn run_transaction<T, F, Fut>(
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
        let mut progress = match self
            .replay(position, stored, &name, StepKind::Transaction)
            .await
        {
            Replay::Settled(result) => return result,
            Replay::Resume(progress) => progress,
        };
        let span = self.step_span(&name, position, StepKind::Transaction);
        let _active = self.run.waits.active();
        loop {
            self.boundary().await;
            progress.attempts += 1;
            span.record("attempt", progress.attempts);
            observe::step_started(self.workflow(), StepKind::Transaction);
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
                    observe::step_completed(self.workflow(), StepKind::Transaction, elapsed);
                    self.crash_point(&name, CrashPoint::AfterCheckpoint).await;
                    return Ok(value);
                }
                TxOutcome::Failed(err) => {
                    let kind = StepKind::Transaction;
                    span.record("category", err.category().unwrap_or("uncategorised"));
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
            TxState::Open(tx) => {
                self.run
                    .settings
                    .store
                    .commit_with_step(tx, lease, &write)
                    .await
            }
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

    /// The span of an executing step: what OpenTelemetry exports of it (the run's span is
    /// its parent; its vendor requests are its children). `attempt` is the latest
    /// attempt's number, `category` the latest failure's.
    fn step_span(&self, name: &str, position: i32, kind: StepKind) -> tracing::Span {
        info_span!(
            "step",
            step = %name,
            position,
            kind = kind.as_str(),
            workflow = %self.workflow(),
            run_id = %self.run_id(),
            attempt = tracing::field::Empty,
            category = tracing::field::Empty,
        )
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
                observe::step_failed(self.workflow(), kind, "parked", elapsed);
                self.write_retrying(name, &write).await;
                self.wait_until(position, until, RunStatus::Parked, &write, true)
                    .await;
                None
            }
            crate::ErrorClass::Transient if progress.attempts < policy.max_attempts as i32 => {
                let delay = policy.delay(progress.attempts as u32);
                warn!(attempt = progress.attempts, ?delay, error = %message, "step failed; retrying");
                observe::step_failed(self.workflow(), kind, "retry", elapsed);
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
                observe::step_failed(self.workflow(), kind, "failed", elapsed);
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
            if name.contains('\0') {
                // Its checkpoint could never be stored: refused before it runs.
                return Replay::Settled(Err(Error::permanent(format!(
                    "step name `{}` holds a NUL character, which PostgreSQL text cannot \
                     store: name the step without it",
                    name.escape_debug()
                ))
                .with_category("step_name")));
            }
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
}

/// Steps with a retry policy of their own; see [`Context::with_retry`].
pub struct Steps<'a> {
    pub(super) ctx: &'a Context,
    pub(super) how: How,
}

/// How a step's attempts run: retried under `policy`, each given up after `timeout`.
#[derive(Clone, Copy)]
pub(super) struct How {
    pub(super) policy: RetryPolicy,
    pub(super) timeout: Option<Duration>,
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
