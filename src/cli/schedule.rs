//! `cairn schedule`: add, list, pause, resume and remove cron schedules.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use cairn_runner::Registry;
use cairn_runner::schedule::{
    CatchUp, CronError, Overlap, Schedule, ScheduleError, ScheduleSpec, Schedules,
};
use cairn_workflows::sync::{SyncCadence, sync_schedules};
use chrono::SecondsFormat;
use clap::Subcommand;
use serde_json::Value;

use super::{Failure, Outcome, connect, print};

/// The subcommands of `cairn schedule`.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Start a workflow's run at every fire time of a cron expression. Every worker
    /// runs the scheduler; each fire time starts exactly one run.
    Add {
        /// The schedule's unique name.
        name: String,
        /// When to fire: 5 fields (min hour day month weekday) or 6-7 with seconds first
        /// (and a year last), e.g. "*/15 * * * *" or "*/10 * * * * *".
        #[arg(long)]
        cron: String,
        /// The workflow each fire time starts.
        #[arg(long)]
        workflow: String,
        /// The input of every run, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// The IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// The queue the runs wait in.
        #[arg(long, default_value = "default")]
        queue: String,
        /// While the previous run is still going: skip the fire time, or allow another.
        #[arg(long, default_value = "skip")]
        overlap: String,
        /// Fire times missed while no worker was up: skip, once, all or all:<cap>.
        #[arg(long, default_value = "skip")]
        catch_up: String,
        /// Redefine a schedule of the same name instead of refusing.
        #[arg(long)]
        replace: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Sync a source's streams unattended: one incremental schedule per stream at
    /// --every and, with --reconcile-every, a slower delete reconciliation. Running it
    /// again redefines them (names: sync:<source>:<stream>:<mode>).
    Sync(SyncScheduleArgs),
    /// Every schedule with its next and last fire times.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Stop a schedule firing (idempotent).
    Pause {
        /// The schedule's name.
        name: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Fire a paused schedule again, from its next fire time (no catch-up of the pause).
    Resume {
        /// The schedule's name.
        name: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule; the runs it started are kept.
    Remove {
        /// The schedule's name.
        name: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

impl From<ScheduleError> for Failure {
    fn from(err: ScheduleError) -> Self {
        if err.is_bad_input() {
            Self::usage(err.to_string())
        } else {
            Self::failed(err.to_string())
        }
    }
}

/// Runs one `cairn schedule` subcommand.
pub(crate) async fn run(
    url: Option<&str>,
    registry: Arc<Registry>,
    command: ScheduleCommand,
) -> Outcome {
    match command {
        ScheduleCommand::Add {
            name,
            cron,
            workflow,
            input,
            timezone,
            queue,
            overlap,
            catch_up,
            replace,
            json,
        } => {
            // Everything is checked before the database is touched.
            let input: Value = serde_json::from_str(&input)
                .map_err(|err| Failure::usage(format!("--input is not valid JSON: {err}")))?;
            let spec = ScheduleSpec::new(&name, &cron, &workflow)
                .and_then(|spec| spec.with_timezone(&timezone))
                .map_err(|err| {
                    let flag = match &err {
                        ScheduleError::Cron(CronError::TimeZone(_)) => "--timezone",
                        ScheduleError::Cron(_) => "--cron",
                        _ => "name",
                    };
                    Failure::usage(format!("{flag}: {err}"))
                })?;
            let overlap = Overlap::from_str(&overlap)
                .map_err(|err| Failure::usage(format!("--overlap: {err}")))?;
            let catch_up = CatchUp::from_str(&catch_up)
                .map_err(|err| Failure::usage(format!("--catch-up: {err}")))?;
            registry.check_input(&workflow, &input)?;
            let spec = spec
                .with_input(input)
                .with_queue(queue)
                .with_overlap(overlap)
                .with_catch_up(catch_up);
            let schedules = Schedules::new(connect(url, 2).await?);
            let schedule = schedules.add(&spec, replace).await?;
            if json {
                print::json(&schedule)?;
            } else {
                outln!(
                    "schedule {} added: {} ({}) starts {}; next fire {}",
                    schedule.name,
                    schedule.cron,
                    schedule.timezone,
                    schedule.workflow,
                    next(&schedule)
                );
            }
        }
        ScheduleCommand::Sync(args) => return sync(url, &registry, args).await,
        ScheduleCommand::List { json } => {
            let schedules = Schedules::new(connect(url, 2).await?).list().await?;
            if json {
                print::json(&schedules)?;
            } else {
                list(&schedules);
            }
        }
        ScheduleCommand::Pause { name, json } => {
            let schedule = Schedules::new(connect(url, 2).await?).pause(&name).await?;
            if json {
                print::json(&schedule)?;
            } else {
                outln!("schedule {name} paused");
            }
        }
        ScheduleCommand::Resume { name, json } => {
            let schedule = Schedules::new(connect(url, 2).await?).resume(&name).await?;
            if json {
                print::json(&schedule)?;
            } else {
                outln!("schedule {name} resumed; next fire {}", next(&schedule));
            }
        }
        ScheduleCommand::Remove { name, json } => {
            Schedules::new(connect(url, 2).await?).remove(&name).await?;
            if json {
                print::json(&serde_json::json!({ "removed": name }))?;
            } else {
                outln!("schedule {name} removed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The arguments of `cairn schedule sync`: a source's streams synced on a cadence.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncScheduleArgs {
    /// The source's TOML file, or the name of a Rust source this binary registers.
    pub(crate) source: std::path::PathBuf,
    /// When incremental syncs run, e.g. "*/15 * * * *".
    #[arg(long)]
    pub(crate) every: String,
    /// When delete reconciliation runs, e.g. "0 3 * * *" (default: never).
    #[arg(long)]
    pub(crate) reconcile_every: Option<String>,
    /// The IANA time zone both expressions are read in.
    #[arg(long, default_value = "UTC")]
    pub(crate) timezone: String,
    /// Only this stream (default: every stream of the source).
    #[arg(long)]
    pub(crate) stream: Option<String>,
    /// Use this base URL instead of the file's.
    #[arg(long)]
    pub(crate) base_url: Option<String>,
    /// Land in this warehouse schema instead of the file's.
    #[arg(long)]
    pub(crate) schema: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Defines (or redefines) the schedules syncing each selected stream: incremental at
/// `--every`, reconcile at `--reconcile-every`.
pub(crate) async fn sync(
    url: Option<&str>,
    registry: &Registry,
    args: SyncScheduleArgs,
) -> Outcome {
    let SyncScheduleArgs {
        source,
        every,
        reconcile_every,
        timezone,
        stream,
        base_url,
        schema,
        json,
    } = args;
    let cadence =
        SyncCadence::new(&every, reconcile_every.as_deref(), &timezone).map_err(|err| {
            let flag = match &err {
                ScheduleError::Cron(CronError::TimeZone(_)) => "--timezone",
                _ => "--every/--reconcile-every",
            };
            Failure::usage(format!("{flag}: {err}"))
        })?;
    let selection = super::sync::Selection {
        stream: stream.as_deref(),
        base_url: base_url.as_deref(),
        schema: schema.as_deref(),
    };
    let (target, inputs) = super::sync::inputs(registry, &source, selection)?;
    let specs = sync_schedules(&target.source, &inputs, &cadence)?;
    let pool = connect(url, 2).await?;
    super::sync::check_tables(&pool, &source, &target, &inputs).await?;
    let schedules = Schedules::new(pool);
    let mut added = Vec::with_capacity(specs.len());
    for spec in &specs {
        added.push(schedules.add(spec, true).await?);
    }
    if json {
        print::json(&added)?;
    } else {
        for schedule in &added {
            outln!(
                "schedule {} ({} {}): next fire {}",
                schedule.name,
                schedule.cron,
                schedule.timezone,
                next(schedule)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn next(schedule: &Schedule) -> String {
    schedule.next_fire_at.map_or_else(
        || "none (paused)".to_owned(),
        |at| at.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn list(schedules: &[Schedule]) {
    if schedules.is_empty() {
        outln!("no schedules; add one with `cairn schedule add <name> --cron ... --workflow ...`");
        return;
    }
    let width = schedules
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    outln!(
        "{:<width$}  {:<18}  {:<13}  {:<18}  {:<6}  {:<7}  {:<8}  {:<20}  {:>6}  {:>7}",
        "NAME",
        "CRON",
        "ZONE",
        "WORKFLOW",
        "STATE",
        "OVERLAP",
        "CATCH-UP",
        "NEXT FIRE",
        "RUNS",
        "SKIPPED"
    );
    for s in schedules {
        outln!(
            "{:<width$}  {:<18}  {:<13}  {:<18}  {:<6}  {:<7}  {:<8}  {:<20}  {:>6}  {:>7}",
            s.name,
            s.cron,
            s.timezone,
            s.workflow,
            if s.enabled { "active" } else { "paused" },
            s.overlap.to_string(),
            s.catch_up.to_string(),
            next(s),
            s.runs_started,
            s.fires_skipped
        );
    }
}
