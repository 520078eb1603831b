//! The command line. [`main`] parses arguments, runs one command and maps its outcome to
//! the exit codes of the contract: 0 ok, 1 the operation failed, 2 bad usage or bad input.

#[macro_use]
mod output;

mod auth;
mod bench;
mod demo;
mod demo_dsr;
mod dev;
mod dlq;
mod dsr;
mod keys;
mod local_pg;
mod pipeline;
mod print;
mod purge;
mod quarantine;
mod schedule;
mod sync;
mod sync_status;
mod ui;

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{
    Client, EngineError, KeyLimits, Registry, RunFilter, RunId, RunStatus, StartOptions, Started,
    Worker, WorkerConfig,
};
use cairn_sandbox::{MockVendorArgs, Sandbox};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

/// cairn: durable workflows of checkpointed steps on PostgreSQL.
///
/// Every command that touches the database reads its URL from DATABASE_URL (or
/// --database-url), e.g. postgres://postgres@127.0.0.1:5432/postgres.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, propagate_version = true)]
struct Cli {
    /// PostgreSQL URL of the engine (and warehouse) database.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// How logs are written to standard error: `pretty` for people (coloured only on a
    /// terminal, and never with NO_COLOR set), `json` for machines (one object a line).
    #[arg(long, env = "CAIRN_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Lines for people; ANSI colours only when standard error is a terminal.
    Pretty,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The demos besides the sync one.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DemoKind {
    /// Privacy requests: one person found and erased across three vendors.
    Dsr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the cairn schema (idempotent).
    Migrate,
    /// Execute runs until SIGINT/SIGTERM; then finish current steps and release runs.
    Worker {
        /// Runs executed at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The queue to take runs from.
        #[arg(long, default_value = "default")]
        queue: String,
        /// Lease length in seconds: a crashed worker's runs resume elsewhere this long
        /// after its last heartbeat.
        #[arg(long, default_value_t = 30.0)]
        lease: f64,
        /// Seconds between looks for work when no notification arrives.
        #[arg(long, default_value_t = 1.0)]
        poll: f64,
        /// At most N runs of concurrency key KEY at once in this worker (repeatable).
        #[arg(long = "key-limit", value_name = "KEY=N", value_parser = parse_key_limit)]
        key_limits: Vec<(String, usize)>,
        /// At most N runs of any other concurrency key at once in this worker.
        #[arg(long, value_name = "N")]
        default_key_limit: Option<usize>,
        /// Purge the step outputs of finished runs older than this (`7d`, `12h`), for
        /// the workflows this worker serves that set no window of their own; `never`
        /// keeps them.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        retain: String,
        /// Purge failed runs (which can then no longer be retried) older than this;
        /// `never` keeps them.
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        retain_dead_letters: String,
        /// Forget quarantined records and writes destinations refused older than this;
        /// `never` keeps them.
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        retain_set_aside: String,
        /// Also serve the dashboard and `/metrics` (with this worker's step counters) on
        /// this address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Database connections of this worker (default: one per run it executes,
        /// plus 4). Fewer let more workers share a server's `max_connections`: plain
        /// steps' checkpoints are written in batches and need none of their own, while a
        /// transactional step holds one while it runs. At least 4.
        #[arg(long, value_name = "N")]
        connections: Option<u32>,
        /// A name this worker keeps across restarts (a pod's or a unit's): restarted
        /// under it, the worker takes the runs it held back at once instead of after
        /// their leases. A second live worker under the same name is refused.
        #[arg(long, value_name = "NAME")]
        id: Option<String>,
    },
    /// Start a run of a workflow.
    Start {
        /// The workflow's registered name.
        workflow: String,
        /// The run's input as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Starting twice with the same key returns the first run.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The queue whose workers execute the run.
        #[arg(long, default_value = "default")]
        queue: String,
        /// Higher priorities are claimed first (negative: behind everything else).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// The concurrency key the run counts against (see `cairn worker --key-limit`).
        #[arg(long, value_name = "KEY")]
        concurrency_key: Option<String>,
        /// When the run must have ended (RFC 3339): past it, it stops at its next step
        /// boundary and fails in the `deadline` category, with an alert.
        #[arg(long, value_name = "INSTANT", conflicts_with = "timeout")]
        deadline: Option<String>,
        /// How long the run may take from now (`90s`, `15m`, `12h`, `30d`): a deadline.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Wait for the run to end and print its outcome; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and cancel runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Cron schedules: add, list, pause, resume, remove.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// The dead-letter list: failed runs and quarantined records; retry them.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Retention: purge finished runs' step outputs (and, if asked, dead letters and
    /// quarantined records) older than a window; run and step metadata stay.
    Purge(purge::PurgeArgs),
    /// Encryption keys: make one, count what each sealed, rotate to the current one.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// OAuth refresh tokens of sources that use one: store, show.
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Privacy requests: open (access, erasure), list, show, extend, export the
    /// report, verify the audit trail.
    Dsr {
        #[command(subcommand)]
        command: dsr::DsrCommand,
    },
    /// Records the warehouse could not hold as they came: list, show, retry, discard.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// One command: start the sandbox vendor (a rate-limited CRM) and a worker in this
    /// process, backfill three streams into PostgreSQL, let the vendor change, sync
    /// incrementally, reconcile deletes and check the warehouse against the vendor.
    /// `cairn demo dsr`: one person's data found and erased across three CRMs.
    Demo {
        /// `dsr` for the privacy-request demo.
        which: Option<DemoKind>,
    },
    /// Start sync runs for a source's streams: incremental (default), backfill or
    /// reconcile. The source is a TOML file (see examples/sources/). `cairn sync status`
    /// shows where each stream stands; `cairn sync reset` forgets a stream's state.
    Sync(sync::SyncArgs),
    /// Open alerts: schema drift, incomplete id sets, records that could not land.
    Alerts {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// A PostgreSQL of your own for local work, from the machine's PostgreSQL programs:
    /// started (or found running) and its URL printed; `--stop` stops it, keeping its data.
    Dev {
        /// Stop the dev server.
        #[arg(long)]
        stop: bool,
    },
    /// Serve the dashboard: runs and their steps, syncs, schedules, rate budgets, dead
    /// letters, quarantine and alerts, live; Prometheus metrics at /metrics. Actions
    /// (cancel, retry, pause, resume) need the token in CAIRN_UI_TOKEN.
    Ui {
        /// The address to listen on; loopback unless you say otherwise.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
    },
    /// Serve the sandbox vendor: a rate-limited CRM-like API on 127.0.0.1 for demos,
    /// tests and benchmarks. No auth, no limits and no faults unless asked for.
    MockVendor(MockVendorArgs),
    /// Measure this machine: steps, throughput, sync, ratelimit or crash, each against
    /// a baseline measured in the same run (in a database of its own, dropped after).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only runs in this status (pending, running, sleeping, parked, retrying,
        /// completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs started within this long (`90s`, `15m`, `12h`, `30d`) or since this
        /// instant (RFC 3339).
        #[arg(long, value_name = "DURATION|INSTANT")]
        since: Option<String>,
        /// Only children of this run.
        #[arg(long, value_name = "RUN_ID")]
        parent: Option<String>,
        /// Only runs started with this idempotency key.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One run: its steps with attempts, last errors and timings.
    Show {
        /// The run id.
        run_id: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: at once if waiting, else at its worker's next step boundary.
    Cancel {
        /// The run id.
        run_id: String,
    },
    /// Send an event to a run: its next (or current) `wait_for_event` for that name
    /// takes it, and a parked run wakes for it. Kept until taken.
    Send {
        /// The run id.
        run_id: String,
        /// The event's name.
        event: String,
        /// The event's data, as JSON.
        #[arg(long, default_value = "null")]
        data: String,
    },
    /// A value a run published (`ctx.set_event`), as JSON; `null` when there is none.
    Get {
        /// The run id.
        run_id: String,
        /// The value's key.
        key: String,
    },
}

/// A retention window from `--retain`-style text: a duration, or `never` for none.
fn window(flag: &str, text: &str) -> Result<Option<Duration>, Failure> {
    if text.trim() == "never" {
        return Ok(None);
    }
    let secs = parse_duration(text)
        .ok()
        .filter(|secs| *secs > 0)
        .ok_or_else(|| {
            Failure::usage(format!("{flag}: give a duration (`7d`, `12h`) or `never`"))
        })?;
    Ok(Some(Duration::from_secs(secs.unsigned_abs())))
}

/// Whole seconds from `90`, `90s`, `15m`, `12h` or `30d`.
fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        Some((at, 'd')) => (&text[..at], 86_400),
        _ => (text, 1),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale))
        .filter(|secs| *secs <= 10 * 365 * 86_400)
        .ok_or_else(|| format!("{text:?} is not a duration (write 90s, 15m, 12h or 30d)"))
}

/// How long `cairn start --wait` waits before it looks whether any worker serves the run.
const NO_WORKER_NOTICE: Duration = Duration::from_secs(3);

/// `KEY=N` of `cairn worker --key-limit`.
fn parse_key_limit(text: &str) -> Result<(String, usize), String> {
    let (key, limit) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=N"))?;
    let limit = limit
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("the limit of key {key:?} must be a whole number of at least 1"))?;
    if key.is_empty() {
        return Err(format!("{text:?} names no key"));
    }
    Ok((key.to_owned(), limit))
}

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad usage or input: exit 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// The operation failed: exit 1.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(err: EngineError) -> Self {
        if err.is_bad_input() {
            Self::usage(err.to_string())
        } else {
            Self::failed(err.to_string())
        }
    }
}

