//! `bench steps --preload N`: the hot path beside a long history. One database gets `N`
//! completed steps of `N / 10` finished runs, spread over the last 30 days as a busy
//! deployment's would be; another stays empty. Rounds alternate between the two: the
//! per-step overhead of a chain of plain steps, and the claim latency of runs started
//! one at a time (from a run's creation to a worker's claim of it), each against the
//! same figures on the empty database, so a VM that gets slower meanwhile weighs on both.

use std::time::{Duration, Instant};

use cairn_runner::{Client, StartOptions};
use cairn_workflows::ledger::{self, LedgerInput};

use super::report::{Baseline, Machine, Named, Report, Target, percentile, share};
use super::steps::{StepsArgs, bare_commits, chain};
use super::{BenchDb, InProcessWorker, completed, db_failure};
use crate::cli::Failure;

/// Steps of each preloaded run.
const STEPS_PER_RUN: u64 = 10;

/// Runs (and their steps) written per statement while preloading.
const RUNS_PER_CHUNK: u64 = 50_000;

/// Rounds on each database, alternated.
const ROUNDS: usize = 3;

/// Runs started one at a time in each round, to time their claims.
const CLAIMS_PER_ROUND: usize = 60;

/// The figures of one database over its rounds.
#[derive(Default)]
struct Side {
    step_gaps_ms: Vec<f64>,
    claims_ms: Vec<f64>,
    bare_ms: Vec<f64>,
}

pub(super) async fn run(
    loaded: &BenchDb,
    empty: &BenchDb,
    args: &StepsArgs,
    preload: u64,
) -> Result<Report, Failure> {
    let what = "steps";
    let timeout = Duration::from_secs(args.timeout);
    let runs = (preload / STEPS_PER_RUN).max(1);
    eprintln!("bench steps: preloading {runs} finished runs of {STEPS_PER_RUN} steps");
    let started = Instant::now();
    fill(loaded, runs).await?;
    let preload_secs = started.elapsed().as_secs_f64();
    let (steps_present, runs_present, steps_size) = sizes(loaded).await?;

    let mut sides = [Side::default(), Side::default()];
    let dbs = [empty, loaded];
    let workers = [
        InProcessWorker::start(empty.pool(), 1),
        InProcessWorker::start(loaded.pool(), 1),
    ];
    for db in dbs {
        sqlx::query(
            "CREATE TABLE public.bench_bare (id bigint PRIMARY KEY, payload jsonb NOT NULL)",
        )
        .execute(db.pool())
        .await
        .map_err(db_failure(what))?;
        // A warm-up opens the pool's connections and prepares the statements.
        chain(&Client::new(db.pool().clone()), 20, 0, timeout).await?;
    }
    let per_round = i64::from(args.steps) / 3;
    for round in 0..ROUNDS {
        for (side, db) in sides.iter_mut().zip(dbs) {
            let name = if std::ptr::eq(db, empty) {
                "empty"
            } else {
                "preloaded"
            };
            eprintln!("bench steps: round {} on the {name} database", round + 1);
            let client = Client::new(db.pool().clone());
            let ids = round as i64 * per_round..(round as i64 + 1) * per_round;
            side.bare_ms
                .extend(bare_commits(db.pool(), ids, false).await?);
            let chain = chain(&client, args.steps, 0, timeout).await?;
            side.step_gaps_ms.extend(chain.gaps_ms);
            side.claims_ms
                .extend(claims(&client, CLAIMS_PER_ROUND, timeout).await?);
        }
    }
    for worker in workers {
        worker.stop().await?;
    }

    let p50 = |of: &[f64]| percentile(of, 50.0);
    let [clean, big] = &sides;
    let step_ratio = share(p50(&big.step_gaps_ms), p50(&clean.step_gaps_ms));
    let claim_ratio = share(p50(&big.claims_ms), p50(&clean.claims_ms));
    let mut conditions = Named::default();
    conditions
        .set("preloaded_steps", steps_present)
        .set("preloaded_runs", runs_present)
        .set("steps_per_chain", args.steps)
        .set("rounds", ROUNDS as u64)
        .set("claims_per_round", CLAIMS_PER_ROUND as u64)
        .set("workflow", ledger::NAME)
        .set(
            "measured",
            "rounds alternate between an empty database and the preloaded one; claim \
             latency is a run's creation to its claim, one run at a time on an idle worker",
        );
    let mut figures = Named::default();
    figures
        .add("preload_secs", preload_secs, "s")
        .add("steps_table", steps_size, "MB")
        .add("empty_step_overhead_p50", p50(&clean.step_gaps_ms), "ms")
        .add("preloaded_step_overhead_p50", p50(&big.step_gaps_ms), "ms")
        .add("step_overhead_ratio", step_ratio, "x")
        .add("empty_claim_p50", p50(&clean.claims_ms), "ms")
        .add("preloaded_claim_p50", p50(&big.claims_ms), "ms")
        .add("empty_claim_p99", percentile(&clean.claims_ms, 99.0), "ms")
        .add(
            "preloaded_claim_p99",
            percentile(&big.claims_ms, 99.0),
            "ms",
        )
        .add("claim_ratio", claim_ratio, "x")
        .add("empty_bare_commit_p50", p50(&clean.bare_ms), "ms")
        .add("preloaded_bare_commit_p50", p50(&big.bare_ms), "ms");
    Ok(Report {
        scenario: "steps",
        machine: Machine::describe(loaded.pool()).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "a plain step's overhead p50 on an empty database, alternated".to_owned(),
            value: p50(&clean.step_gaps_ms),
            unit: "ms",
            ratio_of: "preloaded / empty step overhead p50".to_owned(),
        },
        ratio: step_ratio,
        targets: vec![
            Target::at_most(
                "a step's overhead beside the history within 10% of an empty database's",
                step_ratio,
                1.10,
            ),
            Target::at_most(
                "claim latency beside the history within 10% of an empty database's",
                claim_ratio,
                1.10,
            ),
        ],
    })
}

