//! `bench throughput`: many short `ledger` workflows started at once and executed by one
//! in-process worker sized for the machine. The baseline is bare single-row INSERT
//! commits issued at the same time by as many connections as the worker's pool holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_runner::{Client, StartOptions};
use cairn_workflows::ledger::{self, LedgerInput};
use clap::Args;
use tokio::task::JoinSet;

use super::report::{Baseline, Machine, Named, Report, Target, percentile, share};
use super::{BenchDb, InProcessWorker, at_least, db_failure};
use crate::cli::Failure;

/// Options of `cairn bench throughput`.
#[derive(Debug, Args)]
pub(crate) struct ThroughputArgs {
    /// Workflows started at once.
    #[arg(long, default_value_t = 2_000)]
    runs: u32,
    /// Steps in each workflow.
    #[arg(long, default_value_t = 3)]
    steps: u32,
    /// Workflows executed first, not measured, so the measured ones meet a worker whose
    /// statements are prepared and planned on its connections (default 0: a worker
    /// fresh from its start, as after a deploy).
    #[arg(long, default_value_t = 0)]
    warm_up: u32,
    /// Connections of the worker's own pool (default: one per run it executes plus 4,
    /// at most 40, as for the bare commits).
    #[arg(long)]
    connections: Option<u32>,
    /// Runs the worker executes at once (default: 32 per CPU).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl ThroughputArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--runs", self.runs.into(), 1)?;
        at_least("--steps", self.steps.into(), 1)?;
        if self.connections.is_some_and(|n| n < 4) {
            return Err(Failure::usage("--connections must be at least 4"));
        }
        if self.concurrency == Some(0) {
            return Err(Failure::usage("--concurrency must be at least 1"));
        }
        at_least("--timeout", self.timeout, 1)
    }

    fn concurrency(&self) -> usize {
        self.concurrency
            .unwrap_or_else(|| 32 * std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Connections: enough that runs rarely wait for one, few enough for a default
    /// server's `max_connections` of 100.
    pub(super) fn pool_size(&self) -> u32 {
        (self.concurrency() as u32 + 4).clamp(4, 40)
    }

    /// Connections of the worker's own pool.
    fn worker_connections(&self) -> u32 {
        self.connections.unwrap_or_else(|| self.pool_size())
    }
}

/// Tasks that start runs, like that many clients of an application.
const STARTERS: usize = 8;

pub(super) async fn run(db: &BenchDb, args: &ThroughputArgs) -> Result<Report, Failure> {
    let what = "throughput";
    let pool = db.pool();
    let concurrency = args.concurrency();
    let client = Client::new(pool.clone());
    let input = LedgerInput {
        steps: args.steps,
        step_ms: 0,
        transactional_every: 0,
        record: false,
    };

    eprintln!(
        "bench throughput: bare INSERT commits on {} connections",
        args.pool_size()
    );
    let commits_per_sec = bare_commits(db, args.pool_size() as usize, 4_000).await?;

    // The worker has a pool of its own, as a `cairn worker` process has: opened as the
    // worker needs connections, its statements prepared on those. (On the bench's pool,
    // whose 40 connections the baseline and the starters had opened, the worker's
    // statements went to each in turn, each planned afresh on every one of them.)
    let workers_pool = cairn_runner::pool_options(args.worker_connections())
        .connect(db.url())
        .await
        .map_err(db_failure(what))?;
    // A worker that has run for a while has prepared its statements on its connections,
    // and PostgreSQL has settled on their plans (it plans a prepared statement afresh
    // for each of its first five executions on a connection). A first batch, when asked
    // for, does that on the worker's pool; the measured one then meets a worker in its
    // steady state.
    let mut warm_up_per_sec = 0.0;
    if args.warm_up > 0 {
        eprintln!(
            "bench throughput: warming up with {} workflows",
            args.warm_up
        );
        queue(&client, &input, args.warm_up).await?;
        let started = Instant::now();
        let worker = InProcessWorker::start(&workers_pool, concurrency);
        let drained = drain(pool, args.timeout).await;
        worker.stop().await?;
        drained?;
        warm_up_per_sec = share(f64::from(args.warm_up), started.elapsed().as_secs_f64());
        sqlx::query("TRUNCATE cairn.runs CASCADE")
            .execute(pool)
            .await
            .map_err(db_failure(what))?;
    }
    eprintln!(
        "bench throughput: starting {} workflows of {} steps",
        args.runs, args.steps
    );
    // Every run is queued before the worker starts, so the worker's figures are its own
    // and not the rate at which runs can be started.
    let start_secs = queue(&client, &input, args.runs).await?;
    eprintln!("bench throughput: executing them, worker concurrency {concurrency}");
    let worker_started: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(pool)
            .await
            .map_err(db_failure(what))?;
    let worker = InProcessWorker::start(&workers_pool, concurrency);
    let drained = drain(pool, args.timeout).await;
    worker.stop().await?;
    drained?;
    workers_pool.close().await;

    // Seconds since the epoch: created, claimed first, finished.
    let rows: Vec<(f64, f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM started_at)::float8,
                extract(epoch FROM finished_at)::float8
           FROM cairn.runs",
    )
    .fetch_all(pool)
    .await
    .map_err(db_failure(what))?;
    let last_end = rows.iter().map(|r| r.2).fold(f64::NEG_INFINITY, f64::max);
    let span = last_end - worker_started;
    let start_to_end: Vec<f64> = rows.iter().map(|r| (r.2 - r.0) * 1000.0).collect();
    let claim_to_end: Vec<f64> = rows.iter().map(|r| (r.2 - r.1) * 1000.0).collect();
    let workflows_per_sec = share(f64::from(args.runs), span);
    let steps_per_sec = workflows_per_sec * f64::from(args.steps);
    let starts_per_sec = share(f64::from(args.runs), start_secs);

    let mut conditions = Named::default();
    conditions
        .set("workflows", args.runs)
        .set("steps_per_workflow", args.steps)
        .set("worker_concurrency", concurrency)
        .set("pool_connections", args.pool_size())
        .set("worker_connections", args.worker_connections())
        .set("starters", STARTERS)
        .set("warm_up_workflows", args.warm_up)
        .set("workflow", ledger::NAME)
        .set(
            "measured",
            "after any warm-up, all runs queued first; workflows/s from the worker's start \
             to the last end; start-to-end includes the wait in the queue; the worker on a \
             pool of its own",
        );
    let mut figures = Named::default();
    figures
        .add("workflows_per_sec", workflows_per_sec, "workflows/s")
        .add("steps_per_sec", steps_per_sec, "steps/s")
        .add("start_to_end_p50", percentile(&start_to_end, 50.0), "ms")
        .add("start_to_end_p99", percentile(&start_to_end, 99.0), "ms")
        .add("claim_to_end_p50", percentile(&claim_to_end, 50.0), "ms")
        .add("claim_to_end_p99", percentile(&claim_to_end, 99.0), "ms")
        .add("worker_start_to_last_end", span, "s")
        .add("starts_per_sec", starts_per_sec, "runs/s")
        .add("warm_up_workflows_per_sec", warm_up_per_sec, "workflows/s")
        .add("bare_commits_per_sec", commits_per_sec, "commits/s");
    Ok(Report {
        scenario: "throughput",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: format!(
                "bare single-row INSERT commits on {} connections",
                args.pool_size()
            ),
            value: commits_per_sec,
            unit: "commits/s",
            ratio_of: "workflows/s / bare commits/s".to_owned(),
        },
        ratio: share(workflows_per_sec, commits_per_sec),
        targets: vec![Target::at_least(
            format!("at least 4,000 workflows/s of {} steps", args.steps),
            workflows_per_sec,
            4_000.0,
        )],
    })
}

