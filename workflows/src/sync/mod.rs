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
use std::task::{Context as Context_, Poll};

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::record::{Record, Unreadable};
use cairn_connectors::rest::{RestConfig, RestSource};
use cairn_connectors::source::{Page, Source, StreamInfo};
use cairn_connectors::warehouse::{PageReport, StreamSpec, Warehouse};
use cairn_connectors::watermark::CursorType;
use cairn_runner::{Context, Error, ResultExt};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

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
    /// An input for `stream` of the source in `source_toml`.
    pub fn new(source_toml: String, source_file: String, stream: String) -> Self {
        Self {
            source_toml,
            source_file,
            stream,
            base_url: None,
            warehouse_schema: None,
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
    /// The warehouse schema the stream's table is in.
    pub(crate) schema: String,
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
        if let Some(schema) = &input.warehouse_schema {
            config = config
                .with_schema(schema)
                .map_err(|err| Error::permanent(err).with_category("config"))?;
        }
        let source_name = config.name().to_owned();
        let schema = config.warehouse_schema().to_owned();
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
        let mut spec = StreamSpec::new(stream.name.clone(), stream.primary_key.clone())
            .with_cursor_type(stream.cursor_type, stream.max_future_skew_secs);
        spec.cursor_field = stream.cursor_field.clone();
        let warehouse = Warehouse::new(&source_name, &schema).permanent()?;
        Ok(Self {
            source: Arc::new(source),
            source_name,
            schema,
            stream,
            spec,
            warehouse,
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

    /// Fetches every page from `start` and lands them. With a `plan` (incremental) the
    /// traversal owns the stream's watermark and moves it with its last landing; a
    /// backfill passes none and leaves it alone.
    ///
    /// Each page is fetched in a step of its own, but pages land in batches of at least
    /// [`LANDING_RECORDS`] records, one transactional step per batch: a commit and a
    /// handful of statements per hundred-record page cost as much as the page's rows.
    /// Batch bounds depend only on the fetched pages, so they are the same on replay.
    ///
    /// Up to [`LANDINGS_IN_FLIGHT`] landings run while the next page is fetched, keeping
    /// database backends busy on both cores. They share no row of the engine's (the
    /// stream's cursor row is written by the last landing only). The last landing starts
    /// after every earlier one has committed, so the watermark never moves past records
    /// that have not landed.
    ///
    /// Steps take their positions in the order they are first polled: a landing is
    /// polled once as soon as it is made, before the next fetch, so the order is the
    /// same on every replay.
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
        let mut landed = Landed {
            cursor_type: self.spec.cursor_type,
            ..Landed::default()
        };
        let mut landings: Vec<InFlight<'_>> = Vec::new();
        let mut batch = Batch::default();
        let mut page = self.fetch(ctx, 0, &first).await?;
        loop {
            let number = traversal.pages();
            traversal
                .advance(&page)
                .map_err(|err| Error::permanent(err).with_category("pagination"))?;
            report.pages += 1;
            report.records += (page.records.len() + page.unreadable.len()) as u64;
            let done = traversal.is_done();
            batch.add(number, page);
            if done || batch.records.len() + batch.unreadable.len() >= LANDING_RECORDS {
                if done {
                    drive(std::future::ready(()), &mut landings, 1).await;
                    landed.harvest(ctx, &traversal, &mut landings)?;
                }
                // The watermark moves on what landed, never on what was only fetched.
                let finish = done.then(|| Finish {
                    earlier: landed.report.watermark.clone(),
                    plan: plan.clone(),
                    records: report.records as i64,
                });
                let batch = std::mem::take(&mut batch);
                let mut landing = InFlight::new(Box::pin(async move {
                    let (first, last, pages) = (batch.first, batch.last, batch.pages);
                    let records = (batch.records.len() + batch.unreadable.len()) as u64;
                    self.land(
                        ctx,
                        (first, last),
                        (batch.records, batch.unreadable),
                        finish,
                    )
                    .await
                    .map(|report| (report, records, pages))
                }));
                landing.poll_once().await;
                landings.push(landing);
            }
            match traversal.cursor().cloned() {
                Some(cursor) => {
                    let next = self.fetch(ctx, number + 1, &cursor);
                    let next = drive(next, &mut landings, LANDINGS_IN_FLIGHT).await;
                    landed.harvest(ctx, &traversal, &mut landings)?;
                    page = next?;
                }
                None => {
                    drive(std::future::ready(()), &mut landings, 1).await;
                    landed.harvest(ctx, &traversal, &mut landings)?;
                    report.upserted = landed.report.upserted;
                    report.quarantined = landed.report.quarantined;
                    report.watermark = plan
                        .as_ref()
                        .map(|plan| plan.next(landed.report.watermark.as_deref()));
                    report.columns_added = landed.report.columns_added;
                    return Ok(report);
                }
            }
        }
    }

    /// Fetches one page as a checkpointed step: a fetched page is never fetched again.
    ///
    /// The request and the parsing of its body run on a task of their own: the run's
    /// task also prepares landings, and a page waiting behind that work would hold up
    /// the whole chain of fetches.
    async fn fetch(&self, ctx: &Context, number: u64, cursor: &PageCursor) -> Result<Page, Error> {
        ctx.step(format!("fetch page {number}"), || {
            let source = Arc::clone(&self.source);
            let stream = self.stream.name.clone();
            let cursor = cursor.clone();
            Detached::spawn("page fetch", async move {
                Ok(source.fetch_page(&stream, &cursor).await?)
            })
        })
        .await
    }

    /// Lands the records of pages `first..=last` in one transactional step, exactly
    /// once; the last landing also records the finished traversal in the stream's
    /// cursor row.
    ///
    /// The transaction's work runs on a task of its own: classifying and encoding a
    /// thousand records takes milliseconds of CPU, which on the run's task would hold up
    /// the fetches in flight beside it.
    async fn land(
        &self,
        ctx: &Context,
        (first, last): (u64, u64),
        (records, unreadable): (Vec<Record>, Vec<Unreadable>),
        finish: Option<Finish>,
    ) -> Result<PageReport, Error> {
        let name = if first == last {
            format!("land page {first}")
        } else {
            format!("land pages {first}-{last}")
        };
        let records = Arc::new((records, unreadable));
        ctx.transaction(name, |tx| {
            let warehouse = self.warehouse.clone();
            let spec = self.spec.clone();
            let key = self.key();
            let records = Arc::clone(&records);
            let finish = finish.clone();
            Detached::spawn("landing", async move {
                let mut conn = tx.conn().await?;
                let (records, unreadable) = &*records;
                let now = Utc::now();
                let mut landed = warehouse
                    .upsert_page(&mut conn, &spec, records, now)
                    .await?;
                landed.quarantined += warehouse
                    .quarantine_unreadable(&mut conn, &spec.name, unreadable, now)
                    .await?;
                if let Some(finish) = finish {
                    let pending = spec
                        .cursor_type
                        .later(finish.earlier, landed.watermark.clone());
                    let promote = finish
                        .plan
                        .as_ref()
                        .map(|plan| plan.next(pending.as_deref()));
                    state::record_traversal(
                        &mut conn,
                        &key,
                        finish
                            .plan
                            .is_some()
                            .then_some(pending)
                            .flatten()
                            .as_deref(),
                        promote.as_deref(),
                        finish.records,
                    )
                    .await?;
                }
                Ok(landed)
            })
        })
        .await
    }
}

/// A step's work on a task of its own, aborted when its handle is dropped: a run that
/// stops (a halt drops its future) takes its work in flight with it.
struct Detached<T> {
    what: &'static str,
    task: tokio::task::JoinHandle<Result<T, Error>>,
}

impl<T: Send + 'static> Detached<T> {
    /// Spawns `work` (`what` names it if the task panics) in the current span.
    fn spawn(
        what: &'static str,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Self {
        let task = tokio::spawn(work.in_current_span());
        Self { what, task }
    }
}

impl<T> Drop for Detached<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> Future for Detached<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context_<'_>) -> Poll<Self::Output> {
        let what = self.what;
        Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| Err(Error::permanent(format!("the {what} failed: {err}"))))
        })
    }
}

