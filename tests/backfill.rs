//! No silent gap after a failed or cancelled backfill: incrementals still run, but the
//! stream is reported incomplete (alert, `cairn sync --wait` exits 1 saying so) until a
//! backfill completes, and a new backfill resumes where the last one's landings reached.

mod support;

use std::time::Duration;

use cairn::sandbox::{Mutation, SandboxConfig, Stream};
use cairn::workflows::sync;
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::{TestDb, run_to_completion};
use support::vendor::{STRIPE, count, input, landed, start};
use support::{builtin, builtin_worker, run};

const STRIPE_FILE: &str = "examples/sources/sandbox-stripe.toml";

/// Pages the backfill has landed through, as its resume point says.
async fn reached(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce((backfill_resume->>'page')::bigint, 0) FROM cairn.sync_cursors
          WHERE stream = 'contacts'",
    )
    .fetch_optional(db.pool())
    .await
    .unwrap()
    .unwrap_or(0)
}

/// Waits (a minute at most) until the backfill has landed through `pages` pages.
async fn reaching(db: &TestDb, pages: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while reached(db).await < pages {
        assert!(tokio::time::Instant::now() < deadline, "no landing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn open_alerts(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT message FROM cairn.alerts WHERE kind = 'incomplete_history' AND resolved_at IS NULL",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backfill_leaves_the_stream_incomplete_until_the_next_one_resumes_it() {
    let db = TestDb::new().await;
    let url = db.url();
    let sandbox = start(SandboxConfig {
        records_per_stream: 6_000,
        latency: Duration::from_millis(5),
        ..SandboxConfig::default()
    })
    .await;
    let vendor = sandbox.vendor();
    let worker = builtin_worker(db.pool().clone(), 4);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(STRIPE, &sandbox, Stream::Contacts);

    // A backfill cancelled once a few batches have landed.
    let first = client
        .start(sync::BACKFILL, &contacts, &StartOptions::default())
        .await
        .unwrap();
    reaching(&db, 20).await;
    client.cancel(first.run_id).await.unwrap();
    let cancelled = client
        .wait(first.run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(cancelled.summary.status, RunStatus::Cancelled);
    let resume_at = reached(&db).await;
    assert!(resume_at < 60, "cancelled mid-way, at page {resume_at}");

    // Incrementals still land what changes, but say the stream is incomplete.
    let changed = vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 20 })
        .unwrap()
        .ids;
    let base = sandbox.base_url().to_owned();
    let waited = run(
        &url,
        &[
            "sync",
            STRIPE_FILE,
            "--stream",
            "contacts",
            "--base-url",
            &base,
            "--wait",
        ],
    );
    let err = String::from_utf8_lossy(&waited.stderr);
    assert_eq!(waited.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"contacts\" is incomplete") && err.contains("was cancelled"),
        "{err}"
    );
    assert!(err.contains("--mode backfill"), "says what to do: {err}");
    let shown = status(&url).await;
    let contacts_status = &shown["streams"][1];
    assert_eq!(contacts_status["stream"], "contacts");
    assert_eq!(contacts_status["history"]["complete"], false);
    assert_eq!(contacts_status["history"]["run"], first.run_id.to_string());
    assert_eq!(contacts_status["history"]["run_status"], "cancelled");
    assert_eq!(
        contacts_status["history"]["landed"]["page"].as_i64(),
        Some(resume_at)
    );
    assert_eq!(contacts_status["last_run"]["workflow"], "sync.incremental");
    assert_eq!(contacts_status["alerts"][0]["kind"], "incomplete_history");
    assert_eq!(
        contacts_status["live_rows"].as_i64(),
        Some(count(&db, "SELECT count(*) FROM sandbox_stripe.contacts").await)
    );
    let landed_changes = count(
        &db,
        &format!(
            "SELECT count(*) FROM sandbox_stripe.contacts WHERE id IN ({})",
            changed
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .await;
    assert_eq!(landed_changes, 20, "the incremental landed every change");
    assert_eq!(open_alerts(&db).await.len(), 1);

    // A new backfill carries on from the last one's landings, not from the first page.
    let served_before = vendor.requests("GET /v1/{stream}", "200");
    let second = run_to_completion(&client, sync::BACKFILL, &contacts).await;
    let fetches: Vec<&str> = second
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("fetch page"))
        .collect();
    assert_eq!(
        fetches.first().copied(),
        Some(format!("fetch page {resume_at}").as_str()),
        "resumed at the first page not known to have landed"
    );
    assert_eq!(fetches.len() as i64, 60 - resume_at);
    let served = vendor.requests("GET /v1/{stream}", "200") - served_before;
    assert_eq!(
        served as i64,
        60 - resume_at,
        "no page before it fetched again"
    );

    assert!(open_alerts(&db).await.is_empty(), "resolved once complete");
    let complete = run(
        &url,
        &[
            "sync",
            STRIPE_FILE,
            "--stream",
            "contacts",
            "--base-url",
            &base,
            "--wait",
        ],
    );
    assert_eq!(
        complete.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&complete.stderr)
    );
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.checksum(Stream::Contacts)
    );
    let shown = status(&url).await;
    let contacts_status = &shown["streams"][1];
    assert_eq!(contacts_status["history"]["complete"], true);
    assert_eq!(contacts_status["live_rows"], 6_000);
    assert_eq!(contacts_status["quarantined"], 0);
    assert_eq!(contacts_status["alerts"], serde_json::json!([]));
    assert_eq!(shown["streams"][0]["stream"], "companies");
    assert_eq!(shown["streams"][0]["last_run"], serde_json::Value::Null);

    // Reset asks first, then forgets: the next incremental reads the stream whole.
    let asked = run(
        &url,
        &["sync", "reset", STRIPE_FILE, "--stream", "contacts"],
    );
    assert_eq!(asked.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&asked.stderr).contains("--yes"));
    let reset = run(
        &url,
        &[
            "sync",
            "reset",
            STRIPE_FILE,
            "--stream",
            "contacts",
            "--yes",
            "--json",
        ],
    );
    assert_eq!(reset.status.code(), Some(0));
    let reset: serde_json::Value = serde_json::from_slice(&reset.stdout).unwrap();
    assert_eq!(reset["forgotten"], true);
    let reread = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    worker.shutdown().await;
    assert_eq!(reread.output.as_ref().unwrap()["records"], 6_000);
}

async fn status(url: &str) -> serde_json::Value {
    let out = run(url, &["sync", "status", STRIPE_FILE, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backfill_raises_an_alert_saying_what_to_do() {
    let db = TestDb::new().await;
    let sandbox = start(SandboxConfig {
        records_per_stream: 3_000,
        latency: Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(STRIPE, &sandbox, Stream::Contacts);
    let started = client
        .start(sync::BACKFILL, &contacts, &StartOptions::default())
        .await
        .unwrap();
    reaching(&db, 10).await;
    // The vendor goes away for good: the fetch runs out of retries.
    sandbox.shutdown().await;
    let failed = client
        .wait(started.run_id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(failed.summary.status, RunStatus::Failed);
    let alerts = open_alerts(&db).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].contains(&format!("backfill run {} failed", started.run_id))
            && alerts[0].contains("--mode backfill"),
        "{}",
        alerts[0]
    );
}
