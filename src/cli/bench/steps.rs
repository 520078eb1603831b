//! `bench steps`: what one checkpoint costs. A `ledger` run of sequential steps with
//! small outputs, once with plain steps and once with transactional ones that each
//! insert a ledger row in their transaction; the per-step overhead is the gap between
//! consecutive checkpoints as the server stamped them, less the step's own work. The
//! baseline is a bare single-row INSERT commit loop on the same pool; a transactional
//! step as a whole is also set against a bare transaction of the same INSERT. Plain
//! chains with their outputs sealed (encryption at rest), alternated with unsealed ones,
//! price sealing.

use std::time::{Duration, Instant};

use cairn_runner::seal::{Keyring, Sealer};
use cairn_runner::{Client, RunId, StartOptions};
use cairn_workflows::ledger::{self, LedgerInput};
use clap::Args;

use super::report::{Baseline, Machine, Named, Report, Target, ms, percentile, share};
use super::{BenchDb, InProcessWorker, at_least, completed, db_failure};
use crate::cli::Failure;

/// Options of `cairn bench steps`.
#[derive(Debug, Args)]
pub(crate) struct StepsArgs {
    /// Sequential steps in each measured workflow.
    #[arg(long, default_value_t = 1_000)]
    pub(super) steps: u32,
    /// Give up after this many seconds per phase.
    #[arg(long, default_value_t = 300)]
    pub(super) timeout: u64,
    /// Instead, measure a step's overhead and a claim's latency beside this many
    /// completed steps (of a tenth as many finished runs) against an empty database's,
    /// in alternating rounds.
    #[arg(long, value_name = "STEPS", default_value_t = 0)]
    pub(super) preload: u64,
}

impl StepsArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--steps", self.steps.into(), 2)?;
        at_least("--timeout", self.timeout, 1)
    }
}

/// Per-step figures of one run.
pub(super) struct Chain {
    steps_per_sec: f64,
    /// Gaps between consecutive checkpoints less the step's own work: the overhead.
    pub(super) gaps_ms: Vec<f64>,
    /// Gaps between consecutive checkpoints: the whole step.
    whole_ms: Vec<f64>,
}

