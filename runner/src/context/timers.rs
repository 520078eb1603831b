//! Durable time in a run: sleeps, waits registered as timers (so the run parks once
//! every branch waits), and the run's deadline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Context, Halt, Slot};
use crate::Error;
use crate::model::{RunStatus, StepKind, StepStatus};
use crate::store::{OwnedStep, StepWrite};
use crate::waits::Timer;

/// What a sleep step stores (written by the park statement): when the timer fires.
#[derive(serde::Deserialize)]
struct SleepOutput {
    wake_at: DateTime<Utc>,
}

impl Context {
    /// A durable timer: this branch of the run waits until `duration` has passed.
    /// When nothing else in the run can go on meanwhile (no step running beside it in a
    /// `join`), the run is parked and no worker holds it. Survives restarts; on replay a
    /// timer that has fired returns at once.
    pub async fn sleep(&self, duration: Duration) {
        let Slot {
            position,
            seq,
            stored,
        } = self.next_slot();
        let name = "sleep";
        let (started_at, wake_at) = match stored {
            Some(record) => {
                self.check_same(&record, name, StepKind::Sleep).await;
                let wake_at = record
                    .stored_output
                    .as_deref()
                    .and_then(|o| serde_json::from_str::<SleepOutput>(o).ok())
                    .map(|o| o.wake_at);
                match wake_at {
                    Some(at) => (record.started_at, at),
                    None => return,
                }
            }
            None => {
                self.boundary().await;
                let now = self.clock().now();
                let at =
                    now + chrono::Duration::from_std(duration).unwrap_or(chrono::TimeDelta::MAX);
                let output = serde_json::json!({ "wake_at": at }).to_string();
                let mut write = self.sleep_write(position, seq, name, &now);
                write.output = Some(&output);
                let group_commit = &self.run.settings.group_commit;
                let lease = self.run.lease;
                match self
                    .persist(name, || group_commit.write_step(lease, &write))
                    .await
                {
                    Ok(cancel) => self.note_cancel(cancel),
                    Err(err) => self.halt::<()>(Halt::Failed(err.report())).await,
                }
                (now, at)
            }
        };
        if wake_at <= self.clock().now() {
            return;
        }
        let output = serde_json::json!({ "wake_at": wake_at }).to_string();
        let mut write = self.sleep_write(position, seq, name, &started_at);
        write.output = Some(&output);
        self.wait_until(position, wake_at, RunStatus::Sleeping, &write, false)
            .await;
    }

    /// Waits in this branch until `at`, registered as a durable wait: if the run parks
    /// meanwhile (every branch waits), it parks in `status` and `step` is the step row
    /// its park writes. `active`: the caller is a step attempt, waiting rather than
    /// running until then.
    pub(crate) async fn wait_until(
        &self,
        position: i32,
        at: DateTime<Utc>,
        status: RunStatus,
        step: &StepWrite<'_>,
        active: bool,
    ) {
        self.within_deadline().await;
        let timer = Timer {
            at,
            status,
            step: OwnedStep::new(step),
        };
        let _registered = self.run.waits.register(position, timer, active);
        self.clock().sleep_until(at).await;
    }

    fn sleep_write<'a>(
        &'a self,
        position: i32,
        seq: Option<i32>,
        name: &'a str,
        started_at: &DateTime<Utc>,
    ) -> StepWrite<'a> {
        StepWrite {
            position,
            branch: &self.branch.id,
            seq,
            name,
            kind: StepKind::Sleep,
            status: StepStatus::Completed,
            output: None,
            attempts: 1,
            throttled: 0,
            last_error: None,
            started_at: *started_at,
            duration: Duration::ZERO,
            progress: None,
        }
    }

    /// Ends the run in the `deadline` category, with an alert, once its deadline has
    /// passed.
    pub(super) async fn within_deadline(&self) {
        let Some(deadline) = self.run.deadline.filter(|at| *at <= self.clock().now()) else {
            return;
        };
        let message = format!(
            "run {} of workflow `{}` passed its deadline {} and was stopped at a step boundary",
            self.run_id(),
            self.run.workflow,
            deadline.to_rfc3339()
        );
        let alert = sqlx::query(
            "INSERT INTO cairn.alerts (kind, source, stream, detail, message)
             VALUES ('deadline_exceeded', $1, '', $2, $3)
             ON CONFLICT (kind, source, stream, detail) WHERE resolved_at IS NULL
             DO UPDATE SET count = alerts.count + 1, last_seen = now(), message = EXCLUDED.message",
        )
        .bind(&self.run.workflow)
        .bind(self.run_id().to_string())
        .bind(&message)
        .execute(self.pool())
        .await;
        if let Err(error) = alert {
            warn!(%error, "cannot raise the deadline alert");
        }
        let err = Error::permanent(message).with_category("deadline");
        self.halt::<()>(Halt::Failed(err.report())).await;
    }
}
