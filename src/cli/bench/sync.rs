//! `bench sync`: a full `sync.incremental` of sandbox `contacts` into a typed warehouse
//! table with limits off, then an incremental run after updates. The baseline is the
//! sandbox's own serving rate: the same pages read by the same REST source with nothing
//! stored.

use std::time::{Duration, Instant};

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::rest::{RestConfig, RestSource};
use cairn_connectors::source::Source;
use cairn_connectors::warehouse::Warehouse;
use cairn_runner::{Client, RunDetail, StartOptions};
use cairn_sandbox::{Mutation, SandboxConfig, SandboxHandle, Stream};
use cairn_workflows::sync::{INCREMENTAL, SyncInput};
use clap::Args;

use super::report::{Baseline, Machine, Named, Report, Target, share};
use super::{BenchDb, WorkerProcess, at_least, completed, db_failure, sandbox};
use crate::cli::Failure;

/// The source the sync scenarios use, as shipped in `examples/sources/`.
const STRIPE: &str = include_str!("../../../examples/sources/sandbox-stripe.toml");
const STRIPE_FILE: &str = "examples/sources/sandbox-stripe.toml";

/// Options of `cairn bench sync`.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// Records in the synced stream (the peak-memory target is for 1,000,000).
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Records updated before the incremental run.
    #[arg(long, default_value_t = 1_000)]
    updates: usize,
    /// Records per page (the sandbox's largest page and the source's `limit`). With
    /// limits off the sandbox serves pages as large as a bulk API's (Salesforce serves
    /// 2,000); pass 100 to see Stripe's and HubSpot's largest page.
    #[arg(long, default_value_t = 1000)]
    page_size: usize,
    /// Give up after this many seconds per run.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

impl SyncArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--records", self.records as u64, 1)?;
        at_least("--page-size", self.page_size as u64, 1)?;
        at_least("--timeout", self.timeout, 1)
    }
}

/// A sync input for `stream` of the Stripe-style source at `base_url`, with `extra`
/// TOML appended and the page size set.
pub(super) fn input(base_url: &str, stream: Stream, page_size: usize, extra: &str) -> SyncInput {
    let toml = STRIPE.replace(
        "query = { limit = \"100\" }",
        &format!("query = {{ limit = \"{page_size}\" }}"),
    );
    let mut input = SyncInput::new(
        format!("{toml}\n{extra}"),
        STRIPE_FILE.to_owned(),
        stream.name().to_owned(),
    );
    input.base_url = Some(base_url.to_owned());
    input
}

/// Successful listing requests the sandbox has served so far.
pub(super) fn served(sandbox: &SandboxHandle) -> u64 {
    sandbox.vendor().requests("GET /v1/{stream}", "200")
}

/// Seconds from the run's creation to its end, on the server's clock.
pub(super) fn run_secs(run: &RunDetail) -> f64 {
    run.summary
        .finished_at
        .map(|end| (end - run.summary.created_at).as_seconds_f64())
        .unwrap_or(0.0)
}

