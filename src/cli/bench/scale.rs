//! `bench scale`: 1, 2, 4 and 8 `cairn worker` processes against one PostgreSQL. For each
//! count, two phases: thousands of three-step workflows queued before the workers
//! start, then many syncs at once (each stream into a table of its own). Per count it
//! prints the throughput, claims/s and the claim statements that came back empty (read
//! from each worker's `/metrics`), and the share of the machine's CPU that PostgreSQL
//! and everything together took. The baseline is one process's throughput; throughput
//! should rise with processes until the machine is saturated.

use std::time::Duration;

use cairn_runner::{Client, StartOptions};
use cairn_sandbox::{SandboxConfig, Stream};
use cairn_workflows::ledger::LedgerInput;
use cairn_workflows::sync::INCREMENTAL;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cpu::{CpuMark, CpuShare};
use super::report::{Baseline, Machine, Named, Report, Target, share};
use super::sync::input;
use super::throughput::{drain, queue};
use super::{BenchDb, WorkerProcess, at_least, db_failure, sandbox};
use crate::cli::Failure;

/// Options of `cairn bench scale`.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Worker process counts, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    processes: Vec<usize>,
    /// Three-step workflows queued for each count (enough for a few seconds of work:
    /// shorter phases move a lot from one run to the next).
    #[arg(long, default_value_t = 12_000)]
    runs: u32,
    /// Syncs at once for each count, each of its own table.
    #[arg(long, default_value_t = 16)]
    syncs: usize,
    /// Records each sync lands (pages of 100).
    #[arg(long, default_value_t = 5_000)]
    records: usize,
    /// Runs each process executes at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Database connections of each process (default: as many as fit the server's
    /// `max_connections` with the largest count, at most the concurrency plus 4).
    #[arg(long)]
    connections: Option<usize>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl ScaleArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        if self.processes.is_empty() || self.processes.iter().any(|&n| n == 0 || n > 64) {
            return Err(Failure::usage(
                "--processes takes counts from 1 to 64, e.g. 1,2,4,8",
            ));
        }
        at_least("--runs", self.runs.into(), 1)?;
        at_least("--syncs", self.syncs as u64, 1)?;
        at_least("--records", self.records as u64, 1)?;
        at_least("--concurrency", self.concurrency as u64, 1)?;
        if self.connections.is_some_and(|n| n < 4) {
            return Err(Failure::usage("--connections must be at least 4"));
        }
        at_least("--timeout", self.timeout, 1)
    }
}

/// The share of the time a WAL flush is under way from which PostgreSQL counts as
/// saturated.
const WAL_SATURATED: f64 = 0.75;

/// Connections a `cairn worker` holds by default besides one per run it executes.
const SPARE_CONNECTIONS: usize = 4;

/// Connections left to the bench itself and to anyone else on the server.
const BENCH_CONNECTIONS: usize = 10;

/// What one phase measured.
struct Phase {
    per_sec: f64,
    claims_per_sec: f64,
    claim_queries: u64,
    empty_claims: u64,
    claim_errors: u64,
    cpu: CpuShare,
    wal: WalShare,
}

