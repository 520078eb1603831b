//! Step semantics against a real PostgreSQL: replay, retries, rate-limit parking,
//! durable sleep, idempotency keys, non-determinism, cancellation and shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{
    Client, Context, Error, ErrorClass, Registry, RetryPolicy, RunStatus, SHOWN_OUTPUT_BYTES,
    StartOptions, StepKind, StepStatus,
};
use cairn_testkit::TestDb;
use chrono::Utc;
use common::{Counts, TestWorker, crash_and_finish, eventually, fast_config, finished, reaches};
use serde_json::json;
use tokio::sync::Notify;

fn client(db: &TestDb, registry: &Arc<Registry>) -> Client {
    Client::new(db.pool().clone()).with_registry(Arc::clone(registry))
}

#[tokio::test]
async fn completed_steps_are_not_run_again_after_a_crash() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let gate = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        let gate = Arc::clone(&gate);
        registry.register("three", move |ctx: Context, n: u32| {
            let counts = counts.clone();
            let gate = Arc::clone(&gate);
            async move {
                let a: u32 = ctx
                    .step("a", || async {
                        counts.hit("a");
                        Ok(n + 1)
                    })
                    .await?;
                let b: u32 = ctx
                    .step("b", || async {
                        counts.hit("b");
                        Ok(a * 10)
                    })
                    .await?;
                let c: u32 = ctx
                    .step("c", || async {
                        // The first execution hangs as if its worker froze mid-step.
                        if counts.hit("c") == 1 {
                            gate.notified().await;
                        }
                        Ok(b + 1)
                    })
                    .await?;
                Ok(c)
            }
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let run = client
        .start("three", &1, &StartOptions::default())
        .await
        .unwrap();

    let first = TestWorker::start(db.new_pool(4).await, Arc::clone(&registry), fast_config(2));
    eventually("step c to start", Duration::from_secs(20), || async {
        (counts.get("c") == 1).then_some(())
    })
    .await;
    let done = crash_and_finish(&db, &registry, first, run.run_id, 2).await;

    assert_eq!(done.summary.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!(21)));
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (1, 1),
        "completed steps re-ran"
    );
    assert_eq!(
        counts.get("c"),
        2,
        "the step in flight runs again (at-least-once)"
    );
    assert_eq!(done.summary.claims, 2);
    let names: Vec<&str> = done.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(
        done.steps
            .iter()
            .all(|s| s.status == StepStatus::Completed && s.attempts == 1)
    );
}

#[tokio::test]
async fn transient_errors_are_retried_with_backoff_then_fail_for_good() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("flaky", move |ctx: Context, fail_times: u32| {
            let counts = counts.clone();
            async move {
                let policy = RetryPolicy::attempts(4)
                    .backoff(Duration::from_millis(5), Duration::from_millis(20));
                ctx.with_retry(policy)
                    .step("call", || async {
                        let attempt = counts.hit("call");
                        if attempt <= fail_times {
                            Err(Error::transient(format!("service unavailable #{attempt}")))
                        } else {
                            Ok(attempt)
                        }
                    })
                    .await
            }
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));

    let recovers = client
        .start("flaky", &2, &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, recovers.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!(3)));
    assert_eq!(run.steps[0].attempts, 3);
    assert_eq!(run.steps[0].status, StepStatus::Completed);

    let hopeless = client
        .start("flaky", &100, &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, hopeless.run_id).await;
    worker.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    assert_eq!(run.steps[0].attempts, 4, "exactly max_attempts attempts");
    assert_eq!(run.steps[0].status, StepStatus::Failed);
    assert_eq!(
        run.steps[0].last_error.as_deref(),
        Some("service unavailable #7")
    );
    let error = run.error.expect("a failed run records its error");
    assert_eq!(
        error["class"], "permanent",
        "exhausted retries are permanent: {error}"
    );
    assert_eq!(error["message"], "service unavailable #7");
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("bad", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            async move {
                ctx.step("validate", || async {
                    counts.hit("validate");
                    Err::<(), _>(
                        Error::permanent("field `email` is required").with_category("validation"),
                    )
                })
                .await
            }
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(1));
    let started = client
        .start("bad", &(), &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, started.run_id).await;
    worker.shutdown().await;
    assert_eq!(counts.get("validate"), 1);
    assert_eq!(run.summary.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert_eq!(error["category"], "validation");
    assert_eq!(error["message"], "field `email` is required");
}

