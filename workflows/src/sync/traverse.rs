//! One traversal of a stream: every page fetched in a checkpointed step of its own,
//! landed in transactional steps of at least [`LANDING_RECORDS`] records (see
//! [`landing`](super::landing)) beside the fetches; and what the traversal keeps when it
//! ends (an incremental's watermark, a backfill's completion and resume point).

use std::sync::Arc;

use cairn_connectors::paginate::{JsonPath, PageCursor, PaginationError, SeenIds, Traversal};
use cairn_connectors::record::{Record, Unreadable};
use cairn_connectors::source::Page;
use cairn_runner::{Context, Error};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::landing::{Detached, LANDINGS_IN_FLIGHT, Lander};
use super::{Sync, SyncReport, state};

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

/// The patch that moved landings onto branches of their own. A run whose traversal
/// began before it lands its batches one after another on the main branch, in the
/// order its history holds (the order the old executor gave their positions).
const FORKED_LANDINGS: &str = "sync.forked-landings";

impl Sync {
    /// Fetches every page from the traversal's cursor and lands them, keeping what
    /// `keeps` says with the landings.
    ///
    /// Each page is fetched in a step of its own on the run's main branch, but pages
    /// land in batches of at least [`LANDING_RECORDS`] records, one transactional step
    /// per batch: a commit and a handful of statements per hundred-record page cost as
    /// much as the page's rows. Batch bounds depend only on the fetched pages, so they
    /// are the same on replay.
    ///
    /// The batches go to a branch of their own (a fork), where each landing takes a
    /// branch of its own in batch order, so the fetches go on while they land and a
    /// replay finds every step again whatever order they finished in. See [`Lander`]
    /// for how the watermark and a backfill's resume point stay behind what has landed.
    pub(crate) async fn traverse(
        &self,
        ctx: &Context,
        traversal: Traversal,
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
        if traversal.cursor().is_none() {
            return Ok(report);
        }
        let mut lander = Lander::new(self, &keeps, traversal.fetched());
        let read = if ctx.patched(FORKED_LANDINGS).await? {
            let [landings] = ctx.fork();
            let (queue, batches) = mpsc::channel(1);
            let slots = Arc::new(Semaphore::new(LANDINGS_IN_FLIGHT));
            let (read, landed) = futures::join!(
                self.read(ctx, traversal, Sink::Queue(queue, slots)),
                lander.run(&landings, batches),
            );
            // A failed landing stops the reading; its error is the traversal's.
            landed?;
            read?
        } else {
            self.read(ctx, traversal, Sink::Inline(ctx, &mut lander))
                .await?
        };
        if let Some(problem) = read.short {
            return Err(Error::permanent(format!(
                "stream {:?}: {problem}; the records read have landed",
                self.stream.name
            ))
            .with_category("pagination"));
        }
        let landed = lander.landed();
        report.pages = read.pages;
        report.records = read.records;
        report.repeated = read.repeated;
        report.vendor_total = read.total;
        report.upserted = landed.upserted;
        report.quarantined = landed.quarantined;
        if let Keeps::Watermark { plan, .. } = &keeps {
            report.watermark = Some(plan.next(landed.watermark.as_deref()));
        }
        report.columns_added = landed.columns_added.clone();
        Ok(report)
    }

    /// Fetches the traversal's pages on `ctx`, one step each, and hands each full batch
    /// to `sink`; the last batch says how the traversal ended.
    async fn read(
        &self,
        ctx: &Context,
        mut traversal: Traversal,
        mut sink: Sink<'_, '_>,
    ) -> Result<Read, Error> {
        let mut read = Read::default();
        let Some(first) = traversal.cursor().cloned() else {
            return Ok(read);
        };
        let (pages_before, records_before) = (traversal.pages(), traversal.fetched());
        let mut batch = Batch::starting(&first, pages_before, records_before);
        // The distinct ids read, counted once the vendor reports a total to hold them to.
        let mut seen = SeenIds::default();
        let ahead = |seen: &SeenIds| seen.may_read_beyond_next(self.stream.max_pages);
        let mut page = self.fetch(ctx, &traversal, ahead(&seen)).await?;
        let key: JsonPath = self.stream.primary_key.parse().unwrap_or_default();
        loop {
            let number = traversal.pages();
            let at = traversal.cursor().cloned();
            match traversal.advance(&page) {
                Ok(()) => {}
                // Paging that ended early still lands what it read, and then fails loudly.
                Err(err @ PaginationError::TotalMismatch { .. }) => {
                    read.short = Some(err.to_string());
                }
                Err(err) => return Err(Error::permanent(err).with_category("pagination")),
            }
            read.pages += 1;
            read.records += (page.records.len() + page.unreadable.len()) as u64;
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
                && read.short.is_none()
                && let Some(total) = traversal.total()
                && records_before + seen.distinct() < total
            {
                // A resumed backfill counts what the runs before it read as distinct.
                read.short = Some(format!(
                    "the vendor reported a total of {total} but its pages held {} distinct \
                     ids ({} more than once)",
                    records_before + seen.distinct(),
                    seen.repeated()
                ));
            }
            batch.add(number, page);
            if done || batch.records.len() + batch.unreadable.len() >= LANDING_RECORDS {
                let next = traversal
                    .cursor()
                    .map(|cursor| Batch::starting(cursor, traversal.pages(), traversal.fetched()));
                let full = std::mem::replace(&mut batch, next.unwrap_or_default());
                let ending = done.then(|| match &read.short {
                    Some(problem) => Ending::Short(problem.clone()),
                    None => Ending::Complete {
                        records: read.records as i64,
                    },
                });
                let end = state::Resume {
                    page: traversal.pages(),
                    records: traversal.fetched(),
                    cursor: traversal
                        .cursor()
                        .cloned()
                        .unwrap_or_else(PageCursor::start),
                };
                let job = Job {
                    batch: full,
                    end,
                    total: traversal.total(),
                    ending,
                    slot: None,
                };
                if !sink.send(job).await? {
                    return Ok(read);
                }
            }
            match traversal.cursor() {
                Some(_) => page = self.fetch(ctx, &traversal, ahead(&seen)).await?,
                None => {
                    read.repeated = seen.repeated();
                    read.total = traversal.total();
                    return Ok(read);
                }
            }
        }
    }

