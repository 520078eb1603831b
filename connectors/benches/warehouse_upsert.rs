//! How many records per second the warehouse sink lands into typed tables.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p
//! cairn-connectors --bench warehouse_upsert [-- PAGE_SIZE]` generates 100,000 sandbox
//! contacts (nested objects, arrays, nullable fields), lands them page by page into a
//! fresh database — each page in its own transaction, as a sync's transactional step
//! does — and prints records/s for the first landing (inserts) and for landing the same
//! pages again (the idempotent no-op path), then checks the checksum against the
//! vendor's.

use cairn_connectors::record::Record;
use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use cairn_connectors::warehouse::{StreamSpec, Warehouse};
use cairn_sandbox::{Sandbox, SandboxConfig, Stream};
use cairn_testkit::TestDb;
use serde_json::Value;

const RECORDS: usize = 100_000;
const DEFAULT_PAGE: usize = 500;

/// Lands every page in its own transaction; returns records/s overall and the seconds
/// spent in `upsert_page` and in commits.
async fn land_all(
    db: &TestDb,
    warehouse: &Warehouse,
    spec: &StreamSpec,
    records: &[Value],
    page: usize,
) -> Result<(f64, f64, f64), Box<dyn Error>> {
    let started = Instant::now();
    let (mut upserting, mut committing) = (0.0, 0.0);
    for chunk in records.chunks(page) {
        let mut tx = db.pool().begin().await?;
        let at = Instant::now();
        let report = warehouse
            .upsert_page(
                &mut tx,
                spec,
                &Record::from_values(chunk),
                chrono::Utc::now(),
            )
            .await?;
        upserting += at.elapsed().as_secs_f64();
        if report.quarantined > 0 {
            return Err(format!("records were quarantined: {:?}", report.alerts).into());
        }
        let at = Instant::now();
        tx.commit().await?;
        committing += at.elapsed().as_secs_f64();
    }
    let rate = records.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, upserting, committing))
}

async fn run(page: usize) -> Result<(), Box<dyn Error>> {
    let config = SandboxConfig {
        records_per_stream: RECORDS,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse()?).await?;
    let records = sandbox.vendor().records(Stream::Contacts);
    let db = TestDb::new().await;
    let warehouse = Warehouse::new("crm", "warehouse")?;
    let spec = StreamSpec::new("contacts", "id").with_cursor("updated_at");

    let (rate, upserting, committing) = land_all(&db, &warehouse, &spec, &records, page).await?;
    println!(
        "warehouse_upsert: {} records in pages of {page}, first landing: {rate:.0} records/s \
         ({upserting:.2} s in upsert_page, {committing:.2} s in commits)",
        records.len()
    );
    let (rate, upserting, committing) = land_all(&db, &warehouse, &spec, &records, page).await?;
    println!(
        "warehouse_upsert: same pages again (no-op): {rate:.0} records/s \
         ({upserting:.2} s in upsert_page, {committing:.2} s in commits)"
    );

    let mut conn = db.pool().acquire().await?;
    let ours = warehouse.checksum(&mut conn, "contacts").await?;
    let theirs = sandbox.vendor().checksum(Stream::Contacts);
    drop(conn);
    sandbox.shutdown().await;
    if ours != theirs {
        return Err(format!("checksums differ: warehouse {ours}, vendor {theirs}").into());
    }
    println!("warehouse_upsert: checksum equal to the vendor's ({ours})");
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os("DATABASE_URL").is_none() {
        eprintln!(
            "warehouse_upsert needs PostgreSQL: set DATABASE_URL, e.g. \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (the user must be \
             allowed to CREATE DATABASE)"
        );
        return ExitCode::from(2);
    }
    // `cargo bench` passes `--bench`; the first other argument is the page size.
    let page = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        None => DEFAULT_PAGE,
        Some(arg) => match arg.parse::<usize>() {
            Ok(page) if page > 0 => page,
            _ => {
                eprintln!(
                    "warehouse_upsert: the page size must be a positive integer, got {arg:?}"
                );
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("warehouse_upsert: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(page)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warehouse_upsert failed: {e}");
            ExitCode::FAILURE
        }
    }
}
