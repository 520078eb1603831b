//! `/budgets`: each credential's shared rate budget: its rate against the configured
//! ceiling, tokens, 429s, requests in flight, and the vendor's daily quota as its headers
//! last reported it.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use sqlx::PgPool;

use super::PageError;
use crate::App;
use crate::auth::Viewer;
use crate::format::{maybe_when, when};
use crate::layout::{Nav, page};

/// One credential's budget as it stands.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Budget {
    /// The budget's key: the vendor's host and a hash of the credential, never the
    /// credential itself.
    pub(crate) key: String,
    pub(crate) ceiling: f64,
    pub(crate) rate: f64,
    pub(crate) burst: f64,
    /// Tokens now, refilled to this instant (negative: requests are queued).
    pub(crate) tokens: f64,
    pub(crate) granted: i64,
    pub(crate) throttled: i64,
    pub(crate) paused_until: Option<DateTime<Utc>>,
    pub(crate) urgent_until: Option<DateTime<Utc>>,
    pub(crate) in_flight: i32,
    pub(crate) quota_used: Option<i64>,
    pub(crate) quota_total: Option<i64>,
    pub(crate) quota_at: Option<DateTime<Utc>>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Budget {
    /// Whether a rate limit is configured: a credential without one has a row only to
    /// count its 429s.
    pub(crate) fn limited(&self) -> bool {
        self.ceiling.is_finite()
    }

    /// The share of the daily quota used, when the vendor reports one.
    pub(crate) fn quota_ratio(&self) -> Option<f64> {
        match (self.quota_used, self.quota_total) {
            (Some(used), Some(total)) if total > 0 => Some(used as f64 / total as f64),
            _ => None,
        }
    }

    /// When the quota runs out at the pace of this UTC day so far.
    fn quota_runs_out(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (used, total) = (self.quota_used?, self.quota_total?);
        let midnight = now.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
        let elapsed = (self.quota_at? - midnight).num_seconds();
        if used <= 0 || elapsed <= 0 {
            return None;
        }
        let per_sec = used as f64 / elapsed as f64;
        let left = (total - used).max(0) as f64;
        Some(now + chrono::Duration::seconds((left / per_sec) as i64))
    }
}

/// Every budget, read as the dashboard and `/metrics` show it.
pub(crate) async fn read(pool: &PgPool) -> Result<Vec<Budget>, sqlx::Error> {
    // Instants that never happened are stored as -infinity, which has no chrono form.
    sqlx::query_as(
        "SELECT key, ceiling, rate, burst,
                least(burst, tokens + rate * greatest(0, extract(epoch FROM clock_timestamp() - refilled_at)::float8)) AS tokens,
                granted, throttled,
                CASE WHEN paused_until > clock_timestamp() THEN paused_until END AS paused_until,
                CASE WHEN priority_until > clock_timestamp() THEN priority_until END AS urgent_until,
                CASE WHEN clock_timestamp() - updated_at > interval '30 seconds' THEN 0 ELSE in_flight END AS in_flight,
                quota_used, quota_total, quota_at, updated_at
           FROM cairn.rate_budgets ORDER BY key",
    )
    .fetch_all(pool)
    .await
}

/// `GET /budgets`.
pub(crate) async fn list(State(app): State<Arc<App>>, viewer: Viewer) -> Result<Markup, PageError> {
    let budgets = read(&app.pool).await?;
    let now = Utc::now();
    let body = html! {
        div #live {
            @if budgets.is_empty() {
                p.none { "No rate budgets yet: a source with a " code { "[rate_limit]" } " gets one at its first request." }
            } @else {
                table.budgets {
                    thead { tr {
                        th { "Credential" } th { "Rate (req/s)" } th.num { "Tokens" } th.num { "In flight" }
                        th.num { "Granted" } th.num { "429s" } th { "Paused until" } th { "Daily quota" } th { "Last used" }
                    } }
                    tbody {
                        @for b in &budgets {
                            tr data-budget=(b.key) {
                                td.mono { (b.key) @if b.urgent_until.is_some() { " " span.status.s-running { "urgent traffic" } } }
                                @if b.limited() {
                                    td {
                                        (format!("{:.2}", b.rate)) " of " (format!("{:.2}", b.ceiling))
                                        br;
                                        meter min="0" max=(b.ceiling) value=(b.rate) {}
                                    }
                                    td.num { (format!("{:.1}", b.tokens)) " / " (format!("{:.0}", b.burst)) }
                                } @else {
                                    td { span.error { "no rate limit configured" } br; span.muted { "give the source a [rate_limit]" } }
                                    td.num { span.none { "—" } }
                                }
                                td.num { (b.in_flight) }
                                td.num { (b.granted) }
                                td.num { (b.throttled) }
                                td { (maybe_when(b.paused_until, now)) }
                                td {
                                    @if let (Some(used), Some(total), Some(ratio)) = (b.quota_used, b.quota_total, b.quota_ratio()) {
                                        (used) " of " (total) " (" (format!("{:.1}", ratio * 100.0)) "%)"
                                        br;
                                        meter min="0" max="1" high="0.8" optimum="0" value=(format!("{ratio:.4}")) {}
                                        @if let Some(out) = b.quota_runs_out(now) {
                                            br; span.muted { "at this pace, spent " (when(out, now)) }
                                        }
                                    } @else {
                                        span.none { "not reported" }
                                    }
                                }
                                td { (when(b.updated_at, now)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Rate budgets", Nav::Budgets, &viewer, body))
}
