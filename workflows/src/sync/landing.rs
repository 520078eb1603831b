//! Landing a traversal's batches: each in one transactional step, up to
//! [`LANDINGS_IN_FLIGHT`] at once, each on a branch of its own, with what the traversal
//! keeps recorded in the same transactions.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use cairn_connectors::warehouse::{NewAlert, PageReport, raise_alerts};
use cairn_connectors::watermark::CursorType;
use cairn_runner::{Context, Error};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::traverse::{Batch, Ending, Job, Keeps};
use super::{Progress, RECORDS_SYNCED, Sync, state};

/// Landings running at once while the next pages are fetched.
pub(super) const LANDINGS_IN_FLIGHT: usize = 2;

/// Lands a traversal's batches and counts what they did.
///
/// The last batch starts landing only after every earlier one has committed, so the
/// watermark never moves past records that have not landed; a backfill's resume point
/// only ever names a page that every landing before it has passed.
pub(super) struct Lander<'s> {
    sync: &'s Sync,
    keeps: &'s Keeps,
    /// Records fetched before this traversal began (a resumed backfill's).
    before: u64,
    report: PageReport,
    pages: u64,
    records: u64,
}

impl<'s> Lander<'s> {
    pub(super) fn new(sync: &'s Sync, keeps: &'s Keeps, before: u64) -> Self {
        Self {
            sync,
            keeps,
            before,
            report: PageReport::default(),
            pages: 0,
            records: 0,
        }
    }

    /// What the landings did, together.
    pub(super) fn landed(&self) -> &PageReport {
        &self.report
    }

    /// Lands the batches that arrive on `batches`, each on a branch of `ctx` of its
    /// own taken in arrival order, until the queue closes; the first failure stops it.
    pub(super) async fn run(
        &mut self,
        ctx: &Context,
        mut batches: mpsc::Receiver<Job>,
    ) -> Result<(), Error> {
        let sync = self.sync;
        let mut running = FuturesUnordered::new();
        // Where each landing in flight starts, by arrival.
        let mut starts: BTreeMap<u64, Option<state::Resume>> = BTreeMap::new();
        let mut arrivals = 0u64;
        loop {
            let job = tokio::select! {
                Some((arrival, outcome, total)) = running.next() => {
                    starts.remove(&arrival);
                    self.count(ctx, outcome, total)?;
                    continue;
                }
                job = batches.recv(), if running.len() < LANDINGS_IN_FLIGHT => job,
            };
            let Some(job) = job else {
                break;
            };
            if job.ending.is_some() {
                while let Some((_, outcome, total)) = running.next().await {
                    self.count(ctx, outcome, total)?;
                }
                starts.clear();
            }
            let after = self.after(&job, starts.values().next().cloned().flatten());
            let [branch] = ctx.fork();
            starts.insert(arrivals, job.batch.start.clone());
            let (arrival, total) = (arrivals, job.total);
            let slot = job.slot;
            running.push(async move {
                let outcome = sync.land(&branch, job.batch, after).await;
                drop(slot);
                (arrival, outcome, total)
            });
            arrivals += 1;
        }
        while let Some((_, outcome, total)) = running.next().await {
            self.count(ctx, outcome, total)?;
        }
        Ok(())
    }

    /// Lands `job` on `ctx` now: for a run whose steps were numbered by the layout
    /// before branches, where every step was on the main branch.
    pub(super) async fn land_now(&mut self, ctx: &Context, job: Job) -> Result<(), Error> {
        let after = self.after(&job, None);
        let total = job.total;
        let outcome = self.sync.land(ctx, job.batch, after).await;
        self.count(ctx, outcome, total)
    }

