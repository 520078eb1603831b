//! Small things an author meets: a panicking step leaves a failed step with the panic's
//! message, live workers are known by what they serve, statuses print as stored, and
//! runs are found by what users know of them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{
    Client, Context, Error, Registry, RunId, RunStatus, StartOptions, StepKind, StepStatus,
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

#[tokio::test]
async fn runs_are_found_by_workflow_parent_and_key_and_any_output_is_read_in_full() {
    use cairn_runner::RunFilter;

    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("big", |ctx: Context, n: usize| async move {
        // Ids: text that does not compress away below the size `show` leaves out.
        ctx.step("make", || async move {
            Ok((0..n / 36)
                .map(|_| RunId::new().to_string())
                .collect::<String>())
        })
        .await
    });
    registry.register("parent", |ctx: Context, (): ()| async move {
        ctx.child::<_, String>("big", &3usize).await
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone());
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(2));
    let big = client
        .start(
            "big",
            &200_000usize,
            &StartOptions::idempotency_key("big-1"),
        )
        .await
        .unwrap();
    let parent = client
        .start("parent", &(), &StartOptions::default())
        .await
        .unwrap();
    finished(&client, big.run_id).await;
    finished(&client, parent.run_id).await;
    worker.shutdown().await;

    let of = |filter: RunFilter| {
        let client = client.clone();
        async move {
            let runs = client.runs(&filter).await.unwrap();
            runs.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    let bigs = of(RunFilter {
        workflow: Some("big".to_owned()),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(bigs.len(), 2, "the started one and the child");
    let children = of(RunFilter {
        parent: Some(parent.run_id),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(children.len(), 1);
    assert_ne!(children[0], big.run_id);
    let failed = of(RunFilter {
        status: Some(RunStatus::Failed),
        ..RunFilter::default()
    })
    .await;
    assert!(failed.is_empty());
    let found = client.find("big", "big-1").await.unwrap().expect("by key");
    assert_eq!(found.id, big.run_id);
    assert!(client.find("big", "big-2").await.unwrap().is_none());
    assert_eq!(
        client.runs(&RunFilter::default()).await.unwrap().len(),
        3,
        "nothing created"
    );

    // `show` leaves the 200 kB output out; `step_output` reads it whole.
    let shown = client.show(big.run_id).await.unwrap();
    assert!(shown.steps[0].output.is_none());
    let output = client.step_output(big.run_id, 0).await.unwrap().unwrap();
    assert_eq!(output.as_str().map(str::len), Some(200_000 / 36 * 36));
    assert!(client.step_output(big.run_id, 9).await.unwrap().is_none());
}
