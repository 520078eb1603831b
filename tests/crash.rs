//! A `cairn worker` process SIGKILLed mid-workflow: another worker process takes the run
//! over once the lease expires and continues after its last completed step.

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.steps WHERE run_id = $1 AND status = 'completed'",
        )
        .bind(run.run_id)
        .fetch_one(db.pool())
        .await
        .unwrap();
        if done >= 12 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker made no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
