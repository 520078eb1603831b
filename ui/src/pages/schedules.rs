//! `/schedules`: cron schedules with their next and last fires.

use std::sync::Arc;

use axum::extract::State;
use chrono::Utc;
use maud::{Markup, html};

use super::PageError;
use super::runs::short;
use crate::App;
use crate::auth::Viewer;
use crate::format::maybe_when;
use crate::layout::{Nav, action, page, status};

/// `GET /schedules`.
pub(crate) async fn list(State(app): State<Arc<App>>, viewer: Viewer) -> Result<Markup, PageError> {
    let schedules = app.schedules.list().await?;
    let now = Utc::now();
    let body = html! {
        div #live {
            @if schedules.is_empty() {
                p.none { "No schedules. Add one with " code { "cairn schedule add" } "." }
            } @else {
                table {
                    thead { tr {
                        th { "Schedule" } th { "Cron" } th { "Workflow" } th { "State" } th { "Next fire" }
                        th { "Last fire" } th { "Last run" } th.num { "Runs" } th.num { "Skipped" } th {}
                    } }
                    tbody {
                        @for s in &schedules {
                            tr data-schedule=(s.name) {
                                td { (s.name) }
                                td.mono { (s.cron) " " span.muted { (s.timezone) } }
                                td { (s.workflow) }
                                td { @if s.enabled { (status("running")) } @else { (status("paused")) } }
                                td { @if s.enabled { (maybe_when(s.next_fire_at, now)) } @else { span.none { "paused" } } }
                                td { (maybe_when(s.last_fire_at, now)) }
                                td.mono { @if let Some(run) = s.last_run_id { a href={ "/runs/" (run) } { (short(run)) } } }
                                td.num { (s.runs_started) }
                                td.num { (s.fires_skipped) }
                                td {
                                    @if s.enabled {
                                        (action(&viewer, &format!("/schedules/{}/pause", path(&s.name)), "Pause"))
                                    } @else {
                                        (action(&viewer, &format!("/schedules/{}/resume", path(&s.name)), "Resume"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Schedules", Nav::Schedules, &viewer, body))
}

/// A schedule's name as a path segment.
fn path(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
