//! Delete reconciliation: deletes marked, undeleted on return, refused on an
//! incomplete id set (with an alert) unless forced.

use cairn_connectors::warehouse::{ReconcileOutcome, StreamSpec, Warehouse};
use cairn_testkit::TestDb;
use serde_json::{Value, json};

use crate::common::{alerts, contacts, land, setup};

fn page(ids: std::ops::RangeInclusive<u32>) -> Vec<Value> {
    ids.map(|i| json!({"id": i.to_string(), "n": i, "updated_at": "2026-03-01T00:00:00Z"}))
        .collect()
}

fn ids(ids: impl IntoIterator<Item = u32>) -> Vec<String> {
    ids.into_iter().map(|i| i.to_string()).collect()
}

/// Stages `pages` of ids then applies them, in one transaction.
async fn reconcile(
    db: &TestDb,
    wh: &Warehouse,
    spec: &StreamSpec,
    reconcile_id: &str,
    pages: &[Vec<String>],
    force: bool,
) -> ReconcileOutcome {
    let mut tx = db.pool().begin().await.unwrap();
    for ids in pages {
        wh.stage_ids(&mut tx, &spec.name, reconcile_id, ids)
            .await
            .unwrap();
    }
    let outcome = wh
        .apply_deletes(&mut tx, spec, reconcile_id, checks(0.1, force))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outcome
}

async fn deleted(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT id FROM warehouse.contacts WHERE _deleted_at IS NOT NULL ORDER BY id::int",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn rows_absent_from_the_id_set_are_marked_deleted_and_come_back() {
    let (db, wh) = setup().await;
    land(&db, &wh, &contacts(), &page(1..=20)).await;
    // Paged and partly repeated, as a resumed listing would stage it.
    let pages = [ids(1..=10), ids(8..=17), ids([19, 20, 21])];
    let outcome = reconcile(&db, &wh, &contacts(), "r1", &pages, false).await;
    assert_eq!(
        outcome,
        ReconcileOutcome::Applied {
            ids: 20,
            live: 20,
            deleted: 1,
            undeleted: 0
        }
    );
    assert_eq!(deleted(&db).await, ["18"]);
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.reconcile_ids")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(staged, 0, "an applied set is cleaned up");
    let mut conn = db.pool().acquire().await.unwrap();
    assert_eq!(
        wh.checksum(&mut conn, "contacts").await.unwrap(),
        cairn_sandbox::checksum_records(
            &page(1..=20)
                .into_iter()
                .filter(|r| r["id"] != "18")
                .collect::<Vec<_>>()
        )
        .unwrap(),
        "deleted rows leave the checksum"
    );

    // Back in the id set: undeleted.
    let outcome = reconcile(&db, &wh, &contacts(), "r2", &[ids(1..=20)], false).await;
    assert_eq!(
        outcome,
        ReconcileOutcome::Applied {
            ids: 20,
            live: 19,
            deleted: 0,
            undeleted: 1
        }
    );
    assert!(deleted(&db).await.is_empty());

    // Deleted again, then the record itself comes back through a sync: undeleted too.
    reconcile(
        &db,
        &wh,
        &contacts(),
        "r3",
        &[ids((1..=20).filter(|i| *i != 5))],
        false,
    )
    .await;
    assert_eq!(deleted(&db).await, ["5"]);
    let report = land(&db, &wh, &contacts(), &page(5..=5)).await;
    assert_eq!(
        report.upserted, 1,
        "an identical record still revives a deleted row"
    );
    assert!(deleted(&db).await.is_empty());
}

