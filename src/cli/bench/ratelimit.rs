//! `bench ratelimit`: syncs under a vendor rate limit (the sandbox's token bucket, burst
//! 1), first one alone, then two at once on one credential and so one budget. The
//! baseline is the vendor's limit itself: the ratio is the share of it achieved.

use std::time::Duration;

use cairn_runner::{Client, StartOptions};
use cairn_sandbox::{RateLimit, SandboxConfig, SandboxHandle, Stream};
use cairn_workflows::sync::INCREMENTAL;
use clap::Args;

use super::report::{Baseline, Machine, Named, Report, Target, share};
use super::sync::{input, run_records, served, warehouse_matches};
use super::{BenchDb, InProcessWorker, at_least, completed, db_failure, sandbox};
use crate::cli::Failure;

/// Options of `cairn bench ratelimit`.
#[derive(Debug, Args)]
pub(crate) struct RatelimitArgs {
    /// Records in each synced stream.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// The vendor's limit, requests per second (the source is configured with the same).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Give up after this many seconds per phase.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

impl RatelimitArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--records", self.records as u64, 1)?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(Failure::usage(
                "--rate must be a positive number of requests per second",
            ));
        }
        at_least("--timeout", self.timeout, 1)
    }
}

/// One phase's figures.
struct Phase {
    secs: f64,
    ok: u64,
    throttled: u64,
    records: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        share(self.ok as f64, self.secs)
    }

    fn throttled_share(&self) -> f64 {
        share(self.throttled as f64, (self.ok + self.throttled) as f64)
    }
}

#[derive(sqlx::FromRow)]
struct Budget {
    granted: i64,
    throttled: i64,
}

pub(super) async fn run(db: &BenchDb, args: &RatelimitArgs) -> Result<Report, Failure> {
    let what = "ratelimit";
    let pool = db.pool();
    let timeout = Duration::from_secs(args.timeout);
    let sandbox = sandbox(
        what,
        SandboxConfig {
            records_per_stream: args.records,
            rate_limit: Some(RateLimit::new(args.rate, 1)),
            ..SandboxConfig::default()
        },
    )
    .await?;
    let client = Client::new(pool.clone());
    let worker = InProcessWorker::start(pool, 4);
    eprintln!(
        "bench ratelimit: one sync of {} records at {} req/s",
        args.records, args.rate
    );
    let alone = phase(&client, &sandbox, args, &[Stream::Contacts], timeout).await?;
    eprintln!("bench ratelimit: two syncs on one credential");
    let shared = phase(
        &client,
        &sandbox,
        args,
        &[Stream::Companies, Stream::Deals],
        timeout,
    )
    .await?;
    worker.stop().await?;
    let mut matches = true;
    for stream in [Stream::Contacts, Stream::Companies, Stream::Deals] {
        matches &= warehouse_matches(db, &sandbox, stream, what).await?;
    }
    sandbox.shutdown().await;
    let budgets: Vec<Budget> = sqlx::query_as("SELECT granted, throttled FROM cairn.rate_budgets")
        .fetch_all(pool)
        .await
        .map_err(db_failure(what))?;

    let alone_share = share(alone.rate(), args.rate);
    let shared_share = share(shared.rate(), args.rate);
    let mut conditions = Named::default();
    conditions
        .set("records_per_stream", args.records as u64)
        .set("vendor_limit", args.rate)
        .set("vendor_burst", 1)
        .set("page_size", 100)
        .set("budgets", budgets.len() as u64)
        .set("worker_concurrency", 4)
        .set(
            "rate",
            "200 responses / seconds from first start to last end",
        );
    let mut figures = Named::default();
    figures
        .add("one_sync_rate", alone.rate(), "req/s")
        .add("one_sync_share_of_limit", alone_share, "x")
        .add("one_sync_429", alone.throttled as f64, "responses")
        .add("one_sync_429_share", alone.throttled_share(), "x")
        .add("one_sync_records", alone.records, "records")
        .add("one_sync_secs", alone.secs, "s")
        .add("two_syncs_rate", shared.rate(), "req/s")
        .add("two_syncs_share_of_limit", shared_share, "x")
        .add("two_syncs_429", shared.throttled as f64, "responses")
        .add("two_syncs_429_share", shared.throttled_share(), "x")
        .add("two_syncs_records", shared.records, "records")
        .add("two_syncs_secs", shared.secs, "s")
        .add(
            "budget_granted",
            budgets.iter().map(|b| b.granted).sum::<i64>() as f64,
            "tokens",
        )
        .add(
            "budget_throttled",
            budgets.iter().map(|b| b.throttled).sum::<i64>() as f64,
            "429s",
        )
        .add(
            "warehouse_equals_vendor",
            f64::from(u8::from(matches)),
            "bool",
        );
    Ok(Report {
        scenario: "ratelimit",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "the vendor's rate limit".to_owned(),
            value: args.rate,
            unit: "req/s",
            ratio_of: "achieved req/s / the limit, the lower of one sync and two syncs".to_owned(),
        },
        ratio: alone_share.min(shared_share),
        targets: vec![
            Target::at_least("one sync: at least 90% of the limit", alone_share, 0.9),
            Target::at_most(
                "one sync: under 2% of requests answered 429",
                alone.throttled_share(),
                0.02,
            ),
            Target::at_least(
                "two syncs on one credential: at least 90% of the limit",
                shared_share,
                0.9,
            ),
            Target::at_most(
                "two syncs on one credential: under 2% of requests answered 429",
                shared.throttled_share(),
                0.02,
            ),
        ],
    })
}

/// Syncs `streams` at once and measures the requests served meanwhile.
async fn phase(
    client: &Client,
    sandbox: &SandboxHandle,
    args: &RatelimitArgs,
    streams: &[Stream],
    timeout: Duration,
) -> Result<Phase, Failure> {
    let what = "ratelimit";
    let limit = format!("[rate_limit]\nrequests_per_second = {:?}\n", args.rate);
    let ok_before = served(sandbox);
    let throttled_before = sandbox.vendor().stats().rate_limited;
    let mut started = Vec::new();
    for stream in streams {
        let input = input(sandbox.base_url(), *stream, 100, &limit);
        let run = client
            .start(INCREMENTAL, &input, &StartOptions::default())
            .await
            .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
        started.push(run.run_id);
    }
    let mut runs = Vec::new();
    for run in started {
        runs.push(completed(client, what, run, timeout).await?);
    }
    let first = runs.iter().map(|r| r.summary.created_at).min();
    let last = runs.iter().filter_map(|r| r.summary.finished_at).max();
    let secs = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_seconds_f64(),
        _ => 0.0,
    };
    Ok(Phase {
        secs,
        ok: served(sandbox) - ok_before,
        throttled: sandbox.vendor().stats().rate_limited - throttled_before,
        records: runs.iter().map(run_records).sum(),
    })
}
