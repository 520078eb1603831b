//! `cairn bench <scenario>`: measurements of the engine on this machine, each with a
//! baseline measured in the same run so the ratio stays meaningful on a noisy machine.
//!
//! Every scenario works in a database of its own, created next to the one
//! `DATABASE_URL` names and dropped afterwards, so a run never touches user data and
//! never sees stale state. The sandbox vendor runs in-process on 127.0.0.1; workers run
//! in-process too, except in `crash`, which SIGKILLs `cairn worker` child processes.

mod bulk;
mod cpu;
mod crash;
mod dsr;
mod preload;
mod ratelimit;
mod reconcile;
mod report;
mod scale;
mod steps;
mod sync;
mod throughput;
mod write;

use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{Client, Registry, RunDetail, RunId, RunStatus, Worker, WorkerConfig};
use cairn_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use clap::{Args, Subcommand};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::oneshot;

use super::{Failure, Outcome, connect, describe};
use report::Report;

/// The arguments of `cairn bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One workflow of sequential steps: steps/s and per-step overhead, plain and
    /// transactional, against a bare single-row INSERT commit loop on the same pool.
    Steps(steps::StepsArgs),
    /// Many short workflows started at once: workflows/s, steps/s and start-to-end
    /// latency, against bare INSERT commits at the same concurrency.
    Throughput(throughput::ThroughputArgs),
    /// A full sync of sandbox records into a typed warehouse table with limits off, then
    /// an incremental run after updates: records/s, requests and peak memory, against
    /// the sandbox's own serving rate.
    Sync(sync::SyncArgs),
    /// Syncs under a vendor rate limit, alone and two on one credential: the share of
    /// the limit achieved and the 429s provoked.
    Ratelimit(ratelimit::RatelimitArgs),
    /// A sync whose `cairn worker` process is SIGKILLed repeatedly: pages fetched again,
    /// seconds from kill to resumed progress, and the warehouse checked against the vendor.
    Crash(crash::CrashArgs),
    /// Delete reconciliation of 100,000 and 1,000,000 ids: seconds and ids/s at each
    /// size, and how time per id grows, against reading the same id listing.
    Reconcile(reconcile::ReconcileArgs),
    /// A pipeline writing records by POST to a destination limited to 20 requests a
    /// second that loses some answers: writes/s against the limit, 429s, duplicates.
    Write(write::WriteArgs),
    /// Discovery for one person across three vendors limited to 5 requests a second
    /// each: wall time from opening the request to its compiled report, against the same
    /// lookups by bare source clients.
    Dsr(dsr::DsrArgs),
    /// 1, 2, 4 and 8 `cairn worker` processes against one PostgreSQL, for three-step
    /// workflows and for many syncs at once: throughput, claims/s and empty claims per
    /// process count, and the CPU PostgreSQL took, against one process's throughput.
    Scale(scale::ScaleArgs),
}

