//! Whatever a record holds, the warehouse equals the vendor or says why not: numbers
//! keep every digit, one bad value never sinks a page, what PostgreSQL cannot store is
//! repaired by one documented rule or quarantined once with its reason. Each case is a
//! sandbox knob, synced over real HTTP into real Postgres, then compared by checksum.

mod support;

use cairn::Client;
use cairn::sandbox::{Mutation, Quirks, SandboxConfig, Stream};
use cairn::workflows::sync;
use cairn_testkit::{TestDb, run_to_completion};
use serde_json::{Value, json};
use support::builtin;
use support::vendor::{HUBSPOT, STRIPE, checksum, count, input, landed, start};

fn set_raw(field: &str, json: &str, count: Option<usize>) -> Mutation {
    Mutation::SetRawField {
        field: field.to_owned(),
        json: json.to_owned(),
        count,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_beyond_f64_land_with_the_vendors_exact_digits() {
    let db = TestDb::new().await;
    let sandbox = start(SandboxConfig {
        records_per_stream: 250,
        ..SandboxConfig::default()
    })
    .await;
    let vendor = sandbox.vendor();
    let exact = [
        ("huge", "12345678901234567890123"),
        ("above_i64", "9223372036854775809"),
        ("decimal", "0.123456789012345678901234567890"),
        ("scaled", "1.50"),
    ];
    for (field, digits) in exact {
        vendor
            .mutate(Stream::Deals, set_raw(field, digits, None))
            .unwrap();
    }
    let worker = support::builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    run_to_completion(
        &client,
        sync::BACKFILL,
        &input(STRIPE, &sandbox, Stream::Deals),
    )
    .await;
    // And through an incremental: a different value on a few records.
    vendor
        .mutate(
            Stream::Deals,
            set_raw("huge", "-98765432109876543210987", Some(5)),
        )
        .unwrap();
    run_to_completion(
        &client,
        sync::INCREMENTAL,
        &input(STRIPE, &sandbox, Stream::Deals),
    )
    .await;
    worker.shutdown().await;

    for (field, digits) in exact {
        let sql = format!(
            "SELECT count(*) FROM sandbox_stripe.deals
              WHERE {field}::text = '{digits}' AND _raw->>'{field}' = '{digits}'"
        );
        let expected = if field == "huge" { 245 } else { 250 };
        assert_eq!(
            count(&db, &sql).await,
            expected,
            "{field}: typed column and _raw keep {digits}"
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sandbox_stripe.deals
              WHERE huge::text = '-98765432109876543210987'"
        )
        .await,
        5
    );
    let column: String = sqlx::query_scalar(
        "SELECT data_type::text FROM information_schema.columns
          WHERE table_schema = 'sandbox_stripe' AND table_name = 'deals' AND column_name = 'huge'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(column, "numeric");
    // The checkpoint of a fetched page holds the digits too, so a replay lands them.
    assert!(
        count(
            &db,
            "SELECT count(*) FROM cairn.steps
              WHERE name LIKE 'fetch page%' AND output::text LIKE '%12345678901234567890123%'"
        )
        .await
            > 0
    );
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Deals).await,
        vendor.checksum(Stream::Deals)
    );
}

/// The vendor's records with the warehouse's documented repair applied: `field` of the
/// records `ids` holds `value` (what U+FFFD made of a NUL or a lone surrogate).
fn repaired(mut records: Vec<Value>, ids: &[String], field: &str, value: &str) -> Vec<Value> {
    for record in &mut records {
        if ids.iter().any(|id| record["id"] == json!(id)) {
            record[field] = json!(value);
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_value_never_sinks_a_page_and_what_cannot_land_is_quarantined_once() {
    let db = TestDb::new().await;
    let sandbox = start(SandboxConfig {
        records_per_stream: 300,
        quirks: Quirks {
            bom: true,
            omit_nulls: true,
            ..Quirks::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let vendor = sandbox.vendor();
    let contacts = Stream::Contacts;
    let cut = vendor
        .mutate(
            contacts,
            set_raw("bio", r#""half an emoji \ud83d""#, Some(3)),
        )
        .unwrap()
        .ids;
    let nul = vendor
        .mutate(contacts, set_raw("nickname", r#""a\u0000b""#, Some(2)))
        .unwrap()
        .ids;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let too_deep = vendor
        .mutate(contacts, set_raw("tree", &deep, Some(1)))
        .unwrap()
        .ids;
    let keyless = vendor
        .mutate(contacts, set_raw("id", "null", Some(1)))
        .unwrap()
        .ids;
    let wide = vendor
        .mutate(
            contacts,
            Mutation::AddFields {
                count: 1,
                fields: 10_000,
            },
        )
        .unwrap()
        .ids;

    let worker = support::builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts_input = input(HUBSPOT, &sandbox, contacts);
    let first = run_to_completion(&client, sync::BACKFILL, &contacts_input).await;
    // A full read again: what cannot land is met again, and kept once.
    let second = run_to_completion(&client, sync::BACKFILL, &contacts_input).await;
    worker.shutdown().await;
    for run in [&first, &second] {
        let out = run.output.as_ref().unwrap();
        assert_eq!(out["records"], 300, "every record of every page was read");
        assert_eq!(
            out["quarantined"], 2,
            "the over-deep and the keyless record"
        );
    }

    // What landed equals the vendor, but for the documented repairs and the two
    // quarantined records.
    let set_aside: Vec<String> = too_deep.iter().chain(&keyless).cloned().collect();
    let mut expected: Vec<Value> = vendor
        .records(contacts)
        .into_iter()
        .filter(|r| r["id"].is_string() && !set_aside.iter().any(|id| r["id"] == json!(id)))
        .collect();
    expected = repaired(expected, &cut, "bio", "half an emoji \u{fffd}");
    expected = repaired(expected, &nul, "nickname", "a\u{fffd}b");
    assert_eq!(expected.len(), 298);
    assert_eq!(
        landed(&db, "sandbox-hubspot", "sandbox_hubspot", contacts).await,
        checksum(&expected)
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM sandbox_hubspot.contacts").await,
        298
    );

    let quarantined: Vec<(Option<String>, String, i64)> = sqlx::query_as(
        "SELECT record_id, reason, times FROM cairn.quarantine
          WHERE source = 'sandbox-hubspot' ORDER BY reason",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        quarantined,
        [
            (
                None,
                "record without a string or number primary key \"id\"".to_owned(),
                2
            ),
            (
                None,
                "the record is nested deeper than 128 levels".to_owned(),
                2
            ),
        ],
        "each kept once, counted twice"
    );
    let mut kinds: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT kind FROM cairn.alerts WHERE source = 'sandbox-hubspot' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    kinds.sort();
    assert_eq!(
        kinds,
        ["invalid_record", "repaired_record", "too_many_fields"]
    );
    // Nulls the vendor left out are not removed fields: nothing drifted.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM cairn.quarantine WHERE kind <> 'invalid_record'"
        )
        .await,
        0
    );
    // The wide record landed whole in `_raw`; columns stop at the cap.
    let wide_raw = count(
        &db,
        &format!(
            "SELECT count(*) FROM jsonb_object_keys((SELECT _raw FROM sandbox_hubspot.contacts
              WHERE id = '{}'))",
            wide[0]
        ),
    )
    .await;
    assert!(wide_raw > 10_000, "{wide_raw}");
    let columns = count(
        &db,
        "SELECT count(*) FROM information_schema.columns
          WHERE table_schema = 'sandbox_hubspot' AND table_name = 'contacts'",
    )
    .await;
    assert!(
        (400..=410).contains(&columns),
        "400 fields get columns, beside the key and cairn's own: {columns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_that_postgres_would_merge_get_distinct_stable_columns() {
    let long = "x".repeat(63);
    let names = [
        "Email".to_owned(),
        "email".to_owned(),
        "a.b".to_owned(),
        "a_b".to_owned(),
        String::new(),
        format!("{long}1"),
        format!("{long}2"),
        long.clone(),
        "_raw".to_owned(),
    ];
    let mut mappings = Vec::new();
    for reversed in [false, true] {
        let db = TestDb::new().await;
        let sandbox = start(SandboxConfig {
            records_per_stream: 20,
            ..SandboxConfig::default()
        })
        .await;
        let vendor = sandbox.vendor();
        let order: Vec<&String> = if reversed {
            names.iter().rev().collect()
        } else {
            names.iter().collect()
        };
        for (n, name) in order.into_iter().enumerate() {
            vendor
                .mutate(Stream::Deals, set_raw(name, &n.to_string(), None))
                .unwrap();
        }
        let worker = support::builtin_worker(db.pool().clone(), 1);
        let client = Client::new(db.pool().clone()).with_registry(builtin());
        run_to_completion(
            &client,
            sync::BACKFILL,
            &input(STRIPE, &sandbox, Stream::Deals),
        )
        .await;
        worker.shutdown().await;
        assert_eq!(
            landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Deals).await,
            vendor.checksum(Stream::Deals)
        );
        let mut mapping: Vec<(String, String)> = sqlx::query_as(
            "SELECT field, column_name FROM cairn.warehouse_columns
              WHERE schema_name = 'sandbox_stripe' AND stream = 'deals' AND field = ANY($1)",
        )
        .bind(&names)
        .fetch_all(db.pool())
        .await
        .unwrap();
        mapping.sort();
        let columns: std::collections::BTreeSet<&String> = mapping.iter().map(|m| &m.1).collect();
        assert_eq!(columns.len(), names.len(), "distinct: {mapping:?}");
        // Each column holds its own field's value.
        for (field, column) in &mapping {
            let sql = format!(
                "SELECT count(*) FROM sandbox_stripe.deals WHERE \"{column}\"::text = _raw->>$1",
            );
            let same: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(field)
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(same, 20, "{field:?} -> {column:?}");
        }
        mappings.push(mapping);
    }
    assert_eq!(
        mappings[0], mappings[1],
        "stable whatever the order fields arrive in"
    );
    let by_field: std::collections::BTreeMap<&str, &str> = mappings[0]
        .iter()
        .map(|(f, c)| (f.as_str(), c.as_str()))
        .collect();
    assert_eq!(by_field["Email"], "Email", "case is kept");
    assert_eq!(by_field["a.b"], "a.b");
    assert!(by_field[""].starts_with("f_"), "{}", by_field[""]);
    assert_ne!(by_field["_raw"], "_raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_list_show_retry_and_discard_from_the_cli() {
    let db = TestDb::new().await;
    let url = db.url();
    let sandbox = start(SandboxConfig {
        records_per_stream: 120,
        ..SandboxConfig::default()
    })
    .await;
    let worker = support::builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(HUBSPOT, &sandbox, Stream::Contacts);
    run_to_completion(&client, sync::BACKFILL, &contacts).await;
    let bad = sandbox
        .vendor()
        .mutate(Stream::Contacts, set_raw("score", r#""ninety""#, Some(2)))
        .unwrap()
        .ids;
    run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    worker.shutdown().await;

    let json = |args: &[&str]| -> Value {
        let out = support::run(&url, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    };
    let listed = json(&[
        "quarantine",
        "list",
        "--source",
        "sandbox-hubspot",
        "--json",
    ]);
    let entries = listed.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e["kind"] == "type_change" && e["times"] == 1)
    );
    let ids: Vec<String> = entries.iter().map(|e| e["id"].to_string()).collect();
    let shown = json(&["quarantine", "show", &ids[0], "--json"]);
    assert_eq!(shown["record"]["score"], "ninety", "the body as sent");
    let record_id = shown["record_id"].as_str().unwrap().to_owned();
    assert!(bad.contains(&record_id));

    // Still wrong as stored: refused, and nothing changes.
    let again = support::run(&url, &["quarantine", "retry", &ids[0]]);
    assert_eq!(again.status.code(), Some(1));
    let mut corrected = shown["record"].clone();
    corrected["score"] = json!(90);
    let retried = json(&[
        "quarantine",
        "retry",
        &format!("record:{}", ids[0]),
        "--record",
        &corrected.to_string(),
        "--json",
    ]);
    assert_eq!(retried["landed"], true);
    let score = count(
        &db,
        &format!("SELECT score FROM sandbox_hubspot.contacts WHERE id = '{record_id}'"),
    )
    .await;
    assert_eq!(score, 90);
    let discarded = json(&["quarantine", "discard", &ids[1], "--json"]);
    assert_eq!(discarded["discarded"], format!("record:{}", ids[1]));
    assert_eq!(json(&["quarantine", "list", "--json"]), json!([]));
    let unknown = support::run(&url, &["quarantine", "show", "999999"]);
    assert_eq!(unknown.status.code(), Some(2));
    let nonsense = support::run(&url, &["quarantine", "discard", "record:x"]);
    assert_eq!(nonsense.status.code(), Some(2));
}
