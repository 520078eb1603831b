//! Hostile field and stream names: nothing vendor-supplied breaks out of its identifier.

use cairn_connectors::warehouse::{StreamSpec, Warehouse, quote_ident};
use serde_json::{Map, Value, json};

use crate::common::{alerts, columns, contacts, land, quarantine, setup};

/// The registry's field → column mapping of `contacts`.
async fn mapping(db: &cairn_testkit::TestDb) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT field, column_name FROM cairn.warehouse_columns
          WHERE stream = 'contacts' ORDER BY field",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn hostile_field_names_become_safe_distinct_columns() {
    let (db, wh) = setup().await;
    sqlx::query("CREATE TABLE public.t (x int)")
        .execute(db.pool())
        .await
        .unwrap();
    let injection = r#"x"; DROP TABLE t; --"#;
    let long = "n".repeat(300);
    let prefix = "p".repeat(63);
    let (beyond_a, beyond_b) = (format!("{prefix}_a"), format!("{prefix}_b"));
    let mut record = Map::new();
    record.insert("id".to_owned(), json!("1"));
    record.insert(injection.to_owned(), json!("boom"));
    record.insert(long.clone(), json!(300));
    record.insert(beyond_a.clone(), json!("a"));
    record.insert(beyond_b.clone(), json!("b"));
    record.insert(String::new(), json!("empty"));
    record.insert("_raw".to_owned(), json!("vendor's own _raw"));
    record.insert("Email".to_owned(), json!("upper"));
    record.insert("email".to_owned(), json!("lower"));
    let record = Value::Object(record);

    let report = land(
        &db,
        &wh,
        &StreamSpec::new("contacts", "id"),
        std::slice::from_ref(&record),
    )
    .await;
    assert_eq!((report.upserted, report.quarantined), (1, 0));
    assert_eq!(report.columns_added.len(), 8);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.t') IS NOT NULL")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(exists, "the injection stayed inside its identifier");

    let map = mapping(&db).await;
    let columns_of: std::collections::HashMap<&str, &str> =
        map.iter().map(|(f, c)| (f.as_str(), c.as_str())).collect();
    assert_eq!(
        columns_of[injection], injection,
        "a short hostile name is kept, quoted"
    );
    assert_eq!(columns_of["Email"], "Email");
    assert_eq!(columns_of["email"], "email");
    for mapped in [&long, &beyond_a, &beyond_b, "", "_raw"] {
        let column = columns_of[mapped];
        assert_ne!(column, mapped, "{mapped:?} is mapped");
        assert!(
            column.len() <= 63 && quote_ident(column).is_ok(),
            "{column}"
        );
    }
    assert_ne!(columns_of[beyond_a.as_str()], columns_of[beyond_b.as_str()]);
    let table: Vec<String> = columns(&db, "contacts")
        .await
        .into_iter()
        .map(|c| c.0)
        .collect();
    for (_, column) in &map {
        assert!(table.contains(column), "{column} exists");
    }

    // Every value sits in its own column, and `_raw` is still the whole record.
    for (field, value) in record.as_object().unwrap() {
        let column = quote_ident(columns_of[field.as_str()]).unwrap();
        let stored: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT to_jsonb({column}) FROM warehouse.contacts"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(&stored, value, "{field:?}");
    }
    let raw: Value = sqlx::query_scalar("SELECT _raw FROM warehouse.contacts")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(raw, record);

    // The mapping is stable: landing again finds the same columns and adds none.
    let fresh = Warehouse::new("crm", "warehouse").unwrap();
    let again = land(&db, &fresh, &StreamSpec::new("contacts", "id"), &[record]).await;
    assert!(again.columns_added.is_empty());
    assert_eq!(mapping(&db).await, map);
}