pub(super) async fn run(db: &BenchDb, args: &ScaleArgs) -> Result<Report, Failure> {
    let what = "scale";
    let pool = db.pool();
    let most = args.processes.iter().copied().max().unwrap_or(1);
    let concurrency = args.concurrency;
    let connections = match args.connections {
        Some(connections) => connections,
        None => fitting_connections(db, most)
            .await?
            .min(concurrency + SPARE_CONNECTIONS),
    };
    let timeout = Duration::from_secs(args.timeout);
    let sandbox = sandbox(
        what,
        SandboxConfig {
            records_per_stream: args.records,
            only: Some(Stream::Contacts),
            ..SandboxConfig::default()
        },
    )
    .await?;
    let mut conditions = Named::default();
    conditions
        .set("processes", format!("{:?}", args.processes))
        .set("worker_concurrency", concurrency as u64)
        .set("worker_connections", connections as u64)
        .set("workflows", args.runs)
        .set("steps_per_workflow", 3)
        .set("syncs", args.syncs as u64)
        .set("records_per_sync", args.records as u64)
        .set("page_size", 100)
        .set(
            "measured",
            "throughput from the first claim to the last end; claims and empty claims from \
             the workers' /metrics; CPU shares of the whole machine over the phase; WAL \
             flushing: the share of samples (every 20 ms, as far as the bench's role sees \
             pg_stat_activity) with a session in a WALSync wait, and the sessions waiting \
             for one (WALWrite)",
        );
    let mut figures = Named::default();
    let mut rising = Vec::new();
    let mut first: Option<f64> = None;
    let mut best = 0.0f64;
    let mut all_equal = true;
    for (nth, &processes) in args.processes.iter().enumerate() {
        eprintln!(
            "bench scale: {processes} worker processes, {} workflows",
            args.runs
        );
        let flows = workflows(db, args, processes, (concurrency, connections), timeout).await?;
        eprintln!(
            "bench scale: {processes} worker processes, {} syncs",
            args.syncs
        );
        let (syncs, equal) = syncs(
            db,
            args,
            &sandbox,
            (nth, processes),
            (concurrency, connections),
        )
        .await?;
        all_equal &= equal;
        for (name, phase, unit) in [
            ("workflows", &flows, "workflows/s"),
            ("syncs", &syncs, "records/s"),
        ] {
            figures
                .add(&format!("{name}_per_sec_{processes}"), phase.per_sec, unit)
                .add(
                    &format!("{name}_claims_per_sec_{processes}"),
                    phase.claims_per_sec,
                    "claims/s",
                )
                .add(
                    &format!("{name}_claim_queries_{processes}"),
                    phase.claim_queries as f64,
                    "queries",
                )
                .add(
                    &format!("{name}_empty_claims_{processes}"),
                    phase.empty_claims as f64,
                    "queries",
                )
                .add(
                    &format!("{name}_claim_errors_{processes}"),
                    phase.claim_errors as f64,
                    "queries",
                )
                .add(
                    &format!("{name}_machine_cpu_{processes}"),
                    phase.cpu.machine,
                    "share",
                )
                .add(
                    &format!("{name}_iowait_{processes}"),
                    phase.cpu.iowait,
                    "share",
                )
                .add(
                    &format!("{name}_wal_flushing_{processes}"),
                    phase.wal.flushing,
                    "share",
                )
                .add(
                    &format!("{name}_waiting_for_wal_{processes}"),
                    phase.wal.waiting,
                    "sessions",
                );
            if let Some(postgres) = phase.cpu.postgres {
                figures.add(
                    &format!("{name}_postgres_cpu_{processes}"),
                    postgres,
                    "share",
                );
            }
        }
        // PostgreSQL is saturated when the cores are (idle while a disk write is
        // outstanding counts as spent), or when its WAL is being flushed nearly all the
        // time: commits then queue for the next flush whatever else is free.
        let saturated =
            flows.cpu.machine + flows.cpu.iowait >= 0.9 || flows.wal.flushing >= WAL_SATURATED;
        rising.push((processes, flows.per_sec, saturated));
        first.get_or_insert(flows.per_sec);
        best = best.max(flows.per_sec);
        truncate_runs(db).await?;
    }
    sandbox.shutdown().await;
    let one = first.unwrap_or(0.0);
    // A step from one count to the next that did not raise throughput by 5%, although
    // PostgreSQL was not saturated at the smaller count.
    let stalls = rising
        .windows(2)
        .filter(|w| w[1].1 < w[0].1 * 1.05 && !w[0].2)
        .count();
    Ok(Report {
        scenario: "scale",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: format!(
                "one worker process's workflows/s, concurrency {concurrency}, {connections} \
                 connections"
            ),
            value: one,
            unit: "workflows/s",
            ratio_of: "best workflows/s / one process's".to_owned(),
        },
        ratio: share(best, one),
        targets: vec![
            Target::at_most(
                "throughput rises with processes until PostgreSQL saturates (steps that did \
                 not rise 5% while the CPUs were under 90% busy and the WAL was being flushed \
                 under 75% of the time)",
                stalls as f64,
                0.0,
            ),
            Target::at_least(
                "every sync's table equals the vendor",
                f64::from(u8::from(all_equal)),
                1.0,
            ),
        ],
    })
}

