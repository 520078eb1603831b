//! A typed handle on a run: start a workflow with a typed input and get its typed
//! result, status and cancellation from one value.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Client, EngineError, RunId, RunStatus, StartOptions};

/// A run started through [`Client::submit`], whose output is an `O`.
#[derive(Clone)]
pub struct RunHandle<O> {
    client: Client,
    run_id: RunId,
    created: bool,
    output: PhantomData<fn() -> O>,
}

/// Why a run gave no result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine could not be asked (the database, an unknown run).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The run failed or was cancelled; its stored error report, if any.
    #[error("run {run} {status}: {}", error.as_ref().and_then(|e| e["message"].as_str()).unwrap_or("no error recorded"))]
    Ended {
        /// The run.
        run: RunId,
        /// `failed` or `cancelled`.
        status: RunStatus,
        /// The error report (`message`, `category`, `class`, `chain`).
        error: Option<Value>,
    },
    /// The run completed, but its output is not an `O`.
    #[error("the output of run {run} does not deserialize into the expected type: {source}")]
    Output {
        /// The run.
        run: RunId,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The run had not ended within the time given.
    #[error("run {0} had not ended in time")]
    Pending(RunId),
}

impl Client {
    /// Starts `workflow` with a typed input and returns a handle whose result is an
    /// `O` (with the options' idempotency key, queue and deadline).
    ///
    /// ```no_run
    /// # async fn example(client: cairn_runner::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use cairn_runner::StartOptions;
    /// let run = client
    ///     .submit::<_, String>("greet", &"ada", &StartOptions::idempotency_key("greet-ada"))
    ///     .await?;
    /// let greeting: String = run.result().await?;
    /// # let _ = greeting; Ok(()) }
    /// ```
    pub async fn submit<I: Serialize, O: DeserializeOwned>(
        &self,
        workflow: &str,
        input: &I,
        options: &StartOptions,
    ) -> Result<RunHandle<O>, EngineError> {
        let started = self.start(workflow, input, options).await?;
        Ok(RunHandle {
            client: self.clone(),
            run_id: started.run_id,
            created: started.created,
            output: PhantomData,
        })
    }

    /// A typed handle on a run started earlier.
    pub fn handle<O: DeserializeOwned>(&self, run_id: RunId) -> RunHandle<O> {
        RunHandle {
            client: self.clone(),
            run_id,
            created: false,
            output: PhantomData,
        }
    }
}

impl<O: DeserializeOwned> RunHandle<O> {
    /// The run's id.
    pub fn id(&self) -> RunId {
        self.run_id
    }

    /// Whether this start created the run (`false`: its idempotency key named an
    /// earlier one).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Where the run is now.
    pub async fn status(&self) -> Result<RunStatus, EngineError> {
        Ok(self.client.progress(self.run_id).await?.0)
    }

    /// Waits for the run to end and returns its output.
    pub async fn result(&self) -> Result<O, RunError> {
        self.result_within(None).await
    }

    /// [`RunHandle::result`], giving up after `timeout`.
    pub async fn result_within(&self, timeout: Option<Duration>) -> Result<O, RunError> {
        let run = self.client.wait(self.run_id, timeout).await?;
        match run.summary.status {
            RunStatus::Completed => serde_json::from_value(run.output.unwrap_or(Value::Null))
                .map_err(|source| RunError::Output {
                    run: self.run_id,
                    source,
                }),
            status if status.is_terminal() => Err(RunError::Ended {
                run: self.run_id,
                status,
                error: run.error,
            }),
            _ => Err(RunError::Pending(self.run_id)),
        }
    }

    /// Cancels the run (see [`Client::cancel`]).
    pub async fn cancel(&self) -> Result<RunStatus, EngineError> {
        self.client.cancel(self.run_id).await
    }
}
