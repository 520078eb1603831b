//! Retry policies: capped exponential backoff with full jitter.

use std::time::Duration;

/// How often and how patiently a step is retried after a transient error.
///
/// The delay before attempt `n + 1` is drawn uniformly from
/// `[0, min(max_delay, initial_delay * multiplier^(n - 1))]` ("full jitter"), which
/// spreads retries of many runs instead of having them stampede together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. `1` means never retry.
    pub max_attempts: u32,
    /// The backoff ceiling after the first failure.
    pub initial_delay: Duration,
    /// The cap on any single backoff.
    pub max_delay: Duration,
    /// Growth of the ceiling per failed attempt.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// Five attempts, backing off from 200 ms up to 30 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The default backoff with `max_attempts` attempts in all.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// The same policy with another backoff range.
    #[must_use]
    pub fn backoff(mut self, initial_delay: Duration, max_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self.max_delay = max_delay.max(initial_delay);
        self
    }

    /// The upper bound of the delay after `failed_attempts` failures (at least one).
    pub fn ceiling(&self, failed_attempts: u32) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(64) as i32;
        let ceiling = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        Duration::from_secs_f64(ceiling.min(self.max_delay.as_secs_f64()))
    }

    /// A jittered delay after `failed_attempts` failures.
    pub fn delay(&self, failed_attempts: u32) -> Duration {
        self.ceiling(failed_attempts).mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_exponentially_then_caps() {
        let policy =
            RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.ceiling(4), Duration::from_millis(800));
        assert_eq!(policy.ceiling(5), Duration::from_secs(1));
        assert_eq!(policy.ceiling(500), Duration::from_secs(1));
    }

    #[test]
    fn delay_stays_within_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            assert!(policy.delay(attempt) <= policy.ceiling(attempt));
        }
    }
}
