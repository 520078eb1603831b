//! Compliance metrics under a privacy budget: the budget is enforced exactly (amounts in
//! millionths, concurrent releases serialized), a refused release spends nothing, and
//! every cell of the table is released, empty or not. The noise itself is tested
//! statistically in `cairn_workflows::dsr::metrics`.

mod support;

use cairn::workflows::dsr::metrics::{MetricsError, release};
use cairn_testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_spent_exactly_and_then_refuses() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let first = release(pool, "2026-12", 0.4, 1.0).await.unwrap();
    assert_eq!(
        first.requests.len(),
        18,
        "2 kinds x 3 regulations x 3 outcomes"
    );
    assert!((first.budget_left - 0.6).abs() < 1e-12);
    release(pool, "2026-12", 0.4, 1.0).await.unwrap();
    let refused = release(pool, "2026-12", 0.4, 1.0).await.unwrap_err();
    assert!(matches!(refused, MetricsError::Spent { .. }), "{refused}");
    assert!(refused.to_string().contains("0.8 of 1"), "{refused}");
    let last = release(pool, "2026-12", 0.2, 1.0).await.unwrap();
    assert_eq!(
        last.budget_left, 0.0,
        "0.4 + 0.4 + 0.2 is exactly the budget"
    );
    assert!(release(pool, "2026-12", 0.001, 1.0).await.is_err());
    // A later period has a budget of its own; the first release's budget sticks.
    let next = release(pool, "2027-01", 0.5, 3.0).await.unwrap();
    assert_eq!(next.budget_total, 3.0);
    let next = release(pool, "2027-01", 0.5, 9.0).await.unwrap();
    assert_eq!((next.budget_total, next.budget_spent), (3.0, 1.0));
    let (spent, releases): (i64, i32) = sqlx::query_as(
        "SELECT spent_micro, releases FROM cairn.dsr_privacy_budget WHERE period = '2026-12'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((spent, releases), (1_000_000, 3), "refusals spent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_releases_never_overspend() {
    let db = TestDb::new().await;
    let releases = (0..10).map(|_| {
        let pool = db.pool().clone();
        tokio::spawn(async move { release(&pool, "2026-11", 0.3, 1.0).await })
    });
    let mut granted = 0;
    for handle in releases {
        if handle.await.unwrap().is_ok() {
            granted += 1;
        }
    }
    assert_eq!(
        granted, 3,
        "three releases of 0.3 fit a budget of 1.0, a fourth does not"
    );
}
