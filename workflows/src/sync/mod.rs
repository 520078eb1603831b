//! The sync workflows: keep a warehouse table per stream equal to a vendor's data.
//!
//! - [`incremental`]: from the stream's watermark, fetch changed records page by page and
//!   land each page together with the watermark's advance, exactly once.
//! - [`backfill`]: the full history on its own run; the watermark jumps to the
//!   backfill's launch so incremental runs go on meanwhile, and both land through the
//!   same upsert (an older version never overwrites a newer one).
//! - [`reconcile`]: fetch the vendor's whole id set and mark rows absent from it
//!   deleted, refusing when the set looks incomplete.
//! - [`sync_schedules`]: cron schedules running each stream's incremental sync on a
//!   cadence and its reconciliation on a slower one.
//!
//! Every fetch is a checkpointed step, so a page fetched before a crash is never
//! fetched again; every landing is a transactional step, so it takes effect once.
//!
//! A run carries its source's TOML in its input (credentials in it are references to
//! env vars, files or commands, never values), so any worker can execute it.

mod backfill;
mod incremental;
mod reconcile;
mod schedule;
mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::rest::{RestConfig, RestSource};
use cairn_connectors::source::{Page, Source, StreamInfo};
use cairn_connectors::warehouse::{PageReport, StreamSpec, Warehouse};
use cairn_runner::{Context, Error, ResultExt};
use chrono::Utc;
use serde::{Deserialize, Serialize};

pub use backfill::backfill;
pub use incremental::incremental;
pub use reconcile::reconcile;
pub use schedule::{SyncCadence, schedule_name, sync_schedules};

/// The registered name of the incremental sync.
pub const INCREMENTAL: &str = "sync.incremental";
/// The registered name of the backfill.
pub const BACKFILL: &str = "sync.backfill";
/// The registered name of the delete reconciliation.
pub const RECONCILE: &str = "sync.reconcile";

/// The schema the warehouse tables live in.
pub const WAREHOUSE_SCHEMA: &str = "warehouse";

/// What every sync run takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    /// The source's TOML text.
    pub source_toml: String,
    /// The file it was read from, for messages.
    pub source_file: String,
    /// The stream to sync.
    pub stream: String,
    /// Overrides the source's `base_url` (a sandbox on another port, a staging API).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The schema of the warehouse tables.
    #[serde(default = "default_schema")]
    pub warehouse_schema: String,
    /// Reconcile only: apply deletes even when the id set looks incomplete.
    #[serde(default)]
    pub force: bool,
    /// Reconcile only: refuse when more than this share of the live rows would be
    /// deleted at once.
    #[serde(default = "default_missing_share")]
    pub max_missing_share: f64,
    /// How far the vendor's clock may run behind ours. A traversal's watermark is kept
    /// this far behind the traversal's start, so a change made while it paged is read
    /// again by the next run instead of being skipped.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
}

fn default_schema() -> String {
    WAREHOUSE_SCHEMA.to_owned()
}

fn default_missing_share() -> f64 {
    0.5
}

fn default_skew() -> u64 {
    5
}

impl SyncInput {
    /// An input for `stream` of the source in `source_toml`.
    pub fn new(source_toml: String, source_file: String, stream: String) -> Self {
        Self {
            source_toml,
            source_file,
            stream,
            base_url: None,
            warehouse_schema: default_schema(),
            force: false,
            max_missing_share: default_missing_share(),
            clock_skew_secs: default_skew(),
        }
    }
}

/// What a sync run reports when it ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// One sync's source, stream and warehouse, rebuilt on every execution of a run (it is
/// configuration, not state: everything a run has done lives in its checkpoints).
pub(crate) struct Sync {
    pub(crate) source: Arc<RestSource>,
    pub(crate) source_name: String,
    pub(crate) stream: StreamInfo,
    pub(crate) spec: StreamSpec,
    pub(crate) warehouse: Warehouse,
}