#[tokio::test]
async fn a_rate_limited_step_parks_the_run_without_holding_a_worker() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("throttled", move |ctx: Context, wait_ms: i64| {
            let counts = counts.clone();
            async move {
                ctx.step("fetch", || async {
                    if counts.hit("fetch") == 1 {
                        let until = Utc::now() + chrono::Duration::milliseconds(wait_ms);
                        return Err(Error::rate_limited_until(until, "429 Too Many Requests"));
                    }
                    Ok("page".to_owned())
                })
                .await
            }
        });
        registry.register("quick", |ctx: Context, (): ()| async move {
            ctx.step("only", || async { Ok(1) }).await
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    // One slot: if the parked run held it, `quick` could not run meanwhile.
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(1));

    let throttled = client
        .start("throttled", &3_000, &StartOptions::default())
        .await
        .unwrap();
    let parked = reaches(&client, throttled.run_id, RunStatus::Parked).await;
    assert!(parked.lease_owner.is_none(), "a parked run holds no lease");
    assert!(
        parked.summary.wake_at > Utc::now(),
        "it wakes at the rate limit's end"
    );
    assert_eq!(parked.steps[0].throttled, 1);
    assert_eq!(
        parked.steps[0].attempts, 0,
        "throttling does not use up attempts"
    );

    let quick = client
        .start("quick", &(), &StartOptions::default())
        .await
        .unwrap();
    let quick = finished(&client, quick.run_id).await;
    assert_eq!(quick.summary.status, RunStatus::Completed);
    assert_eq!(
        client.show(throttled.run_id).await.unwrap().summary.status,
        RunStatus::Parked,
        "the other run completed while the throttled one was still parked"
    );

    let done = finished(&client, throttled.run_id).await;
    worker.shutdown().await;
    assert_eq!(done.summary.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!("page")));
    assert!(done.summary.finished_at.unwrap() >= parked.summary.wake_at);
    assert_eq!((done.steps[0].attempts, done.steps[0].throttled), (1, 1));
}

