//! The test kit for cairn workflows, the one cairn's own tests use.
//!
//! - [`TestDb`]: a fresh, migrated PostgreSQL database per test, so tests run in
//!   parallel and never clean up after each other. The server comes from
//!   `DATABASE_URL` when it is set. Otherwise, built with the `containers` feature,
//!   each test starts a PostgreSQL container (through testcontainers, on Docker or on
//!   podman's API service named by `DOCKER_HOST`; `CAIRN_TEST_POSTGRES_IMAGE` names the
//!   image) that its guard owns and removes. A test that can get neither fails with a
//!   message saying how to provide one; it never passes by skipping.
//! - [`TestWorker`]: a worker in the test's process, stopped gracefully, killed, or
//!   crashed at a planned point ([`CrashPlan`]: either side of a step's checkpoint).
//! - [`Clock::skippable`] and [`skip_to_next_wake`]: a workflow that sleeps for a day or
//!   holds a 30-day deadline is tested in milliseconds.
//! - [`sandbox`]: the sandbox vendor, a rate-limited CRM-like API over real HTTP, with
//!   its fault knobs (429 storms, 5xx, slow and hostile answers).
//!
//! ```no_run
//! # async fn t() {
//! let db = cairn_testkit::TestDb::new().await;
//! sqlx::query("SELECT 1").execute(db.pool()).await.unwrap();
//! # }
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{Client, Registry, RunDetail, RunStatus, StartOptions, Worker, WorkerConfig};

pub use cairn_runner::{Clock, CrashPlan, CrashPoint};
pub use cairn_sandbox as sandbox;

/// Moves `clock` (a [`Clock::skippable`] one, shared with the workers) to the moment
/// the earliest waiting run wakes, and returns that moment; `None` when no run waits.
/// A test of a workflow that sleeps for a day calls it instead of waiting a day.
///
/// # Panics
///
/// When `clock` is the system clock, or the database cannot be read.
pub async fn skip_to_next_wake(
    client: &Client,
    clock: &Clock,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = client
        .next_wake()
        .await
        .expect("reading the next wake time")?;
    clock.advance_to(at);
    Some(at)
}
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A database created for one test and dropped when the guard is dropped.
pub struct TestDb {
    name: String,
    server_url: String,
    admin: PgConnectOptions,
    options: PgConnectOptions,
    pool: PgPool,
    /// The test's own server, when it runs in a container (dropping it stops it).
    #[cfg(feature = "containers")]
    container: Option<containers::Container>,
}

/// A PostgreSQL server in a container, for tests (when `DATABASE_URL` is unset) and for
/// `cairn demo` on a machine without PostgreSQL's programs.
#[cfg(feature = "containers")]
pub mod containers;

