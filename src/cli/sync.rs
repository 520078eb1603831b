//! `cairn sync`: start sync runs for a source's streams, and follow them (into the
//! warehouse, or with `--to` into another vendor's API: see [`super::pipeline`]).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_connectors::rest::RestConfig;
use cairn_connectors::warehouse::ident::schema_name_problem;
use cairn_runner::{Client, Registry, RunDetail, RunId, RunStatus, StartOptions};
use cairn_workflows::sync::eta::Eta;
use cairn_workflows::sync::{self, Sources, SyncInput, SyncTarget};
use clap::ValueEnum;
use serde_json::Value;

use super::{Failure, Outcome, connect, describe, print};

/// Which sync workflow to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Records changed since the stream's watermark.
    Incremental,
    /// The full history, on its own run; incremental runs go on meanwhile.
    Backfill,
    /// Mark rows the vendor no longer has as deleted.
    Reconcile,
}

impl Mode {
    pub(crate) fn workflow(self) -> &'static str {
        match self {
            Self::Incremental => sync::INCREMENTAL,
            Self::Backfill => sync::BACKFILL,
            Self::Reconcile => sync::RECONCILE,
        }
    }
}

/// The arguments of `cairn sync`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct SyncArgs {
    #[command(subcommand)]
    command: Option<super::sync_status::SyncCommand>,
    /// The source's TOML file, or the name of a Rust source this binary registers.
    #[arg(required = true)]
    source: Option<std::path::PathBuf>,
    /// Only this stream (default: every stream of the source).
    #[arg(long)]
    stream: Option<String>,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Mode::Incremental)]
    mode: Mode,
    /// Use this base URL instead of the file's (a sandbox port, a staging API).
    #[arg(long)]
    base_url: Option<String>,
    /// Land in this warehouse schema instead of the file's `[warehouse] schema` (by
    /// default derived from the source's name).
    #[arg(long)]
    schema: Option<String>,
    /// Reconcile: apply deletes even when the id set looks incomplete.
    #[arg(long)]
    force: bool,
    /// Write the streams to this destination's API (a TOML file with a [destination]
    /// table) instead of the warehouse.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["mode", "schema", "force", "every"])]
    to: Option<std::path::PathBuf>,
    /// With --to: use this base URL instead of the destination file's.
    #[arg(long, value_name = "URL", requires = "to")]
    to_base_url: Option<String>,
    /// With --to: the destination stream to write (default: the source stream's name).
    #[arg(long, value_name = "NAME", requires = "to")]
    to_stream: Option<String>,
    /// Wait for the runs to end, showing progress; exit 1 unless all completed.
    #[arg(long)]
    wait: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Instead of syncing once now, sync incrementally on this cron schedule from now on
    /// (`cairn schedule sync`): e.g. "*/15 * * * *".
    #[arg(long, value_name = "CRON", conflicts_with_all = ["mode", "wait", "force"])]
    every: Option<String>,
    /// With --every: reconcile deletes on this (slower) cron schedule, e.g. "0 3 * * *".
    #[arg(long, value_name = "CRON", requires = "every")]
    reconcile_every: Option<String>,
    /// With --every: the IANA time zone the cron expressions are read in.
    #[arg(long, default_value = "UTC", requires = "every")]
    timezone: String,
}

/// What to sync: the source's streams, where from and where to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Selection<'a> {
    /// Only this stream (default: all).
    pub(crate) stream: Option<&'a str>,
    /// Another base URL than the file's.
    pub(crate) base_url: Option<&'a str>,
    /// Another warehouse schema than the file's.
    pub(crate) schema: Option<&'a str>,
}

