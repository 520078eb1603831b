//! `/syncs`: every source and stream that has synced: watermark, whether its history is
//! complete, rows, quarantine, alerts, and the latest run with its progress and ETA.

use std::sync::Arc;

use axum::extract::State;
use cairn_workflows::sync::eta::Eta;
use cairn_workflows::sync::{StreamStatus, stream_status, synced_targets};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

use super::PageError;
use super::runs::short;
use crate::App;
use crate::auth::Viewer;
use crate::format::{maybe_when, text};
use crate::layout::{Nav, page, status};

/// `GET /syncs`.
pub(crate) async fn list(State(app): State<Arc<App>>, viewer: Viewer) -> Result<Markup, PageError> {
    let mut sources = Vec::new();
    for target in synced_targets(&app.pool).await? {
        let streams = stream_status(&app.pool, &target).await?;
        sources.push((target, streams));
    }
    let now = Utc::now();
    let body = html! {
        div #live {
            @if sources.is_empty() {
                p.none { "Nothing has synced yet. Start with " code { "cairn sync <source.toml>" } "." }
            }
            @for (target, streams) in &sources {
                h2 { (target.source) " " span.muted { "→ schema " (target.schema) } }
                table.syncs data-source=(target.source) {
                    thead { tr {
                        th { "Stream" } th { "Watermark" } th { "History" } th.num { "Rows" } th.num { "Quarantined" }
                        th { "Latest run" } th { "Progress" } th { "Alerts" }
                    } }
                    tbody { @for stream in streams { (row(stream, now)) } }
                }
            }
        }
    };
    Ok(page("Syncs", Nav::Syncs, &viewer, body))
}

fn row(stream: &StreamStatus, now: DateTime<Utc>) -> Markup {
    let run = stream.last_run.as_ref();
    let number = |key: &str| {
        run.and_then(|r| r.progress.as_ref())
            .and_then(|p| p.get(key))
            .and_then(Value::as_u64)
    };
    let records = number("records");
    let total = number("total");
    let running = run.is_some_and(|r| r.finished_at.is_none());
    let eta = run.filter(|_| running).and_then(|r| {
        let elapsed = (now - r.created_at).num_milliseconds() as f64 / 1000.0;
        let done = records.unwrap_or(0);
        let known = stream.history.total.and_then(|t| u64::try_from(t).ok());
        Eta::estimate(done, done as f64 / elapsed.max(0.001), total, known)
    });
    html! {
        tr data-stream=(stream.stream) {
            td { (stream.stream) br; span.muted.mono { (stream.table) } }
            td.mono { (stream.watermark.as_deref().map(text).unwrap_or_default()) }
            td {
                @if stream.history.complete {
                    "complete " span.muted { (maybe_when(stream.history.completed_at, now)) }
                } @else {
                    span.error { "incomplete" }
                    @if let Some(landed) = &stream.history.landed {
                        br; span.muted { (landed.records) " landed" @if let Some(t) = stream.history.total { " of " (t) } }
                    }
                }
            }
            td.num { (stream.live_rows) @if stream.deleted_rows > 0 { br; span.muted { (stream.deleted_rows) " deleted" } } }
            td.num { (stream.quarantined) }
            td {
                @if let Some(run) = run {
                    a.mono href={ "/runs/" (run.id) } { (short(run.id)) } " " (status(&run.status))
                    br; span.muted { (run.workflow) " · " (maybe_when(Some(run.created_at), now)) }
                    @if let Some(error) = &run.error { br; span.error { (text(error)) } }
                } @else { span.none { "—" } }
            }
            td {
                @if let Some(records) = records {
                    (records) " records"
                    @if let Some(total) = total {
                        " of " (total) br;
                        meter min="0" max=(total.max(1)) value=(records.min(total)) {}
                    }
                }
                @if let Some(eta) = eta { br; span.muted { (eta.describe()) } }
            }
            td {
                @for alert in &stream.alerts { div.error { (alert.kind) ": " (text(&alert.message)) } }
            }
        }
    }
}