    /// Fetches the page at the traversal's cursor as a checkpointed step: a fetched
    /// page is never fetched again.
    ///
    /// The request and the parsing of its body run on a task of their own: the run's
    /// task also prepares landings, and a page waiting behind that work would hold up
    /// the whole chain of fetches. Once the page is read, the next one is requested
    /// while this one is checkpointed (see [`read_ahead`](super::read_ahead)), unless
    /// the run is paced or `ahead` says the traversal stops after this page whatever it
    /// holds (its last page by `max_pages`, or a third in a row with nothing new). A
    /// failure an operator must hear about (credentials refused, a vendor that blocks
    /// the source past the wait cap) raises an alert.
    async fn fetch(
        &self,
        ctx: &Context,
        traversal: &Traversal,
        ahead: bool,
    ) -> Result<Page, Error> {
        let number = traversal.pages();
        let cursor = traversal
            .cursor()
            .cloned()
            .ok_or_else(|| Error::permanent("a finished traversal has no page to fetch"))?;
        let span = tracing::Span::current();
        ctx.step(format!("fetch page {number}"), || {
            let source = Arc::clone(&self.source);
            let stream = self.stream.name.clone();
            let cursor = cursor.clone();
            let span = span.clone();
            async move {
                let fetched = match self.ahead.take(&cursor) {
                    Some(pending) => pending.await?,
                    None => {
                        self.paced().await;
                        let at = cursor.clone();
                        Detached::spawn("page fetch", async move {
                            Ok(source.fetch_page(&stream, &at).await)
                        })
                        .await?
                    }
                };
                match fetched {
                    Ok(page) => {
                        if ahead
                            && self.pace.is_none()
                            && let Some(next) = traversal.next_after(&page)
                        {
                            let span =
                                tracing::info_span!(parent: &span, "read ahead", page = number + 1);
                            self.ahead
                                .start(&self.source, &self.stream.name, next, span);
                        }
                        Ok(page)
                    }
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
}

/// Where full batches go: to the landings' branch, or (a run of the old layout) landed
/// on the spot, on the fetches' branch.
enum Sink<'l, 's> {
    /// The queue to the landings' branch, and a slot per landing that may be under
    /// way or waiting: the reading goes on only while one is free, so the batches held
    /// in memory stay bounded.
    Queue(mpsc::Sender<Job>, Arc<Semaphore>),
    Inline(&'l Context, &'l mut Lander<'s>),
}

impl Sink<'_, '_> {
    /// Hands `job` over; `false` once the landings have stopped (one failed).
    async fn send(&mut self, mut job: Job) -> Result<bool, Error> {
        match self {
            Sink::Queue(queue, slots) => {
                let Ok(slot) = Arc::clone(slots).acquire_owned().await else {
                    return Ok(false);
                };
                job.slot = Some(slot);
                Ok(queue.send(job).await.is_ok())
            }
            Sink::Inline(ctx, lander) => {
                lander.land_now(ctx, job).await?;
                Ok(true)
            }
        }
    }
}

/// What the reading saw.
#[derive(Default)]
struct Read {
    pages: u64,
    records: u64,
    repeated: u64,
    total: Option<u64>,
    /// Why the listing looks incomplete, when it does.
    short: Option<String>,
}

/// The fewest records a landing takes (unless the traversal ends first): pages of a
/// few hundred records are gathered until they reach it.
const LANDING_RECORDS: usize = 1000;

/// A full batch on its way to land.
pub(super) struct Job {
    pub(super) batch: Batch,
    /// Where the traversal stands after the batch.
    pub(super) end: state::Resume,
    /// The vendor's total, when it reports one.
    pub(super) total: Option<u64>,
    /// How the traversal ended, on its last batch.
    pub(super) ending: Option<Ending>,
    /// Its landing's slot (see [`Sink::Queue`]), freed when the landing ends.
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

/// How a traversal ended.
pub(super) enum Ending {
    /// The listing held fewer distinct ids than its total (this says how).
    Short(String),
    /// Every page was read; `records` were fetched.
    Complete { records: i64 },
}

/// Fetched pages waiting to land together.
#[derive(Default)]
pub(super) struct Batch {
    /// Where its first page was fetched from, and what came before it.
    pub(super) start: Option<state::Resume>,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) pages: u64,
    pub(super) records: Vec<Record>,
    pub(super) unreadable: Vec<Unreadable>,
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
