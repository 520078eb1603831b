//! `bench reconcile`: delete reconciliation of a warehouse table against the vendor's id
//! set, at two sizes (100,000 and 1,000,000 ids by default), to show that its time grows
//! linearly. The baseline is reading the same id listing through the same source with
//! nothing staged or applied.

use std::time::{Duration, Instant};

use cairn_connectors::record::Record;
use cairn_connectors::source::read_ids;
use cairn_connectors::warehouse::{StreamSpec, Warehouse};
use cairn_runner::{Client, StartOptions};
use cairn_sandbox::{Mutation, SandboxConfig, Stream};
use cairn_workflows::sync::{RECONCILE, SyncInput};
use clap::Args;
use serde_json::json;

use super::report::{Baseline, Machine, Named, Report, Target, share};
use super::sync::{baseline_source, run_secs};
use super::{BenchDb, InProcessWorker, at_least, completed, db_failure, sandbox};
use crate::cli::Failure;

/// The HubSpot-style source, which has an ids-only listing.
const HUBSPOT: &str = include_str!("../../../examples/sources/sandbox-hubspot.toml");
const HUBSPOT_FILE: &str = "examples/sources/sandbox-hubspot.toml";

/// Ids per page of the ids listing (the sandbox allows ten times its page size).
const IDS_PER_PAGE: usize = 10_000;

/// Options of `cairn bench reconcile`.
#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    /// The sizes to reconcile, in vendor ids, comma separated; the smallest and the
    /// largest are compared for linear growth.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000])]
    ids: Vec<usize>,
    /// The share of the vendor's records deleted before each reconciliation, in percent.
    #[arg(long, default_value_t = 1)]
    deleted_percent: u32,
    /// Give up after this many seconds per run.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

impl ReconcileArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        for size in &self.ids {
            at_least("--ids", *size as u64, 10)?;
        }
        if self.ids.is_empty() {
            return Err(Failure::usage("--ids needs at least one size"));
        }
        if self.deleted_percent > 40 {
            return Err(Failure::usage(
                "--deleted-percent must be at most 40: more looks like an incomplete id set",
            ));
        }
        at_least("--timeout", self.timeout, 1)
    }
}

/// One size, measured.
struct Measured {
    ids: usize,
    seconds: f64,
    apply_seconds: f64,
    listing_seconds: f64,
    deleted: u64,
    expected_deleted: u64,
}

pub(super) async fn run(db: &BenchDb, args: &ReconcileArgs) -> Result<Report, Failure> {
    let mut sizes = args.ids.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let worker = InProcessWorker::start(db.pool(), 2);
    let mut measured = Vec::with_capacity(sizes.len());
    for &size in &sizes {
        measured.push(one(db, args, size).await?);
    }
    worker.stop().await?;

    let mut conditions = Named::default();
    conditions
        .set("ids", json!(sizes))
        .set("deleted_percent", args.deleted_percent)
        .set("ids_per_page", IDS_PER_PAGE as u64)
        .set("source", HUBSPOT_FILE)
        .set("workflow", RECONCILE)
        .set("worker", "in-process, 2 slots");
    let mut figures = Named::default();
    for m in &measured {
        let n = m.ids;
        figures
            .add(&format!("seconds_{n}"), m.seconds, "s")
            .add(
                &format!("ids_per_sec_{n}"),
                share(n as f64, m.seconds),
                "ids/s",
            )
            .add(&format!("apply_seconds_{n}"), m.apply_seconds, "s")
            .add(&format!("listing_seconds_{n}"), m.listing_seconds, "s")
            .add(&format!("deleted_{n}"), m.deleted as f64, "rows");
    }
    let (small, large) = (&measured[0], &measured[measured.len() - 1]);
    // Seconds per id at the largest size over seconds per id at the smallest: 1.0 is
    // linear, 10 would be quadratic across a tenfold step.
    let growth = share(
        share(large.seconds, large.ids as f64),
        share(small.seconds, small.ids as f64),
    );
    figures.add("growth_per_id", growth, "x");
    let all_deleted = measured.iter().all(|m| m.deleted == m.expected_deleted);
    figures.add(
        "deleted_as_expected",
        f64::from(u8::from(all_deleted)),
        "bool",
    );
    let mut targets = vec![
        Target::at_most(
            "time per id grows at most 1.5x from the smallest to the largest size (linear)",
            growth,
            1.5,
        ),
        Target::at_least(
            "every reconciliation marked exactly the vendor's deletions",
            f64::from(u8::from(all_deleted)),
            1.0,
        ),
    ];
    if let Some(million) = measured.iter().find(|m| m.ids == 1_000_000) {
        targets.insert(
            0,
            Target::at_most(
                "1,000,000 ids reconciled in at most 10 s",
                million.seconds,
                10.0,
            ),
        );
    }
    Ok(Report {
        scenario: "reconcile",
        machine: Machine::describe(db.pool()).await,
        conditions,
        figures,
        baseline: Baseline {
            name: format!(
                "reading the {} ids listing through the same source, nothing staged",
                large.ids
            ),
            value: large.listing_seconds,
            unit: "s",
            ratio_of: "reconcile seconds / listing seconds, at the largest size".to_owned(),
        },
        ratio: share(large.seconds, large.listing_seconds),
        targets,
    })
}