/// The most connections a process may hold so that `processes` of them fit the server's
/// `max_connections`.
async fn fitting_connections(db: &BenchDb, processes: usize) -> Result<usize, Failure> {
    let (max, reserved): (String, String) = sqlx::query_as(
        "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')",
    )
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("scale"))?;
    let usable = max
        .parse::<usize>()
        .unwrap_or(100)
        .saturating_sub(reserved.parse::<usize>().unwrap_or(3))
        .saturating_sub(BENCH_CONNECTIONS);
    let each = usable / processes.max(1);
    if each < 4 {
        return Err(Failure::failed(format!(
            "bench scale: {processes} workers of 4 connections do not fit the server's \
             max_connections ({max}); pass fewer --processes"
        )));
    }
    Ok(each)
}

/// The first phase: `args.runs` three-step workflows queued, then executed by
/// `processes` workers.
async fn workflows(
    db: &BenchDb,
    args: &ScaleArgs,
    processes: usize,
    sizes: (usize, usize),
    timeout: Duration,
) -> Result<Phase, Failure> {
    let client = Client::new(db.pool().clone());
    let input = LedgerInput {
        steps: 3,
        step_ms: 0,
        transactional_every: 0,
        record: false,
    };
    queue(&client, &input, args.runs).await?;
    let mark = CpuMark::now();
    let sampler = WalSampler::start(db);
    let workers = Workers::spawn(db, processes, sizes)?;
    drain(db.pool(), timeout.as_secs()).await?;
    let cpu = mark.share();
    let wal = sampler.stop().await;
    let claims = workers.claims().await?;
    drop(workers);
    phase_figures(db, f64::from(args.runs), claims, (cpu, wal)).await
}

/// The second phase: `args.syncs` syncs of as many tables started at once, executed by
/// `processes` workers. Also says whether every table then equals the vendor.
async fn syncs(
    db: &BenchDb,
    args: &ScaleArgs,
    sandbox: &cairn_sandbox::SandboxHandle,
    (nth, processes): (usize, usize),
    sizes: (usize, usize),
) -> Result<(Phase, bool), Failure> {
    let client = Client::new(db.pool().clone());
    let schemas: Vec<String> = (0..args.syncs)
        .map(|i| format!("scale_{nth}_{i}"))
        .collect();
    for schema in &schemas {
        let mut sync = input(sandbox.base_url(), Stream::Contacts, 100, "");
        sync.warehouse_schema = Some(schema.clone());
        client
            .start(INCREMENTAL, &sync, &StartOptions::default())
            .await
            .map_err(|err| Failure::failed(format!("bench scale: {err}")))?;
    }
    let mark = CpuMark::now();
    let sampler = WalSampler::start(db);
    let workers = Workers::spawn(db, processes, sizes)?;
    drain(db.pool(), args.timeout).await?;
    let cpu = mark.share();
    let wal = sampler.stop().await;
    let claims = workers.claims().await?;
    drop(workers);
    let mut equal = true;
    for schema in &schemas {
        equal &=
            super::sync::schema_matches(db, sandbox, (schema, Stream::Contacts), "scale").await?;
    }
    let records = (args.syncs * args.records) as f64;
    Ok((phase_figures(db, records, claims, (cpu, wal)).await?, equal))
}

/// A phase's figures from its runs' timestamps and the workers' claim counts.
async fn phase_figures(
    db: &BenchDb,
    done: f64,
    claims: Claims,
    (cpu, wal): (CpuShare, WalShare),
) -> Result<Phase, Failure> {
    let (span, claimed): (f64, i64) = sqlx::query_as(
        "SELECT coalesce(extract(epoch FROM max(finished_at) - min(started_at)), 0)::float8,
                coalesce(sum(claims), 0)::int8
           FROM cairn.runs",
    )
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("scale"))?;
    Ok(Phase {
        per_sec: share(done, span),
        claims_per_sec: share(claimed as f64, span),
        claim_queries: claims.queries,
        empty_claims: claims.empty,
        claim_errors: claims.errors,
        cpu,
        wal,
    })
}