pub(super) async fn run(db: &BenchDb, args: &StepsArgs) -> Result<Report, Failure> {
    let what = "steps";
    let pool = db.pool();
    let timeout = Duration::from_secs(args.timeout);
    let client = Client::new(pool.clone());
    sqlx::query("CREATE TABLE public.bench_bare (id bigint PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(pool)
        .await
        .map_err(db_failure(what))?;
    let steps = i64::from(args.steps);
    let third = (steps / 3).max(1);
    let worker = InProcessWorker::start(pool, 1);
    // A short warm-up opens the pool's connections and prepares the statements.
    chain(&client, 20, 0, timeout).await?;
    chain(&client, 20, 1, timeout).await?;
    bare_commits(pool, -40..-20, true).await?;
    bare_commits(pool, -20..0, false).await?;
    // The baseline is taken in three parts, before, between and after the chains, and
    // each chain is compared with the parts next to it, so a machine that gets busier or
    // quieter meanwhile weighs on both sides of a ratio alike.
    eprintln!("bench steps: bare INSERT commits");
    let before = bare_commits(pool, 0..third, false).await?;
    eprintln!("bench steps: {} plain steps", args.steps);
    let plain = chain(&client, args.steps, 0, timeout).await?;
    eprintln!("bench steps: bare INSERT commits");
    let between = bare_commits(pool, third..2 * third, false).await?;
    eprintln!("bench steps: {} transactional steps", args.steps);
    let transactional = chain(&client, args.steps, 1, timeout).await?;
    eprintln!("bench steps: bare INSERT commits");
    let after = bare_commits(pool, 2 * third..3 * third, false).await?;
    eprintln!("bench steps: bare transactions of one INSERT");
    let bare_tx = bare_commits(pool, steps..steps + third, true).await?;
    worker.stop().await?;

    // Sealing priced: plain chains whose outputs a worker seals (with a key made for
    // the bench, on a queue of its own) against plain chains that are not, alternated
    // in rounds so that a machine that gets busier weighs on both alike.
    let key = Keyring::generate();
    let sealer = Sealer::new(
        Keyring::parse(&key, "the bench's key")
            .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?,
    );
    let sealed_client = Client::new(pool.clone()).with_sealer(sealer.clone());
    let unsealed = InProcessWorker::start(pool, 1);
    let sealing = InProcessWorker::start_sealed(pool, 1, sealer, SEALED_QUEUE);
    chain_on(&sealed_client, 20, 0, SEALED_QUEUE, timeout).await?;
    chain(&client, 20, 0, timeout).await?;
    let round = (args.steps / SEALING_ROUNDS).max(2);
    eprintln!(
        "bench steps: {} plain steps, outputs sealed and not, in {SEALING_ROUNDS} rounds",
        2 * round * SEALING_ROUNDS
    );
    let (mut sealed_gaps, mut unsealed_gaps) = (Vec::new(), Vec::new());
    let mut sealed_rate = 0.0;
    for _ in 0..SEALING_ROUNDS {
        let sealed = chain_on(&sealed_client, round, 0, SEALED_QUEUE, timeout).await?;
        sealed_gaps.extend(sealed.gaps_ms);
        sealed_rate += sealed.steps_per_sec / f64::from(SEALING_ROUNDS);
        unsealed_gaps.extend(chain(&client, round, 0, timeout).await?.gaps_ms);
    }
    sealing.stop().await?;
    unsealed.stop().await?;
    let plain_p50 = percentile(&plain.gaps_ms, 50.0);
    let tx_p50 = percentile(&transactional.gaps_ms, 50.0);
    let ratio = share(
        plain_p50,
        percentile(&[&before[..], &between[..]].concat(), 50.0),
    );
    let tx_ratio = share(
        tx_p50,
        percentile(&[&between[..], &after[..]].concat(), 50.0),
    );
    let sealed_p50 = percentile(&sealed_gaps, 50.0);
    let unsealed_p50 = percentile(&unsealed_gaps, 50.0);
    let sealing_cost = share(sealed_p50, unsealed_p50);
    let bare = [before, between, after].concat();
    let bare_p50 = percentile(&bare, 50.0);
    let bare_tx_p50 = percentile(&bare_tx, 50.0);
    let tx_whole_p50 = percentile(&transactional.whole_ms, 50.0);

    let mut conditions = Named::default();
    conditions
        .set("steps", args.steps)
        .set("workflow", ledger::NAME)
        .set("step_output", "a small integer")
        .set(
            "transactional_step_work",
            "one ledger row INSERT in the step's transaction",
        )
        .set("worker_concurrency", 1)
        .set(
            "sealed",
            "plain chains with every output sealed (XChaCha20-Poly1305), alternated \
             with unsealed ones, a quarter of --steps each, four rounds",
        )
        .set(
            "overhead",
            "gap between consecutive checkpoints as stamped by the server, minus the \
             step closure's own time",
        );
    let mut figures = Named::default();
    figures
        .add("plain_steps_per_sec", plain.steps_per_sec, "steps/s")
        .add("plain_overhead_p50", plain_p50, "ms")
        .add("plain_overhead_p99", percentile(&plain.gaps_ms, 99.0), "ms")
        .add(
            "transactional_steps_per_sec",
            transactional.steps_per_sec,
            "steps/s",
        )
        .add("transactional_overhead_p50", tx_p50, "ms")
        .add(
            "transactional_overhead_p99",
            percentile(&transactional.gaps_ms, 99.0),
            "ms",
        )
        .add("bare_insert_commit_p50", bare_p50, "ms")
        .add("bare_insert_commit_p99", percentile(&bare, 99.0), "ms")
        .add("transactional_step_p50", tx_whole_p50, "ms")
        .add("bare_transaction_commit_p50", bare_tx_p50, "ms")
        .add("transactional_ratio", tx_ratio, "x")
        .add("sealed_steps_per_sec", sealed_rate, "steps/s")
        .add("sealed_overhead_p50", sealed_p50, "ms")
        .add("unsealed_overhead_p50", unsealed_p50, "ms")
        .add("sealing_cost_ratio", sealing_cost, "x")
        .add(
            "transactional_step_to_bare_transaction_ratio",
            share(tx_whole_p50, bare_tx_p50),
            "x",
        );
    Ok(Report {
        scenario: "steps",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "bare single-row INSERT commit, p50".to_owned(),
            value: bare_p50,
            unit: "ms",
            ratio_of: "plain step overhead p50 / p50 of the bare INSERT commits taken just \
                       before and after the plain chain"
                .to_owned(),
        },
        ratio,
        targets: vec![
            Target::at_most(
                "plain step overhead within 1.5x of a bare INSERT commit (p50 ratio)",
                ratio,
                1.5,
            ),
            Target::at_most(
                "transactional step overhead within 1.5x of a bare INSERT commit (p50 ratio)",
                tx_ratio,
                1.5,
            ),
            Target::at_most(
                "sealing outputs adds at most 10% to a plain step's overhead (sealed p50 / \
                 unsealed p50, alternated)",
                sealing_cost,
                1.10,
            ),
        ],
    })
}

