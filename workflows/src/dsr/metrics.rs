//! Compliance metrics released with differential privacy: how many requests of each
//! kind, regulation and outcome, the share answered on time, and the median days to
//! close, each with discrete Laplace noise, so that no release reveals whether any one
//! person's request is among them.
//!
//! # The mechanism
//!
//! Noise is drawn from the discrete Laplace distribution, `P(X = x) ∝ exp(-|x| / b)`,
//! with the exact sampler of Canonne, Kamath and Steinke (2020): integers and rational
//! arithmetic only, so none of the floating-point attacks on textbook Laplace noise
//! apply, and a cryptographically secure generator (`rand`'s thread generator). A
//! release asks three counting queries, each of sensitivity 1 (adding or removing one
//! request changes one cell of each by one): the table of requests by kind, regulation
//! and outcome (every cell released, empty or not), the count closed on time, and the
//! histogram of days to close (whose total is the count closed). The release's epsilon
//! is split evenly over the three (sequential composition), so each gets noise of scale
//! `b = 3 / epsilon`. Everything after the noise (clamping at 0, the share, the median)
//! is post-processing and costs nothing more.
//!
//! # The budget
//!
//! Each calendar month (UTC) has a privacy budget (2.0 unless the month's first release
//! set another); a release spends its epsilon, and one that would take the month past
//! its budget is refused. Amounts are kept in millionths, so the arithmetic is exact.
//! Raw counts never leave the database but as noisy values.

use chrono::{Datelike, Utc};
use rand::Rng;
use serde::Serialize;
use sqlx::PgPool;

/// Epsilon is counted in millionths.
const MICRO: u64 = 1_000_000;
/// The counting queries one release makes.
const QUERIES: u64 = 3;
/// Days to close are counted in buckets of one day, the last holding everything later.
const DAY_BUCKETS: usize = 91;
/// A month's budget unless its first release says otherwise.
pub const DEFAULT_BUDGET: f64 = 2.0;

