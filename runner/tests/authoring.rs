//! What a workflow author leans on besides steps: recorded time and randomness that
//! replay the same after a crash, and patch markers that let runs started on old code
//! finish on a worker running new code.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::{Client, Context, Error, Registry, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use common::{TestWorker, crash_and_finish, eventually, fast_config, finished, reaches};
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
    let done = crash_and_finish(&db, &registry, first, run.run_id, 1).await;
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

fn deadlines() -> Arc<Registry> {
    let mut registry = Registry::new();
    registry.register("plod", |ctx: Context, steps: u32| async move {
        for n in 0..steps {
            ctx.step(format!("step {n}"), || async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            })
            .await?;
        }
        Ok::<u32, Error>(steps)
    });
    registry.register("wait a day", |ctx: Context, (): ()| async move {
        ctx.sleep(Duration::from_secs(86_400)).await;
        Ok::<(), Error>(())
    });
    registry.register("impatient", |ctx: Context, (): ()| async move {
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let answer = ctx
            .with_timeout(Duration::from_millis(200))
            .step("slow at first", || {
                let attempts = Arc::clone(&attempts);
                async move {
                    if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Ok(42u32)
                }
            })
            .await?;
        Ok::<u32, Error>(answer)
    });
    registry.set_timeout("plod", Duration::from_millis(700));
    Arc::new(registry)
}

#[tokio::test]
async fn a_run_past_its_deadline_stops_at_a_step_boundary_with_an_alert() {
    let db = TestDb::new().await;
    let registry = deadlines();
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    // The workflow's default timeout (700 ms) against 50 steps of 100 ms.
    let plod = client
        .start("plod", &50u32, &StartOptions::default())
        .await
        .unwrap();
    // A day's sleep with a deadline in two seconds: parked, it wakes at the deadline.
    let sleeper = client
        .start(
            "wait a day",
            &(),
            &StartOptions {
                deadline: Some(chrono::Utc::now() + chrono::Duration::seconds(2)),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
    let plod = finished(&client, plod.run_id).await;
    let sleeper = finished(&client, sleeper.run_id).await;
    let quick = client
        .start("impatient", &(), &StartOptions::default())
        .await
        .unwrap();
    let quick = finished(&client, quick.run_id).await;
    worker.shutdown().await;
    for run in [&plod, &sleeper] {
        assert_eq!(run.summary.status, RunStatus::Failed);
        let error = run.error.as_ref().unwrap();
        assert_eq!(error["category"], "deadline", "{error}");
    }
    assert!(
        plod.steps.len() < 50,
        "stopped early, after {} steps",
        plod.steps.len()
    );
    let alerts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.alerts WHERE kind = 'deadline_exceeded' AND resolved_at IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(alerts, 2);
    let dead = cairn_runner::DeadLetters::new(db.pool().clone())
        .list(10)
        .await
        .unwrap();
    assert_eq!(dead.runs.len(), 2, "both failed runs are dead letters");
    // A step timeout gives up the slow attempt; the retry succeeds.
    assert_eq!(
        quick.summary.status,
        RunStatus::Completed,
        "{:?}",
        quick.error
    );
    let step = &quick.steps[0];
    assert_eq!(step.attempts, 2);
}

#[tokio::test]
async fn a_typed_handle_gives_the_result_the_failure_and_cancels() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("double", |ctx: Context, n: u64| async move {
        ctx.step("double", || async move { Ok(n * 2) }).await
    });
    registry.register("refuse", |_ctx: Context, (): ()| async move {
        Err::<u64, Error>(Error::permanent("refused").with_category("policy"))
    });
    registry.register("nap", |ctx: Context, (): ()| async move {
        ctx.sleep(Duration::from_secs(3600)).await;
        Ok::<(), Error>(())
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let double = client
        .submit::<_, u64>("double", &21u64, &StartOptions::idempotency_key("once"))
        .await
        .unwrap();
    assert_eq!(double.result().await.unwrap(), 42);
    assert_eq!(double.status().await.unwrap(), RunStatus::Completed);
    let again = client
        .submit::<_, u64>("double", &21u64, &StartOptions::idempotency_key("once"))
        .await
        .unwrap();
    assert!(
        !again.created() && again.id() == double.id(),
        "the key named the first run"
    );
    let refused = client
        .submit::<_, u64>("refuse", &(), &StartOptions::default())
        .await
        .unwrap();
    match refused.result().await {
        Err(cairn_runner::RunError::Ended { status, error, .. }) => {
            assert_eq!(status, RunStatus::Failed);
            assert_eq!(error.unwrap()["category"], "policy");
        }
        other => panic!("{other:?}"),
    }
    let nap = client
        .submit::<_, ()>("nap", &(), &StartOptions::default())
        .await
        .unwrap();
    reaches(&client, nap.id(), RunStatus::Sleeping).await;
    assert_eq!(nap.cancel().await.unwrap(), RunStatus::Cancelled);
    assert!(matches!(
        nap.result().await,
        Err(cairn_runner::RunError::Ended {
            status: RunStatus::Cancelled,
            ..
        })
    ));
    worker.shutdown().await;
}
