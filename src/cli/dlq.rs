//! `cairn dlq`: the dead-letter list — failed runs and records the warehouse could not
//! hold — and retrying them.

use std::process::ExitCode;
use std::str::FromStr;

use cairn_connectors::record::Record;
use cairn_connectors::warehouse::{StreamSpec, Warehouse, quote_ident};
use cairn_runner::dead_letter::{DeadLetterError, DeadRecord, DeadRun};
use cairn_runner::{Client, DeadLetterId, DeadLetters, RunStatus};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::{Failure, Outcome, connect, describe, print};

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

/// What a record retry did, for `--json`.
#[derive(Debug, Serialize)]
struct RecordRetried {
    id: String,
    stream: String,
    record_id: Option<String>,
    landed: bool,
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
                println!("{id} dismissed from the dead-letter list");
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
            let replacement: Option<Record> = record
                .map(|text| {
                    RawValue::from_string(text)
                        .map_err(|err| format!("--record is not valid JSON: {err}"))
                        .and_then(|raw| {
                            Record::parse(raw)
                                .map_err(|bad| format!("--record cannot be read: {}", bad.reason))
                        })
                        .map_err(Failure::usage)
                })
                .transpose()?;
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
                    let pool = connect(url, 2).await?;
                    let done = retry_record(&pool, n, replacement, force).await?;
                    if json {
                        print::json(&done)?;
                    } else {
                        println!(
                            "record:{n} of stream {} landed and left the dead-letter list",
                            done.stream
                        );
                    }
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
                Some(step) => println!(
                    "run {run_id} is pending again: it resumes at step {} `{}`; {} completed \
                     step(s) before it are kept",
                    step.position, step.name, retried.kept_steps
                ),
                None => println!(
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

/// Re-applies a quarantined record through the warehouse sink in one transaction;
/// removes it from the list when it landed, and changes nothing when it did not.
async fn retry_record(
    pool: &PgPool,
    n: i64,
    replacement: Option<Record>,
    force: bool,
) -> Result<RecordRetried, Failure> {
    let failed = |what: &str, err: &(dyn std::error::Error + 'static)| {
        Failure::failed(format!("record:{n}: {what}: {}", describe(err)))
    };
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| failed("cannot open a transaction", &e))?;
    let dead = DeadLetters::lock_record(&mut tx, n).await?;
    let table: Option<(String, String)> = sqlx::query_as(
        "SELECT table_name, primary_key FROM cairn.warehouse_tables
          WHERE schema_name = $1 AND stream = $2",
    )
    .bind(&dead.schema_name)
    .bind(&dead.stream)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| failed("reading the schema registry", &e))?;
    let Some((table_name, primary_key)) = table else {
        return Err(Failure::failed(format!(
            "record:{n}: stream {} has no warehouse table in schema {} yet; sync the stream \
             once, then retry",
            dead.stream, dead.schema_name
        )));
    };
    let record = match replacement {
        Some(record) => record,
        None => RawValue::from_string(dead.record_text.clone())
            .ok()
            .and_then(|raw| Record::parse(raw).ok())
            .ok_or_else(|| {
                Failure::failed(format!(
                    "record:{n} cannot be read as it was stored (it may be nested too deep); \
                     give a corrected version with --record '<json>'"
                ))
            })?,
    };
    if let (Some(original), Some(given)) = (&dead.record_id, record.field_text(&primary_key))
        && *original != given
    {
        return Err(Failure::usage(format!(
            "--record has {primary_key} = {given}, but record:{n} is record {original}; a \
             corrected record keeps its primary key"
        )));
    }
    if !force
        && let Some(id) = &dead.record_id
        && let Some(landed) = newer_landed(
            &mut tx,
            &dead.schema_name,
            &table_name,
            &primary_key,
            id,
            dead.synced_at,
        )
        .await
        .map_err(|e| failed("looking for a newer version", &*e))?
    {
        return Err(Failure::failed(format!(
            "record:{n}: a newer version of record {id} landed at {} (this one was set aside \
             at {}); re-applying it would overwrite newer data. Retry with --force to apply it \
             anyway",
            time(&landed),
            time(&dead.synced_at)
        )));
    }
    let warehouse = Warehouse::new(&dead.source, &dead.schema_name)
        .map_err(|e| failed("opening the warehouse", &e))?;
    let spec = StreamSpec::new(dead.stream.clone(), primary_key);
    let report = warehouse
        .upsert_page(&mut tx, &spec, std::slice::from_ref(&record), Utc::now())
        .await
        .map_err(|e| failed("re-applying it", &e))?;
    if report.quarantined > 0 {
        // Rolling back leaves the entry as it was, not a second entry beside it.
        drop(tx);
        return Err(Failure::failed(format!(
            "record:{n} still cannot land: {}; correct the value (--record '<json>') or the \
             column, then retry",
            report.alerts.join("; ")
        )));
    }
    DeadLetters::remove_record(&mut tx, n).await?;
    tx.commit().await.map_err(|e| failed("committing", &e))?;
    Ok(RecordRetried {
        id: format!("record:{n}"),
        stream: dead.stream,
        record_id: dead.record_id,
        landed: true,
    })
}

