//! The [`REQUEST`](super::REQUEST) workflow: search every source's lookups and the
//! warehouse for the subject, compile the report, (for an erasure) erase, and close.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_connectors::paginate::{PageCursor, Paged, Traversal};
use cairn_connectors::rest::{IdentityKind, RestConfig, RestSource};
use cairn_connectors::source::Source;
use cairn_connectors::warehouse::ident::quote_ident;
use cairn_runner::{Context, Error};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::Row;

use super::audit::{self, AuditKey, Event};
use super::report::{Finding, LookupLog, Report};
use super::request::{self, RequestInput};
use super::{Kind, Phase};

/// Records found, as (id, the record's JSON text).
type Records = Vec<(String, Box<RawValue>)>;

/// Lookups run side by side, at most this many at once.
const BRANCHES: usize = 8;

/// The audit key a worker holds: provided to its registry, or else from the environment.
pub(crate) fn audit_key(ctx: &Context) -> Result<AuditKey, Error> {
    match ctx.provided::<AuditKey>() {
        Some(key) => Ok(key.clone()),
        None => AuditKey::from_env().map_err(|e| Error::permanent(e).with_category("config")),
    }
}

fn db(error: impl std::fmt::Display) -> Error {
    Error::transient(error.to_string())
}

/// A source opened for the request.
struct Opened {
    name: String,
    schema: String,
    source: RestSource,
}

/// One lookup to run: a stream's search by one value.
#[derive(Clone)]
struct Planned {
    source: usize,
    stream: String,
    kind: IdentityKind,
    value: String,
}

/// One page of a lookup, as checkpointed (sealed with the run's outputs).
#[derive(Serialize, Deserialize)]
struct LookupStep {
    found: Records,
    rejected: usize,
    fetched: usize,
    total: Option<u64>,
    next: Option<PageCursor>,
}

impl Paged for LookupStep {
    fn fetched(&self) -> usize {
        self.fetched
    }

    fn next(&self) -> Option<&PageCursor> {
        self.next.as_ref()
    }

    fn total(&self) -> Option<u64> {
        self.total
    }
}

