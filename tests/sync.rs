//! The sync workflows end to end: real Postgres, the sandbox vendor over HTTP, workers
//! in this process and `cairn worker` processes killed with SIGKILL.

mod support;

use std::time::Duration;

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{
    ManualClock, Mutation, RateLimit, Sandbox, SandboxConfig, SandboxHandle, Stream,
};
use cairn::workflows::sync::{self, SyncInput};
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::{TestDb, run_to_completion};
use chrono::Utc;
use serde_json::Value;
use support::{WorkerProcess, builtin, builtin_worker};

const STRIPE: &str = include_str!("../examples/sources/sandbox-stripe.toml");

async fn vendor(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn input(vendor: &SandboxHandle, stream: Stream) -> SyncInput {
    let mut input = SyncInput::new(
        STRIPE.to_owned(),
        "examples/sources/sandbox-stripe.toml".to_owned(),
        stream.name().to_owned(),
    );
    input.base_url = Some(vendor.base_url().to_owned());
    input
}

async fn checksum(db: &TestDb, stream: Stream) -> String {
    let mut conn = db.pool().acquire().await.unwrap();
    Warehouse::new("sandbox-stripe", "sandbox_stripe")
        .unwrap()
        .checksum(&mut conn, stream.name())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_changes_incremental_and_reconcile_leave_the_warehouse_equal_to_the_vendor() {
    let db = TestDb::new().await;
    let sandbox = vendor(SandboxConfig {
        records_per_stream: 600,
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 4);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(&sandbox, Stream::Contacts);

    let backfill = run_to_completion(&client, sync::BACKFILL, &contacts).await;
    assert_eq!(backfill.output.as_ref().unwrap()["records"], 600);
    assert_eq!(
        checksum(&db, Stream::Contacts).await,
        sandbox.vendor().checksum(Stream::Contacts)
    );

    let v = sandbox.vendor();
    v.mutate(Stream::Contacts, Mutation::Update { count: 30 })
        .unwrap();
    v.mutate(Stream::Contacts, Mutation::Create { count: 12 })
        .unwrap();
    v.mutate(Stream::Contacts, Mutation::Delete { count: 20 })
        .unwrap();
    v.mutate(
        Stream::Contacts,
        Mutation::AddField {
            field: "loyalty_tier".into(),
            value: Some("gold".into()),
            touch: true,
        },
    )
    .unwrap();

    let incremental = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    let fetched = incremental.output.as_ref().unwrap()["records"]
        .as_u64()
        .unwrap();
    assert_eq!(
        fetched, 592,
        "every live record was touched by the new field, none twice"
    );
    let reconcile = run_to_completion(&client, sync::RECONCILE, &contacts).await;
    worker.shutdown().await;
    assert_eq!(reconcile.output.as_ref().unwrap()["vendor_ids"], 592);

    assert_eq!(
        checksum(&db, Stream::Contacts).await,
        v.checksum(Stream::Contacts),
        "every field of every live record equals the vendor's"
    );
    let (live, deleted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE _deleted_at IS NULL), count(*) FILTER (WHERE _deleted_at IS NOT NULL)
           FROM sandbox_stripe.contacts",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((live, deleted), (592, 20));
    let tier: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandbox_stripe.contacts WHERE loyalty_tier = 'gold' AND _deleted_at IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(tier, 592, "the new field became a column");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sharing_the_boundary_instant_are_neither_skipped_nor_reread() {
    let db = TestDb::new().await;
    // The vendor's clock an hour behind: its changes are safely in the past for ours.
    let clock = ManualClock::new(Utc::now() - chrono::Duration::hours(1));
    let sandbox = vendor(SandboxConfig {
        records_per_stream: 500,
        clock: clock.clone().into(),
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(&sandbox, Stream::Contacts);
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;

    // 250 records changed in one instant: they straddle two page edges (pages of 100).
    sandbox
        .vendor()
        .mutate(Stream::Contacts, Mutation::Update { count: 250 })
        .unwrap();
    let changed = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    assert_eq!(
        changed.output.as_ref().unwrap()["records"],
        250,
        "all of them, once"
    );
    let again = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    worker.shutdown().await;
    assert_eq!(
        again.output.as_ref().unwrap()["records"],
        0,
        "the boundary is not read again"
    );
    assert_eq!(
        checksum(&db, Stream::Contacts).await,
        sandbox.vendor().checksum(Stream::Contacts)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_fetched_one_step_each_and_land_in_batches_of_a_thousand_records() {
    let db = TestDb::new().await;
    let sandbox = vendor(SandboxConfig {
        records_per_stream: 2_550,
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let done = run_to_completion(
        &client,
        sync::INCREMENTAL,
        &input(&sandbox, Stream::Contacts),
    )
    .await;
    worker.shutdown().await;
    assert_eq!(done.output.as_ref().unwrap()["records"], 2_550);

    // The fetches are the main branch's steps, in page order; each batch lands on a
    // branch of its own, so a replay finds every landing whatever order they finished in.
    let main: Vec<&str> = done
        .steps
        .iter()
        .filter(|s| s.branch.is_empty())
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("fetch page") || n.starts_with("land page"))
        .collect();
    let fetches: Vec<String> = (0..=25).map(|n| format!("fetch page {n}")).collect();
    assert_eq!(main, fetches);
    let mut landings: Vec<(&str, &str)> = done
        .steps
        .iter()
        .filter(|s| !s.branch.is_empty())
        .map(|s| (s.branch.as_str(), s.name.as_str()))
        .collect();
    landings.sort();
    assert_eq!(
        landings,
        [
            ("0.0/0.0", "land pages 0-9"),
            ("0.0/1.0", "land pages 10-19"),
            ("0.0/2.0", "land pages 20-25"),
        ]
    );

    assert_eq!(
        checksum(&db, Stream::Contacts).await,
        sandbox.vendor().checksum(Stream::Contacts)
    );
    // The stream's cursor row is written once, by the last landing, with the whole count.
    let (records, watermark): (i64, Option<String>) = sqlx::query_as(
        "SELECT records, watermark FROM cairn.sync_cursors WHERE stream = 'contacts'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(records, 2_550);
    assert_eq!(
        watermark.as_deref(),
        done.output.as_ref().unwrap()["watermark"].as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_30_parks_the_run_without_holding_a_worker() {
    let db = TestDb::new().await;
    let clock = ManualClock::new(Utc::now());
    // One request per 30 s: the second page meets `429, Retry-After: 30`.
    let sandbox = vendor(SandboxConfig {
        records_per_stream: 150,
        rate_limit: Some(RateLimit::new(1.0 / 30.0, 1)),
        clock: clock.clone().into(),
        ..SandboxConfig::default()
    })
    .await;
    // One slot: while the sync is parked, another run must still get through.
    let worker = builtin_worker(db.pool().clone(), 1);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let started = client
        .start(
            sync::BACKFILL,
            &input(&sandbox, Stream::Contacts),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let run = client.show(started.run_id).await.unwrap();
        if run.summary.status == RunStatus::Parked {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never parked: {:?}",
            run.summary.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(parked.lease_owner.is_none(), "a parked run holds no worker");
    let wait = parked.summary.wake_at - Utc::now();
    assert!(
        wait > chrono::Duration::seconds(20) && wait <= chrono::Duration::seconds(31),
        "{wait}"
    );
    let throttled = parked
        .steps
        .iter()
        .find(|s| s.throttled > 0)
        .expect("a throttled step");
    assert!(
        throttled.name.starts_with("fetch page"),
        "{}",
        throttled.name
    );

    let other = client
        .start(
            "ledger",
            &serde_json::json!({ "steps": 2, "record": false }),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let other = client
        .wait(other.run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        other.summary.status,
        RunStatus::Completed,
        "the only slot was free"
    );

    // Thirty seconds pass for the vendor and for the parked run.
    clock.advance(Duration::from_secs(31));
    sqlx::query("UPDATE cairn.runs SET wake_at = now() WHERE id = $1")
        .bind(started.run_id)
        .execute(db.pool())
        .await
        .unwrap();
    let done = client
        .wait(started.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output.as_ref().unwrap()["records"], 150);
    assert_eq!(
        done.summary.claims, 2,
        "resumed by a fresh claim after the park"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_survives_ten_sigkills_without_refetching_a_checkpointed_page() {
    // 500 pages landing 10 at a time: far more work than ten kills take, so the kills
    // land mid-run on any machine; should the run still end first, killing stops there.
    const RECORDS: usize = 50_000;
    const KILLS: usize = 10;
    let db = TestDb::new().await;
    let sandbox = vendor(SandboxConfig {
        records_per_stream: RECORDS,
        seed: 11,
        latency: Duration::from_millis(3),
        ..SandboxConfig::default()
    })
    .await;
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let started = client
        .start(
            sync::BACKFILL,
            &input(&sandbox, Stream::Contacts),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let url = db.url();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut kills = 0;
    while kills < KILLS {
        let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
        // Let it work (a landing commits), then kill it at a random point; a run that
        // has ended needs no more kills.
        let pages_before = landed_pages(&db, started.run_id).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let ended = loop {
            let status = client.show(started.run_id).await.unwrap().summary.status;
            if status.is_terminal() {
                break true;
            }
            if landed_pages(&db, started.run_id).await > pages_before {
                break false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress in 60 s before kill {kills} ({status:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if ended {
            drop(worker);
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..150))).await;
        worker.kill();
        kills += 1;
    }
    assert!(kills > 0, "the run ended before its first kill");
    let last = WorkerProcess::spawn(&url, &["--lease", "1"]);
    let done = client
        .wait(started.run_id, Some(Duration::from_secs(180)))
        .await
        .unwrap();
    assert_eq!(last.terminate(), Some(0));
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert!(
        done.summary.claims > kills as i32,
        "claimed after every kill: {} claims for {kills} kills",
        done.summary.claims
    );

    let fetch_steps = done
        .steps
        .iter()
        .filter(|s| s.name.starts_with("fetch page"))
        .count() as u64;
    assert_eq!(
        fetch_steps,
        (RECORDS / 100) as u64,
        "pages of 100; `has_more: false` ends the listing"
    );
    let served = sandbox.vendor().stats().count("GET /v1/{stream}", "200");
    assert!(
        served <= fetch_steps + kills as u64,
        "{served} pages served for {fetch_steps} fetch steps and {kills} kills: \
         a checkpointed page was fetched again"
    );
    assert_eq!(
        checksum(&db, Stream::Contacts).await,
        sandbox.vendor().checksum(Stream::Contacts)
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sandbox_stripe.contacts")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, RECORDS as i64);
}

async fn landed_pages(db: &TestDb, run: cairn::RunId) -> usize {
    let progress: Option<Value> =
        sqlx::query_scalar("SELECT progress FROM cairn.runs WHERE id = $1")
            .bind(run)
            .fetch_one(db.pool())
            .await
            .unwrap();
    progress
        .and_then(|p| p.get("pages").and_then(Value::as_u64))
        .unwrap_or(0) as usize
}
