//! `cairn demo`: the engine end to end in one command.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{Client, Registry, StartOptions, Worker, WorkerConfig};
use cairn_workflows::tour;
use tokio::sync::oneshot;

use super::print::format_ms;
use super::{Failure, Outcome, connect};

/// Migrates, starts a worker in this process, runs `tour` and prints each step as its
/// checkpoint lands.
pub(crate) async fn run(url: Option<&str>, registry: Arc<Registry>) -> Outcome {
    let pool = connect(url, 8).await?;
    println!("1/3  migrating the cairn schema");
    cairn_runner::migrate(&pool).await?;

    println!("2/3  starting a worker in this process");
    let (stop, stopped) = oneshot::channel::<()>();
    let config = WorkerConfig {
        concurrency: 4,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(pool.clone(), Arc::clone(&registry), config);
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    let client = Client::new(pool).with_registry(registry);
    let input = tour::TourInput {
        visitor: "demo".to_owned(),
        sleep_ms: 1_500,
        flaky_failures: 2,
    };
    let started = client
        .start(tour::NAME, &input, &StartOptions::default())
        .await?;
    println!("3/3  run {} of workflow `{}`:", started.run_id, tour::NAME);

    let mut shown = HashSet::new();
    let mut retries_shown = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run = client.show(started.run_id).await?;
        for step in &run.steps {
            if step.status == cairn_runner::StepStatus::Retrying
                && retries_shown.insert((step.position, step.attempts))
            {
                println!(
                    "     … {:<22} attempt {} failed: {}",
                    step.name,
                    step.attempts,
                    step.last_error.as_deref().unwrap_or("")
                );
            }
            if step.status != cairn_runner::StepStatus::Retrying && shown.insert(step.position) {
                let detail = match step.kind {
                    cairn_runner::StepKind::Sleep => {
                        "durable timer set; no worker holds the run".to_owned()
                    }
                    _ => format!(
                        "{} after {} attempt(s), {}",
                        step.status.as_str(),
                        step.attempts,
                        step.duration_ms.map(format_ms).unwrap_or_default()
                    ),
                };
                println!(
                    "     ✓ {:<22} {:<12} {detail}",
                    step.name,
                    step.kind.as_str()
                );
            }
        }
        if run.summary.status.is_terminal() {
            break run;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = stop.send(());
            let _ = worker.await;
            return Err(Failure::failed(format!(
                "the demo run {} did not finish within 60 s (status {})",
                started.run_id, run.summary.status
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let _ = stop.send(());
    if let Ok(Err(err)) = worker.await {
        return Err(Failure::failed(format!("the worker failed: {err}")));
    }
    println!();
    match &run.output {
        Some(output) => println!("run {}: {}", run.summary.status, output),
        None => println!(
            "run {}: {}",
            run.summary.status,
            run.error.clone().unwrap_or_default()
        ),
    }
    println!("inspect it with: cairn runs show {}", run.summary.id);
    Ok(
        if run.summary.status == cairn_runner::RunStatus::Completed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
