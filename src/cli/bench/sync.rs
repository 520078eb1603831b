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

use super::bulk::{CONNECTIONS, ROWS_PER_COMMIT, bulk_insert};
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
    /// Records per page of the main sync (the source's `limit`). With limits off the
    /// sandbox serves pages as large as a bulk API's (Salesforce serves 2,000).
    #[arg(long, default_value_t = 1000)]
    page_size: usize,
    /// Records per page of the second full sync, into a table of its own: Stripe's and
    /// HubSpot's largest page, where each page's checkpoint counts.
    #[arg(long, default_value_t = 100)]
    small_page_size: usize,
    /// Give up after this many seconds per run.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

impl SyncArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--records", self.records as u64, 1)?;
        at_least("--page-size", self.page_size as u64, 1)?;
        at_least("--small-page-size", self.small_page_size as u64, 1)?;
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

/// Where the Stripe profile lands by default: its source's name, and the schema derived
/// from it.
const SCHEMA: &str = "sandbox_stripe";

/// Where the sync of small pages lands, beside it.
const SMALL_PAGES_SCHEMA: &str = "sandbox_stripe_small_pages";

/// Whether the warehouse table of `stream` holds exactly the vendor's live records.
pub(super) async fn warehouse_matches(
    db: &BenchDb,
    sandbox: &SandboxHandle,
    stream: Stream,
    what: &str,
) -> Result<bool, Failure> {
    schema_matches(db, sandbox, (SCHEMA, stream), what).await
}

/// Whether the table of `stream` in `schema` holds exactly the vendor's live records.
pub(super) async fn schema_matches(
    db: &BenchDb,
    sandbox: &SandboxHandle,
    (schema, stream): (&str, Stream),
    what: &str,
) -> Result<bool, Failure> {
    let warehouse = Warehouse::new("sandbox-stripe", schema).expect("the schema name is valid");
    let mut conn = db.pool().acquire().await.map_err(db_failure(what))?;
    let ours = warehouse
        .checksum(&mut conn, stream.name())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: warehouse checksum: {err}")))?;
    Ok(ours == sandbox.vendor().checksum(stream))
}

/// Rows the bare bulk insert copies at most: its rate does not depend on more.
const BULK_ROWS: usize = 200_000;

