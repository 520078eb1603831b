//! Leases fence every write: a worker whose lease expired or was taken over cannot
//! commit a checkpoint, a transactional step's writes included. (The statement-level
//! fencing of the store is unit-tested in `src/fencing_tests.rs`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{
    Client, Context, Registry, RunDetail, RunStatus, StartOptions, StepKind, StepStatus,
    WorkerConfig,
};
use cairn_testkit::TestDb;
use common::{TestWorker, eventually, fast_config, finished};
use serde_json::json;

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

/// Creates the table the transactional steps below write their effect to.
async fn create_effects(db: &TestDb) {
    sqlx::query("CREATE TABLE effects (note text NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
}

/// Runs `workflow` once on a worker of its own and returns the ended run.
async fn run_once(db: &TestDb, registry: Registry, workflow: &str) -> RunDetail {
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    // No cron scheduler: its ticks hold transactions of their own, which would show up
    // among the open transactions a step counts.
    let config = WorkerConfig {
        scheduler: None,
        ..fast_config(1)
    };
    let worker = TestWorker::start(db.pool().clone(), registry, config);
    let started = client
        .start(workflow, &(), &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, started.run_id).await;
    worker.shutdown().await;
    run
}

#[tokio::test]
async fn a_transaction_begins_only_when_its_step_asks_for_the_connection() {
    let db = TestDb::new().await;
    create_effects(&db).await;
    let mut registry = Registry::new();
    registry.register("maybe", |ctx: Context, (): ()| async move {
        let ctx = &ctx;
        // A step that decides it has nothing to write holds no transaction open; one
        // that writes holds its own, from its first `tx.conn()`.
        let open_skipping = ctx
            .transaction("skip", |_tx| async move { open_transactions(ctx).await })
            .await?;
        let kept_handle = std::sync::Mutex::new(None);
        let open_writing = ctx
            .transaction("write", |tx| {
                let kept_handle = &kept_handle;
                async move {
                    let mut conn = tx.conn().await?;
                    sqlx::query("INSERT INTO effects VALUES ('written')")
                        .execute(&mut *conn)
                        .await?;
                    drop(conn);
                    *kept_handle.lock().unwrap() = Some(tx);
                    open_transactions(ctx).await
                }
            })
            .await?;
        // The handle outlived its step: it no longer works.
        let tx = kept_handle.lock().unwrap().take().unwrap();
        let late = tx.conn().await.err().map(|e| e.to_string());
        Ok((open_skipping, open_writing, late))
    });
    let run = run_once(&db, registry, "maybe").await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{:?}", run.error);
    assert_eq!(run.steps.len(), 2);
    assert!(
        run.steps
            .iter()
            .all(|s| s.kind == StepKind::Transaction && s.status == StepStatus::Completed)
    );
    let note: String = sqlx::query_scalar("SELECT note FROM effects")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(note, "written");
    let output = run.output.unwrap();
    assert_eq!(output[0], json!(0), "no transaction while skipping");
    assert_eq!(output[1], json!(1), "the writing step's own transaction");
    assert!(
        output[2].as_str().unwrap().contains("already ended"),
        "{output}"
    );
}

/// Sessions of this test's database with a transaction open and idle, seen from a
/// connection of the pool.
async fn open_transactions(ctx: &Context) -> Result<i64, cairn_runner::Error> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(ctx.pool())
    .await?)
}

#[tokio::test]
async fn a_transactional_step_whose_name_holds_a_nul_fails_clearly_and_commits_nothing() {
    let db = TestDb::new().await;
    create_effects(&db).await;
    let mut registry = Registry::new();
    registry.register("nul", |ctx: Context, (): ()| async move {
        ctx.transaction("bad\0name", |tx| async move {
            let mut conn = tx.conn().await?;
            sqlx::query("INSERT INTO effects VALUES ('written')")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    });
    let run = run_once(&db, registry, "nul").await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    let message = run.error.unwrap()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("NUL"), "{message}");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(effects, 0);
}
