//! What a run's branches wait on, so that a run parks only when none of them can go
//! on: a durable sleep, a retry's backoff or a rate limit blocks the branch that met it,
//! not steps running beside it (`futures::join!`, [`Context::join`](crate::Context)).
//!
//! Every step attempt counts as *active* while it runs; every durable wait registers a
//! *timer*. The worker polls the workflow, then asks [`Waits::idle`]: once no attempt is
//! active and some timer is further away than the worker waits in memory, every branch
//! is blocked on a timer, and the run is parked until the earliest one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::task::AtomicWaker;

use crate::Clock;
use crate::model::RunStatus;
use crate::store::OwnedStep;

/// A durable wait: until when, the run's status while parked on it, and the step row
/// the park statement writes (already written once; the park keeps it).
pub(crate) struct Timer {
    pub(crate) at: DateTime<Utc>,
    pub(crate) status: RunStatus,
    pub(crate) step: OwnedStep,
}

/// Why and how a run parks: its earliest timer, and the events its waits had seen
/// sent (see [`Waits::events_seen`]).
pub(crate) struct Park {
    pub(crate) timer: Timer,
    pub(crate) events_seen: Option<i64>,
}

/// The waits of one run.
#[derive(Default)]
pub(crate) struct Waits {
    active: AtomicUsize,
    timers: Mutex<BTreeMap<i32, Timer>>,
    /// How many timers are registered: a run without any (nearly every step of nearly
    /// every run) is never woken to look at them.
    timer_count: AtomicUsize,
    waker: AtomicWaker,
    /// Event waits under way, and how many events had been sent to the run when one
    /// of them last looked (see [`Waits::events_seen`]).
    event_waits: AtomicUsize,
    events_seen: AtomicI64,
}

/// An event wait under way, until dropped.
pub(crate) struct EventWait<'a>(&'a Waits);

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        self.0.event_waits.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a step attempt as active until dropped.
pub(crate) struct Active<'a>(&'a Waits);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1
            && self.0.timer_count.load(Ordering::Acquire) > 0
        {
            self.0.waker.wake();
        }
    }
}

/// A registered timer, removed when dropped (it fired, or the branch was dropped); an
/// attempt that was active meanwhile counts as waiting, not active.
pub(crate) struct Registered<'a> {
    waits: &'a Waits,
    position: i32,
    paused: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        {
            let mut timers = self.waits.timers.lock().unwrap_or_else(|e| e.into_inner());
            timers.remove(&self.position);
            self.waits
                .timer_count
                .store(timers.len(), Ordering::Release);
        }
        if self.paused {
            self.waits.active.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Waits {
    /// Marks an event wait as under way, having seen `sent` events sent to the run.
    pub(crate) fn waiting_for_event(&self, sent: i64) -> EventWait<'_> {
        self.events_seen.store(sent, Ordering::Release);
        self.event_waits.fetch_add(1, Ordering::AcqRel);
        EventWait(self)
    }

    /// When some branch waits for an event: how many events it had seen sent to the run,
    /// so that parking wakes the run at once if more have come.
    pub(crate) fn events_seen(&self) -> Option<i64> {
        (self.event_waits.load(Ordering::Acquire) > 0)
            .then(|| self.events_seen.load(Ordering::Acquire))
    }

    /// Marks a step attempt as running.
    pub(crate) fn active(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self)
    }

    /// Registers `timer` for the step at `position`. `paused`: the caller holds an
    /// [`Active`] guard, which counts as waiting until the timer is dropped.
    pub(crate) fn register(&self, position: i32, timer: Timer, paused: bool) -> Registered<'_> {
        {
            let mut timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
            timers.insert(position, timer);
            self.timer_count.store(timers.len(), Ordering::Release);
        }
        if paused && self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
        self.waker.wake();
        Registered {
            waits: self,
            position,
            paused,
        }
    }

    /// Resolves, with the earliest timer's park, once no step attempt is active and the
    /// earliest timer is more than `inline` away: the run cannot go on before it.
    /// Nearer timers are waited out in memory.
    pub(crate) async fn idle(&self, inline: Duration, clock: &Clock) -> Park {
        futures::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.active.load(Ordering::Acquire) > 0
                || self.timer_count.load(Ordering::Acquire) == 0
            {
                return Poll::Pending;
            }
            let timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
            let Some(earliest) = timers.values().min_by_key(|t| t.at) else {
                return Poll::Pending;
            };
            let inline = chrono::Duration::from_std(inline).unwrap_or_default();
            if earliest.at - clock.now() <= inline {
                return Poll::Pending;
            }
            Poll::Ready(Park {
                timer: Timer {
                    at: earliest.at,
                    status: earliest.status,
                    step: earliest.step.clone(),
                },
                // Read now: the branches (and their event waits) are dropped before the
                // park is written.
                events_seen: self.events_seen(),
            })
        })
        .await
    }
}