/// Why a release cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Bad input (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// The month's budget cannot pay for this release.
    #[error(
        "the privacy budget of {period} cannot pay for this release: {spent} of {total} is \
         spent and epsilon {asked} would take it past the total (releases are refused until \
         the next period)"
    )]
    Spent {
        /// The period.
        period: String,
        /// Epsilon spent so far.
        spent: f64,
        /// The period's budget.
        total: f64,
        /// Epsilon asked for.
        asked: f64,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Epsilon as a count of millionths, from its decimal text or value.
pub fn micro(epsilon: f64) -> Result<u64, MetricsError> {
    if !(epsilon.is_finite() && epsilon > 0.0 && epsilon <= 10.0) {
        return Err(MetricsError::Invalid(format!(
            "epsilon {epsilon} is not usable: give a value above 0 and at most 10 (smaller is \
             more private and noisier)"
        )));
    }
    let micro = (epsilon * MICRO as f64).round() as u64;
    if micro < 1_000 {
        return Err(MetricsError::Invalid(format!(
            "epsilon {epsilon} is below 0.001, where the noise drowns every count"
        )));
    }
    Ok(micro)
}

fn bernoulli(num: u128, den: u128, rng: &mut impl Rng) -> bool {
    rng.random_range(0..den) < num
}

/// Bernoulli(exp(-num/den)) for num/den in [0, 1] (CKS20, Algorithm 1).
fn bernoulli_exp_unit(num: u128, den: u128, rng: &mut impl Rng) -> bool {
    let mut k: u128 = 1;
    while bernoulli(num, den * k, rng) {
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(exp(-num/den)) for any num/den ≥ 0.
fn bernoulli_exp(num: u128, den: u128, rng: &mut impl Rng) -> bool {
    for _ in 0..num / den {
        if !bernoulli_exp_unit(1, 1, rng) {
            return false;
        }
    }
    bernoulli_exp_unit(num % den, den, rng)
}

/// A draw of the discrete Laplace distribution of scale `t / s` (CKS20, Algorithm 2).
pub fn discrete_laplace(s: u64, t: u64, rng: &mut impl Rng) -> i64 {
    let (s, t) = (u128::from(s.max(1)), u128::from(t.max(1)));
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp(u, t, rng) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(1, 1, rng) {
            v += 1;
        }
        let y = (u + t * v) / s;
        let negative = bernoulli(1, 2, rng);
        if negative && y == 0 {
            continue;
        }
        let y = i64::try_from(y).unwrap_or(i64::MAX);
        return if negative { -y } else { y };
    }
}

/// The noise of one query of a release at `epsilon_micro`: scale `QUERIES / epsilon`,
/// as the sampler's (s, t).
pub fn noise_params(epsilon_micro: u64) -> (u64, u64) {
    let (s, t) = (epsilon_micro, QUERIES * MICRO);
    let divisor = gcd(s, t);
    (s / divisor, t / divisor)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// The smallest k with P(|X| > k) ≤ 5% for discrete Laplace noise of scale `scale`:
/// P(|X| > k) = 2 e^{-(k+1)/b} / (1 + e^{-1/b}).
pub fn error_bound_95(scale: f64) -> u64 {
    let q = (-1.0 / scale).exp();
    let mut k = 0u64;
    while 2.0 * (-((k + 1) as f64) / scale).exp() / (1.0 + q) > 0.05 {
        k += 1;
    }
    k
}

/// One cell of the released table.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// access or erasure.
    pub kind: String,
    /// gdpr, ccpa or days (a custom window).
    pub regulation: String,
    /// fulfilled, partial or open.
    pub outcome: String,
    /// The noisy count, clamped at 0.
    pub count: i64,
}

/// A release.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// The period whose budget paid for it (`2026-12`).
    pub period: String,
    /// The epsilon it spent.
    pub epsilon: f64,
    /// The period's budget: total, spent (this release included), left.
    pub budget_total: f64,
    /// Spent so far.
    pub budget_spent: f64,
    /// Left.
    pub budget_left: f64,
    /// What the noise is.
    pub mechanism: String,
    /// The noise's scale per query.
    pub noise_scale: f64,
    /// A count's error is at most this with 95% probability.
    pub error_95: u64,
    /// Requests by kind, regulation and outcome: every cell, empty or not.
    pub requests: Vec<Cell>,
    /// Requests closed (noisy, from the histogram of days to close).
    pub closed: i64,
    /// Requests closed on time (noisy).
    pub closed_on_time: i64,
    /// closed_on_time / closed, when closed is above 0.
    pub on_time_share: Option<f64>,
    /// The median days to close, from the noisy histogram.
    pub median_days_to_close: Option<u32>,
}

const KINDS: [&str; 2] = ["access", "erasure"];
const REGULATIONS: [&str; 3] = ["gdpr", "ccpa", "days"];
const OUTCOMES: [&str; 3] = ["fulfilled", "partial", "open"];

/// The current period's name.
pub fn current_period() -> String {
    let now = Utc::now();
    format!("{:04}-{:02}", now.year(), now.month())
}

/// Spends `epsilon` of `period`'s budget (created at `budget` on first use) and releases
/// the metrics with noise at that epsilon; refused, spending nothing, when the budget
/// cannot pay.
pub async fn release(
    pool: &PgPool,
    period: &str,
    epsilon: f64,
    budget: f64,
) -> Result<Release, MetricsError> {
    let asked = micro(epsilon)?;
    let total = micro(budget).map_err(|_| {
        MetricsError::Invalid(format!(
            "a budget of {budget} is not usable: above 0 and at most 10"
        ))
    })?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO cairn.dsr_privacy_budget (period, budget_micro) VALUES ($1, $2)
         ON CONFLICT (period) DO NOTHING",
    )
    .bind(period)
    .bind(i64::try_from(total).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    let (total, spent): (i64, i64) = sqlx::query_as(
        "SELECT budget_micro, spent_micro FROM cairn.dsr_privacy_budget WHERE period = $1 FOR UPDATE",
    )
    .bind(period)
    .fetch_one(&mut *tx)
    .await?;
    let (total, spent) = (total.max(0) as u64, spent.max(0) as u64);
    if spent + asked > total {
        return Err(MetricsError::Spent {
            period: period.to_owned(),
            spent: spent as f64 / MICRO as f64,
            total: total as f64 / MICRO as f64,
            asked: epsilon,
        });
    }
    sqlx::query(
        "UPDATE cairn.dsr_privacy_budget SET spent_micro = spent_micro + $2, releases = releases + 1
          WHERE period = $1",
    )
    .bind(period)
    .bind(i64::try_from(asked).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    let cells: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT kind,
                CASE WHEN regulation IN ('gdpr', 'ccpa') THEN regulation ELSE 'days' END,
                CASE WHEN closed_at IS NULL THEN (CASE WHEN outcome = 'partial' THEN 'partial' ELSE 'open' END)
                     ELSE coalesce(outcome, 'fulfilled') END,
                count(*)
           FROM cairn.dsr_requests GROUP BY 1, 2, 3",
    )
    .fetch_all(&mut *tx)
    .await?;
    let on_time: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.dsr_requests WHERE closed_at IS NOT NULL AND closed_at <= deadline",
    )
    .fetch_one(&mut *tx)
    .await?;
    let days: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT LEAST(floor(EXTRACT(EPOCH FROM closed_at - received_at) / 86400)::int, $1), count(*)
           FROM cairn.dsr_requests WHERE closed_at IS NOT NULL GROUP BY 1",
    )
    .bind(i32::try_from(DAY_BUCKETS - 1).unwrap_or(90))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let (s, t) = noise_params(asked);
    let mut rng = rand::rng();
    let mut noisy = |count: i64| count + discrete_laplace(s, t, &mut rng);
    let mut requests = Vec::new();
    for kind in KINDS {
        for regulation in REGULATIONS {
            for outcome in OUTCOMES {
                let raw = cells
                    .iter()
                    .find(|(k, r, o, _)| k == kind && r == regulation && o == outcome)
                    .map_or(0, |(_, _, _, n)| *n);
                requests.push(Cell {
                    kind: kind.to_owned(),
                    regulation: regulation.to_owned(),
                    outcome: outcome.to_owned(),
                    count: noisy(raw).max(0),
                });
            }
        }
    }
    let closed_on_time = noisy(on_time).max(0);
    let histogram: Vec<i64> = (0..DAY_BUCKETS)
        .map(|bucket| {
            let raw = days
                .iter()
                .find(|(day, _)| usize::try_from(*day).ok() == Some(bucket))
                .map_or(0, |(_, n)| *n);
            noisy(raw).max(0)
        })
        .collect();
    let closed: i64 = histogram.iter().sum();
    let median_days_to_close = (closed > 0)
        .then(|| {
            let mut seen = 0;
            histogram.iter().position(|n| {
                seen += n;
                2 * seen >= closed
            })
        })
        .flatten()
        .and_then(|day| u32::try_from(day).ok());
    let scale = t as f64 / s as f64;
    let spent = spent + asked;
    Ok(Release {
        period: period.to_owned(),
        epsilon: asked as f64 / MICRO as f64,
        budget_total: total as f64 / MICRO as f64,
        budget_spent: spent as f64 / MICRO as f64,
        budget_left: (total - spent) as f64 / MICRO as f64,
        mechanism: format!(
            "discrete Laplace (Canonne, Kamath, Steinke 2020), epsilon split over {QUERIES} \
             counting queries of sensitivity 1"
        ),
        noise_scale: scale,
        error_95: error_bound_95(scale),
        requests,
        closed,
        closed_on_time: closed_on_time.min(closed),
        on_time_share: (closed > 0).then(|| closed_on_time.min(closed) as f64 / closed as f64),
        median_days_to_close,
    })
}

