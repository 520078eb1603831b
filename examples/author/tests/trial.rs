//! The trial workflow tested as its author would: on a real PostgreSQL (from
//! `DATABASE_URL`, else a container), with two weeks skipped on a test clock and a
//! worker crashed between a side effect and its checkpoint.

use std::sync::Arc;
use std::time::Duration;

use author_example::{Outcome, TRIAL, prepare, register};
use cairn::sqlx;
use cairn::{
    Client, Clock, CrashPlan, CrashPoint, Registry, RunHandle, RunStatus, StartOptions,
    WorkerConfig,
};
use cairn_testkit::{TestDb, TestWorker, skip_to_next_wake};

fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    register(&mut registry).unwrap();
    Arc::new(registry)
}

/// A worker on `clock` that takes over a crashed worker's runs within a second.
fn config(clock: &Clock) -> WorkerConfig {
    WorkerConfig {
        clock: clock.clone(),
        lease: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// Waits (20 s at most) until the run is in `status`.
async fn until(run: &RunHandle<Outcome>, status: RunStatus) {
    for _ in 0..400 {
        if run.status().await.unwrap() == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {} never became {status}", run.id());
}

/// Lets the trial's two weeks pass, sends the upgrade to `plan` and returns the outcome.
async fn upgrade_after_trial(
    client: &Client,
    clock: &Clock,
    run: &RunHandle<Outcome>,
    plan: &str,
) -> Outcome {
    until(run, RunStatus::Sleeping).await;
    skip_to_next_wake(client, clock)
        .await
        .expect("the trial sleeps");
    // An upgrade sent before the run waits for it is kept for the wait.
    client
        .send_event(run.id(), "upgraded", &plan)
        .await
        .unwrap();
    run.result_within(Some(Duration::from_secs(30)))
        .await
        .unwrap()
}

async fn counts(db: &TestDb) -> (i64, i64) {
    let accounts = sqlx::query_scalar("SELECT count(*) FROM trial_accounts")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let emails = sqlx::query_scalar("SELECT count(*) FROM welcome_emails")
        .fetch_one(db.pool())
        .await
        .unwrap();
    (accounts, emails)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_who_upgrades_after_two_weeks_converts() {
    let db = TestDb::new().await;
    prepare(db.pool()).await.unwrap();
    let clock = Clock::skippable();
    let client = Client::new(db.pool().clone())
        .with_registry(registry())
        .with_clock(clock.clone());
    let worker = TestWorker::start(db.pool().clone(), registry(), config(&clock));
    let run = client
        .submit::<_, Outcome>(TRIAL, &"ada@example.com", &StartOptions::default())
        .await
        .unwrap();
    let outcome = upgrade_after_trial(&client, &clock, &run, "pro").await;
    worker.shutdown().await;
    assert_eq!(
        outcome,
        Outcome::Converted {
            plan: "pro".to_owned()
        }
    );
    assert_eq!(counts(&db).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_who_never_upgrades_expires_after_the_grace_period() {
    let db = TestDb::new().await;
    prepare(db.pool()).await.unwrap();
    let clock = Clock::skippable();
    let client = Client::new(db.pool().clone()).with_clock(clock.clone());
    let worker = TestWorker::start(db.pool().clone(), registry(), config(&clock));
    let run = client
        .submit::<_, Outcome>(TRIAL, &"bo@example.com", &StartOptions::default())
        .await
        .unwrap();
    until(&run, RunStatus::Sleeping).await;
    skip_to_next_wake(&client, &clock)
        .await
        .expect("the trial sleeps");
    // The wait for the upgrade is recorded before the run parks again.
    for _ in 0..400 {
        let detail = client.show(run.id()).await.unwrap();
        if detail.steps.iter().any(|s| s.name.contains("upgraded"))
            && detail.summary.status == RunStatus::Sleeping
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    skip_to_next_wake(&client, &clock)
        .await
        .expect("the grace period runs");
    let outcome = run
        .result_within(Some(Duration::from_secs(30)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(outcome, Outcome::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_welcome_and_its_checkpoint_sends_one_welcome() {
    let db = TestDb::new().await;
    prepare(db.pool()).await.unwrap();
    let clock = Clock::skippable();
    let client = Client::new(db.pool().clone()).with_clock(clock.clone());
    let doomed = TestWorker::start(
        db.pool().clone(),
        registry(),
        WorkerConfig {
            crash: CrashPlan::at("send welcome", CrashPoint::BeforeCheckpoint),
            ..config(&clock)
        },
    );
    let run = client
        .submit::<_, Outcome>(TRIAL, &"cy@example.com", &StartOptions::default())
        .await
        .unwrap();
    doomed.stopped().await;
    // The email went out; its step was not recorded.
    assert_eq!(counts(&db).await, (1, 1));
    let healthy = TestWorker::start(db.pool().clone(), registry(), config(&clock));
    let outcome = upgrade_after_trial(&client, &clock, &run, "team").await;
    healthy.shutdown().await;
    assert_eq!(
        outcome,
        Outcome::Converted {
            plan: "team".to_owned()
        }
    );
    // The step ran twice; the account and the email exist once.
    assert_eq!(counts(&db).await, (1, 1));
    let welcome = client.show(run.id()).await.unwrap();
    let step = welcome
        .steps
        .iter()
        .find(|s| s.name == "send welcome")
        .unwrap();
    assert_eq!(step.status, cairn::StepStatus::Completed);
}
