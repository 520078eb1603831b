//! `cairn dlq`: the dead-letter list — failed runs and records the warehouse could not
//! hold — and retrying them.

use std::process::ExitCode;
use std::str::FromStr;

use cairn_runner::dead_letter::{DeadLetterError, DeadRun};
use cairn_runner::{Client, DeadLetterId, DeadLetters, RunStatus};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;

use super::quarantine::{corrected, print_records, retry_and_report, show_record};
use super::{Failure, Outcome, connect, print};

/// The subcommands of `cairn dlq`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Failed runs (category, error, failing step, attempts) and quarantined records.
    List {
        /// At most this many of each.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: a run id, or record:<n>.
    Show {
        /// A run id, or record:<n>.
        id: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Retry a dead letter. A run resumes from its failed step, keeping every completed
    /// checkpoint before it; a record is re-applied to the warehouse (as stored, or as
    /// given with --record) and leaves the list once it lands.
    Retry {
        /// A run id, or record:<n>.
        id: String,
        /// Records only: land this corrected version instead of the stored one (JSON;
        /// same primary key).
        #[arg(long)]
        record: Option<String>,
        /// Records only: re-apply even though a newer version of the record has landed
        /// since it was set aside.
        #[arg(long)]
        force: bool,
        /// Runs only: wait for the run to end; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Take an entry off the list without retrying it (handled another way): a record
    /// is deleted; a run stays failed but is no longer listed.
    Dismiss {
        /// A run id, or record:<n>.
        id: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

impl From<DeadLetterError> for Failure {
    fn from(err: DeadLetterError) -> Self {
        if err.is_bad_input() {
            Self::usage(err.to_string())
        } else {
            Self::failed(err.to_string())
        }
    }
}

/// Runs one `cairn dlq` subcommand.
pub(crate) async fn run(url: Option<&str>, command: DlqCommand) -> Outcome {
    match command {
        DlqCommand::List { limit, json } => {
            let list = DeadLetters::new(connect(url, 2).await?)
                .list(limit.max(0))
                .await?;
            if json {
                print::json(&list)?;
            } else {
                print_runs(&list.runs);
                print_records(&list.records);
            }
        }
        DlqCommand::Show { id, json } => {
            let id = DeadLetterId::from_str(&id)?;
            let dead = DeadLetters::new(connect(url, 2).await?);
            match id {
                DeadLetterId::Run(run_id) => {
                    let run = dead.run(run_id).await?;
                    if json {
                        print::json(&run)?;
                    } else {
                        show_run(&run);
                    }
                }
                DeadLetterId::Record(n) => {
                    let record = dead.record(n).await?;
                    if json {
                        print::json(&record)?;
                    } else {
                        show_record(&record);
                    }
                }
            }
        }
        DlqCommand::Dismiss { id, json } => {
            let id = DeadLetterId::from_str(&id)?;
            DeadLetters::new(connect(url, 2).await?).dismiss(id).await?;
            if json {
                print::json(&serde_json::json!({ "dismissed": id.to_string() }))?;
            } else {
                outln!("{id} dismissed from the dead-letter list");
            }
        }
        DlqCommand::Retry {
            id,
            record,
            force,
            wait,
            json,
        } => {
            let id = DeadLetterId::from_str(&id)?;
            let replacement = corrected(record)?;
            match id {
                DeadLetterId::Run(run_id) => {
                    if replacement.is_some() || force {
                        return Err(Failure::usage(
                            "--record and --force apply to record:<n> entries, not to runs",
                        ));
                    }
                    return retry_run(url, run_id, wait, json).await;
                }
                DeadLetterId::Record(n) => {
                    if wait {
                        return Err(Failure::usage(
                            "--wait applies to runs; a record retry lands at once",
                        ));
                    }
                    retry_and_report(url, n, replacement, force, json, "the dead-letter list")
                        .await?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn retry_run(
    url: Option<&str>,
    run_id: cairn_runner::RunId,
    wait: bool,
    json: bool,
) -> Outcome {
    let pool = connect(url, 2).await?;
    let retried = DeadLetters::new(pool.clone()).retry(run_id).await?;
    if !wait {
        if json {
            print::json(&retried)?;
        } else {
            match &retried.from_step {
                Some(step) => outln!(
                    "run {run_id} is pending again: it resumes at step {} `{}`; {} completed \
                     step(s) before it are kept",
                    step.position,
                    step.name,
                    retried.kept_steps
                ),
                None => outln!(
                    "run {run_id} is pending again; its {} completed step(s) are kept",
                    retried.kept_steps
                ),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let run = Client::new(pool).wait(run_id, None).await?;
    if json {
        print::json(&run)?;
    } else {
        print::run_detail(&run);
    }
    Ok(if run.summary.status == RunStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn print_runs(runs: &[DeadRun]) {
    if runs.is_empty() {
        outln!("no failed runs");
    } else {
        outln!(
            "{:<36}  {:<20}  {:<14}  {:<24}  {:>8}  ERROR",
            "RUN",
            "WORKFLOW",
            "CATEGORY",
            "FAILED STEP",
            "ATTEMPTS"
        );
        for run in runs {
            let (step, attempts) = run.failed_step.as_ref().map_or(("-".to_owned(), 0), |s| {
                (format!("{} {}", s.position, s.name), s.attempts)
            });
            outln!(
                "{:<36}  {:<20}  {:<14}  {:<24}  {:>8}  {}",
                run.run_id,
                run.workflow,
                run.category.as_deref().unwrap_or("-"),
                step,
                attempts,
                run.message.as_deref().unwrap_or("")
            );
        }
    }
}

fn show_run(run: &DeadRun) {
    outln!("run       {}", run.run_id);
    outln!("workflow  {} (queue {})", run.workflow, run.queue);
    if let Some(key) = &run.idempotency_key {
        outln!("key       {key}");
    }
    if let Some(at) = &run.failed_at {
        outln!("failed    {}", time(at));
    }
    outln!(
        "error     [{}{}] {}",
        run.class.as_deref().unwrap_or("?"),
        run.category
            .as_deref()
            .map(|c| format!("/{c}"))
            .unwrap_or_default(),
        run.message.as_deref().unwrap_or("")
    );
    for (depth, cause) in run.chain.iter().enumerate().skip(1) {
        outln!("  {}caused by: {cause}", "  ".repeat(depth - 1));
    }
    match &run.failed_step {
        Some(step) => outln!(
            "step      {} `{}` after {} attempt(s): {}",
            step.position,
            step.name,
            step.attempts,
            step.last_error.as_deref().unwrap_or("")
        ),
        None => outln!("step      none (the workflow failed outside a step)"),
    }
    outln!(
        "retry     `cairn dlq retry {}` keeps {} completed step(s)",
        run.run_id,
        run.completed_steps
    );
}
