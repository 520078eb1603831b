//! Four workers over two hundred runs: no run is executed by two workers at once and
//! every transactional effect is counted exactly once.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::{Client, Context, Registry, RunId, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use common::{TestWorker, eventually, fast_config};

/// Tracks which runs are executing a step right now, across all workers.
#[derive(Default)]
struct Exclusive {
    running: Mutex<HashMap<RunId, usize>>,
    overlaps: AtomicUsize,
    executions: AtomicUsize,
}

impl Exclusive {
    fn enter(&self, run: RunId) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        let mut running = self.running.lock().unwrap();
        let n = running.entry(run).or_default();
        *n += 1;
        if *n > 1 {
            self.overlaps.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn leave(&self, run: RunId) {
        *self.running.lock().unwrap().get_mut(&run).unwrap() -= 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_share_two_hundred_runs_without_overlap() {
    const RUNS: usize = 200;
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE effects (run_id uuid NOT NULL, step int NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    let exclusive = Arc::new(Exclusive::default());
    let mut registry = Registry::new();
    {
        let exclusive = Arc::clone(&exclusive);
        registry.register("three", move |ctx: Context, (): ()| {
            let exclusive = Arc::clone(&exclusive);
            async move {
                let run = ctx.run_id();
                let guarded = |step: i32| {
                    let exclusive = Arc::clone(&exclusive);
                    async move {
                        exclusive.enter(run);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        exclusive.leave(run);
                        Ok(step)
                    }
                };
                ctx.step("a", || guarded(1)).await?;
                let ctx = &ctx;
                let exclusive = &exclusive;
                ctx.transaction("b", |tx| async move {
                    exclusive.enter(run);
                    let mut conn = tx.conn().await?;
                    sqlx::query("INSERT INTO effects VALUES ($1, 2)")
                        .bind(run.as_uuid())
                        .execute(&mut *conn)
                        .await?;
                    exclusive.leave(run);
                    Ok(2)
                })
                .await?;
                ctx.step("c", || guarded(3)).await?;
                Ok(())
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    for _ in 0..RUNS {
        client
            .start("three", &(), &StartOptions::default())
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let pool = db.new_pool(10).await;
        workers.push(TestWorker::start(
            pool,
            Arc::clone(&registry),
            fast_config(8),
        ));
    }
    eventually("all runs to complete", Duration::from_secs(120), || async {
        let done = client
            .list(Some(RunStatus::Completed), 1_000)
            .await
            .unwrap()
            .len();
        (done == RUNS).then_some(())
    })
    .await;
    for worker in workers {
        worker.shutdown().await;
    }

    assert_eq!(
        exclusive.overlaps.load(Ordering::Relaxed),
        0,
        "a run ran on two workers at once"
    );
    assert_eq!(
        exclusive.executions.load(Ordering::Relaxed),
        RUNS * 3,
        "every step ran exactly once"
    );
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT run_id) FROM effects")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (RUNS as i64, RUNS as i64),
        "each effect exactly once"
    );
    let claims: i64 = sqlx::query_scalar("SELECT sum(claims) FROM cairn.runs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(claims, RUNS as i64, "no run was claimed twice");
    let workers_used: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT lease_owner) FROM cairn.runs")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(workers_used, 0, "leases are cleared when runs finish");
}

#[tokio::test]
async fn only_the_end_of_an_awaited_run_is_announced() {
    let db = TestDb::new().await;
    // The watched run (input 2) ends only when the test opens the gate, once its client
    // has asked for its end to be announced: a run that ends before that is seen ended
    // by the client's own look and, rightly, not announced.
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    {
        let gate = Arc::clone(&gate);
        registry.register("quick", move |ctx: Context, n: u32| {
            let gate = Arc::clone(&gate);
            async move {
                ctx.step("one", || {
                    let gate = Arc::clone(&gate);
                    async move {
                        if n == 2 {
                            gate.notified().await;
                        }
                        Ok(n)
                    }
                })
                .await
            }
        });
    }
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let mut listener = sqlx::postgres::PgListener::connect_with(db.pool())
        .await
        .unwrap();
    listener
        .listen(cairn_runner::FINISHED_CHANNEL)
        .await
        .unwrap();
    let worker = TestWorker::start(db.pool().clone(), registry, fast_config(1));

    // Nobody waits for the first run: it ends without a notification.
    let unwatched = client
        .start("quick", &1, &StartOptions::default())
        .await
        .unwrap();
    let status = |run: RunId| {
        let client = &client;
        async move { client.show(run).await.unwrap().summary.status }
    };
    eventually(
        "the unwatched run to end",
        Duration::from_secs(30),
        || async { (status(unwatched.run_id).await == RunStatus::Completed).then_some(()) },
    )
    .await;

    // A client waits for the second, which ends after the first.
    let watched = client
        .start("quick", &2, &StartOptions::default())
        .await
        .unwrap();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .wait(watched.run_id, Some(Duration::from_secs(30)))
                .await
        })
    };
    eventually(
        "the client to ask for the watched run's end",
        Duration::from_secs(30),
        || async {
            let awaited: bool = sqlx::query_scalar("SELECT awaited FROM cairn.runs WHERE id = $1")
                .bind(watched.run_id)
                .fetch_one(db.pool())
                .await
                .unwrap();
            awaited.then_some(())
        },
    )
    .await;
    gate.notify_one();
    let run = waiting.await.unwrap().unwrap();
    assert_eq!(run.summary.status, RunStatus::Completed);
    worker.shutdown().await;

    // Notifications arrive in commit order: any for the first run would come before the
    // second's.
    let mut announced = Vec::new();
    while announced.last() != Some(&watched.run_id.to_string()) {
        let note = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("the awaited run's end is announced")
            .unwrap();
        announced.push(note.payload().to_owned());
    }
    assert_eq!(announced, [watched.run_id.to_string()]);
    let awaited: Vec<(RunId, bool)> =
        sqlx::query_as("SELECT id, awaited FROM cairn.runs ORDER BY created_at")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(awaited, [(unwatched.run_id, false), (watched.run_id, true)]);
}