/// Writes `runs` finished `ledger` runs of [`STEPS_PER_RUN`] completed steps each, created
/// over the last 30 days with time-ordered (UUIDv7) ids as the engine gives them, then
/// vacuums and analyzes their tables as autovacuum would have by now.
async fn fill(db: &BenchDb, runs: u64) -> Result<(), Failure> {
    let spacing_ms = (30 * 24 * 3600 * 1000 / runs).max(1);
    let mut from = 0;
    while from < runs {
        let to = (from + RUNS_PER_CHUNK).min(runs);
        sqlx::query(
            "WITH r AS (
                 INSERT INTO cairn.runs (id, workflow, input, status, wake_at, lease_epoch,
                                         claims, output, created_at, started_at, finished_at,
                                         updated_at)
                 SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                            placing substring(int8send((extract(epoch FROM at) * 1000)::bigint)
                                              FROM 3)
                            FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
                        'ledger', '{\"steps\": 10}', 'completed', at, 1, 1, '{\"steps\": 10}',
                        at, at, at + interval '40 ms', at + interval '40 ms'
                   FROM (SELECT now() - interval '30 days' + g * make_interval(secs => $3 / 1000.0)
                                AS at
                           FROM generate_series($1::bigint, $2::bigint - 1) g) t
                 RETURNING id, created_at
             )
             INSERT INTO cairn.steps (run_id, position, name, kind, status, output, attempts,
                                      started_at, finished_at, duration_ms)
             SELECT r.id, p, 'step ' || p, 'step', 'completed', '{\"n\": 1}', 1,
                    r.created_at, r.created_at + interval '3 ms', 0.05
               FROM r CROSS JOIN generate_series(0, $4 - 1) p",
        )
        .bind(from as i64)
        .bind(to as i64)
        .bind(spacing_ms as f64)
        .bind(STEPS_PER_RUN as i32)
        .execute(db.pool())
        .await
        .map_err(db_failure("steps"))?;
        from = to;
        eprintln!("bench steps: preloaded {to} of {runs} runs");
    }
    sqlx::query("VACUUM (ANALYZE) cairn.runs, cairn.steps")
        .execute(db.pool())
        .await
        .map_err(db_failure("steps"))?;
    Ok(())
}

/// Steps and runs present, and the size of the steps table with its indexes (MB).
async fn sizes(db: &BenchDb) -> Result<(u64, u64, f64), Failure> {
    let (steps, runs, bytes): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM cairn.steps), (SELECT count(*) FROM cairn.runs),
                pg_total_relation_size('cairn.steps')",
    )
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("steps"))?;
    Ok((steps as u64, runs as u64, bytes as f64 / 1e6))
}

/// Starts `count` one-step runs one after another, each once the one before has
/// ended; the milliseconds from each run's creation to its claim, as the server stamped
/// them.
async fn claims(client: &Client, count: usize, timeout: Duration) -> Result<Vec<f64>, Failure> {
    let input = LedgerInput {
        steps: 1,
        step_ms: 0,
        transactional_every: 0,
        record: false,
    };
    let mut took = Vec::with_capacity(count);
    for _ in 0..count {
        let started = client
            .start(ledger::NAME, &input, &StartOptions::default())
            .await
            .map_err(|err| Failure::failed(format!("bench steps: {err}")))?;
        let run = completed(client, "steps", started.run_id, timeout).await?;
        if let Some(claimed) = run.started_at {
            took.push((claimed - run.summary.created_at).as_seconds_f64() * 1000.0);
        }
    }
    Ok(took)
}
