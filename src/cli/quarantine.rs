//! `cairn quarantine`: records the warehouse could not hold as they came (schema drift,
//! a value that does not fit its column, a record without a usable key or too deep to
//! read), kept once per source, stream, record and reason; list them, look at one,
//! re-apply it (as stored, or corrected) or discard it.

use std::process::ExitCode;

use cairn_connectors::record::Record;
use cairn_connectors::warehouse::{StreamSpec, Warehouse, last_landed, stream_table};
use cairn_runner::dead_letter::{DeadLetterId, DeadLetters, DeadRecord};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::PgPool;

use super::{Failure, Outcome, connect, describe, print};

/// The subcommands of `cairn quarantine`.
#[derive(Debug, Subcommand)]
pub(crate) enum QuarantineCommand {
    /// Quarantined records, most recently met first: entry, source, stream, record,
    /// kind, reason and how often it was met.
    List {
        /// Only this source's.
        #[arg(long)]
        source: Option<String>,
        /// Only this stream's.
        #[arg(long)]
        stream: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One quarantined record, with its body as the vendor sent it.
    Show {
        /// The entry: <n> or record:<n>.
        entry: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Re-apply a record through the warehouse sink (as stored, or as given with
    /// --record); it leaves the quarantine once it lands.
    Retry {
        /// The entry: <n> or record:<n>.
        entry: String,
        /// Land this corrected version instead of the stored one (JSON; same primary
        /// key).
        #[arg(long)]
        record: Option<String>,
        /// Re-apply even though a newer version of the record has landed since.
        #[arg(long)]
        force: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Drop a record from the quarantine without applying it (handled another way).
    Discard {
        /// The entry: <n> or record:<n>.
        entry: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// An entry number from `<n>` or `record:<n>`.
fn entry(text: &str) -> Result<i64, Failure> {
    let number = text.trim().strip_prefix("record:").unwrap_or(text.trim());
    number.parse().map_err(|_| {
        Failure::usage(format!(
            "`{text}` is not a quarantine entry; use its number (or record:<n>), see \
             `cairn quarantine list`"
        ))
    })
}

/// `--record`'s text as a record, exactly as given.
pub(crate) fn corrected(text: Option<String>) -> Result<Option<Record>, Failure> {
    text.map(|text| {
        RawValue::from_string(text)
            .map_err(|err| format!("--record is not valid JSON: {err}"))
            .and_then(|raw| {
                Record::parse(raw).map_err(|bad| format!("--record cannot be read: {}", bad.reason))
            })
            .map_err(Failure::usage)
    })
    .transpose()
}

/// Re-applies record `n` (see [`retry_record`]) and says so, naming `list` as the list
/// it left.
pub(crate) async fn retry_and_report(
    url: Option<&str>,
    n: i64,
    replacement: Option<Record>,
    force: bool,
    json: bool,
    list: &str,
) -> Result<(), Failure> {
    let pool = connect(url, 2).await?;
    let done = retry_record(&pool, n, replacement, force).await?;
    if json {
        print::json(&done)?;
    } else {
        outln!(
            "record:{n} of stream {} landed and left {list}",
            done.stream
        );
    }
    Ok(())
}

/// Runs one `cairn quarantine` subcommand.
pub(crate) async fn run(url: Option<&str>, command: QuarantineCommand) -> Outcome {
    match command {
        QuarantineCommand::List {
            source,
            stream,
            limit,
            json,
        } => {
            let records = DeadLetters::new(connect(url, 2).await?)
                .quarantined(source.as_deref(), stream.as_deref(), limit.max(0))
                .await?;
            if json {
                print::json(&records)?;
            } else {
                print_records(&records);
            }
        }
        QuarantineCommand::Show { entry: text, json } => {
            let n = entry(&text)?;
            let record = DeadLetters::new(connect(url, 2).await?).record(n).await?;
            if json {
                print::json(&record)?;
            } else {
                show_record(&record);
            }
        }
        QuarantineCommand::Retry {
            entry: text,
            record,
            force,
            json,
        } => {
            let n = entry(&text)?;
            let replacement = corrected(record)?;
            retry_and_report(url, n, replacement, force, json, "the quarantine").await?;
        }
        QuarantineCommand::Discard { entry: text, json } => {
            let n = entry(&text)?;
            let dead = DeadLetters::new(connect(url, 2).await?);
            // Reading it first makes an unknown entry an error rather than a no-op.
            dead.record(n).await?;
            dead.dismiss(DeadLetterId::Record(n)).await?;
            if json {
                print::json(&serde_json::json!({ "discarded": format!("record:{n}") }))?;
            } else {
                outln!("record:{n} discarded from the quarantine");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a record retry did, for `--json`.
#[derive(Debug, Serialize)]
pub(crate) struct RecordRetried {
    pub(crate) id: String,
    pub(crate) stream: String,
    pub(crate) record_id: Option<String>,
    pub(crate) landed: bool,
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
    let dead = DeadLetters::new(pool.clone())
        .lock_record(&mut tx, n)
        .await?;
    let table = stream_table(&mut tx, &dead.schema_name, &dead.stream)
        .await
        .map_err(|e| failed("reading the schema registry", &e))?;
    let Some(table) = table else {
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
    if let (Some(original), Some(given)) = (&dead.record_id, record.field_text(&table.primary_key))
        && *original != given
    {
        return Err(Failure::usage(format!(
            "--record has {} = {given}, but record:{n} is record {original}; a \
             corrected record keeps its primary key",
            table.primary_key
        )));
    }
    if !force
        && let Some(id) = &dead.record_id
        && let Some(landed) = last_landed(&mut tx, &dead.schema_name, &table, id)
            .await
            .map_err(|e| failed("looking for a newer version", &e))?
            .filter(|landed| *landed > dead.synced_at)
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
    let spec = StreamSpec::new(dead.stream.clone(), table.primary_key);
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

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn print_records(records: &[DeadRecord]) {
    if records.is_empty() {
        outln!("no quarantined records");
        return;
    }
    outln!(
        "\n{:<14}  {:<32}  {:<24}  {:<16}  {:>5}  REASON",
        "ID",
        "SOURCE/STREAM",
        "RECORD",
        "KIND",
        "TIMES"
    );
    for r in records {
        outln!(
            "{:<14}  {:<32}  {:<24}  {:<16}  {:>5}  {}",
            format!("record:{}", r.id),
            format!("{}/{}", r.source, r.stream),
            r.record_id.as_deref().unwrap_or("-"),
            r.kind,
            r.times,
            r.reason
        );
    }
}

pub(crate) fn show_record(record: &DeadRecord) {
    outln!("id        record:{}", record.id);
    outln!(
        "stream    {} (schema {})",
        record.stream,
        record.schema_name
    );
    outln!("record    {}", record.record_id.as_deref().unwrap_or("-"));
    outln!("source    {}", record.source);
    outln!("kind      {}", record.kind);
    outln!("reason    {}", record.reason);
    outln!(
        "seen      {} time(s), {} .. {}",
        record.times,
        time(&record.first_seen),
        time(&record.last_seen)
    );
    outln!("body      {}", record.record);
}
