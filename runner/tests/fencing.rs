//! Leases fence every write: a worker whose lease expired or was taken over cannot
//! commit a checkpoint, a transactional step's writes included.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::store::{Fenced, Lease, StepWrite, Store};
use cairn_runner::{Client, Context, Registry, RunStatus, StartOptions, StepKind, StepStatus};
use cairn_testkit::TestDb;
use chrono::Utc;
use common::{TestWorker, eventually, fast_config, finished};
use serde_json::json;

fn write(position: i32) -> StepWrite<'static> {
    StepWrite {
        position,
        name: "step",
        kind: StepKind::Step,
        status: StepStatus::Completed,
        output: None,
        attempts: 1,
        throttled: 0,
        last_error: None,
        started_at: Utc::now(),
        duration: Duration::from_millis(1),
        progress: None,
    }
}

async fn expire(store: &Store, lease: Lease) {
    sqlx::query(
        "UPDATE cairn.runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(lease.run_id)
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_worker_whose_lease_expired_or_was_taken_over_cannot_write() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool().clone());
    let (run_id, _) = store
        .start("wf", "default", &json!(null), None)
        .await
        .unwrap();
    let workflows = vec!["wf".to_owned()];
    let lease = Duration::from_secs(30);

    let a = store
        .claim("default", &workflows, 10, "a", lease)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    let a = a[0].lease;
    assert_eq!(
        Store::write_step(store.pool(), a, &write(0)).await.unwrap(),
        Fenced::Held(false)
    );
    let nobody = store
        .claim("default", &workflows, 10, "b", lease)
        .await
        .unwrap();
    assert!(nobody.is_empty(), "a held lease is not claimable");

    // Expired but not yet taken over: the worker has lost the right to write.
    expire(&store, a).await;
    assert_eq!(
        Store::write_step(store.pool(), a, &write(1)).await.unwrap(),
        Fenced::Lost
    );
    assert!(
        store.heartbeat(&[a], lease).await.unwrap().is_empty(),
        "an expired lease is not renewed"
    );

    let b = store
        .claim("default", &workflows, 10, "b", lease)
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "an expired lease is claimable");
    let b = b[0].lease;
    assert_eq!(b.epoch, a.epoch + 1);
    assert_eq!(b.run_id, run_id);

    // Taken over: every kind of write by the old holder is refused.
    assert_eq!(
        Store::write_step(store.pool(), a, &write(1)).await.unwrap(),
        Fenced::Lost
    );
    assert_eq!(
        store
            .finish(a, RunStatus::Completed, Some(&json!("zombie")), None, None)
            .await
            .unwrap(),
        Fenced::Lost
    );
    assert_eq!(store.release(&[a], "default").await.unwrap(), 0);
    assert!(store.heartbeat(&[a], lease).await.unwrap().is_empty());

    // The new holder writes normally.
    assert_eq!(
        Store::write_step(store.pool(), b, &write(1)).await.unwrap(),
        Fenced::Held(false)
    );
    assert_eq!(
        store
            .finish(b, RunStatus::Completed, Some(&json!("done")), None, None)
            .await
            .unwrap(),
        Fenced::Held(())
    );
    let run = store.show(run_id).await.unwrap();
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!("done")));
    assert_eq!(run.steps.len(), 2);
}

#[tokio::test]
async fn a_transactional_step_that_lost_its_lease_rolls_back_its_writes() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE effects (run_id uuid, note text)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register("takeover", |ctx: Context, (): ()| async move {
        let ctx = &ctx;
        ctx.transaction("write", |tx| async move {
            let mut conn = tx.conn().await?;
            sqlx::query("INSERT INTO effects VALUES ($1, 'from the old holder')")
                .bind(ctx.run_id().as_uuid())
                .execute(&mut *conn)
                .await?;
            // Another worker takes the run over while this transaction is open.
            sqlx::query("UPDATE cairn.runs SET lease_epoch = lease_epoch + 1 WHERE id = $1")
                .bind(ctx.run_id())
                .execute(ctx.pool())
                .await?;
            Ok(())
        })
        .await
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let started = client
        .start("takeover", &(), &StartOptions::default())
        .await
        .unwrap();
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(1));

    // Epoch and claims read together: one claim, then the takeover's bump.
    let claims = eventually(
        "the run to be taken over",
        Duration::from_secs(20),
        || async {
            let (epoch, claims): (i64, i32) =
                sqlx::query_as("SELECT lease_epoch, claims FROM cairn.runs WHERE id = $1")
                    .bind(started.run_id)
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            (epoch == 2).then_some(claims)
        },
    )
    .await;
    worker.shutdown().await;

    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(effects, 0, "the fenced-out transaction was rolled back");
    let run_after = client.show(started.run_id).await.unwrap();
    assert!(
        run_after.steps.is_empty(),
        "no checkpoint from the old holder"
    );
    assert_eq!(
        run_after.summary.status,
        RunStatus::Running,
        "left to its new owner"
    );
    assert_eq!(claims, 1);
}

#[tokio::test]
async fn transactional_steps_commit_their_effect_exactly_once() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE effects (run_id uuid PRIMARY KEY, n int)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register("once", |ctx: Context, n: i32| async move {
        let ctx = &ctx;
        let written: i32 = ctx
            .transaction("insert", |tx| async move {
                let mut conn = tx.conn().await?;
                sqlx::query("INSERT INTO effects VALUES ($1, $2)")
                    .bind(ctx.run_id().as_uuid())
                    .bind(n)
                    .execute(&mut *conn)
                    .await?;
                Ok(n)
            })
            .await?;
        Ok(written)
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(2));
    let started = client
        .start("once", &7, &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, started.run_id).await;
    worker.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!(7)));
    assert_eq!(run.steps[0].kind, StepKind::Transaction);
    let n: i32 = sqlx::query_scalar("SELECT n FROM effects WHERE run_id = $1")
        .bind(started.run_id.as_uuid())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 7);
}
