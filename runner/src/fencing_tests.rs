//! Leases fence every write at the statement level: a holder whose lease expired or was
//! taken over cannot write a checkpoint or end the run, and a transactional checkpoint
//! travels with its COMMIT or not at all. Unit tests, because the store's writes are the
//! engine's own and not public.

use std::time::Duration;

use cairn_testkit::TestDb;
use chrono::Utc;
use serde_json::json;

use crate::store::{Fenced, Lease, RunEnd, StepWrite, Store, already_completed};
use crate::{Client, RunStatus, StartOptions, StepKind, StepStatus};

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
        store.write_step(store.pool(), a, &write(0)).await.unwrap(),
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
        store.write_step(store.pool(), a, &write(1)).await.unwrap(),
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
        store.write_step(store.pool(), a, &write(1)).await.unwrap(),
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
        store.write_step(store.pool(), b, &write(1)).await.unwrap(),
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

/// Creates the table the transactional steps below write their effect to.
async fn create_effects(db: &TestDb) {
    sqlx::query("CREATE TABLE effects (note text NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
}

/// A claimed run, a table for a transaction's effect, and the lease to write with.
async fn claimed_with_effects(db: &TestDb) -> (Store, Lease) {
    create_effects(db).await;
    claimed(db).await
}

/// A run started and claimed, and the lease to write with.
async fn claimed(db: &TestDb) -> (Store, Lease) {
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
    store.commit_with_step(tx, lease, step).await
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
async fn a_transactional_checkpoint_commits_with_its_step_and_keeps_hostile_text_intact() {
    let db = TestDb::new().await;
    let (store, lease) = claimed_with_effects(&db).await;
    // Quotes, backslashes, a statement separator and a comment arrive as text.
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
        store
            .write_step(store.pool(), lease, &write(1))
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

    // No PostgreSQL text holds a NUL: the checkpoint is refused, and the step's other
    // writes with it.
    let err = commit_effect(&store, lease, "nul", &transactional(1, "a\0b", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("22021")),
        "{err}"
    );

    // An expired lease: the checkpoint raises and the COMMIT after it never runs.
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
async fn a_worker_of_the_versions_before_still_writes_through_the_frozen_function() {
    let db = TestDb::new().await;
    let (store, lease) = claimed(&db).await;
    let run_id = lease.run_id;
    // The 15-argument function, as the versions before call it.
    let old_write = |epoch: i64, position: i32| {
        sqlx::query_scalar::<_, bool>(
            "SELECT cairn.write_step($1, $2, $3, 'old', 'step', 'completed', '{\"n\": 1}'::json,
                    1, 0, NULL, now(), 1.0, NULL, '', NULL)",
        )
        .bind(run_id)
        .bind(epoch)
        .bind(position)
        .fetch_one(store.pool())
    };
    assert!(!old_write(lease.epoch, 0).await.unwrap(), "no cancel asked");
    let output: String = sqlx::query_scalar(
        "SELECT output::text FROM cairn.steps WHERE run_id = $1 AND position = 0",
    )
    .bind(run_id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(output, "{\"n\": 1}", "the output is stored as sent");
    let stale = old_write(lease.epoch - 1, 1).await.unwrap_err();
    assert!(
        matches!(&stale, sqlx::Error::Database(e) if e.code().as_deref() == Some("CN001")),
        "{stale}"
    );
}