/// The queue the sealing worker serves.
const SEALED_QUEUE: &str = "bench-sealed";

/// Rounds of sealed and unsealed chains.
const SEALING_ROUNDS: u32 = 4;

/// Runs one `ledger` chain of `steps` and measures the gaps between its checkpoints.
pub(super) async fn chain(
    client: &Client,
    steps: u32,
    transactional_every: u32,
    timeout: Duration,
) -> Result<Chain, Failure> {
    chain_on(client, steps, transactional_every, "default", timeout).await
}

/// [`chain`] on `queue`.
async fn chain_on(
    client: &Client,
    steps: u32,
    transactional_every: u32,
    queue: &str,
    timeout: Duration,
) -> Result<Chain, Failure> {
    let what = "steps";
    // Transactional steps write a ledger row, so that each has a transaction to commit.
    let input = LedgerInput {
        steps,
        step_ms: 0,
        transactional_every,
        record: transactional_every > 0,
    };
    let options = StartOptions {
        queue: queue.to_owned(),
        ..StartOptions::default()
    };
    let started = client
        .start(ledger::NAME, &input, &options)
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    completed(client, what, started.run_id, timeout).await?;
    let steps = checkpoints(client, started.run_id).await?;
    // The closure's own time (a timer tick even for zero work; the BEGIN and the INSERT
    // of a transactional step) is the step's work, not the engine's overhead. The
    // first step of a recording chain creates the ledger table: not a step to measure.
    let skip = usize::from(input.record);
    let pairs = || steps[skip..].windows(2);
    let whole_ms: Vec<f64> = pairs().map(|w| (w[1].0 - w[0].0) * 1000.0).collect();
    let gaps_ms: Vec<f64> = pairs()
        .map(|w| (w[1].0 - w[0].0) * 1000.0 - w[1].1)
        .collect();
    let span = steps.last().map_or(0.0, |s| s.0) - steps.get(skip).map_or(0.0, |s| s.0);
    Ok(Chain {
        steps_per_sec: share(gaps_ms.len() as f64, span),
        gaps_ms,
        whole_ms,
    })
}

/// When each checkpoint of `run` was written (seconds since the epoch) and how long its
/// closure ran (ms), by position.
async fn checkpoints(client: &Client, run: RunId) -> Result<Vec<(f64, f64)>, Failure> {
    sqlx::query_as(
        "SELECT extract(epoch FROM finished_at)::float8, coalesce(duration_ms, 0)
           FROM cairn.steps WHERE run_id = $1 ORDER BY position",
    )
    .bind(run)
    .fetch_all(client.pool())
    .await
    .map_err(db_failure("steps"))
}

/// Single-row INSERT commits of `ids`, each alone or in an explicit transaction; the
/// milliseconds each took.
pub(super) async fn bare_commits(
    pool: &sqlx::PgPool,
    ids: std::ops::Range<i64>,
    transaction: bool,
) -> Result<Vec<f64>, Failure> {
    let insert = "INSERT INTO public.bench_bare (id, payload) VALUES ($1, '1')";
    let mut took = Vec::with_capacity(ids.clone().count());
    for id in ids {
        let started = Instant::now();
        if transaction {
            let mut tx = pool.begin().await.map_err(db_failure("steps"))?;
            sqlx::query(insert)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_failure("steps"))?;
            tx.commit().await.map_err(db_failure("steps"))?;
        } else {
            sqlx::query(insert)
                .bind(id)
                .execute(pool)
                .await
                .map_err(db_failure("steps"))?;
        }
        took.push(ms(started.elapsed()));
    }
    Ok(took)
}
