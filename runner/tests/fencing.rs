//! Leases fence every write: a worker whose lease expired or was taken over cannot
//! commit a checkpoint, a transactional step's writes included.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::store::{Fenced, Lease, RunEnd, StepWrite, Store, already_completed};
use cairn_runner::{
    Client, Context, Registry, RunDetail, RunStatus, StartOptions, StepKind, StepStatus,
    WorkerConfig,
};
use cairn_testkit::TestDb;
use chrono::Utc;
use common::{TestWorker, eventually, fast_config, finished};
use serde_json::json;

fn write(position: i32) -> StepWrite<'static> {
    StepWrite {
        position,
        branch: "",
        seq: None,
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

fn completed(output: serde_json::Value) -> RunEnd {
    RunEnd {
        status: RunStatus::Completed,
        output: Some(output),
        error: None,
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
    let run_id = Client::new(db.pool().clone())
        .start("wf", &json!(null), &StartOptions::default())
        .await
        .unwrap()
        .run_id;
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
        store.finish(a, &completed(json!("zombie"))).await.unwrap(),
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
        store.finish(b, &completed(json!("done"))).await.unwrap(),
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

/// A claimed run, a table for a transaction's effect, and the lease to write with.
async fn claimed_with_effects(db: &TestDb) -> (Store, Lease) {
    create_effects(db).await;
    let store = Store::new(db.pool().clone());
    Client::new(db.pool().clone())
        .start("wf", &json!(null), &StartOptions::default())
        .await
        .unwrap();
    let claimed = store
        .claim(
            "default",
            &["wf".to_owned()],
            1,
            "a",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    (store, claimed[0].lease)
}

/// Opens a transaction, inserts `note` into `effects` in it and commits it with `step`.
async fn commit_effect(
    store: &Store,
    lease: Lease,
    note: &str,
    step: &StepWrite<'_>,
) -> Result<Fenced<bool>, sqlx::Error> {
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO effects VALUES ($1)")
        .bind(note)
        .execute(&mut *tx)
        .await
        .unwrap();
    Store::commit_with_step(&mut tx, lease, step).await
}

async fn effects(store: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT note FROM effects ORDER BY note")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

fn transactional(position: i32, name: &'static str, output: &'static str) -> StepWrite<'static> {
    StepWrite {
        kind: StepKind::Transaction,
        name,
        output: Some(output),
        ..write(position)
    }
}

#[tokio::test]
async fn a_transactional_checkpoint_travels_with_its_commit_and_keeps_hostile_text_intact() {
    let db = TestDb::new().await;
    let (store, lease) = claimed_with_effects(&db).await;
    // The checkpoint goes as literals in a simple query: quotes, backslashes, a
    // statement separator and a comment must arrive as text, not as SQL.
    let name = "it's a \\ \"step\" '); DROP TABLE effects; --\n ✓ E'\\x41'";
    let output = r#"{"s":"O'Brien \\ '); COMMIT; -- \u0000 😀"}"#;
    assert_eq!(
        commit_effect(&store, lease, "first", &transactional(0, name, output))
            .await
            .unwrap(),
        Fenced::Held(false)
    );
    assert_eq!(effects(&store).await, ["first"]);
    let step = store.step(lease.run_id, 0).await.unwrap().unwrap();
    assert_eq!(step.name, name);
    assert_eq!(step.kind, StepKind::Transaction);
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(
        step.output,
        Some(serde_json::from_str::<serde_json::Value>(output).unwrap())
    );

    // The pool's connections come back out of any transaction: a plain write and a
    // second transactional step work as before.
    assert_eq!(
        Store::write_step(store.pool(), lease, &write(1))
            .await
            .unwrap(),
        Fenced::Held(false)
    );
    assert_eq!(
        commit_effect(&store, lease, "second", &transactional(2, "two", "2"))
            .await
            .unwrap(),
        Fenced::Held(false)
    );
    assert_eq!(effects(&store).await, ["first", "second"]);
}

#[tokio::test]
async fn a_transactional_checkpoint_refused_by_the_fence_or_an_earlier_commit_commits_nothing() {
    let db = TestDb::new().await;
    let (store, lease) = claimed_with_effects(&db).await;
    assert_eq!(
        commit_effect(&store, lease, "first", &transactional(0, "tx", "1"))
            .await
            .unwrap(),
        Fenced::Held(false)
    );

    // A second attempt of a step whose first attempt committed (its answer lost).
    let err = commit_effect(&store, lease, "again", &transactional(0, "tx", "2"))
        .await
        .unwrap_err();
    assert!(already_completed(&err), "refused as completed: {err}");
    let step = store.step(lease.run_id, 0).await.unwrap().unwrap();
    assert_eq!(
        step.output,
        Some(json!(1)),
        "the first attempt's output stays"
    );

    // A NUL cannot travel in a literal: refused before anything is sent.
    let err = commit_effect(&store, lease, "nul", &transactional(1, "a\0b", "1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");

    // An expired lease: the function raises and the COMMIT after it never runs.
    expire(&store, lease).await;
    assert_eq!(
        commit_effect(&store, lease, "zombie", &transactional(1, "tx", "1"))
            .await
            .unwrap(),
        Fenced::Lost
    );
    assert_eq!(effects(&store).await, ["first"]);
    assert!(store.step(lease.run_id, 1).await.unwrap().is_none());
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