#[tokio::test]
async fn a_nul_is_replaced_where_postgres_cannot_hold_it_and_a_nul_key_is_quarantined() {
    let (db, wh) = setup().await;
    let clean = json!({"id": "1", "a": "x", "updated_at": "2026-03-01T00:00:00Z"});
    let nul_name = json!({"id": "2", "a": "x", "b\u{0}c": 1, "updated_at": "2026-03-01T00:00:00Z"});
    let nul_value = json!({"id": "3", "a": "x\u{0}y", "updated_at": "2026-03-01T00:00:00Z"});
    let nul_key = json!({"id": "4\u{0}", "a": "x", "updated_at": "2026-03-01T00:00:00Z"});
    let report = land(
        &db,
        &wh,
        &contacts(),
        &[clean, nul_name, nul_value, nul_key],
    )
    .await;
    assert_eq!(
        (report.upserted, report.quarantined, report.repaired),
        (3, 1, 2)
    );
    let landed: Vec<(String, Option<String>, Value)> =
        sqlx::query_as("SELECT id, a, _raw FROM warehouse.contacts ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        landed[2].1.as_deref(),
        Some("x\u{fffd}y"),
        "the documented rule"
    );
    assert_eq!(landed[1].2["b\u{fffd}c"], 1, "field names too");
    let q = quarantine(&db).await;
    let reasons: Vec<String> = q.into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(
        reasons,
        [r#"record whose primary key "id" holds a NUL character"#]
    );
    let kinds: Vec<String> = alerts(&db).await.into_iter().map(|a| a.0).collect();
    assert_eq!(kinds, ["invalid_record", "repaired_record"]);
    let kept: String = sqlx::query_scalar("SELECT record::text FROM cairn.quarantine")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(kept.contains(r"4\u0000"), "kept as sent: {kept}");
}

#[tokio::test]
async fn hostile_stream_and_schema_names_stay_identifiers() {
    let db = cairn_testkit::TestDb::new().await;
    assert!(Warehouse::new("crm", "").is_err());
    assert!(Warehouse::new("crm", &"s".repeat(64)).is_err());
    let wh = Warehouse::new("crm", r#"wh"; DROP SCHEMA cairn CASCADE; --"#).unwrap();
    let spec = StreamSpec::new(r#"t"; DROP TABLE cairn.alerts; --"#, "id");
    land(&db, &wh, &spec, &[json!({"id": 1, "v": true})]).await;
    let count: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "wh""; DROP SCHEMA cairn CASCADE; --"."t""; DROP TABLE cairn.alerts; --""#,
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(count, 1);
    cairn_connectors::warehouse::list_alerts(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let sum = wh.checksum(&mut conn, &spec.name).await;
    assert!(
        sum.is_err(),
        "a numeric id has no sandbox checksum: {sum:?}"
    );
}

#[tokio::test]
async fn oversized_keys_and_reasons_cannot_fail_a_page() {
    let (db, wh) = setup().await;
    // Without a cursor field: only the fields and the key are at stake here.
    let keyed = StreamSpec::new("contacts", "id");
    let mut wide = Map::new();
    wide.insert("id".to_owned(), json!("1"));
    for i in 0..200 {
        wide.insert(format!("{}{i}", "f".repeat(100)), json!(i));
    }
    land(&db, &wh, &keyed, &[Value::Object(wide)]).await;

    // Every one of the 200 fields is missing: the reason lists some and counts the rest.
    let bare = json!({"id": "2"});
    let huge_key = json!({"id": "k".repeat(5000)});
    let report = land(&db, &wh, &keyed, &[bare, huge_key]).await;
    assert_eq!((report.upserted, report.quarantined), (0, 2));
    let q = quarantine(&db).await;
    assert_eq!(q.len(), 2);
    let removed = &q[0];
    assert_eq!(removed.0.as_deref(), Some("2"));
    assert!(removed.2.len() < 1300, "{}", removed.2.len());
    assert!(removed.2.ends_with(" more"), "{}", removed.2);
    assert_eq!(q[1].0, None);
    assert!(q[1].2.contains("longer than 1024 bytes"), "{}", q[1].2);
    assert_eq!(
        report.alerts.len(),
        201,
        "one alert per removed field, one for the key"
    );
}
