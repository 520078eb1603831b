//! The token bucket and the daily quota in front of the API.

use std::time::Duration;

use chrono::NaiveDate;

/// A token bucket refilled continuously at `rate` tokens per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

/// The bucket's state after a request, for `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BucketState {
    /// Whole tokens left.
    pub(crate) remaining: u64,
    /// Seconds until the bucket is full again, rounded up.
    pub(crate) reset_secs: u64,
}

/// Why a request was refused, and when a token will be there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) retry_after: Duration,
    pub(crate) state: BucketState,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub(crate) fn new(rate: f64, burst: u32, now: Duration) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    fn state(&self) -> BucketState {
        BucketState {
            remaining: self.tokens.floor() as u64,
            reset_secs: ((self.burst - self.tokens) / self.rate).ceil() as u64,
        }
    }

    /// The state at `now`, taking nothing.
    pub(crate) fn peek(&mut self, now: Duration) -> BucketState {
        self.refill(now);
        self.state()
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Duration) -> Result<BucketState, Refusal> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.state())
        } else {
            Err(Refusal {
                retry_after: Duration::from_secs_f64((1.0 - self.tokens) / self.rate),
                state: self.state(),
            })
        }
    }
}

/// Requests allowed per UTC day.
#[derive(Debug)]
pub(crate) struct DailyQuota {
    total: u64,
    used: u64,
    day: NaiveDate,
}

impl DailyQuota {
    pub(crate) fn new(total: u64, today: NaiveDate) -> Self {
        Self {
            total,
            used: 0,
            day: today,
        }
    }

    /// Counts a request; `Err` once the day's quota is spent. Returns
    /// `(used, total)` either way for `Sforce-Limit-Info`.
    pub(crate) fn try_use(&mut self, today: NaiveDate) -> Result<(u64, u64), (u64, u64)> {
        if today != self.day {
            self.day = today;
            self.used = 0;
        }
        if self.used >= self.total {
            Err((self.used, self.total))
        } else {
            self.used += 1;
            Ok((self.used, self.total))
        }
    }

    pub(crate) fn used(&self, today: NaiveDate) -> u64 {
        if today == self.day { self.used } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::NaiveDate;

    use super::{DailyQuota, TokenBucket};

    #[test]
    fn bucket_admits_burst_then_rate() {
        let mut bucket = TokenBucket::new(2.0, 3, Duration::ZERO);
        for remaining in [2, 1, 0] {
            assert_eq!(
                bucket.try_take(Duration::ZERO).unwrap().remaining,
                remaining
            );
        }
        let refusal = bucket.try_take(Duration::ZERO).unwrap_err();
        assert_eq!(refusal.retry_after, Duration::from_millis(500));
        let after = Duration::from_millis(500);
        assert!(bucket.try_take(after).is_ok());
        assert!(bucket.try_take(after).is_err());
    }

    #[test]
    fn quota_resets_each_day() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut quota = DailyQuota::new(2, day);
        assert_eq!(quota.try_use(day), Ok((1, 2)));
        assert_eq!(quota.try_use(day), Ok((2, 2)));
        assert_eq!(quota.try_use(day), Err((2, 2)));
        let next = day.succ_opt().unwrap();
        assert_eq!(quota.try_use(next), Ok((1, 2)));
    }
}
