//! Schema drift: removed fields, type changes and renames go to quarantine with their
//! reason and an alert; the table keeps its shape; the rest of the page lands.

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
async fn assert_quarantined(bad: Value, reason: &str, kind: &str) {
    let (db, wh) = shaped().await;
    let shape = columns(&db, "contacts").await;
    let good = contact("3", json!("+1-555-0003"), json!(30));
    let page = [bad.clone(), good];
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!((report.upserted, report.quarantined), (1, 1), "{reason}");
    assert!(report.columns_added.is_empty(), "{reason}");
    assert_eq!(report.alerts, [reason]);
    assert_eq!(
        columns(&db, "contacts").await,
        shape,
        "the table keeps its shape"
    );
    let ids: Vec<Value> = rows(&db).await.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        ids,
        [json!("1"), json!("2"), json!("3")],
        "the rest of the page landed"
    );
    let q = quarantine(&db).await;
    assert_eq!(
        q,
        [(Some("9".to_owned()), kind.to_owned(), reason.to_owned())]
    );
    let record: Value = sqlx::query_scalar("SELECT record::jsonb FROM cairn.quarantine")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(record, bad, "the quarantined record is kept whole");
    let expected = (
        "schema_drift".to_owned(),
        "contacts".to_owned(),
        reason.to_owned(),
        1,
    );
    assert_eq!(alerts(&db).await, std::slice::from_ref(&expected));

    // The same drift again: one alert with a higher count, still one quarantine row.
    land(&db, &wh, &contacts(), &page).await;
    assert_eq!(alerts(&db).await, [(expected.0, expected.1, expected.2, 2)]);
    assert_eq!(quarantine(&db).await.len(), 1);
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

#[tokio::test]
async fn a_removed_field_is_quarantined() {
    let bad = json!({"id": "9", "score": 90, "updated_at": "2026-03-01T00:00:00Z"});
    assert_quarantined(bad, r#"removed field "phone""#, "removed_field").await;
}

#[tokio::test]
async fn a_type_change_is_quarantined() {
    let bad = contact("9", json!("+1-555-0009"), json!("ninety"));
    assert_quarantined(
        bad,
        r#"type change of field "score": the column is bigint, the value is string"#,
        "type_change",
    )
    .await;
}

#[tokio::test]
async fn a_rename_is_quarantined() {
    let bad = json!({"id": "9", "mobile": "+1-555-0009", "score": 90, "updated_at": "2026-03-01T00:00:00Z"});
    assert_quarantined(bad, r#"rename of field "phone" to "mobile""#, "rename").await;
}

#[tokio::test]
async fn a_missing_field_beside_a_new_field_of_another_type_is_a_removal() {
    let bad = json!({"id": "9", "mobile": true, "score": 90, "updated_at": "2026-03-01T00:00:00Z"});
    assert_quarantined(bad, r#"removed field "phone""#, "removed_field").await;
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
