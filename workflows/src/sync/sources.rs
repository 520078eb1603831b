//! Sources written in Rust, registered by name, for the sync workflows to open.
//!
//! A TOML source travels in its runs' input; a Rust source is code, so each worker (and
//! the command line) knows it by the name it was registered under with [`add_source`]. A
//! run names it in [`SyncInput::source`](super::SyncInput::source), and every sync
//! workflow (incremental, backfill, reconcile, column fill, status) treats it exactly as
//! it treats a TOML source: the same fetch steps, watermarks, landings and checks.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cairn_connectors::error::HttpError;
use cairn_connectors::http::origin::url_problem;
use cairn_connectors::rest::RestConfig;
use cairn_connectors::source::{Source, StreamInfo};
use cairn_connectors::warehouse::ident::{derived_schema_name, schema_name_problem};
use cairn_runner::{Error, Registry};
use serde_json::Value;
use sqlx::PgPool;

use super::SyncInput;

/// What a registered source's opener is given: the run's settings for it and the
/// engine's pool (a rate budget shared by every worker lives there).
#[derive(Debug, Clone)]
pub struct Opening {
    /// The run's [`SyncInput::settings`](super::SyncInput::settings): the source's own,
    /// non-secret options (an account id, a region). Credentials are read by the opener
    /// from the environment or files, never carried in a run's input.
    pub settings: Value,
    /// A base URL the run asked for instead of the source's own (a sandbox, a staging
    /// API); the opener should refuse one it cannot trust.
    pub base_url: Option<String>,
    /// The engine's database pool.
    pub pool: PgPool,
}

type Opened = Pin<Box<dyn Future<Output = Result<Arc<dyn Source>, HttpError>> + Send>>;
type OpenFn = dyn Fn(Opening) -> Opened + Send + Sync;

struct Entry {
    streams: Vec<StreamInfo>,
    open: Arc<OpenFn>,
}

/// The Rust sources a registry's sync workflows can open, by name. Kept in the
/// [`Registry`] (see [`add_source`]) so that the workers and the command line built on it
/// see the same ones.
#[derive(Default)]
pub struct Sources {
    entries: BTreeMap<String, Entry>,
}

