//! The sandbox's notion of time, injectable so tests control it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Where the sandbox reads the time: token expiry, the rate limiter's refill,
/// the daily quota's day and the `updated_at` stamps of mutations.
///
/// Tests use a [`ManualClock`] and move it with [`ManualClock::advance`], so
/// "tokens refill after one second" is asserted without sleeping. Artificial
/// delays (latency, slow-response faults) always use real time.
#[derive(Clone, Debug)]
pub struct Clock(ClockKind);

#[derive(Clone, Debug)]
enum ClockKind {
    System { origin: Instant },
    Manual(ManualClock),
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Self(ClockKind::System {
            origin: Instant::now(),
        })
    }

    /// The current wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            ClockKind::System { .. } => Utc::now(),
            ClockKind::Manual(manual) => manual.now(),
        }
    }

    /// Monotonic time since the clock was made; the rate limiter refills from it
    /// so a wall-clock jump cannot hand out a burst.
    pub(crate) fn elapsed(&self) -> Duration {
        match &self.0 {
            ClockKind::System { origin } => origin.elapsed(),
            ClockKind::Manual(manual) => manual.elapsed(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Self(ClockKind::Manual(manual))
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    start: DateTime<Utc>,
    elapsed: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            start,
            elapsed: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// The time it shows.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.elapsed();
        self.start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
