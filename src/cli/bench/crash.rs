//! `bench crash`: a `sync.backfill` executed by `cairn worker` child processes, each
//! SIGKILLed after it landed a few pages and replaced at once. Measures the pages
//! fetched again after their fetch was checkpointed, the seconds from a kill to the
//! next landed page, and checks the warehouse against the vendor. The baseline is the
//! wait a resume cannot avoid: the lease, plus a fresh worker's time from spawn to its
//! first landed page, measured on the first worker.

use std::time::{Duration, Instant};

use cairn_runner::{Client, RunId, StartOptions};
use cairn_sandbox::{SandboxConfig, SandboxHandle, Stream};
use cairn_workflows::sync::BACKFILL;
use clap::Args;
use serde_json::Value;

use super::report::{Baseline, Machine, Named, Report, Target, percentile, share};
use super::sync::{input, served, warehouse_matches};
use super::{BenchDb, WorkerProcess, at_least, completed, db_failure, sandbox};
use crate::cli::Failure;

/// Options of `cairn bench crash`.
#[derive(Debug, Args)]
pub(crate) struct CrashArgs {
    /// Records in the synced stream (pages of 100). Pages land in batches of 1,000
    /// records, so each kill takes a landing or two of the stream: 50,000 leaves room
    /// for ten.
    #[arg(long, default_value_t = 50_000)]
    records: usize,
    /// Workers SIGKILLed during the sync.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// The workers' lease in seconds: how long a killed worker's run stays claimed.
    #[arg(long, default_value_t = 2.0)]
    lease: f64,
    /// The vendor's latency per request in milliseconds, like a remote API's, so kills
    /// land mid-fetch as well as mid-landing.
    #[arg(long, default_value_t = 3)]
    latency_ms: u64,
    /// Pages a worker lands before it is killed.
    #[arg(long, default_value_t = 3)]
    pages_between_kills: u64,
    /// Give up after this many seconds of waiting for progress or completion.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl CrashArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--records", self.records as u64, 1)?;
        at_least("--pages-between-kills", self.pages_between_kills, 1)?;
        if !(self.lease.is_finite() && self.lease >= 0.5) {
            // Shorter, and a replacement worker could fetch before the kill is settled.
            return Err(Failure::usage("--lease must be at least 0.5 seconds"));
        }
        at_least("--timeout", self.timeout, 1)
    }
}

/// How often the vendor and the database are asked, after a kill, whether the dead
/// worker's connections are gone.
const SETTLE: Duration = Duration::from_millis(5);

/// What the run had done at one instant.
#[derive(Clone, Copy)]
struct Mark {
    landed: u64,
    fetched: u64,
    served: u64,
}

/// Pages the run has landed, from the progress its landing steps report.
async fn landed(db: &BenchDb, run: RunId) -> Result<u64, Failure> {
    let progress: Option<Value> =
        sqlx::query_scalar("SELECT progress FROM cairn.runs WHERE id = $1")
            .bind(run)
            .fetch_one(db.pool())
            .await
            .map_err(db_failure("crash"))?;
    Ok(progress
        .and_then(|p| p.get("pages").and_then(Value::as_u64))
        .unwrap_or(0))
}

/// What the run had done, and the vendor served, now. Costly (the vendor's stats carry
/// checksums), so only taken at kills.
async fn mark(db: &BenchDb, sandbox: &SandboxHandle, run: RunId) -> Result<Mark, Failure> {
    let (progress, fetched): (Option<Value>, i64) = sqlx::query_as(
        "SELECT progress,
                (SELECT count(*) FROM cairn.steps
                  WHERE run_id = $1 AND name LIKE 'fetch page %' AND status = 'completed')
           FROM cairn.runs WHERE id = $1",
    )
    .bind(run)
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("crash"))?;
    Ok(Mark {
        landed: progress
            .and_then(|p| p.get("pages").and_then(Value::as_u64))
            .unwrap_or(0),
        fetched: fetched as u64,
        served: served(sandbox),
    })
}

/// Database sessions of bench workers still open.
async fn worker_sessions(db: &BenchDb) -> Result<i64, Failure> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(super::WORKER_APPLICATION)
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("crash"))
}