/// Builds one run input per selected stream of `source` (a TOML file, or the name of a
/// Rust source the registry knows), checking it first; returns where they land beside
/// them.
pub(crate) fn inputs(
    registry: &Registry,
    source: &Path,
    selection: Selection<'_>,
) -> Result<(SyncTarget, Vec<SyncInput>), Failure> {
    let registered = registry
        .provided::<Sources>()
        .filter(|_| !source.exists())
        .and_then(|sources| {
            let name = source.to_str()?;
            SyncTarget::registered(sources, name, selection.schema)
        });
    let (target, template) = match registered {
        Some(target) => {
            if let Some(problem) = schema_name_problem(&target.schema) {
                return Err(Failure::usage(format!(
                    "--schema `{}`: {problem}",
                    target.schema
                )));
            }
            // As for a file: refused before any run exists.
            if let Some(problem) = selection.base_url.and_then(sync::base_url_problem) {
                return Err(Failure::usage(format!("--base-url: {problem}")));
            }
            let template = SyncInput::registered(&target.source, "");
            (target, template)
        }
        None => toml_target(registry, source, selection)?,
    };
    let chosen = match selection.stream {
        Some(wanted) if target.streams.iter().any(|n| n == wanted) => vec![wanted.to_owned()],
        Some(wanted) => {
            return Err(Failure::usage(format!(
                "{} has no stream `{wanted}`; its streams: {}",
                source.display(),
                target.streams.join(", ")
            )));
        }
        None => target.streams.clone(),
    };
    let inputs = chosen
        .into_iter()
        .map(|stream| {
            let mut input = template.clone();
            input.stream = stream;
            input.base_url = selection.base_url.map(str::to_owned);
            input.warehouse_schema = selection.schema.map(str::to_owned);
            input
        })
        .collect();
    Ok((target, inputs))
}

/// The target of the TOML source in file `path`, and an input carrying it.
fn toml_target(
    registry: &Registry,
    path: &Path,
    selection: Selection<'_>,
) -> Result<(SyncTarget, SyncInput), Failure> {
    if !path.exists() {
        let registered = registry
            .provided::<Sources>()
            .map(Sources::names)
            .unwrap_or_default();
        let registered = if registered.is_empty() {
            String::new()
        } else {
            format!(" (Rust sources registered: {})", registered.join(", "))
        };
        return Err(Failure::usage(format!(
            "{} is neither a source file nor a registered Rust source{registered}",
            path.display()
        )));
    }
    let mut config = RestConfig::from_file(path).map_err(|err| Failure::usage(describe(&err)))?;
    if let Some(schema) = selection.schema {
        config = config
            .with_schema(schema)
            .map_err(|err| Failure::usage(format!("--schema: {}", describe(&err))))?;
    }
    // Checked here, not later in a worker: a URL that would carry credentials in the
    // clear is refused before any run exists.
    if let Some(base_url) = selection.base_url {
        config = config
            .with_base_url(base_url)
            .map_err(|err| Failure::usage(format!("--base-url: {}", describe(&err))))?;
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| Failure::usage(format!("cannot read {}: {err}", path.display())))?;
    let template = SyncInput::new(text, path.display().to_string(), String::new());
    Ok((SyncTarget::of_config(&config), template))
}

/// Refuses (exit 2) to start runs that would fail at their first request: a
/// refresh-token source whose token was never stored, or that the vendor refused.
pub(crate) async fn check_credential(
    pool: &sqlx::PgPool,
    credential: Option<&str>,
) -> Result<(), Failure> {
    let Some(credential) = credential else {
        return Ok(());
    };
    let status = cairn_connectors::tokens::TokenStore::new(pool.clone())
        .status(credential)
        .await
        .map_err(|err| Failure::failed(err.to_string()))?;
    let hint = cairn_connectors::tokens::reauthorize_hint(credential);
    match status {
        None => Err(Failure::usage(format!(
            "no OAuth refresh token is stored for {credential}: {hint}"
        ))),
        Some(status) if status.refused_at.is_some() => Err(Failure::usage(format!(
            "the vendor refused the stored refresh token of {credential} ({}): {hint}",
            status.refusal.as_deref().unwrap_or("no reason given")
        ))),
        Some(_) => Ok(()),
    }
}

