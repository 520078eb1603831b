//! `cairn purge`: retention. Finished runs' step outputs, quarantined records and
//! refused records older than their windows are purged; run and step metadata stay.

use std::process::ExitCode;

use cairn_runner::{Client, PurgeOptions};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{Failure, Outcome, connect, print};

/// The arguments of `cairn purge`.
#[derive(Debug, clap::Args)]
pub(crate) struct PurgeArgs {
    /// Purge the step outputs of runs that completed or were cancelled longer ago than
    /// this (`7d`, `30d`, `12h`).
    #[arg(long, value_name = "DURATION")]
    older_than: String,
    /// Also purge failed runs (the dead-letter list: they can no longer be retried) and
    /// records destinations refused, older than this.
    #[arg(long, value_name = "DURATION")]
    dead_letters_older_than: Option<String>,
    /// Also forget quarantined records last met longer ago than this.
    #[arg(long, value_name = "DURATION")]
    quarantine_older_than: Option<String>,
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Count what would be purged, and purge nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// What was purged, as `--json` prints it.
#[derive(Serialize)]
struct Purged {
    dry_run: bool,
    runs_before: DateTime<Utc>,
    runs: u64,
    step_outputs: u64,
    bytes: u64,
    dead_letters_before: Option<DateTime<Utc>>,
    destination_rejects: u64,
    quarantine_before: Option<DateTime<Utc>>,
    quarantined: u64,
}

fn cutoff(flag: &str, text: &str) -> Result<DateTime<Utc>, Failure> {
    let secs = cairn_connectors::watermark::parse_duration_secs(text)
        .map_err(|why| Failure::usage(format!("{flag}: {why}")))?;
    let secs = i64::try_from(secs)
        .ok()
        .filter(|secs| *secs > 0 && *secs <= 100 * 365 * 86_400)
        .ok_or_else(|| {
            Failure::usage(format!("{flag}: give a duration between 1s and 100 years"))
        })?;
    Ok(Utc::now() - Duration::seconds(secs))
}

pub(crate) async fn run(url: Option<&str>, args: PurgeArgs) -> Outcome {
    let runs_before = cutoff("--older-than", &args.older_than)?;
    let dead_letters_before = args
        .dead_letters_older_than
        .as_deref()
        .map(|text| cutoff("--dead-letters-older-than", text))
        .transpose()?;
    let quarantine_before = args
        .quarantine_older_than
        .as_deref()
        .map(|text| cutoff("--quarantine-older-than", text))
        .transpose()?;
    let pool = connect(url, 2).await?;
    let client = Client::new(pool.clone());
    let report = client
        .purge(&PurgeOptions {
            completed_before: runs_before,
            failed_before: dead_letters_before,
            workflow: args.workflow.clone(),
            dry_run: args.dry_run,
            batch: 500,
        })
        .await?;
    let destination_rejects = match dead_letters_before {
        Some(before) => cairn_workflows::sync::pipeline::purge_rejects(&pool, before, args.dry_run)
            .await
            .map_err(|err| Failure::failed(format!("purging refused records: {err}")))?,
        None => 0,
    };
    let quarantined = match quarantine_before {
        Some(before) => cairn_connectors::warehouse::purge_quarantine(&pool, before, args.dry_run)
            .await
            .map_err(|err| Failure::failed(err.to_string()))?,
        None => 0,
    };
    let purged = Purged {
        dry_run: args.dry_run,
        runs_before,
        runs: report.runs,
        step_outputs: report.steps,
        bytes: report.bytes,
        dead_letters_before,
        destination_rejects,
        quarantine_before,
        quarantined,
    };
    if args.json {
        print::json(&purged)?;
    } else {
        let verb = if args.dry_run {
            "would purge"
        } else {
            "purged"
        };
        outln!(
            "{verb} the outputs of {} runs ({} step outputs, {} bytes) finished before {}",
            purged.runs,
            purged.step_outputs,
            purged.bytes,
            runs_before.to_rfc3339()
        );
        if dead_letters_before.is_some() {
            outln!(
                "{verb} {} records destinations refused",
                destination_rejects
            );
        }
        if quarantine_before.is_some() {
            outln!("{verb} {} quarantined records", quarantined);
        }
    }
    Ok(ExitCode::SUCCESS)
}
