//! `/runs`: runs newest first, filtered by status, workflow and age, a page at a time.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Query, State};
use cairn_runner::{RunFilter, RunId, RunStatus};
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::PageError;
use crate::App;
use crate::auth::Viewer;
use crate::format::{maybe_when, span, when};
use crate::layout::{Nav, page, status};

/// Runs on one page.
const PAGE: i64 = 50;

/// How far back `since` may reach, as offered in the filter.
const SINCE: [(&str, &str, i64); 6] = [
    ("", "any time", 0),
    ("15m", "15 minutes", 15 * 60),
    ("1h", "1 hour", 3600),
    ("24h", "24 hours", 86_400),
    ("7d", "7 days", 7 * 86_400),
    ("30d", "30 days", 30 * 86_400),
];

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    since: String,
    /// The last run of the previous page: `<created_at>~<id>`.
    #[serde(default)]
    after: String,
}

impl Filters {
    fn run_filter(&self, now: DateTime<Utc>) -> Result<RunFilter, PageError> {
        let status = match self.status.as_str() {
            "" => None,
            other => Some(
                RunStatus::from_str(other)
                    .map_err(|err| PageError::bad_request(err.to_string()))?,
            ),
        };
        let since = SINCE
            .iter()
            .find(|(key, _, _)| *key == self.since)
            .ok_or_else(|| {
                PageError::bad_request(format!(
                    "`since` must be one of 15m, 1h, 24h, 7d, 30d, not {:?}",
                    self.since
                ))
            })?;
        let after = match self.after.split_once('~') {
            None if self.after.is_empty() => None,
            Some((at, id)) => Some((
                DateTime::parse_from_rfc3339(at)
                    .map_err(|_| PageError::bad_request("`after` is not a page boundary"))?
                    .with_timezone(&Utc),
                RunId::from_str(id)
                    .map_err(|_| PageError::bad_request("`after` is not a page boundary"))?,
            )),
            None => return Err(PageError::bad_request("`after` is not a page boundary")),
        };
        let workflow = self.workflow.trim();
        Ok(RunFilter {
            status,
            workflow: (!workflow.is_empty()).then(|| workflow.to_owned()),
            created_after: (since.2 > 0).then(|| now - Duration::seconds(since.2)),
            after,
            limit: PAGE + 1,
            ..RunFilter::default()
        })
    }

    /// This filter's query string, on the page after `after`.
    fn href(&self, after: Option<&str>) -> String {
        let mut pairs = Vec::new();
        for (key, value) in [
            ("status", &self.status),
            ("workflow", &self.workflow),
            ("since", &self.since),
        ] {
            if !value.is_empty() {
                pairs.push(format!("{key}={}", encode(value)));
            }
        }
        if let Some(after) = after {
            pairs.push(format!("after={}", encode(after)));
        }
        format!("/runs?{}", pairs.join("&"))
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /runs`.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Query(filters): Query<Filters>,
) -> Result<Markup, PageError> {
    let now = Utc::now();
    let filter = filters.run_filter(now)?;
    let mut runs = app.client.runs(&filter).await?;
    let more = runs.len() as i64 > PAGE;
    runs.truncate(PAGE as usize);
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM cairn.runs GROUP BY status")
            .fetch_all(&app.pool)
            .await?;
    let workflows: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT workflow FROM cairn.runs ORDER BY workflow LIMIT 200")
            .fetch_all(&app.pool)
            .await?;
    let next = runs
        .last()
        .filter(|_| more)
        .map(|run| format!("{}~{}", run.created_at.to_rfc3339(), run.id));
    let body = html! {
        form.filters method="get" action="/runs" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in RunStatus::ALL {
                        option value=(s.as_str()) selected[filters.status == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Workflow"
                input name="workflow" list="workflows" value=(filters.workflow) placeholder="any";
                datalist #workflows { @for w in &workflows { option value=(w) {} } }
            }
            label { "Started within"
                select name="since" {
                    @for (key, label, _) in SINCE {
                        option value=(key) selected[filters.since == key] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
            a href="/runs" { "Clear" }
        }
        div #live {
            div.cards {
                @for s in RunStatus::ALL {
                    @let n = counts.iter().find(|(name, _)| name == s.as_str()).map_or(0, |(_, n)| *n);
                    a.card href={ "/runs?status=" (s.as_str()) } data-status=(s.as_str()) {
                        b { (n) } span { (s.as_str()) }
                    }
                }
            }
            @if runs.is_empty() {
                p.none { "No runs match." }
            } @else {
                table.runs {
                    thead { tr {
                        th { "Run" } th { "Workflow" } th { "Status" } th { "Queue" }
                        th.num { "Priority" } th { "Started" } th { "Took / wakes" } th.num { "Claims" }
                    } }
                    tbody {
                        @for run in &runs {
                            tr data-run=(run.id) {
                                td.mono { a href={ "/runs/" (run.id) } { (short(run.id)) } }
                                td { (run.workflow) }
                                td { (status(run.status.as_str())) }
                                td { (run.queue) }
                                td.num { (run.priority) }
                                td { (when(run.created_at, now)) }
                                td {
                                    @if let Some(end) = run.finished_at {
                                        (span((end - run.created_at).num_milliseconds() as f64 / 1000.0))
                                    } @else if run.status.is_terminal() || run.status == RunStatus::Running {
                                        span.none { "—" }
                                    } @else {
                                        (maybe_when(Some(run.wake_at), now))
                                    }
                                }
                                td.num { (run.claims) }
                            }
                        }
                    }
                }
            }
            div.pager {
                @if !filters.after.is_empty() {
                    a href=(filters.href(None)) { "← Newest" }
                }
                @if let Some(next) = &next {
                    a rel="next" href=(filters.href(Some(next))) { "Older →" }
                }
            }
        }
    };
    Ok(page("Runs", Nav::Runs, &viewer, body))
}

/// A run id's last eight digits, enough to tell runs apart on a page: ids are UUIDv7,
/// whose first digits are the time they were made, so runs started together share them.
pub(crate) fn short(id: RunId) -> String {
    let text = id.to_string();
    text[text.len() - 8..].to_owned()
}
