//! A `cairn worker` process SIGKILLed mid-workflow: another worker process takes the run
//! over once the lease expires and continues after its last completed step; a worker
//! restarted under its lasting identity takes it back at once.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cairn::{Client, RunStatus, StartOptions, StepStatus};
use cairn_testkit::TestDb;
use serde_json::json;
use support::WorkerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_is_replaced_and_completed_steps_never_run_again() {
    const STEPS: i32 = 40;
    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let input = json!({ "steps": STEPS, "step_ms": 60, "transactional_every": 2 });
    let run = client
        .start("ledger", &input, &StartOptions::default())
        .await
        .unwrap();

    let first = WorkerProcess::spawn(&db.url(), &[]);
    until_completed_steps(&db, run.run_id, 12).await;
    first.kill();

    let before = client.show(run.run_id).await.unwrap();
    assert_eq!(before.summary.status, RunStatus::Running, "killed mid-run");
    assert!(before.summary.claims == 1);
    // Position 0 prepares the ledger; step n sits at position n.
    let checkpointed: HashSet<i32> = before
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed && s.position > 0)
        .map(|s| s.position)
        .collect();
    assert!(
        checkpointed.len() < STEPS as usize,
        "the kill landed before the end"
    );

    let second = WorkerProcess::spawn(&db.url(), &[]);
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert_eq!(
        second.terminate(),
        Some(0),
        "SIGTERM stops a worker cleanly"
    );

    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output, Some(json!({ "steps": STEPS })));
    assert_eq!(
        done.summary.claims, 2,
        "claimed by the first worker, then the second"
    );

    let rows: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT step, kind, count(*) FROM public.cairn_ledger WHERE run_id = $1
          GROUP BY step, kind ORDER BY step",
    )
    .bind(run.run_id.as_uuid())
    .fetch_all(db.pool())
    .await
    .unwrap();
    let executions: HashMap<i32, (String, i64)> = rows
        .into_iter()
        .map(|(step, kind, n)| (step, (kind, n)))
        .collect();
    for step in 1..=STEPS {
        let (kind, n) = executions
            .get(&step)
            .unwrap_or_else(|| panic!("step {step} never ran"));
        if kind == "transaction" {
            assert_eq!(*n, 1, "transactional step {step} took effect {n} times");
        } else if checkpointed.contains(&step) {
            assert_eq!(
                *n, 1,
                "step {step} was checkpointed before the kill yet ran {n} times"
            );
        } else {
            assert!(*n <= 2, "step {step} ran {n} times");
        }
    }
    let repeated = executions.values().filter(|(_, n)| *n > 1).count();
    assert!(
        repeated <= 1,
        "only the step in flight at the kill may run twice"
    );
}

/// Waits until `run` has at least `steps` completed steps; fails after a minute.
async fn until_completed_steps(db: &TestDb, run: cairn::RunId, steps: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.steps WHERE run_id = $1 AND status = 'completed'",
        )
        .bind(run)
        .fetch_one(db.pool())
        .await
        .unwrap();
        if done >= steps {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} made no progress: {done} steps completed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_its_identity_takes_its_run_back_before_the_lease_ends() {
    const LEASE: &str = "120";
    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let input = json!({ "steps": 30, "step_ms": 40, "transactional_every": 3 });
    let run = client
        .start("ledger", &input, &StartOptions::default())
        .await
        .unwrap();
    let first = WorkerProcess::spawn(&db.url(), &["--id", "ledger-1", "--lease", LEASE]);
    until_completed_steps(&db, run.run_id, 5).await;

    // While it lives, no second worker may take its name: it waits a lease's length
    // (here 1 s) for the name, then says why it gives up.
    let twin = support::run(&db.url(), &["worker", "--id", "ledger-1", "--lease", "1"]);
    assert_eq!(twin.status.code(), Some(1));
    let said = String::from_utf8_lossy(&twin.stderr);
    assert!(
        said.contains("\"ledger-1\" is held by another live worker"),
        "{said}"
    );
    let bad = support::run(&db.url(), &["worker", "--id", "a\nb"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a name with a newline is a usage error"
    );

    first.kill();
    let before = client.show(run.run_id).await.unwrap();
    assert_eq!(before.summary.status, RunStatus::Running, "killed mid-run");
    // Restarted under its name, the worker takes the run back although its lease has
    // two minutes to go; nobody else could have taken it before then.
    let restarted = WorkerProcess::spawn(&db.url(), &["--id", "ledger-1", "--lease", LEASE]);
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.summary.claims, 2, "claimed, then taken back once");
    // Steps checkpointed before the kill ran once: transactional ones took effect once.
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT step FROM public.cairn_ledger
                                WHERE run_id = $1 AND kind = 'transaction'
                                GROUP BY step HAVING count(*) > 1) t",
    )
    .bind(run.run_id.as_uuid())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(twice, 0);
    assert_eq!(restarted.terminate(), Some(0));
}
