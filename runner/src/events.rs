//! Events: a run waits for a named event from outside (`cairn runs send`,
//! [`Client::send_event`]) with a timeout, parked durably meanwhile; and a run publishes
//! values others read ([`Context::set_event`], [`Client::get_event`]).
//!
//! An event is kept from the moment it is sent, so one sent before the run waits for it
//! is not lost, and it is consumed by exactly one wait: taking it and checkpointing the
//! wait commit in one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;

use crate::context::{Halt, Slot, StoredFailure};
use crate::model::{RunStatus, StepKind, StepStatus};
use crate::seal::{EVENT_DATA, OpenError};
use crate::store::{Fenced, StepWrite};
use crate::{Client, Context, EngineError, Error, RunId};

/// How often a wait that is still in memory looks for its event.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// The step row of an event wait.
fn wait_step<'a>(
    ctx: &'a Context,
    (position, seq): (i32, Option<i32>),
    name: &'a str,
    status: StepStatus,
    output: Option<&'a str>,
    started_at: DateTime<Utc>,
) -> StepWrite<'a> {
    StepWrite {
        position,
        branch: ctx.branch_id(),
        seq,
        name,
        kind: StepKind::Step,
        status,
        output,
        attempts: 1,
        throttled: 0,
        last_error: None,
        started_at,
        duration: Duration::ZERO,
        progress: None,
    }
}

/// What an event wait stores until it ends: when it times out.
#[derive(Serialize, serde::Deserialize)]
struct Waiting {
    until: DateTime<Utc>,
}

impl Context {
    /// Waits for the event `name` sent to this run, at most `timeout`, and returns its
    /// data (`None` when the timeout passed first). The run is parked meanwhile when
    /// nothing else in it can go on; an event sent earlier is taken at once. Each event
    /// is consumed by one wait, in the order they were sent.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use cairn_runner::{Context, Error};
    /// # async fn example(ctx: Context) -> Result<(), Error> {
    /// // `cairn runs send <run-id> approval --data '{"by": "ada"}'`
    /// match ctx.wait_for_event::<serde_json::Value>("approval", Duration::from_secs(3 * 86_400)).await? {
    ///     Some(approval) => {
    ///         let by = approval["by"].to_string();
    ///         ctx.step("ship", || async { Ok(by.clone()) }).await?
    ///     }
    ///     None => ctx.step("escalate", || async { Ok("nobody".to_owned()) }).await?,
    /// };
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_event<T>(&self, name: &str, timeout: Duration) -> Result<Option<T>, Error>
    where
        T: DeserializeOwned,
    {
        let step_name = format!("event {name}");
        let Slot {
            position,
            seq,
            stored,
        } = self.next_slot();
        let (started_at, until) = match stored {
            Some(record) => {
                self.check_same(&record, &step_name, StepKind::Step).await;
                let text = record.stored_output.as_deref().unwrap_or("null");
                match record.status {
                    StepStatus::Completed => return Ok(serde_json::from_str(text)?),
                    StepStatus::Failed => {
                        return Err(Error::permanent(StoredFailure {
                            name: step_name,
                            message: record.last_error.unwrap_or_default(),
                        }));
                    }
                    StepStatus::Retrying => {
                        let until = serde_json::from_str::<Waiting>(text)
                            .map_or_else(|_| self.clock().now(), |w| w.until);
                        (record.started_at, until)
                    }
                }
            }
            None => {
                self.boundary().await;
                let now = self.clock().now();
                let until =
                    now + chrono::Duration::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX);
                let output = serde_json::to_string(&Waiting { until })?;
                self.write_retrying(
                    &step_name,
                    &wait_step(
                        self,
                        (position, seq),
                        &step_name,
                        StepStatus::Retrying,
                        Some(&output),
                        now,
                    ),
                )
                .await;
                (now, until)
            }
        };
        let waiting = serde_json::to_string(&Waiting { until })?;
        loop {
            let (sent, data) = self.take_event(name).await?;
            let _wait = self.waits().waiting_for_event(sent);
            let ended = match data {
                Some(data) => Some((data, true)),
                None if self.clock().now() >= until => Some(("null".to_owned(), false)),
                None => None,
            };
            if let Some((output, taking)) = ended {
                let step = wait_step(
                    self,
                    (position, seq),
                    &step_name,
                    StepStatus::Completed,
                    Some(&output),
                    started_at,
                );
                // The event is taken in the transaction that checkpoints the wait.
                match self.finish_wait(name, &step, taking).await {
                    Ok(()) => return Ok(serde_json::from_str(&output)?),
                    Err(err) if err.is_transient() => {
                        tracing::debug!(error = %err, "the wait did not end; looking again");
                        tokio::time::sleep(LOOK_EVERY).await;
                        continue;
                    }
                    Err(err) => return Err(err),
                }
            }
            let step = wait_step(
                self,
                (position, seq),
                &step_name,
                StepStatus::Retrying,
                Some(&waiting),
                started_at,
            );
            // Registered until `until`, so the run parks until then (or until an event
            // is sent) once every branch waits; in memory, it looks again shortly.
            let _ = tokio::time::timeout(
                LOOK_EVERY,
                self.wait_until(position, until, RunStatus::Sleeping, &step, false),
            )
            .await;
        }
    }

    /// Looks for the oldest unconsumed event `name` of this run, without taking it yet;
    /// returns how many events have been sent to the run, and the event's data.
    async fn take_event(&self, name: &str) -> Result<(i64, Option<String>), Error> {
        let (sent, data, sealed): (i64, Option<String>, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT r.events_sent, e.data::text, e.data_sealed
               FROM cairn.runs r
               LEFT JOIN LATERAL (
                   SELECT e.data, e.data_sealed FROM cairn.events e
                    WHERE e.run_id = r.id AND e.name = $2 AND e.consumed_position IS NULL
                    ORDER BY e.id LIMIT 1
               ) e ON true
              WHERE r.id = $1",
        )
        .bind(self.run_id())
        .bind(name)
        .fetch_one(self.pool())
        .await?;
        let data = self
            .sealer()
            .read(&EVENT_DATA, data, sealed.as_deref())
            .map_err(Error::permanent)?;
        Ok((sent, data))
    }

    /// Ends a wait: takes its event (when it got one) and checkpoints the wait, in one
    /// transaction. An event another wait took first fails the attempt (transient), and
    /// the wait looks again.
    async fn finish_wait(
        &self,
        name: &str,
        step: &StepWrite<'_>,
        taking: bool,
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        if taking {
            let taken = sqlx::query(
                "UPDATE cairn.events SET consumed_position = $3, consumed_at = now()
                  WHERE id = (SELECT id FROM cairn.events
                               WHERE run_id = $1 AND name = $2 AND consumed_position IS NULL
                               ORDER BY id LIMIT 1 FOR UPDATE)",
            )
            .bind(self.run_id())
            .bind(name)
            .bind(step.position)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() != 1 {
                return Err(Error::transient("the event was taken by another wait"));
            }
        }
        match self
            .store()
            .write_step(&mut *tx, self.lease(), step)
            .await?
        {
            Fenced::Held(cancel) => {
                tx.commit().await?;
                self.note_cancel(cancel);
                Ok(())
            }
            Fenced::Lost => self.halt(Halt::Lost).await,
        }
    }

    /// Publishes `value` under `key` for others to read ([`Client::get_event`]), e.g.
    /// progress for a caller; a later value replaces it. Exactly once, as a
    /// transactional step.
    pub async fn set_event(&self, key: &str, value: &impl Serialize) -> Result<(), Error> {
        let value = serde_json::to_value(value)?;
        let value = &value;
        let run = self.run_id();
        self.transaction(format!("publish {key}"), |tx| async move {
            let mut conn = tx.conn().await?;
            publish(&mut conn, run, key, value).await?;
            Ok(())
        })
        .await
    }

    /// The value run `run` published under `key`, if any, read once and recorded.
    pub async fn get_event<T>(&self, run: RunId, key: &str) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned + Send,
    {
        let pool = self.pool().clone();
        self.step(format!("read {key} of {run}"), || {
            let pool = pool.clone();
            async move {
                match read(&pool, run, key).await? {
                    Some(value) => Ok(Some(serde_json::from_value(value)?)),
                    None => Ok(None),
                }
            }
        })
        .await
    }
}

