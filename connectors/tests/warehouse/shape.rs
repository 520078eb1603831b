//! The cached shape: DDL only when the shape changes, never trusted past a rollback,
//! and concurrent writers adding the same field serialise instead of failing.

use cairn_connectors::record::Record;
use cairn_connectors::warehouse::Warehouse;
use chrono::Utc;
use serde_json::{Value, json};

use crate::common::{columns, contacts, land, rows, setup};

fn record(id: u32, extra: Option<(&str, Value)>) -> Value {
    let mut record = json!({"id": id.to_string(), "n": id, "updated_at": "2026-03-01T00:00:00Z"});
    if let Some((field, value)) = extra {
        record[field] = value;
    }
    record
}

async fn version(db: &cairn_testkit::TestDb) -> i64 {
    sqlx::query_scalar("SELECT version FROM cairn.warehouse_tables WHERE stream = 'contacts'")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_of_the_same_shape_touch_no_ddl() {
    let (db, wh) = setup().await;
    land(&db, &wh, &contacts(), &[record(1, None)]).await;
    let before = version(&db).await;
    for id in 2..5 {
        let report = land(&db, &wh, &contacts(), &[record(id, None)]).await;
        assert!(report.columns_added.is_empty());
    }
    assert_eq!(version(&db).await, before, "the registry was not written");
    land(
        &db,
        &wh,
        &contacts(),
        &[record(9, Some(("extra", json!(1))))],
    )
    .await;
    assert_ne!(version(&db).await, before);
}

#[tokio::test]
async fn a_rolled_back_shape_change_is_not_trusted() {
    let (db, wh) = setup().await;
    land(&db, &wh, &contacts(), &[record(1, None)]).await;
    let page = [record(2, Some(("plan", json!("pro"))))];
    let mut tx = db.pool().begin().await.unwrap();
    let report = wh
        .upsert_page(
            &mut tx,
            &contacts(),
            &Record::from_values(&page),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(report.columns_added, ["plan"]);
    tx.rollback().await.unwrap();
    assert!(!columns(&db, "contacts").await.iter().any(|c| c.0 == "plan"));

    // The same instance (whose cache saw the column) lands the page again for real.
    let report = land(&db, &wh, &contacts(), &page).await;
    assert_eq!(report.columns_added, ["plan"]);
    assert_eq!(rows(&db).await[1]["plan"], "pro");
}

#[tokio::test]
async fn concurrent_writers_adding_the_same_field_both_land() {
    let (db, _) = setup().await;
    let first = Warehouse::new("crm", "warehouse").unwrap();
    land(&db, &first, &contacts(), &[record(1, None)]).await;

    // Two workers, each with its own sink and transaction, see the same new field.
    let mut tasks = Vec::new();
    for worker in 0..2u32 {
        let pool = db.pool().clone();
        tasks.push(tokio::spawn(async move {
            let wh = Warehouse::new("crm", "warehouse").unwrap();
            let page: Vec<Value> = (0..50)
                .map(|i| record(100 + worker * 100 + i, Some(("region", json!("eu")))))
                .collect();
            let mut tx = pool.begin().await.unwrap();
            let report = wh
                .upsert_page(
                    &mut tx,
                    &contacts(),
                    &Record::from_values(&page),
                    Utc::now(),
                )
                .await
                .unwrap();
            // Hold the transaction open a moment so the other one queues behind it.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            tx.commit().await.unwrap();
            report
        }));
    }
    let mut added = Vec::new();
    for task in tasks {
        let report = task.await.unwrap();
        assert_eq!(report.upserted, 50);
        added.extend(report.columns_added);
    }
    assert_eq!(
        added,
        ["region"],
        "one of them added the column, the other reused it"
    );
    let regions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM warehouse.contacts WHERE region = 'eu'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(regions, 100);

    // The first sink's cache is stale; it notices and lands without adding anything.
    let report = land(
        &db,
        &first,
        &contacts(),
        &[record(2, Some(("region", json!("us"))))],
    )
    .await;
    assert!(report.columns_added.is_empty());
}
