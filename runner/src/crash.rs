//! Crash injection: a worker that stops dead at a chosen point of a chosen step, so a
//! test proves what a real crash there leaves behind (the test kit's `TestWorker`
//! kills the worker when the point is reached).
//!
//! The points that matter for exactly-once reasoning are the two sides of a step's
//! checkpoint: [`CrashPoint::BeforeCheckpoint`] (the step's side effects happened, its
//! result was not recorded: the step runs again on resume, so it must be idempotent)
//! and [`CrashPoint::AfterCheckpoint`] (recorded: it never runs again).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Which side of a step's checkpoint a crash happens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The step's work is done (for a transactional step: its statements ran), its
    /// checkpoint is not written (nor the transaction committed).
    BeforeCheckpoint,
    /// The step's checkpoint is written.
    AfterCheckpoint,
}

/// Where a worker stops dead, if anywhere; set in
/// [`WorkerConfig::crash`](crate::WorkerConfig::crash). Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct CrashPlan {
    planned: Option<Arc<Planned>>,
}

#[derive(Debug)]
struct Planned {
    step: String,
    point: CrashPoint,
    /// Set by the first execution that reaches the point: only that one freezes.
    taken: AtomicBool,
    reached: watch::Sender<bool>,
}

impl CrashPlan {
    /// No crash: what production runs with.
    pub fn none() -> Self {
        Self::default()
    }

    /// Stops dead the first time a step named `step` reaches `point`: that run's
    /// execution goes no further (no checkpoint, no release, no end), and
    /// [`CrashPlan::reached`] resolves so the test can kill the rest of the worker.
    pub fn at(step: impl Into<String>, point: CrashPoint) -> Self {
        Self {
            planned: Some(Arc::new(Planned {
                step: step.into(),
                point,
                taken: AtomicBool::new(false),
                reached: watch::Sender::new(false),
            })),
        }
    }

    /// Resolves once the crash point has been reached (never, for [`CrashPlan::none`]).
    pub async fn reached(&self) {
        match &self.planned {
            Some(planned) => {
                let mut reached = planned.reached.subscribe();
                let _ = reached.wait_for(|reached| *reached).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Called by steps at each side of their checkpoint: freezes forever at the
    /// planned point.
    pub(crate) async fn pass(&self, step: &str, point: CrashPoint) {
        let Some(planned) = &self.planned else {
            return;
        };
        if planned.point != point
            || planned.step != step
            || planned.taken.swap(true, Ordering::AcqRel)
        {
            return;
        }
        planned.reached.send_replace(true);
        std::future::pending::<()>().await;
    }
}
