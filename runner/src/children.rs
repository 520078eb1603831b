//! Child runs: a workflow starts other workflows as runs of their own and waits for
//! their results, parked meanwhile (no worker held). A child's start is a transactional
//! step keyed by the parent run and the step's place, so a replay finds the same child
//! rather than starting another; its end reaches the parent as an event (migration
//! 0017), whatever way it ends.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::new_run::NewRun;
use crate::{Context, Error, RunId};

/// How a child is started.
#[derive(Debug, Clone)]
pub struct ChildOptions {
    /// The queue whose workers execute it (by default the `default` queue).
    pub queue: String,
    /// Whether cancelling the parent cancels the child (by default, yes).
    pub cancel_with_parent: bool,
    /// Its priority; `None` (the default): the parent's.
    pub priority: Option<i32>,
    /// The concurrency key it counts against, if any.
    pub concurrency_key: Option<String>,
    /// When it must have ended; `None`: its workflow's default timeout from its start,
    /// when this worker knows the workflow and it has one.
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for ChildOptions {
    fn default() -> Self {
        Self {
            queue: "default".to_owned(),
            cancel_with_parent: true,
            priority: None,
            concurrency_key: None,
            deadline: None,
        }
    }
}

/// A child run that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("child run {run} of workflow `{workflow}` {status}: {message}")]
pub struct ChildFailed {
    /// The child.
    pub run: RunId,
    /// Its workflow.
    pub workflow: String,
    /// `failed` or `cancelled`.
    pub status: String,
    /// Its error, as recorded.
    pub message: String,
}

/// Longer than any run lives: a child's result is waited for until it comes.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Context {
    /// Starts `workflow` with `input` as a child of this run and returns its id. A
    /// replay returns the same child; cancelling this run cancels it (unless
    /// `options.cancel_with_parent` is off).
    pub async fn start_child<I: Serialize>(
        &self,
        workflow: &str,
        input: &I,
        options: &ChildOptions,
    ) -> Result<RunId, Error> {
        let input = serde_json::to_value(input)?;
        let registry = &self.state().settings.registry;
        // A child of a workflow this worker does not run may be another queue's: only
        // what the registry knows can be checked here.
        if registry.contains(workflow) {
            registry
                .check_input(workflow, &input)
                .map_err(|err| Error::permanent(err).with_category("child"))?;
        }
        let timeout = registry.timeout(workflow);
        let input = &input;
        let parent = self.run_id();
        let priority = options.priority.unwrap_or(self.state().priority);
        self.transaction(format!("start child {workflow}"), |tx| async move {
            let mut conn = tx.conn().await?;
            // The step's position is unique in the run: the child's key, so no attempt
            // of this step can start a second child.
            let key = format!("child:{parent}:{}", tx.position());
            let deadline = options.deadline.or_else(|| {
                timeout.map(|t| {
                    self.clock().now()
                        + chrono::Duration::from_std(t).unwrap_or(chrono::TimeDelta::MAX)
                })
            });
            let child = NewRun {
                idempotency_key: Some(&key),
                deadline,
                priority,
                concurrency_key: options.concurrency_key.as_deref(),
                parent: Some((parent, options.cancel_with_parent)),
                ..NewRun::new(workflow, &options.queue, input)
            };
            let (id, _) = child
                .insert(&mut *conn)
                .await?
                .ok_or_else(|| Error::transient("the child's start met a concurrent one"))?;
            Ok(id)
        })
        .await
    }

    /// Waits, parked, for child `child` to end, and returns its output; a child that
    /// failed or was cancelled is a permanent error in the `child` category.
    pub async fn child_result<O: DeserializeOwned>(&self, child: RunId) -> Result<O, Error> {
        let ended: Option<Value> = self
            .wait_for_event(&format!("cairn.child {child}"), FOREVER)
            .await?;
        let ended = ended.unwrap_or(Value::Null);
        match ended["status"].as_str() {
            Some("completed") => Ok(serde_json::from_value(ended["output"].clone())?),
            status => Err(Error::permanent(ChildFailed {
                run: child,
                workflow: ended["workflow"].as_str().unwrap_or_default().to_owned(),
                status: status.unwrap_or("ended").to_owned(),
                message: ended["error"]["message"]
                    .as_str()
                    .unwrap_or("no error recorded")
                    .to_owned(),
            })
            .with_category("child")),
        }
    }

    /// Starts `workflow` as a child with `input` and waits for its output.
    ///
    /// ```no_run
    /// # use cairn_runner::{ChildOptions, Context, Error};
    /// # async fn example(ctx: Context) -> Result<u64, Error> {
    /// // Five children side by side, each in a branch of its own.
    /// let totals = ctx
    ///     .parallel(5, 0..5u64, |ctx, shard| async move {
    ///         ctx.child::<_, u64>("count shard", &shard).await
    ///     })
    ///     .await;
    /// totals.into_iter().sum()
    /// # }
    /// ```
    pub async fn child<I: Serialize, O: DeserializeOwned>(
        &self,
        workflow: &str,
        input: &I,
    ) -> Result<O, Error> {
        let id = self
            .start_child(workflow, input, &ChildOptions::default())
            .await?;
        self.child_result(id).await
    }
}
