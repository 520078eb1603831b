//! Starting, inspecting, waiting for and cancelling runs.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::model::{RunDetail, RunStatus, RunSummary};
use crate::new_run::NewRun;
use crate::store::{FINISHED_CHANNEL, Store};
use crate::{Clock, EngineError, Registry, RunId};

/// Options of [`Client::start`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Starting twice with the same key (per workflow) returns the first run.
    pub idempotency_key: Option<String>,
    /// The queue whose workers execute the run.
    pub queue: String,
    /// When the run must have ended: past it, the run stops at its next step boundary
    /// and fails in the `deadline` category. `None`: the workflow's default timeout
    /// ([`crate::Registry::set_timeout`]) when the client knows the registry, else none.
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Higher priorities are claimed first from the queue (default 0; negative values
    /// go behind everything else): an urgent run overtakes a long backfill.
    pub priority: i32,
    /// Runs sharing a key (a vendor credential, a tenant) count against the per-key
    /// limits of the workers that execute them ([`crate::WorkerConfig::key_limits`]).
    pub concurrency_key: Option<String>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            idempotency_key: None,
            queue: "default".to_owned(),
            deadline: None,
            priority: 0,
            concurrency_key: None,
        }
    }
}

impl StartOptions {
    /// Options with an idempotency key.
    pub fn idempotency_key(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            ..Self::default()
        }
    }
}

/// The answer to [`Client::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Started {
    /// The run.
    pub run_id: RunId,
    /// `false` when the idempotency key named an existing run, which is returned instead.
    pub created: bool,
}

/// Starts and inspects runs. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    store: Store,
    registry: Option<Arc<Registry>>,
    clock: Clock,
}

impl Client {
    /// A client over `pool` that starts any workflow name without checking it; use
    /// [`Client::with_registry`] to refuse unknown names and bad inputs up front.
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: Store::new(pool),
            registry: None,
            clock: Clock::system(),
        }
    }

    /// Checks names and inputs against `registry` before a run is created.
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Seals event payloads with `sealer`, and opens step outputs with it, rather than
    /// with this process's keys ([`Sealer::process`](crate::seal::Sealer::process)).
    #[must_use]
    pub fn with_sealer(mut self, sealer: crate::seal::Sealer) -> Self {
        self.store = self.store.with_sealer(sealer);
        self
    }

    /// Measures deadlines given as timeouts by `clock` (the workers' own, in tests
    /// with a [`Clock::skippable`] one).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// When the earliest waiting run (asleep, parked, retrying later or not yet due)
    /// wakes, if any run waits: a test with a [`Clock::skippable`] clock advances it
    /// there, and an operator sees when work comes next.
    pub async fn next_wake(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, EngineError> {
        self.store.next_wake().await
    }

    /// The engine's statements: the engine's own, never a user's (they write
    /// checkpoints and take leases).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The pool this client reads and starts runs through.
    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Starts a run of `workflow` with `input`.
    pub async fn start(
        &self,
        workflow: &str,
        input: &impl Serialize,
        options: &StartOptions,
    ) -> Result<Started, EngineError> {
        let input = serde_json::to_value(input).map_err(|source| EngineError::InvalidInput {
            workflow: workflow.to_owned(),
            source,
        })?;
        let mut deadline = options.deadline;
        if let Some(registry) = &self.registry {
            registry.check_input(workflow, &input)?;
            if deadline.is_none()
                && let Some(timeout) = registry.timeout(workflow)
            {
                deadline = Some(
                    self.clock.now()
                        + chrono::Duration::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX),
                );
            }
        }
        let run = NewRun {
            idempotency_key: options.idempotency_key.as_deref(),
            deadline,
            priority: options.priority,
            concurrency_key: options.concurrency_key.as_deref(),
            ..NewRun::new(workflow, &options.queue, &input)
        };
        let (run_id, created) = self.store.start(&run).await?;
        Ok(Started { run_id, created })
    }

    /// Waits until the run has ended (completed, failed or cancelled), or `timeout`.
    /// Returns the run as it stands then.
    pub async fn wait(
        &self,
        run_id: RunId,
        timeout: Option<Duration>,
    ) -> Result<RunDetail, EngineError> {
        // Listen, ask for the end to be announced, then look, so an end in between is
        // not missed; poll as well in case the notification connection drops.
        let mut listener = match PgListener::connect_with(self.store.pool()).await {
            Ok(mut listener) => listener
                .listen(FINISHED_CHANNEL)
                .await
                .is_ok()
                .then_some(listener),
            Err(_) => None,
        };
        if listener.is_some() {
            self.store.await_end(run_id).await?;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            if self.store.status(run_id).await?.is_terminal() {
                return self.store.show(run_id).await;
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return self.store.show(run_id).await;
            }
            let poll = tokio::time::sleep(Duration::from_millis(500));
            match listener.as_mut() {
                Some(listener) => {
                    tokio::select! {
                        _ = listener.try_recv() => {}
                        () = poll => {}
                    }
                }
                None => poll.await,
            }
        }
    }

    /// Runs, newest first, optionally of one status, at most `limit` (see
    /// [`Client::runs`] for more filters).
    pub async fn list(
        &self,
        status: Option<RunStatus>,
        limit: i64,
    ) -> Result<Vec<RunSummary>, EngineError> {
        let filter = crate::RunFilter {
            status,
            limit,
            ..crate::RunFilter::default()
        };
        self.runs(&filter).await
    }

    /// One run with its steps (step outputs over [`crate::model::SHOWN_OUTPUT_BYTES`] left
    /// out, their sizes given).
    pub async fn show(&self, run_id: RunId) -> Result<RunDetail, EngineError> {
        self.store.show(run_id).await
    }

    /// The run's status and its workflow's last progress report: a cheap look for
    /// watching a run, where [`Client::show`] reads every step.
    pub async fn progress(&self, run_id: RunId) -> Result<(RunStatus, Option<Value>), EngineError> {
        self.store.progress(run_id).await
    }

    /// Cancels the run: at once if no worker holds it, else at its next step boundary.
    /// Returns its status after the request (`running` means the worker will stop it).
    pub async fn cancel(&self, run_id: RunId) -> Result<RunStatus, EngineError> {
        self.store.cancel(run_id).await
    }
}
