//! `/runs/{id}`: one run: where it stands and why it waits, its steps on a timeline with
//! attempts and errors, its children and the events sent to it.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, State};
use cairn_runner::model::{RunDetail, StepRecord};
use cairn_runner::{EngineError, RunFilter, RunId, RunStatus};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::PageError;
use super::runs::short;
use crate::App;
use crate::auth::Viewer;
use crate::format::{json, maybe_when, span, text, when};
use crate::layout::{Nav, action, page, status};

/// Steps drawn on one page; a sync of a million records has thousands.
const SHOWN_STEPS: usize = 1000;
/// Children and events listed.
const SHOWN_RELATED: i64 = 200;

#[derive(sqlx::FromRow)]
struct Extra {
    parent_id: Option<RunId>,
    deadline: Option<DateTime<Utc>>,
    error_text: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    name: String,
    sent_at: DateTime<Utc>,
    consumed_position: Option<i32>,
    consumed_at: Option<DateTime<Utc>>,
}

/// `GET /runs/{id}`.
pub(crate) async fn show(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let id = RunId::from_str(&id)
        .map_err(|_| PageError::not_found(format!("{id:?} is not a run id")))?;
    let run = match app.client.show(id).await {
        Ok(run) => run,
        Err(EngineError::RunNotFound(_)) => {
            return Err(PageError::not_found(format!("there is no run {id}")));
        }
        Err(err) => return Err(err.into()),
    };
    let extra: Extra = sqlx::query_as(
        "SELECT parent_id, deadline, error->>'message' AS error_text FROM cairn.runs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await?;
    let children = app
        .client
        .runs(&RunFilter {
            parent: Some(id),
            limit: SHOWN_RELATED,
            ..RunFilter::default()
        })
        .await?;
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT name, sent_at, consumed_position, consumed_at FROM cairn.events
          WHERE run_id = $1 ORDER BY id LIMIT $2",
    )
    .bind(id)
    .bind(SHOWN_RELATED)
    .fetch_all(&app.pool)
    .await?;
    let now = Utc::now();
    let summary = &run.summary;
    let title = format!("Run {} · {}", short(id), summary.workflow);
    let body = html! {
        div #live {
            (facts(&run, &extra, now))
            (waiting(&run, now))
            div.actions {
                @if !summary.status.is_terminal() {
                    (action(&viewer, &format!("/runs/{id}/cancel"), "Cancel"))
                }
                @if summary.status == RunStatus::Failed {
                    (action(&viewer, &format!("/dead-letters/{id}/retry"), "Retry from the failed step"))
                }
            }
            @if let Some(message) = &extra.error_text {
                h2 { "Error" }
                pre.error { (text(message)) }
            }
            h2 { "Steps (" (run.steps.len()) ")" }
            (steps(&run, now))
            @if !children.is_empty() {
                h2 { "Child runs" }
                table { thead { tr { th { "Run" } th { "Workflow" } th { "Status" } th { "Started" } } }
                    tbody { @for child in &children { tr {
                        td.mono { a href={ "/runs/" (child.id) } { (short(child.id)) } }
                        td { (child.workflow) } td { (status(child.status.as_str())) }
                        td { (when(child.created_at, now)) }
                    } } }
                }
            }
            @if !events.is_empty() {
                h2 { "Events" }
                table { thead { tr { th { "Event" } th { "Sent" } th { "Taken by step" } th { "Taken" } } }
                    tbody { @for event in &events { tr {
                        td { (event.name) } td { (when(event.sent_at, now)) }
                        td { @if let Some(p) = event.consumed_position { (p) } @else { span.none { "waiting" } } }
                        td { (maybe_when(event.consumed_at, now)) }
                    } } }
                }
            }
            h2 { "Input" }
            (json(&run.input))
            @if let Some(progress) = &run.progress {
                h2 { "Progress" }
                (json(progress))
            }
            @if let Some(output) = &run.output {
                h2 { "Output" }
                (json(output))
            }
        }
    };
    Ok(page(&title, Nav::Runs, &viewer, body))
}

