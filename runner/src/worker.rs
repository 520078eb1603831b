//! The worker: claims runnable runs, holds their leases by heartbeat, executes their
//! workflows and records how each ended.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::context::{Halt, RunSettings, RunState};
use crate::db_retry::{DbFailure, retry_db};
use crate::error::panic_message;
use crate::group_commit::GroupCommit;
use crate::keys::{KeyHeld, KeysInUse};
use crate::model::RunStatus;
use crate::presence;
use crate::schedule::{Scheduler, SchedulerConfig};
use crate::store::{Claim, ClaimedRun, Fenced, Lease, RunEnd, Store, WAKEUP_CHANNEL};
use crate::{
    Clock, Context, CrashPlan, EngineError, Error, KeyLimits, Registry, RetryPolicy, RunId,
};

/// How a worker behaves. The defaults suit a production worker; tests shorten the lease.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The queue to take runs from.
    pub queue: String,
    /// Runs executed at once.
    pub concurrency: usize,
    /// How long a claim holds a run without a heartbeat. A crashed worker's runs are
    /// taken over this long after its last heartbeat.
    pub lease: Duration,
    /// How often to look for work when no notification arrives (also how soon an
    /// expired lease is noticed).
    pub poll_interval: Duration,
    /// The retry policy of steps that do not name one.
    pub retry: RetryPolicy,
    /// Backoffs up to this long are waited out while holding the run; longer ones park it.
    pub inline_backoff: Duration,
    /// On shutdown, how long running steps may take to finish before their runs are
    /// released mid-step (the step then runs again elsewhere).
    pub shutdown_grace: Duration,
    /// The cron scheduler this worker runs alongside its runs (every worker runs one;
    /// each fire time still starts one run), or `None` to run none.
    pub scheduler: Option<SchedulerConfig>,
    /// What durable time (sleeps, parked waits, deadlines, `ctx.now()`) is measured by:
    /// the system clock, or in tests a [`Clock::skippable`] one.
    pub clock: Clock,
    /// Where this worker stops dead, for tests of crashes (see [`CrashPlan`]); none by
    /// default.
    pub crash: CrashPlan,
    /// How many runs of each concurrency key this worker executes at once.
    pub key_limits: KeyLimits,
    /// How long the finished runs of the workflows this worker serves keep their step
    /// outputs, purged by the worker as their windows pass; `None` purges nothing.
    pub retention: Option<Retention>,
    /// A name this worker keeps across restarts (a pod's, a unit's), recorded as the
    /// owner of the runs it leases. A worker restarted under the same name takes those
    /// runs back at once rather than after their leases; no two live workers can hold
    /// one name (see [`crate::identity`]). `None`: a name of its own per process.
    pub identity: Option<String>,
}

/// The windows a worker purges finished runs' step outputs by (see
/// [`crate::retention`]), for the workflows it serves.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Completed and cancelled runs of a workflow without a window of its own
    /// ([`Registry::set_retention`]).
    pub default: Duration,
    /// Failed runs (the dead-letter list), which can no longer be retried once purged;
    /// `None` keeps them.
    pub dead_letters: Option<Duration>,
    /// Records set aside beside runs ([`crate::retention::SetAside`]: quarantined
    /// records, writes a destination refused); `None` keeps them.
    pub set_aside: Option<Duration>,
    /// How often the worker purges.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(7 * 86_400),
            dead_letters: Some(Duration::from_secs(30 * 86_400)),
            set_aside: Some(Duration::from_secs(30 * 86_400)),
            every: Duration::from_secs(600),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queue: "default".to_owned(),
            concurrency: 16,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            inline_backoff: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(20),
            scheduler: Some(SchedulerConfig::default()),
            clock: Clock::system(),
            crash: CrashPlan::none(),
            key_limits: KeyLimits::default(),
            retention: Some(Retention::default()),
            identity: None,
        }
    }
}

/// A worker process's engine loop. See [`Worker::run`].
pub struct Worker {
    store: Store,
    registry: Arc<Registry>,
    config: WorkerConfig,
    id: String,
}

type Active = Arc<Mutex<HashMap<RunId, Arc<RunState>>>>;

