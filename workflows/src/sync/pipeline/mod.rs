//! `sync.pipeline`: a source's stream written to a destination's API (`cairn sync
//! a.toml --to b.toml`), exactly once per change even when acknowledgements are lost.
//!
//! Each page is fetched in a checkpointed step, then written in a transactional step of
//! its own. While that step runs, every write the destination acknowledges is recorded
//! at once (`cairn.pipeline_acks`); the step's transaction then records what became of
//! each record (its id and ETag at the destination, the dead letters, the alerts) and,
//! with the last page, moves the pipeline's watermark. A crash anywhere re-runs the step
//! at the same position: it sends only the writes not acknowledged, under the same
//! idempotency keys (the run, the step's position and the record), so a `post` the
//! destination applied before the crash is answered from its memory, a `put` lands the
//! same record again, and a `patch` finds the record already holds it.

mod state;
mod write;

use cairn_connectors::destination::{Destination, DestinationConfig};
use cairn_connectors::paginate::{JsonPath, PageCursor};
use cairn_connectors::source::Page;
use cairn_runner::{Context, Error, ResultExt};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Sync, SyncInput};
use state::PipelineKey;
pub use state::{DESTINATION_REJECTS, purge_rejects};
use write::{PageWrite, PageWritten};

/// The registered name of the pipeline workflow.
pub const PIPELINE: &str = "sync.pipeline";

/// Writes in flight at once when the input does not say: enough to keep a rate budget
/// of tens of requests per second busy over a slow link.
const DEFAULT_CONCURRENCY: usize = 8;

/// What a pipeline run takes: the source side as a sync's, and the destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInput {
    /// The source and the stream read, as a sync run takes them.
    pub source: SyncInput,
    /// The destination's TOML text (credentials in it are references, never values).
    pub destination_toml: String,
    /// The file it was read from, for messages.
    pub destination_file: String,
    /// The destination stream written; by default the source stream's name.
    #[serde(default)]
    pub destination_stream: Option<String>,
    /// Overrides the destination's `base_url`.
    #[serde(default)]
    pub destination_base_url: Option<String>,
    /// Writes in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

impl PipelineInput {
    /// `source` written to the destination in `destination_toml`.
    pub fn new(source: SyncInput, destination_toml: String, destination_file: String) -> Self {
        Self {
            source,
            destination_toml,
            destination_file,
            destination_stream: None,
            destination_base_url: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// The destination's configuration, as the run sees it.
    pub fn destination(&self) -> Result<DestinationConfig, Error> {
        let config = DestinationConfig::parse(&self.destination_toml, &self.destination_file)
            .permanent()
            .map_err(|err| err.with_category("config"))?;
        match &self.destination_base_url {
            Some(url) => config
                .with_base_url(url)
                .permanent()
                .map_err(|err| err.with_category("config")),
            None => Ok(config),
        }
    }
}

/// What a pipeline run reports when it ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// The source stream.
    pub stream: String,
    /// The destination stream.
    pub destination_stream: String,
    /// Pages fetched.
    pub pages: u64,
    /// Records fetched.
    pub records: u64,
    /// Records the destination holds from this run.
    pub applied: u64,
    /// Of those, writes the destination had already applied (a lost answer, sent again).
    pub repeated: u64,
    /// Records of a `post` stream created by an earlier run, not created again.
    pub already_created: u64,
    /// Records the destination refused, on the dead-letter list.
    pub rejected: u64,
    /// Records a conflict policy left as the destination has them.
    pub conflicts: u64,
    /// The watermark the next run reads from.
    pub watermark: Option<String>,
}

impl PipelineReport {
    fn add(&mut self, page: &Page, written: &PageWritten) {
        self.pages += 1;
        self.records += page.records.len() as u64;
        self.applied += written.applied;
        self.repeated += written.repeated;
        self.already_created += written.already_created;
        self.rejected += written.rejected;
        self.conflicts += written.conflicts;
    }
}

/// Where a run starts: read once, in a checkpointed step.
#[derive(Serialize, Deserialize)]
struct Start {
    watermark: Option<String>,
    started_at: DateTime<Utc>,
}

/// Fetches the source stream's records changed since the pipeline's watermark (all of
/// them the first time) and writes each to the destination stream; see the module docs
/// for how a lost answer or a crash never writes a record twice.
pub async fn pipeline(ctx: Context, input: PipelineInput) -> Result<PipelineReport, Error> {
    let sync = Sync::open(&ctx, &input.source).await?;
    let config = input.destination()?;
    let key = PipelineKey {
        source: sync.source_name.clone(),
        stream: sync.stream.name.clone(),
        destination: config.name().to_owned(),
        dest_stream: input
            .destination_stream
            .clone()
            .unwrap_or_else(|| sync.stream.name.clone()),
    };
    if config.stream(&key.dest_stream).is_none() {
        return Err(Error::permanent(format!(
            "destination `{}` ({}) has no stream `{}`",
            config.name(),
            config.file(),
            key.dest_stream
        ))
        .with_category("config"));
    }
    let primary_key: JsonPath = sync
        .stream
        .primary_key
        .parse()
        .permanent()
        .map_err(|err| err.with_category("config"))?;
    let dest = Destination::open(config, Some(ctx.pool().clone())).await?;
    let incremental = sync.stream.incremental && sync.stream.cursor_field.is_some();
    let start: Start = ctx
        .step("load pipeline watermark", || async {
            Ok(Start {
                watermark: if incremental {
                    state::watermark(ctx.pool(), &key).await?
                } else {
                    None
                },
                started_at: Utc::now(),
            })
        })
        .await?;
    let plan = super::state::WatermarkPlan {
        cursor_type: sync.spec.cursor_type,
        old: start.watermark.clone(),
        started_at: start.started_at,
        skew: chrono::Duration::seconds(i64::try_from(input.source.clock_skew_secs).unwrap_or(0)),
    };
    let mut cursor = match &start.watermark {
        Some(watermark) => PageCursor::since(watermark.clone()),
        None => PageCursor::start(),
    };
    let mut report = PipelineReport {
        stream: key.stream.clone(),
        destination_stream: key.dest_stream.clone(),
        ..PipelineReport::default()
    };
    let mut highest: Option<String> = None;
    loop {
        let n = report.pages + 1;
        let page: Page = ctx
            .step(format!("fetch page {n}"), || async {
                Ok(sync.source.fetch_page(&key.stream, &cursor).await?)
            })
            .await?;
        highest = sync.spec.cursor_type.later(highest, page.watermark.clone());
        let last = page.next.is_none();
        let watermark = (last && incremental).then(|| plan.next(highest.as_deref()));
        let write = PageWrite {
            ctx: &ctx,
            dest: &dest,
            key: &key,
            primary_key: &primary_key,
            page: &page,
            concurrency: input.concurrency,
            watermark: watermark.as_deref(),
        };
        let written: PageWritten = ctx
            .transaction(format!("write page {n}"), |tx| write.run(tx))
            .await?;
        report.add(&page, &written);
        ctx.set_progress(&report)?;
        match page.next {
            Some(next) => cursor = next,
            None => {
                report.watermark = watermark;
                return Ok(report);
            }
        }
    }
}