/// When the warehouse holds a version of the record synced after `set_aside`, its
/// sync time.
async fn newer_landed(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    primary_key: &str,
    id: &str,
    set_aside: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Box<dyn std::error::Error + Send + Sync>> {
    let table = format!("{}.{}", quote_ident(schema)?, quote_ident(table)?);
    let landed: Option<DateTime<Utc>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(\"_synced_at\") FROM {table} WHERE \"_raw\" ->> $1 = $2"
    )))
    .bind(primary_key)
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(landed.filter(|at| *at > set_aside))
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn print_runs(runs: &[DeadRun]) {
    if runs.is_empty() {
        println!("no failed runs");
    } else {
        println!(
            "{:<36}  {:<20}  {:<14}  {:<24}  {:>8}  ERROR",
            "RUN", "WORKFLOW", "CATEGORY", "FAILED STEP", "ATTEMPTS"
        );
        for run in runs {
            let (step, attempts) = run.failed_step.as_ref().map_or(("-".to_owned(), 0), |s| {
                (format!("{} {}", s.position, s.name), s.attempts)
            });
            println!(
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

fn print_records(records: &[DeadRecord]) {
    if records.is_empty() {
        println!("no quarantined records");
        return;
    }
    println!(
        "\n{:<14}  {:<20}  {:<24}  {:<16}  REASON",
        "ID", "STREAM", "RECORD", "KIND"
    );
    for r in records {
        println!(
            "{:<14}  {:<20}  {:<24}  {:<16}  {}",
            format!("record:{}", r.id),
            r.stream,
            r.record_id.as_deref().unwrap_or("-"),
            r.kind,
            r.reason
        );
    }
}

fn show_run(run: &DeadRun) {
    println!("run       {}", run.run_id);
    println!("workflow  {} (queue {})", run.workflow, run.queue);
    if let Some(key) = &run.idempotency_key {
        println!("key       {key}");
    }
    if let Some(at) = &run.failed_at {
        println!("failed    {}", time(at));
    }
    println!(
        "error     [{}{}] {}",
        run.class.as_deref().unwrap_or("?"),
        run.category
            .as_deref()
            .map(|c| format!("/{c}"))
            .unwrap_or_default(),
        run.message.as_deref().unwrap_or("")
    );
    for (depth, cause) in run.chain.iter().enumerate().skip(1) {
        println!("  {}caused by: {cause}", "  ".repeat(depth - 1));
    }
    match &run.failed_step {
        Some(step) => println!(
            "step      {} `{}` after {} attempt(s): {}",
            step.position,
            step.name,
            step.attempts,
            step.last_error.as_deref().unwrap_or("")
        ),
        None => println!("step      none (the workflow failed outside a step)"),
    }
    println!(
        "retry     `cairn dlq retry {}` keeps {} completed step(s)",
        run.run_id, run.completed_steps
    );
}

fn show_record(record: &DeadRecord) {
    println!("id        record:{}", record.id);
    println!(
        "stream    {} (schema {})",
        record.stream, record.schema_name
    );
    println!("record    {}", record.record_id.as_deref().unwrap_or("-"));
    println!("kind      {}", record.kind);
    println!("reason    {}", record.reason);
    println!(
        "seen      {} .. {}",
        time(&record.first_seen),
        time(&record.last_seen)
    );
    println!("body      {}", record.record);
}