type Outcome = Result<ExitCode, Failure>;

/// Runs the CLI as `cairn`, with the built-in workflows and those in `registry`, and
/// returns the process exit code.
pub fn main(registry: Registry) -> ExitCode {
    main_as(registry, "cairn", env!("CARGO_PKG_VERSION"))
}

/// [`main`] for a binary of your own: `--help` and `--version` give `name` and
/// `version`, e.g. `main_as(registry, env!("CARGO_BIN_NAME"), env!("CARGO_PKG_VERSION"))`.
///
/// The built-in workflows (the syncs `sync`, `schedule sync` and `demo` start, `tour`,
/// `compose`, `ledger`) are registered beside yours, so every command works; a name you
/// registered yourself keeps your workflow.
pub fn main_as(mut registry: Registry, name: &'static str, version: &'static str) -> ExitCode {
    cairn_workflows::register_builtin(&mut registry);
    let command = Cli::command().name(name).bin_name(name).version(version);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let telemetry = match init_tracing(&cli.command, cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(dispatch(cli, Arc::new(registry))) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", cairn_runner::redact::redact(&failure.message));
            ExitCode::from(failure.code)
        }
    };
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

/// Logs to standard error, and traces to an OTLP collector when the standard variables
/// name one (see [`crate::telemetry`]). The returned exporter must be shut down at the end
/// so its last spans are sent.
fn init_tracing(
    command: &Command,
    format: LogFormat,
) -> Result<Option<crate::telemetry::Telemetry>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = match command {
        Command::Worker { .. } | Command::MockVendor(_) | Command::Ui { .. } => "info,sqlx=warn",
        Command::Demo { .. } => "error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt::layer().with_writer(output::MaskedStderr);
    let logs = match format {
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
        LogFormat::Pretty => {
            // Escape codes belong on a terminal, not in a log file or a pipe.
            let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
            logs.with_ansi(colour).with_filter(filter).boxed()
        }
    };
    let telemetry = crate::telemetry::Telemetry::from_env()?;
    let traces = telemetry.as_ref().map(|t| t.layer());
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    Ok(telemetry)
}

