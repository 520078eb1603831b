//! The dead-letter list of runs against a real PostgreSQL: what a failed run shows
//! (category, chain, failing step, attempts), and retries that resume from the failed
//! step without executing earlier steps again.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::dead_letter::DeadLetterError;
use cairn_runner::{
    Client, Context, DeadLetterId, DeadLetters, Error, Registry, RetryPolicy, RunStatus,
    StartOptions, StepStatus,
};
use cairn_testkit::TestDb;
use common::{TestWorker, fast_config, finished};
use serde_json::json;

/// How often each named step body ran, and whether the "broken" dependency is fixed.
#[derive(Clone, Default)]
struct World {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    fixed: Arc<AtomicBool>,
}

impl World {
    fn hit(&self, name: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
    }

    fn counts(&self) -> Vec<(String, u32)> {
        let mut counts: Vec<_> = self.counts.lock().unwrap().clone().into_iter().collect();
        counts.sort();
        counts
    }

    fn fixed(&self) -> bool {
        self.fixed.load(Ordering::SeqCst)
    }
}

fn counts(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

/// extract → transform (permanent error until fixed) → load.
async fn pipeline(ctx: Context, world: World) -> Result<u32, Error> {
    let extracted: u32 = ctx
        .step("extract", || async {
            world.hit("extract");
            Ok(20)
        })
        .await?;
    let transformed: u32 = ctx
        .step("transform", || async {
            world.hit("transform");
            if world.fixed() {
                Ok(extracted + 1)
            } else {
                Err(Error::permanent(std::io::Error::other(
                    "column `amount` is text, expected numeric",
                ))
                .with_category("validation"))
            }
        })
        .await?;
    ctx.step("load", || async {
        world.hit("load");
        Ok(transformed * 2)
    })
    .await
}

/// a → enrich (transient, fails until fixed) or, when it gives up, fallback → check
/// (fails when the fallback was taken).
async fn with_fallback(ctx: Context, world: World) -> Result<String, Error> {
    ctx.step("a", || async {
        world.hit("a");
        Ok(())
    })
    .await?;
    let enriched = ctx
        .with_retry(
            RetryPolicy::attempts(3).backoff(Duration::from_millis(5), Duration::from_millis(10)),
        )
        .step("enrich", || async {
            world.hit("enrich");
            if world.fixed() {
                Ok("enriched".to_owned())
            } else {
                Err(Error::transient(std::io::Error::other(
                    "enrichment API down",
                )))
            }
        })
        .await;
    let value = match enriched {
        Ok(value) => value,
        Err(_) => {
            ctx.step("fallback", || async {
                world.hit("fallback");
                Ok("plain".to_owned())
            })
            .await?
        }
    };
    ctx.step("check", || async {
        world.hit("check");
        if value == "plain" {
            Err(Error::permanent(std::io::Error::other(
                "only enriched records may be loaded",
            )))
        } else {
            Ok(value.clone())
        }
    })
    .await
}

fn registry(world: &World) -> Arc<Registry> {
    let mut registry = Registry::new();
    let w = world.clone();
    registry.register("pipeline", move |ctx: Context, _: serde_json::Value| {
        pipeline(ctx, w.clone())
    });
    let w = world.clone();
    registry.register(
        "with_fallback",
        move |ctx: Context, _: serde_json::Value| with_fallback(ctx, w.clone()),
    );
    Arc::new(registry)
}

#[tokio::test]
async fn retry_resumes_from_the_failed_step_keeping_earlier_checkpoints() {
    let db = TestDb::new().await;
    let world = World::default();
    let registry = registry(&world);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let client = Client::new(db.pool().clone());
    let dead = DeadLetters::new(db.pool().clone());

    let started = client
        .start("pipeline", &json!({}), &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, started.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Failed);

    let list = dead.list(10).await.unwrap();
    assert_eq!(list.runs.len(), 1);
    let letter = &list.runs[0];
    assert_eq!(letter.run_id, started.run_id);
    assert_eq!(letter.category.as_deref(), Some("validation"));
    assert!(
        letter.chain.iter().any(|m| m.contains("expected numeric")),
        "{:?}",
        letter.chain
    );
    let step = letter.failed_step.as_ref().expect("a failed step");
    assert_eq!(
        (step.position, step.name.as_str(), step.attempts),
        (1, "transform", 1)
    );
    assert_eq!(letter.completed_steps, 1);

    world.fixed.store(true, Ordering::SeqCst);
    let retried = dead.retry(started.run_id).await.unwrap();
    assert_eq!(
        retried.from_step.map(|s| s.name),
        Some("transform".to_owned())
    );
    assert_eq!(retried.kept_steps, 1);
    let run = finished(&client, started.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!(42)));
    assert_eq!(run.summary.claims, 2, "the retry is a fresh claim");
    assert!(run.error.is_none());
    assert_eq!(
        world.counts(),
        counts(&[("extract", 1), ("load", 1), ("transform", 2)]),
        "extract is not executed again"
    );
    assert!(run.steps.iter().all(|s| s.status == StepStatus::Completed));
    assert!(dead.list(10).await.unwrap().runs.is_empty());

    // A run that is not dead cannot be retried or dismissed.
    let err = dead.retry(started.run_id).await.unwrap_err();
    assert!(matches!(err, DeadLetterError::NotDead(_)), "{err}");
    let err = dead
        .dismiss(DeadLetterId::Run(started.run_id))
        .await
        .unwrap_err();
    assert!(matches!(err, DeadLetterError::NotDead(_)), "{err}");
    worker.shutdown().await;
}

