//! The sync workflows: keep a warehouse table per stream equal to a vendor's data.
//!
//! - [`incremental`]: from the stream's watermark, fetch changed records page by page and
//!   land each page together with the watermark's advance, exactly once.
//! - [`backfill`]: the full history on its own run; the watermark jumps to the
//!   backfill's launch so incremental runs go on meanwhile, and both land through the
//!   same upsert (an older version never overwrites a newer one).
//! - [`reconcile`]: fetch the vendor's whole id set and mark rows absent from it
//!   deleted, refusing when the set looks incomplete.
//! - [`pipeline()`]: a stream written to another vendor's API instead of the warehouse
//!   (`cairn sync a.toml --to b.toml`), every write exactly once despite lost answers.
//! - [`sync_schedules`]: cron schedules running each stream's incremental sync on a
//!   cadence and its reconciliation on a slower one.
//!
//! Every fetch is a checkpointed step, so a page fetched before a crash is never
//! fetched again; every landing is a transactional step, so it takes effect once.
//!
//! A run carries its source's TOML in its input (credentials in it are references to
//! env vars or files, never values), so any worker can execute it; or it names a source
//! written in Rust, registered in every worker under that name with [`add_source`].

mod backfill;
pub mod eta;
mod fill;
mod incremental;
mod landing;
pub mod pipeline;
mod read_ahead;
mod reconcile;
mod schedule;
mod sources;
mod state;
mod status;
mod traverse;
pub mod vendor_alerts;

use std::sync::Arc;

use cairn_connectors::source::{Source, StreamInfo};
use cairn_connectors::warehouse::{StreamSpec, Warehouse};
use cairn_runner::{Context, Error, ResultExt};
use serde::{Deserialize, Serialize};

pub use backfill::backfill;
pub use fill::fill;
pub use incremental::incremental;
pub use pipeline::{PIPELINE, PipelineInput, PipelineReport, pipeline};
pub use reconcile::reconcile;
pub use schedule::{SyncCadence, schedule_name, sync_schedules};
pub use sources::{Opening, Sources, SyncTarget, add_source, base_url_problem};
pub use state::{History, Resume};
pub use status::{
    LastRun, Reset, StreamStatus, forget_schema, reset_stream, stream_status, synced_targets,
};

/// The registered name of the incremental sync.
pub const INCREMENTAL: &str = "sync.incremental";
/// The registered name of the backfill.
pub const BACKFILL: &str = "sync.backfill";
/// The registered name of the delete reconciliation.
pub const RECONCILE: &str = "sync.reconcile";
/// The registered name of the column fill: new columns reach rows synced before them.
pub const FILL: &str = "sync.fill";

/// What every sync run takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    /// The source's TOML text; empty when the run names a Rust [`source`](Self::source).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_toml: String,
    /// The file it was read from, for messages.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_file: String,
    /// The name of a Rust source registered with [`add_source`], instead of a TOML one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A Rust source's own options, handed to its opener ([`Opening::settings`]).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
    /// The stream to sync.
    pub stream: String,
    /// Overrides the source's `base_url` (a sandbox on another port, a staging API).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Overrides the source's warehouse schema (`[warehouse] schema`, or else derived
    /// from its name).
    #[serde(default)]
    pub warehouse_schema: Option<String>,
    /// Reconcile only: apply deletes even when the id set looks incomplete.
    #[serde(default)]
    pub force: bool,
    /// Reconcile only: refuse when more than this share of the live rows would be
    /// deleted at once.
    #[serde(default = "default_missing_share")]
    pub max_missing_share: f64,
    /// Fill only: the columns the run fills (it re-reads the whole stream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fill_columns: Vec<String>,
    /// How far the vendor's clock may run behind ours. A traversal's watermark is kept
    /// this far behind the traversal's start, so a change made while it paged is read
    /// again by the next run instead of being skipped.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
}

fn default_missing_share() -> f64 {
    0.5
}

fn default_skew() -> u64 {
    5
}

impl SyncInput {
    /// An input for `stream` of the Rust source registered as `source`.
    pub fn registered(source: &str, stream: &str) -> Self {
        let mut input = Self::new(String::new(), String::new(), stream.to_owned());
        input.source = Some(source.to_owned());
        input
    }

    /// An input for `stream` of the source in `source_toml`.
    pub fn new(source_toml: String, source_file: String, stream: String) -> Self {
        Self {
            source_toml,
            source_file,
            source: None,
            settings: serde_json::Value::Null,
            stream,
            base_url: None,
            warehouse_schema: None,
            force: false,
            max_missing_share: default_missing_share(),
            fill_columns: Vec::new(),
            clock_skew_secs: default_skew(),
        }
    }
}

