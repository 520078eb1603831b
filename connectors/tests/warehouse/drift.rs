//! Schema drift: removed fields, type changes and renames go to quarantine with their
//! reason and an alert; the table keeps its shape; the rest of the page lands. A field
//! some records of a page omit is not a removed field: those records land with NULL.

use serde_json::{Value, json};

use crate::common::{alerts, columns, contacts, land, quarantine, rows, setup};

fn contact(id: &str, phone: Value, score: Value) -> Value {
    json!({"id": id, "phone": phone, "score": score, "updated_at": "2026-03-01T00:00:00Z"})
}

/// Lands the first page that fixes the shape: phone text, score bigint.
async fn shaped() -> (
    cairn_testkit::TestDb,
    cairn_connectors::warehouse::Warehouse,
) {
    let (db, wh) = setup().await;
    let page = [
        contact("1", json!("+1-555-0001"), json!(10)),
        contact("2", json!(null), json!(20)),
    ];
    land(&db, &wh, &contacts(), &page).await;
    (db, wh)
}

/// Asserts the drift case end to end: `bad` is quarantined with `reason`, `good` lands,
/// the shape stays, one alert is raised and a second occurrence bumps its count.
async fn assert_quarantined(bad: &[Value], good: &[Value], reason: &str, kind: &str) {
    let (db, wh) = shaped().await;
    let shape = columns(&db, "contacts").await;
    let page: Vec<Value> = bad.iter().chain(good).cloned().collect();
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!(
        (report.upserted, report.quarantined),
        (good.len() as u64, bad.len() as u64),
        "{reason}"
    );
    assert!(report.columns_added.is_empty(), "{reason}");
    assert_eq!(report.alerts, [reason]);
    assert_eq!(
        columns(&db, "contacts").await,
        shape,
        "the table keeps its shape"
    );
    let ids: Vec<Value> = rows(&db).await.iter().map(|r| r["id"].clone()).collect();
    let expected: Vec<Value> = [json!("1"), json!("2")]
        .into_iter()
        .chain(good.iter().map(|g| g["id"].clone()))
        .collect();
    assert_eq!(ids, expected, "the rest of the page landed");
    let q = quarantine(&db).await;
    let expected: Vec<_> = bad
        .iter()
        .map(|b| {
            let id = b["id"].as_str().map(str::to_owned);
            (id, kind.to_owned(), reason.to_owned())
        })
        .collect();
    assert_eq!(q, expected);
    let record: Value =
        sqlx::query_scalar("SELECT record::jsonb FROM cairn.quarantine ORDER BY record_id LIMIT 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(record, bad[0], "the quarantined record is kept whole");
    let expected = (
        "schema_drift".to_owned(),
        "contacts".to_owned(),
        reason.to_owned(),
        1,
    );
    assert_eq!(alerts(&db).await, std::slice::from_ref(&expected));

    // The same drift again: one alert with a higher count, still one quarantine row
    // per record, which counts the times it was met.
    land(&db, &wh, &contacts(), &page).await;
    assert_eq!(alerts(&db).await, [(expected.0, expected.1, expected.2, 2)]);
    assert_eq!(quarantine(&db).await.len(), bad.len());
    let times: Vec<i64> = sqlx::query_scalar("SELECT times FROM cairn.quarantine")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(times.iter().all(|t| *t == 2), "{times:?}");
    let listed = cairn_connectors::warehouse::list_alerts(db.pool())
        .await
        .unwrap();
    assert!(
        listed[0].message.contains("keeps its shape"),
        "{}",
        listed[0].message
    );
    assert!(listed[0].last_seen >= listed[0].first_seen);
}

fn without_phone(id: &str, extra: Option<(&str, Value)>) -> Value {
    let mut record = json!({"id": id, "score": 90, "updated_at": "2026-03-01T00:00:00Z"});
    if let Some((name, value)) = extra {
        record[name] = value;
    }
    record
}

#[tokio::test]
async fn a_field_no_record_of_a_page_carries_is_a_removed_field() {
    let bad = [without_phone("10", None), without_phone("9", None)];
    assert_quarantined(&bad, &[], r#"removed field "phone""#, "removed_field").await;
}

#[tokio::test]
async fn a_field_some_records_omit_is_optional_not_removed() {
    let (db, wh) = shaped().await;
    let page = [
        without_phone("3", None),
        contact("4", json!("+1-555-0004"), json!(40)),
    ];
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!((report.upserted, report.quarantined), (2, 0));
    let optional: bool =
        sqlx::query_scalar("SELECT optional FROM cairn.warehouse_columns WHERE field = 'phone'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(optional, "the registry remembers that records omit it");
    // From now on even a page where no record carries it lands.
    let report = land(&db, &wh, &contacts(), &[without_phone("5", None)]).await;
    assert_eq!((report.upserted, report.quarantined), (1, 0));
    let phones: Vec<Option<String>> =
        sqlx::query_scalar("SELECT phone FROM warehouse.contacts ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        phones,
        [
            Some("+1-555-0001".to_owned()),
            None,
            None,
            Some("+1-555-0004".to_owned()),
            None
        ]
    );
    assert!(quarantine(&db).await.is_empty());
}

#[tokio::test]
async fn a_type_change_is_quarantined() {
    let bad = contact("9", json!("+1-555-0009"), json!("ninety"));
    let good = contact("3", json!("+1-555-0003"), json!(30));
    assert_quarantined(
        &[bad],
        &[good],
        r#"type change of field "score": the column is bigint, the value is string"#,
        "type_change",
    )
    .await;
}

#[tokio::test]
async fn a_rename_is_quarantined() {
    let bad = [
        without_phone("10", Some(("mobile", json!("+1-555-0010")))),
        without_phone("9", Some(("mobile", json!("+1-555-0009")))),
    ];
    assert_quarantined(
        &bad,
        &[],
        r#"rename of field "phone" to "mobile""#,
        "rename",
    )
    .await;
}

#[tokio::test]
async fn a_missing_field_beside_a_new_field_of_another_type_is_a_removal() {
    let bad = [
        without_phone("10", Some(("mobile", json!(true)))),
        without_phone("9", Some(("mobile", json!(false)))),
    ];
    assert_quarantined(&bad, &[], r#"removed field "phone""#, "removed_field").await;
}

#[tokio::test]
async fn records_the_warehouse_cannot_hold_are_quarantined_as_invalid() {
    let (db, wh) = shaped().await;
    let page = [
        json!("not an object"),
        json!({"phone": null, "score": 1, "updated_at": "2026-03-01T00:00:00Z"}),
        json!({"id": {"nested": 1}, "phone": null, "score": 1, "updated_at": "2026-03-01T00:00:00Z"}),
        contact("3", json!("+1-555-0003"), json!(30)),
    ];
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!((report.upserted, report.quarantined), (1, 3));
    let kinds: Vec<String> = quarantine(&db).await.into_iter().map(|q| q.1).collect();
    assert_eq!(kinds, ["invalid_record"; 3]);
    let details: Vec<String> = alerts(&db).await.into_iter().map(|a| a.2).collect();
    assert_eq!(
        details,
        [
            "record is not a JSON object",
            r#"record without a string or number primary key "id""#
        ]
    );
}

#[tokio::test]
async fn a_drifted_stream_on_a_new_table_still_lands_its_good_records() {
    let (db, wh) = setup().await;
    // The first record fixes `score` as bigint; the second one's text does not fit.
    let page = [
        contact("1", json!(null), json!(1)),
        contact("2", json!(null), json!("two")),
    ];
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!((report.upserted, report.quarantined), (1, 1));
    assert_eq!(rows(&db).await.len(), 1);
}

#[tokio::test]
async fn an_object_becoming_an_array_is_a_type_change_after_a_reload_too() {
    let (db, wh) = setup().await;
    let record = |id: &str, address: Value| json!({"id": id, "address": address, "updated_at": "2026-03-01T00:00:00Z"});
    land(
        &db,
        &wh,
        &contacts(),
        &[record("1", json!({"city": "Lyon"}))],
    )
    .await;

    // A new sink knows the column's kind from the registry, not from its own history.
    let fresh = cairn_connectors::warehouse::Warehouse::new("crm", "warehouse").unwrap();
    let page = [
        record("2", json!([{"city": "Lyon"}])),
        record("3", json!({"city": "Porto"})),
    ];
    let report = land(&db, &fresh, &contacts(), &page).await;
    assert_eq!((report.upserted, report.quarantined), (1, 1));
    assert_eq!(
        report.alerts,
        [r#"type change of field "address": the column is jsonb (objects), the value is array"#]
    );
    assert_eq!(
        columns(&db, "contacts").await[5],
        ("address".to_owned(), "jsonb".to_owned())
    );
}
