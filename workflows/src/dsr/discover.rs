//! The [`REQUEST`](super::REQUEST) workflow: search every source's lookups and the
//! warehouse for the subject, compile the report, (for an erasure) erase, and close.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_connectors::paginate::{PageCursor, Paged, Traversal};
use cairn_connectors::rest::{IdentityKind, RestSource};
use cairn_connectors::source::Source;
use cairn_runner::{ChildOptions, Context, Error};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::audit::{self, AuditKey, Event};
use super::report::{Finding, LookupLog, Report};
use super::request::{self, RequestInput};
use super::warehouse::PersonRows;
use super::{Kind, Phase, erase};

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
        let (name, schema, source) = super::open_source(&ctx, source).await?;
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
    let logs: Vec<(LookupLog, Records, Option<Error>)> = ctx
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
    let mut failed = None;
    for (log, found, failure) in logs {
        for (record_id, record) in found {
            findings.push(Finding::vendor(&log.source, &log.stream, record_id, record));
        }
        lookups.push(log);
        failed = failed.or(failure);
    }
    for source in opened.iter() {
        for stream in source.source.streams() {
            let Some(rows) = PersonRows::new(
                &source.name,
                &source.schema,
                &source.source,
                &stream.name,
                &subject,
            ) else {
                continue;
            };
            for (record_id, record) in
                search_warehouse(&ctx, &key, id, source, &rows, &stream.name).await?
            {
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
    // A search that could not finish leaves the report partial and the request open:
    // the run fails at the lookup, and a retry from the dead-letter list resumes it.
    compile(&ctx, &key, id, &report, failed.is_none()).await?;
    if let Some(error) = failed {
        return Err(error);
    }
    if input.kind == Kind::Erasure {
        set_phase(&ctx, &key, id, Phase::Fulfilling).await?;
        fulfil(&ctx, &key, id, &input, &report, &opened, &subject).await?;
    }
    let key = &key;
    let clock = ctx
        .transaction("close", |tx| async move {
            let mut conn = tx.conn().await?;
            request::close(&mut conn, key, id).await
        })
        .await?;
    if let Some(clock) = clock {
        tell_clock(&ctx, clock).await?;
    }
    Ok(json!({"request": id, "found": found}))
}

/// Tells request's clock run that the request changed (closed, extended).
pub(crate) async fn tell_clock(ctx: &Context, clock: uuid::Uuid) -> Result<(), Error> {
    ctx.step("tell the clock", || async move {
        cairn_runner::Client::new(ctx.pool().clone())
            .send_event(clock.into(), "changed", &json!({}))
            .await
            .map_err(|e| Error::transient(e.to_string()))
    })
    .await
}

/// An erasure: each source's vendor records erased by a child run of its own (which
/// deletes their warehouse rows as it goes); rows found only in the warehouse deleted
/// here. A child that fails is on the dead-letter list; the request stays open.
async fn fulfil(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    input: &RequestInput,
    report: &Report,
    opened: &[Opened],
    subject: &super::Subject,
) -> Result<(), Error> {
    let deadline: DateTime<Utc> = ctx
        .step("read the deadline", || async move {
            Ok(
                sqlx::query_scalar("SELECT deadline FROM cairn.dsr_requests WHERE id = $1")
                    .bind(id)
                    .fetch_one(ctx.pool())
                    .await?,
            )
        })
        .await?;
    let mut children = Vec::new();
    for (index, source) in opened.iter().enumerate() {
        let records: Vec<(String, String)> = report
            .records
            .iter()
            .filter(|r| r.source == source.name && r.at_vendor)
            .map(|r| (r.stream.clone(), r.id.clone()))
            .collect();
        let only_here: Vec<(String, String)> = report
            .records
            .iter()
            .filter(|r| r.source == source.name && !r.at_vendor)
            .map(|r| (r.stream.clone(), r.id.clone()))
            .collect();
        if !only_here.is_empty() {
            let only_here = &only_here;
            ctx.transaction(
                format!("erase warehouse rows of {}", source.name),
                |tx| async move {
                    let mut conn = tx.conn().await?;
                    let mut rows = 0;
                    for (stream, record) in only_here {
                        if let Some(person) = PersonRows::new(
                            &source.name,
                            &source.schema,
                            &source.source,
                            stream,
                            subject,
                        ) {
                            rows += person.delete(&mut conn, record).await?;
                        }
                    }
                    sqlx::query("UPDATE cairn.dsr_requests SET erased = erased + $2 WHERE id = $1")
                        .bind(id)
                        .bind(i32::try_from(only_here.len()).unwrap_or(i32::MAX))
                        .execute(&mut *conn)
                        .await?;
                    audit::append(
                        &mut conn,
                        key,
                        Event {
                            request: id,
                            action: "erase_warehouse",
                            source: &source.name,
                            outcome: "erased",
                            detail: json!({"records": only_here.len(), "rows_deleted": rows}),
                        },
                    )
                    .await?;
                    Ok(())
                },
            )
            .await?;
        }
        if !records.is_empty() {
            children.push(erase::EraseInput {
                request: id.to_owned(),
                source: input.sources[index].clone(),
                records,
                deadline,
            });
        }
    }
    let options = ChildOptions {
        priority: Some(super::PRIORITY),
        cancel_with_parent: false,
        ..ChildOptions::default()
    };
    let options = &options;
    let ended = ctx
        .parallel(BRANCHES, children, |branch, child| async move {
            let run = branch.start_child(erase::ERASE, &child, options).await?;
            Ok::<_, Error>(branch.child_result::<Value>(run).await.is_ok())
        })
        .await;
    for ended in ended {
        ended?;
    }
    Ok(())
}

/// Runs one lookup page by page; each page is one transactional step whose audit entry
/// commits with its checkpoint. A lookup that fails is audited and reported (its error
/// comes back beside what it found), and the others go on.
async fn look_up(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    source: &Opened,
    plan: &Planned,
) -> Result<(LookupLog, Records, Option<Error>), Error> {
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
            Err(error) => break Some(error),
        };
        if let Err(error) = traversal.advance(&page) {
            break Some(
                Error::permanent(format!("{}/{}: {error}", source.name, plan.stream))
                    .with_category("pagination"),
            );
        }
        log.pages += 1;
        log.found += page.found.len();
        log.rejected += page.rejected;
        found.extend(page.found);
    };
    if let Some(error) = &failure {
        let message = cairn_runner::redact::redact(&error.to_string()).into_owned();
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
    Ok((log, found, failure))
}

/// Searches `source`'s warehouse table of `stream` for the person's rows, in one
/// transactional step, audited.
async fn search_warehouse(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    source: &Opened,
    rows: &PersonRows<'_>,
    stream: &str,
) -> Result<Records, Error> {
    let found: Vec<(String, String)> = ctx
        .transaction(
            format!("search warehouse {}/{stream}", source.name),
            |tx| async move {
                let mut conn = tx.conn().await?;
                let found = rows.find(&mut conn).await?;
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
                            "table": found.is_some(),
                            "found": found.as_ref().map_or(0, Vec::len),
                        }),
                    },
                )
                .await?;
                Ok(found.unwrap_or_default())
            },
        )
        .await?;
    found
        .into_iter()
        .map(|(record_id, raw)| {
            RawValue::from_string(raw)
                .map(|raw| (record_id, raw))
                .map_err(Error::permanent)
        })
        .collect()
}