impl Sources {
    /// The streams of the source registered as `name`.
    pub fn streams(&self, name: &str) -> Option<&[StreamInfo]> {
        self.entries.get(name).map(|entry| entry.streams.as_slice())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    async fn open(&self, name: &str, opening: Opening) -> Result<Arc<dyn Source>, Error> {
        let entry = self.entries.get(name).ok_or_else(|| {
            Error::permanent(format!(
                "no Rust source `{name}` is registered in this worker (registered: {})",
                known(&self.names())
            ))
            .with_category("config")
        })?;
        Ok((entry.open)(opening).await?)
    }
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

fn known(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Registers the Rust source `open` builds under `name`, serving `streams`, for the sync
/// workflows of `registry` and the command line built on it (`my-bin sync NAME`).
///
/// The name is stored with every run and keys the source's watermarks and warehouse
/// tables, so keep it stable. Its tables land in the schema derived from it (`my-crm`
/// lands in `my_crm`) unless a run names another. `open` runs at the start of every
/// execution of a run, so it should only build (an HTTP client, its signer), not call
/// the vendor.
///
/// Fails when `name` is empty or derives no usable schema name.
pub fn add_source<S, F, Fut>(
    registry: &mut Registry,
    name: &str,
    streams: Vec<StreamInfo>,
    open: F,
) -> Result<(), Error>
where
    S: Source + 'static,
    F: Fn(Opening) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, HttpError>> + Send + 'static,
{
    if name.trim().is_empty() {
        return Err(Error::permanent("a source needs a name").with_category("config"));
    }
    if let Some(problem) = schema_name_problem(&derived_schema_name(name)) {
        return Err(Error::permanent(format!(
            "source name `{name}` gives no usable warehouse schema name: {problem}"
        ))
        .with_category("config"));
    }
    let open: Arc<OpenFn> = Arc::new(move |opening| {
        let opened = open(opening);
        Box::pin(async move {
            opened
                .await
                .map(|source| Arc::new(source) as Arc<dyn Source>)
        })
    });
    registry
        .provided_mut::<Sources>()
        .entries
        .insert(name.to_owned(), Entry { streams, open });
    Ok(())
}

/// Which source a sync lands, and where: what its watermarks and tables are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTarget {
    /// The source's name.
    pub source: String,
    /// The warehouse schema its tables are in.
    pub schema: String,
    /// Its streams' names.
    pub streams: Vec<String>,
    /// The stored credential its auth needs (a refresh-token grant's), checked before a
    /// run starts.
    pub credential: Option<String>,
}

impl SyncTarget {
    /// The target of the TOML source `config`.
    pub fn of_config(config: &RestConfig) -> Self {
        Self {
            source: config.name().to_owned(),
            schema: config.warehouse_schema().to_owned(),
            streams: config.stream_names().map(str::to_owned).collect(),
            credential: config.http().auth.stored_credential().map(str::to_owned),
        }
    }

    /// The target of the Rust source registered as `name`, in `schema` or the one
    /// derived from its name; `None` when no such source is registered.
    pub fn registered(sources: &Sources, name: &str, schema: Option<&str>) -> Option<Self> {
        let streams = sources.streams(name)?;
        Some(Self {
            source: name.to_owned(),
            schema: schema.map_or_else(|| derived_schema_name(name), str::to_owned),
            streams: streams.iter().map(|s| s.name.clone()).collect(),
            credential: None,
        })
    }
}

/// Why a run's base URL for a Rust source cannot be used (plain http to another host,
/// credentials in it, not a URL): checked before the run starts and again by the worker
/// that opens the source, before the source's opener sees it.
pub fn base_url_problem(url: &str) -> Option<String> {
    url_problem(url, false)
}

/// The source name and warehouse schema a sync run's input lands, read without opening
/// the source; `None` for an input that is not a sync's.
pub(crate) fn input_target(input: &Value) -> Option<(String, String)> {
    let input: SyncInput = serde_json::from_value(input.clone()).ok()?;
    let schema = input.warehouse_schema.clone();
    match &input.source {
        Some(name) => Some((
            name.clone(),
            schema.unwrap_or_else(|| derived_schema_name(name)),
        )),
        None => {
            let mut config = RestConfig::parse(&input.source_toml, "run input").ok()?;
            if let Some(schema) = schema {
                config = config.with_schema(&schema).ok()?;
            }
            Some((
                config.name().to_owned(),
                config.warehouse_schema().to_owned(),
            ))
        }
    }
}

/// What [`super::Sync::open`] needs of a run's source: the source itself, its name and
/// the warehouse schema it lands in.
pub(crate) struct OpenedSource {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) name: String,
    pub(crate) schema: String,
    /// Where the source is described, for messages.
    pub(crate) described: String,
}

/// Opens the source `input` names: a registered Rust source, or the TOML it carries.
pub(crate) async fn open(
    sources: Option<&Sources>,
    pool: &PgPool,
    input: &SyncInput,
) -> Result<OpenedSource, Error> {
    let config_error = |message: String| Error::permanent(message).with_category("config");
    let Some(name) = &input.source else {
        return open_toml(pool, input).await;
    };
    if !input.source_toml.is_empty() {
        return Err(config_error(format!(
            "the run names Rust source `{name}` and carries a TOML source too; it takes one"
        )));
    }
    let schema = match &input.warehouse_schema {
        Some(schema) => schema.clone(),
        None => derived_schema_name(name),
    };
    if let Some(problem) = schema_name_problem(&schema) {
        return Err(config_error(format!(
            "warehouse schema `{schema}` of source `{name}`: {problem}"
        )));
    }
    if let Some(problem) = input.base_url.as_deref().and_then(base_url_problem) {
        return Err(config_error(format!(
            "base URL of source `{name}`: {problem}"
        )));
    }
    let source = sources
        .unwrap_or(&Sources::default())
        .open(
            name,
            Opening {
                settings: input.settings.clone(),
                base_url: input.base_url.clone(),
                pool: pool.clone(),
            },
        )
        .await?;
    Ok(OpenedSource {
        source,
        name: name.clone(),
        schema,
        described: format!("Rust source `{name}`"),
    })
}

async fn open_toml(pool: &PgPool, input: &SyncInput) -> Result<OpenedSource, Error> {
    let config_error =
        |err: cairn_connectors::rest::ConfigError| Error::permanent(err).with_category("config");
    let mut config =
        RestConfig::parse(&input.source_toml, &input.source_file).map_err(config_error)?;
    if let Some(base_url) = &input.base_url {
        config = config.with_base_url(base_url).map_err(config_error)?;
    }
    if let Some(schema) = &input.warehouse_schema {
        config = config.with_schema(schema).map_err(config_error)?;
    }
    let name = config.name().to_owned();
    let schema = config.warehouse_schema().to_owned();
    let source = cairn_connectors::rest::RestSource::new(config, Some(pool.clone())).await?;
    Ok(OpenedSource {
        source: Arc::new(source),
        name,
        schema,
        described: input.source_file.clone(),
    })
}
