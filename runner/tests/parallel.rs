//! Steps awaited together in one run (`futures::join!`): a durable wait in one branch
//! (a sleep, a rate limit, a long backoff) blocks only that branch; the run parks once
//! every branch waits, and no step beside the wait is dropped half done.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{Client, Context, Error, Registry, RunStatus, StartOptions, StepStatus};
use cairn_testkit::TestDb;
use chrono::Utc;
use common::{Counts, TestWorker, crash_and_finish, eventually, fast_config, finished, reaches};
use tokio::sync::Notify;

async fn slow_step(ctx: &Context, counts: &Counts, name: &str, ms: u64) -> Result<u64, Error> {
    ctx.step(name, || async {
        counts.hit(name);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    })
    .await
}

#[tokio::test]
async fn a_sleep_beside_steps_blocks_only_its_branch() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("joined", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            async move {
                let (a, (), b) = futures::join!(
                    slow_step(&ctx, &counts, "a", 300),
                    ctx.sleep(Duration::from_secs(2)),
                    slow_step(&ctx, &counts, "b", 600),
                );
                let c = slow_step(&ctx, &counts, "c", 1).await?;
                Ok(a? + b? + c)
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(2));
    let started = client
        .start("joined", &(), &StartOptions::default())
        .await
        .unwrap();
    // The run parks on the sleep only after both steps beside it have completed.
    let sleeping = reaches(&client, started.run_id, RunStatus::Sleeping).await;
    let completed: Vec<&str> = sleeping
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        completed.contains(&"a") && completed.contains(&"b"),
        "{completed:?}"
    );
    assert!(
        sleeping.lease_owner.is_none(),
        "no worker holds a parked run"
    );
    let done = finished(&client, started.run_id).await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output, Some(serde_json::json!(901)));
    for step in ["a", "b", "c"] {
        assert_eq!(counts.get(step), 1, "step {step} ran once");
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_branch_waits_while_the_other_keeps_stepping() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("throttled", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            async move {
                let limited = ctx.step("limited", || async {
                    if counts.hit("limited") == 1 {
                        let until = Utc::now() + chrono::Duration::milliseconds(1500);
                        return Err(Error::rate_limited_until(until, "429"));
                    }
                    Ok(1u64)
                });
                let steady = async {
                    let mut sum = 0;
                    for n in 0..6 {
                        sum += slow_step(&ctx, &counts, &format!("steady {n}"), 150).await?;
                    }
                    Ok::<u64, Error>(sum)
                };
                let (limited, steady) = futures::join!(limited, steady);
                Ok(limited? + steady?)
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(2));
    let started = client
        .start("throttled", &(), &StartOptions::default())
        .await
        .unwrap();
    let done = finished(&client, started.run_id).await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(
        counts.get("limited"),
        2,
        "once refused, once after the wait"
    );
    for n in 0..6 {
        assert_eq!(counts.get(&format!("steady {n}")), 1, "steady {n} ran once");
    }
    let limited = done.steps.iter().find(|s| s.name == "limited").unwrap();
    assert_eq!((limited.attempts, limited.throttled), (1, 1));
    worker.shutdown().await;
}

/// Branches whose steps finish in one order the first time and in another after a
/// crash replay from their own histories: no step is confused with another branch's.
#[tokio::test]
async fn forked_branches_replay_whatever_order_their_steps_finish_in() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let gate = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        let gate = Arc::clone(&gate);
        registry.register("forked", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            let gate = Arc::clone(&gate);
            async move {
                let first = counts.get("b1") == 0;
                // The first time, branch b races ahead; after the crash, branch a.
                let (a_ms, b_ms) = if first { (300, 0) } else { (0, 300) };
                let [a, b] = ctx.fork();
                let left = async {
                    let one = slow_step(&a, &counts, "a1", a_ms).await?;
                    let two = slow_step(&a, &counts, "a2", 1).await?;
                    Ok::<u64, Error>(one + two)
                };
                let right = async {
                    let one = slow_step(&b, &counts, "b1", b_ms).await?;
                    let two = slow_step(&b, &counts, "b2", 2).await?;
                    let three = b
                        .step("b3", || async {
                            if counts.hit("b3") == 1 {
                                gate.notified().await;
                            }
                            Ok(3u64)
                        })
                        .await?;
                    Ok::<u64, Error>(one + two + three)
                };
                let (left, right) = futures::join!(left, right);
                let per_item = ctx
                    .parallel(2, [10u64, 20, 30], |ctx, n| async move {
                        ctx.step(format!("item {n}"), || async move { Ok(n) }).await
                    })
                    .await;
                let items: u64 = per_item.into_iter().sum::<Result<u64, Error>>()?;
                Ok(left? + right? + items)
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let run = client
        .start("forked", &(), &StartOptions::default())
        .await
        .unwrap();
    let first = TestWorker::start(db.new_pool(4).await, Arc::clone(&registry), fast_config(2));
    // b3 hangs; a2's checkpoint (not just its body) is written before the crash.
    eventually(
        "b3 to start and a2's checkpoint",
        Duration::from_secs(20),
        || async {
            let a2: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM cairn.steps
              WHERE run_id = $1 AND name = 'a2' AND status = 'completed'",
            )
            .bind(run.run_id)
            .fetch_one(db.pool())
            .await
            .unwrap();
            (counts.get("b3") == 1 && a2 == 1).then_some(())
        },
    )
    .await;
    let done = crash_and_finish(&db, &registry, first, run.run_id, 2).await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output, Some(serde_json::json!(300 + 1 + 2 + 3 + 60)));
    for step in ["a1", "a2", "b1", "b2"] {
        assert_eq!(
            counts.get(step),
            1,
            "{step} ran once: replayed from its branch"
        );
    }
    assert_eq!(counts.get("b3"), 2, "the step in flight ran again");
    let branches: Vec<(&str, &str)> = done
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.branch.as_str()))
        .collect();
    assert!(
        branches.contains(&("a2", "0.0")) && branches.contains(&("b3", "0.1")),
        "{branches:?}"
    );
    assert!(branches.contains(&("item 30", "1.2")), "{branches:?}");
}