/// The fewest records a landing takes (unless the traversal ends first): pages of a
/// few hundred records are gathered until they reach it.
const LANDING_RECORDS: usize = 1000;

/// Landings running at once while the next page is fetched.
const LANDINGS_IN_FLIGHT: usize = 2;

/// Fetched pages waiting to land together.
#[derive(Default)]
struct Batch {
    first: u64,
    last: u64,
    pages: u64,
    records: Vec<Record>,
    unreadable: Vec<Unreadable>,
}

impl Batch {
    fn add(&mut self, number: u64, page: Page) {
        if self.pages == 0 {
            self.first = number;
        }
        self.last = number;
        self.pages += 1;
        self.records.extend(page.records);
        self.unreadable.extend(page.unreadable);
    }
}

/// What the last landing records about the traversal.
#[derive(Clone)]
struct Finish {
    /// The highest cursor value among the records the earlier landings landed.
    earlier: Option<String>,
    /// How the watermark moves (incremental only).
    plan: Option<state::WatermarkPlan>,
    /// The records the traversal fetched.
    records: i64,
}

/// What a landing did, with the records and pages it took.
type Outcome = Result<(PageReport, u64, u64), Error>;

/// A landing step under way, and its outcome once it has one.
struct InFlight<'a> {
    future: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>,
    outcome: Option<Outcome>,
}