/// Records a sync run reported.
pub(super) fn run_records(run: &RunDetail) -> f64 {
    run.output
        .as_ref()
        .and_then(|o| o.get("records"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
}

/// Whether the warehouse table of `stream` holds exactly the vendor's live records.
pub(super) async fn warehouse_matches(
    db: &BenchDb,
    sandbox: &SandboxHandle,
    stream: Stream,
    what: &str,
) -> Result<bool, Failure> {
    // Where the Stripe profile lands: its source's name, and the schema derived from it.
    let warehouse =
        Warehouse::new("sandbox-stripe", "sandbox_stripe").expect("the schema name is valid");
    let mut conn = db.pool().acquire().await.map_err(db_failure(what))?;
    let ours = warehouse
        .checksum(&mut conn, stream.name())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: warehouse checksum: {err}")))?;
    Ok(ours == sandbox.vendor().checksum(stream))
}

pub(super) async fn run(db: &BenchDb, args: &SyncArgs) -> Result<Report, Failure> {
    let what = "sync";
    let pool = db.pool();
    let timeout = Duration::from_secs(args.timeout);
    eprintln!("bench sync: generating {} contacts", args.records);
    let sandbox = sandbox(
        what,
        SandboxConfig {
            records_per_stream: args.records,
            max_page_size: args.page_size,
            // Only the synced stream: a million records of the others would cost the
            // vendor gigabytes and change nothing measured.
            only: Some(Stream::Contacts),
            ..SandboxConfig::default()
        },
    )
    .await?;
    let input = input(sandbox.base_url(), Stream::Contacts, args.page_size, "");

    eprintln!("bench sync: baseline, the sandbox's serving rate");
    let (serve_rate, serve_pages) = serving_rate(&input, timeout).await?;

    let client = Client::new(pool.clone());
    // The sync runs in a `cairn worker` process of its own, so its peak memory is the
    // sync's alone and not the in-process sandbox's records.
    let worker = WorkerProcess::spawn(db, 4, 30.0)?;
    let served_before = served(&sandbox);
    eprintln!("bench sync: full sync of {} records", args.records);
    let started = client
        .start(INCREMENTAL, &input, &StartOptions::default())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    let full = completed(&client, what, started.run_id, timeout).await?;
    let breakdown = breakdown(db, &full).await?;
    let full_requests = served(&sandbox) - served_before;

    sandbox
        .vendor()
        .mutate(
            Stream::Contacts,
            Mutation::Update {
                count: args.updates,
            },
        )
        .map_err(|err| Failure::failed(format!("bench {what}: updating records: {err}")))?;
    let served_before = served(&sandbox);
    eprintln!("bench sync: incremental run after {} updates", args.updates);
    let started = client
        .start(INCREMENTAL, &input, &StartOptions::default())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    let incremental = completed(&client, what, started.run_id, timeout).await?;
    let incremental_requests = served(&sandbox) - served_before;
    let peak = worker.peak_rss_mb().ok_or_else(|| {
        Failure::failed("bench sync: the worker process ended before its memory was read")
    })?;
    worker.kill();
    let matches = warehouse_matches(db, &sandbox, Stream::Contacts, what).await?;
    sandbox.shutdown().await;

    let full_secs = run_secs(&full);
    let records_per_sec = share(run_records(&full), full_secs);
    let mut conditions = Named::default();
    conditions
        .set("records", args.records as u64)
        .set("updates", args.updates as u64)
        .set("page_size", args.page_size as u64)
        .set("source", STRIPE_FILE)
        .set("workflow", INCREMENTAL)
        .set("rate_limit", "off")
        .set("worker_concurrency", 4)
        .set("worker", "a cairn worker child process")
        .set("memory", "peak RSS (VmHWM) of the worker process");
    let mut figures = Named::default();
    figures
        .add("records_per_sec", records_per_sec, "records/s")
        .add("full_sync", full_secs, "s")
        .add("full_sync_requests", full_requests as f64, "requests")
        .add("worker_peak_rss", peak, "MB")
        .add("fetch_step_mean", breakdown.fetch_ms, "ms/page")
        .add("landings", breakdown.landings as f64, "steps")
        .add("land_step_mean", breakdown.land_ms, "ms/landing")
        .add("landing_cycle_mean", breakdown.cycle_ms, "ms/landing")
        .add(
            "checkpointed_fetch_output",
            breakdown.fetch_output_kb,
            "kB/page",
        )
        .add("incremental_sync", run_secs(&incremental), "s")
        .add("incremental_records", run_records(&incremental), "records")
        .add(
            "incremental_requests",
            incremental_requests as f64,
            "requests",
        )
        .add("serving_rate", serve_rate, "records/s")
        .add("serving_pages", serve_pages as f64, "pages")
        .add(
            "warehouse_equals_vendor",
            f64::from(u8::from(matches)),
            "bool",
        );
    Ok(Report {
        scenario: "sync",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "the sandbox's serving rate through the same REST source, nothing stored"
                .to_owned(),
            value: serve_rate,
            unit: "records/s",
            ratio_of: "sync records/s / serving records/s".to_owned(),
        },
        ratio: share(records_per_sec, serve_rate),
        targets: vec![
            Target::at_least(
                "at least 40,000 records/s end to end into a typed warehouse table",
                records_per_sec,
                40_000.0,
            ),
            Target::at_most(
                "peak RSS of the syncing worker under 150 MB (stated for 1,000,000 records)",
                peak,
                150.0,
            ),
            Target::at_least(
                "warehouse equals vendor after the incremental run",
                f64::from(u8::from(matches)),
                1.0,
            ),
        ],
    })
}

/// The source a sync input reads, built for a baseline that stores nothing (no rate
/// budget, so no database).
pub(super) async fn baseline_source(input: &SyncInput, what: &str) -> Result<RestSource, Failure> {
    let failed =
        |err: &dyn std::fmt::Display| Failure::failed(format!("bench {what}: baseline: {err}"));
    let mut config =
        RestConfig::parse(&input.source_toml, &input.source_file).map_err(|e| failed(&e))?;
    if let Some(base_url) = &input.base_url {
        config = config.with_base_url(base_url).map_err(|e| failed(&e))?;
    }
    RestSource::new(config, None).await.map_err(|e| failed(&e))
}

/// Reads the whole stream through the source, page by page as the sync does, and stores
/// nothing; returns records/s and pages.
async fn serving_rate(input: &SyncInput, timeout: Duration) -> Result<(f64, u64), Failure> {
    let failed =
        |err: &dyn std::fmt::Display| Failure::failed(format!("bench sync: baseline: {err}"));
    let source = baseline_source(input, "sync").await?;
    let mut traversal = Traversal::new(PageCursor::start());
    let started = Instant::now();
    while let Some(cursor) = traversal.cursor().cloned() {
        if started.elapsed() > timeout {
            return Err(failed(&"the listing did not end in time; raise --timeout"));
        }
        let page = source
            .fetch_page(&input.stream, &cursor)
            .await
            .map_err(|e| failed(&e))?;
        traversal.advance(&page).map_err(|e| failed(&e))?;
    }
    Ok((
        share(traversal.fetched() as f64, started.elapsed().as_secs_f64()),
        traversal.pages(),
    ))
}

/// Where a sync's time goes, from its checkpoints.
struct Breakdown {
    /// The fetch step's closure: the HTTP request and parsing.
    fetch_ms: f64,
    /// The landing steps (each lands a batch of pages).
    landings: i64,
    /// The landing transaction's closure and checkpoint.
    land_ms: f64,
    /// From one landing to the next, everything included.
    cycle_ms: f64,
    /// The size of a fetch step's stored output (the page itself).
    fetch_output_kb: f64,
}

async fn breakdown(db: &BenchDb, run: &RunDetail) -> Result<Breakdown, Failure> {
    let (fetch_ms, land_ms, fetch_output_kb, first, last, landings): (
        f64,
        f64,
        f64,
        f64,
        f64,
        i64,
    ) = sqlx::query_as(
        "SELECT coalesce(avg(duration_ms) FILTER (WHERE name LIKE 'fetch page %'), 0)::float8,
                coalesce(avg(duration_ms) FILTER (WHERE name LIKE 'land page%'), 0)::float8,
                (coalesce(avg(pg_column_size(output)) FILTER (WHERE name LIKE 'fetch page %'), 0)
                    / 1024.0)::float8,
                coalesce(extract(epoch FROM min(finished_at) FILTER (WHERE name LIKE 'land page%')), 0)::float8,
                coalesce(extract(epoch FROM max(finished_at) FILTER (WHERE name LIKE 'land page%')), 0)::float8,
                count(*) FILTER (WHERE name LIKE 'land page%')
           FROM cairn.steps WHERE run_id = $1",
    )
    .bind(run.summary.id)
    .fetch_one(db.pool())
    .await
    .map_err(db_failure("sync"))?;
    Ok(Breakdown {
        fetch_ms,
        land_ms,
        cycle_ms: share((last - first) * 1000.0, (landings - 1).max(0) as f64),
        landings,
        fetch_output_kb,
    })
}
