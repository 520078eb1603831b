//! Sources never share tables: each lands in a schema of its own, a table belongs to the
//! source that writes it, and a database laid out the old way (every source in one
//! schema) is migrated without losing a row.

mod support;

use std::io::Write as _;

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{Mutation, SandboxConfig, SandboxHandle, Stream};
use cairn::workflows::sync;
use cairn::{Client, RunStatus};
use cairn_testkit::{TestDb, run_to_completion};
use serde_json::{Value, json};
use support::vendor::{STRIPE, count, input, landed, start};
use support::{builtin, builtin_worker, run};

async fn vendor(seed: u64, records: usize) -> SandboxHandle {
    start(SandboxConfig {
        records_per_stream: records,
        seed,
        ..SandboxConfig::default()
    })
    .await
}

/// The Stripe profile renamed `name`, with `extra` TOML appended.
fn source_toml(name: &str, extra: &str) -> String {
    let renamed = STRIPE.replacen(
        "name = \"sandbox-stripe\"",
        &format!("name = \"{name}\""),
        1,
    );
    assert_ne!(renamed, STRIPE, "the profile names its source");
    format!("{renamed}\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_with_the_same_stream_land_apart_and_reconcile_only_their_own() {
    let db = TestDb::new().await;
    let (a, b) = (vendor(1, 300).await, vendor(2, 200).await);
    let (toml_a, toml_b) = (source_toml("crm-a", ""), source_toml("crm-b", ""));
    let worker = builtin_worker(db.pool().clone(), 4);
    let client = Client::new(db.pool().clone()).with_registry(builtin());

    run_to_completion(
        &client,
        sync::BACKFILL,
        &input(&toml_a, &a, Stream::Contacts),
    )
    .await;
    run_to_completion(
        &client,
        sync::BACKFILL,
        &input(&toml_b, &b, Stream::Contacts),
    )
    .await;
    // Vendor B deletes a tenth of its contacts and adds a field to the rest.
    b.vendor()
        .mutate(Stream::Contacts, Mutation::Delete { count: 20 })
        .unwrap();
    b.vendor()
        .mutate(
            Stream::Contacts,
            Mutation::RemoveField {
                field: "phone".into(),
                touch: true,
            },
        )
        .unwrap();
    run_to_completion(
        &client,
        sync::INCREMENTAL,
        &input(&toml_b, &b, Stream::Contacts),
    )
    .await;
    let reconciled = run_to_completion(
        &client,
        sync::RECONCILE,
        &input(&toml_b, &b, Stream::Contacts),
    )
    .await;
    worker.shutdown().await;
    assert_eq!(
        reconciled.output.as_ref().unwrap()["outcome"]["deleted"],
        20
    );

    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM crm_a.contacts WHERE _deleted_at IS NULL"
        )
        .await,
        300,
        "B's reconcile marked none of A's rows deleted"
    );
    assert_eq!(
        landed(&db, "crm-a", "crm_a", Stream::Contacts).await,
        a.vendor().checksum(Stream::Contacts)
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM crm_b.contacts WHERE _deleted_at IS NOT NULL"
        )
        .await,
        20
    );
    // What B's drift did is B's: its quarantined records and alerts name it.
    let (kinds, sources): (Vec<String>, Vec<String>) = sqlx::query_as::<_, (String, String)>(
        "SELECT DISTINCT kind, source FROM cairn.alerts ORDER BY 1, 2",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    .into_iter()
    .unzip();
    assert_eq!(kinds, ["schema_drift"]);
    assert_eq!(sources, ["crm-b"]);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.quarantine WHERE source <> 'crm-b'"
        )
        .await,
        0
    );
    let cursors: Vec<(String, String)> = sqlx::query_as(
        "SELECT source, schema_name FROM cairn.sync_cursors WHERE stream = 'contacts' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        cursors,
        [
            ("crm-a".to_owned(), "crm_a".to_owned()),
            ("crm-b".to_owned(), "crm_b".to_owned())
        ]
    );

    // A table written by one source refuses another, even through the library.
    let mut conn = db.pool().acquire().await.unwrap();
    let err = Warehouse::new("crm-b", "crm_a")
        .unwrap()
        .checksum(&mut conn, "contacts")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("written by source \"crm-a\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_sync_refuses_a_second_source_on_the_same_table_naming_both() {
    let db = TestDb::new().await;
    let url = db.url();
    let sandbox = vendor(3, 50).await;
    let dir = std::env::temp_dir().join(format!("cairn-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str| {
        let path = dir.join(format!("{name}.toml"));
        let mut out = std::fs::File::create(&path).unwrap();
        out.write_all(source_toml(name, "[warehouse]\nschema = \"shared\"\n").as_bytes())
            .unwrap();
        path.display().to_string()
    };
    let (first, second) = (file("crm-first"), file("crm-second"));
    let worker = builtin_worker(db.pool().clone(), 2);
    let base = sandbox.base_url().to_owned();
    let synced = run(
        &url,
        &[
            "sync",
            &first,
            "--stream",
            "deals",
            "--base-url",
            &base,
            "--wait",
        ],
    );
    assert_eq!(
        synced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM shared.deals").await,
        50,
        "the schema named in [warehouse]"
    );

    let refused = run(&url, &["sync", &second, "--base-url", &base]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`crm-second`") && err.contains("`crm-first`") && err.contains("shared.deals"),
        "{err}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM cairn.runs").await,
        1,
        "nothing was started"
    );
    // With a schema of its own, the second source syncs.
    let own = run(
        &url,
        &[
            "sync",
            &second,
            "--stream",
            "deals",
            "--base-url",
            &base,
            "--schema",
            "second",
            "--wait",
        ],
    );
    assert_eq!(
        own.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert_eq!(count(&db, "SELECT count(*) FROM second.deals").await, 50);
    let bad = run(&url, &["sync", &second, "--schema", "Not-A-Schema"]);
    assert_eq!(bad.status.code(), Some(2));
    worker.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Fills a database at migration 9 the way cairn did before sources had schemas: every
/// table in `warehouse`, registered by (schema, stream) only.
async fn old_layout(db: &TestDb, contacts: &[Value]) {
    let pool = db.pool();
    for sql in [
        "CREATE SCHEMA warehouse",
        r#"CREATE TABLE warehouse.contacts (
               id text COLLATE "C" PRIMARY KEY, _raw jsonb NOT NULL,
               _synced_at timestamptz NOT NULL, _source_updated_at timestamptz,
               _deleted_at timestamptz, email text)"#,
        r#"CREATE TABLE warehouse.deals (
               id text COLLATE "C" PRIMARY KEY, _raw jsonb NOT NULL,
               _synced_at timestamptz NOT NULL, _source_updated_at timestamptz,
               _deleted_at timestamptz)"#,
        "INSERT INTO cairn.warehouse_tables (schema_name, stream, table_name, primary_key, version)
         VALUES ('warehouse', 'contacts', 'contacts', 'id', nextval('cairn.warehouse_shape_version')),
                ('warehouse', 'deals', 'deals', 'id', nextval('cairn.warehouse_shape_version'))",
        "INSERT INTO cairn.warehouse_columns (schema_name, stream, field, column_name, column_type)
         VALUES ('warehouse', 'contacts', 'id', 'id', 'text'),
                ('warehouse', 'contacts', 'email', 'email', 'text'),
                ('warehouse', 'deals', 'id', 'id', 'text')",
        // Two sources once synced `deals` into the one table.
        "INSERT INTO warehouse.deals (id, _raw, _synced_at)
         SELECT n::text, jsonb_build_object('id', n::text), now() FROM generate_series(1, 40) n",
        "INSERT INTO cairn.sync_cursors (source, stream, watermark)
         VALUES ('crm-x', 'deals', '2026-01-01T00:00:00Z'), ('crm-y', 'deals', '2026-01-02T00:00:00Z')",
        "INSERT INTO cairn.quarantine (schema_name, stream, record_id, kind, reason, record, synced_at)
         VALUES ('warehouse', 'contacts', 'q1', 'type_change', 'type change of field \"age\"',
                 '{\"id\": \"q1\"}', now())",
        "INSERT INTO cairn.alerts (kind, stream, detail, message)
         VALUES ('schema_drift', 'contacts', 'type change of field \"age\"', 'old alert')",
        "INSERT INTO cairn.schedules (name, cron, timezone, workflow, input, next_fire_at)
         VALUES ('sync:sandbox-stripe:contacts:incremental', '* * * * *', 'UTC', 'sync.incremental',
                 '{\"stream\": \"contacts\", \"warehouse_schema\": \"warehouse\"}', now() + interval '1 day')",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    let mut watermark = String::new();
    for record in contacts {
        let updated = record["updated_at"].as_str().unwrap();
        watermark = watermark.max(updated.to_owned());
        sqlx::query(
            "INSERT INTO warehouse.contacts (id, _raw, _synced_at, _source_updated_at, email)
             VALUES ($1, $2, now(), $3::timestamptz, $2->>'email')",
        )
        .bind(record["id"].as_str().unwrap())
        .bind(record)
        .bind(updated)
        .execute(pool)
        .await
        .unwrap();
    }
    // As the old incremental left it: just past the newest change it had read.
    let watermark = (chrono::DateTime::parse_from_rfc3339(&watermark).unwrap()
        + chrono::Duration::seconds(1))
    .to_rfc3339();
    sqlx::query(
        "INSERT INTO cairn.sync_cursors (source, stream, watermark, records)
         VALUES ('sandbox-stripe', 'contacts', $1, $2)",
    )
    .bind(&watermark)
    .bind(contacts.len() as i64)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_old_layout_migrates_without_losing_a_row() {
    let db = TestDb::migrated_up_to(9).await;
    let sandbox = vendor(4, 120).await;
    old_layout(&db, &sandbox.vendor().records(Stream::Contacts)).await;
    cairn::migrate(db.pool()).await.unwrap();

    // The table one source wrote moved, whole, to that source's schema.
    assert_eq!(
        count(&db, "SELECT count(*) FROM sandbox_stripe.contacts").await,
        120
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'warehouse' AND tablename = 'contacts'").await,
        0
    );
    let registry: (String, Option<String>) = sqlx::query_as(
        "SELECT schema_name, source FROM cairn.warehouse_tables WHERE stream = 'contacts'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        registry,
        (
            "sandbox_stripe".to_owned(),
            Some("sandbox-stripe".to_owned())
        )
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.warehouse_columns WHERE schema_name = 'sandbox_stripe'"
        )
        .await,
        2
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM cairn.quarantine WHERE schema_name = 'sandbox_stripe' AND source = 'sandbox-stripe'").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.alerts WHERE source = 'sandbox-stripe'"
        )
        .await,
        1
    );
    // The table two sources shared stays as it was; they start over apart, loudly.
    assert_eq!(count(&db, "SELECT count(*) FROM warehouse.deals").await, 40);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.sync_cursors WHERE stream = 'deals' AND watermark IS NULL"
        )
        .await,
        2
    );
    let shared: String =
        sqlx::query_scalar("SELECT message FROM cairn.alerts WHERE kind = 'shared_table'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(shared.contains("crm-x, crm-y"), "{shared}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.schedules WHERE input ? 'warehouse_schema'"
        )
        .await,
        0
    );

    // The next incremental carries on in the moved table from the old watermark.
    let vendor = sandbox.vendor();
    vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 10 })
        .unwrap();
    vendor
        .mutate(Stream::Contacts, Mutation::Create { count: 5 })
        .unwrap();
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let synced = run_to_completion(
        &client,
        sync::INCREMENTAL,
        &input(STRIPE, &sandbox, Stream::Contacts),
    )
    .await;
    worker.shutdown().await;
    assert_eq!(synced.summary.status, RunStatus::Completed);
    assert_eq!(
        synced.output.as_ref().unwrap()["records"],
        json!(15),
        "only what changed since the old watermark"
    );
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.checksum(Stream::Contacts)
    );
}
