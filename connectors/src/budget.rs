//! The rate budget: one token bucket per vendor credential, kept in PostgreSQL so every
//! worker and run using the credential shares it.
//!
//! Each request takes a token in one atomic statement. The bucket may go into debt: a
//! caller that finds no token is told how long to wait for the one it reserved, so
//! concurrent callers queue fairly without polling. A 429 pauses the whole budget until
//! its `Retry-After` (or a jittered exponential backoff when absent) and lowers the rate;
//! sustained success raises it back to the configured ceiling (additive increase,
//! multiplicative decrease).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::telemetry::Quota;

/// The `[rate_limit]` table of a source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The vendor's limit in requests per second.
    pub requests_per_second: f64,
    /// Requests that may go out back to back after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// The budget's name. By default it is derived from the base URL's host and the
    /// credential (hashed), so sources sharing a credential share a budget.
    #[serde(default)]
    pub key: Option<String>,
    /// Waits for the budget up to this long happen inside the step; a longer wait
    /// (a long `Retry-After`) parks the run instead.
    #[serde(default = "default_max_wait")]
    pub max_wait_secs: f64,
}

fn default_burst() -> f64 {
    1.0
}

fn default_max_wait() -> f64 {
    10.0
}

/// The budget paces at this share of the configured limit: requests leave on time by
/// our clock but reach the vendor with some jitter, and a vendor with a small burst
/// answers a request that arrives a hair early with a 429 whose `Retry-After` (rounded
/// up to whole seconds) costs far more than the headroom.
const HEADROOM: f64 = 0.957;
/// The lowest the adaptive rate goes, as a share of the ceiling.
const FLOOR: f64 = 0.1;
/// The rate is multiplied by this on a 429 (once per pause).
const DECREASE: f64 = 0.9;
/// The rate grows by this share of the ceiling after each stretch of success.
const INCREASE: f64 = 0.05;
/// A stretch of success is this many seconds' worth of requests at the current rate.
const STRETCH_SECS: f64 = 2.0;
/// After each urgent request, other callers wait this long for the next one.
const PRIORITY_HOLD_SECS: f64 = 2.0;
/// A budget unused this long has nothing in flight: whoever held tokens has answered,
/// or ended without saying so.
const QUIET_SECS: f64 = 30.0;

/// A shared token bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RateBudget {
    pool: PgPool,
    key: String,
    max_wait: Duration,
}

/// The answer to [`RateBudget::acquire`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grant {
    /// Send at this instant (now, or a moment from now).
    At(DateTime<Utc>),
    /// The budget is paused or queued past the caller's patience; the token was given
    /// back. Try again at this instant.
    Refused(DateTime<Utc>),
    /// Urgent traffic has the budget: no token was taken. Ask again at this instant.
    Yield(DateTime<Utc>),
}

/// What a caller saw since its last token request, reported with the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Since {
    /// Successful responses (they drive the rate back up).
    pub successes: u32,
    /// Answers of any kind, and requests that got none: no longer in flight.
    pub answered: u32,
    /// The vendor's daily quota as its latest response reported it.
    pub quota: Option<Quota>,
}

/// A budget snapshot, for reports and benchmarks.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BudgetState {
    /// The configured ceiling.
    pub ceiling: f64,
    /// The current rate.
    pub rate: f64,
    /// Tokens granted in all.
    pub granted: i64,
    /// 429s reported in all.
    pub throttled: i64,
    /// Paused until then, if in the future.
    pub paused_until: DateTime<Utc>,
}

