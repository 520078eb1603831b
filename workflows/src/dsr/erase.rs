//! The [`ERASE`] workflow: one source's part of an erasure, a child of the request's
//! run. Each record is erased at the vendor (deleted or anonymised as the stream's
//! `[streams.<name>.erase]` says, only while it still holds the person's identifier)
//! and its warehouse row deleted, in one step whose audit entry and counts commit with
//! it. A record the vendor refuses to erase (a legal hold, a lock) is audited, and then
//! tried once more in a step of its own that fails the run: the run lands on the
//! dead-letter list, its error naming the request's deadline, and `cairn dlq retry`
//! resumes at that step, so once the hold is lifted the retry erases the record and,
//! when it was the last one, closes the request.
//!
//! # The warehouse rule
//!
//! A warehouse row of the person is deleted (not tombstoned: a tombstone would keep the
//! person's data) once the vendor no longer holds the person's data in the record —
//! erased now, already gone, or no longer theirs. A row whose vendor record could not be
//! erased stays until it is, so the warehouse never claims an erasure the vendor has
//! not made. A record the vendor still holds under someone else's identifier comes back
//! with the next backfill, as that person's.

use cairn_connectors::destination::Erased;
use cairn_connectors::rest::RestSource;
use cairn_runner::{Context, Error};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::audit::{self, AuditKey, Event};
use super::discover::audit_key;
use super::request::{self, settle};
use super::warehouse::PersonRows;
use super::{RequestSource, Subject};

/// The workflow that erases one source's records of a request.
pub const ERASE: &str = "dsr.erase";

/// The input of an [`ERASE`] run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EraseInput {
    /// The request.
    pub request: String,
    /// The source.
    pub source: RequestSource,
    /// Its records to erase at the vendor, as (stream, id).
    pub records: Vec<(String, String)>,
    /// The request's deadline, which a dead letter of this run names.
    pub deadline: DateTime<Utc>,
}

/// What one record's erasure came to, as checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Result1 {
    Erased,
    AlreadyGone,
    NotTheirs,
    Refused,
}

/// One record's erasure, as it is recorded.
struct Attempt<'a> {
    stream: &'a str,
    id: &'a str,
    outcome: Result1,
    /// Whether this is the second try of a refused erasure.
    retried: bool,
}

/// Records one erasure's outcome: audit entry, counts, and the warehouse row.
async fn record(
    conn: &mut PgConnection,
    key: &AuditKey,
    request_id: &str,
    (opened, subject): (&Opened, &Subject),
    attempt: Attempt<'_>,
) -> Result<(), Error> {
    let Attempt {
        stream,
        id,
        outcome,
        retried,
    } = attempt;
    let person = PersonRows::new(
        &opened.name,
        &opened.schema,
        &opened.source,
        stream,
        subject,
    );
    let rows = match (&person, outcome) {
        (Some(person), Result1::Erased | Result1::AlreadyGone | Result1::NotTheirs) => {
            person.delete(conn, id).await?
        }
        _ => 0,
    };
    let (erased, unerased) = match (outcome, retried) {
        (Result1::Refused, false) => (0, 1),
        (Result1::Refused, true) => (0, 0),
        (Result1::Erased | Result1::AlreadyGone, false) => (1, 0),
        (Result1::Erased | Result1::AlreadyGone, true) => (1, -1),
        (Result1::NotTheirs, false) => (0, 0),
        (Result1::NotTheirs, true) => (0, -1),
    };
    sqlx::query(
        "UPDATE cairn.dsr_requests SET erased = erased + $2, unerased = unerased + $3 WHERE id = $1",
    )
    .bind(request_id)
    .bind(erased)
    .bind(unerased)
    .execute(&mut *conn)
    .await?;
    audit::append(
        conn,
        key,
        Event {
            request: request_id,
            action: "erase",
            source: &opened.name,
            outcome: match outcome {
                Result1::Erased => "erased",
                Result1::AlreadyGone => "already_gone",
                Result1::NotTheirs => "not_theirs",
                Result1::Refused => "refused",
            },
            detail: json!({
                "stream": stream,
                "record": key.identifier("record", id),
                "warehouse_rows_deleted": rows,
                "retry": retried,
            }),
        },
    )
    .await?;
    Ok(())
}

struct Opened {
    name: String,
    schema: String,
    source: RestSource,
}

/// The erasure workflow.
pub async fn erase(ctx: Context, input: EraseInput) -> Result<Value, Error> {
    let key = &audit_key(&ctx)?;
    let request_id = input.request.as_str();
    let subject = &{
        let mut conn = ctx.pool().acquire().await?;
        request::subject(&mut conn, ctx.sealer(), request_id)
            .await
            .map_err(|e| Error::permanent(e.to_string()).with_category("config"))?
    };
    let (name, schema, source) = super::open_source(&ctx, &input.source).await?;
    let opened = &Opened {
        name,
        schema,
        source,
    };
    let ids: Vec<String> = subject
        .ids
        .iter()
        .filter(|(at, _)| *at == opened.name)
        .map(|(_, value)| value.clone())
        .collect();
    let ids = &ids;
    let deadline = input.deadline;
    let results = ctx
        .parallel(
            8,
            input.records.clone(),
            |branch, (stream, id)| async move {
                let (stream, id) = (&stream, &id);
                let label = format!("{}/{stream} {}", opened.name, key.identifier("record", id));
                let attempt = |retried: bool| {
                    let label = &label;
                    move |tx: cairn_runner::Tx| async move {
                        let outcome = if opened.source.erases(stream) {
                            match opened.source.erase(stream, id, &subject.email, ids).await? {
                                Erased::Done { repeated: false } => Result1::Erased,
                                Erased::Done { repeated: true } => Result1::AlreadyGone,
                                Erased::NotTheirs => Result1::NotTheirs,
                                Erased::Refused { reason, .. } if retried => {
                                    return Err(Error::permanent(format!(
                                        "{label} could not be erased: {}; privacy request \
                                     {request_id} is due {} (retry with `cairn dlq retry` once \
                                     the vendor allows it)",
                                        cairn_runner::redact::redact(&reason),
                                        deadline.to_rfc3339()
                                    ))
                                    .with_category("erasure"));
                                }
                                Erased::Refused { .. } => Result1::Refused,
                            }
                        } else if retried {
                            return Err(Error::permanent(format!(
                                "{label} cannot be erased: the source declares no \
                             [streams.{stream}.erase]; erase it by hand and dismiss this \
                             dead letter; privacy request {request_id} is due {}",
                                deadline.to_rfc3339()
                            ))
                            .with_category("erasure"));
                        } else {
                            Result1::Refused
                        };
                        let mut conn = tx.conn().await?;
                        record(
                            &mut conn,
                            key,
                            request_id,
                            (opened, subject),
                            Attempt {
                                stream,
                                id,
                                outcome,
                                retried,
                            },
                        )
                        .await?;
                        Ok(outcome)
                    }
                };
                let first = branch
                    .transaction(format!("erase {label}"), attempt(false))
                    .await?;
                if first != Result1::Refused {
                    return Ok(first);
                }
                branch
                    .transaction(format!("erase {label} again"), attempt(true))
                    .await
            },
        )
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(error)) = results.into_iter().find(Result::is_err) {
        return Err(if failed > 1 {
            Error::permanent(format!("{error} (and {} more)", failed - 1)).with_category("erasure")
        } else {
            error
        });
    }
    settle(&ctx, key, request_id).await?;
    Ok(json!({"request": request_id, "source": opened.name, "records": input.records.len()}))
}
