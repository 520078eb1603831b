//! A sync run whose traversal began on the code before landings moved onto branches
//! finishes on today's code: its replay takes the old layout (behind the
//! `sync.forked-landings` patch), and the warehouse still equals the vendor.

mod support;

use std::time::Duration;

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{ManualClock, RateLimit, Sandbox, SandboxConfig, Stream};
use cairn::workflows::sync::{self, SyncInput};
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use chrono::Utc;
use support::{builtin, builtin_worker};

const STRIPE: &str = include_str!("../examples/sources/sandbox-stripe.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traversal_begun_on_the_old_layout_finishes_on_it() {
    let db = TestDb::new().await;
    let clock = ManualClock::new(Utc::now());
    // Three requests, then `429, Retry-After: 600`: the run parks after fetching pages
    // 0-2, before any batch of a thousand records is full.
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 2_550,
            rate_limit: Some(RateLimit::new(1.0 / 600.0, 3)),
            clock: clock.clone().into(),
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut input = SyncInput::new(
        STRIPE.to_owned(),
        "examples/sources/sandbox-stripe.toml".to_owned(),
        Stream::Contacts.name().to_owned(),
    );
    input.base_url = Some(sandbox.base_url().to_owned());
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let worker = builtin_worker(db.pool().clone(), 2);
    let run = client
        .start(sync::INCREMENTAL, &input, &StartOptions::default())
        .await
        .unwrap()
        .run_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.show(run).await.unwrap().summary.status != RunStatus::Parked {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never parked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;

    // Make its history what the old code wrote: no patch marker, every step on the
    // main branch, the fetches right after the watermark's load.
    let marker: i32 = sqlx::query_scalar(
        "DELETE FROM cairn.steps WHERE run_id = $1 AND name = 'cairn.patch sync.forked-landings'
         RETURNING position",
    )
    .bind(run)
    .fetch_one(db.pool())
    .await
    .unwrap();
    for shift in [
        "UPDATE cairn.steps SET position = -position WHERE run_id = $1 AND position > $2",
        "UPDATE cairn.steps SET position = -position - 1 WHERE run_id = $1 AND position < 0",
    ] {
        sqlx::query(shift)
            .bind(run)
            .bind(marker)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM cairn.steps WHERE run_id = $1 AND status = 'completed' ORDER BY position",
    )
    .bind(run)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        old,
        [
            "load watermark",
            "fetch page 0",
            "fetch page 1",
            "fetch page 2"
        ]
    );

    // The vendor comes back on the same address without its limit, serving the same
    // records, and the parked run is due.
    let addr = sandbox.addr();
    sandbox.shutdown().await;
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 2_550,
            clock: clock.clone().into(),
            ..SandboxConfig::default()
        },
        addr,
    )
    .await
    .unwrap();
    sqlx::query("UPDATE cairn.runs SET wake_at = now() WHERE id = $1")
        .bind(run)
        .execute(db.pool())
        .await
        .unwrap();
    let worker = builtin_worker(db.pool().clone(), 2);
    let done = client
        .wait(run, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output.as_ref().unwrap()["records"], 2_550);
    assert!(done.steps.iter().all(|s| s.branch.is_empty()), "no branch");
    let names: Vec<&str> = done
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("fetch page") || n.starts_with("land page"))
        .collect();
    let mut expected: Vec<String> = Vec::new();
    for (first, last) in [(0, 9), (10, 19), (20, 25)] {
        expected.extend((first..=last).map(|n| format!("fetch page {n}")));
        expected.push(format!("land pages {first}-{last}"));
    }
    assert_eq!(names, expected);
    let mut conn = db.pool().acquire().await.unwrap();
    let landed = Warehouse::new("sandbox-stripe", "sandbox_stripe")
        .unwrap()
        .checksum(&mut conn, Stream::Contacts.name())
        .await
        .unwrap();
    assert_eq!(landed, sandbox.vendor().checksum(Stream::Contacts));
}
