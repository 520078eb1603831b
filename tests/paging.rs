//! Paging that repeats or drifts: an id met on two pages of one sync lands once, the
//! newer version winning; a listing that holds fewer distinct ids than the total it
//! reports (paging that stops early, offsets that shift) never passes as success.

mod support;

use cairn::sandbox::{Mutation, Quirks, SandboxConfig, Stream};
use cairn::workflows::sync;
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::{TestDb, run_to_completion};
use serde_json::Value;
use support::vendor::{REST, STRIPE, count, input, landed, start};
use support::{builtin, builtin_worker, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_on_two_pages_lands_once_with_its_newer_version() {
    let db = TestDb::new().await;
    let sandbox = start(SandboxConfig {
        records_per_stream: 3_000,
        quirks: Quirks {
            page_overlap: 3,
            ..Quirks::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let vendor = sandbox.vendor();
    // Before the eleventh page is served, every record already read changes: the page
    // repeats the last three of the tenth, in their newer versions, in the next batch.
    vendor
        .mutate(
            Stream::Contacts,
            Mutation::UpdateWhilePaging {
                count: 3_000,
                after_pages: 10,
            },
        )
        .unwrap();
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(STRIPE, &sandbox, Stream::Contacts);
    let done = run_to_completion(&client, sync::BACKFILL, &contacts).await;
    let out = done.output.as_ref().unwrap();
    assert_eq!(
        out["records"],
        3_000 + 29 * 3,
        "29 pages repeated 3 records each"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM sandbox_stripe.contacts").await,
        3_000,
        "each id landed once"
    );
    // Newest first: the tenth page ends with ids 2003..2001, read again on the eleventh.
    let records = vendor.records(Stream::Contacts);
    for id in ["2001", "2002", "2003"] {
        let theirs = records.iter().find(|r| r["id"] == id).unwrap();
        let ours: Value =
            sqlx::query_scalar("SELECT _raw FROM sandbox_stripe.contacts WHERE id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(&ours, theirs, "record {id}: the newer version won");
    }
    // The rest changed behind the cursor: the next incremental brings them.
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    worker.shutdown().await;
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.checksum(Stream::Contacts)
    );
}

/// Syncs `sandbox-rest` contacts (offset paging with the vendor's `total`) through a
/// vendor with `quirks`, and returns the failed run's error with the open alerts.
async fn short_listing(quirks: Quirks) -> (TestDb, String, Vec<String>) {
    let db = TestDb::new().await;
    let sandbox = start(SandboxConfig {
        records_per_stream: 1_000,
        quirks,
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let started = client
        .start(
            sync::INCREMENTAL,
            &input(REST, &sandbox, Stream::Contacts),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let failed = client
        .wait(started.run_id, Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(failed.summary.status, RunStatus::Failed, "never a success");
    let error = failed.error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let alerts: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM cairn.alerts WHERE kind = 'incomplete_listing' AND source = 'sandbox-rest'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let watermark: Option<String> =
        sqlx::query_scalar("SELECT watermark FROM cairn.sync_cursors WHERE stream = 'contacts'")
            .fetch_optional(db.pool())
            .await
            .unwrap()
            .flatten();
    assert_eq!(watermark, None, "the watermark did not move");
    (db, error, alerts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_that_stops_short_of_the_total_fails_with_an_alert() {
    let (db, error, alerts) = short_listing(Quirks {
        stop_after: Some(450),
        ..Quirks::default()
    })
    .await;
    assert!(
        error.contains("total of 1000") && error.contains("after 450"),
        "{error}"
    );
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].contains("looks incomplete"), "{}", alerts[0]);
    assert_eq!(
        count(&db, "SELECT count(*) FROM sandbox_rest.contacts").await,
        450,
        "what was read landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_that_shift_under_the_sync_fail_with_an_alert() {
    // From the second page on, pages start two records early: two records are read
    // twice, and the last two never.
    let (db, error, alerts) = short_listing(Quirks {
        page_overlap: 2,
        ..Quirks::default()
    })
    .await;
    assert!(
        error.contains("998 distinct ids (2 more than once)"),
        "{error}"
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM sandbox_rest.contacts").await,
        998
    );
    let url = db.url();
    let waited = run(&url, &["alerts", "--json"]);
    let listed: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "incomplete_listing")
    );
}
