//! `cairn sync a.toml --to b.toml`: a source's streams written to a destination's API
//! instead of the warehouse, one `sync.pipeline` run per stream.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_connectors::destination::DestinationConfig;
use cairn_runner::{Client, Registry, RunDetail, RunStatus, StartOptions};
use cairn_workflows::sync::{PIPELINE, PipelineInput, SyncInput};
use serde_json::Value;

use super::{Failure, Outcome, connect, describe, print};

/// Where `--to` sends the streams.
pub(crate) struct To<'a> {
    /// The destination's TOML file.
    pub(crate) file: &'a Path,
    /// Another base URL than the file's.
    pub(crate) base_url: Option<&'a str>,
    /// The destination stream, when it is not named as the source's.
    pub(crate) stream: Option<&'a str>,
}

/// One pipeline input per source input, checked against the destination file before
/// any run exists (exit 2 for a file, URL or stream that cannot be used).
/// The pipelines' inputs, and the stored credential the destination's auth needs.
pub(crate) fn inputs(
    to: &To<'_>,
    sources: Vec<SyncInput>,
) -> Result<(Vec<PipelineInput>, Option<String>), Failure> {
    let mut config =
        DestinationConfig::from_file(to.file).map_err(|err| Failure::usage(describe(&err)))?;
    if let Some(url) = to.base_url {
        config = config
            .with_base_url(url)
            .map_err(|err| Failure::usage(format!("--to-base-url: {}", describe(&err))))?;
    }
    if to.stream.is_some() && sources.len() != 1 {
        return Err(Failure::usage(
            "--to-stream names one destination stream: choose one source stream with --stream",
        ));
    }
    let text = std::fs::read_to_string(to.file)
        .map_err(|err| Failure::usage(format!("cannot read {}: {err}", to.file.display())))?;
    let credential = config.http().auth.stored_credential().map(str::to_owned);
    let inputs = sources
        .into_iter()
        .map(|source| {
            let dest_stream = to.stream.unwrap_or(&source.stream).to_owned();
            if config.stream(&dest_stream).is_none() {
                let streams: Vec<&str> = config.streams().map(|(name, _)| name).collect();
                return Err(Failure::usage(format!(
                    "{} has no stream `{dest_stream}` to write `{}` to; its streams: {} \
                     (choose one with --to-stream)",
                    to.file.display(),
                    source.stream,
                    streams.join(", ")
                )));
            }
            let mut input = PipelineInput::new(source, text.clone(), to.file.display().to_string());
            input.destination_stream = Some(dest_stream);
            input.destination_base_url = to.base_url.map(str::to_owned);
            Ok(input)
        })
        .collect::<Result<_, _>>()?;
    Ok((inputs, credential))
}

/// Starts the pipelines; with `wait`, follows them and exits 1 unless every run
/// completed and every record reached the destination.
pub(crate) async fn run(
    url: Option<&str>,
    registry: Arc<Registry>,
    inputs: Vec<PipelineInput>,
    credentials: [Option<&str>; 2],
    (wait, json): (bool, bool),
) -> Outcome {
    let pool = connect(url, 4).await?;
    for credential in credentials {
        super::sync::check_credential(&pool, credential).await?;
    }
    let client = Client::new(pool).with_registry(registry);
    let mut runs = Vec::new();
    for input in &inputs {
        let started = client
            .start(PIPELINE, input, &StartOptions::default())
            .await?;
        if !json {
            eprintln!(
                "started {PIPELINE} of `{}` to `{}` as run {}",
                input.source.stream,
                input.destination_stream.as_deref().unwrap_or_default(),
                started.run_id
            );
        }
        runs.push((input.source.stream.clone(), started.run_id));
    }
    if !wait {
        if json {
            super::sync::print_started(&runs)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let live = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let ended = super::sync::follow(&client, &runs, live).await?.runs;
    if json {
        print::json(&ended)?;
    } else {
        summarise(&ended);
    }
    let clean = ended.iter().all(|run| {
        run.summary.status == RunStatus::Completed
            && ["rejected", "conflicts"]
                .iter()
                .all(|key| count(run, key) == 0)
    });
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn count(run: &RunDetail, key: &str) -> u64 {
    run.output
        .as_ref()
        .and_then(|out| out.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// One line per run: what was written, and what was not and where it went.
fn summarise(runs: &[RunDetail]) {
    for run in runs {
        let out = run.output.as_ref();
        let text = |key: &str| {
            out.and_then(|o| o.get(key))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        let (stream, to) = (text("stream"), text("destination_stream"));
        if run.summary.status != RunStatus::Completed {
            let why = run
                .error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            outln!(
                "{} {}: {why}   (cairn runs show {})",
                run.input["source"]["stream"].as_str().unwrap_or("?"),
                run.summary.status,
                run.summary.id
            );
            continue;
        }
        outln!(
            "{stream} -> {to}: {} records in {} pages; {} written ({} had landed before \
             their answer was lost), {} already there, {} refused, {} left by a conflict",
            count(run, "records"),
            count(run, "pages"),
            count(run, "applied"),
            count(run, "repeated"),
            count(run, "already_created"),
            count(run, "rejected"),
            count(run, "conflicts")
        );
        if count(run, "rejected") + count(run, "conflicts") > 0 {
            eprintln!(
                "error: {to}: records the destination refused or a conflict left are in \
                 cairn.destination_rejects (conflicts under skip_and_alert: `cairn alerts`)"
            );
        }
    }
}