impl Sync {
    pub(crate) async fn open(ctx: &Context, input: &SyncInput) -> Result<Self, Error> {
        let mut config = RestConfig::parse(&input.source_toml, &input.source_file)
            .map_err(|err| Error::permanent(err).with_category("config"))?;
        if let Some(base_url) = &input.base_url {
            config = config
                .with_base_url(base_url)
                .map_err(|err| Error::permanent(err).with_category("config"))?;
        }
        let source_name = config.name().to_owned();
        let source = RestSource::new(config, Some(ctx.pool().clone())).await?;
        let stream = source
            .streams()
            .into_iter()
            .find(|s| s.name == input.stream)
            .ok_or_else(|| {
                Error::permanent(format!(
                    "source `{source_name}` ({}) has no stream `{}`",
                    input.source_file, input.stream
                ))
                .with_category("config")
            })?;
        let spec = StreamSpec {
            name: stream.name.clone(),
            primary_key: stream.primary_key.clone(),
            cursor_field: stream.cursor_field.clone(),
        };
        let warehouse = Warehouse::new(&input.warehouse_schema).permanent()?;
        Ok(Self {
            source: Arc::new(source),
            source_name,
            stream,
            spec,
            warehouse,
        })
    }

    /// Fetches every page from `start` and lands each. With a `plan` (incremental) the
    /// traversal owns the stream's watermark and moves it with its last page; a backfill
    /// passes none and leaves it alone.
    ///
    /// Three steps are in flight at once: the landing of page N - 1, the landing of page
    /// N and the fetch of page N + 1 (the next cursor is known once a page is fetched).
    /// Two landings keep two database backends busy, where one would leave a core idle
    /// while the other waits on its commit. They share no row of the engine's (the
    /// stream's cursor row is written by the last page only), so neither waits for the
    /// other. The last page lands alone, after every earlier page, so the watermark
    /// never moves past a page that has not landed.
    ///
    /// Steps take their positions in the order they are first polled, and that order
    /// is fixed (landing N, then fetch N + 1), so it is the same on every replay.
    pub(crate) async fn traverse(
        &self,
        ctx: &Context,
        start: PageCursor,
        plan: Option<state::WatermarkPlan>,
    ) -> Result<SyncReport, Error> {
        let mut traversal = Traversal::new(start);
        let mut report = SyncReport {
            stream: self.stream.name.clone(),
            ..SyncReport::default()
        };
        let Some(first) = traversal.cursor().cloned() else {
            return Ok(report);
        };
        let mut landed = Landed::default();
        let mut pending: Option<String> = None;
        let mut earlier: Option<Landing<'_>> = None;
        let mut page = self.fetch(ctx, 0, &first).await?;
        loop {
            let number = traversal.pages();
            traversal
                .advance(&page)
                .map_err(|err| Error::permanent(err).with_category("pagination"))?;
            pending = cairn_connectors::source::later_watermark(pending, page.watermark.clone());
            report.pages += 1;
            report.records += page.records.len() as u64;
            let finish = traversal.is_done().then(|| Finish {
                pending: plan.is_some().then(|| pending.clone()).flatten(),
                promote: plan.as_ref().map(|plan| plan.next(pending.as_deref())),
                records: report.records as i64,
            });
            if finish.is_some()
                && let Some(landing) = earlier.take()
            {
                landed.add(ctx, &traversal, landing.await?)?;
            }
            let promote = finish.as_ref().and_then(|f| f.promote.clone());
            let mut current: Landing<'_> = Box::pin(async move {
                let result = self.land(ctx, number, &page, finish.as_ref()).await;
                result.map(|report| (report, page.records.len() as u64))
            });
            // Its first poll gives the landing its position, before the fetch takes the next.
            let mut current_result = poll_once(&mut current).await;
            let cursor = traversal.cursor().cloned();
            let (before, next) = {
                let before = async {
                    match earlier.take() {
                        Some(landing) => Some(landing.await),
                        None => None,
                    }
                };
                let next = async {
                    match &cursor {
                        Some(cursor) => Some(self.fetch(ctx, number + 1, cursor).await),
                        None => None,
                    }
                };
                alongside(
                    async { tokio::join!(before, next) },
                    &mut current,
                    &mut current_result,
                )
                .await
            };
            if let Some(before) = before {
                landed.add(ctx, &traversal, before?)?;
            }
            match next {
                Some(next) => {
                    earlier = Some(match current_result {
                        Some(result) => Box::pin(std::future::ready(result)),
                        None => current,
                    });
                    page = next?;
                }
                None => {
                    let last = match current_result {
                        Some(result) => result,
                        None => current.await,
                    };
                    landed.add(ctx, &traversal, last?)?;
                    report.upserted = landed.report.upserted;
                    report.quarantined = landed.report.quarantined;
                    report.columns_added = landed.report.columns_added;
                    report.watermark = promote;
                    return Ok(report);
                }
            }
        }
    }

    /// Fetches one page as a checkpointed step: a fetched page is never fetched again.
    async fn fetch(&self, ctx: &Context, number: u64, cursor: &PageCursor) -> Result<Page, Error> {
        ctx.step(format!("fetch page {number}"), || async {
            Ok(self.source.fetch_page(&self.stream.name, cursor).await?)
        })
        .await
    }

    /// Lands one page in one transactional step, exactly once; the last page also
    /// records the finished traversal in the stream's cursor row.
    async fn land(
        &self,
        ctx: &Context,
        number: u64,
        page: &Page,
        finish: Option<&Finish>,
    ) -> Result<PageReport, Error> {
        ctx.transaction(format!("land page {number}"), |tx| async move {
            let mut conn = tx.conn().await?;
            let landed = self
                .warehouse
                .upsert_page(&mut conn, &self.spec, &page.records, Utc::now())
                .await?;
            if let Some(finish) = finish {
                state::record_traversal(
                    &mut conn,
                    &self.source_name,
                    &self.stream.name,
                    finish.pending.as_deref(),
                    finish.promote.as_deref(),
                    finish.records,
                )
                .await?;
            }
            Ok(landed)
        })
        .await
    }
}

