//! `bench crash`: a `sync.backfill` executed by `cairn worker` child processes, the one
//! holding the run SIGKILLed after every few pages. Kills alternate between two ways
//! back: a standby worker that takes the run over once its lease expires, and the
//! killed worker restarted under its lasting identity (`--id`), which takes the run
//! back at once. Measures the seconds from each kill to the next checkpointed page, the
//! pages fetched again after their fetch was checkpointed, and checks the warehouse
//! against the vendor. The baseline is the wait a restart cannot avoid: a fresh
//! worker's time from spawn to its first checkpointed page, measured on the first one.

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

/// Database sessions of the bench worker under identity `id` still open.
async fn worker_sessions(db: &BenchDb, id: &str) -> Result<i64, Failure> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(super::worker_application(Some(id)))
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("crash"))
}

/// Pages of the run whose fetch is checkpointed.
async fn fetched(db: &BenchDb, run: RunId) -> Result<u64, Failure> {
    let fetched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.steps
          WHERE run_id = $1 AND name LIKE 'fetch page %' AND status = 'completed'",
    )
    .bind(run)
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("crash"))?;
    Ok(fetched as u64)
}

/// The identity of the worker holding the run's lease.
async fn holder(db: &BenchDb, run: RunId) -> Result<Option<String>, Failure> {
    sqlx::query_scalar("SELECT lease_owner FROM cairn.runs WHERE id = $1 AND status = 'running'")
        .bind(run)
        .fetch_optional(db.pool())
        .await
        .map(Option::flatten)
        .map_err(db_failure("crash"))
}

/// Pages of a run counted one way or the other.
#[derive(Clone, Copy)]
enum Pages {
    /// Fetched, their fetch checkpointed.
    Fetched,
    /// Landed, as its landings report.
    Landed,
}

