//! A Postgres restart mid-sync: every connection cut by the server, then the server
//! away for seconds. Neither the run nor the `cairn sync --wait` following it fails; the
//! worker and the CLI reconnect with backoff, the run goes on from its checkpoints, and
//! the warehouse ends equal to the vendor.

mod support;

use std::process::Stdio;
use std::time::Duration;

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{SandboxConfig, Stream};
use cairn_testkit::TestDb;
use serde_json::Value;
use sqlx::PgPool;
use support::proxy::{Proxy, through, upstream_of};
use support::vendor::start;
use support::{WorkerProcess, cairn};

/// Pages the run has landed, from its progress report.
async fn landed_pages(db: &PgPool) -> u64 {
    let progress: Option<Value> = sqlx::query_scalar(
        "SELECT progress FROM cairn.runs WHERE workflow = 'sync.backfill' LIMIT 1",
    )
    .fetch_optional(db)
    .await
    .unwrap()
    .flatten();
    progress
        .and_then(|p| p.get("pages").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Cuts every connection to the test database but the caller's, as a server restart
/// or an operator's `pg_terminate_backend` does.
async fn terminate_backends(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                WHERE datname = current_database()
                                  AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_mid_sync_fails_neither_the_run_nor_its_follower() {
    let db = TestDb::new().await;
    // The test's own single connection, the one the cuts spare.
    let own = db.new_pool(1).await;
    let proxy = Proxy::start(upstream_of(&db.url())).await;
    let proxied = through(&db.url(), &proxy);
    // 500 pages: far more than can land before the outage begins.
    let sandbox = start(SandboxConfig {
        records_per_stream: 50_000,
        latency: Duration::from_millis(3),
        ..SandboxConfig::default()
    })
    .await;
    // A lease longer than the outage: the same worker carries the run through it.
    let worker = WorkerProcess::spawn(&proxied, &["--lease", "30"]);
    let follower = cairn()
        .env("DATABASE_URL", &proxied)
        .args([
            "sync",
            "examples/sources/sandbox-stripe.toml",
            "--stream",
            "contacts",
            "--mode",
            "backfill",
            "--base-url",
            sandbox.base_url(),
            "--wait",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while landed_pages(&own).await < 20 {
        assert!(tokio::time::Instant::now() < deadline, "no landing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server cuts every connection, twice.
    for _ in 0..2 {
        assert!(
            terminate_backends(&own).await > 0,
            "the worker was connected"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then it is gone for seven seconds: connections cut, new ones refused.
    proxy.sever();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let during = landed_pages(&own).await;
    assert!(
        during < 500,
        "the run was mid-way when the server went away"
    );
    proxy.restore();

    let out = tokio::task::spawn_blocking(move || follower.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the follower rode it out: {stderr}"
    );
    assert!(stderr.contains("the database is unreachable"), "{stderr}");
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["output"]["records"], 50_000);
    assert_eq!(worker.terminate(), Some(0), "the worker lived through it");
    let mut conn = own.acquire().await.unwrap();
    let ours = Warehouse::new("sandbox-stripe", "sandbox_stripe")
        .unwrap()
        .checksum(&mut conn, "contacts")
        .await
        .unwrap();
    assert_eq!(ours, sandbox.vendor().checksum(Stream::Contacts));
}
