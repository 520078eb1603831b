//! Changing a workflow while runs of its old code are in flight: patch markers.
//!
//! A run replays its history against the code the worker has now; code that calls
//! other steps than the history holds fails the run with a non-determinism error. To
//! change a workflow safely, put the new code behind [`Context::patched`]: a run that
//! reaches the patch for the first time records a marker and takes the new code; a run
//! whose history passed that point without the marker (it started on the old code)
//! takes the old code, on every replay. Once no run of the old code is left, delete the
//! old branch; keep the `patched` call until no run that recorded the marker is left
//! either, or replace it by [`Context::deprecate_patch`], which keeps the marker's place.

use crate::context::Ahead;
use crate::model::StepKind;
use crate::{Context, Error};

fn marker(id: &str) -> String {
    format!("cairn.patch {id}")
}

impl Context {
    /// Whether this run takes the code of patch `id`: `true` for a run that gets here
    /// for the first time with this code (the marker is recorded), or whose history
    /// holds the marker; `false` for a run whose history passed this point without it.
    ///
    /// ```no_run
    /// # use cairn_runner::{Context, Error};
    /// # async fn example(ctx: Context) -> Result<u64, Error> {
    /// let price = if ctx.patched("price-in-cents").await? {
    ///     ctx.step("fetch price (cents)", || async { Ok(1999u64) }).await?
    /// } else {
    ///     ctx.step("fetch price", || async { Ok(19u64) }).await? * 100
    /// };
    /// # Ok(price) }
    /// ```
    pub async fn patched(&self, id: &str) -> Result<bool, Error> {
        let name = marker(id);
        match self.ahead() {
            Ahead::Stored(stored, StepKind::Step) if stored == name => {
                self.step(name, || async { Ok(true) }).await
            }
            Ahead::Stored(..) | Ahead::Passed => Ok(false),
            Ahead::New => self.step(name, || async { Ok(true) }).await,
        }
    }

    /// For a patch whose old code is gone: runs that recorded the marker replay it,
    /// and no new run records it.
    pub async fn deprecate_patch(&self, id: &str) -> Result<(), Error> {
        let name = marker(id);
        if let Ahead::Stored(stored, StepKind::Step) = self.ahead()
            && stored == name
        {
            self.step(name, || async { Ok(true) }).await?;
        }
        Ok(())
    }
}
