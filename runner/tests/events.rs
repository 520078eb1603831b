//! Events: a run waits for a named event with a timeout, parked durably; an event sent
//! before the wait is kept, each is consumed once, a parked run wakes for one, and a
//! crash while waiting loses nothing. Runs publish values others read.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_runner::{Client, Context, EngineError, Error, Registry, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use common::{TestWorker, fast_config, finished, reaches};
use serde_json::{Value, json};

fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    registry.register("approve", |ctx: Context, timeout_ms: u64| async move {
        ctx.set_event("stage", &"waiting").await?;
        let first: Option<Value> = ctx
            .wait_for_event("approval", Duration::from_millis(timeout_ms))
            .await?;
        let second: Option<Value> = ctx
            .wait_for_event("approval", Duration::from_millis(timeout_ms))
            .await?;
        ctx.set_event("stage", &"done").await?;
        Ok::<Value, Error>(json!([first, second]))
    });
    Arc::new(registry)
}

#[tokio::test]
async fn an_event_sent_before_the_wait_is_kept_and_each_is_consumed_once() {
    let db = TestDb::new().await;
    let registry = registry();
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let run = client
        .start("approve", &300u64, &StartOptions::default())
        .await
        .unwrap();
    // Sent before any worker runs it: kept until the wait takes it.
    client
        .send_event(run.run_id, "approval", &json!({"by": "ada"}))
        .await
        .unwrap();
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(2));
    let done = finished(&client, run.run_id).await;
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(
        done.output,
        Some(json!([{"by": "ada"}, null])),
        "the first wait took the event, the second timed out"
    );
    assert_eq!(
        client.get_event(run.run_id, "stage").await.unwrap(),
        Some(json!("done"))
    );
    let ended = client.send_event(run.run_id, "approval", &json!(1)).await;
    assert!(
        matches!(ended, Err(EngineError::RunEnded { .. })),
        "{ended:?}"
    );
}

#[tokio::test]
async fn a_parked_run_wakes_for_its_event_and_a_crash_loses_nothing() {
    let db = TestDb::new().await;
    let registry = registry();
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    // An hour's timeout: the run parks, no worker holds it.
    let run = client
        .start("approve", &3_600_000u64, &StartOptions::default())
        .await
        .unwrap();
    let first = TestWorker::start(db.new_pool(4).await, Arc::clone(&registry), fast_config(2));
    let parked = reaches(&client, run.run_id, RunStatus::Sleeping).await;
    assert!(parked.lease_owner.is_none());
    assert_eq!(
        client.get_event(run.run_id, "stage").await.unwrap(),
        Some(json!("waiting")),
        "published for callers while it waits"
    );
    // The worker dies while the run waits; events sent meanwhile are kept.
    first.kill().await;
    let sent = Instant::now();
    client
        .send_event(run.run_id, "approval", &json!(1))
        .await
        .unwrap();
    client
        .send_event(run.run_id, "approval", &json!(2))
        .await
        .unwrap();
    let second = TestWorker::start(db.new_pool(4).await, Arc::clone(&registry), fast_config(2));
    let done = finished(&client, run.run_id).await;
    second.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(
        done.output,
        Some(json!([1, 2])),
        "in the order sent, each once"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "woken by the events, not the timeout"
    );
    let consumed: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT data::text, consumed_position FROM cairn.events WHERE run_id = $1 ORDER BY id",
    )
    .bind(run.run_id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(consumed.iter().all(|(_, at)| at.is_some()), "{consumed:?}");
    assert_ne!(consumed[0].1, consumed[1].1, "by two waits");
}