#[tokio::test]
async fn exhausted_retries_and_a_caught_failure_retry_from_the_first_failed_step() {
    let db = TestDb::new().await;
    let world = World::default();
    let registry = registry(&world);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let client = Client::new(db.pool().clone());
    let dead = DeadLetters::new(db.pool().clone());

    let started = client
        .start("with_fallback", &json!({}), &StartOptions::default())
        .await
        .unwrap();
    let run = finished(&client, started.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    assert_eq!(
        world.counts(),
        counts(&[("a", 1), ("check", 1), ("enrich", 3), ("fallback", 1)])
    );
    let letter = dead.run(started.run_id).await.unwrap();
    let step = letter.failed_step.expect("a failed step");
    // The enrichment used up its three attempts; the run ended later, at `check`.
    assert_eq!((step.name.as_str(), step.attempts), ("enrich", 3));
    assert!(letter.message.unwrap().contains("only enriched records"));

    world.fixed.store(true, Ordering::SeqCst);
    let id: DeadLetterId = started.run_id.to_string().parse().unwrap();
    assert_eq!(id, DeadLetterId::Run(started.run_id));
    dead.retry(started.run_id).await.unwrap();
    let run = finished(&client, started.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!("enriched")));
    // `a` kept; `enrich` runs again and now succeeds, so the fallback path's steps are
    // gone from the history and `check` runs on the new path.
    assert_eq!(
        world.counts(),
        counts(&[("a", 1), ("check", 2), ("enrich", 4), ("fallback", 1)])
    );
    let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "enrich", "check"]);
    worker.shutdown().await;
}

#[tokio::test]
async fn dead_letter_ids_parse_and_unknown_ones_are_refused() {
    let db = TestDb::new().await;
    let dead = DeadLetters::new(db.pool().clone());
    assert_eq!(
        "record:7".parse::<DeadLetterId>().unwrap(),
        DeadLetterId::Record(7)
    );
    assert!(matches!(
        "nope".parse::<DeadLetterId>(),
        Err(DeadLetterError::BadId(_))
    ));
    assert!(matches!(
        dead.record(7).await,
        Err(DeadLetterError::NoRecord(7))
    ));
    let list = dead.list(10).await.unwrap();
    assert!(list.runs.is_empty() && list.records.is_empty());
}

#[tokio::test]
async fn a_dismissed_run_leaves_the_list_until_a_retry_fails_again() {
    let db = TestDb::new().await;
    let world = World::default();
    let registry = registry(&world);
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let client = Client::new(db.pool().clone());
    let dead = DeadLetters::new(db.pool().clone());
    let started = client
        .start("pipeline", &json!({}), &StartOptions::default())
        .await
        .unwrap();
    finished(&client, started.run_id).await;
    assert_eq!(dead.list(10).await.unwrap().runs.len(), 1);

    dead.dismiss(DeadLetterId::Run(started.run_id))
        .await
        .unwrap();
    assert!(dead.list(10).await.unwrap().runs.is_empty());
    assert_eq!(
        client.show(started.run_id).await.unwrap().summary.status,
        RunStatus::Failed,
        "a dismissed run stays failed"
    );
    // Still shown and retried by id; failing again puts it back on the list.
    assert!(dead.run(started.run_id).await.is_ok());
    dead.retry(started.run_id).await.unwrap();
    let run = finished(&client, started.run_id).await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    assert_eq!(dead.list(10).await.unwrap().runs.len(), 1);
    worker.shutdown().await;
}
