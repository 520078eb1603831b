//! Small things an author meets: a panicking step leaves a failed step with the panic's
//! message, live workers are known by what they serve, and statuses print as stored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{
    Client, Context, Error, Registry, RunStatus, StartOptions, StepKind, StepStatus,
};
use cairn_testkit::{TestDb, TestWorker};
use common::{eventually, fast_config, finished};

#[tokio::test]
async fn a_panicking_step_is_recorded_as_failed_with_its_message() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("brittle", |ctx: Context, (): ()| async move {
        ctx.step("parse", || async {
            let n: u32 = "twelve".parse().expect("the count is a number");
            Ok(n)
        })
        .await
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone());
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(1));
    let run = client
        .start("brittle", &(), &StartOptions::default())
        .await
        .unwrap();
    let done = finished(&client, run.run_id).await;
    worker.shutdown().await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let step = done
        .steps
        .iter()
        .find(|s| s.name == "parse")
        .expect("the step's record");
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.attempts, 1, "a panic is not retried");
    let error = step.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the step panicked") && error.contains("the count is a number"),
        "{error}"
    );
    assert_eq!(done.error.unwrap()["category"], "panic");
    assert_eq!(format!("{} {}", step.status, step.kind), "failed step");
    assert_eq!(StepKind::Transaction.to_string(), "transaction");
}

#[tokio::test]
async fn live_workers_are_known_by_queue_and_workflow() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("noop", |_: Context, (): ()| async { Ok::<_, Error>(()) });
    let client = Client::new(db.pool().clone());
    assert_eq!(client.workers_serving("default", "noop").await.unwrap(), 0);
    let worker = TestWorker::start(db.pool().clone(), Arc::new(registry), fast_config(1));
    eventually(
        "the worker's announcement",
        Duration::from_secs(20),
        || async { (client.workers_serving("default", "noop").await.unwrap() == 1).then_some(()) },
    )
    .await;
    assert_eq!(client.workers_serving("default", "other").await.unwrap(), 0);
    assert_eq!(client.workers_serving("reports", "noop").await.unwrap(), 0);
    worker.shutdown().await;
    assert_eq!(
        client.workers_serving("default", "noop").await.unwrap(),
        0,
        "a worker that stops cleanly withdraws"
    );
}