/// Runs one scenario and prints its report.
pub(crate) async fn run(url: Option<&str>, args: BenchArgs) -> Outcome {
    let report = match args.scenario {
        Scenario::Steps(args) if args.preload > 0 => {
            args.check()?;
            let loaded = BenchDb::create(url, 8).await?;
            let empty = match BenchDb::create(url, 8).await {
                Ok(empty) => empty,
                Err(failure) => {
                    loaded.drop().await;
                    return Err(failure);
                }
            };
            let outcome = interruptible(preload::run(&loaded, &empty, &args, args.preload)).await;
            let outcome = empty.finish(outcome).await;
            loaded.finish(outcome).await?
        }
        Scenario::Steps(args) => {
            args.check()?;
            let db = BenchDb::create(url, 8).await?;
            let outcome = interruptible(steps::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Throughput(args) => {
            args.check()?;
            let db = BenchDb::create(url, args.pool_size()).await?;
            let outcome = interruptible(throughput::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Sync(args) => {
            args.check()?;
            let db = BenchDb::create(url, 8).await?;
            let outcome = interruptible(sync::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Ratelimit(args) => {
            args.check()?;
            let db = BenchDb::create(url, 12).await?;
            let outcome = interruptible(ratelimit::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Crash(args) => {
            args.check()?;
            let db = BenchDb::create(url, 4).await?;
            let outcome = interruptible(crash::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Reconcile(args) => {
            args.check()?;
            let db = BenchDb::create(url, 6).await?;
            let outcome = interruptible(reconcile::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Write(args) => {
            args.check()?;
            let db = BenchDb::create(url, 8).await?;
            let outcome = interruptible(write::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Dsr(args) => {
            args.check()?;
            let db = BenchDb::create(url, 12).await?;
            let outcome = interruptible(dsr::run(&db, &args)).await;
            db.finish(outcome).await?
        }
        Scenario::Scale(args) => {
            args.check()?;
            let db = BenchDb::create(url, 6).await?;
            let outcome = interruptible(scale::run(&db, &args)).await;
            db.finish(outcome).await?
        }
    };
    if args.json {
        super::print::json(&report)?;
    } else {
        report.print_table();
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a scenario until it ends or SIGINT/SIGTERM arrives; either way the caller then
/// drops the bench database (and dropping the scenario kills its child processes).
async fn interruptible(
    scenario: impl Future<Output = Result<Report, Failure>>,
) -> Result<Report, Failure> {
    tokio::select! {
        outcome = scenario => outcome,
        () = super::shutdown_signal() => Err(Failure::failed("bench: interrupted")),
    }
}

/// A database created for one benchmark run and dropped after it.
pub(crate) struct BenchDb {
    name: String,
    admin: PgPool,
    url: String,
    pool: PgPool,
}

impl BenchDb {
    /// Creates and migrates a fresh database on the server `url` names, with a pool of
    /// `max_connections` on it.
    pub(crate) async fn create(url: Option<&str>, max_connections: u32) -> Result<Self, Failure> {
        // `connect` says clearly what is wrong with an unset or unreachable server; the
        // admin pool itself is quiet, as a DROP DATABASE is slow by nature.
        connect(url, 1).await?.close().await;
        let url = url.expect("connect checked that the URL is set");
        let server = PgConnectOptions::from_str(url)
            .expect("connect parsed this URL")
            .disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(server.clone())
            .await
            .map_err(|err| Failure::failed(format!("bench: {}", describe(&err))))?;
        let name = format!("cairn_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .map_err(|err| {
                Failure::failed(format!(
                    "bench: cannot create database {name} (the DATABASE_URL user needs \
                     CREATEDB): {}",
                    describe(&err)
                ))
            })?;
        let options = server.database(&name);
        let pool = match cairn_runner::pool_options(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
        {
            Ok(pool) => pool,
            Err(err) => {
                drop_database(&admin, &name).await;
                return Err(Failure::failed(format!(
                    "bench: cannot connect to the bench database {name}: {}",
                    describe(&err)
                )));
            }
        };
        let created = Self {
            url: database_url(url, &name),
            name,
            admin,
            pool,
        };
        if let Err(err) = crate::migrate(&created.pool).await {
            let message = format!("bench: migrating the bench database failed: {err}");
            created.drop().await;
            return Err(Failure::failed(message));
        }
        Ok(created)
    }

    /// The pool on the bench database.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The bench database's URL, for child processes.
    fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database whatever the scenario's outcome, then hands the outcome on.
    async fn finish(self, outcome: Result<Report, Failure>) -> Result<Report, Failure> {
        self.drop().await;
        outcome
    }

    pub(crate) async fn drop(self) {
        self.pool.close().await;
        drop_database(&self.admin, &self.name).await;
        self.admin.close().await;
    }
}

async fn drop_database(admin: &PgPool, name: &str) {
    // FORCE: a SIGKILLed worker's connection may linger for a moment.
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(admin)
    .await;
    if let Err(err) = dropped {
        eprintln!("warning: could not drop bench database {name}: {err}");
    }
}

/// `url` with its database replaced by `name` (query parameters kept).
fn database_url(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map(|(_, q)| q)),
        None => match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        },
    };
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// The built-in workflows; a bench never depends on what a custom binary registered.
fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    cairn_workflows::register_builtin(&mut registry);
    Arc::new(registry)
}

/// The built-in workflows with an audit key for privacy requests (a benchmark's
/// database, and its trail, go with it).
fn registry_with_key(key: cairn_workflows::dsr::AuditKey) -> Arc<Registry> {
    let mut registry = Registry::new();
    cairn_workflows::register_builtin(&mut registry);
    registry.provide(key);
    Arc::new(registry)
}

/// A worker running in this process until [`InProcessWorker::stop`].
struct InProcessWorker {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), cairn_runner::EngineError>>,
}

impl InProcessWorker {
    fn start(pool: &PgPool, concurrency: usize) -> Self {
        Self::start_sealed(
            pool,
            concurrency,
            cairn_runner::seal::Sealer::process(),
            "default",
        )
    }

    /// A worker that answers privacy requests, auditing them under `key`.
    fn start_with_key(
        pool: &PgPool,
        concurrency: usize,
        key: cairn_workflows::dsr::AuditKey,
    ) -> Self {
        Self::spawn(
            pool,
            concurrency,
            cairn_runner::seal::Sealer::process(),
            "default",
            registry_with_key(key),
        )
    }

    /// A worker on `queue` that seals step outputs with `sealer`.
    fn start_sealed(
        pool: &PgPool,
        concurrency: usize,
        sealer: cairn_runner::seal::Sealer,
        queue: &str,
    ) -> Self {
        Self::spawn(pool, concurrency, sealer, queue, registry())
    }

    fn spawn(
        pool: &PgPool,
        concurrency: usize,
        sealer: cairn_runner::seal::Sealer,
        queue: &str,
        registry: Arc<Registry>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = Worker::new(
            pool.clone(),
            registry,
            WorkerConfig {
                concurrency,
                queue: queue.to_owned(),
                poll_interval: Duration::from_millis(100),
                ..WorkerConfig::default()
            },
        )
        .with_sealer(sealer);
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) -> Result<(), Failure> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Failure::failed(format!("bench: the worker failed: {err}"))),
            Err(err) => Err(Failure::failed(format!(
                "bench: the worker panicked: {err}"
            ))),
        }
    }
}

/// A `cairn worker` child process of this executable on the bench database, SIGKILLed
/// when dropped.
struct WorkerProcess(Child);

/// The `application_name` of a bench worker's database sessions (followed by its
/// identity, when it has one), so that a bench can tell when a killed worker's sessions
/// are gone.
const WORKER_APPLICATION: &str = "cairn-bench-worker";

impl WorkerProcess {
    fn spawn(db: &BenchDb, concurrency: usize, lease: f64) -> Result<Self, Failure> {
        Self::spawn_as(db, concurrency, lease, None, &[])
    }

    /// A worker under the lasting identity `id` (`cairn worker --id`), when given, and
    /// with `extra` arguments.
    fn spawn_as(
        db: &BenchDb,
        concurrency: usize,
        lease: f64,
        id: Option<&str>,
        extra: &[&str],
    ) -> Result<Self, Failure> {
        let exe = std::env::current_exe()
            .map_err(|err| Failure::failed(format!("bench: cannot find this executable: {err}")))?;
        let mut command = Command::new(&exe);
        command
            .env("DATABASE_URL", db.url())
            .env("PGAPPNAME", worker_application(id))
            .env("RUST_LOG", "error")
            .args(["worker", "--poll", "0.1"])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--lease", &lease.to_string()]);
        if let Some(id) = id {
            command.args(["--id", id]);
        }
        command.args(extra);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Self)
            .map_err(|err| {
                Failure::failed(format!(
                    "bench: cannot spawn `{} worker`: {err}",
                    exe.display()
                ))
            })
    }

    /// The process's peak resident memory in MB (`VmHWM`), if it is still running.
    fn peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        report::status_mb(&status, "VmHWM")
    }

    /// SIGKILL, and reap it so its connections are gone from the kernel's view.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `application_name` of the sessions of the bench worker under identity `id`.
fn worker_application(id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{WORKER_APPLICATION} {id}"),
        None => WORKER_APPLICATION.to_owned(),
    }
}

/// Waits up to `timeout` for `run` and fails unless it completed.
async fn completed(
    client: &Client,
    what: &str,
    run: RunId,
    timeout: Duration,
) -> Result<RunDetail, Failure> {
    let detail = client
        .wait(run, Some(timeout))
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    match detail.summary.status {
        RunStatus::Completed => Ok(detail),
        status if status.is_terminal() => Err(Failure::failed(format!(
            "bench {what}: run {run} ended {status}: {}",
            detail
                .error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or("no error recorded")
        ))),
        status => Err(Failure::failed(format!(
            "bench {what}: run {run} still {status} after {} s; raise --timeout",
            timeout.as_secs()
        ))),
    }
}

/// Starts the sandbox vendor on an ephemeral port of 127.0.0.1.
async fn sandbox(what: &str, config: SandboxConfig) -> Result<SandboxHandle, Failure> {
    Sandbox::start(config, "127.0.0.1:0".parse().expect("a socket address"))
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: the sandbox vendor: {err}")))
}

/// A database error during a scenario, as a one-line failure.
fn db_failure(what: &str) -> impl Fn(sqlx::Error) -> Failure + '_ {
    move |err| Failure::failed(format!("bench {what}: {}", describe(&err)))
}

/// Fails with a usage error unless `value` is at least `min`.
fn at_least(flag: &str, value: u64, min: u64) -> Result<(), Failure> {
    if value < min {
        return Err(Failure::usage(format!("{flag} must be at least {min}")));
    }
    Ok(())
}
