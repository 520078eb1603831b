//! Shared helpers for the engine's integration tests.

#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{Client, Registry, RunDetail, RunId, RunStatus, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker running in this process, stopped gracefully or killed (dropped) by the test.
pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningWorker {
    pub fn start(pool: PgPool, registry: Arc<Registry>, config: WorkerConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = Worker::new(pool, registry, config);
        let task = tokio::spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("worker loop");
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Graceful shutdown: current steps finish, runs are released.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("worker task");
    }

    /// A crash: the worker's tasks vanish mid-step, heartbeats stop, nothing is released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

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
