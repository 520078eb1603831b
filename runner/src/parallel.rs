//! Steps side by side in one run: [`Context::fork`] makes branches, each with its own
//! order of steps, and [`Context::parallel`] runs a closure per item in branches of
//! their own, a bounded number at a time.
//!
//! Each step is checkpointed on its own as usual. What branches add is replay that does
//! not depend on timing: a branch's steps are found again by the branch and their order
//! within it, so two branches whose steps finished in one order the first time may
//! finish in any other on replay. A durable wait (sleep, rate limit, long backoff) holds
//! up only its branch; the run parks when every branch waits.

use std::future::Future;

use futures::StreamExt;

use crate::Context;

impl Context {
    /// `N` branches of this run, to drive side by side (`futures::join!`). Each is a
    /// `Context` whose steps replay by their order in that branch. Forks nest: a branch
    /// may fork again.
    ///
    /// ```no_run
    /// # use cairn_runner::{Context, Error};
    /// # async fn example(ctx: Context) -> Result<u64, Error> {
    /// let [left, right] = ctx.fork();
    /// let (a, b) = futures::join!(
    ///     async move {
    ///         let page = left.step("fetch a", || async { Ok(1u64) }).await?;
    ///         left.step("store a", || async move { Ok(page * 10) }).await
    ///     },
    ///     async move { right.step("fetch b", || async { Ok(2u64) }).await },
    /// );
    /// Ok(a? + b?)
    /// # }
    /// ```
    ///
    /// Several steps awaited together on one `Context` (without a fork) take their
    /// positions in the order they are first polled: that replays correctly only while
    /// each of them is a single step. Give each sequence of steps a branch.
    pub fn fork<const N: usize>(&self) -> [Context; N] {
        let fork = self.next_fork();
        std::array::from_fn(|index| self.branch_of_fork(fork, index))
    }

    /// [`Context::fork`] for a number of branches known only at run time.
    pub fn fork_n(&self, n: usize) -> Vec<Context> {
        let fork = self.next_fork();
        (0..n)
            .map(|index| self.branch_of_fork(fork, index))
            .collect()
    }

    /// Runs `f` on every item, each call in a branch of its own (see
    /// [`Context::fork`]), at most `limit` at once, and returns their results in the
    /// order of the items.
    ///
    /// ```no_run
    /// # use cairn_runner::{Context, Error};
    /// # async fn example(ctx: Context) -> Result<(), Error> {
    /// let pages = ctx
    ///     .parallel(4, ["contacts", "deals", "companies"], |ctx, stream| async move {
    ///         ctx.step(format!("count {stream}"), || async { Ok(stream.len()) }).await
    ///     })
    ///     .await;
    /// let total: usize = pages.into_iter().sum::<Result<usize, Error>>()?;
    /// # let _ = total; Ok(()) }
    /// ```
    pub async fn parallel<I, F, Fut>(&self, limit: usize, items: I, mut f: F) -> Vec<Fut::Output>
    where
        I: IntoIterator,
        F: FnMut(Context, I::Item) -> Fut,
        Fut: Future,
    {
        let items: Vec<I::Item> = items.into_iter().collect();
        let branches = self.fork_n(items.len());
        let calls: Vec<Fut> = branches
            .into_iter()
            .zip(items)
            .map(|(ctx, item)| f(ctx, item))
            .collect();
        futures::stream::iter(calls)
            .buffered(limit.max(1))
            .collect()
            .await
    }
}
