//! What a workflow author leans on besides steps: recorded time and randomness that
//! replay the same after a crash, and patch markers that let runs started on old code
//! finish on a worker running new code.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::{Client, Context, Error, Registry, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use common::{TestWorker, eventually, fast_config, finished, reaches};
use serde_json::json;
use tokio::sync::Notify;

#[tokio::test]
async fn recorded_time_randomness_and_ids_replay_the_same_after_a_crash() {
    let db = TestDb::new().await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let gate = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let seen = Arc::clone(&seen);
        let gate = Arc::clone(&gate);
        registry.register("recorded", move |ctx: Context, (): ()| {
            let seen = Arc::clone(&seen);
            let gate = Arc::clone(&gate);
            async move {
                let values = format!(
                    "{} {} {}",
                    ctx.now().await?.to_rfc3339(),
                    ctx.random().await?,
                    ctx.uuid().await?
                );
                seen.lock().unwrap().push(values.clone());
                let executions = seen.lock().unwrap().len();
                ctx.step("hang the first time", || async {
                    if executions == 1 {
                        gate.notified().await;
                    }
                    Ok(())
                })
                .await?;
                Ok(values)
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let run = client
        .start("recorded", &(), &StartOptions::default())
        .await
        .unwrap();
    let first = TestWorker::start(db.new_pool(4).await, Arc::clone(&registry), fast_config(1));
    eventually("the first execution", Duration::from_secs(20), || async {
        (!seen.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    first.kill().await;
    let second = TestWorker::start(db.new_pool(4).await, Arc::clone(&registry), fast_config(1));
    let done = finished(&client, run.run_id).await;
    second.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "executed twice: {seen:?}");
    assert_eq!(seen[0], seen[1], "the replay read the recorded values");
    assert_eq!(done.output, Some(json!(seen[0])));
}

/// The same workflow, version 1 and version 2 (a changed second step behind a patch).
fn pricing(registry: &mut Registry, version: u32) {
    registry.register("pricing", move |ctx: Context, (): ()| async move {
        let base: u64 = ctx.step("base", || async { Ok(10u64) }).await?;
        let price = if version >= 2 && ctx.patched("cents").await? {
            ctx.step("price in cents", || async move { Ok(base * 100 + 99) })
                .await?
        } else {
            ctx.step("price", || async move { Ok(base + 1) }).await?
        };
        ctx.sleep(Duration::from_secs(2)).await;
        let label: String = ctx
            .step("label", || async move { Ok(format!("v{version}:{price}")) })
            .await?;
        Ok::<String, Error>(label)
    });
}

#[tokio::test]
async fn a_run_started_on_v1_finishes_on_a_v2_worker_along_the_old_path() {
    let db = TestDb::new().await;
    let mut v1 = Registry::new();
    pricing(&mut v1, 1);
    let v1 = Arc::new(v1);
    let mut v2 = Registry::new();
    pricing(&mut v2, 2);
    let v2 = Arc::new(v2);
    let client = Client::new(db.pool().clone());
    let old = client
        .start("pricing", &(), &StartOptions::default())
        .await
        .unwrap();
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&v1), fast_config(2));
    reaches(&client, old.run_id, RunStatus::Sleeping).await;
    worker.shutdown().await;
    // The fleet is upgraded while the run sleeps.
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&v2), fast_config(2));
    let new = client
        .start("pricing", &(), &StartOptions::default())
        .await
        .unwrap();
    let old = finished(&client, old.run_id).await;
    let new = finished(&client, new.run_id).await;
    worker.shutdown().await;
    assert_eq!(old.summary.status, RunStatus::Completed, "{:?}", old.error);
    assert_eq!(
        old.output,
        Some(json!("v2:11")),
        "the old path, on the new code"
    );
    assert_eq!(
        new.output,
        Some(json!("v2:1099")),
        "a new run takes the patch"
    );
    let names: Vec<&str> = new.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "base",
            "cairn.patch cents",
            "price in cents",
            "sleep",
            "label"
        ]
    );
}