/// Refuses (exit 2) to sync a stream into a table another source writes, naming both.
pub(crate) async fn check_tables(
    pool: &sqlx::PgPool,
    described: &Path,
    target: &SyncTarget,
    inputs: &[SyncInput],
) -> Result<(), Failure> {
    let (source, schema) = (&target.source, &target.schema);
    let warehouse = cairn_connectors::warehouse::Warehouse::new(source, schema)
        .map_err(|err| Failure::usage(describe(&err)))?;
    for input in inputs {
        let owner = warehouse
            .owner(
                &mut *pool.acquire().await.map_err(|err| {
                    Failure::failed(format!("cannot read the warehouse registry: {err}"))
                })?,
                &input.stream,
            )
            .await
            .map_err(|err| Failure::failed(describe(&err)))?;
        if let Some(owner) = owner.filter(|owner| owner != source) {
            return Err(Failure::usage(format!(
                "source `{source}` ({}) and source `{owner}` both write warehouse table \
                 {schema}.{}; two sources never share a table: give one of them its own \
                 [warehouse] schema (or sync with --schema)",
                described.display(),
                input.stream
            )));
        }
    }
    Ok(())
}

pub(crate) async fn run(url: Option<&str>, registry: Arc<Registry>, args: SyncArgs) -> Outcome {
    let (source, command) = (args.source, args.command);
    let source = match (command, source) {
        (Some(command), _) => return super::sync_status::run(url, &registry, command).await,
        (None, Some(source)) => source,
        (None, None) => return Err(Failure::usage("cairn sync needs a source file")),
    };
    if let Some(every) = args.every {
        let schedule = super::schedule::SyncScheduleArgs {
            source,
            every,
            reconcile_every: args.reconcile_every,
            timezone: args.timezone,
            stream: args.stream,
            base_url: args.base_url,
            schema: args.schema,
            json: args.json,
        };
        return super::schedule::sync(url, &registry, schedule).await;
    }
    let selection = Selection {
        stream: args.stream.as_deref(),
        base_url: args.base_url.as_deref(),
        schema: args.schema.as_deref(),
    };
    let (target, mut inputs) = inputs(&registry, &source, selection)?;
    if let Some(file) = &args.to {
        let to = super::pipeline::To {
            file,
            base_url: args.to_base_url.as_deref(),
            stream: args.to_stream.as_deref(),
        };
        let (pipelines, dest_credential) = super::pipeline::inputs(&to, inputs)?;
        let credentials = [target.credential.as_deref(), dest_credential.as_deref()];
        return super::pipeline::run(
            url,
            registry,
            pipelines,
            credentials,
            (args.wait, args.json),
        )
        .await;
    }
    for input in &mut inputs {
        input.force = args.force;
    }
    let pool = connect(url, 4).await?;
    check_tables(&pool, &source, &target, &inputs).await?;
    check_credential(&pool, target.credential.as_deref()).await?;
    let client = Client::new(pool).with_registry(registry);
    let mut runs = Vec::new();
    for input in &inputs {
        let started = client
            .start(args.mode.workflow(), input, &StartOptions::default())
            .await?;
        if !args.json {
            eprintln!(
                "started {} of `{}` as run {}",
                args.mode.workflow(),
                input.stream,
                started.run_id
            );
        }
        runs.push((input.stream.clone(), started.run_id));
    }
    if !args.wait {
        if args.json {
            print_started(&runs)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Followed {
        runs: ended,
        throttled,
    } = follow(
        &client,
        &runs,
        !args.json && std::io::stderr().is_terminal(),
    )
    .await?;
    if args.json {
        print::json(&ended)?;
    } else {
        summarise(&ended);
        say_throttled(throttled);
    }
    let all_completed = ended
        .iter()
        .all(|r| r.summary.status == RunStatus::Completed);
    // A run that completed over a stream whose history is incomplete did not sync it.
    let incomplete: Vec<&str> = ended
        .iter()
        .filter_map(|r| r.output.as_ref()?.get("history")?.as_str())
        .collect();
    for problem in &incomplete {
        eprintln!("error: {problem}");
    }
    Ok(if all_completed && incomplete.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The runs started, one per stream, as `--json` prints them without `--wait`.
pub(crate) fn print_started(runs: &[(String, RunId)]) -> Result<(), Failure> {
    let doc: Vec<Value> = runs
        .iter()
        .map(|(stream, id)| serde_json::json!({ "stream": stream, "run_id": id }))
        .collect();
    print::json(&doc)
}

/// What following runs saw: the runs as they ended, and the 429s vendors answered
/// meanwhile (counted on every credential's budget, with or without a rate limit).
pub(crate) struct Followed {
    /// The runs, ended.
    pub(crate) runs: Vec<RunDetail>,
    /// 429s answered while they ran.
    pub(crate) throttled: u64,
}

/// How far back the current rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Waits for every run to end, drawing one progress line on a terminal: records, the
/// current rate, an ETA from the vendor's total where every run has one, and the 429s.
pub(crate) async fn follow(
    client: &Client,
    runs: &[(String, RunId)],
    live: bool,
) -> Result<Followed, Failure> {
    let pool = client.pool();
    let throttled_at_start = throttled(pool).await;
    let started = Instant::now();
    let mut warned_idle = false;
    let mut outage = Outage::default();
    let mut recent: std::collections::VecDeque<(Instant, u64)> = Default::default();
    loop {
        // Only statuses and progress while waiting: a run's steps grow with every page.
        let mut states = Vec::with_capacity(runs.len());
        for (_, id) in runs {
            states.push(riding_out(&mut outage, || client.progress(*id)).await?);
        }
        let done = states.iter().filter(|(s, _)| s.is_terminal()).count();
        if live {
            let number =
                |p: Option<&Value>, key: &str| p.and_then(|p| p.get(key)).and_then(Value::as_u64);
            let records: u64 = states
                .iter()
                .map(|(_, p)| number(p.as_ref(), "records").unwrap_or(0))
                .sum();
            let pages: u64 = states
                .iter()
                .map(|(_, p)| number(p.as_ref(), "pages").unwrap_or(0))
                .sum();
            // A total for all of them, or none: a partial sum would promise too early.
            let total: Option<u64> = states
                .iter()
                .map(|(status, p)| match number(p.as_ref(), "total") {
                    Some(total) => Some(total),
                    None if status.is_terminal() => number(p.as_ref(), "records").or(Some(0)),
                    None => None,
                })
                .sum();
            let now = Instant::now();
            recent.push_back((now, records));
            while recent
                .front()
                .is_some_and(|(at, _)| now - *at > RATE_WINDOW)
            {
                recent.pop_front();
            }
            let rate = match recent.front() {
                Some((at, before)) if now - *at > Duration::from_millis(500) => {
                    records.saturating_sub(*before) as f64 / (now - *at).as_secs_f64()
                }
                _ => records as f64 / started.elapsed().as_secs_f64().max(0.001),
            };
            let eta = Eta::estimate(records, rate, total, None).map_or_else(
                || "no vendor total, no ETA".to_owned(),
                |eta| eta.describe(),
            );
            let throttles = throttled(pool).await.saturating_sub(throttled_at_start);
            let bar = bar(records, total.unwrap_or(0));
            eprint!(
                "\r{bar} {records} records  {pages} pages  {rate:.0} rec/s  {eta}  {throttles} 429s  {done}/{} runs   ",
                runs.len()
            );
            let _ = std::io::stderr().flush();
        }
        if done == runs.len() {
            if live {
                eprintln!();
            }
            let mut details = Vec::with_capacity(runs.len());
            for (_, id) in runs {
                details.push(riding_out(&mut outage, || client.show(*id)).await?);
            }
            return Ok(Followed {
                runs: details,
                throttled: throttled(pool).await.saturating_sub(throttled_at_start),
            });
        }
        if !warned_idle
            && started.elapsed() > Duration::from_secs(5)
            && states.iter().all(|(s, _)| *s == RunStatus::Pending)
        {
            warned_idle = true;
            if live {
                eprintln!();
            }
            eprintln!("no worker has picked the runs up yet; start one with `cairn worker`");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The line saying how often the vendors pushed back.
pub(crate) fn say_throttled(throttled: u64) {
    outln!("the vendor answered 429 (too many requests) {throttled} times while these runs ran");
}

/// How long a follower waits for an unreachable database before it gives up: a server
/// restart takes seconds; the runs go on meanwhile, in their workers.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(120);

/// An outage the follower is riding out: since when, and how many calls failed.
#[derive(Default)]
pub(crate) struct Outage {
    since: Option<Instant>,
    failures: u32,
}

/// Calls `op` until it answers, waiting out an unreachable database (a restart, cut
/// connections) for up to [`OUTAGE_PATIENCE`] with backoff; any other error is returned.
pub(crate) async fn riding_out<T, F, Fut>(outage: &mut Outage, mut op: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, cairn_runner::EngineError>>,
{
    loop {
        match op().await {
            Ok(value) => {
                if outage.since.take().is_some() {
                    eprintln!("the database answers again");
                }
                outage.failures = 0;
                return Ok(value);
            }
            Err(err) if err.is_unreachable() => {
                let since = *outage.since.get_or_insert_with(|| {
                    eprintln!(
                        "\nthe database is unreachable ({err}); waiting for it, the runs go on"
                    );
                    Instant::now()
                });
                if since.elapsed() > OUTAGE_PATIENCE {
                    return Err(Failure::failed(format!(
                        "the database stayed unreachable for {} s: {err}; the runs may still \
                         complete, see `cairn runs list`",
                        OUTAGE_PATIENCE.as_secs()
                    )));
                }
                outage.failures += 1;
                let backoff = 100 * u64::from(outage.failures.min(20));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn bar(done: u64, total: u64) -> String {
    const WIDTH: usize = 24;
    if total == 0 {
        return format!("[{}]", "·".repeat(WIDTH));
    }
    let filled = ((done as f64 / total as f64).min(1.0) * WIDTH as f64) as usize;
    format!("[{}{}]", "#".repeat(filled), "·".repeat(WIDTH - filled))
}

async fn throttled(pool: &sqlx::PgPool) -> u64 {
    cairn_connectors::budget::throttled_total(pool)
        .await
        .unwrap_or(0)
}

/// One line per run: what landed, or why it did not.
pub(crate) fn summarise(runs: &[RunDetail]) {
    for run in runs {
        let stream = run
            .input
            .get("stream")
            .and_then(Value::as_str)
            .unwrap_or("?");
        match (&run.summary.status, &run.output, &run.error) {
            (RunStatus::Completed, Some(out), _) => {
                let field = |key: &str| out.get(key).map(Value::to_string).unwrap_or_default();
                if let Some(outcome) = out.get("outcome") {
                    let n = |key: &str| outcome.get(key).map(Value::to_string).unwrap_or_default();
                    if outcome["outcome"] == "applied" {
                        outln!(
                            "{stream:<12} {} ids at the vendor; {} rows marked deleted, {} undeleted",
                            n("ids"),
                            n("deleted"),
                            n("undeleted")
                        );
                    } else {
                        outln!(
                            "{stream:<12} refused: {} ids at the vendor for {} live rows looks \
                             incomplete; nothing deleted (see `cairn alerts`, or --force)",
                            n("ids"),
                            n("live")
                        );
                    }
                } else {
                    outln!(
                        "{stream:<12} {} records in {} pages; {} upserted, {} quarantined",
                        field("records"),
                        field("pages"),
                        field("upserted"),
                        field("quarantined")
                    );
                }
            }
            (status, _, error) => {
                let why = error
                    .as_ref()
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                outln!(
                    "{stream:<12} {status}: {why}   (cairn runs show {})",
                    run.summary.id
                );
            }
        }
    }
}
