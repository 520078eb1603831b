//! The Rust connector through cairn's built-in sync workflows, against the sandbox
//! vendor over real HTTP with signed requests: in this process, and through the
//! project's own binary killed mid-sync with SIGKILL. Each test ends by comparing the
//! warehouse with the vendor.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use author_example::linked_crm::{self, SIGNING_KEY_ENV, SOURCE};
use cairn::connectors::secret::{Secret, SecretSource};
use cairn::connectors::warehouse::Warehouse;
use cairn::workflows::sync::{self, SyncInput, SyncTarget, stream_status};
use cairn::{Client, Registry, RunId, RunStatus, WorkerConfig};
use cairn_testkit::sandbox::{AuthConfig, Mutation, Sandbox, SandboxConfig, SandboxHandle, Stream};
use cairn_testkit::{TestDb, TestWorker, run_to_completion, run_to_end};

const KEY: &str = "linked-crm-signing-key-5c1e9a";

async fn vendor(records: usize, latency: Duration) -> SandboxHandle {
    let config = SandboxConfig {
        records_per_stream: records,
        seed: 17,
        latency,
        auth: AuthConfig::Signed(Secret::new(KEY)),
        ..SandboxConfig::default()
    };
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The built-in workflows beside the connector, signing with `key`.
fn registry(key: &str) -> Arc<Registry> {
    let mut registry = Registry::new();
    cairn::workflows::register_builtin(&mut registry);
    linked_crm::register(&mut registry, SecretSource::Value(Secret::new(key))).unwrap();
    Arc::new(registry)
}

fn input(vendor: &SandboxHandle, stream: Stream) -> SyncInput {
    let mut input = SyncInput::registered(SOURCE, stream.name());
    input.base_url = Some(vendor.base_url().to_owned());
    input
}

async fn warehouse_checksum(db: &TestDb, stream: Stream) -> String {
    let mut conn = db.pool().acquire().await.unwrap();
    Warehouse::new(SOURCE, "linked_crm")
        .unwrap()
        .checksum(&mut conn, stream.name())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_incremental_and_reconcile_keep_the_warehouse_equal_to_the_vendor() {
    let db = TestDb::new().await;
    let sandbox = vendor(250, Duration::ZERO).await;
    let registry = registry(KEY);
    let worker = TestWorker::start(
        db.pool().clone(),
        Arc::clone(&registry),
        WorkerConfig::default(),
    );
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let contacts = input(&sandbox, Stream::Contacts);

    let backfill = run_to_completion(&client, sync::BACKFILL, &contacts).await;
    assert_eq!(backfill.output.as_ref().unwrap()["records"], 250);
    let pages = backfill.output.as_ref().unwrap()["pages"].as_u64().unwrap();
    assert!(pages >= 3, "250 records at most 100 a page: {pages} pages");
    let v = sandbox.vendor();
    assert_eq!(
        warehouse_checksum(&db, Stream::Contacts).await,
        v.checksum(Stream::Contacts)
    );

    v.mutate(Stream::Contacts, Mutation::Update { count: 20 })
        .unwrap();
    v.mutate(Stream::Contacts, Mutation::Create { count: 5 })
        .unwrap();
    v.mutate(Stream::Contacts, Mutation::Delete { count: 10 })
        .unwrap();
    let incremental = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    let read = incremental.output.as_ref().unwrap()["records"]
        .as_u64()
        .unwrap();
    // Deletes may have taken some of the 25 changed records away again.
    assert!(
        (1..=25).contains(&read),
        "the incremental read what changed since the watermark, not the whole stream: {read}"
    );
    let reconcile = run_to_completion(&client, sync::RECONCILE, &contacts).await;
    worker.shutdown().await;
    assert_eq!(reconcile.output.as_ref().unwrap()["vendor_ids"], 245);
    assert_eq!(
        warehouse_checksum(&db, Stream::Contacts).await,
        v.checksum(Stream::Contacts),
        "every field of every live record equals the vendor's"
    );

    let target =
        SyncTarget::registered(registry.provided::<sync::Sources>().unwrap(), SOURCE, None)
            .unwrap();
    let status = stream_status(db.pool(), &target).await.unwrap();
    let contacts = status.iter().find(|s| s.stream == "contacts").unwrap();
    assert_eq!((contacts.live_rows, contacts.deleted_rows), (245, 10));
    assert!(contacts.watermark.is_some());
    assert_eq!(
        contacts.last_run.as_ref().map(|run| run.workflow.as_str()),
        Some(sync::RECONCILE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signing_key_fails_the_run_without_landing_or_showing_the_key() {
    let db = TestDb::new().await;
    let sandbox = vendor(50, Duration::ZERO).await;
    let wrong = "not-the-vendors-key-77d0";
    let registry = registry(wrong);
    let worker = TestWorker::start(
        db.pool().clone(),
        Arc::clone(&registry),
        WorkerConfig::default(),
    );
    let client = Client::new(db.pool().clone()).with_registry(registry);
    let run = run_to_end(&client, sync::BACKFILL, &input(&sandbox, Stream::Contacts)).await;
    worker.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    let error = run.error.unwrap().to_string();
    assert!(error.contains("401"), "{error}");
    let stored: i64 = sqlx_count(
        &db,
        "SELECT count(*) FROM cairn.runs r LEFT JOIN cairn.steps s ON s.run_id = r.id
          WHERE strpos(r::text || coalesce(s::text, ''), $1) > 0",
        wrong,
    )
    .await;
    assert_eq!(stored, 0, "the key is in no stored row");
    let landed: i64 = sqlx_count(
        &db,
        "SELECT count(*) FROM cairn.warehouse_tables WHERE schema_name = $1",
        "linked_crm",
    )
    .await;
    assert_eq!(landed, 0);
}

async fn sqlx_count(db: &TestDb, sql: &'static str, bind: &str) -> i64 {
    cairn::sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The project's binary, reaching `db`, signing with the vendor's key.
fn binary(db: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_author-example"));
    command
        .env("DATABASE_URL", db.url())
        .env(SIGNING_KEY_ENV, KEY)
        .env("RUST_LOG", "warn");
    command
}

/// Runs `command`, asserts it succeeded and reads the JSON it printed.
fn json_of(command: &mut Command) -> serde_json::Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn spawn_worker(db: &TestDb) -> Child {
    binary(db)
        .args(["worker", "--lease", "1", "--poll", "0.1"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning the project's worker")
}

/// SIGKILL: no cleanup, no lease release, heartbeats stop.
fn kill(mut worker: Child) {
    worker.kill().expect("SIGKILL the worker");
    worker.wait().expect("reaping the worker");
}

async fn landed_pages(client: &Client, run: RunId) -> (RunStatus, u64) {
    let (status, progress) = client.progress(run).await.unwrap();
    let pages = progress
        .and_then(|p| p.get("pages").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    (status, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_started_by_name_survives_sigkills_of_the_projects_worker() {
    // 150 pages, each a few milliseconds late: more work than three kills take.
    const RECORDS: usize = 15_000;
    const KILLS: usize = 3;
    let db = TestDb::new().await;
    let sandbox = vendor(RECORDS, Duration::from_millis(3)).await;
    let runs = json_of(
        binary(&db)
            .args(["sync", SOURCE, "--stream", "contacts", "--mode", "backfill"])
            .args(["--base-url", sandbox.base_url(), "--json"]),
    );
    let run: RunId = serde_json::from_value(runs[0]["run_id"].clone()).unwrap();
    let client = Client::new(db.pool().clone());

    let mut kills = 0;
    while kills < KILLS {
        let worker = spawn_worker(&db);
        let (_, before) = landed_pages(&client, run).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let ended = loop {
            let (status, pages) = landed_pages(&client, run).await;
            if status.is_terminal() {
                break true;
            }
            if pages > before {
                break false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress in 60 s before kill {kills} ({status:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        kill(worker);
        if ended {
            break;
        }
        kills += 1;
    }
    assert!(kills > 0, "the run ended before its first kill");

    let worker = spawn_worker(&db);
    let ended = client
        .wait(run, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    kill(worker);
    assert_eq!(
        ended.summary.status,
        RunStatus::Completed,
        "{:?}",
        ended.error
    );
    assert_eq!(ended.output.as_ref().unwrap()["records"], RECORDS);
    assert_eq!(
        warehouse_checksum(&db, Stream::Contacts).await,
        sandbox.vendor().checksum(Stream::Contacts),
        "after {kills} kills the warehouse equals the vendor"
    );

    let status = json_of(binary(&db).args(["sync", "status", SOURCE, "--json"]));
    assert_eq!(status["schema"], "linked_crm");
    let contacts = &status["streams"][0];
    assert_eq!(contacts["stream"], "contacts");
    assert_eq!(contacts["live_rows"], RECORDS);
    assert_eq!(contacts["last_run"]["id"], run.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_that_would_send_requests_in_the_clear_is_refused_before_and_in_the_run() {
    let db = TestDb::new().await;
    let insecure = "http://192.0.2.1:8787";
    let refused = binary(&db)
        .args(["sync", SOURCE, "--base-url", insecure])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--base-url") && stderr.contains("plain http"),
        "{stderr}"
    );

    // A run started some other way meets the same rule in the worker, before the
    // source's opener sees the URL.
    let registry = registry(KEY);
    let worker = TestWorker::start(
        db.pool().clone(),
        Arc::clone(&registry),
        WorkerConfig::default(),
    );
    let client = Client::new(db.pool().clone()).with_registry(registry);
    let mut input = SyncInput::registered(SOURCE, "contacts");
    input.base_url = Some(insecure.to_owned());
    let run = run_to_end(&client, sync::INCREMENTAL, &input).await;
    worker.shutdown().await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    let error = run.error.unwrap().to_string();
    assert!(error.contains("plain http"), "{error}");
}
