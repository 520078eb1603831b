//! One traversal of a stream: every page fetched in a checkpointed step of its own,
//! landed in transactional steps of at least [`LANDING_RECORDS`] records, up to
//! [`LANDINGS_IN_FLIGHT`] of them beside the next fetch; and what the traversal keeps
//! when it ends (an incremental's watermark, a backfill's completion and resume point).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as Context_, Poll};

use cairn_connectors::paginate::{JsonPath, PageCursor, PaginationError, SeenIds, Traversal};
use cairn_connectors::record::{Record, Unreadable};
use cairn_connectors::source::{Page, Source};
use cairn_connectors::warehouse::{NewAlert, PageReport, raise_alerts};
use cairn_connectors::watermark::CursorType;
use cairn_runner::{Context, Error};
use chrono::Utc;
use tracing::Instrument;

use super::{Progress, Sync, SyncReport, state};

/// What a traversal keeps besides its records.
#[derive(Clone, Debug)]
pub(crate) enum Keeps {
    /// An incremental read: the watermark moves as `plan` says with the last landing.
    /// A read from no watermark is a full read, and completes the stream's history;
    /// `incomplete` says why the history is not complete, if it is not.
    Watermark {
        plan: state::WatermarkPlan,
        full_read: bool,
        incomplete: Option<String>,
    },
    /// A backfill: each landing records how far the landed batches reach (so a later
    /// backfill resumes there), the last one completes the stream's history.
    Backfill,
    /// A column fill: nothing but the records, and the `new_columns` alert resolved at
    /// the end.
    Fill,
}

