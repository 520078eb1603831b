//! The clock durable time is measured by: sleeps, parked waits, event timeouts, run
//! deadlines and [`Context::now`](crate::Context::now).
//!
//! In production it is the system clock. A test gives its worker (and client) a
//! [`Clock::skippable`] one and moves it forward with [`Clock::advance`]: a run asleep
//! for 24 hours or held to a 30-day deadline is tested in milliseconds, through the
//! same code paths (park, claim, wake) as in production. Time also flows as usual
//! between skips. Leases and heartbeats stay on real time: they are about whether a
//! process is alive, not about a workflow's time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The time a worker's runs see: the system's, or in tests a skippable one that
/// [`Clock::advance`] moves ahead (durable waits and deadlines follow it; leases do
/// not). Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// How far a skippable clock is ahead of the system's, in milliseconds; `None` for
    /// the system clock.
    skipped: Option<Arc<watch::Sender<i64>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that starts at the system's time and that [`Clock::advance`] moves ahead.
    pub fn skippable() -> Self {
        Self {
            skipped: Some(Arc::new(watch::Sender::new(0))),
        }
    }

    /// The current time by this clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.ahead_ms())
    }

    /// How far this clock is ahead of the system's, in milliseconds (0 for the system
    /// clock): what the database's `now()` is shifted by when this clock is compared
    /// with stored times.
    pub fn ahead_ms(&self) -> i64 {
        self.skipped.as_ref().map_or(0, |ahead| *ahead.borrow())
    }

    /// Moves a skippable clock `by` ahead: every wait that comes due meanwhile ends, and
    /// workers look for runs that woke.
    ///
    /// # Panics
    ///
    /// On the system clock, which no one may move.
    pub fn advance(&self, by: Duration) {
        let Some(ahead) = &self.skipped else {
            panic!("Clock::advance on the system clock; use Clock::skippable()")
        };
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        ahead.send_modify(|ms| *ms = ms.saturating_add(by));
    }

    /// Moves a skippable clock to `at`, if that is ahead of it.
    ///
    /// # Panics
    ///
    /// On the system clock.
    pub fn advance_to(&self, at: DateTime<Utc>) {
        if let Ok(by) = (at - self.now()).to_std() {
            self.advance(by);
        }
    }

    /// Resolves when this clock reaches `at`: in real time, or sooner when it is
    /// advanced past it.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut moved = self.skipped.as_ref().map(|ahead| ahead.subscribe());
        loop {
            let Ok(left) = (at - self.now()).to_std() else {
                return;
            };
            if left.is_zero() {
                return;
            }
            match &mut moved {
                None => return tokio::time::sleep(left).await,
                Some(moved) => {
                    tokio::select! {
                        () = tokio::time::sleep(left) => {}
                        _ = moved.changed() => {}
                    }
                }
            }
        }
    }

    /// Resolves the next time a skippable clock is advanced (never, for the system
    /// clock): a worker waiting for runs to wake looks again then.
    pub(crate) async fn moved(&self) {
        match &self.skipped {
            Some(ahead) => {
                let mut moved = ahead.subscribe();
                let _ = moved.changed().await;
            }
            None => std::future::pending().await,
        }
    }
}