/// What the last page's landing records about the traversal.
struct Finish {
    /// The highest marker the traversal saw (incremental only).
    pending: Option<String>,
    /// The watermark for the next run (incremental only).
    promote: Option<String>,
    /// The records the traversal fetched.
    records: i64,
}

/// A page's landing step, with the number of records the page held.
type Landing<'a> = Pin<Box<dyn Future<Output = Result<(PageReport, u64), Error>> + Send + 'a>>;

/// What the landings so far did, in whatever order they finished.
#[derive(Default)]
struct Landed {
    report: PageReport,
    pages: u64,
    records: u64,
}

impl Landed {
    /// Counts one finished landing and reports the progress it makes.
    fn add(
        &mut self,
        ctx: &Context,
        traversal: &Traversal,
        (page, records): (PageReport, u64),
    ) -> Result<(), Error> {
        self.pages += 1;
        self.records += records;
        self.report.upserted += page.upserted;
        self.report.quarantined += page.quarantined;
        self.report.columns_added.extend(page.columns_added);
        let total = traversal.total();
        ctx.set_progress(&Progress {
            pages: self.pages,
            records: self.records,
            total,
            remaining: total.map(|t| t.saturating_sub(self.records)),
        })
    }
}

/// Polls `future` once: its result if it finished at once (a replayed step does).
async fn poll_once<T>(future: &mut Pin<Box<dyn Future<Output = T> + Send + '_>>) -> Option<T> {
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Runs `wait` to its end while also driving `side` (storing its result once it
/// finishes), so a landing keeps going while the traversal waits for other steps.
async fn alongside<W: Future, T>(
    wait: W,
    side: &mut Pin<Box<dyn Future<Output = T> + Send + '_>>,
    side_result: &mut Option<T>,
) -> W::Output {
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if side_result.is_none()
            && let Poll::Ready(result) = side.as_mut().poll(cx)
        {
            *side_result = Some(result);
        }
        wait.as_mut().poll(cx)
    })
    .await
}