/// Reconciles a table of `size` rows against a vendor that deleted a share of them.
async fn one(db: &BenchDb, args: &ReconcileArgs, size: usize) -> Result<Measured, Failure> {
    let what = "reconcile";
    let timeout = Duration::from_secs(args.timeout);
    eprintln!("bench reconcile: {size} ids");
    let sandbox = sandbox(
        what,
        SandboxConfig {
            records_per_stream: size,
            max_page_size: IDS_PER_PAGE / 10,
            only: Some(Stream::Contacts),
            lean: true,
            ..SandboxConfig::default()
        },
    )
    .await?;
    // A source of its own per size, so each lands in a schema of its own.
    let name = format!("reconcile-{size}");
    let toml = HUBSPOT
        .replacen(
            "name = \"sandbox-hubspot\"",
            &format!("name = \"{name}\""),
            1,
        )
        .replacen(
            "path = \"/ids/contacts\"",
            &format!("path = \"/ids/contacts\"\nquery = {{ limit = \"{IDS_PER_PAGE}\" }}"),
            1,
        );
    let mut input = SyncInput::new(toml, HUBSPOT_FILE.to_owned(), "contacts".to_owned());
    input.base_url = Some(sandbox.base_url().to_owned());
    let schema = name.replace('-', "_");
    fill_table(db, &name, &schema, size).await?;
    let expected_deleted = (size as u64 * u64::from(args.deleted_percent)) / 100;
    sandbox
        .vendor()
        .mutate(
            Stream::Contacts,
            Mutation::Delete {
                count: expected_deleted as usize,
            },
        )
        .map_err(|err| Failure::failed(format!("bench {what}: deleting records: {err}")))?;

    let listing_seconds = listing(&input).await?;
    let client = Client::new(db.pool().clone());
    let started = client
        .start(RECONCILE, &input, &StartOptions::default())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    let done = completed(&client, what, started.run_id, timeout).await?;
    sandbox.shutdown().await;
    let apply_ms: f64 = sqlx::query_scalar(
        "SELECT coalesce(max(duration_ms), 0)::float8 FROM cairn.steps
          WHERE run_id = $1 AND name = 'apply deletes'",
    )
    .bind(done.summary.id)
    .fetch_one(db.pool())
    .await
    .map_err(db_failure(what))?;
    let deleted = done
        .output
        .as_ref()
        .and_then(|o| o["outcome"]["deleted"].as_u64())
        .unwrap_or(0);
    Ok(Measured {
        ids: size,
        seconds: run_secs(&done),
        apply_seconds: apply_ms / 1000.0,
        listing_seconds,
        deleted,
        expected_deleted,
    })
}

/// A warehouse table of `size` live rows with the vendor's ids, as a sync would have left
/// it: created through the sink, filled in bulk.
async fn fill_table(db: &BenchDb, source: &str, schema: &str, size: usize) -> Result<(), Failure> {
    let what = "reconcile";
    let warehouse = Warehouse::new(source, schema)
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    let first = Record::from_value(json!({"id": "1", "updated_at": "2026-01-01T00:00:00Z"}));
    let spec = StreamSpec::new("contacts", "id");
    let mut tx = db.pool().begin().await.map_err(db_failure(what))?;
    warehouse
        .upsert_page(&mut tx, &spec, &[first], chrono::Utc::now())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: creating the table: {err}")))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".contacts (id, \"_raw\", \"_synced_at\")
         SELECT g::text, jsonb_build_object('id', g::text), now()
           FROM generate_series(2, {size}) AS g"
    )))
    .execute(&mut *tx)
    .await
    .map_err(db_failure(what))?;
    tx.commit().await.map_err(db_failure(what))
}

/// Seconds to read the whole ids listing through the source, storing nothing.
async fn listing(input: &SyncInput) -> Result<f64, Failure> {
    let source = baseline_source(input, "reconcile").await?;
    let started = Instant::now();
    read_ids(&source, &input.stream)
        .await
        .map_err(|e| Failure::failed(format!("bench reconcile: baseline: {e}")))?;
    Ok(started.elapsed().as_secs_f64())
}
