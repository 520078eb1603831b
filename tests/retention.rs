//! `cairn purge`: finished runs' step outputs go once their window has passed, their
//! metadata stays, recent runs and dead letters are kept unless asked, and a purged
//! failed run cannot be retried into wrong results.

mod support;

use std::time::Duration;

use cairn::{Client, RunId, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use serde_json::{Value, json};
use support::{builtin_worker, run};

fn json_out(url: &str, args: &[&str]) -> Value {
    let out = run(url, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

async fn finished(client: &Client, input: Value) -> RunId {
    let started = client
        .start("ledger", &input, &StartOptions::default())
        .await
        .unwrap();
    client
        .wait(started.run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    started.run_id
}

async fn age(db: &TestDb, run: RunId, days: i32) {
    sqlx::query(
        "UPDATE cairn.runs SET finished_at = now() - make_interval(days => $2) WHERE id = $1",
    )
    .bind(run)
    .bind(days)
    .execute(db.pool())
    .await
    .unwrap();
}

/// The run's step rows: (position, name, attempts, whether an output is kept).
async fn steps(db: &TestDb, run: RunId) -> Vec<(i32, String, i32, bool)> {
    sqlx::query_as(
        "SELECT position, name, attempts, output IS NOT NULL FROM cairn.steps
          WHERE run_id = $1 ORDER BY position",
    )
    .bind(run)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_outputs_are_purged_metadata_stays_and_a_purged_run_is_not_retried() {
    let db = TestDb::new().await;
    let url = db.url();
    let client = Client::new(db.pool().clone());
    let worker = builtin_worker(db.pool().clone(), 4);
    let old = finished(&client, json!({"steps": 3})).await;
    let recent = finished(&client, json!({"steps": 3})).await;
    // Started without the registry's check, so it fails: a dead letter.
    let dead = finished(&client, json!({"steps": "many"})).await;
    assert_eq!(
        client.show(dead).await.unwrap().summary.status,
        RunStatus::Failed
    );
    for run in [old, dead] {
        age(&db, run, 10).await;
    }
    let before = steps(&db, old).await;
    assert!(before.iter().all(|(_, _, _, kept)| *kept), "{before:?}");

    let dry = json_out(
        &url,
        &["purge", "--older-than", "7d", "--dry-run", "--json"],
    );
    assert_eq!(
        (dry["runs"].as_u64(), dry["dry_run"].as_bool()),
        (Some(1), Some(true))
    );
    assert!(dry["step_outputs"].as_u64().unwrap() >= 3, "{dry}");
    assert_eq!(steps(&db, old).await, before, "a dry run changes nothing");

    let purged = json_out(&url, &["purge", "--older-than", "7d", "--json"]);
    assert_eq!(purged["runs"], 1);
    let after = steps(&db, old).await;
    assert_eq!(after.len(), before.len());
    for ((pos, name, attempts, kept), (p, n, a, _)) in after.iter().zip(&before) {
        assert_eq!((pos, name, attempts), (p, n, a), "the metadata stays");
        assert!(!kept, "step {name}'s output is gone");
    }
    let shown = client.show(old).await.unwrap();
    assert_eq!(shown.summary.status, RunStatus::Completed);
    assert_eq!(shown.output, None);
    assert!(
        steps(&db, recent).await.iter().all(|s| s.3),
        "a recent run keeps its outputs"
    );

    // The dead letter is kept until its own window is given, then it cannot be retried.
    let again = json_out(&url, &["purge", "--older-than", "7d", "--json"]);
    assert_eq!(again["runs"], 0, "nothing is purged twice");
    let purged = json_out(
        &url,
        &[
            "purge",
            "--older-than",
            "7d",
            "--dead-letters-older-than",
            "7d",
            "--json",
        ],
    );
    assert_eq!(purged["runs"], 1);
    let retry = run(&url, &["dlq", "retry", &dead.to_string()]);
    assert_eq!(retry.status.code(), Some(2));
    let err = String::from_utf8_lossy(&retry.stderr);
    assert!(err.contains("step outputs were purged"), "{err}");
    assert_eq!(
        client.show(dead).await.unwrap().summary.status,
        RunStatus::Failed
    );

    let bad = run(&url, &["purge", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_purge_each_workflow_by_its_own_window() {
    use cairn::{Registry, Retention, WorkerConfig};
    use cairn_testkit::TestWorker;

    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let mut registry = Registry::new();
    cairn::workflows::register_builtin(&mut registry);
    registry.register("ledger.kept", cairn::workflows::ledger::ledger);
    registry.set_retention("ledger.kept", Duration::from_secs(30 * 86_400));
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        retention: Some(Retention {
            default: Duration::from_secs(86_400),
            dead_letters: None,
            set_aside: Some(Duration::from_secs(30 * 86_400)),
            every: Duration::from_millis(50),
        }),
        ..WorkerConfig::default()
    };
    // A quarantined record and a refused write, one past the window and one within it.
    for (key, days) in [("old", 40), ("new", 1)] {
        sqlx::query(
            "INSERT INTO cairn.quarantine (schema_name, stream, kind, reason, record, synced_at,
                                           first_seen, last_seen, record_key)
             VALUES ('s', 'contacts', 'drift', 'test', '{}', now(),
                     now() - make_interval(days => $2), now() - make_interval(days => $2), $1)",
        )
        .bind(key)
        .bind(days)
        .execute(db.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO cairn.destination_rejects
                    (destination, stream, record_id, run_id, reason, created_at)
             VALUES ('d', 'contacts', $1, gen_random_uuid(), 'test',
                     now() - make_interval(days => $2))",
        )
        .bind(key)
        .bind(days)
        .execute(db.pool())
        .await
        .unwrap();
    }
    let worker = TestWorker::start(db.pool().clone(), std::sync::Arc::new(registry), config);
    let mut runs = Vec::new();
    for workflow in ["ledger", "ledger.kept"] {
        let started = client
            .start(workflow, &json!({"steps": 2}), &StartOptions::default())
            .await
            .unwrap();
        client
            .wait(started.run_id, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        age(&db, started.run_id, 10).await;
        runs.push(started.run_id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while steps(&db, runs[0]).await.iter().any(|s| s.3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never purged the run past its window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        steps(&db, runs[1]).await.iter().all(|s| s.3),
        "a workflow with a longer window of its own keeps its outputs"
    );
    let left = || async {
        let quarantined: Vec<String> =
            sqlx::query_scalar("SELECT record_key FROM cairn.quarantine ORDER BY 1")
                .fetch_all(db.pool())
                .await
                .unwrap();
        let refused: Vec<String> =
            sqlx::query_scalar("SELECT record_id FROM cairn.destination_rejects ORDER BY 1")
                .fetch_all(db.pool())
                .await
                .unwrap();
        (quarantined, refused)
    };
    while left().await.0.len() > 1 || left().await.1.len() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never purged the records set aside"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left().await,
        (vec!["new".to_owned()], vec!["new".to_owned()])
    );
    worker.shutdown().await;
}
