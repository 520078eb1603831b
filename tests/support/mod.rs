//! Helpers for tests that drive the `cairn` binary as a user would.

#![allow(dead_code, missing_docs)]

use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cairn::{Registry, WorkerConfig};
use cairn_testkit::TestWorker;
use sqlx::PgPool;

/// The `cairn` binary built for these tests.
pub fn cairn() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// Runs `cairn args...` against `url` and returns its output.
pub fn run(url: &str, args: &[&str]) -> Output {
    cairn()
        .env("DATABASE_URL", url)
        .args(args)
        .output()
        .expect("running the cairn binary")
}

/// A `cairn worker` child process, SIGKILLed if the test ends without stopping it.
pub struct WorkerProcess {
    child: Option<Child>,
}

impl WorkerProcess {
    pub fn spawn(url: &str, extra: &[&str]) -> Self {
        Self::spawn_with_env(url, extra, &[])
    }

    /// A worker with `env` set besides `DATABASE_URL` (keys, say).
    pub fn spawn_with_env(url: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let child = cairn()
            .env("DATABASE_URL", url)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .arg("worker")
            .args(if extra.contains(&"--lease") {
                &[][..]
            } else {
                &["--lease", "2"][..]
            })
            .args(["--poll", "0.1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning cairn worker");
        Self { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no cleanup, no lease release, heartbeats stop.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL the worker");
        child.wait().expect("reaping the worker");
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        // The `kill` utility keeps the crate free of unsafe code.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "sending SIGTERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("polling the worker") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The built-in workflows, as the `cairn` binary registers them.
pub fn builtin() -> Arc<Registry> {
    let mut registry = Registry::new();
    cairn::workflows::register_builtin(&mut registry);
    Arc::new(registry)
}

/// A worker of the built-in workflows with `concurrency` slots, polling often.
pub fn builtin_worker(pool: PgPool, concurrency: usize) -> TestWorker {
    TestWorker::start(
        pool,
        builtin(),
        WorkerConfig {
            concurrency,
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
}

pub mod proxy;
pub mod vendor;
