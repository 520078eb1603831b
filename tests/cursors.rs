//! The watermark only moves on cursor values it understands: a record whose cursor is
//! missing, not a date, holds a NUL or lies far in the future is quarantined with its
//! reason and an alert, and never moves the watermark; other records' later changes
//! still arrive, and the vendor's corrections land, even over a row that once landed
//! with a cursor in the future.

mod support;

use cairn::Client;
use cairn::connectors::source::parse_instant;
use cairn::sandbox::{ManualClock, Mutation, SandboxConfig, Stream};
use cairn::workflows::sync;
use cairn_testkit::{TestDb, run_to_completion};
use chrono::Utc;
use serde_json::json;
use support::builtin;
use support::vendor::{STRIPE, count, input, landed, start};

fn set_cursor(json: &str) -> Mutation {
    Mutation::SetRawField {
        field: "updated_at".to_owned(),
        json: json.to_owned(),
        count: Some(1),
    }
}

async fn watermark(db: &TestDb) -> String {
    sqlx::query_scalar(
        "SELECT watermark FROM cairn.sync_cursors WHERE source = 'sandbox-stripe' AND stream = 'contacts'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_are_quarantined_and_never_move_the_watermark() {
    let db = TestDb::new().await;
    let sandbox = start(SandboxConfig {
        records_per_stream: 200,
        ..SandboxConfig::default()
    })
    .await;
    let vendor = sandbox.vendor();
    let worker = support::builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(STRIPE, &sandbox, Stream::Contacts);
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;

    let mut bad = Vec::new();
    for json in [
        "null",
        r#""not a date""#,
        r#""2026-01-01T00:00:00\u0000""#,
        r#""2100-01-01T00:00:00Z""#,
    ] {
        bad.extend(
            vendor
                .mutate(Stream::Contacts, set_cursor(json))
                .unwrap()
                .ids,
        );
    }
    let first = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    assert_eq!(first.output.as_ref().unwrap()["quarantined"], 4);
    let moved_to = watermark(&db).await;
    let at = parse_instant(&moved_to).expect("still an instant");
    assert!(at <= Utc::now(), "not poisoned by 2100: {moved_to}");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM cairn.quarantine WHERE kind = 'invalid_cursor' ORDER BY reason",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        reasons,
        [
            "cursor field \"updated_at\" holds a NUL character",
            "cursor field \"updated_at\" is missing or null",
            "cursor field \"updated_at\" is not a timestamp",
            "cursor field \"updated_at\" lies more than 86400 s (max_future_skew) ahead of now",
        ]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.alerts WHERE kind = 'invalid_cursor' AND source = 'sandbox-stripe'"
        )
        .await,
        4
    );

    // Other records' later changes still arrive.
    let changed = vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 10 })
        .unwrap()
        .ids;
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    let records = vendor.records(Stream::Contacts);
    for id in &changed {
        let theirs = records.iter().find(|r| r["id"] == json!(id)).unwrap();
        let ours: serde_json::Value =
            sqlx::query_scalar("SELECT _raw FROM sandbox_stripe.contacts WHERE id = $1")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        if !bad.contains(id) {
            assert_eq!(&ours, theirs, "record {id} took its change");
        }
    }

    // The vendor corrects every cursor: the records land, their quarantine goes.
    vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 200 })
        .unwrap();
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    worker.shutdown().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM cairn.quarantine").await,
        0,
        "what landed left the quarantine"
    );
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.checksum(Stream::Contacts)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_landed_with_a_future_cursor_still_takes_the_correction() {
    let db = TestDb::new().await;
    // The vendor's clock three seconds behind ours (and standing still): its correction
    // is stamped before our sync of the bad row, as a lagging clock or a whole-second
    // timestamp can make it, and must land all the same.
    let sandbox = start(SandboxConfig {
        records_per_stream: 50,
        clock: ManualClock::new(Utc::now() - chrono::Duration::seconds(3)).into(),
        ..SandboxConfig::default()
    })
    .await;
    let vendor = sandbox.vendor();
    // A source that lets a cursor a century ahead land, as older builds did.
    let lenient = STRIPE.replacen(
        "cursor_field = \"updated_at\"",
        "cursor_field = \"updated_at\"\nmax_future_skew = \"36500d\"",
        1,
    );
    assert_ne!(lenient, STRIPE);
    let worker = support::builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(&lenient, &sandbox, Stream::Contacts);
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    let future = vendor
        .mutate(Stream::Contacts, set_cursor(r#""2100-01-01T00:00:00Z""#))
        .unwrap()
        .ids;
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    let stored: String =
        sqlx::query_scalar("SELECT _raw->>'updated_at' FROM sandbox_stripe.contacts WHERE id = $1")
            .bind(&future[0])
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(stored, "2100-01-01T00:00:00Z", "it landed");

    vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 50 })
        .unwrap();
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    worker.shutdown().await;
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.checksum(Stream::Contacts),
        "the row took the vendor's correction"
    );
}