async fn publish(
    conn: &mut sqlx::PgConnection,
    run: RunId,
    key: &str,
    value: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cairn.run_values (run_id, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(run)
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

async fn read(pool: &PgPool, run: RunId, key: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM cairn.run_values WHERE run_id = $1 AND key = $2")
        .bind(run)
        .bind(key)
        .fetch_optional(pool)
        .await
}

impl Client {
    /// Sends the event `name` with `data` to run `run`: the run's next (or current) wait
    /// for `name` takes it, and a parked run wakes for it. Fails for a run that has
    /// ended, or none.
    pub async fn send_event(
        &self,
        run: RunId,
        name: &str,
        data: &impl Serialize,
    ) -> Result<(), EngineError> {
        let data = serde_json::to_string(data).map_err(|source| EngineError::InvalidInput {
            workflow: format!("event {name}"),
            source,
        })?;
        let data = self
            .store()
            .sealer()
            .store(&EVENT_DATA, &data)
            .map_err(OpenError::from)?;
        let sent: Option<RunId> = sqlx::query_scalar(
            "WITH sent AS (
                 INSERT INTO cairn.events (run_id, name, data, data_sealed)
                 SELECT id, $2, $3::jsonb, $4 FROM cairn.runs
                  WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
                 RETURNING run_id
             )
             UPDATE cairn.runs r
                SET events_sent = r.events_sent + 1,
                    wake_at = CASE WHEN r.status IN ('sleeping', 'parked', 'retrying')
                                   THEN least(r.wake_at, now()) ELSE r.wake_at END
               FROM sent WHERE r.id = sent.run_id
             RETURNING r.id",
        )
        .bind(run)
        .bind(name)
        .bind(data.plain())
        .bind(data.sealed())
        .fetch_optional(self.store().pool())
        .await
        .map_err(EngineError::db)?;
        match sent {
            Some(_) => Ok(()),
            None => match self.show(run).await {
                Ok(detail) => Err(EngineError::RunEnded {
                    run,
                    status: detail.summary.status,
                }),
                Err(err) => Err(err),
            },
        }
    }

    /// The value run `run` published under `key` ([`Context::set_event`]), if any.
    pub async fn get_event(&self, run: RunId, key: &str) -> Result<Option<Value>, EngineError> {
        read(self.store().pool(), run, key)
            .await
            .map_err(EngineError::db)
    }
}