#[cfg(test)]
mod tests {
    use super::{discrete_laplace, error_bound_95, micro, noise_params};

    /// The sampler against the distribution it claims, over many draws: the mean, the
    /// variance `2q / (1 - q)^2`, the mass at 0 `(1 - q) / (1 + q)`, and the 95% error
    /// bound holding for at least 95% of draws (q = e^{-1/b}).
    #[test]
    fn discrete_laplace_draws_match_the_distribution() {
        let mut rng = rand::rng();
        for epsilon in [0.5, 1.5] {
            let (s, t) = noise_params(micro(epsilon).unwrap());
            let scale = t as f64 / s as f64;
            assert!((scale - 3.0 / epsilon).abs() < 1e-9);
            let draws: Vec<i64> = (0..40_000)
                .map(|_| discrete_laplace(s, t, &mut rng))
                .collect();
            let n = draws.len() as f64;
            let mean = draws.iter().sum::<i64>() as f64 / n;
            let variance = draws
                .iter()
                .map(|x| (*x as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let q = (-1.0 / scale).exp();
            let expected_variance = 2.0 * q / (1.0 - q).powi(2);
            let standard_error = (expected_variance / n).sqrt();
            assert!(
                mean.abs() < 5.0 * standard_error,
                "epsilon {epsilon}: mean {mean}"
            );
            assert!(
                (variance / expected_variance - 1.0).abs() < 0.08,
                "epsilon {epsilon}: variance {variance}, expected {expected_variance}"
            );
            let zeros = draws.iter().filter(|x| **x == 0).count() as f64 / n;
            let expected_zeros = (1.0 - q) / (1.0 + q);
            assert!(
                (zeros - expected_zeros).abs() < 5.0 * (expected_zeros / n).sqrt(),
                "epsilon {epsilon}: P(0) {zeros}, expected {expected_zeros}"
            );
            let bound = error_bound_95(scale);
            let beyond = draws.iter().filter(|x| x.unsigned_abs() > bound).count() as f64 / n;
            assert!(
                beyond <= 0.05 + 0.006,
                "epsilon {epsilon}: {beyond} beyond {bound}"
            );
            assert!(
                beyond >= 0.02,
                "epsilon {epsilon}: the bound is tight: {beyond}"
            );
        }
    }

    #[test]
    fn epsilon_outside_its_range_is_refused() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 11.0, 0.0001] {
            assert!(micro(bad).is_err(), "{bad}");
        }
        assert_eq!(micro(0.5).unwrap(), 500_000);
    }
}