/// Records a state change: the phase set and audited in one transaction.
async fn set_phase(ctx: &Context, key: &AuditKey, id: &str, phase: Phase) -> Result<(), Error> {
    ctx.transaction(format!("phase {}", phase.as_str()), |tx| async move {
        let mut conn = tx.conn().await?;
        sqlx::query("UPDATE cairn.dsr_requests SET phase = $2 WHERE id = $1")
            .bind(id)
            .bind(phase.as_str())
            .execute(&mut *conn)
            .await?;
        audit::append(
            &mut conn,
            key,
            Event {
                request: id,
                action: "phase",
                source: "",
                outcome: phase.as_str(),
                detail: json!({}),
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// The request workflow.
pub async fn request(ctx: Context, input: RequestInput) -> Result<Value, Error> {
    let key = audit_key(&ctx)?;
    let id = input.request.as_str();
    let subject = {
        let mut conn = ctx.pool().acquire().await.map_err(db)?;
        request::subject(&mut conn, ctx.sealer(), id)
            .await
            .map_err(|e| Error::permanent(e.to_string()).with_category("config"))?
    };
    set_phase(&ctx, &key, id, Phase::Discovering).await?;
    let mut opened = Vec::with_capacity(input.sources.len());
    for source in &input.sources {
        let config_error =
            |e: cairn_connectors::rest::ConfigError| Error::permanent(e).with_category("config");
        let mut config = RestConfig::parse(&source.toml, &source.file).map_err(config_error)?;
        if let Some(url) = &source.base_url {
            config = config.with_base_url(url).map_err(config_error)?;
        }
        let name = config.name().to_owned();
        let schema = config.warehouse_schema().to_owned();
        let source = RestSource::new(config, Some(ctx.pool().clone())).await?;
        opened.push(Opened {
            name,
            schema,
            source,
        });
    }
    let opened = Arc::new(opened);
    let mut planned = Vec::new();
    for (index, source) in opened.iter().enumerate() {
        for (stream, kind) in source.source.lookups() {
            let values: Vec<String> = match kind {
                IdentityKind::Email => vec![subject.email.clone()],
                IdentityKind::Id => subject
                    .ids
                    .iter()
                    .filter(|(at, _)| *at == source.name)
                    .map(|(_, value)| value.clone())
                    .collect(),
            };
            planned.extend(values.into_iter().map(|value| Planned {
                source: index,
                stream: stream.clone(),
                kind,
                value,
            }));
        }
    }
    let total = planned.len();
    let done = Arc::new(AtomicUsize::new(0));
    let logs: Vec<(LookupLog, Records)> = ctx
        .parallel(BRANCHES, planned, |branch, plan| {
            let (opened, key, done) = (opened.clone(), key.clone(), done.clone());
            let ctx = ctx.clone();
            async move {
                let outcome = look_up(&branch, &key, id, &opened[plan.source], &plan).await;
                let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = ctx.set_progress(
                    &json!({"phase": "discovering", "lookups": total, "done": finished}),
                );
                outcome
            }
        })
        .await
        .into_iter()
        .collect::<Result<_, Error>>()?;
    let mut findings: Vec<Finding> = Vec::new();
    let mut lookups = Vec::with_capacity(logs.len());
    for (log, found) in logs {
        for (record_id, record) in found {
            findings.push(Finding::vendor(&log.source, &log.stream, record_id, record));
        }
        lookups.push(log);
    }
    for source in opened.iter() {
        for stream in source.source.streams() {
            let fields = source.source.identity_fields(&stream.name);
            let ids: Vec<String> = subject
                .ids
                .iter()
                .filter(|(at, _)| *at == source.name)
                .map(|(_, value)| value.clone())
                .collect();
            if fields.is_empty() && ids.is_empty() {
                continue;
            }
            let rows = search_warehouse(
                &ctx,
                &key,
                id,
                source,
                &stream.name,
                &stream.primary_key,
                &fields,
                &subject.email,
                &ids,
            )
            .await?;
            for (record_id, record) in rows {
                findings.push(Finding::warehouse(
                    &source.name,
                    &stream.name,
                    record_id,
                    record,
                ));
            }
        }
    }
    let report = Report::compile(id, input.kind, &subject, lookups, findings);
    let found = report.records.len();
    let complete = report.complete();
    compile(&ctx, &key, id, &report).await?;
    if input.kind == Kind::Erasure {
        set_phase(&ctx, &key, id, Phase::Fulfilling).await?;
    }
    let outcome = if complete { "fulfilled" } else { "partial" };
    close(
        &ctx,
        &key,
        id,
        outcome,
        TimeDelta::seconds(input.retention_secs),
    )
    .await?;
    Ok(json!({"request": id, "found": found, "complete": complete}))
}

/// Runs one lookup page by page; each page is one transactional step whose audit entry
/// commits with its checkpoint. A lookup that fails is audited and reported, and the
/// others go on.
async fn look_up(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    source: &Opened,
    plan: &Planned,
) -> Result<(LookupLog, Records), Error> {
    let identifier = key.identifier(plan.kind.as_str(), &plan.value);
    let mut log = LookupLog {
        source: source.name.clone(),
        stream: plan.stream.clone(),
        by: plan.kind.as_str().to_owned(),
        pages: 0,
        found: 0,
        rejected: 0,
        error: None,
    };
    let mut found = Vec::new();
    let mut traversal = Traversal::new(PageCursor::start());
    let step_name = |page: u64| {
        format!(
            "lookup {}/{} by {} {} page {page}",
            source.name,
            plan.stream,
            plan.kind.as_str(),
            &identifier
        )
    };
    let failure = loop {
        let Some(cursor) = traversal.cursor().cloned() else {
            break None;
        };
        let page_number = traversal.pages() + 1;
        let (identifier, cursor) = (&identifier, &cursor);
        let result = ctx
            .transaction(step_name(page_number), |tx| async move {
                let page = source
                    .source
                    .lookup(&plan.stream, plan.kind, &plan.value, cursor)
                    .await?;
                let mut conn = tx.conn().await?;
                audit::append(
                    &mut conn,
                    key,
                    Event {
                        request: id,
                        action: "lookup",
                        source: &source.name,
                        outcome: "ok",
                        detail: json!({
                            "stream": plan.stream,
                            "by": plan.kind.as_str(),
                            "identifier": identifier,
                            "page": page_number,
                            "found": page.found.len(),
                            "rejected": page.rejected,
                        }),
                    },
                )
                .await?;
                let found = page
                    .found
                    .into_iter()
                    .map(|f| {
                        RawValue::from_string(f.record.raw().to_owned()).map(|raw| (f.id, raw))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(LookupStep {
                    found,
                    rejected: page.rejected,
                    fetched: page.fetched,
                    total: page.total,
                    next: page.next,
                })
            })
            .await;
        let page = match result {
            Ok(page) => page,
            Err(error) => break Some(error.to_string()),
        };
        if let Err(error) = traversal.advance(&page) {
            break Some(format!("{}/{}: {error}", source.name, plan.stream));
        }
        log.pages += 1;
        log.found += page.found.len();
        log.rejected += page.rejected;
        found.extend(page.found);
    };
    if let Some(error) = failure {
        let message = cairn_runner::redact::redact(&error).into_owned();
        let identifier = &identifier;
        let audited = &message;
        ctx.transaction(
            format!("{} failed", step_name(traversal.pages() + 1)),
            |tx| async move {
                let mut conn = tx.conn().await?;
                audit::append(
                    &mut conn,
                    key,
                    Event {
                        request: id,
                        action: "lookup",
                        source: &source.name,
                        outcome: "failed",
                        detail: json!({
                            "stream": plan.stream,
                            "by": plan.kind.as_str(),
                            "identifier": identifier,
                            "error": audited,
                        }),
                    },
                )
                .await?;
                Ok(())
            },
        )
        .await?;
        log.error = Some(message);
    }
    Ok((log, found))
}

/// Searches `source`'s warehouse table of `stream` for rows holding the address in an
/// identity field, or one of the ids as primary key; deleted rows count (they still hold
/// the data). One transactional step, audited.
#[allow(clippy::too_many_arguments)]
async fn search_warehouse(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    source: &Opened,
    stream: &str,
    primary_key: &str,
    fields: &[String],
    email: &str,
    ids: &[String],
) -> Result<Records, Error> {
    let rows: Vec<(String, String)> = ctx
        .transaction(format!("search warehouse {}/{stream}", source.name), |tx| async move {
            let mut conn = tx.conn().await?;
            let table: Option<String> = sqlx::query_scalar(
                "SELECT table_name FROM cairn.warehouse_tables
                  WHERE schema_name = $1 AND stream = $2 AND source = $3",
            )
            .bind(&source.schema)
            .bind(stream)
            .bind(&source.name)
            .fetch_optional(&mut *conn)
            .await?;
            let mut rows: Vec<(String, String)> = Vec::new();
            if let Some(table) = &table {
                let table = format!(
                    "{}.{}",
                    quote_ident(&source.schema).map_err(Error::permanent)?,
                    quote_ident(table).map_err(Error::permanent)?
                );
                let path = |dotted: &str| -> Vec<String> {
                    dotted.split('.').map(str::to_owned).collect()
                };
                let pk = path(primary_key);
                let mut conditions: Vec<(Vec<String>, Vec<String>)> = fields
                    .iter()
                    .map(|field| (path(field), vec![email.trim().to_lowercase()]))
                    .collect();
                if !ids.is_empty() {
                    conditions.push((pk.clone(), ids.to_vec()));
                }
                for (at, values) in conditions {
                    let is_email = at != pk;
                    let sql = if is_email {
                        format!(
                            "SELECT _raw #>> $1, _raw::text FROM {table}
                              WHERE lower(btrim(_raw #>> $2)) = ANY($3)"
                        )
                    } else {
                        format!(
                            "SELECT _raw #>> $1, _raw::text FROM {table} WHERE (_raw #>> $2) = ANY($3)"
                        )
                    };
                    let found: Vec<(Option<String>, String)> =
                        sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .bind(&pk)
                            .bind(&at)
                            .bind(&values)
                            .fetch_all(&mut *conn)
                            .await?;
                    for (record_id, raw) in found {
                        let record_id = record_id.unwrap_or_default();
                        if !rows.iter().any(|(known, _)| *known == record_id) {
                            rows.push((record_id, raw));
                        }
                    }
                }
            }
            audit::append(
                &mut conn,
                key,
                Event {
                    request: id,
                    action: "warehouse_search",
                    source: &source.name,
                    outcome: "ok",
                    detail: json!({
                        "stream": stream,
                        "table": table.is_some(),
                        "found": rows.len(),
                    }),
                },
            )
            .await?;
            Ok(rows)
        })
        .await?;
    rows.into_iter()
        .map(|(record_id, raw)| {
            RawValue::from_string(raw)
                .map(|raw| (record_id, raw))
                .map_err(Error::permanent)
        })
        .collect()
}

/// Stores the report (sealed when keys are configured) and moves to `compiled`.
async fn compile(ctx: &Context, key: &AuditKey, id: &str, report: &Report) -> Result<(), Error> {
    let text = serde_json::to_string(report)?;
    let (text, sealer) = (&text, ctx.sealer());
    ctx.transaction("compile report", |tx| async move {
        let kept = sealer
            .store(&request::REPORTS, text)
            .map_err(|e| Error::permanent(e).with_category("config"))?;
        let mut conn = tx.conn().await?;
        sqlx::query(
            "UPDATE cairn.dsr_requests SET phase = 'compiled', report = $2, report_sealed = $3, found = $4
              WHERE id = $1",
        )
        .bind(id)
        .bind(kept.plain())
        .bind(kept.sealed())
        .bind(i32::try_from(report.records.len()).unwrap_or(i32::MAX))
        .execute(&mut *conn)
        .await?;
        audit::append(
            &mut conn,
            key,
            Event {
                request: id,
                action: "phase",
                source: "",
                outcome: "compiled",
                detail: json!({
                    "records": report.records.len(),
                    "complete": report.complete(),
                }),
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// Closes the request with `outcome` and tells its clock.
async fn close(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    outcome: &str,
    retention: TimeDelta,
) -> Result<(), Error> {
    let clock: Option<uuid::Uuid> = ctx
        .transaction("close", |tx| async move {
            let mut conn = tx.conn().await?;
            let closed_at: DateTime<Utc> = Utc::now();
            let clock: Option<uuid::Uuid> = sqlx::query(
                "UPDATE cairn.dsr_requests SET phase = 'done', outcome = $2, closed_at = $3,
                        report_purge_after = $4
                  WHERE id = $1 RETURNING clock_run_id",
            )
            .bind(id)
            .bind(outcome)
            .bind(closed_at)
            .bind(closed_at + retention)
            .fetch_one(&mut *conn)
            .await?
            .try_get("clock_run_id")?;
            audit::append(
                &mut conn,
                key,
                Event {
                    request: id,
                    action: "phase",
                    source: "",
                    outcome: "done",
                    detail: json!({"outcome": outcome}),
                },
            )
            .await?;
            Ok(clock)
        })
        .await?;
    if let Some(clock) = clock {
        ctx.step("tell the clock", || async move {
            cairn_runner::Client::new(ctx.pool().clone())
                .send_event(clock.into(), "changed", &json!({"closed": true}))
                .await
                .map_err(|e| Error::transient(e.to_string()))
        })
        .await?;
    }
    Ok(())
}