/// Stores the report (sealed when keys are configured) and moves to `compiled`.
async fn compile(
    ctx: &Context,
    key: &AuditKey,
    id: &str,
    report: &Report,
    complete: bool,
) -> Result<(), Error> {
    let text = serde_json::to_string(report)?;
    let (text, sealer) = (&text, ctx.sealer());
    ctx.transaction("compile report", |tx| async move {
        let kept = sealer
            .store(&request::REPORTS, text)
            .map_err(|e| Error::permanent(e).with_category("config"))?;
        let mut conn = tx.conn().await?;
        sqlx::query(
            "UPDATE cairn.dsr_requests SET phase = $5, report = $2, report_sealed = $3, found = $4
              WHERE id = $1",
        )
        .bind(id)
        .bind(kept.plain())
        .bind(kept.sealed())
        .bind(i32::try_from(report.records.len()).unwrap_or(i32::MAX))
        .bind(if complete { "compiled" } else { "failed" })
        .execute(&mut *conn)
        .await?;
        audit::append(
            &mut conn,
            key,
            Event {
                request: id,
                action: "phase",
                source: "",
                outcome: if complete { "compiled" } else { "failed" },
                detail: json!({
                    "records": report.records.len(),
                    "complete": complete,
                }),
            },
        )
        .await?;
        Ok(())
    })
    .await
}