/// Waits until the run has more than `pages` pages counted as `counted`, or has ended;
/// returns when.
async fn beyond(
    (db, client): (&BenchDb, &Client),
    run: RunId,
    (counted, pages): (Pages, u64),
    timeout: Duration,
) -> Result<Option<Instant>, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = match counted {
            Pages::Fetched => fetched(db, run).await?,
            Pages::Landed => landed(db, run).await?,
        };
        if now > pages {
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
                "bench crash: no page went beyond {pages} within {} s; raise --timeout",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How a killed worker's run comes back.
#[derive(Clone, Copy, PartialEq)]
enum Back {
    /// A standby worker takes it over once its lease has expired.
    Takeover,
    /// The killed worker, restarted under its identity, takes it back at once.
    Restart,
}

/// The bench's workers, by identity: one holds the run, the others stand by.
struct Workers {
    running: Vec<(String, WorkerProcess)>,
    spawned: u32,
    lease: f64,
}

impl Workers {
    /// Spawns a worker under `id`, or under a fresh identity.
    fn spawn(&mut self, db: &BenchDb, id: Option<String>) -> Result<(), Failure> {
        let id = id.unwrap_or_else(|| {
            self.spawned += 1;
            format!("bench-worker-{}", self.spawned)
        });
        let worker = WorkerProcess::spawn_as(db, 2, self.lease, Some(&id), &[])?;
        self.running.push((id, worker));
        Ok(())
    }

    /// SIGKILLs the worker under `id`; false if none runs under it.
    fn kill(&mut self, id: &str) -> bool {
        match self.running.iter().position(|(name, _)| name == id) {
            Some(at) => {
                self.running.remove(at).1.kill();
                true
            }
            None => false,
        }
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
    let mut workers = Workers {
        running: Vec::new(),
        spawned: 0,
        lease: args.lease,
    };
    let spawned = Instant::now();
    workers.spawn(db, None)?;
    let cold_start = match beyond((db, &client), run, (Pages::Fetched, 0), timeout).await? {
        Some(at) => (at - spawned).as_secs_f64(),
        None => 0.0,
    };
    // The standby, which takes the run over when its holder dies and stays dead.
    workers.spawn(db, None)?;
    let mut resumes: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // Served pages whose fetch had not been checkpointed when their worker died: those
    // are fetched again by design (at-least-once), the others must never be.
    let mut in_flight_at_kill = 0u64;
    let mut last = mark(db, &sandbox, run).await?;
    for kill in 0..args.kills {
        let back = if kill % 2 == 0 {
            Back::Takeover
        } else {
            Back::Restart
        };
        let target = last.landed + args.pages_between_kills;
        if beyond((db, &client), run, (Pages::Landed, target - 1), timeout)
            .await?
            .is_none()
        {
            break;
        }
        // Spread the kill instants over a page's cycle: mid-fetch, mid-landing, between.
        tokio::time::sleep(Duration::from_millis(u64::from(kill) * 37 % 100)).await;
        let Some(victim) = holder(db, run).await? else {
            break;
        };
        if !workers.kill(&victim) {
            return Err(Failure::failed(format!(
                "bench {what}: the run is held by {victim:?}, which is not a bench worker"
            )));
        }
        let killed_at = Instant::now();
        // A request the dead worker sent may still be read, answered and counted by the
        // vendor a moment later, and a checkpoint it sent may still commit. The mark
        // waits until the vendor has closed every connection (only the worker holding
        // the run talks to it) and the dead worker's database sessions have ended, so
        // each of its requests and commits has happened or never will; what is counted
        // before the next worker fetches is the dead one's.
        let drained_by = killed_at + Duration::from_secs_f64(args.lease / 2.0);
        while sandbox.vendor().open_connections() > 0 || worker_sessions(db, &victim).await? > 0 {
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
        if back == Back::Restart {
            workers.spawn(db, Some(victim))?;
        }
        in_flight_at_kill +=
            (at_kill.served - last.served).saturating_sub(at_kill.fetched - last.fetched);
        let Some(at) = beyond(
            (db, &client),
            run,
            (Pages::Fetched, at_kill.fetched),
            timeout,
        )
        .await?
        else {
            break;
        };
        let resumed = (at - killed_at).as_secs_f64();
        let how = match back {
            Back::Takeover => "taken over by a standby",
            Back::Restart => "taken back by the restarted worker",
        };
        eprintln!(
            "bench crash: kill {} at page {}: {how}, a page fetched after {resumed:.2} s",
            kill + 1,
            at_kill.fetched
        );
        resumes[usize::from(back == Back::Restart)].push(resumed);
        if back == Back::Takeover {
            workers.spawn(db, None)?;
        }
        last = at_kill;
    }
    let done = completed(&client, what, run, timeout).await;
    drop(workers);
    let done = done?;
    let total_secs = began.elapsed().as_secs_f64();
    let end = mark(db, &sandbox, run).await?;
    let matches = warehouse_matches(db, &sandbox, Stream::Contacts, what).await?;
    sandbox.shutdown().await;

    let extra = end.served.saturating_sub(end.fetched);
    let refetched_after_checkpoint = extra.saturating_sub(in_flight_at_kill);
    let [takeovers, restarts] = &resumes;
    let max = |of: &[f64]| of.iter().copied().fold(0.0, f64::max);
    let kills_done = takeovers.len() + restarts.len();
    let mut conditions = Named::default();
    conditions
        .set("records", args.records as u64)
        .set("kills", args.kills)
        .set("kills_done", kills_done as u64)
        .set("lease_secs", args.lease)
        .set("pages_between_kills", args.pages_between_kills)
        .set("workflow", BACKFILL)
        .set("vendor_latency_ms", args.latency_ms)
        .set(
            "worker",
            "cairn worker child processes with identities, the holder SIGKILLed; a standby \
             takes over after odd kills, the killed worker restarts under its identity after \
             even ones",
        )
        .set("resumed", "a page fetched and checkpointed after the kill");
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
        .add("takeover_p50", percentile(takeovers, 50.0), "s")
        .add("takeover_max", max(takeovers), "s")
        .add("restart_p50", percentile(restarts, 50.0), "s")
        .add("restart_max", max(restarts), "s")
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
            name: "a fresh worker's spawn-to-first-checkpointed-page".to_owned(),
            value: cold_start,
            unit: "s",
            ratio_of: "slowest restart's kill-to-page / baseline".to_owned(),
        },
        ratio: share(max(restarts), cold_start),
        targets: vec![
            Target::at_least(
                format!("the holding worker was killed {} times", args.kills),
                kills_done as f64,
                f64::from(args.kills),
            ),
            Target::at_most(
                "zero pages fetched again after a checkpointed fetch",
                refetched_after_checkpoint as f64,
                0.0,
            ),
            Target::at_most(
                format!(
                    "a standby resumes within lease + 0.5 s ({} s)",
                    args.lease + 0.5
                ),
                max(takeovers),
                args.lease + 0.5,
            ),
            Target::at_most(
                "a worker restarted under its identity resumes within 1 s",
                max(restarts),
                1.0,
            ),
            Target::at_least("warehouse equals vendor", f64::from(u8::from(matches)), 1.0),
        ],
    })
}
