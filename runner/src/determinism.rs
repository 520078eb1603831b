//! Values a workflow must not compute afresh on replay: the time, random numbers, ids.
//! Each is recorded as a step on its first execution and read back from the run's
//! history after, so a replay takes the same branch of an `if` the first run took.

use chrono::{DateTime, Utc};

use crate::{Context, Error};

impl Context {
    /// The current time, recorded on first execution and the same on every replay.
    /// `Utc::now()` in a workflow (outside a step) is a different instant on each
    /// replay; this is the one to decide with.
    ///
    /// ```no_run
    /// # use cairn_runner::{Context, Error};
    /// # async fn example(ctx: Context) -> Result<(), Error> {
    /// let started = ctx.now().await?;
    /// if started.format("%A").to_string() == "Monday" {
    ///     ctx.step("weekly report", || async { Ok(()) }).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn now(&self) -> Result<DateTime<Utc>, Error> {
        self.step("cairn.now", || async { Ok(self.clock().now()) })
            .await
    }

    /// A random `u64`, recorded on first execution and the same on every replay.
    pub async fn random(&self) -> Result<u64, Error> {
        self.step("cairn.random", || async { Ok(fastrand::u64(..)) })
            .await
    }

    /// A random (version 4) UUID, recorded on first execution and the same on every
    /// replay: an idempotency key for a call to another system, say.
    pub async fn uuid(&self) -> Result<uuid::Uuid, Error> {
        self.step("cairn.uuid", || async { Ok(uuid::Uuid::new_v4()) })
            .await
    }
}