fn facts(run: &RunDetail, extra: &Extra, now: DateTime<Utc>) -> Markup {
    let summary = &run.summary;
    html! {
        dl.facts {
            dt { "Status" } dd { (status(summary.status.as_str())) @if run.cancel_requested && !summary.status.is_terminal() { " (cancel requested)" } }
            dt { "Run id" } dd.mono { (summary.id) }
            dt { "Workflow" } dd { a href={ "/runs?workflow=" (summary.workflow) } { (summary.workflow) } }
            dt { "Queue" } dd { (summary.queue) " · priority " (summary.priority) }
            @if let Some(key) = &summary.idempotency_key { dt { "Idempotency key" } dd.mono { (text(key)) } }
            @if let Some(key) = &summary.concurrency_key { dt { "Concurrency key" } dd.mono { (key) } }
            @if let Some(parent) = extra.parent_id { dt { "Parent" } dd.mono { a href={ "/runs/" (parent) } { (parent) } } }
            dt { "Created" } dd { (when(summary.created_at, now)) }
            dt { "Started" } dd { (maybe_when(run.started_at, now)) }
            dt { "Finished" } dd { (maybe_when(summary.finished_at, now)) }
            @if let Some(deadline) = extra.deadline { dt { "Deadline" } dd { (when(deadline, now)) } }
            dt { "Claims" } dd { (summary.claims) @if summary.claims > 1 { " (resumed " (summary.claims - 1) " times)" } }
            @if let Some(owner) = &run.lease_owner {
                @if summary.status == RunStatus::Running {
                    dt { "Worker" } dd.mono { (owner) " · lease " (maybe_when(run.lease_expires_at, now)) }
                }
            }
        }
    }
}

/// Why a waiting run waits, and until when.
fn waiting(run: &RunDetail, now: DateTime<Utc>) -> Markup {
    let summary = &run.summary;
    let why = match summary.status {
        RunStatus::Parked => "Parked: a rate limit or a quota said to wait; no worker is held",
        RunStatus::Retrying => "Waiting to retry a failed step (backoff)",
        RunStatus::Sleeping => "Sleeping on a durable timer or waiting for an event",
        RunStatus::Pending => "Waiting for a worker",
        _ => return html! {},
    };
    let step = run
        .steps
        .iter()
        .filter(|step| step.status.as_str() == "retrying")
        .max_by_key(|step| step.started_at);
    html! {
        div.wait {
            b { (why) } " · wakes " (when(summary.wake_at, now))
            @if let Some(step) = step {
                br;
                "At step " (step.position) " “" (step.name) "”"
                @if step.throttled > 0 { ", throttled " (step.throttled) " times" }
                @if let Some(error) = &step.last_error { ": " span.error { (text(error)) } }
            }
        }
    }
}

fn steps(run: &RunDetail, now: DateTime<Utc>) -> Markup {
    let Some(first) = run.steps.iter().map(|s| s.started_at).min() else {
        return html! { p.none { "No step has run yet." } };
    };
    let end = |step: &StepRecord| {
        step.finished_at
            .or_else(|| {
                step.duration_ms.map(|ms| {
                    step.started_at + chrono::Duration::microseconds((ms * 1000.0) as i64)
                })
            })
            .unwrap_or(now)
    };
    let last = run.steps.iter().map(end).max().unwrap_or(now).max(first);
    let total = ((last - first).num_microseconds().unwrap_or(i64::MAX) as f64).max(1.0);
    let place = |at: DateTime<Utc>| {
        ((at - first).num_microseconds().unwrap_or(0) as f64 / total * 1000.0).clamp(0.0, 1000.0)
    };
    html! {
        table.steps {
            thead { tr {
                th.num { "#" } th { "Step" } th { "Kind" } th { "Status" } th.num { "Attempts" }
                th { "Started" } th.num { "Took" } th { "Timeline" }
            } }
            tbody {
                @for step in run.steps.iter().take(SHOWN_STEPS) {
                    @let x = place(step.started_at);
                    @let width = (place(end(step)) - x).max(2.0);
                    tr data-step=(step.position) {
                        td.num { (step.position) }
                        td {
                            @if !step.branch.is_empty() { span.muted.mono { (step.branch) " › " } }
                            (step.name)
                            @if let Some(error) = &step.last_error { pre.error { (text(error)) } }
                        }
                        td { (step.kind.as_str()) }
                        td { (status(step.status.as_str())) }
                        td.num { (step.attempts) @if step.throttled > 0 { " + " (step.throttled) " throttled" } }
                        td { (when(step.started_at, now)) }
                        td.num { @if let Some(ms) = step.duration_ms { (span(ms / 1000.0)) } }
                        td {
                            svg.timeline viewBox="0 0 1000 10" preserveAspectRatio="none" role="img" aria-label="when the step ran" {
                                rect class={ "t-" (step.status.as_str()) } x=(format!("{x:.1}")) y="0" width=(format!("{width:.1}")) height="10" {}
                            }
                        }
                    }
                }
            }
        }
        @if run.steps.len() > SHOWN_STEPS {
            p.none { "… and " (run.steps.len() - SHOWN_STEPS) " more steps (see `cairn runs show " (run.summary.id) " --json`)." }
        }
    }
}