/// What a sync run reports when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The stream.
    pub stream: String,
    /// Pages fetched.
    pub pages: u64,
    /// Records fetched.
    pub records: u64,
    /// Records landed in the warehouse table.
    pub upserted: u64,
    /// Records sent to quarantine by schema drift.
    pub quarantined: u64,
    /// Columns added for new fields.
    pub columns_added: Vec<String>,
    /// The watermark the next incremental run starts from.
    pub watermark: Option<String>,
    /// Records whose id the traversal had already read (a listing that repeats records
    /// across pages; each landed once, the newest version winning). Counted when the
    /// vendor reports a total.
    #[serde(default)]
    pub repeated: u64,
    /// The vendor's total for the listing, when it reports one; the traversal held at
    /// least that many distinct ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_total: Option<u64>,
    /// Whether every record from before the watermark is known to have been read: false
    /// while a backfill has not completed (`cairn sync --wait` then exits 1).
    #[serde(default = "complete")]
    pub history_complete: bool,
    /// Why the history is incomplete, and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
}

fn complete() -> bool {
    true
}

impl Default for SyncReport {
    fn default() -> Self {
        Self {
            stream: String::new(),
            pages: 0,
            records: 0,
            upserted: 0,
            quarantined: 0,
            columns_added: Vec::new(),
            watermark: None,
            repeated: 0,
            vendor_total: None,
            history_complete: true,
            history: None,
        }
    }
}

/// Progress as shown by `runs show` and `cairn sync --wait`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Pages landed.
    pub pages: u64,
    /// Records landed.
    pub records: u64,
    /// The vendor's total, when it reports one.
    pub total: Option<u64>,
    /// Records still to come, when the total is known.
    pub remaining: Option<u64>,
}

/// Records landed by this process's sync runs, per source and stream (a Prometheus
/// counter, exported where a process installs a recorder: `cairn worker --http`).
pub const RECORDS_SYNCED: &str = "cairn_records_synced_total";

/// One sync's source, stream and warehouse, rebuilt on every execution of a run (it is
/// configuration, not state: everything a run has done lives in its checkpoints).
pub(crate) struct Sync {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) source_name: String,
    /// The warehouse schema the stream's table is in.
    pub(crate) schema: String,
    pub(crate) stream: StreamInfo,
    pub(crate) spec: StreamSpec,
    pub(crate) warehouse: Warehouse,
    /// The least time between two of this run's requests (a fill's low priority).
    pub(crate) pace: Option<std::time::Duration>,
    /// When this run last sent a request.
    pub(crate) last_request: std::sync::Mutex<Option<std::time::Instant>>,
    /// The page requested ahead of its fetch step.
    pub(crate) ahead: read_ahead::ReadAhead,
}

impl Sync {
    pub(crate) async fn open(ctx: &Context, input: &SyncInput) -> Result<Self, Error> {
        let sources::OpenedSource {
            source,
            name: source_name,
            schema,
            described,
        } = sources::open(ctx.provided::<Sources>(), ctx.pool(), input).await?;
        let stream = source
            .streams()
            .into_iter()
            .find(|s| s.name == input.stream)
            .ok_or_else(|| {
                Error::permanent(format!(
                    "source `{source_name}` ({described}) has no stream `{}`",
                    input.stream
                ))
                .with_category("config")
            })?;
        let mut spec = StreamSpec::new(stream.name.clone(), stream.primary_key.clone())
            .with_cursor_type(stream.cursor_type, stream.max_future_skew_secs);
        spec.cursor_field = stream.cursor_field.clone();
        spec.clock_lag_secs = input.clock_skew_secs;
        let warehouse = Warehouse::new(&source_name, &schema)
            .permanent()?
            .with_sealer(ctx.sealer().clone());
        Ok(Self {
            source,
            source_name,
            schema,
            stream,
            spec,
            warehouse,
            pace: None,
            last_request: std::sync::Mutex::new(None),
            ahead: read_ahead::ReadAhead::default(),
        })
    }

    /// The stream's key in the engine's sync state.
    pub(crate) fn key(&self) -> state::StreamKey {
        state::StreamKey {
            source: self.source_name.clone(),
            schema: self.schema.clone(),
            stream: self.stream.name.clone(),
        }
    }
}
