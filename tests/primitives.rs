//! Every composition primitive survives SIGKILL of a real `cairn worker` process while
//! it is in use: the `compose` workflow's branches (one asleep), its children, its
//! published value and its awaited event, each with a worker killed mid-way.

mod support;

use std::time::Duration;

use cairn::workflows::compose::{self, ComposeInput, ComposeOutput};
use cairn::{Client, RunId, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use serde_json::Value;
use support::WorkerProcess;

/// Waits (60 s at most) until the run has published `stage`.
async fn stage(client: &Client, run: RunId, stage: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now: Option<Value> = client.get_event(run, "stage").await.unwrap();
        if now.as_ref().and_then(Value::as_str) == Some(stage) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} never reached stage {stage:?} (at {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until at least `n` of the run's steps named with `prefix` have checkpointed.
async fn checkpointed(db: &TestDb, run: RunId, prefix: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.steps
              WHERE run_id = $1 AND status = 'completed' AND starts_with(name, $2)",
        )
        .bind(run)
        .bind(prefix)
        .fetch_one(db.pool())
        .await
        .unwrap();
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix}: {done} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primitive_survives_a_sigkill_while_in_use() {
    let db = TestDb::new().await;
    let url = db.url();
    let client = Client::new(db.pool().clone());
    let input = ComposeInput {
        branches: 4,
        nap_ms: 1_500,
        children: 3,
        approval_timeout_ms: 120_000,
    };
    let run = client
        .start(compose::NAME, &input, &StartOptions::default())
        .await
        .unwrap()
        .run_id;
    let recorded = |name: &'static str| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, Value>(
                "SELECT output FROM cairn.steps WHERE run_id = $1 AND name = $2",
            )
            .bind(run)
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // Killed while the branches run, with some of their steps checkpointed and the
    // first branch asleep.
    let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
    stage(&client, run, "branches").await;
    checkpointed(&db, run, "branch ", 5).await;
    let token = recorded("cairn.uuid").await;
    worker.kill();

    // Killed while its children run or it waits for them, parked.
    let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
    stage(&client, run, "children").await;
    checkpointed(&db, run, "start child", 2).await;
    worker.kill();

    // Killed while it waits for the event; the event is sent while no worker runs.
    let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
    stage(&client, run, "awaiting approval").await;
    worker.kill();
    client.send_event(run, "approval", &" ada ").await.unwrap();
    let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
    let done = client
        .wait(run, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    drop(worker);
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert!(done.summary.claims >= 4, "resumed after each kill");
    let output: ComposeOutput = serde_json::from_value(done.output.unwrap()).unwrap();
    assert_eq!(output.branches, vec![3, 3, 3, 3]);
    assert_eq!(output.children, vec![2, 2, 2]);
    assert_eq!(output.approval.as_deref(), Some("ada"));
    assert_eq!(
        serde_json::to_value(output.token).unwrap(),
        token,
        "recorded once"
    );

    // Every branch step took effect exactly once.
    let effects: Vec<(String, i64)> = sqlx::query_as(
        "SELECT step, count(*) FROM public.cairn_compose_effects WHERE run_id = $1
          GROUP BY step ORDER BY step",
    )
    .bind(run)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(effects.len(), 12, "{effects:?}");
    assert!(effects.iter().all(|(_, n)| *n == 1), "{effects:?}");
    // Each child was started once, whatever the kills interrupted.
    let children: Vec<String> =
        sqlx::query_scalar("SELECT status FROM cairn.runs WHERE parent_id = $1")
            .bind(run)
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(children, ["completed", "completed", "completed"]);
    // The event was taken once, by the one wait (as was each child's end).
    let consumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.events
          WHERE run_id = $1 AND name = 'approval' AND consumed_at IS NOT NULL",
    )
    .bind(run)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(consumed, 1);
    let stage: Option<Value> = client.get_event(run, "stage").await.unwrap();
    assert_eq!(stage, Some(Value::from("done")));
    let markers = done
        .steps
        .iter()
        .filter(|s| s.name == "cairn.patch compose.trimmed-approval")
        .count();
    assert_eq!(markers, 1, "the patch marker, recorded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_still_stops_a_run_whose_worker_was_killed_while_it_waited() {
    let db = TestDb::new().await;
    let url = db.url();
    let client = Client::new(db.pool().clone());
    let input = ComposeInput {
        branches: 1,
        nap_ms: 0,
        children: 0,
        approval_timeout_ms: 3_600_000,
    };
    let options = StartOptions {
        deadline: Some(chrono::Utc::now() + chrono::Duration::seconds(4)),
        ..StartOptions::default()
    };
    let run = client
        .start(compose::NAME, &input, &options)
        .await
        .unwrap()
        .run_id;
    let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
    stage(&client, run, "awaiting approval").await;
    worker.kill();
    let worker = WorkerProcess::spawn(&url, &["--lease", "1"]);
    let done = client
        .wait(run, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    drop(worker);
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.expect("an error");
    assert_eq!(error["category"], "deadline", "{error}");
    let alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cairn.alerts WHERE kind = 'deadline_exceeded'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(alerts, 1);
}