/// Waits until no run is open; fails after `timeout` seconds, or once they have all
/// ended if any did not complete.
pub(super) async fn drain(pool: &sqlx::PgPool, timeout: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let (open, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')),
                    count(*) FILTER (WHERE status <> 'completed')
               FROM cairn.runs",
        )
        .fetch_one(pool)
        .await
        .map_err(db_failure("bench"))?;
        if open == 0 && failed > 0 {
            return Err(Failure::failed(format!(
                "bench: {failed} runs did not complete; see the worker's log"
            )));
        }
        if open == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "bench: {open} runs still open after {timeout} s; raise --timeout"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `runs` `ledger` runs of `input` from [`STARTERS`] tasks at once, like that many
/// clients of an application; returns the seconds it took.
pub(super) async fn queue(client: &Client, input: &LedgerInput, runs: u32) -> Result<f64, Failure> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut starters = JoinSet::new();
    for _ in 0..STARTERS {
        let (client, input, next) = (client.clone(), input.clone(), Arc::clone(&next));
        starters.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < runs {
                client
                    .start(ledger::NAME, &input, &StartOptions::default())
                    .await?;
            }
            Ok::<_, cairn_runner::EngineError>(())
        });
    }
    while let Some(joined) = starters.join_next().await {
        joined
            .map_err(|err| Failure::failed(format!("bench: a starter panicked: {err}")))?
            .map_err(|err| Failure::failed(format!("bench: {err}")))?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `total` single-row INSERT commits spread over `connections` tasks; returns commits/s.
async fn bare_commits(db: &BenchDb, connections: usize, total: u32) -> Result<f64, Failure> {
    let pool = db.pool();
    sqlx::query("CREATE TABLE public.bench_bare (id bigint PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(pool)
        .await
        .map_err(db_failure("throughput"))?;
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (pool, next) = (pool.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= total {
                    return Ok::<_, sqlx::Error>(());
                }
                sqlx::query("INSERT INTO public.bench_bare (id, payload) VALUES ($1, '1')")
                    .bind(i64::from(id))
                    .execute(&pool)
                    .await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .map_err(|err| Failure::failed(format!("bench throughput: a task panicked: {err}")))?
            .map_err(db_failure("throughput"))?;
    }
    Ok(share(f64::from(total), started.elapsed().as_secs_f64()))
}
