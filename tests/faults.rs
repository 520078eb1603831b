//! Fault injection: Postgres connections severed mid-run, a worker frozen with SIGSTOP
//! past its lease, a vendor failing one request in ten, and Postgres errors that must
//! surface as categorised errors rather than panics.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{FaultConfig, FaultKind, Mutation, Sandbox, SandboxConfig, Stream};
use cairn::workflows::sync::{self, SyncInput};
use cairn::{Client, Context, Error, Registry, RetryPolicy, RunStatus, StartOptions, WorkerConfig};
use cairn_testkit::{TestDb, TestWorker, run_to_completion};
use serde_json::json;
use support::proxy::{Proxy, through, upstream_of};
use support::{WorkerProcess, builtin};

async fn ledger_counts(db: &TestDb, run: cairn::RunId) -> Vec<(i32, String, i64)> {
    sqlx::query_as(
        "SELECT step, kind, count(*) FROM public.cairn_ledger WHERE run_id = $1
          GROUP BY step, kind ORDER BY step",
    )
    .bind(run.as_uuid())
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// Every step ran; transactional ones exactly once; plain ones at most twice and only
/// `repeats_allowed` of them twice (the steps in flight when things went wrong).
fn assert_exactly_once(counts: &[(i32, String, i64)], steps: i32, repeats_allowed: usize) {
    assert_eq!(counts.len(), steps as usize, "every step ran: {counts:?}");
    for (step, kind, n) in counts {
        if kind == "transaction" {
            assert_eq!(*n, 1, "transactional step {step} took effect {n} times");
        } else {
            assert!(*n <= 2, "step {step} ran {n} times");
        }
    }
    let repeated = counts.iter().filter(|(_, _, n)| *n > 1).count();
    assert!(
        repeated <= repeats_allowed,
        "{repeated} steps ran twice: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_resume_when_severed_postgres_connections_come_back() {
    const STEPS: i32 = 30;
    let db = TestDb::new().await;
    let url = db.url();
    let proxy = Proxy::start(upstream_of(&url)).await;
    let proxied = through(&url, &proxy);

    let pool = cairn::pool_options(6)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&proxied)
        .await
        .unwrap();
    let worker = TestWorker::start(
        pool,
        builtin(),
        WorkerConfig {
            concurrency: 2,
            lease: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    );
    let client = Client::new(db.pool().clone());
    let run = client
        .start(
            "ledger",
            &json!({ "steps": STEPS, "step_ms": 40, "transactional_every": 2 }),
            &StartOptions::default(),
        )
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (client.show(run.run_id).await.unwrap().steps.len() as i32) < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An outage longer than the lease: the worker must back off, lose the lease, and
    // take the run back once Postgres is reachable again.
    proxy.sever();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = client.show(run.run_id).await.unwrap();
    assert_ne!(
        during.summary.status,
        RunStatus::Completed,
        "the worker was cut off"
    );
    proxy.restore();

    let done = client
        .wait(run.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert!(
        done.summary.claims >= 2,
        "the run was taken back after its lease expired"
    );
    assert_exactly_once(&ledger_counts(&db, run.run_id).await, STEPS, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_is_fenced_and_lets_go() {
    const STEPS: i32 = 24;
    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let run = client
        .start(
            "ledger",
            &json!({ "steps": STEPS, "step_ms": 150, "transactional_every": 2 }),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let zombie = WorkerProcess::spawn(&db.url(), &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.show(run.run_id).await.unwrap().steps.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the freeze"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(zombie.pid(), "STOP");
    let frozen_at = client.show(run.run_id).await.unwrap();
    let replacement = WorkerProcess::spawn(&db.url(), &[]);
    // The replacement takes the run over once the frozen worker's lease expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.show(run.run_id).await.unwrap();
        if now.summary.claims >= 2 && now.steps.len() > frozen_at.steps.len() + 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run was not taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The zombie wakes mid-step with a stale lease: its checkpoint must be refused.
    signal(zombie.pid(), "CONT");
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.summary.claims, 2);
    assert_eq!(
        done.steps.len() as i32,
        STEPS + 1,
        "one checkpoint per position"
    );
    assert_exactly_once(&ledger_counts(&db, run.run_id).await, STEPS, 1);
    assert_eq!(
        zombie.terminate(),
        Some(0),
        "the zombie let go of the run and lives on"
    );
    assert_eq!(replacement.terminate(), Some(0));
}

fn signal(pid: u32, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_through_a_vendor_failing_one_request_in_ten_ends_equal() {
    let db = TestDb::new().await;
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 3_000,
            seed: 21,
            faults: FaultConfig {
                rate: 0.1,
                kinds: FaultKind::ALL.to_vec(),
                slow_delay: Duration::from_millis(1_500),
            },
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let worker = TestWorker::start(
        db.pool().clone(),
        builtin(),
        WorkerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(100),
            retry: RetryPolicy::attempts(8)
                .backoff(Duration::from_millis(20), Duration::from_millis(500)),
            ..WorkerConfig::default()
        },
    );
    let client = Client::new(db.pool().clone());
    // A slow answer is a timeout for this source.
    let toml = format!(
        "{}\n[timeouts]\ntotal_secs = 1.0\n",
        include_str!("../examples/sources/sandbox-stripe.toml")
    );
    let mut input = SyncInput::new(toml, "stripe+timeouts".into(), "contacts".into());
    input.base_url = Some(sandbox.base_url().to_owned());
    run_to_completion(&client, sync::BACKFILL, &input).await;
    let vendor = sandbox.vendor();
    vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 200 })
        .unwrap();
    vendor
        .mutate(Stream::Contacts, Mutation::Delete { count: 100 })
        .unwrap();
    run_to_completion(&client, sync::INCREMENTAL, &input).await;
    run_to_completion(&client, sync::RECONCILE, &input).await;
    worker.shutdown().await;

    let injected: u64 = vendor.stats().faults.values().sum();
    assert!(injected >= 5, "faults were injected: {injected}");
    let mut conn = db.pool().acquire().await.unwrap();
    let ours = Warehouse::new("sandbox-stripe", "sandbox_stripe")
        .unwrap()
        .checksum(&mut conn, "contacts")
        .await
        .unwrap();
    assert_eq!(
        ours,
        vendor.checksum(Stream::Contacts),
        "warehouse == vendor"
    );
}

#[tokio::test]
async fn postgres_errors_surface_as_categorised_errors() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE uniq (id int PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register("slow query", |ctx: Context, (): ()| async move {
        ctx.with_retry(
            RetryPolicy::attempts(2).backoff(Duration::from_millis(5), Duration::from_millis(5)),
        )
        .transaction("sleepy", |tx| async move {
            let mut conn = tx.conn().await?;
            sqlx::query("SET LOCAL statement_timeout = '50ms'")
                .execute(&mut *conn)
                .await?;
            sqlx::query("SELECT pg_sleep(2)")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    });
    registry.register("duplicate", |ctx: Context, (): ()| async move {
        ctx.transaction("insert twice", |tx| async move {
            let mut conn = tx.conn().await?;
            sqlx::query("INSERT INTO uniq VALUES (1), (1)")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    });
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), registry, WorkerConfig::default());

    let slow = client
        .start("slow query", &(), &StartOptions::default())
        .await
        .unwrap();
    let slow = client
        .wait(slow.run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let dup = client
        .start("duplicate", &(), &StartOptions::default())
        .await
        .unwrap();
    let dup = client
        .wait(dup.run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    worker.shutdown().await;

    assert_eq!(slow.summary.status, RunStatus::Failed);
    assert_eq!(
        slow.steps[0].attempts, 2,
        "a statement timeout is transient: retried"
    );
    let message = slow.error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("statement timeout"), "{message}");

    assert_eq!(dup.summary.status, RunStatus::Failed);
    assert_eq!(
        dup.steps[0].attempts, 1,
        "a constraint violation is permanent: not retried"
    );
    let message = dup.error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("uniq_pkey"),
        "names the constraint: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_waits_out_an_unreachable_database_without_using_up_its_attempts() {
    let db = TestDb::new().await;
    let url = db.url();
    let proxy = Proxy::start(upstream_of(&url)).await;
    sqlx::query("CREATE TABLE public.marks (n int)")
        .execute(db.pool())
        .await
        .unwrap();
    let pool = impatient_pool(&through(&url, &proxy)).await;
    let (open, gate) = tokio::sync::watch::channel(false);
    let (reached, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut registry = Registry::new();
    registry.register("outage", move |ctx: Context, (): ()| {
        let (gate, reached) = (gate.clone(), reached.clone());
        async move {
            // Two attempts at most: an outage would use them up in a second.
            ctx.with_retry(
                RetryPolicy::attempts(2)
                    .backoff(Duration::from_millis(5), Duration::from_millis(5)),
            )
            .transaction("write", |tx| {
                let (mut gate, reached) = (gate.clone(), reached.clone());
                async move {
                    let _ = reached.send(());
                    let _ = gate.wait_for(|open| *open).await;
                    let mut conn = tx.conn().await?;
                    sqlx::query("INSERT INTO public.marks VALUES (1)")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }
            })
            .await
        }
    });
    let registry = Arc::new(registry);
    let worker = TestWorker::start(pool, Arc::clone(&registry), WorkerConfig::default());
    let client = Client::new(db.pool().clone()).with_registry(registry);
    let run = client
        .start("outage", &(), &StartOptions::default())
        .await
        .unwrap();
    arrived.recv().await.unwrap();
    // The server goes away while the step is under way, for three seconds.
    proxy.sever();
    open.send_replace(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(
        done.steps[0].attempts, 1,
        "attempts met by the outage did not count"
    );
    let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM public.marks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(marks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_stopped_by_an_unreachable_database_is_taken_up_again_not_failed() {
    let db = TestDb::new().await;
    let url = db.url();
    let proxy = Proxy::start(upstream_of(&url)).await;
    let pool = impatient_pool(&through(&url, &proxy)).await;
    let (open, gate) = tokio::sync::watch::channel(false);
    let (reached, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut registry = Registry::new();
    // Outside any step, as a sync opens its source: the error ends the workflow.
    registry.register("opens", move |ctx: Context, (): ()| {
        let (mut gate, reached) = (gate.clone(), reached.clone());
        async move {
            let _ = reached.send(());
            let _ = gate.wait_for(|open| *open).await;
            sqlx::query("SELECT 1")
                .execute(ctx.pool())
                .await
                .map_err(Error::permanent)?;
            Ok(())
        }
    });
    let registry = Arc::new(registry);
    let worker = TestWorker::start(pool, Arc::clone(&registry), WorkerConfig::default());
    let client = Client::new(db.pool().clone()).with_registry(registry);
    let run = client
        .start("opens", &(), &StartOptions::default())
        .await
        .unwrap();
    arrived.recv().await.unwrap();
    proxy.sever();
    open.send_replace(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.summary.claims, 2, "handed back, then taken up again");
}

/// A worker's pool that gives up on a connection after half a second, so an outage
/// shows at once.
async fn impatient_pool(url: &str) -> sqlx::PgPool {
    cairn::pool_options(4)
        .acquire_timeout(Duration::from_millis(500))
        .connect(url)
        .await
        .unwrap()
}