/// Removes a run from the active set however its task ends, aborts included.
struct ActiveGuard {
    active: Active,
    run_id: RunId,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        lock(&self.active).remove(&self.run_id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// A worker over `pool` executing the workflows in `registry`. Build the pool
    /// from [`pool_options`](crate::pool_options), with `config.concurrency` plus a few
    /// connections for the worker's own statements.
    pub fn new(pool: PgPool, registry: Arc<Registry>, config: WorkerConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".to_owned());
        let id = config.identity.clone().unwrap_or_else(|| {
            format!(
                "{host}:{}:{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        Self {
            store: Store::new(pool),
            registry,
            config,
            id,
        }
    }

    /// Seals step outputs and events with `sealer` rather than this process's keys
    /// ([`Sealer::process`](crate::seal::Sealer::process)).
    #[must_use]
    pub fn with_sealer(mut self, sealer: crate::seal::Sealer) -> Self {
        self.store = self.store.with_sealer(sealer);
        self
    }

    /// This worker's id, as recorded on the runs it leases.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Executes runs until `shutdown` completes, then stops claiming, lets running steps
    /// finish (up to the grace period), hands unfinished runs back to the queue and
    /// returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), EngineError> {
        // Keys that cannot be read stop the worker before it claims a run whose
        // checkpoints it could neither seal nor open.
        self.store
            .sealer()
            .keys()
            .map_err(crate::seal::OpenError::from)?;
        let config = self.config.clone();
        // Held until the worker returns: the session's end frees the name.
        let identity = match &config.identity {
            Some(name) => Some(crate::identity::hold(self.store.pool(), name, config.lease).await?),
            None => None,
        };
        let concurrency = config.concurrency.max(1);
        let workflows = self.registry.names();
        let span = info_span!("worker", worker = %self.id, queue = %config.queue);
        info!(parent: &span, concurrency, ?workflows, "worker started");

        let stop = Arc::new(AtomicBool::new(false));
        let active: Active = Arc::default();
        let keys = KeysInUse::default();
        let wake = Arc::new(Notify::new());
        let next_wake: Arc<Mutex<Option<Instant>>> = Arc::default();
        let settings = RunSettings {
            store: self.store.clone(),
            group_commit: GroupCommit::start(self.store.clone()),
            shutdown: Arc::clone(&stop),
            default_retry: config.retry,
            inline_backoff: config.inline_backoff,
            lease: config.lease,
            clock: config.clock.clone(),
            crash: config.crash.clone(),
            registry: Arc::clone(&self.registry),
        };

        let mut background = JoinSet::new();
        background.spawn(
            listen(
                self.store.pool().clone(),
                config.queue.clone(),
                Arc::clone(&wake),
            )
            .instrument(span.clone()),
        );
        background.spawn(
            heartbeat(self.store.clone(), Arc::clone(&active), config.lease)
                .instrument(span.clone()),
        );
        background.spawn(
            presence::announce(
                self.store.pool().clone(),
                self.id.clone(),
                config.queue.clone(),
                workflows.clone(),
                presence::ANNOUNCE_EVERY,
            )
            .instrument(span.clone()),
        );
        if let Some(retention) = &config.retention {
            background.spawn(
                crate::retention::keep(
                    self.store.pool().clone(),
                    Arc::clone(&self.registry),
                    retention.clone(),
                )
                .instrument(span.clone()),
            );
        }
        if let Some(scheduler) = &config.scheduler {
            let scheduler = Scheduler::new(self.store.pool().clone(), scheduler.clone())
                .with_registry(Arc::clone(&self.registry));
            background.spawn(
                scheduler
                    .run(std::future::pending())
                    .instrument(span.clone()),
            );
        }

        let slots = Arc::new(Semaphore::new(concurrency));
        let mut runs = JoinSet::new();
        let mut claim_failures = 0u32;
        // A restarted worker's runs are its own again at once: its first claim takes
        // them whatever their leases say (the identity's lock proved its predecessor
        // gone).
        let mut take_back = identity.is_some();
        tokio::pin!(shutdown);

        'claiming: loop {
            let first = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore never closes"),
                () = &mut shutdown => break 'claiming,
            };
            let mut permits = vec![first];
            while let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(permit);
            }
            let wanted = permits.len();
            let claimed = match self
                .store
                .claim_due(&Claim {
                    queue: &config.queue,
                    workflows: &workflows,
                    limit: wanted,
                    owner: &self.id,
                    lease: config.lease,
                    clock_ahead_ms: config.clock.ahead_ms(),
                    keys: &keys.room(&config.key_limits),
                    own_leases: take_back,
                })
                .await
            {
                Ok(claimed) => {
                    claim_failures = 0;
                    take_back = false;
                    claimed
                }
                Err(err) => {
                    crate::observe::claim_failed();
                    claim_failures += 1;
                    let delay = RetryPolicy::default()
                        .backoff(Duration::from_millis(100), Duration::from_secs(5))
                        .ceiling(claim_failures);
                    warn!(parent: &span, error = %err, ?delay, "claiming runs failed; retrying");
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue 'claiming,
                        () = &mut shutdown => break 'claiming,
                    }
                }
            };
            let got = claimed.len();
            crate::observe::claimed(got);
            for run in claimed {
                let permit = permits.pop().expect("one permit per claimed run");
                let key = keys.take(run.concurrency_key.clone());
                self.spawn_run(
                    &mut runs,
                    run,
                    (key, permit),
                    &settings,
                    &active,
                    &next_wake,
                );
            }
            drop(permits);
            while runs.try_join_next().is_some() {}
            if got < wanted {
                let deadline = {
                    let poll = Instant::now() + config.poll_interval;
                    let mut soonest = lock(&next_wake);
                    match *soonest {
                        Some(at) if at <= poll => {
                            *soonest = None;
                            at
                        }
                        _ => poll,
                    }
                };
                tokio::select! {
                    () = wake.notified() => {}
                    () = config.clock.moved() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                    () = &mut shutdown => break 'claiming,
                }
            }
        }

        stop.store(true, Ordering::Release);
        info!(parent: &span, running = runs.len(), "shutting down: finishing current steps");
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let leases: Vec<Lease> = lock(&active).values().map(|r| r.lease).collect();
            runs.abort_all();
            while runs.join_next().await.is_some() {}
            match self.store.release(&leases, &config.queue).await {
                Ok(n) => info!(parent: &span, released = n, "released runs still mid-step"),
                Err(err) => {
                    warn!(parent: &span, error = %err, "could not release runs; their leases will expire")
                }
            }
        }
        background.abort_all();
        presence::withdraw(self.store.pool(), &self.id).await;
        info!(parent: &span, "worker stopped");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_run(
        &self,
        runs: &mut JoinSet<()>,
        run: ClaimedRun,
        // The key first: a slot freed wakes the claim loop, which must see the key free.
        permit: (KeyHeld, OwnedSemaphorePermit),
        settings: &RunSettings,
        active: &Active,
        next_wake: &Arc<Mutex<Option<Instant>>>,
    ) {
        let run_id = run.lease.run_id;
        // Each run is a trace of its own, not a child of the worker's long-lived span:
        // a trace spanning a worker's uptime would be unreadable.
        let span = info_span!(
            parent: None,
            "run",
            run_id = %run_id,
            workflow = %run.workflow,
            worker = %self.id,
        );
        let store = self.store.clone();
        let registry = Arc::clone(&self.registry);
        let ctx = Context::new(
            run.lease,
            run.workflow.clone(),
            run.history,
            run.deadline,
            run.priority,
            settings.clone(),
        );
        lock(active).insert(run_id, Arc::clone(ctx.state()));
        let guard = ActiveGuard {
            active: Arc::clone(active),
            run_id,
        };
        let next_wake = Arc::clone(next_wake);
        let lease_len = settings.lease;
        let inline = settings.inline_backoff;
        let group_commit = settings.group_commit.clone();
        let queue = self.config.queue.clone();
        let clock = settings.clock.clone();
        runs.spawn(
            async move {
                let _permit = permit;
                let _guard = guard;
                let state = Arc::clone(ctx.state());
                let ending = if run.cancel_requested {
                    Ending::Halted(Halt::Cancelled)
                } else {
                    match registry.runner(&run.workflow) {
                        Ok(runner) => execute(ctx, runner, run.input, inline).await,
                        Err(err) => Ending::Done(Err(Error::permanent(err))),
                    }
                };
                if let Ending::Halted(Halt::Parked(at)) = &ending {
                    let wait = (*at - clock.now()).to_std().unwrap_or_default();
                    let at = Instant::now() + wait;
                    let mut soonest = lock(&next_wake);
                    if soonest.is_none_or(|s| at < s) {
                        *soonest = Some(at);
                    }
                }
                let progress = state.pending_progress();
                record(
                    &store,
                    &group_commit,
                    run.lease,
                    &queue,
                    ending,
                    progress,
                    lease_len,
                )
                .await;
            }
            .instrument(span),
        );
    }
}

