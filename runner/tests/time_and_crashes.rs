//! The test kit's skippable clock and crash plans: a day-long sleep and a 30-day
//! deadline tested in moments, and crashes on either side of a step's checkpoint.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{
    Client, Clock, Context, CrashPlan, CrashPoint, Error, Registry, RunStatus, StartOptions,
    WorkerConfig,
};
use cairn_testkit::{TestDb, TestWorker, skip_to_next_wake};
use chrono::{DateTime, Utc};
use common::{Counts, fast_config, finished, reaches};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn with_clock(clock: &Clock) -> WorkerConfig {
    WorkerConfig {
        clock: clock.clone(),
        ..fast_config(2)
    }
}

#[tokio::test]
async fn a_day_long_sleep_is_tested_by_skipping_the_clock() {
    let db = TestDb::new().await;
    let clock = Clock::skippable();
    let mut registry = Registry::new();
    registry.register("nap", |ctx: Context, (): ()| async move {
        let before = ctx.now().await?;
        ctx.sleep(DAY).await;
        let after = ctx.now().await?;
        Ok::<_, Error>((before, after))
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_clock(clock.clone());
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), with_clock(&clock));
    let run = client
        .start("nap", &(), &StartOptions::default())
        .await
        .unwrap()
        .run_id;
    let asleep = reaches(&client, run, RunStatus::Sleeping).await;
    assert!(
        asleep.lease_owner.is_none(),
        "a sleeping run holds no worker"
    );

    let woke = skip_to_next_wake(&client, &clock)
        .await
        .expect("the run waits");
    let done = finished(&client, run).await;
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    let (before, after): (DateTime<Utc>, DateTime<Utc>) =
        serde_json::from_value(done.output.unwrap()).unwrap();
    assert!(
        after - before >= chrono::Duration::hours(24),
        "{before} .. {after}"
    );
    assert!(after >= woke, "the run woke at the skipped-to time");
    assert!(
        Utc::now() - before < chrono::Duration::hours(1),
        "the wall clock did not move a day"
    );
}

#[tokio::test]
async fn a_thirty_day_deadline_stops_a_waiting_run_when_the_clock_reaches_it() {
    let db = TestDb::new().await;
    let clock = Clock::skippable();
    let mut registry = Registry::new();
    registry.register("approval", |ctx: Context, (): ()| async move {
        let answer: Option<bool> = ctx.wait_for_event("approved", 60 * DAY).await?;
        ctx.step("act", || async move { Ok(answer) }).await
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_clock(clock.clone());
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), with_clock(&clock));
    let deadline = clock.now() + chrono::Duration::days(30);
    let run = client
        .start(
            "approval",
            &(),
            &StartOptions {
                deadline: Some(deadline),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap()
        .run_id;
    reaches(&client, run, RunStatus::Sleeping).await;
    let woke = skip_to_next_wake(&client, &clock)
        .await
        .expect("the run waits");
    // Postgres keeps microseconds.
    assert!(
        (woke - deadline)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .abs()
            <= 1,
        "the park wakes at the deadline ({deadline}), not at the timeout: {woke}"
    );
    let done = finished(&client, run).await;
    worker.shutdown().await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.expect("an error");
    assert_eq!(error["category"], "deadline", "{error}");
    assert!(done.steps.iter().all(|s| s.name != "act"));
}

/// A workflow whose middle step has a side effect counted in `effects`.
fn charging(effects: &Counts) -> Arc<Registry> {
    let mut registry = Registry::new();
    let effects = effects.clone();
    registry.register("charge", move |ctx: Context, (): ()| {
        let effects = effects.clone();
        async move {
            ctx.step("prepare", || async { Ok(()) }).await?;
            ctx.step("charge card", || async { Ok(effects.hit("charge card")) })
                .await?;
            ctx.step("send receipt", || async { Ok(effects.hit("send receipt")) })
                .await
        }
    });
    Arc::new(registry)
}

/// Runs `charge` on a worker that crashes at `point` of "charge card", then on a
/// healthy one; returns how often each side effect happened.
async fn crash_at(point: CrashPoint) -> Counts {
    let db = TestDb::new().await;
    let effects = Counts::default();
    let registry = charging(&effects);
    let client = Client::new(db.pool().clone());
    let crash = CrashPlan::at("charge card", point);
    let doomed = TestWorker::start(
        db.new_pool(4).await,
        Arc::clone(&registry),
        WorkerConfig {
            crash: crash.clone(),
            ..fast_config(1)
        },
    );
    let run = client
        .start("charge", &(), &StartOptions::default())
        .await
        .unwrap()
        .run_id;
    doomed.stopped().await;
    assert_eq!(effects.get("send receipt"), 0, "the worker died before it");
    let healthy = TestWorker::start(db.new_pool(4).await, registry, fast_config(1));
    let done = finished(&client, run).await;
    healthy.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.summary.claims, 2, "taken over after the crash");
    effects
}

#[tokio::test]
async fn a_crash_before_the_checkpoint_runs_the_step_again() {
    let effects = crash_at(CrashPoint::BeforeCheckpoint).await;
    assert_eq!(effects.get("charge card"), 2, "unrecorded, so done again");
    assert_eq!(effects.get("send receipt"), 1);
}

#[tokio::test]
async fn a_crash_after_the_checkpoint_never_runs_the_step_again() {
    let effects = crash_at(CrashPoint::AfterCheckpoint).await;
    assert_eq!(effects.get("charge card"), 1, "recorded, so never again");
    assert_eq!(effects.get("send receipt"), 1);
}
