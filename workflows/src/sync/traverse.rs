//! One traversal of a stream: every page fetched in a checkpointed step of its own,
//! landed in transactional steps of at least [`LANDING_RECORDS`] records, up to
//! [`LANDINGS_IN_FLIGHT`] of them beside the next fetch; and what the traversal keeps
//! when it ends (an incremental's watermark, a backfill's completion and resume point).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as Context_, Poll};

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::record::{Record, Unreadable};
use cairn_connectors::source::{Page, Source};
use cairn_connectors::warehouse::PageReport;
use cairn_connectors::watermark::CursorType;
use cairn_runner::{Context, Error};
use chrono::Utc;
use tracing::Instrument;

use super::{Progress, Sync, SyncReport, state};

impl Sync {
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
