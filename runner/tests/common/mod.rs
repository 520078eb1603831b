//! Shared helpers for the engine's integration tests.

#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::{Client, Registry, RunDetail, RunId, RunStatus, WorkerConfig};
use cairn_testkit::TestDb;

pub use cairn_testkit::TestWorker;

/// A config for tests: a short lease so crashed workers are replaced quickly.
pub fn fast_config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        lease: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        inline_backoff: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// Polls `probe` until it yields a value or `within` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the run to end and returns it.
pub async fn finished(client: &Client, run_id: RunId) -> RunDetail {
    let run = client
        .wait(run_id, Some(Duration::from_secs(60)))
        .await
        .expect("waiting for the run");
    assert!(
        run.summary.status.is_terminal(),
        "run {run_id} did not end in time: {:?}",
        run.summary.status
    );
    run
}

/// Waits until the run is in `status`.
pub async fn reaches(client: &Client, run_id: RunId, status: RunStatus) -> RunDetail {
    eventually(
        &format!("run {run_id} to be {status}"),
        Duration::from_secs(30),
        || async {
            let run = client.show(run_id).await.expect("show");
            (run.summary.status == status).then_some(run)
        },
    )
    .await
}

/// How often each named step body ran.
#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<HashMap<String, u32>>>);

impl Counts {
    /// Counts one more run of `name`'s body; returns how many so far.
    pub fn hit(&self, name: &str) -> u32 {
        let mut counts = self.0.lock().unwrap();
        let n = counts.entry(name.to_owned()).or_default();
        *n += 1;
        *n
    }

    /// How often `name`'s body ran.
    pub fn get(&self, name: &str) -> u32 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// Kills `first` (a crash: no lease released), has a fresh worker with `concurrency`
/// slots carry the run on, and returns it once it has ended.
pub async fn crash_and_finish(
    db: &TestDb,
    registry: &Arc<Registry>,
    first: TestWorker,
    run_id: RunId,
    concurrency: usize,
) -> RunDetail {
    first.kill().await;
    let client = Client::new(db.pool().clone());
    let second = TestWorker::start(
        db.new_pool(concurrency as u32 + 4).await,
        Arc::clone(registry),
        fast_config(concurrency),
    );
    let done = finished(&client, run_id).await;
    second.shutdown().await;
    done
}