/// Waits until the run has landed more than `pages` pages or ended; returns when.
async fn landed_beyond(
    db: &BenchDb,
    client: &Client,
    run: RunId,
    pages: u64,
    timeout: Duration,
) -> Result<Option<Instant>, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        if landed(db, run).await? > pages {
            return Ok(Some(Instant::now()));
        }
        let (status, _) = client
            .progress(run)
            .await
            .map_err(|err| Failure::failed(format!("bench crash: {err}")))?;
        if status.is_terminal() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "bench crash: no page landed within {} s; raise --timeout",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) async fn run(db: &BenchDb, args: &CrashArgs) -> Result<Report, Failure> {
    let what = "crash";
    let pool = db.pool();
    let timeout = Duration::from_secs(args.timeout);
    let sandbox = sandbox(
        what,
        SandboxConfig {
            records_per_stream: args.records,
            seed: 11,
            latency: Duration::from_millis(args.latency_ms),
            ..SandboxConfig::default()
        },
    )
    .await?;
    let client = Client::new(pool.clone());
    let started = client
        .start(
            BACKFILL,
            &input(sandbox.base_url(), Stream::Contacts, 100, ""),
            &StartOptions::default(),
        )
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    let run = started.run_id;
    let began = Instant::now();

    eprintln!("bench crash: {} kills, lease {} s", args.kills, args.lease);
    let spawned = Instant::now();
    let mut worker = WorkerProcess::spawn(db, 2, args.lease)?;
    let cold_start = match landed_beyond(db, &client, run, 0, timeout).await? {
        Some(at) => (at - spawned).as_secs_f64(),
        None => 0.0,
    };
    let mut resumes = Vec::new();
    // Served pages whose fetch had not been checkpointed when their worker died: those
    // are fetched again by design (at-least-once), the others must never be.
    let mut in_flight_at_kill = 0u64;
    let mut last = mark(db, &sandbox, run).await?;
    for kill in 0..args.kills {
        let target = last.landed + args.pages_between_kills;
        if landed_beyond(db, &client, run, target - 1, timeout)
            .await?
            .is_none()
        {
            break;
        }
        // Spread the kill instants over a page's cycle: mid-fetch, mid-landing, between.
        tokio::time::sleep(Duration::from_millis(u64::from(kill) * 37 % 100)).await;
        worker.kill();
        let killed_at = Instant::now();
        // A request the dead worker sent may still be read, answered and counted by the
        // vendor a moment later, and a checkpoint it sent may still commit. The mark
        // waits until the vendor has closed every connection the dead worker had
        // (nothing else connects to it meanwhile) and its database sessions have ended,
        // so each of its requests and commits has happened or never will; the next
        // worker starts after the mark, so what is counted before it is the dead one's.
        let drained_by = killed_at + Duration::from_secs_f64(args.lease / 2.0);
        while sandbox.vendor().open_connections() > 0 || worker_sessions(db).await? > 0 {
            if Instant::now() >= drained_by {
                return Err(Failure::failed(format!(
                    "bench {what}: the killed worker's connections were still open {:.1} s \
                     after the kill",
                    args.lease / 2.0
                )));
            }
            tokio::time::sleep(SETTLE).await;
        }
        let at_kill = mark(db, &sandbox, run).await?;
        worker = WorkerProcess::spawn(db, 2, args.lease)?;
        in_flight_at_kill +=
            (at_kill.served - last.served).saturating_sub(at_kill.fetched - last.fetched);
        match landed_beyond(db, &client, run, at_kill.landed, timeout).await? {
            Some(at) => {
                let resumed = (at - killed_at).as_secs_f64();
                eprintln!(
                    "bench crash: kill {} at page {}: progress again after {resumed:.2} s",
                    kill + 1,
                    at_kill.landed
                );
                resumes.push(resumed);
            }
            None => break,
        }
        last = at_kill;
    }
    let done = completed(&client, what, run, timeout).await;
    worker.kill();
    let done = done?;
    let total_secs = began.elapsed().as_secs_f64();
    let end = mark(db, &sandbox, run).await?;
    let matches = warehouse_matches(db, &sandbox, Stream::Contacts, what).await?;
    sandbox.shutdown().await;

    let extra = end.served.saturating_sub(end.fetched);
    let refetched_after_checkpoint = extra.saturating_sub(in_flight_at_kill);
    let resume_max = resumes.iter().copied().fold(0.0, f64::max);
    let baseline = args.lease + cold_start;
    let mut conditions = Named::default();
    conditions
        .set("records", args.records as u64)
        .set("kills", args.kills)
        .set("kills_done", resumes.len() as u64)
        .set("lease_secs", args.lease)
        .set("pages_between_kills", args.pages_between_kills)
        .set("workflow", BACKFILL)
        .set("vendor_latency_ms", args.latency_ms)
        .set("worker", "cairn worker child processes, SIGKILLed");
    let mut figures = Named::default();
    figures
        .add("pages_fetched", end.fetched as f64, "pages")
        .add("pages_served", end.served as f64, "requests")
        .add("fetched_again", extra as f64, "pages")
        .add("in_flight_at_kill", in_flight_at_kill as f64, "pages")
        .add(
            "fetched_again_after_checkpoint",
            refetched_after_checkpoint as f64,
            "pages",
        )
        .add("resume_p50", percentile(&resumes, 50.0), "s")
        .add("resume_max", resume_max, "s")
        .add("cold_start", cold_start, "s")
        .add("claims", f64::from(done.summary.claims), "claims")
        .add("total", total_secs, "s")
        .add(
            "warehouse_equals_vendor",
            f64::from(u8::from(matches)),
            "bool",
        );
    Ok(Report {
        scenario: "crash",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "lease + a fresh worker's spawn-to-first-landed-page".to_owned(),
            value: baseline,
            unit: "s",
            ratio_of: "slowest kill-to-resumed-progress / baseline".to_owned(),
        },
        ratio: share(resume_max, baseline),
        targets: vec![
            Target::at_least(
                format!("the worker was killed {} times", args.kills),
                resumes.len() as f64,
                f64::from(args.kills),
            ),
            Target::at_most(
                "zero pages fetched again after a checkpointed fetch",
                refetched_after_checkpoint as f64,
                0.0,
            ),
            Target::at_most(
                format!(
                    "progress resumed within lease + 2 s ({} s)",
                    args.lease + 2.0
                ),
                resume_max,
                args.lease + 2.0,
            ),
            Target::at_least("warehouse equals vendor", f64::from(u8::from(matches)), 1.0),
        ],
    })
}