#[tokio::test]
async fn durable_sleep_parks_the_run_and_resumes_after_it() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("nap", move |ctx: Context, ms: u64| {
            let counts = counts.clone();
            async move {
                ctx.step("before", || async {
                    counts.hit("before");
                    Ok(())
                })
                .await?;
                ctx.sleep(Duration::from_millis(ms)).await;
                ctx.step("after", || async {
                    counts.hit("after");
                    Ok(())
                })
                .await?;
                Ok(())
            }
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let started = client
        .start("nap", &1_500, &StartOptions::default())
        .await
        .unwrap();
    let sleeping = reaches(&client, started.run_id, RunStatus::Sleeping).await;
    assert!(sleeping.lease_owner.is_none());
    assert_eq!(sleeping.steps.last().unwrap().kind, StepKind::Sleep);
    assert_eq!(counts.get("after"), 0);

    // A worker restart while the run sleeps changes nothing.
    worker.shutdown().await;
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let done = finished(&client, started.run_id).await;
    worker.shutdown().await;
    assert_eq!(done.summary.status, RunStatus::Completed);
    assert_eq!((counts.get("before"), counts.get("after")), (1, 1));
    assert_eq!(
        done.summary.claims, 2,
        "claimed once before and once after the timer"
    );
    let slept = done.summary.finished_at.unwrap() - sleeping.steps[0].started_at;
    assert!(
        slept >= chrono::Duration::milliseconds(1_500),
        "woke after {slept}"
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_existing_run() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("noop", |_: Context, (): ()| async { Ok(()) });
    registry.register("other", |_: Context, (): ()| async { Ok(()) });
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let key = StartOptions::idempotency_key("order-42");
    let first = client.start("noop", &(), &key).await.unwrap();
    let again = client.start("noop", &(), &key).await.unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(first.run_id, again.run_id);
    let other = client.start("other", &(), &key).await.unwrap();
    assert!(other.created, "keys are unique per workflow");
    assert_ne!(other.run_id, first.run_id);
    assert_eq!(client.list(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_workflows_and_bad_inputs_are_refused_before_a_run_exists() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("typed", |_: Context, n: u32| async move { Ok(n) });
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let err = client
        .start("nope", &(), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("unknown workflow `nope`"), "{err}");
    assert!(
        err.to_string().contains("typed"),
        "names the known workflows: {err}"
    );
    let err = client
        .start("typed", &"seven", &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid input for workflow `typed`"),
        "{err}"
    );
    assert!(client.list(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_changed_step_name_fails_the_run_with_a_non_determinism_error() {
    let db = TestDb::new().await;
    let gate = Arc::new(Notify::new());
    let reached = Arc::new(Notify::new());
    let mut v1 = Registry::new();
    {
        let gate = Arc::clone(&gate);
        let reached = Arc::clone(&reached);
        v1.register("evolving", move |ctx: Context, (): ()| {
            let gate = Arc::clone(&gate);
            let reached = Arc::clone(&reached);
            async move {
                ctx.step("fetch contacts", || async { Ok(1) }).await?;
                ctx.step("hang", || async {
                    reached.notify_one();
                    gate.notified().await;
                    Ok(2)
                })
                .await
            }
        });
    }
    let mut v2 = Registry::new();
    v2.register("evolving", |ctx: Context, (): ()| async move {
        ctx.step("fetch companies", || async { Ok(1) }).await
    });
    let (v1, v2) = (Arc::new(v1), Arc::new(v2));
    let client = client(&db, &v1);
    let started = client
        .start("evolving", &(), &StartOptions::default())
        .await
        .unwrap();
    let old = TestWorker::start(db.new_pool(4).await, v1, fast_config(1));
    reached.notified().await;
    old.kill().await;

    let new = TestWorker::start(db.new_pool(4).await, v2, fast_config(1));
    let run = finished(&client, started.run_id).await;
    new.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    let error = run.error.unwrap();
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("non-determinism"), "{message}");
    assert!(
        message.contains("`fetch contacts`") && message.contains("`fetch companies`"),
        "{message}"
    );
    assert_eq!(error["category"], "non_determinism");
}

#[tokio::test]
async fn cancellation_stops_a_run_at_the_next_step_boundary() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let gate = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        let gate = Arc::clone(&gate);
        registry.register("long", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            let gate = Arc::clone(&gate);
            async move {
                ctx.step("first", || async {
                    counts.hit("first");
                    gate.notified().await;
                    Ok(())
                })
                .await?;
                ctx.step("second", || async {
                    counts.hit("second");
                    Ok(())
                })
                .await?;
                Ok(())
            }
        });
        registry.register("sleepy", |ctx: Context, (): ()| async move {
            ctx.sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));

    let running = client
        .start("long", &(), &StartOptions::default())
        .await
        .unwrap();
    eventually(
        "the first step to start",
        Duration::from_secs(20),
        || async { (counts.get("first") == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        client.cancel(running.run_id).await.unwrap(),
        RunStatus::Running
    );
    gate.notify_one();
    let run = finished(&client, running.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Cancelled);
    assert_eq!(counts.get("second"), 0, "no step starts after cancellation");
    assert_eq!(
        run.steps.len(),
        1,
        "the step in flight completed and was checkpointed"
    );

    let sleeping = client
        .start("sleepy", &(), &StartOptions::default())
        .await
        .unwrap();
    reaches(&client, sleeping.run_id, RunStatus::Sleeping).await;
    assert_eq!(
        client.cancel(sleeping.run_id).await.unwrap(),
        RunStatus::Cancelled
    );
    worker.shutdown().await;
    assert_eq!(
        client.show(sleeping.run_id).await.unwrap().summary.status,
        RunStatus::Cancelled
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_step_and_releases_the_run() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let gate = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        let gate = Arc::clone(&gate);
        registry.register("two", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            let gate = Arc::clone(&gate);
            async move {
                ctx.step("one", || async {
                    if counts.hit("one") == 1 {
                        gate.notified().await;
                    }
                    Ok(())
                })
                .await?;
                ctx.step("two", || async {
                    counts.hit("two");
                    Ok(())
                })
                .await?;
                Ok(())
            }
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(1));
    let started = client
        .start("two", &(), &StartOptions::default())
        .await
        .unwrap();
    eventually("step one to start", Duration::from_secs(20), || async {
        (counts.get("one") == 1).then_some(())
    })
    .await;
    let shutdown = tokio::spawn(worker.shutdown());
    gate.notify_one();
    shutdown.await.unwrap();

    let released = client.show(started.run_id).await.unwrap();
    assert_eq!(
        released.summary.status,
        RunStatus::Pending,
        "handed back to the queue"
    );
    assert!(released.lease_owner.is_none());
    assert_eq!(
        released.steps.len(),
        1,
        "the step in flight finished and was checkpointed"
    );
    assert_eq!(counts.get("two"), 0);

    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(1));
    let run = finished(&client, started.run_id).await;
    worker.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!((counts.get("one"), counts.get("two")), (1, 1));
}

#[tokio::test]
async fn a_panicking_workflow_fails_its_run_instead_of_looping() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register("panics", |ctx: Context, (): ()| async move {
        let n: u32 = ctx.step("fine", || async { Ok(1) }).await?;
        if n == 1 {
            panic!("invariant broken");
        }
        Ok(n)
    });
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(1));
    let started = client
        .start("panics", &(), &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, started.run_id).await;
    worker.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert_eq!(error["category"], "panic");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("invariant broken")
    );
    assert_eq!(run.summary.claims, 1);
}

#[test]
fn errors_convert_with_their_class_and_database_errors_by_sqlstate() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert_eq!(Error::from(io).class(), ErrorClass::Transient);
    assert_eq!(
        Error::from(sqlx::Error::PoolTimedOut).class(),
        ErrorClass::Transient
    );
    assert_eq!(
        Error::from(sqlx::Error::RowNotFound).class(),
        ErrorClass::Permanent
    );
}

#[tokio::test]
async fn a_runs_display_leaves_out_large_outputs_which_replay_reads_in_full() {
    let db = TestDb::new().await;
    let counts = Counts::default();
    let mut registry = Registry::new();
    {
        let counts = counts.clone();
        registry.register("big output", move |ctx: Context, (): ()| {
            let counts = counts.clone();
            async move {
                let page: String = ctx
                    .step("page", || async {
                        counts.hit("page");
                        Ok(incompressible(100_000))
                    })
                    .await?;
                let small: u32 = ctx.step("small", || async { Ok(7) }).await?;
                // The timer parks the run, so what follows runs on a replay that reads
                // the page back from its checkpoint.
                ctx.sleep(Duration::from_millis(200)).await;
                Ok(json!({ "len": page.len(), "intact": page == incompressible(100_000), "small": small }))
            }
        });
    }
    let registry = Arc::new(registry);
    let client = client(&db, &registry);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(1));
    let started = client
        .start("big output", &(), &StartOptions::default())
        .await
        .unwrap();

    let run = finished(&client, started.run_id).await;
    worker.shutdown().await;

    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(
        run.output,
        Some(json!({ "len": 100_000, "intact": true, "small": 7 }))
    );
    assert_eq!(
        counts.get("page"),
        1,
        "the page was replayed, not run again"
    );
    let page = &run.steps[0];
    assert_eq!(page.name, "page");
    assert_eq!(
        page.output, None,
        "a large output is left out of the display"
    );
    let stored = page.output_stored_bytes.expect("its stored size is given");
    assert!(stored > SHOWN_OUTPUT_BYTES, "stored in {stored} bytes");
    let small = &run.steps[1];
    assert_eq!(small.output, Some(json!(7)));
    assert!(
        small
            .output_stored_bytes
            .is_some_and(|n| n <= SHOWN_OUTPUT_BYTES)
    );
}

/// Hex digits from a xorshift generator: text that compression barely shrinks.
fn incompressible(len: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut text = String::with_capacity(len + 16);
    while text.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(&format!("{state:016x}"));
    }
    text.truncate(len);
    text
}
