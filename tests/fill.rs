//! New fields reach old rows: when an incremental adds a column to a table that holds
//! rows synced before it, a column fill re-reads the stream under the same rate budget
//! (at half its rate) and fills the column on every row, visible in progress, status and
//! alerts; the vendor's limit is never exceeded.

mod support;

use std::time::Duration;

use cairn::sandbox::{Mutation, RateLimit, SandboxConfig, Stream};
use cairn::workflows::sync;
use cairn::{Client, RunStatus};
use cairn_testkit::{TestDb, run_to_completion};
use serde_json::Value;
use support::vendor::{STRIPE, count, input, landed, start};
use support::{builtin, builtin_worker, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_field_reaches_every_row_synced_before_it_without_a_429() {
    let db = TestDb::new().await;
    let url = db.url();
    // The vendor allows 20 requests a second; the source says so, as a user's would.
    let sandbox = start(SandboxConfig {
        records_per_stream: 1_500,
        rate_limit: Some(RateLimit::new(20.0, 1)),
        ..SandboxConfig::default()
    })
    .await;
    let limited = format!("{STRIPE}\n[rate_limit]\nrequests_per_second = 20\nburst = 1\n");
    let dir = std::env::temp_dir().join(format!("cairn-fill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limited.toml");
    std::fs::write(&file, &limited).unwrap();
    let vendor = sandbox.vendor();
    let worker = builtin_worker(db.pool().clone(), 4);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(&limited, &sandbox, Stream::Contacts);
    run_to_completion(&client, sync::BACKFILL, &contacts).await;

    // Every record gets a field without its `updated_at` changing (as vendors add
    // fields); five records change as well, so the next incremental sees the field.
    vendor
        .mutate(
            Stream::Contacts,
            Mutation::AddField {
                field: "loyalty_tier".into(),
                value: None,
                touch: false,
            },
        )
        .unwrap();
    vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 5 })
        .unwrap();
    let incremental = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    assert_eq!(
        incremental.output.as_ref().unwrap()["columns_added"],
        serde_json::json!(["loyalty_tier"])
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sandbox_stripe.contacts WHERE loyalty_tier IS NULL"
        )
        .await,
        1_495,
        "the incremental alone leaves the old rows empty"
    );
    let alert: String = sqlx::query_scalar(
        "SELECT message FROM cairn.alerts WHERE kind = 'new_columns' AND resolved_at IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(alert.contains("1495 row(s)"), "{alert}");

    // The fill runs on its own; status shows it.
    let fill: cairn::RunId =
        sqlx::query_scalar("SELECT id FROM cairn.runs WHERE workflow = 'sync.fill'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let shown = run(&url, &["sync", "status", file.to_str().unwrap(), "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        shown["streams"][1]["column_fill"]["id"],
        fill.to_string(),
        "{shown:#}"
    );
    let done = client
        .wait(fill, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output.as_ref().unwrap()["records"], 1_500);
    assert!(
        done.progress
            .as_ref()
            .is_some_and(|p| p["records"] == 1_500),
        "{:?}",
        done.progress
    );

    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sandbox_stripe.contacts WHERE loyalty_tier IS NULL"
        )
        .await,
        0,
        "every row has the field"
    );
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.checksum(Stream::Contacts)
    );
    assert_eq!(
        vendor.stats().rate_limited,
        0,
        "the vendor's limit held: no 429"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.alerts WHERE kind = 'new_columns' AND resolved_at IS NULL"
        )
        .await,
        0,
        "resolved once filled"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
