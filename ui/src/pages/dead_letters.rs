//! `/dead-letters`: failed runs waiting for a person, with how long the backlog has
//! waited, where each failed, and a retry that resumes at the failed step.

use std::sync::Arc;

use axum::extract::State;
use chrono::Utc;
use maud::{Markup, html};

use super::PageError;
use super::runs::short;
use crate::App;
use crate::auth::Viewer;
use crate::format::{maybe_when, span, text};
use crate::layout::{Nav, action, page};

/// Dead letters listed.
const SHOWN: i64 = 200;

/// `GET /dead-letters`.
pub(crate) async fn list(State(app): State<Arc<App>>, viewer: Viewer) -> Result<Markup, PageError> {
    let list = app.dead_letters.list(SHOWN).await?;
    let now = Utc::now();
    let oldest = list.runs.iter().filter_map(|run| run.failed_at).min();
    let body = html! {
        div #live {
            div.cards {
                div.card { b { (list.runs.len()) @if list.runs.len() as i64 >= SHOWN { "+" } } span { "failed runs" } }
                div.card {
                    b { @if let Some(at) = oldest { (span((now - at).num_milliseconds() as f64 / 1000.0)) } @else { "—" } }
                    span { "oldest waiting" }
                }
                a.card href="/quarantine" { b { (list.records.len()) } span { "quarantined records" } }
            }
            @if list.runs.is_empty() {
                p.none { "No failed runs." }
            } @else {
                table.dead {
                    thead { tr {
                        th { "Run" } th { "Workflow" } th { "Category" } th { "Failed at step" } th { "Error" }
                        th { "Failed" } th.num { "Kept steps" } th {}
                    } }
                    tbody {
                        @for run in &list.runs {
                            tr data-run=(run.run_id) {
                                td.mono { a href={ "/runs/" (run.run_id) } { (short(run.run_id)) } }
                                td { (run.workflow) }
                                td { (run.category.as_deref().unwrap_or("")) }
                                td { @if let Some(step) = &run.failed_step { (step.position) " " (step.name) } }
                                td { (text(run.message.as_deref().unwrap_or(""))) }
                                td { (maybe_when(run.failed_at, now)) }
                                td.num { (run.completed_steps) }
                                td { (action(&viewer, &format!("/dead-letters/{}/retry", run.run_id), "Retry")) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Dead letters", Nav::DeadLetters, &viewer, body))
}
