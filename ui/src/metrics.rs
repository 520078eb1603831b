//! `/metrics` in Prometheus' text format.
//!
//! Two kinds of series. What a worker counts as it goes (steps started, completed and
//! failed, step latency, lease losses, claims; see [`cairn_runner::observe`]; records
//! synced per stream, [`cairn_workflows::sync::RECORDS_SYNCED`]) is this process's own, so
//! each `cairn worker --http` exposes its share and Prometheus adds them up. What the
//! database knows (runs by state, queue depth, rate budgets, dead letters) is read at each
//! scrape, the same from every process.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_runner::RunStatus;
use cairn_runner::observe::STEP_SECONDS;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::App;

/// Runs in each state.
pub const RUNS: &str = "cairn_runs";
/// Runs due now and waiting for a worker, per queue.
pub const QUEUE_DEPTH: &str = "cairn_queue_depth";
/// How long the longest-waiting due run has waited, per queue.
pub const QUEUE_OLDEST_SECONDS: &str = "cairn_queue_oldest_seconds";
/// Tokens in a credential's budget now (negative: requests queued for it).
pub const BUDGET_TOKENS: &str = "cairn_budget_tokens";
/// A credential's current rate, requests per second.
pub const BUDGET_RATE: &str = "cairn_budget_rate";
/// 429s a credential's vendor answered, in all.
pub const BUDGET_THROTTLED: &str = "cairn_budget_throttled_total";
/// Requests out at once on a credential.
pub const BUDGET_IN_FLIGHT: &str = "cairn_budget_in_flight";
/// Share of the vendor's daily quota used, as its headers last said.
pub const BUDGET_QUOTA_USED_RATIO: &str = "cairn_budget_quota_used_ratio";
/// Failed runs on the dead-letter list.
pub const DEAD_LETTERS: &str = "cairn_dead_letters";
/// Age of the oldest dead letter.
pub const DEAD_LETTER_OLDEST_SECONDS: &str = "cairn_dead_letter_oldest_seconds";

/// Step latency buckets, seconds: a checkpoint is a millisecond, a page fetch behind a
/// rate limit can be a minute.
const STEP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// The process's metrics: a Prometheus recorder installed once, or none.
#[derive(Clone, Default)]
pub struct Metrics {
    handle: Option<Arc<PrometheusHandle>>,
}

static INSTALLED: OnceLock<Result<Arc<PrometheusHandle>, String>> = OnceLock::new();

impl Metrics {
    /// Installs the Prometheus recorder for this process (once; later calls share it).
    pub fn install() -> Result<Self, String> {
        let handle = INSTALLED
            .get_or_init(|| {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Full(STEP_SECONDS.to_owned()), &STEP_BUCKETS)
                    .map_err(|err| err.to_string())?
                    .install_recorder()
                    .inspect(|_| {
                        // Counters that may stay at zero are shown from the start, so a
                        // rate over them is 0 rather than absent.
                        metrics::counter!(cairn_runner::observe::LEASE_LOSSES).absolute(0);
                        metrics::counter!(cairn_runner::observe::CLAIMS).absolute(0);
                        for result in ["runs", "empty", "error"] {
                            metrics::counter!(cairn_runner::observe::CLAIM_QUERIES, "result" => result)
                                .absolute(0);
                        }
                    })
                    .map(Arc::new)
                    .map_err(|err| format!("cannot install the metrics recorder: {err}"))
            })
            .clone()?;
        Ok(Self {
            handle: Some(handle),
        })
    }

    /// No metrics: `/metrics` answers 404.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads what the database knows into the recorder, then renders every series.
    pub async fn render(&self, pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
        let Some(handle) = &self.handle else {
            return Ok(None);
        };
        from_database(pool).await?;
        Ok(Some(handle.render()))
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(app): State<Arc<App>>) -> Response {
    match app.metrics.render(&app.pool).await {
        Ok(Some(text)) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Ok(None) => (StatusCode::NOT_FOUND, "metrics are off in this process").into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the database: {err}"),
        )
            .into_response(),
    }
}

async fn from_database(pool: &PgPool) -> Result<(), sqlx::Error> {
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM cairn.runs GROUP BY status")
            .fetch_all(pool)
            .await?;
    for status in RunStatus::ALL {
        let n = by_status
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        gauge!(RUNS, "status" => status.as_str()).set(n as f64);
    }

    let queues: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT queue,
                count(*) FILTER (WHERE wake_at <= now()),
                coalesce(extract(epoch FROM now() - min(wake_at) FILTER (WHERE wake_at <= now())), 0)::float8
           FROM cairn.runs
          WHERE status IN ('pending', 'sleeping', 'parked', 'retrying')
          GROUP BY queue",
    )
    .fetch_all(pool)
    .await?;
    for (queue, depth, oldest) in queues {
        gauge!(QUEUE_DEPTH, "queue" => queue.clone()).set(depth as f64);
        gauge!(QUEUE_OLDEST_SECONDS, "queue" => queue).set(oldest.max(0.0));
    }

    for budget in crate::pages::budgets::read(pool).await? {
        let credential = budget.key.clone();
        if budget.limited() {
            gauge!(BUDGET_TOKENS, "credential" => credential.clone()).set(budget.tokens);
            gauge!(BUDGET_RATE, "credential" => credential.clone()).set(budget.rate);
        }
        gauge!(BUDGET_IN_FLIGHT, "credential" => credential.clone())
            .set(f64::from(budget.in_flight));
        counter!(BUDGET_THROTTLED, "credential" => credential.clone())
            .absolute(budget.throttled.max(0) as u64);
        if let Some(ratio) = budget.quota_ratio() {
            gauge!(BUDGET_QUOTA_USED_RATIO, "credential" => credential).set(ratio);
        }
    }

    let (dead, oldest): (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(finished_at)), 0)::float8
           FROM cairn.runs WHERE status = 'failed' AND dead_letter_dismissed_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    gauge!(DEAD_LETTERS).set(dead as f64);
    gauge!(DEAD_LETTER_OLDEST_SECONDS).set(oldest.max(0.0));
    Ok(())
}