#[tokio::test]
async fn an_incomplete_id_set_is_refused_with_an_alert_unless_forced() {
    let (db, wh) = setup().await;
    land(&db, &wh, &contacts(), &page(1..=100)).await;
    // A listing that died half-way: 50 ids for 100 live rows, 10% allowed missing.
    let outcome = reconcile(&db, &wh, &contacts(), "r1", &[ids(1..=50)], false).await;
    assert_eq!(
        outcome,
        ReconcileOutcome::Refused {
            ids: 50,
            live: 100,
            max_missing_share: 0.1
        }
    );
    assert!(
        deleted(&db).await.is_empty(),
        "a failed source never wipes the warehouse"
    );
    let open = alerts(&db).await;
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].0.as_str(), open[0].1.as_str()),
        ("incomplete_id_set", "contacts")
    );

    // Within the allowed share: applied.
    let outcome = reconcile(&db, &wh, &contacts(), "r2", &[ids(1..=91)], false).await;
    assert!(
        matches!(outcome, ReconcileOutcome::Applied { deleted: 9, .. }),
        "{outcome:?}"
    );

    // The refused set is still staged: forcing it applies it.
    let mut tx = db.pool().begin().await.unwrap();
    let outcome = wh
        .apply_deletes(&mut tx, &contacts(), "r1", checks(0.1, true))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        outcome,
        ReconcileOutcome::Applied {
            ids: 50,
            live: 91,
            deleted: 41,
            undeleted: 0
        }
    );
    assert_eq!(deleted(&db).await.len(), 50);
}

#[tokio::test]
async fn reconciling_a_stream_without_a_table_changes_nothing() {
    let (db, wh) = setup().await;
    let outcome = reconcile(&db, &wh, &contacts(), "r1", &[ids(1..=3)], false).await;
    assert_eq!(
        outcome,
        ReconcileOutcome::Applied {
            ids: 3,
            live: 0,
            deleted: 0,
            undeleted: 0
        }
    );
    let mut tx = db.pool().begin().await.unwrap();
    let bad = wh
        .apply_deletes(&mut tx, &contacts(), "r1", checks(1.5, false))
        .await;
    assert!(bad.is_err());
}

pub fn checks(max_missing_share: f64, force: bool) -> cairn_connectors::warehouse::Checks {
    cairn_connectors::warehouse::Checks {
        max_missing_share,
        vendor_total: None,
        force,
    }
}

#[tokio::test]
async fn ids_copy_whatever_they_hold_and_a_set_short_of_the_vendor_total_is_refused() {
    let (db, wh) = setup().await;
    let hostile = [
        "tab\there",
        "line\nbreak",
        r"back\slash",
        "cr\rlf",
        r"\N",
        "plain",
    ];
    let page: Vec<Value> = hostile
        .iter()
        .map(|id| json!({"id": id, "updated_at": "2026-03-01T00:00:00Z"}))
        .collect();
    land(&db, &wh, &contacts(), &page).await;
    let staged: Vec<String> = hostile.iter().map(|id| (*id).to_owned()).collect();
    let spec = contacts();
    // Every id matches its row exactly: none is marked deleted, the repeat counts once.
    let mut tx = db.pool().begin().await.unwrap();
    wh.stage_ids(&mut tx, "contacts", "r1", &staged)
        .await
        .unwrap();
    wh.stage_ids(&mut tx, "contacts", "r1", &staged[..2])
        .await
        .unwrap();
    let applied = wh
        .apply_deletes(
            &mut tx,
            &spec,
            "r1",
            cairn_connectors::warehouse::Checks {
                max_missing_share: 0.5,
                vendor_total: Some(6),
                force: false,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        applied,
        ReconcileOutcome::Applied {
            ids: 6,
            live: 6,
            deleted: 0,
            undeleted: 0
        }
    );
    // Five distinct ids where the vendor said seven: nothing is deleted.
    let mut tx = db.pool().begin().await.unwrap();
    wh.stage_ids(&mut tx, "contacts", "r2", &staged[1..])
        .await
        .unwrap();
    let refused = wh
        .apply_deletes(
            &mut tx,
            &spec,
            "r2",
            cairn_connectors::warehouse::Checks {
                max_missing_share: 0.5,
                vendor_total: Some(7),
                force: false,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        matches!(refused, ReconcileOutcome::Refused { ids: 5, .. }),
        "{refused:?}"
    );
    let deleted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM warehouse.contacts WHERE _deleted_at IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(deleted, 0);
    let details: Vec<String> = alerts(&db).await.into_iter().map(|a| a.2).collect();
    assert!(
        details.contains(&"the id listing held fewer distinct ids than its total".to_owned()),
        "{details:?}"
    );
}
