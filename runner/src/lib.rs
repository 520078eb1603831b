//! The durable engine of cairn: workflows written as async Rust functions made of
//! checkpointed steps, executed by leased workers on PostgreSQL.
//!
//! A completed step's output is stored with its run, so a run that crashes, loses its
//! worker or is rate limited resumes after its last completed step instead of starting
//! over.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cairn_runner::{Client, Context, Error, Registry, StartOptions, Worker, WorkerConfig};
//!
//! async fn onboard(ctx: Context, email: String) -> Result<u64, Error> {
//!     let user_id: u64 = ctx.step("create account", || async { Ok(42) }).await?;
//!     ctx.sleep(Duration::from_secs(3600)).await; // durable: no worker waits an hour
//!     ctx.step("send follow-up", || async { Ok(format!("sent to {email}")) }).await?;
//!     Ok(user_id)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
//! cairn_runner::migrate(&pool).await?;
//! let mut registry = Registry::new();
//! registry.register("onboard", onboard);
//! let registry = Arc::new(registry);
//!
//! let client = Client::new(pool.clone()).with_registry(Arc::clone(&registry));
//! client.start("onboard", &"ada@example.com", &StartOptions::default()).await?;
//! Worker::new(pool, registry, WorkerConfig::default()).run(std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! - [`Context::step`] is at-least-once: a crash between a step's side effect and its
//!   checkpoint runs the step again. [`Context::transaction`] commits the step's writes
//!   and its checkpoint in one transaction: exactly once.
//! - A step error is an [`Error`]: transient (retried with the step's [`RetryPolicy`]),
//!   rate limited until an instant (the run is parked, holding no worker) or permanent
//!   (returned to the workflow; if the workflow returns it, the run fails).
//! - A run may drive branches side by side ([`Context::fork`], [`Context::parallel`]);
//!   each branch replays its own steps in order. A durable wait (sleep, rate limit, long
//!   backoff) holds up only its branch, and the run parks once every branch waits.
//! - Time, randomness and ids a workflow decides with are recorded ([`Context::now`],
//!   [`Context::random`], [`Context::uuid`]); a changed workflow keeps its old runs on
//!   their old path with [`Context::patched`].
//! - Workers claim runs with `FOR UPDATE SKIP LOCKED` and hold a lease they renew by
//!   heartbeat; every write is fenced by the lease, so a worker that lost its lease can
//!   never write again. A run whose worker died is replayed elsewhere once its lease
//!   expires.
//!
//! # Modules
//!
//! - [`context`]: [`Context`], what a workflow calls: steps, transactions, sleeps.
//! - [`error`]: [`Error`] and its classes; [`EngineError`] for engine operations.
//! - [`registry`]: [`Registry`], workflows by name.
//! - [`worker`]: [`Worker`], claiming and executing runs.
//! - [`client`]: [`Client`], starting, listing, showing, waiting for and cancelling runs.
//! - [`handle`]: [`RunHandle`], a typed run: its result, status and cancellation.
//! - [`schedule`]: cron schedules ([`Schedules`]) and the [`Scheduler`] every worker runs.
//! - [`dead_letter`]: failed runs and quarantined records ([`DeadLetters`]), and retrying
//!   a run from its failed step.
//! - [`RunFilter`], [`Client::find`], [`Client::step_output`]: runs found by what users
//!   know of them. The engine's own statements (claims, leases, checkpoints) are
//!   private: nothing public writes a checkpoint or touches a lease.
//! - [`Clock`] and [`CrashPlan`]: time skipping and crash points for tests.
//! - [`model`]: the stored records ([`RunSummary`], [`RunDetail`], [`StepRecord`]).
//! - [`redact`]: the one place secrets are registered and masked in everything shown or stored.
//! - [`retry`]: [`RetryPolicy`], capped exponential backoff with full jitter.

mod children;
pub mod client;
mod clock;
pub mod context;
mod crash;
mod db_retry;
pub mod dead_letter;
mod determinism;
pub mod error;
mod events;
#[cfg(test)]
mod fencing_tests;
mod group_commit;
pub mod handle;
pub mod identity;
mod ids;
mod keys;
mod lookup;
pub mod migrate;
pub mod model;
mod new_run;
pub mod observe;
mod parallel;
mod presence;
pub mod redact;
pub mod registry;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod seal;
mod store;
mod stored;
mod versioning;
mod waits;
pub mod worker;

pub use children::{ChildFailed, ChildOptions};
pub use client::{Client, StartOptions, Started};
pub use clock::Clock;
pub use context::{Context, NonDeterminism, StepFuture, Steps, Tx, TxConn, TxFinished};
pub use crash::{CrashPlan, CrashPoint};
pub use dead_letter::{DeadLetterId, DeadLetters};
pub use error::{BoxError, EngineError, Error, ErrorClass, ErrorReport, ResultExt};
pub use handle::{RunError, RunHandle};
pub use ids::RunId;
pub use keys::KeyLimits;
pub use lookup::RunFilter;
pub use migrate::{Migrations, migrate, migrate_with};
pub use model::{
    RunDetail, RunStatus, RunSummary, SHOWN_OUTPUT_BYTES, StepKind, StepRecord, StepStatus,
};
pub use registry::Registry;
pub use retention::{PurgeOptions, PurgeReport, SetAside, SetAsidePurge};
pub use retry::RetryPolicy;
pub use schedule::{Scheduler, SchedulerConfig, Schedules};
pub use store::FINISHED_CHANNEL;
pub use stored::{Input, Stored};

/// The `sqlx` cairn is built with: write `cairn::sqlx::query(..)` (or depend on the
/// same version) so a transaction's connection and your queries are one `sqlx`'s types.
pub use sqlx;
pub use worker::{Retention, Worker, WorkerConfig};

/// Pool options the engine is tuned for; start from these when you build the pool a
/// [`Worker`] runs on. They differ from sqlx's defaults in one way: no ping before each
/// acquire. That ping is a round trip for every statement, and it cut a sync's speed
/// by a fifth. A connection that died while idle fails its next statement instead, as a
/// transient error that step retries and the worker loop absorb.
pub fn pool_options(max_connections: u32) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
}
