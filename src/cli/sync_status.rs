//! `cairn sync status` and `cairn sync reset`: where each stream of a source stands, and
//! forgetting a stream's state so the next sync reads it whole.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_runner::Registry;
use cairn_workflows::sync::{StreamStatus, SyncTarget, reset_stream, stream_status};
use chrono::SecondsFormat;
use clap::Subcommand;
use serde_json::json;

use super::{Failure, Outcome, connect, print};

/// The subcommands of `cairn sync`.
#[derive(Debug, Subcommand)]
pub(crate) enum SyncCommand {
    /// Per stream: watermark, last run and its outcome, whether the history is complete
    /// (with the backfill's progress), rows live and deleted, quarantined records and
    /// open alerts.
    Status {
        /// The source's TOML file, or the name of a Rust source this binary registers.
        source: PathBuf,
        /// Land in this warehouse schema instead of the file's.
        #[arg(long)]
        schema: Option<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Forget a stream's watermark, history and backfill resume point, so its next sync
    /// reads it whole (the warehouse table and its rows stay).
    Reset {
        /// The source's TOML file, or the name of a Rust source this binary registers.
        source: PathBuf,
        /// The stream to forget.
        #[arg(long)]
        stream: String,
        /// Land in this warehouse schema instead of the file's.
        #[arg(long)]
        schema: Option<String>,
        /// Yes, forget it (without this, nothing changes).
        #[arg(long)]
        yes: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// Where the source at `path` (a file or a registered name) lands.
fn target(
    registry: &Registry,
    path: &std::path::Path,
    schema: Option<&str>,
) -> Result<SyncTarget, Failure> {
    let selection = super::sync::Selection {
        schema,
        ..super::sync::Selection::default()
    };
    super::sync::inputs(registry, path, selection).map(|(target, _)| target)
}

/// Runs `cairn sync status` or `cairn sync reset`.
pub(crate) async fn run(url: Option<&str>, registry: &Registry, command: SyncCommand) -> Outcome {
    match command {
        SyncCommand::Status {
            source,
            schema,
            json,
        } => {
            let target = target(registry, &source, schema.as_deref())?;
            let pool = connect(url, 2).await?;
            let streams = stream_status(&pool, &target)
                .await
                .map_err(|err| Failure::failed(err.to_string()))?;
            if json {
                print::json(&json!({
                    "source": target.source,
                    "schema": target.schema,
                    "streams": streams,
                }))?;
            } else {
                show(&target, &streams);
            }
        }
        SyncCommand::Reset {
            source,
            stream,
            schema,
            yes,
            json,
        } => {
            let target = target(registry, &source, schema.as_deref())?;
            if !target.streams.contains(&stream) {
                return Err(Failure::usage(format!(
                    "{} has no stream `{stream}`; its streams: {}",
                    source.display(),
                    target.streams.join(", ")
                )));
            }
            if !yes {
                return Err(Failure::usage(format!(
                    "this forgets the watermark, history and backfill progress of stream \
                     `{stream}` of source `{}` (schema {}), so its next sync reads it whole; \
                     run again with --yes to do it",
                    target.source, target.schema
                )));
            }
            let pool = connect(url, 2).await?;
            let reset = reset_stream(&pool, &target, &stream)
                .await
                .map_err(|err| Failure::failed(err.to_string()))?;
            if json {
                print::json(&reset)?;
            } else if reset.forgotten {
                outln!(
                    "stream `{stream}` forgotten (its watermark was {}); the next sync reads it whole",
                    reset.watermark.as_deref().unwrap_or("none")
                );
            } else {
                outln!("stream `{stream}` had no sync state; nothing to forget");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(target: &SyncTarget, streams: &[StreamStatus]) {
    outln!("source {} (schema {})", target.source, target.schema);
    for s in streams {
        outln!();
        outln!("{}", s.stream);
        outln!(
            "  watermark    {}",
            s.watermark
                .as_deref()
                .unwrap_or("none (the next incremental reads it whole)")
        );
        match &s.last_run {
            Some(run) => outln!(
                "  last run     {} {} {}{}",
                run.workflow,
                run.status,
                run.id,
                run.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None => outln!("  last run     none"),
        }
        if let Some(fill) = &s.column_fill {
            let records = fill
                .progress
                .as_ref()
                .and_then(|p| p.get("records"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            outln!(
                "  column fill  {} {} ({records} records re-read)",
                fill.status,
                fill.id
            );
        }
        let history = &s.history;
        if history.complete {
            let since = history
                .completed_at
                .map(|at| {
                    format!(
                        " (full read {})",
                        at.to_rfc3339_opts(SecondsFormat::Secs, true)
                    )
                })
                .unwrap_or_default();
            outln!("  history      complete{since}");
        } else {
            let progress = history
                .landed
                .as_ref()
                .map(|r| match history.total {
                    Some(total) if total > 0 => format!(
                        "{} of {total} records ({:.0}%)",
                        r.records,
                        r.records as f64 * 100.0 / total as f64
                    ),
                    _ => format!("{} records in {} pages", r.records, r.page),
                })
                .unwrap_or_else(|| "nothing landed yet".to_owned());
            outln!(
                "  history      INCOMPLETE: backfill {} {}; {progress}",
                history.run.map(|r| r.to_string()).unwrap_or_default(),
                history.run_status.as_deref().unwrap_or("")
            );
        }
        outln!(
            "  rows         {} live, {} deleted",
            s.live_rows,
            s.deleted_rows
        );
        outln!("  quarantined  {}", s.quarantined);
        if s.alerts.is_empty() {
            outln!("  alerts       none");
        }
        for alert in &s.alerts {
            outln!(
                "  alert        #{} {}: {}",
                alert.id,
                alert.kind,
                alert.message
            );
        }
    }
}