impl RateBudget {
    /// Opens the budget `key`, creating it or updating its configured ceiling and burst.
    pub async fn open(
        pool: PgPool,
        key: &str,
        config: &RateLimitConfig,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query(
            "INSERT INTO cairn.rate_budgets (key, ceiling, rate, burst, tokens)
             VALUES ($1, $2, $2, $3, $3)
             ON CONFLICT (key) DO UPDATE
                SET ceiling = EXCLUDED.ceiling, burst = EXCLUDED.burst,
                    rate = least(cairn.rate_budgets.rate, EXCLUDED.ceiling)
              WHERE cairn.rate_budgets.ceiling <> EXCLUDED.ceiling
                 OR cairn.rate_budgets.burst <> EXCLUDED.burst",
        )
        .bind(key)
        .bind(config.requests_per_second * HEADROOM)
        .bind(config.burst.max(1.0))
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            key: key.to_owned(),
            max_wait: Duration::from_secs_f64(config.max_wait_secs.max(0.0)),
        })
    }

    /// How long a caller waits for the budget inside a request before the wait is
    /// handed to the engine (which parks the run).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The budget's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes a token, reporting `successes` responses since the last call (they drive
    /// the rate back up). Returns how long to wait before sending.
    ///
    /// An `urgent` caller (a privacy request's lookup) goes ahead of the others: each of
    /// its grants holds the budget for it a moment longer, and meanwhile the others are
    /// told to [`Grant::Yield`] without taking a token. Their reservations already made
    /// (one per caller at most, since each waits for its own) are the only requests
    /// that go before it.
    pub async fn acquire(&self, successes: u32, urgent: bool) -> Result<Grant, sqlx::Error> {
        let since = Since {
            successes,
            ..Since::default()
        };
        self.acquire_reporting(&since, urgent).await
    }

    /// [`RateBudget::acquire`], also reporting what this caller saw since its last
    /// request: answers received (so the budget knows how many requests are still out)
    /// and the vendor's daily quota, for people watching the credential.
    pub async fn acquire_reporting(
        &self,
        since: &Since,
        urgent: bool,
    ) -> Result<Grant, sqlx::Error> {
        // The answer is an instant, not a delay: how long the query itself took must not
        // shift the request, or consecutive requests would bunch up and trip the vendor.
        let (took, send_at, priority_until): (bool, DateTime<Utc>, DateTime<Utc>) =
            sqlx::query_as(
                "WITH t AS (SELECT clock_timestamp() AS now),
                 o AS (SELECT b.key, $5 OR b.priority_until <= t.now AS takes
                         FROM cairn.rate_budgets b, t WHERE b.key = $1)
                 UPDATE cairn.rate_budgets b
                    SET tokens = CASE WHEN o.takes
                                 THEN least(b.burst, b.tokens + b.rate *
                                      greatest(0, extract(epoch FROM t.now - b.refilled_at)::float8)) - 1
                                 ELSE b.tokens END,
                        refilled_at = CASE WHEN o.takes THEN greatest(b.refilled_at, t.now)
                                      ELSE b.refilled_at END,
                        granted = b.granted + CASE WHEN o.takes THEN 1 ELSE 0 END,
                        priority_until = CASE WHEN $5
                                         THEN greatest(b.priority_until, t.now + make_interval(secs => $6))
                                         ELSE b.priority_until END,
                        throttle_streak = CASE WHEN $2 > 0 THEN 0 ELSE b.throttle_streak END,
                        rate = CASE WHEN b.successes + $2 >= b.rate * $3
                                    THEN least(b.ceiling, b.rate + b.ceiling * $4) ELSE b.rate END,
                        successes = CASE WHEN b.successes + $2 >= b.rate * $3
                                         THEN 0 ELSE b.successes + $2 END,
                        in_flight = CASE WHEN t.now - b.updated_at > make_interval(secs => $9)
                                    THEN 0
                                    ELSE greatest(0, b.in_flight - $7) END
                                    + CASE WHEN o.takes THEN 1 ELSE 0 END,
                        quota_used = coalesce(($8::int8[])[1], b.quota_used),
                        quota_total = coalesce(($8::int8[])[2], b.quota_total),
                        quota_at = CASE WHEN $8::int8[] IS NULL THEN b.quota_at ELSE t.now END,
                        updated_at = t.now
                   FROM t, o
                  WHERE b.key = o.key
                 RETURNING o.takes,
                           b.refilled_at + make_interval(secs => greatest(0, -b.tokens) / b.rate),
                           greatest(b.priority_until, t.now)",
            )
            .bind(&self.key)
            .bind(i64::from(since.successes))
            .bind(STRETCH_SECS)
            .bind(INCREASE)
            .bind(urgent)
            .bind(PRIORITY_HOLD_SECS)
            .bind(i64::from(since.answered))
            .bind(since.quota.map(|q| {
                [q.used, q.total]
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
                    .to_vec()
            }))
            .bind(QUIET_SECS)
            .fetch_one(&self.pool)
            .await?;
        if !took {
            return Ok(Grant::Yield(priority_until));
        }
        let wait = (send_at - Utc::now()).to_std().unwrap_or_default();
        if wait <= self.max_wait {
            return Ok(Grant::At(send_at));
        }
        self.give_back().await?;
        Ok(Grant::Refused(send_at))
    }

    async fn give_back(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE cairn.rate_budgets SET tokens = least(burst, tokens + 1), granted = granted - 1
              WHERE key = $1",
        )
        .bind(&self.key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reports a 429: pauses the budget until `retry_at` (or a jittered exponential
    /// backoff when the vendor gave none) and lowers the rate, once per pause however
    /// many in-flight requests report it. Returns when the pause ends.
    pub async fn throttle(
        &self,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<DateTime<Utc>, sqlx::Error> {
        sqlx::query_scalar(
            "WITH t AS (SELECT clock_timestamp() AS now),
             next AS (
                 SELECT b.key,
                        CASE WHEN t.now < b.paused_until AND $2 IS NULL THEN b.paused_until
                             ELSE greatest(b.paused_until, coalesce($2,
                                 t.now + make_interval(secs =>
                                     least(60, 2 ^ least(b.throttle_streak, 6)) * (0.5 + random() / 2))))
                        END AS until,
                        t.now < b.paused_until AS already
                   FROM cairn.rate_budgets b, t WHERE b.key = $1 FOR UPDATE OF b
             )
             UPDATE cairn.rate_budgets b
                SET paused_until = next.until,
                    refilled_at = greatest(b.refilled_at, next.until),
                    tokens = least(b.tokens, 1),
                    rate = CASE WHEN next.already THEN b.rate
                                ELSE greatest(b.ceiling * $3, b.rate * $4) END,
                    throttle_streak = b.throttle_streak + CASE WHEN next.already THEN 0 ELSE 1 END,
                    throttled = b.throttled + 1,
                    successes = 0,
                    updated_at = clock_timestamp()
               FROM next WHERE b.key = next.key
             RETURNING b.paused_until",
        )
        .bind(&self.key)
        .bind(retry_at)
        .bind(FLOOR)
        .bind(DECREASE)
        .fetch_one(&self.pool)
        .await
    }

    /// Pauses without lowering the rate: the vendor said its window is used up
    /// (`X-RateLimit-Remaining: 0`) and when it resets, so no 429 need be provoked.
    pub async fn hold_until(&self, until: DateTime<Utc>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE cairn.rate_budgets
                SET paused_until = greatest(paused_until, $2),
                    refilled_at = greatest(refilled_at, $2), tokens = least(tokens, 1)
              WHERE key = $1",
        )
        .bind(&self.key)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The budget as it stands.
    pub async fn state(&self) -> Result<BudgetState, sqlx::Error> {
        sqlx::query_as(
            // A budget never paused holds -infinity, which has no chrono form.
            "SELECT ceiling, rate, granted, throttled,
                    greatest(paused_until, 'epoch'::timestamptz) AS paused_until
               FROM cairn.rate_budgets WHERE key = $1",
        )
        .bind(&self.key)
        .fetch_one(&self.pool)
        .await
    }
}

/// Counts a 429 from a credential that has no configured rate limit, so every 429 a
/// vendor answers is on record (the dashboard, `/metrics` and `cairn sync` show them):
/// its row has an infinite ceiling and paces nothing. Giving the source a `[rate_limit]`
/// later turns the same row into a real budget.
pub async fn count_throttle(pool: &PgPool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cairn.rate_budgets (key, ceiling, rate, burst, tokens, throttled)
         VALUES ($1, 'Infinity', 'Infinity', 1, 1, 1)
         ON CONFLICT (key) DO UPDATE
            SET throttled = cairn.rate_budgets.throttled + 1, updated_at = clock_timestamp()",
    )
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}

/// The 429s (and other throttles) recorded across every credential's budget so far:
/// a tool compares it before and after a sync to say how often the vendor pushed back.
pub async fn throttled_total(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let total: Option<i64> =
        sqlx::query_scalar("SELECT sum(throttled)::bigint FROM cairn.rate_budgets")
            .fetch_one(pool)
            .await?;
    Ok(total.unwrap_or(0).max(0) as u64)
}