enum Ending {
    Done(Result<Value, Error>),
    Halted(Halt),
}

async fn execute(
    ctx: Context,
    runner: Arc<crate::registry::RunFn>,
    input: Value,
    inline: Duration,
) -> Ending {
    let state = Arc::clone(ctx.state());
    let parker = ctx.clone();
    let workflow = AssertUnwindSafe(runner(ctx, input)).catch_unwind();
    tokio::select! {
        biased;
        () = state.signals.halted.notified() => {
            Ending::Halted(state.signals.take_halt().unwrap_or(Halt::Lost))
        }
        result = workflow => match result {
            Ok(result) => Ending::Done(result),
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                Ending::Done(Err(Error::permanent(format!("the workflow panicked: {message}"))
                    .with_category("panic")))
            }
        },
        // Polled after the workflow: it has just said it cannot go on, and every branch
        // of it waits on a durable timer.
        timer = state.waits.idle(inline, parker.clock()) => Ending::Halted(parker.park(&timer).await),
    }
}

/// Writes how a run ended, retrying database outages while the lease lasts.
async fn record(
    store: &Store,
    group_commit: &GroupCommit,
    lease: Lease,
    queue: &str,
    ending: Ending,
    progress: Option<Value>,
    lease_len: Duration,
) {
    let (status, output, error) = match ending {
        Ending::Done(Ok(output)) => (RunStatus::Completed, Some(output), None),
        Ending::Done(Err(err)) if err.is_database_unreachable() && !reachable(store).await => {
            // The workflow stopped because the engine's database was away, not because
            // it failed: hand the run back to the queue once the database answers (or
            // let its lease expire), and it resumes from its checkpoints.
            warn!(error = %err, "the database was unreachable; the run will be taken up again");
            release_when_reachable(store, lease, queue, lease_len).await;
            return;
        }
        Ending::Done(Err(err)) => {
            error!(error = %err, class = ?err.class(), "run failed");
            let report = serde_json::to_value(err.report()).unwrap_or(Value::Null);
            (RunStatus::Failed, None, Some(report))
        }
        Ending::Halted(Halt::Failed(report)) => {
            error!(error = %report.message, "run failed");
            let report = serde_json::to_value(report).unwrap_or(Value::Null);
            (RunStatus::Failed, None, Some(report))
        }
        Ending::Halted(Halt::Cancelled) => {
            info!("run cancelled");
            let why = json!({ "class": "cancelled", "message": "cancelled on request" });
            (RunStatus::Cancelled, None, Some(why))
        }
        Ending::Halted(Halt::Parked(at)) => {
            debug!(wake_at = %at, "run parked");
            return;
        }
        Ending::Halted(Halt::Released) => {
            if let Err(err) = store.release(&[lease], queue).await {
                warn!(error = %err, "could not release the run; its lease will expire");
            }
            return;
        }
        Ending::Halted(Halt::Lost) => {
            warn!("lease lost; another worker owns this run now");
            crate::observe::lease_lost();
            return;
        }
    };
    let end = Arc::new(RunEnd {
        status,
        output,
        error,
        progress,
    });
    match retry_db("recording the run's end", lease_len, || {
        group_commit.finish(lease, &end)
    })
    .await
    {
        Ok(Fenced::Held(())) => info!(%status, "run finished"),
        Ok(Fenced::Lost) => {
            warn!("lease lost before the run's end was recorded; it will be replayed");
            crate::observe::lease_lost();
        }
        Err(DbFailure::Outlasted(err) | DbFailure::Refused(err)) => {
            error!(error = %err, "could not record the run's end; it will be replayed");
        }
    }
}