async fn dispatch(cli: Cli, registry: Arc<Registry>) -> Outcome {
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Migrate => {
            let pool = connect(url, 2).await?;
            crate::migrate(&pool).await?;
            outln!("cairn schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            concurrency,
            queue,
            lease,
            poll,
            key_limits,
            default_key_limit,
            retain,
            retain_dead_letters,
            retain_set_aside,
            http,
            connections,
            id,
        } => {
            if concurrency == 0 {
                return Err(Failure::usage("--concurrency must be at least 1"));
            }
            if let Some(id) = &id {
                cairn_runner::identity::check(id)
                    .map_err(|err| Failure::usage(format!("--id: {err}")))?;
            }
            let retain = window("--retain", &retain)?;
            let dead_letters = window("--retain-dead-letters", &retain_dead_letters)?;
            let set_aside = window("--retain-set-aside", &retain_set_aside)?;
            let lease = seconds("--lease", lease)?;
            let poll = seconds("--poll", poll)?;
            let connections = connections.unwrap_or(concurrency as u32 + 4);
            if connections < 4 {
                return Err(Failure::usage("--connections must be at least 4"));
            }
            let pool = connect(url, connections).await?;
            crate::migrate(&pool).await?;
            let config = WorkerConfig {
                queue,
                concurrency,
                lease,
                poll_interval: poll,
                key_limits: KeyLimits {
                    per_key: key_limits.into_iter().collect(),
                    default: default_key_limit,
                },
                retention: retain.map(|default| cairn_runner::Retention {
                    default,
                    dead_letters,
                    set_aside,
                    ..cairn_runner::Retention::default()
                }),
                identity: id,
                ..WorkerConfig::default()
            };
            let Some(bind) = http else {
                Worker::new(pool, registry, config)
                    .run(shutdown_signal())
                    .await?;
                return Ok(ExitCode::SUCCESS);
            };
            // One signal stops both: the dashboard's live streams end, the worker
            // finishes its steps.
            let options = ui::options()?;
            let listener = ui::listen(&bind, &options).await?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let signal = shutdown_signal();
            tokio::spawn(async move {
                signal.await;
                let _ = stop.send(true);
            });
            let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            // The dashboard shares the worker's pool: a scrape or a page takes one of its
            // spare connections for a moment, and a worker costs the server no more.
            let dashboard = tokio::spawn(ui::serve(
                pool.clone(),
                options,
                listener,
                until(stopped.clone()),
            ));
            Worker::new(pool, registry, config)
                .run(until(stopped))
                .await?;
            match dashboard.await {
                Ok(served) => served?,
                Err(err) => return Err(Failure::failed(format!("the dashboard failed: {err}"))),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            workflow,
            input,
            idempotency_key,
            queue,
            priority,
            concurrency_key,
            deadline,
            timeout,
            wait,
            json,
        } => {
            let input: Value = serde_json::from_str(&input)
                .map_err(|err| Failure::usage(format!("--input is not valid JSON: {err}")))?;
            // Check the name and input before touching the database.
            registry.check_input(&workflow, &input)?;
            let pool = connect(url, 2).await?;
            let client = Client::new(pool).with_registry(registry);
            let deadline = match (deadline, timeout) {
                (Some(at), _) => Some(
                    chrono::DateTime::parse_from_rfc3339(&at)
                        .map_err(|err| Failure::usage(format!("--deadline {at:?}: {err}")))?
                        .with_timezone(&chrono::Utc),
                ),
                (None, Some(timeout)) => {
                    let secs = parse_duration(&timeout)
                        .map_err(|err| Failure::usage(format!("--timeout: {err}")))?;
                    Some(chrono::Utc::now() + chrono::Duration::seconds(secs))
                }
                (None, None) => None,
            };
            let options = StartOptions {
                idempotency_key,
                queue,
                deadline,
                priority,
                concurrency_key,
            };
            let run = client
                .submit::<Value, Value>(&workflow, &input, &options)
                .await?;
            let started = Started {
                run_id: run.id(),
                created: run.created(),
            };
            if !wait {
                if json {
                    print::json(&started)?;
                } else if started.created {
                    outln!("started run {}", started.run_id);
                } else {
                    outln!(
                        "run {} already exists for this idempotency key",
                        started.run_id
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json {
                eprintln!("run {} started; waiting for it to end", started.run_id);
            }
            let mut run = client.wait(started.run_id, Some(NO_WORKER_NOTICE)).await?;
            if !run.summary.status.is_terminal() {
                if client.workers_serving(&options.queue, &workflow).await? == 0 {
                    eprintln!(
                        "no live worker serves workflow `{workflow}` on queue `{}`: the run \
                         waits until one starts (`cairn worker --queue {}`); still waiting",
                        options.queue, options.queue
                    );
                }
                run = client.wait(started.run_id, None).await?;
            }
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
        Command::Runs { command } => runs(url, command).await,
        Command::Schedule { command } => schedule::run(url, registry, command).await,
        Command::Dlq { command } => dlq::run(url, command).await,
        Command::Quarantine { command } => quarantine::run(url, command).await,
        Command::Purge(args) => purge::run(url, args).await,
        Command::Keys { command } => keys::run(url, command).await,
        Command::Auth { command } => auth::run(url, command).await,
        Command::Dsr { command } => dsr::run(url, command).await,
        Command::Demo { which } => demo(url, which, registry).await,
        Command::Dev { stop } => dev::run(stop),
        Command::MockVendor(args) => mock_vendor(args).await,
        Command::Sync(args) => sync::run(url, registry, args).await,
        Command::Bench(args) => bench::run(url, args).await,
        Command::Ui { bind } => ui::run(url, &bind).await,
        Command::Alerts { json } => {
            let pool = connect(url, 2).await?;
            let alerts = cairn_connectors::warehouse::list_alerts(&pool)
                .await
                .map_err(|err| Failure::failed(err.to_string()))?;
            if json {
                print::json(&alerts)?;
            } else {
                print::alerts(&alerts);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cairn demo`: on the server `DATABASE_URL` names, else on a private one started for
/// the demo and removed after it, also when the demo is interrupted.
async fn demo(url: Option<&str>, which: Option<DemoKind>, registry: Arc<Registry>) -> Outcome {
    let run = |url: Option<&str>| {
        let url = url.map(str::to_owned);
        async move {
            match which {
                None => demo::run(url.as_deref(), registry).await,
                Some(DemoKind::Dsr) => demo_dsr::run(url.as_deref()).await,
            }
        }
    };
    if url.is_some() {
        return run(url).await;
    }
    let interrupted = shutdown_signal();
    let server = local_pg::Private::start("demo").await?;
    let outcome = tokio::select! {
        outcome = run(Some(server.url())) => Some(outcome),
        () = interrupted => None,
    };
    let stopped = server.stop().await;
    match outcome {
        None => {
            stopped?;
            eprintln!("interrupted; the private PostgreSQL was stopped and removed");
            Ok(ExitCode::from(130))
        }
        Some(outcome) => {
            let code = outcome?;
            stopped?;
            outln!(
                "(The demo's PostgreSQL was private and is gone now: `cairn dev` starts one \
                 that stays, and prints its DATABASE_URL.)"
            );
            Ok(code)
        }
    }
}

async fn runs(url: Option<&str>, command: RunsCommand) -> Outcome {
    match command {
        RunsCommand::List {
            status,
            workflow,
            since,
            parent,
            idempotency_key,
            limit,
            json,
        } => {
            let status = status
                .map(|s| RunStatus::from_str(&s))
                .transpose()
                .map_err(|err| Failure::usage(format!("--status: {err}")))?;
            let parent = parent.as_deref().map(parse_run_id).transpose()?;
            let created_after = since.as_deref().map(parse_since).transpose()?;
            if limit < 1 {
                return Err(Failure::usage("--limit must be at least 1"));
            }
            let client = Client::new(connect(url, 2).await?);
            let filter = RunFilter {
                workflow,
                status,
                parent,
                idempotency_key,
                limit,
                created_after,
                ..RunFilter::default()
            };
            let runs = client.runs(&filter).await?;
            if json {
                print::json(&runs)?;
            } else {
                print::run_list(&runs);
            }
        }
        RunsCommand::Show { run_id, json } => {
            let id = parse_run_id(&run_id)?;
            let client = Client::new(connect(url, 2).await?);
            let run = client.show(id).await?;
            if json {
                print::json(&run)?;
            } else {
                print::run_detail(&run);
            }
        }
        RunsCommand::Send {
            run_id,
            event,
            data,
        } => {
            let id = parse_run_id(&run_id)?;
            let data: Value = serde_json::from_str(&data)
                .map_err(|err| Failure::usage(format!("--data is not JSON: {err}")))?;
            let client = Client::new(connect(url, 2).await?);
            match client.send_event(id, &event, &data).await {
                Ok(()) => outln!("sent {event} to run {id}"),
                Err(EngineError::RunEnded { run, status }) => {
                    return Err(Failure::failed(format!(
                        "run {run} has already ended ({status}); it takes no more events"
                    )));
                }
                Err(err) => return Err(err.into()),
            }
        }
        RunsCommand::Get { run_id, key } => {
            let id = parse_run_id(&run_id)?;
            let client = Client::new(connect(url, 2).await?);
            let value = client.get_event(id, &key).await?;
            print::json(&value)?;
        }
        RunsCommand::Cancel { run_id } => {
            let id = parse_run_id(&run_id)?;
            let client = Client::new(connect(url, 2).await?);
            match client.cancel(id).await? {
                RunStatus::Cancelled => outln!("run {id} cancelled"),
                RunStatus::Running => {
                    outln!("run {id} will stop at its worker's next step boundary")
                }
                other => {
                    return Err(Failure::failed(format!(
                        "run {id} has already ended ({other}); nothing to cancel"
                    )));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn mock_vendor(args: MockVendorArgs) -> Outcome {
    let addr = args.addr();
    let config = args
        .into_config()
        .map_err(|err| Failure::usage(format!("mock-vendor: {err}")))?;
    let records = config.records_per_stream;
    let stop = shutdown_signal();
    let sandbox = Sandbox::start(config, addr)
        .await
        .map_err(|err| Failure::failed(format!("mock-vendor: {err}")))?;
    outln!(
        "sandbox vendor on {} ({records} records per stream: contacts, companies, deals); \
         Ctrl-C to stop",
        sandbox.base_url()
    );
    stop.await;
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a duration back from now, or an RFC 3339 instant.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let secs = parse_duration(text).map_err(|_| {
        Failure::usage(format!(
            "--since {text:?} is neither a duration (90s, 15m, 12h, 30d) nor an RFC 3339 \
             instant (2026-12-01T09:00:00Z)"
        ))
    })?;
    Ok(chrono::Utc::now() - chrono::Duration::seconds(secs))
}

fn parse_run_id(raw: &str) -> Result<RunId, Failure> {
    RunId::from_str(raw).map_err(|err| {
        Failure::usage(format!(
            "`{raw}` is not a run id ({err}); run ids are UUIDs, see `cairn runs list`"
        ))
    })
}

fn seconds(flag: &str, value: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Failure::usage(format!("{flag} must be a positive number of seconds")))
}

/// An error and its causes in one line, each said once.
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        next = cause.source();
    }
    text
}

/// Connects to the database named by `url`, failing fast with a message that says what
/// to do and never echoes the URL (it may hold a password).
pub(crate) async fn connect(url: Option<&str>, max_connections: u32) -> Result<PgPool, Failure> {
    // Keys that cannot be read stop every command that touches the database, before it
    // writes a value plain its operator meant to be sealed.
    cairn_runner::seal::Sealer::process()
        .keys()
        .map_err(|err| Failure::usage(err.to_string()))?;
    let url = url.ok_or_else(|| {
        Failure::usage(
            "DATABASE_URL is not set: set it to a PostgreSQL URL, \
             e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres",
        )
    })?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Failure::usage(
            "DATABASE_URL must be a PostgreSQL URL starting with postgres:// or postgresql://",
        ));
    }
    let options = PgConnectOptions::from_str(url).map_err(|err| {
        Failure::usage(format!(
            "DATABASE_URL is not a valid PostgreSQL URL ({}); expected \
             postgres://user[:password]@host[:port]/database",
            redact(&err.to_string(), url)
        ))
    })?;
    let unreachable = |err: String| {
        Failure::failed(format!(
            "cannot connect to PostgreSQL at {}:{} (from DATABASE_URL): {}; \
             is it running, and does the database exist?",
            options.get_host(),
            options.get_port(),
            redact(&err, url)
        ))
    };
    // One direct connection first: a pool would hide "connection refused" behind a
    // generic timeout.
    let probe = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .map_err(|_| unreachable("no answer within 10 s".to_owned()))?
        .map_err(|err| unreachable(err.to_string()))?;
    drop(probe);
    cairn_runner::pool_options(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await
        .map_err(|err| unreachable(err.to_string()))
}

/// Removes the URL's password from a message, in case a driver error quotes it.
fn redact(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => message.replace(password, "****"),
        None => message.to_owned(),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives in between (say, right
/// after a banner was printed) is not lost to the default action.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutdown requested");
    }
}
