//! Helpers shared by the warehouse tests.

use cairn_connectors::record::Record;
use cairn_connectors::warehouse::{PageReport, StreamSpec, Warehouse};
use cairn_testkit::TestDb;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// A fresh database and a warehouse sink on the `warehouse` schema.
pub async fn setup() -> (TestDb, Warehouse) {
    let db = TestDb::new().await;
    (
        db,
        Warehouse::new("crm", "warehouse").expect("a valid schema name"),
    )
}

/// The `contacts` stream keyed by `id`, versions ordered by `updated_at`.
pub fn contacts() -> StreamSpec {
    StreamSpec::new("contacts", "id").with_cursor("updated_at")
}

/// Lands one page in its own transaction, as a transactional step would.
pub async fn land(db: &TestDb, wh: &Warehouse, spec: &StreamSpec, page: &[Value]) -> PageReport {
    land_at(db, wh, spec, page, Utc::now()).await
}

/// [`land`] with a chosen `_synced_at`.
pub async fn land_at(
    db: &TestDb,
    wh: &Warehouse,
    spec: &StreamSpec,
    page: &[Value],
    synced_at: DateTime<Utc>,
) -> PageReport {
    let mut tx = db.pool().begin().await.expect("begin");
    let report = wh
        .upsert_page(&mut tx, spec, &Record::from_values(page), synced_at)
        .await
        .expect("upsert_page");
    tx.commit().await.expect("commit");
    report
}

/// The columns of `warehouse.<table>` with their types, in table order.
pub async fn columns(db: &TestDb, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
          WHERE table_schema = 'warehouse' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(db.pool())
    .await
    .expect("reading columns")
}

/// Every row of `warehouse.contacts` as JSON, ordered by id.
pub async fn rows(db: &TestDb) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(t) FROM warehouse.contacts t ORDER BY id")
        .fetch_all(db.pool())
        .await
        .expect("reading rows")
}

/// The open alerts as (kind, stream, detail, count).
pub async fn alerts(db: &TestDb) -> Vec<(String, String, String, i64)> {
    let mut alerts: Vec<_> = cairn_connectors::warehouse::list_alerts(db.pool())
        .await
        .expect("listing alerts")
        .into_iter()
        .map(|a| (a.kind, a.stream, a.detail, a.count))
        .collect();
    alerts.sort();
    alerts
}

/// The quarantine as (record id, kind, reason), ordered by record id.
pub async fn quarantine(db: &TestDb) -> Vec<(Option<String>, String, String)> {
    sqlx::query_as("SELECT record_id, kind, reason FROM cairn.quarantine ORDER BY record_id, id")
        .fetch_all(db.pool())
        .await
        .expect("reading the quarantine")
}