impl<'a> InFlight<'a> {
    fn new(future: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>) -> Self {
        Self {
            future,
            outcome: None,
        }
    }

    /// Polls the landing once: its first poll gives it its step position.
    async fn poll_once(&mut self) {
        std::future::poll_fn(|cx| {
            self.poll(cx);
            Poll::Ready(())
        })
        .await;
    }

    fn poll(&mut self, cx: &mut Context_<'_>) {
        if self.outcome.is_none()
            && let Poll::Ready(outcome) = self.future.as_mut().poll(cx)
        {
            self.outcome = Some(outcome);
        }
    }
}

/// Runs `wait` to its end while driving every landing in flight, and returns once it
/// has ended and fewer than `below` landings are still running.
async fn drive<W: Future>(wait: W, landings: &mut [InFlight<'_>], below: usize) -> W::Output {
    let mut wait = std::pin::pin!(wait);
    let mut output = None;
    std::future::poll_fn(|cx| {
        for landing in landings.iter_mut() {
            landing.poll(cx);
        }
        if output.is_none()
            && let Poll::Ready(done) = wait.as_mut().poll(cx)
        {
            output = Some(done);
        }
        let running = landings.iter().filter(|l| l.outcome.is_none()).count();
        match output.take() {
            Some(done) if running < below => Poll::Ready(done),
            done => {
                output = done;
                Poll::Pending
            }
        }
    })
    .await
}

/// What the finished landings did, in whatever order they finished.
#[derive(Default)]
struct Landed {
    cursor_type: CursorType,
    report: PageReport,
    pages: u64,
    records: u64,
}

impl Landed {
    /// Takes the finished landings out of `landings`, counts them and reports the
    /// progress they make; the first failed one is the traversal's error.
    fn harvest(
        &mut self,
        ctx: &Context,
        traversal: &Traversal,
        landings: &mut Vec<InFlight<'_>>,
    ) -> Result<(), Error> {
        let mut finished = Vec::new();
        landings.retain_mut(|landing| match landing.outcome.take() {
            Some(outcome) => {
                finished.push(outcome);
                false
            }
            None => true,
        });
        if finished.is_empty() {
            return Ok(());
        }
        for outcome in finished {
            let (page, records, pages) = outcome?;
            self.pages += pages;
            self.records += records;
            self.report.upserted += page.upserted;
            self.report.quarantined += page.quarantined;
            self.report.watermark = self
                .cursor_type
                .later(self.report.watermark.take(), page.watermark);
            self.report.columns_added.extend(page.columns_added);
        }
        let total = traversal.total();
        ctx.set_progress(&Progress {
            pages: self.pages,
            records: self.records,
            total,
            remaining: total.map(|t| t.saturating_sub(self.records)),
        })
    }
}