impl TestDb {
    /// Creates a fresh database with the cairn schema migrated.
    ///
    /// # Panics
    ///
    /// When no PostgreSQL is reachable, with instructions.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        cairn_runner::migrate_with(
            &db.pool,
            &[&cairn_connectors::MIGRATIONS, &cairn_workflows::MIGRATIONS],
        )
        .await
        .unwrap_or_else(|e| panic!("migrating test database {} failed: {e}", db.name));
        db
    }

    /// Creates a fresh database migrated only up to `version` (inclusive) of the legacy
    /// chain ([`cairn_runner::migrate::LEGACY`]), as a database made by a cairn from
    /// before the schema was split by crate would be: an upgrade test fills it the old
    /// way, then migrates it as today's cairn does.
    ///
    /// # Panics
    ///
    /// When no PostgreSQL is reachable or a migration fails.
    pub async fn migrated_up_to(version: i64) -> Self {
        let db = Self::empty().await;
        let mut tx = db.pool.begin().await.expect("a transaction");
        // As the legacy chain ran: its bookkeeping table lives in `cairn` too.
        for statement in [
            "CREATE SCHEMA IF NOT EXISTS cairn",
            "SET LOCAL search_path TO cairn",
        ] {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .expect("preparing the cairn schema");
        }
        cairn_runner::migrate::legacy_up_to(version)
            .run(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("migrating {} up to {version} failed: {e}", db.name));
        tx.commit().await.expect("committing the old migrations");
        db
    }

    /// A fresh database with nothing in it.
    async fn empty() -> Self {
        #[cfg(feature = "containers")]
        let (container, url) = match std::env::var("DATABASE_URL") {
            Ok(url) => (None, url),
            Err(_) => {
                let container = containers::Container::start("CAIRN_TEST_POSTGRES_IMAGE")
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "DATABASE_URL is not set and {e}; set \
                             DATABASE_URL=postgres://user@host:5432/postgres, or start a \
                             Docker-compatible engine (DOCKER_HOST) and, without a registry, \
                             name a local image in CAIRN_TEST_POSTGRES_IMAGE"
                        )
                    });
                let url = container.url().to_owned();
                (Some(container), url)
            }
        };
        #[cfg(not(feature = "containers"))]
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "these tests need PostgreSQL: set DATABASE_URL, for example \
                 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
                 (the user must be allowed to CREATE DATABASE), or build the tests \
                 with `--features cairn-testkit/containers` on a machine with Docker"
            )
        });
        let admin = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("DATABASE_URL is not a valid Postgres URL: {e}"))
            .disable_statement_logging();
        let name = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to the PostgreSQL named by DATABASE_URL ({}:{}): {e}; \
                 start it or point DATABASE_URL at one",
                admin.get_host(),
                admin.get_port()
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        drop(conn);
        let options = admin.clone().database(&name);
        let pool = cairn_runner::pool_options(20)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
        Self {
            name,
            server_url: url,
            admin,
            options,
            pool,
            #[cfg(feature = "containers")]
            container,
        }
    }

    /// A pool on the test database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A new pool of its own on the test database (one per simulated worker process).
    pub async fn new_pool(&self, max_connections: u32) -> PgPool {
        cairn_runner::pool_options(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(self.options.clone())
            .await
            .expect("connecting to the test database")
    }

    /// The URL of the test database, for child processes (`DATABASE_URL`).
    pub fn url(&self) -> String {
        let base = &self.server_url;
        let (prefix, rest) = base.split_once("://").unwrap_or(("postgres", base));
        let (authority, query) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path.split_once('?').map(|(_, q)| q)),
            None => (rest, None),
        };
        match query {
            Some(query) => format!("{prefix}://{authority}/{}?{query}", self.name),
            None => format!("{prefix}://{authority}/{}", self.name),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A container of the test's own goes away whole.
        #[cfg(feature = "containers")]
        if self.container.is_some() {
            return;
        }
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside async context guarantees; a thread with its own runtime
        // can always block on the cleanup.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for test cleanup");
            runtime.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A worker running in the test's process, stopped gracefully or killed by the test.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestWorker {
    /// Starts a worker over `pool`.
    ///
    /// With a crash plan in `config` ([`WorkerConfig::crash`]), the worker dies the
    /// moment a step reaches the planned point, as a killed process would: its runs
    /// stop mid-step, its heartbeats stop, nothing is released. Another worker takes
    /// the runs over once their leases expire.
    pub fn start(pool: PgPool, registry: Arc<Registry>, config: WorkerConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let crash = config.crash.clone();
        let worker = Worker::new(pool, registry, config);
        let task = tokio::spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the worker loop");
        });
        let killer = task.abort_handle();
        tokio::spawn(async move {
            crash.reached().await;
            killer.abort();
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Waits until the worker has stopped, however it stopped (a planned crash, or
    /// [`TestWorker::shutdown`] elsewhere).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Graceful shutdown: current steps finish, unfinished runs are released.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("the worker task");
    }

    /// A crash: the worker's tasks vanish mid-step, heartbeats stop, nothing is released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts `workflow` with `input`, waits for it (two minutes at most) and asserts that
/// it completed.
pub async fn run_to_completion(
    client: &Client,
    workflow: &str,
    input: &impl Serialize,
) -> RunDetail {
    let run = run_to_end(client, workflow, input).await;
    assert_eq!(
        run.summary.status,
        RunStatus::Completed,
        "{workflow}: {:?}",
        run.error
    );
    run
}

/// Starts `workflow` with `input` and waits (two minutes at most) until the run has
/// ended, however it ended: for tests of runs that must fail.
pub async fn run_to_end(client: &Client, workflow: &str, input: &impl Serialize) -> RunDetail {
    let started = client
        .submit::<_, serde::de::IgnoredAny>(workflow, input, &StartOptions::default())
        .await
        .expect("starting the run");
    let run = client
        .wait(started.id(), Some(Duration::from_secs(120)))
        .await
        .expect("waiting for the run");
    assert!(run.summary.status.is_terminal(), "{workflow} did not end");
    run
}