/// Whether the engine's database answers now (within two seconds).
async fn reachable(store: &Store) -> bool {
    let probe = sqlx::query("SELECT 1").execute(store.pool());
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(_))
    )
}

/// Releases a run as soon as the database takes it, for as long as the lease lasts;
/// after that the lease expires by itself and the run is claimed again.
async fn release_when_reachable(store: &Store, lease: Lease, queue: &str, lease_len: Duration) {
    let leases = [lease];
    let released = retry_db("releasing the run", lease_len, || {
        store.release(&leases, queue)
    })
    .await;
    if let Err(DbFailure::Outlasted(err) | DbFailure::Refused(err)) = released {
        warn!(error = %err, "could not release the run; its lease will expire");
    }
}

/// Wakes the claim loop when a run is started on our queue.
async fn listen(pool: PgPool, queue: String, wake: Arc<Notify>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                debug!(error = %err, "cannot listen for new runs; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(WAKEUP_CHANNEL).await {
            debug!(error = %err, "cannot listen for new runs; polling meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(note)) => {
                    if note.payload() == queue {
                        wake.notify_one();
                    }
                }
                // The connection dropped; notifications may have been missed, so look.
                Ok(None) => wake.notify_one(),
                Err(err) => {
                    debug!(error = %err, "lost the notification connection; reconnecting");
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}

/// Renews every held lease in one statement, a few times per lease period, and tells
/// runs that lost theirs or were asked to cancel.
async fn heartbeat(store: Store, active: Active, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let held: Vec<(Lease, Arc<RunState>)> = lock(&active)
            .values()
            .map(|run| (run.lease, Arc::clone(run)))
            .collect();
        if held.is_empty() {
            continue;
        }
        let leases: Vec<Lease> = held.iter().map(|(lease, _)| *lease).collect();
        match store.heartbeat(&leases, lease).await {
            Ok(renewed) => {
                let renewed: HashMap<RunId, bool> = renewed.into_iter().collect();
                for (lease, run) in &held {
                    match renewed.get(&lease.run_id) {
                        Some(true) => run.signals.cancel.store(true, Ordering::Release),
                        Some(false) => {}
                        None => {
                            run.signals.lost.store(true, Ordering::Release);
                            run.signals.halt(Halt::Lost);
                        }
                    }
                }
            }
            Err(err) => warn!(error = %err, "heartbeat failed; leases run on until they expire"),
        }
    }
}