    /// What `job`'s landing records beside its records, when the earliest landing
    /// still in flight started at `earliest`.
    fn after(&self, job: &Job, earliest: Option<state::Resume>) -> After {
        match &job.ending {
            Some(Ending::Short(problem)) => After::Short(format!(
                "the listing of stream {:?} looks incomplete, so its sync did not complete \
                 and its watermark did not move: {problem}",
                self.sync.stream.name
            )),
            // The watermark moves on what landed, never on what was only fetched.
            Some(Ending::Complete { records }) => After::Finish(Finish {
                earlier: self.report.watermark.clone(),
                keeps: self.keeps.clone(),
                records: *records,
            }),
            // Every batch before the first still in flight has landed.
            None if matches!(self.keeps, Keeps::Backfill) => {
                After::Reached(earliest.unwrap_or_else(|| job.end.clone()), job.total)
            }
            None => After::Nothing,
        }
    }

    /// Counts a finished landing and reports the progress made.
    fn count(&mut self, ctx: &Context, outcome: Outcome, total: Option<u64>) -> Result<(), Error> {
        let (page, records, pages) = outcome?;
        self.pages += pages;
        self.records += records;
        self.report.upserted += page.upserted;
        self.report.quarantined += page.quarantined;
        self.report.watermark = self
            .sync
            .spec
            .cursor_type
            .later(self.report.watermark.take(), page.watermark);
        self.report.columns_added.extend(page.columns_added);
        let read = self.before + self.records;
        ctx.set_progress(&Progress {
            pages: self.pages,
            records: self.records,
            total,
            remaining: total.map(|t| t.saturating_sub(read)),
        })
    }
}

/// What a landing did, with the records and pages it took.
type Outcome = Result<(PageReport, u64, u64), Error>;

impl Sync {
    /// Lands `batch` in one transactional step, exactly once, with what `after` says.
    ///
    /// The transaction's work runs on a task of its own: classifying and encoding a
    /// thousand records takes milliseconds of CPU, which on the run's task would hold up
    /// the fetches beside it.
    async fn land(&self, ctx: &Context, batch: Batch, after: After) -> Outcome {
        let (first, last, pages) = (batch.first, batch.last, batch.pages);
        let count = (batch.records.len() + batch.unreadable.len()) as u64;
        let name = if first == last {
            format!("land page {first}")
        } else {
            format!("land pages {first}-{last}")
        };
        let records = Arc::new((batch.records, batch.unreadable));
        // Set only when the landing runs here, not when a replay returns it stored: the
        // records-synced counter counts each landing once.
        let executed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let report = ctx
            .transaction(name, |tx| {
                executed.store(true, std::sync::atomic::Ordering::Relaxed);
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
                    after
                        .record(&mut conn, &key, spec.cursor_type, &landed)
                        .await?;
                    Ok(landed)
                })
            })
            .await?;
        if executed.load(std::sync::atomic::Ordering::Relaxed) {
            metrics::counter!(
                RECORDS_SYNCED,
                "source" => self.source_name.clone(),
                "stream" => self.stream.name.clone()
            )
            .increment(count);
        }
        Ok((report, count, pages))
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

impl After {
    async fn record(
        self,
        conn: &mut sqlx::PgConnection,
        key: &state::StreamKey,
        cursor_type: CursorType,
        landed: &PageReport,
    ) -> Result<(), Error> {
        match self {
            After::Nothing => Ok(()),
            After::Short(message) => {
                let alert = NewAlert {
                    kind: "incomplete_listing".to_owned(),
                    source: key.source.clone(),
                    stream: key.stream.clone(),
                    detail: "the listing held fewer distinct ids than its total".to_owned(),
                    message,
                };
                raise_alerts(conn, &[alert]).await?;
                Ok(())
            }
            After::Reached(resume, total) => {
                state::backfill_reached(conn, key, &resume, total).await
            }
            After::Finish(finish) => finish.keep(conn, key, cursor_type, landed).await,
        }
    }
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

/// A step's work on a task of its own, aborted when its handle is dropped: a run that
/// stops (a halt drops its future) takes its work in flight with it.
pub(super) struct Detached<T> {
    what: &'static str,
    task: tokio::task::JoinHandle<Result<T, Error>>,
}

impl<T: Send + 'static> Detached<T> {
    /// Spawns `work` (`what` names it if the task panics) in the current span.
    pub(super) fn spawn(
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let what = self.what;
        Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| Err(Error::permanent(format!("the {what} failed: {err}"))))
        })
    }
}