impl Sync {
    /// Fetches every page from the traversal's cursor and lands them, keeping what
    /// `keeps` says with the landings.
    ///
    /// Each page is fetched in a step of its own, but pages land in batches of at least
    /// [`LANDING_RECORDS`] records, one transactional step per batch: a commit and a
    /// handful of statements per hundred-record page cost as much as the page's rows.
    /// Batch bounds depend only on the fetched pages, so they are the same on replay.
    ///
    /// Up to [`LANDINGS_IN_FLIGHT`] landings run while the next page is fetched, keeping
    /// database backends busy on both cores. The last landing starts after every earlier
    /// one has committed, so the watermark never moves past records that have not
    /// landed; a backfill's resume point only ever names a page that every landing
    /// before it has passed.
    ///
    /// Steps take their positions in the order they are first polled: a landing is
    /// polled once as soon as it is made, before the next fetch, so the order is the
    /// same on every replay.
    pub(crate) async fn traverse(
        &self,
        ctx: &Context,
        mut traversal: Traversal,
        keeps: Keeps,
    ) -> Result<SyncReport, Error> {
        let mut report = SyncReport {
            stream: self.stream.name.clone(),
            ..SyncReport::default()
        };
        if let Keeps::Watermark {
            incomplete: Some(problem),
            ..
        } = &keeps
        {
            report.history_complete = false;
            report.history = Some(problem.clone());
        }
        let Some(first) = traversal.cursor().cloned() else {
            return Ok(report);
        };
        let (pages_before, records_before) = (traversal.pages(), traversal.fetched());
        let mut landed = Landed {
            cursor_type: self.spec.cursor_type,
            before: records_before,
            ..Landed::default()
        };
        let mut landings: Vec<InFlight<'_>> = Vec::new();
        let mut batch = Batch::starting(&first, pages_before, records_before);
        let mut page = self.fetch(ctx, pages_before, &first).await?;
        // The distinct ids read, counted once the vendor reports a total to hold them to.
        let mut seen = SeenIds::default();
        let key: JsonPath = self.stream.primary_key.parse().unwrap_or_default();
        let mut short: Option<String> = None;
        loop {
            let number = traversal.pages();
            let at = traversal.cursor().cloned();
            match traversal.advance(&page) {
                Ok(()) => {}
                // Paging that ended early still lands what it read, and then fails loudly.
                Err(err @ PaginationError::TotalMismatch { .. }) => short = Some(err.to_string()),
                Err(err) => return Err(Error::permanent(err).with_category("pagination")),
            }
            report.pages += 1;
            report.records += (page.records.len() + page.unreadable.len()) as u64;
            seen.add(
                page.records
                    .iter()
                    .filter_map(|record| record.text_at(&key)),
            );
            let done = traversal.is_done();
            if !done {
                // A vendor that names fresh cursors over the same records passes every
                // cursor check; stop it, and a listing longer than `max_pages`.
                let at = at.map(|cursor| cursor.position).unwrap_or_default();
                seen.may_continue(&at, self.stream.max_pages)
                    .map_err(|err| {
                        Error::permanent(format!("stream {:?}: {err}", self.stream.name))
                            .with_category("pagination")
                    })?;
            }
            if done
                && short.is_none()
                && let Some(total) = traversal.total()
                && records_before + seen.distinct() < total
            {
                // A resumed backfill counts what the runs before it read as distinct.
                short = Some(format!(
                    "the vendor reported a total of {total} but its pages held {} distinct \
                     ids ({} more than once)",
                    records_before + seen.distinct(),
                    seen.repeated()
                ));
            }
            batch.add(number, page);
            if done || batch.records.len() + batch.unreadable.len() >= LANDING_RECORDS {
                if done {
                    drive(std::future::ready(()), &mut landings, 1).await;
                    landed.harvest(ctx, &traversal, &mut landings)?;
                }
                let after = if let Some(problem) = short.as_ref().filter(|_| done) {
                    After::Short(format!(
                        "the listing of stream {:?} looks incomplete, so its sync did not \
                         complete and its watermark did not move: {problem}",
                        self.stream.name
                    ))
                } else if done {
                    // The watermark moves on what landed, never on what was only fetched.
                    After::Finish(Finish {
                        earlier: landed.report.watermark.clone(),
                        keeps: keeps.clone(),
                        records: report.records as i64,
                    })
                } else if matches!(keeps, Keeps::Backfill) {
                    // Every batch before the first still in flight has landed.
                    let reached = match landings.first().and_then(|l| l.start.clone()) {
                        Some(earliest) => earliest,
                        None => state::Resume {
                            page: traversal.pages(),
                            records: traversal.fetched(),
                            cursor: traversal
                                .cursor()
                                .cloned()
                                .unwrap_or_else(PageCursor::start),
                        },
                    };
                    After::Reached(reached, traversal.total())
                } else {
                    After::Nothing
                };
                let next_start = traversal
                    .cursor()
                    .map(|cursor| Batch::starting(cursor, traversal.pages(), traversal.fetched()));
                let batch = std::mem::replace(&mut batch, next_start.unwrap_or_default());
                let start = batch.start.clone();
                let mut landing = InFlight::new(
                    start,
                    Box::pin(async move {
                        let (first, last, pages) = (batch.first, batch.last, batch.pages);
                        let records = (batch.records.len() + batch.unreadable.len()) as u64;
                        self.land(ctx, (first, last), (batch.records, batch.unreadable), after)
                            .await
                            .map(|report| (report, records, pages))
                    }),
                );
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
                    if let Some(problem) = short {
                        return Err(Error::permanent(format!(
                            "stream {:?}: {problem}; the records read have landed",
                            self.stream.name
                        ))
                        .with_category("pagination"));
                    }
                    report.repeated = seen.repeated();
                    report.vendor_total = traversal.total();
                    report.upserted = landed.report.upserted;
                    report.quarantined = landed.report.quarantined;
                    if let Keeps::Watermark { plan, .. } = &keeps {
                        report.watermark = Some(plan.next(landed.report.watermark.as_deref()));
                    }
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
    /// the whole chain of fetches. A failure an operator must hear about (credentials
    /// refused, a vendor that blocks the source past the wait cap) raises an alert.
    async fn fetch(&self, ctx: &Context, number: u64, cursor: &PageCursor) -> Result<Page, Error> {
        ctx.step(format!("fetch page {number}"), || {
            let source = Arc::clone(&self.source);
            let stream = self.stream.name.clone();
            let cursor = cursor.clone();
            async move {
                self.paced().await;
                let fetched = Detached::spawn("page fetch", async move {
                    Ok(source.fetch_page(&stream, &cursor).await)
                })
                .await?;
                match fetched {
                    Ok(page) => Ok(page),
                    Err(err) => {
                        super::vendor_alerts::raise(ctx, &self.key(), &err).await;
                        Err(err.into())
                    }
                }
            }
        })
        .await
    }

    /// Waits until this run may send its next request, when it is paced (a fill).
    async fn paced(&self) {
        let Some(pace) = self.pace else {
            return;
        };
        let at = {
            let mut last = self
                .last_request
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            let at = last.map_or(now, |last| (last + pace).max(now));
            *last = Some(at);
            at
        };
        tokio::time::sleep_until(at.into()).await;
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
        after: After,
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
            let after = after.clone();
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
                match after {
                    After::Nothing => {}
                    After::Short(message) => {
                        let alert = NewAlert {
                            kind: "incomplete_listing".to_owned(),
                            source: key.source.clone(),
                            stream: key.stream.clone(),
                            detail: "the listing held fewer distinct ids than its total".to_owned(),
                            message,
                        };
                        raise_alerts(&mut conn, &[alert]).await?;
                    }
                    After::Reached(resume, total) => {
                        state::backfill_reached(&mut conn, &key, &resume, total).await?;
                    }
                    After::Finish(finish) => {
                        finish
                            .keep(&mut conn, &key, spec.cursor_type, &landed)
                            .await?;
                    }
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
    /// Where its first page was fetched from, and what came before it.
    start: Option<state::Resume>,
    first: u64,
    last: u64,
    pages: u64,
    records: Vec<Record>,
    unreadable: Vec<Unreadable>,
}

impl Batch {
    /// An empty batch whose first page is fetched at `cursor`, after `pages` pages and
    /// `records` records.
    fn starting(cursor: &PageCursor, pages: u64, records: u64) -> Self {
        Self {
            start: Some(state::Resume {
                page: pages,
                records,
                cursor: cursor.clone(),
            }),
            ..Self::default()
        }
    }

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

/// What a landing records beside its records, in the same transaction.
#[derive(Clone)]
enum After {
    Nothing,
    /// The traversal's last landing, over a listing that held fewer distinct ids than its
    /// total: an `incomplete_listing` alert with this message, and nothing kept.
    Short(String),
    /// A backfill's batch: every page before this point has landed (and the vendor's
    /// total, for progress).
    Reached(state::Resume, Option<u64>),
    /// The traversal's last landing.
    Finish(Finish),
}

/// What the last landing records about the traversal.
#[derive(Clone)]
struct Finish {
    /// The highest cursor value among the records the earlier landings landed.
    earlier: Option<String>,
    keeps: Keeps,
    /// The records the traversal fetched.
    records: i64,
}

impl Finish {
    /// Keeps what the traversal keeps, once its last records have landed (`landed`).
    async fn keep(
        self,
        conn: &mut sqlx::PgConnection,
        key: &state::StreamKey,
        cursor_type: CursorType,
        landed: &PageReport,
    ) -> Result<(), Error> {
        match self.keeps {
            Keeps::Watermark {
                plan,
                full_read,
                incomplete,
            } => {
                let pending = cursor_type.later(self.earlier, landed.watermark.clone());
                let promote = plan.next(pending.as_deref());
                state::record_traversal(
                    conn,
                    key,
                    pending.as_deref(),
                    Some(&promote),
                    self.records,
                )
                .await?;
                if full_read {
                    state::history_complete(conn, key).await?;
                } else if let Some(problem) = incomplete {
                    state::alert_incomplete(conn, key, &problem).await?;
                }
            }
            Keeps::Backfill => state::history_complete(conn, key).await?,
            Keeps::Fill => state::columns_filled(conn, key).await?,
        }
        Ok(())
    }
}

/// What a landing did, with the records and pages it took.
type Outcome = Result<(PageReport, u64, u64), Error>;

/// A landing step under way, and its outcome once it has one.
struct InFlight<'a> {
    /// Where its batch's first page was fetched from: a backfill may resume there.
    start: Option<state::Resume>,
    future: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>,
    outcome: Option<Outcome>,
}

impl<'a> InFlight<'a> {
    fn new(
        start: Option<state::Resume>,
        future: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>,
    ) -> Self {
        Self {
            start,
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
    /// Records fetched before this run's traversal began (a resumed backfill's).
    before: u64,
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
        let records = self.before + self.records;
        ctx.set_progress(&Progress {
            pages: self.pages,
            records: self.records,
            total,
            remaining: total.map(|t| t.saturating_sub(records)),
        })
    }
}