pub(super) async fn run(db: &BenchDb, args: &SyncArgs) -> Result<Report, Failure> {
    let what = "sync";
    let pool = db.pool();
    let timeout = Duration::from_secs(args.timeout);
    eprintln!("bench sync: generating {} contacts", args.records);
    let sandbox = sandbox(
        what,
        SandboxConfig {
            records_per_stream: args.records,
            max_page_size: args.page_size.max(args.small_page_size),
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
    eprintln!(
        "bench sync: full sync of {} records, {} per page",
        args.records, args.page_size
    );
    let (full, early_rss) = full_sync(&client, &worker, &input, args.records, timeout).await?;
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
    let incremental = started(&client, &input, timeout).await?;
    let incremental_requests = served(&sandbox) - served_before;

    eprintln!(
        "bench sync: full sync of {} records, {} per page, into a table of its own",
        args.records, args.small_page_size
    );
    let mut small = self::input(
        sandbox.base_url(),
        Stream::Contacts,
        args.small_page_size,
        "",
    );
    small.warehouse_schema = Some(SMALL_PAGES_SCHEMA.to_owned());
    let small = started(&client, &small, timeout).await?;
    let peak = worker.peak_rss_mb().ok_or_else(|| {
        Failure::failed("bench sync: the worker process ended before its memory was read")
    })?;
    worker.kill();
    let matches = warehouse_matches(db, &sandbox, Stream::Contacts, what).await?
        && schema_matches(db, &sandbox, (SMALL_PAGES_SCHEMA, Stream::Contacts), what).await?;
    sandbox.shutdown().await;

    eprintln!("bench sync: baseline, the same rows inserted by bare COPY");
    let bulk = bulk_insert(pool, &format!("{SCHEMA}.contacts"), BULK_ROWS).await?;

    let full_secs = run_secs(&full);
    let records_per_sec = share(run_records(&full), full_secs);
    let small_per_sec = share(run_records(&small), run_secs(&small));
    let mut conditions = Named::default();
    conditions
        .set("records", args.records as u64)
        .set("updates", args.updates as u64)
        .set("page_size", args.page_size as u64)
        .set("small_page_size", args.small_page_size as u64)
        .set("source", STRIPE_FILE)
        .set("workflow", INCREMENTAL)
        .set("rate_limit", "off")
        .set("worker_concurrency", 4)
        .set("worker", "a cairn worker child process")
        .set("memory", "peak RSS (VmHWM) of the worker process")
        .set(
            "bulk_insert",
            format!(
                "the main sync's rows (up to {BULK_ROWS}) by COPY into a table LIKE its own, \
                 {ROWS_PER_COMMIT} rows per commit, on 1 and on {CONNECTIONS} connections (the \
                 better is the baseline); then staged by COPY and merged, on {CONNECTIONS}"
            ),
        );
    let mut figures = Named::default();
    figures
        .add("records_per_sec", records_per_sec, "records/s")
        .add("small_pages_records_per_sec", small_per_sec, "records/s")
        .add("bulk_insert_rows_per_sec", bulk.rows_per_sec(), "rows/s")
        .add("bulk_copy_one_connection", bulk.one_connection, "rows/s")
        .add("bulk_copy_parallel", bulk.parallel, "rows/s")
        .add("bulk_staged_merge", bulk.staged, "rows/s")
        .add("bulk_insert_rows", bulk.rows as f64, "rows")
        .add("full_sync", full_secs, "s")
        .add("full_sync_requests", full_requests as f64, "requests")
        .add("worker_peak_rss", peak, "MB")
        .add("worker_rss_at_a_tenth", early_rss, "MB")
        .add("rss_growth", share(peak, early_rss), "x")
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
            name: "the same rows inserted by bare COPY, a commit per 1,000, the better of \
                   1 and 2 connections"
                .to_owned(),
            value: bulk.rows_per_sec(),
            unit: "rows/s",
            ratio_of: "sync records/s / bulk insert rows/s".to_owned(),
        },
        ratio: share(records_per_sec, bulk.rows_per_sec()),
        targets: vec![
            Target::at_least(
                "at least 0.6 of the bare bulk insert's rate end to end, at the main page size",
                share(records_per_sec, bulk.rows_per_sec()),
                0.6,
            ),
            Target::at_least(
                "at least 40,000 records/s at the small page size",
                small_per_sec,
                40_000.0,
            ),
            Target::at_most(
                "peak RSS of the syncing worker under 150 MB (stated for 1,000,000 records)",
                peak,
                150.0,
            ),
            Target::at_most(
                "flat memory: the peak at most 1.2x the peak after a tenth of the records",
                share(peak, early_rss),
                1.2,
            ),
            Target::at_least(
                "warehouse equals vendor after the incremental run",
                f64::from(u8::from(matches)),
                1.0,
            ),
        ],
    })
}

/// Starts a sync of `input` and waits for it to complete.
async fn started(
    client: &Client,
    input: &SyncInput,
    timeout: Duration,
) -> Result<RunDetail, Failure> {
    let started = client
        .start(INCREMENTAL, input, &StartOptions::default())
        .await
        .map_err(|err| Failure::failed(format!("bench sync: {err}")))?;
    completed(client, "sync", started.run_id, timeout).await
}

/// Runs the full sync of `records` records and returns it with the worker's peak
/// memory once a tenth of them had landed: a sync whose memory is flat holds no more at
/// the end.
async fn full_sync(
    client: &Client,
    worker: &WorkerProcess,
    input: &SyncInput,
    records: usize,
    timeout: Duration,
) -> Result<(RunDetail, f64), Failure> {
    let failed = |err: &dyn std::fmt::Display| Failure::failed(format!("bench sync: {err}"));
    let run = client
        .start(INCREMENTAL, input, &StartOptions::default())
        .await
        .map_err(|err| failed(&err))?
        .run_id;
    let tenth = (records / 10).max(1) as f64;
    let mut early = None;
    let deadline = Instant::now() + timeout;
    while early.is_none() && Instant::now() < deadline {
        let (status, progress) = client.progress(run).await.map_err(|err| failed(&err))?;
        let landed = progress
            .as_ref()
            .and_then(|p| p.get("records"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        if landed >= tenth || status.is_terminal() {
            early = worker.peak_rss_mb();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let early = early.ok_or_else(|| failed(&"the worker's memory could not be read"))?;
    let done = completed(client, "sync", run, timeout).await?;
    Ok((done, early))
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
