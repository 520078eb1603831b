//! The workflow registry: stable names mapped to async functions.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::{Context, EngineError, Error, Input, ResultExt};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type RunFn = dyn Fn(Context, Value) -> BoxFuture<Result<Value, Error>> + Send + Sync;
type CheckFn = dyn Fn(&Value) -> Result<(), serde_json::Error> + Send + Sync;

struct Entry {
    run: Arc<RunFn>,
    check_input: Arc<CheckFn>,
    /// How long a run of it may take unless its start says otherwise.
    timeout: Option<std::time::Duration>,
    /// How long its finished runs keep their step outputs, when not the worker's default.
    retention: Option<std::time::Duration>,
}

/// Workflows by name. A worker claims only runs of workflows it has registered, and
/// `start` refuses names that are not registered.
///
/// ```
/// use cairn_runner::{Context, Error, Registry};
///
/// async fn greet(ctx: Context, name: String) -> Result<String, Error> {
///     let greeting = ctx.step("compose", || async { Ok(format!("hello, {name}")) }).await?;
///     Ok(greeting)
/// }
///
/// let mut registry = Registry::new();
/// registry.register("greet", greet);
/// assert!(registry.contains("greet"));
/// ```
///
/// Beside workflows it holds shared state by type ([`Registry::provide`]): what the
/// built-in workflows and the command line both need to see, such as the Rust sources
/// the sync workflows can open.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    state: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `workflow` under `name`, replacing any earlier one.
    ///
    /// The name is stored with every run, so keep it stable across deploys. State the
    /// workflow needs (HTTP clients, configuration) is captured by a closure:
    /// `registry.register("sync", move |ctx, input| sync(ctx, state.clone(), input))`.
    pub fn register<I, O, F, Fut>(&mut self, name: impl Into<String>, workflow: F) -> &mut Self
    where
        I: Input + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Error>> + Send + 'static,
    {
        let name = name.into();
        let workflow = Arc::new(workflow);
        let wf_name = name.clone();
        let run: Arc<RunFn> = Arc::new(move |ctx: Context, input: Value| {
            let workflow = Arc::clone(&workflow);
            let wf_name = wf_name.clone();
            Box::pin(async move {
                let input: I = I::from_input(&input)
                    .map_err(|source| EngineError::InvalidInput {
                        workflow: wf_name,
                        source,
                    })
                    .permanent()?;
                let output = workflow(ctx, input).await?;
                serde_json::to_value(output)
                    .map_err(|err| Error::permanent(err).with_category("output"))
            }) as BoxFuture<_>
        });
        let check_input: Arc<CheckFn> = Arc::new(|value: &Value| I::from_input(value).map(drop));
        self.entries.insert(
            name,
            Entry {
                run,
                check_input,
                timeout: None,
                retention: None,
            },
        );
        self
    }

    /// Whether a workflow is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Gives runs of workflow `name` a deadline `timeout` after they start, unless the
    /// start names one ([`crate::StartOptions::deadline`]). Does nothing for a name not
    /// registered.
    pub fn set_timeout(&mut self, name: &str, timeout: std::time::Duration) -> &mut Self {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.timeout = Some(timeout);
        }
        self
    }

    /// The default timeout of workflow `name`'s runs, if it has one.
    pub fn timeout(&self, name: &str) -> Option<std::time::Duration> {
        self.entries.get(name).and_then(|entry| entry.timeout)
    }

    /// Keeps the step outputs of workflow `name`'s finished runs this long, instead of
    /// the workers' default window ([`crate::worker::Retention`]). Does nothing for a
    /// name not registered.
    pub fn set_retention(&mut self, name: &str, window: std::time::Duration) -> &mut Self {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.retention = Some(window);
        }
        self
    }

    /// How long workflow `name`'s finished runs keep their step outputs, if it says.
    pub fn retention(&self, name: &str) -> Option<std::time::Duration> {
        self.entries.get(name).and_then(|entry| entry.retention)
    }

    /// Checks that `name` is registered and that `input` deserializes into its input type,
    /// so a bad start is refused before a run exists.
    pub fn check_input(&self, name: &str, input: &Value) -> Result<(), EngineError> {
        let entry = self.entry(name)?;
        (entry.check_input)(input).map_err(|source| EngineError::InvalidInput {
            workflow: name.to_owned(),
            source,
        })
    }

    /// Keeps `value` for workflows to read with [`Context::provided`] (and anyone holding
    /// the registry with [`Registry::provided`]), replacing an earlier value of its type.
    pub fn provide<T: Any + Send + Sync>(&mut self, value: T) -> &mut Self {
        self.state.insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// The value of type `T` given to [`Registry::provide`], if any.
    pub fn provided<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.state.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The value of type `T`, a default one provided first if there is none: for
    /// catalogs that several registrations add to.
    pub fn provided_mut<T: Any + Send + Sync + Default>(&mut self) -> &mut T {
        self.state
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("a value is stored under its own type id")
    }

    pub(crate) fn runner(&self, name: &str) -> Result<Arc<RunFn>, EngineError> {
        self.entry(name).map(|entry| Arc::clone(&entry.run))
    }

    fn entry(&self, name: &str) -> Result<&Entry, EngineError> {
        self.entries
            .get(name)
            .ok_or_else(|| EngineError::UnknownWorkflow {
                name: name.to_owned(),
                known: if self.entries.is_empty() {
                    "(none)".to_owned()
                } else {
                    self.names().join(", ")
                },
            })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("workflows", &self.names())
            .finish_non_exhaustive()
    }
}