/// Empties the runs (and with them their steps) between counts, so each count starts
/// on tables of the same size.
async fn truncate_runs(db: &BenchDb) -> Result<(), Failure> {
    sqlx::query("TRUNCATE cairn.runs CASCADE")
        .execute(db.pool())
        .await
        .map_err(db_failure("scale"))?;
    Ok(())
}

/// Claim statements the workers ran, as their `/metrics` count them.
#[derive(Default)]
struct Claims {
    queries: u64,
    empty: u64,
    errors: u64,
}

/// Worker processes, each serving `/metrics` on a port of its own.
struct Workers(Vec<(WorkerProcess, u16)>);

impl Workers {
    /// `processes` workers, each executing `concurrency` runs at once on `connections`.
    fn spawn(
        db: &BenchDb,
        processes: usize,
        (concurrency, connections): (usize, usize),
    ) -> Result<Self, Failure> {
        let mut workers = Vec::with_capacity(processes);
        for _ in 0..processes {
            let port = free_port()?;
            let bind = format!("127.0.0.1:{port}");
            let connections = connections.to_string();
            let extra = ["--http", &bind, "--connections", &connections];
            let worker = WorkerProcess::spawn_as(db, concurrency, 30.0, None, &extra)?;
            workers.push((worker, port));
        }
        Ok(Self(workers))
    }

    /// The claim statements of every worker, summed.
    async fn claims(&self) -> Result<Claims, Failure> {
        let mut claims = Claims::default();
        for (_, port) in &self.0 {
            let text = scrape(*port).await?;
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("cairn_claim_queries_total{result=\"") else {
                    continue;
                };
                let (result, value) = rest.split_once("\"}").unwrap_or_default();
                let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
                claims.queries += value;
                match result {
                    "empty" => claims.empty += value,
                    "error" => claims.errors += value,
                    _ => {}
                }
            }
        }
        Ok(claims)
    }
}

/// A port of 127.0.0.1 free a moment ago.
fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| Failure::failed(format!("bench scale: no free port: {err}")))
}

/// The text a worker's `/metrics` serves, retried while it starts listening.
async fn scrape(port: u16) -> Result<String, Failure> {
    let mut last = String::new();
    for _ in 0..50 {
        match get_metrics(port).await {
            Ok(text) => return Ok(text),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Failure::failed(format!(
        "bench scale: the worker on port {port} serves no /metrics: {last}"
    )))
}

/// One `GET /metrics` over HTTP/1.0 (the answer ends with the connection).
async fn get_metrics(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_owned())
        }
        _ => Err(std::io::Error::other("not a 200 answer")),
    }
}

/// How busy PostgreSQL's WAL flushing was over a phase.
#[derive(Default)]
struct WalShare {
    /// Samples with a session flushing the WAL (`WALSync`), as a share of all.
    flushing: f64,
    /// Sessions waiting for a flush (`WALWrite`), on average.
    waiting: f64,
}

/// Samples `pg_stat_activity` every 20 ms on a connection of its own until stopped.
struct WalSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<WalShare>,
}

impl WalSampler {
    fn start(db: &BenchDb) -> Self {
        let pool = db.pool().clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut samples, mut flushing, mut waiting) = (0u64, 0u64, 0i64);
            loop {
                let sample: Result<(bool, i64), _> = sqlx::query_as(
                    "SELECT coalesce(bool_or(wait_event = 'WALSync'), false),
                            count(*) FILTER (WHERE wait_event = 'WALWrite')
                       FROM pg_stat_activity",
                )
                .fetch_one(&pool)
                .await;
                if let Ok((flush, wait)) = sample {
                    samples += 1;
                    flushing += u64::from(flush);
                    waiting += wait;
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            WalShare {
                flushing: share(flushing as f64, samples as f64),
                waiting: share(waiting as f64, samples as f64),
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> WalShare {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
