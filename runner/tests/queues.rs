//! Priorities and concurrency keys: an urgent run overtakes a backlog, and a worker
//! runs at most its limit of one key's runs at once while others go past them.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::{Client, Context, KeyLimits, Registry, RunStatus, StartOptions, WorkerConfig};
use cairn_testkit::{TestDb, TestWorker};
use common::{eventually, fast_config, finished, reaches};
use tokio::sync::Semaphore;

#[tokio::test]
async fn a_higher_priority_run_is_claimed_before_an_older_backlog() {
    let db = TestDb::new().await;
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let order = Arc::clone(&order);
        registry.register("job", move |ctx: Context, name: String| {
            let order = Arc::clone(&order);
            async move {
                ctx.step("work", || async {
                    order.lock().unwrap().push(name.clone());
                    Ok(())
                })
                .await
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let mut runs = Vec::new();
    for n in 0..10 {
        let started = client
            .start("job", &format!("backfill {n}"), &StartOptions::default())
            .await
            .unwrap();
        runs.push(started.run_id);
    }
    let urgent = StartOptions {
        priority: 10,
        ..StartOptions::default()
    };
    let started = client.start("job", &"urgent", &urgent).await.unwrap();
    runs.push(started.run_id);
    let low = StartOptions {
        priority: -1,
        ..StartOptions::default()
    };
    runs.push(client.start("job", &"cleanup", &low).await.unwrap().run_id);

    // One slot: runs execute one at a time, in the order they are claimed. Watched by
    // reading their status: a client awaiting a run marks its row, and a claim passes
    // over a row locked at that instant (as it passes over one another worker is
    // claiming) rather than wait for it.
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(1));
    for run in &runs {
        reaches(&client, *run, RunStatus::Completed).await;
    }
    worker.shutdown().await;
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.first().map(String::as_str),
        Some("urgent"),
        "{order:?}"
    );
    assert_eq!(
        order.last().map(String::as_str),
        Some("cleanup"),
        "{order:?}"
    );
    let backfill: Vec<String> = (0..10).map(|n| format!("backfill {n}")).collect();
    assert_eq!(
        order[1..11],
        backfill[..],
        "equal priorities keep their order"
    );
    let shown = client.show(started.run_id).await.unwrap();
    assert_eq!(shown.summary.priority, 10);
}

/// Runs per key: inside their step now, and the most ever at once.
type PerKey = (HashMap<String, usize>, HashMap<String, usize>);

/// How many runs of each key are inside their step now, and the most ever at once.
#[derive(Clone, Default)]
struct Inside(Arc<Mutex<PerKey>>);

impl Inside {
    fn enter(&self, key: &str) {
        let mut inside = self.0.lock().unwrap();
        let now = {
            let n = inside.0.entry(key.to_owned()).or_default();
            *n += 1;
            *n
        };
        let most = inside.1.entry(key.to_owned()).or_default();
        *most = (*most).max(now);
    }

    fn leave(&self, key: &str) {
        *self.0.lock().unwrap().0.get_mut(key).unwrap() -= 1;
    }

    fn now(&self, key: &str) -> usize {
        self.0.lock().unwrap().0.get(key).copied().unwrap_or(0)
    }

    fn most(&self, key: &str) -> usize {
        self.0.lock().unwrap().1.get(key).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn a_key_limit_caps_one_keys_runs_while_other_runs_go_past() {
    let db = TestDb::new().await;
    let inside = Inside::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::new();
    {
        let (inside, gate) = (inside.clone(), Arc::clone(&gate));
        registry.register("call", move |ctx: Context, key: String| {
            let (inside, gate) = (inside.clone(), Arc::clone(&gate));
            async move {
                ctx.step("call the vendor", || async {
                    inside.enter(&key);
                    let _pass = gate.acquire().await.expect("the gate stays open");
                    inside.leave(&key);
                    Ok(())
                })
                .await
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let mut runs = Vec::new();
    // The keyed runs come first, so a worker without the limit would take them all.
    for _ in 0..4 {
        let options = StartOptions {
            concurrency_key: Some("vendor-a".to_owned()),
            ..StartOptions::default()
        };
        runs.push(
            client
                .start("call", &"vendor-a", &options)
                .await
                .unwrap()
                .run_id,
        );
    }
    for _ in 0..2 {
        let started = client
            .start("call", &"free", &StartOptions::default())
            .await
            .unwrap();
        runs.push(started.run_id);
    }
    let config = WorkerConfig {
        key_limits: KeyLimits {
            per_key: HashMap::from([("vendor-a".to_owned(), 1)]),
            default: None,
        },
        ..fast_config(4)
    };
    let worker = TestWorker::start(db.pool().clone(), registry, config);
    // One vendor-a run and both free runs are inside their steps; the fourth slot stays
    // free for want of a run it may take.
    eventually("three runs inside", Duration::from_secs(20), || async {
        (inside.now("vendor-a") == 1 && inside.now("free") == 2).then_some(())
    })
    .await;
    gate.add_permits(100);
    for run in &runs {
        assert_eq!(
            finished(&client, *run).await.summary.status,
            RunStatus::Completed
        );
    }
    worker.shutdown().await;
    assert_eq!(
        inside.most("vendor-a"),
        1,
        "never two vendor-a runs at once"
    );
    assert_eq!(inside.most("free"), 2);
}
