//! How long a vendor may make a run wait: its `Retry-After` and `X-RateLimit-Reset` are
//! obeyed up to a cap per source, and 429s that name no wait back off, growing and
//! jittered, instead of retrying at the worker's pace.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Days, Duration, Utc};

/// The longest a 429's wait parks a run, unless the source says otherwise: an hour.
pub const DEFAULT_MAX_RATE_LIMIT_WAIT_SECS: u64 = 3600;

/// The longest a spent daily quota parks a run, unless the source says otherwise: a day,
/// long enough for any daily allocation to reset.
pub const DEFAULT_MAX_QUOTA_WAIT_SECS: u64 = 86_400;

/// The first backoff after a 429 that names no wait.
const BACKOFF_BASE_SECS: f64 = 1.0;
/// The longest backoff after 429s that name no wait.
const BACKOFF_CAP_SECS: f64 = 300.0;

/// The caps on vendor-imposed waits of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    /// `max_rate_limit_wait`: the most a 429 (its `Retry-After`, or the window reset it
    /// announces) parks a run; then the request is tried again.
    pub max_rate_limit_wait_secs: u64,
    /// `max_quota_wait`: the most a spent daily quota parks a run.
    pub max_quota_wait_secs: u64,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            max_rate_limit_wait_secs: DEFAULT_MAX_RATE_LIMIT_WAIT_SECS,
            max_quota_wait_secs: DEFAULT_MAX_QUOTA_WAIT_SECS,
        }
    }
}

fn capped(at: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    let latest = Utc::now() + Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
    at.min(latest)
}

/// Consecutive 429s without a usable wait, per origin and credential, in this process.
static STREAKS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);

impl Waits {
    /// `at`, or the rate-limit cap from now if that is sooner.
    pub fn cap_rate_limit(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        capped(at, self.max_rate_limit_wait_secs)
    }

    /// `at`, or the quota cap from now if that is sooner.
    pub fn cap_quota(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        capped(at, self.max_quota_wait_secs)
    }

    /// When to try again after another 429 that named no wait, for the caller `key`:
    /// doubling from a second up to five minutes (and the rate-limit cap), each wait
    /// drawn between half and all of that.
    pub fn backoff(&self, key: &str) -> DateTime<Utc> {
        let streak = {
            let mut streaks = STREAKS.lock().unwrap_or_else(|e| e.into_inner());
            let streak = streaks.entry(key.to_owned()).or_default();
            *streak = streak.saturating_add(1);
            *streak
        };
        let secs = backoff_secs(streak, fastrand::f64()).min(self.max_rate_limit_wait_secs as f64);
        Utc::now() + Duration::milliseconds((secs * 1000.0) as i64)
    }

    /// A request of `key` succeeded: its next 429 starts the backoff over.
    pub fn succeeded(&self, key: &str) {
        let mut streaks = STREAKS.lock().unwrap_or_else(|e| e.into_inner());
        if streaks.get(key).is_some_and(|s| *s > 0) {
            streaks.remove(key);
        }
    }
}

/// The backoff after the `streak`-th 429 in a row, for a uniform draw `jitter` in [0, 1).
fn backoff_secs(streak: u32, jitter: f64) -> f64 {
    let ceiling = (BACKOFF_BASE_SECS * 2f64.powi(streak.saturating_sub(1).min(20) as i32))
        .min(BACKOFF_CAP_SECS);
    ceiling * (0.5 + jitter / 2.0)
}

/// The next midnight UTC, when most daily quotas reset.
pub fn next_utc_midnight() -> DateTime<Utc> {
    let tomorrow = Utc::now().date_naive() + Days::new(1);
    tomorrow
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let lows: Vec<f64> = (1..=12).map(|n| backoff_secs(n, 0.0)).collect();
        let highs: Vec<f64> = (1..=12).map(|n| backoff_secs(n, 0.999)).collect();
        assert_eq!(lows[0], 0.5);
        assert!(lows.windows(2).all(|w| w[1] >= w[0]), "{lows:?}");
        assert!(highs.iter().all(|h| *h <= BACKOFF_CAP_SECS), "{highs:?}");
        assert!(highs[11] > 290.0 && lows[11] == 150.0);
        assert!(highs[0] > lows[0], "jitter spreads the waits");
    }

    #[test]
    fn waits_are_capped_and_streaks_reset() {
        let waits = Waits {
            max_rate_limit_wait_secs: 60,
            max_quota_wait_secs: 600,
        };
        let far = Utc::now() + Duration::days(3);
        assert!(waits.cap_rate_limit(far) <= Utc::now() + Duration::seconds(60));
        assert!(waits.cap_quota(far) <= Utc::now() + Duration::seconds(600));
        let near = Utc::now() + Duration::seconds(5);
        assert_eq!(waits.cap_rate_limit(near), near);
        let key = "test-origin#streaks";
        let first = waits.backoff(key) - Utc::now();
        for _ in 0..8 {
            waits.backoff(key);
        }
        let later = waits.backoff(key) - Utc::now();
        assert!(first <= Duration::seconds(1) && later >= Duration::seconds(30));
        waits.succeeded(key);
        assert!(waits.backoff(key) - Utc::now() <= Duration::seconds(1));
    }
}
