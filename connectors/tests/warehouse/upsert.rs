//! Idempotent upserts, version ordering and type inference.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::common::{columns, contacts, land, land_at, rows, setup};

fn contact(id: &str, score: i64, updated_at: &str) -> Value {
    json!({"id": id, "email": format!("{id}@example.com"), "score": score, "updated_at": updated_at})
}

#[tokio::test]
async fn the_same_page_twice_leaves_the_table_as_it_was() {
    let (db, wh) = setup().await;
    let page: Vec<Value> = (1..=50)
        .map(|i| contact(&i.to_string(), i, "2026-03-01T10:00:00Z"))
        .collect();
    let first = land(&db, &wh, &contacts(), &page).await;
    assert_eq!(
        (first.upserted, first.unchanged, first.quarantined),
        (50, 0, 0)
    );
    let before = rows(&db).await;

    let again = land_at(
        &db,
        &wh,
        &contacts(),
        &page,
        Utc::now() + Duration::hours(1),
    )
    .await;
    assert_eq!((again.upserted, again.unchanged), (0, 50));
    assert!(again.columns_added.is_empty());
    assert_eq!(rows(&db).await, before, "not even _synced_at moved");
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let (db, wh) = setup().await;
    land(
        &db,
        &wh,
        &contacts(),
        &[contact("1", 2, "2026-03-02T00:00:00Z")],
    )
    .await;
    let stale = land(
        &db,
        &wh,
        &contacts(),
        &[contact("1", 1, "2026-03-01T00:00:00Z")],
    )
    .await;
    assert_eq!((stale.upserted, stale.unchanged), (0, 1));
    assert_eq!(rows(&db).await[0]["score"], 2);

    let newer = land(
        &db,
        &wh,
        &contacts(),
        &[contact("1", 3, "2026-03-03T00:00:00+01:00")],
    )
    .await;
    assert_eq!(newer.upserted, 1);
    let row = &rows(&db).await[0];
    assert_eq!(row["score"], 3);
    assert_eq!(row["_raw"]["score"], 3);
    let cursor_kept: bool = sqlx::query_scalar(
        "SELECT _source_updated_at = '2026-03-02T23:00:00Z' FROM warehouse.contacts",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(cursor_kept);
}

#[tokio::test]
async fn a_change_with_the_same_cursor_still_lands() {
    // Vendors change records without bumping updated_at (a field added to every record):
    // an equal cursor with different content is a new version.
    let (db, wh) = setup().await;
    land(
        &db,
        &wh,
        &contacts(),
        &[contact("1", 1, "2026-03-01T00:00:00Z")],
    )
    .await;
    let report = land(
        &db,
        &wh,
        &contacts(),
        &[contact("1", 9, "2026-03-01T00:00:00Z")],
    )
    .await;
    assert_eq!(report.upserted, 1);
    assert_eq!(rows(&db).await[0]["score"], 9);
}

#[tokio::test]
async fn duplicates_in_a_page_keep_the_newest_version() {
    let (db, wh) = setup().await;
    let page = [
        contact("1", 2, "2026-03-02T00:00:00Z"),
        contact("1", 1, "2026-03-01T00:00:00Z"),
        contact("2", 1, "2026-03-01T00:00:00Z"),
        contact("2", 5, "2026-03-01T00:00:00Z"),
    ];
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!((report.upserted, report.superseded), (2, 2));
    let scores: Vec<Value> = rows(&db).await.iter().map(|r| r["score"].clone()).collect();
    assert_eq!(scores, [json!(2), json!(5)]);
}

#[tokio::test]
async fn every_json_type_gets_its_column_type() {
    let (db, wh) = setup().await;
    let record = json!({
        "id": 7,
        "name": "Ada",
        "visits": 12,
        "ratio": 0.25,
        "huge": u64::MAX,
        "active": true,
        "seen_at": "2026-01-02T03:04:05.678+02:00",
        "day": "2026-01-02",
        "address": {"city": "Lyon", "geo": {"lat": 45.76}},
        "tags": ["vip", {"k": 1}],
        "later": null,
        "updated_at": "2026-01-02T00:00:00Z",
    });
    let report = land(&db, &wh, &contacts(), &[record]).await;
    let mut added = report.columns_added.clone();
    added.sort();
    assert_eq!(
        added,
        [
            "active",
            "address",
            "day",
            "huge",
            "name",
            "ratio",
            "seen_at",
            "tags",
            "updated_at",
            "visits"
        ]
    );
    let mut cols = columns(&db, "contacts").await;
    cols.sort();
    let expected = [
        ("_deleted_at", "timestamp with time zone"),
        ("_raw", "jsonb"),
        ("_source_updated_at", "timestamp with time zone"),
        ("_synced_at", "timestamp with time zone"),
        ("active", "boolean"),
        ("address", "jsonb"),
        ("day", "text"),
        ("huge", "numeric"),
        ("id", "text"),
        ("name", "text"),
        ("ratio", "numeric"),
        ("seen_at", "timestamp with time zone"),
        ("tags", "jsonb"),
        ("updated_at", "timestamp with time zone"),
        ("visits", "bigint"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(
        cols, expected,
        "a field seen only as null has no column yet"
    );

    let typed: (String, i64, String, String, bool, bool, String, String) = sqlx::query_as(
        "SELECT id, visits, ratio::text, huge::text, active,
                seen_at = '2026-01-02T01:04:05.678Z',
                address #>> '{geo,lat}', tags -> 1 ->> 'k'
           FROM warehouse.contacts",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(typed.0, "7", "a numeric primary key is stored as text");
    assert_eq!(typed.1, 12);
    assert_eq!(typed.2, "0.25");
    assert_eq!(typed.3, u64::MAX.to_string());
    assert!(typed.4);
    assert!(typed.5, "timestamps keep their instant and fraction");
    assert_eq!(typed.6, "45.76", "nested objects are queryable jsonb");
    assert_eq!(typed.7, "1", "arrays are queryable jsonb");

    // The null-only field gets its column when a value arrives; older rows hold null.
    let mut next = rows(&db).await[0]["_raw"].clone();
    next["id"] = json!(8);
    next["later"] = json!(false);
    let report = land(&db, &wh, &contacts(), &[next]).await;
    assert_eq!(report.columns_added, ["later"]);
    let later: Vec<Option<bool>> =
        sqlx::query_scalar("SELECT later FROM warehouse.contacts ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(later, [None, Some(false)]);
}

#[tokio::test]
async fn a_new_field_becomes_an_additive_column() {
    let (db, wh) = setup().await;
    land(
        &db,
        &wh,
        &contacts(),
        &[contact("1", 1, "2026-03-01T00:00:00Z")],
    )
    .await;
    let mut with_plan = contact("2", 2, "2026-03-01T00:00:00Z");
    with_plan["plan"] = json!("pro");
    let mut old_updated = contact("1", 1, "2026-03-02T00:00:00Z");
    old_updated["plan"] = json!(null);
    let report = land(&db, &wh, &contacts(), &[with_plan, old_updated]).await;
    assert_eq!(report.columns_added, ["plan"]);
    assert_eq!((report.upserted, report.quarantined), (2, 0));
    assert!(report.alerts.is_empty(), "an additive column is not drift");
    let plans: Vec<Value> = rows(&db).await.iter().map(|r| r["plan"].clone()).collect();
    assert_eq!(plans, [json!(null), json!("pro")]);
    let cols = columns(&db, "contacts").await;
    assert_eq!(
        cols.last().unwrap(),
        &("plan".to_owned(), "text".to_owned())
    );
}
