//! Group commit for the small writes a busy worker makes most: plain steps' checkpoints
//! and runs' ends.
//!
//! Each of those writes is one small statement, and on a busy worker most of its cost is
//! the commit around it: the round trip, the transaction, the wake-ups on both sides.
//! When a worker executes many runs at once, their writes are queued here and written by
//! a few flushers, each of which takes everything queued so far and writes it with one
//! fenced statement per kind ([`Store::write_steps`], [`Store::finish_runs`]). Every
//! write is still awaited until it has committed, so the semantics do not change: only
//! how many writes share a commit.
//!
//! When nothing else is being written, a write is made at once by its caller, so a lone
//! run pays no queueing. Of the checkpoints, only plain steps' are batched, and never
//! one with a progress report or a large output: the first would make the batch wait for
//! that run's transaction in flight, and the second would only be copied for nothing.
//! Each statement locks its runs in id order, as every statement that locks several
//! runs does, so two of them never wait for each other in a cycle.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::is_transient_db_error;
use crate::model::StepKind;
use crate::store::{Fenced, Lease, OwnedStep, RunEnd, StepWrite, Store};

/// Flushers writing batches at once. Two keep one batch filling while the other commits;
/// more would split the queue into smaller batches.
const FLUSHERS: usize = 2;

/// The most writes one flush takes.
const MAX_BATCH: usize = 128;

/// Outputs larger than this are written alone.
const MAX_BATCHED_OUTPUT: usize = 16 * 1024;

/// A fenced write's answer. For a run's end, the flag means nothing.
type Answer = Result<Fenced<bool>, sqlx::Error>;

/// Where a worker's runs write their plain checkpoints and their ends.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    store: Store,
    queue: mpsc::UnboundedSender<Queued>,
    writing: Arc<AtomicUsize>,
}

/// A write waiting for a flusher, and where its answer goes.
struct Queued {
    lease: Lease,
    write: Write,
    answer: oneshot::Sender<Answer>,
}

enum Write {
    Step(OwnedStep),
    End(Arc<RunEnd>),
}

impl Queued {
    fn step(&self) -> Option<(Lease, StepWrite<'_>)> {
        match &self.write {
            Write::Step(step) => Some((self.lease, step.as_write())),
            Write::End(_) => None,
        }
    }

    fn end(&self) -> Option<(Lease, &RunEnd)> {
        match &self.write {
            Write::End(end) => Some((self.lease, end)),
            Write::Step(_) => None,
        }
    }
}

/// Counts a write as under way until it is dropped, also when its caller is abandoned
/// midway.
struct Writing<'a>(&'a AtomicUsize);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GroupCommit {
    /// Starts the flushers. They stop once every clone of the returned handle is dropped.
    pub(crate) fn start(store: Store) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(queued));
        for _ in 0..FLUSHERS {
            tokio::spawn(flush(store.clone(), Arc::clone(&queued)));
        }
        Self {
            store,
            queue,
            writing: Arc::default(),
        }
    }

    /// Writes a step row under `lease` and waits until it has committed: what
    /// [`Store::write_step`] does, sharing the commit with other runs' writes when there
    /// are any.
    pub(crate) async fn write_step(&self, lease: Lease, step: &StepWrite<'_>) -> Answer {
        let alone = step.kind != StepKind::Step
            || step.progress.is_some()
            || step
                .output
                .is_some_and(|output| output.len() > MAX_BATCHED_OUTPUT);
        let (busy, _writing) = self.enter();
        if alone || !busy {
            return self.store.write_step(self.store.pool(), lease, step).await;
        }
        self.queued(lease, Write::Step(OwnedStep::new(step))).await
    }

    /// Ends a run under `lease` and waits until that has committed: what
    /// [`Store::finish`] does, sharing the commit with other runs' writes when there are
    /// any.
    pub(crate) async fn finish(
        &self,
        lease: Lease,
        end: &Arc<RunEnd>,
    ) -> Result<Fenced<()>, sqlx::Error> {
        let (busy, _writing) = self.enter();
        let answer = if busy {
            self.queued(lease, Write::End(Arc::clone(end))).await
        } else {
            finish_alone(&self.store, lease, end).await
        };
        answer.map(|fenced| fenced.map(|_| ()))
    }

    /// Counts a write as under way; whether another one already was.
    fn enter(&self) -> (bool, Writing<'_>) {
        let busy = self.writing.fetch_add(1, Ordering::AcqRel) > 0;
        (busy, Writing(&self.writing))
    }

    async fn queued(&self, lease: Lease, write: Write) -> Answer {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            lease,
            write,
            answer,
        };
        if self.queue.send(queued).is_err() {
            return Err(sqlx::Error::WorkerCrashed);
        }
        answered.await.unwrap_or(Err(sqlx::Error::WorkerCrashed))
    }
}

/// Takes whatever is queued, up to [`MAX_BATCH`], and writes it; until the queue closes.
async fn flush(store: Store, queued: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if queued.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        while !batch.is_empty() {
            let later = one_per_run(&mut batch);
            let (steps, ends) = std::mem::take(&mut batch)
                .into_iter()
                .partition(|queued| matches!(queued.write, Write::Step(_)));
            write_steps(&store, steps).await;
            finish_runs(&store, ends).await;
            batch = later;
        }
    }
}

/// Keeps each run's first write in `batch` and returns the rest, for the next statement:
/// one statement fences each run once.
fn one_per_run(batch: &mut Vec<Queued>) -> Vec<Queued> {
    let mut runs = HashSet::with_capacity(batch.len());
    let (now, later) = std::mem::take(batch)
        .into_iter()
        .partition(|queued| runs.insert(queued.lease.run_id));
    *batch = now;
    later
}

async fn write_steps(store: &Store, batch: Vec<Queued>) {
    let steps: Vec<(Lease, StepWrite<'_>)> = batch.iter().filter_map(Queued::step).collect();
    let answer = match steps.as_slice() {
        [] => return,
        [(lease, step)] => Ok(vec![store.write_step(store.pool(), *lease, step).await]),
        _ => (store.write_steps(&steps).await).map(|all| all.into_iter().map(Ok).collect()),
    };
    drop(steps);
    answer_each(store, batch, answer).await;
}

async fn finish_runs(store: &Store, batch: Vec<Queued>) {
    let ends: Vec<(Lease, &RunEnd)> = batch.iter().filter_map(Queued::end).collect();
    if ends.is_empty() {
        return;
    }
    let answer = (store.finish_runs(&ends).await).map(|all| {
        all.into_iter()
            .map(|fenced| Ok(fenced.map(|()| false)))
            .collect()
    });
    drop(ends);
    answer_each(store, batch, answer).await;
}

/// Hands each write its answer from a statement's. When the statement failed, a
/// transient failure is every write's answer, so that each retries as it would after a
/// failure of its own; any other failure, such as a NUL the database refuses in one
/// step's name, must not fail the others, so each is written alone for its own answer.
async fn answer_each(store: &Store, batch: Vec<Queued>, answer: Result<Vec<Answer>, sqlx::Error>) {
    match answer {
        Ok(answers) => {
            for (queued, answer) in batch.into_iter().zip(answers) {
                let _ = queued.answer.send(answer);
            }
        }
        Err(err) if batch.len() == 1 => {
            if let Some(queued) = batch.into_iter().next() {
                let _ = queued.answer.send(Err(err));
            }
        }
        Err(err) if is_transient_db_error(&err) => {
            let shared = Arc::new(err);
            for queued in batch {
                let _ = queued.answer.send(Err(shared_failure(&shared)));
            }
        }
        Err(_) => {
            for queued in batch {
                let answer = match &queued.write {
                    Write::Step(step) => {
                        store
                            .write_step(store.pool(), queued.lease, &step.as_write())
                            .await
                    }
                    Write::End(end) => finish_alone(store, queued.lease, end).await,
                };
                let _ = queued.answer.send(answer);
            }
        }
    }
}

async fn finish_alone(store: &Store, lease: Lease, end: &RunEnd) -> Answer {
    Ok(store.finish(lease, end).await?.map(|()| false))
}

/// A failure of a shared statement, for each of its writes: the same message, and as
/// transient as the original.
fn shared_failure(err: &Arc<sqlx::Error>) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(SharedError(Arc::clone(err))))
}

/// A database error several waiting writes were answered with.
#[derive(Debug)]
struct SharedError(Arc<sqlx::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a batch of writes failed: {}", self.0)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use cairn_testkit::TestDb;
    use serde_json::{Value, json};

    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::model::{RunStatus, StepStatus};
    use crate::new_run::NewRun;

    /// A fresh database with `runs` runs claimed, and a group commit over it.
    async fn claimed(runs: usize) -> (TestDb, Store, Vec<Lease>, GroupCommit) {
        let db = TestDb::new().await;
        let store = Store::new(db.pool().clone());
        for _ in 0..runs {
            store
                .start(&NewRun::new("wf", "default", &json!(null)))
                .await
                .unwrap();
        }
        let workflows = ["wf".to_owned()];
        let claimed = store
            .claim("default", &workflows, runs, "test", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), runs);
        let leases = claimed.into_iter().map(|run| run.lease).collect();
        let group = GroupCommit::start(store.clone());
        (db, store, leases, group)
    }

    fn step(position: i32, name: &str) -> StepWrite<'_> {
        StepWrite {
            position,
            branch: "",
            seq: None,
            name,
            kind: StepKind::Step,
            status: StepStatus::Completed,
            output: Some("{\"n\": 1}"),
            attempts: 1,
            throttled: 0,
            last_error: None,
            started_at: Utc::now(),
            duration: Duration::from_millis(1),
            progress: None,
        }
    }

    async fn expire(store: &Store, lease: Lease) {
        sqlx::query(
            "UPDATE cairn.runs SET lease_expires_at = now() - interval '1 s' WHERE id = $1",
        )
        .bind(lease.run_id)
        .execute(store.pool())
        .await
        .unwrap();
    }

    /// Holds the group commit busy, so that every write made meanwhile is queued for the
    /// flushers. On the test's single-threaded runtime the flushers run only once the
    /// test waits, so writes started together are all queued before one flush takes them.
    fn busy(group: &GroupCommit) -> Writing<'_> {
        group.enter().1
    }

    /// How many transactions wrote the rows `sql` selects (its one column is `xmin`).
    async fn commits(store: &Store, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    const STEP_COMMITS: &str = "SELECT count(DISTINCT xmin::text) FROM cairn.steps";

    #[tokio::test]
    async fn queued_checkpoints_of_many_runs_share_one_commit() {
        let (_db, store, leases, group) = claimed(10).await;
        let _busy = busy(&group);

        let step = step(0, "a");
        let writes = leases.iter().map(|&lease| group.write_step(lease, &step));
        let answers = futures::future::join_all(writes).await;

        for answer in answers {
            assert_eq!(answer.unwrap(), Fenced::Held(false));
        }
        let rows: Vec<(crate::RunId, String, Value)> =
            sqlx::query_as("SELECT run_id, name, output::jsonb FROM cairn.steps")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(rows.len(), 10);
        for lease in &leases {
            assert!(rows.iter().any(|(id, name, output)| id == &lease.run_id
                && name == "a"
                && output == &json!({"n": 1})));
        }
        assert_eq!(commits(&store, STEP_COMMITS).await, 1);
    }

    #[tokio::test]
    async fn a_lost_lease_in_a_batch_writes_nothing_for_that_run_only() {
        let (_db, store, leases, group) = claimed(3).await;
        expire(&store, leases[1]).await;
        let _busy = busy(&group);

        let step = step(0, "a");
        let writes = leases.iter().map(|&lease| group.write_step(lease, &step));
        let answers: Vec<_> = futures::future::join_all(writes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

        assert_eq!(
            answers,
            [Fenced::Held(false), Fenced::Lost, Fenced::Held(false)]
        );
        let written: Vec<crate::RunId> =
            sqlx::query_scalar("SELECT run_id FROM cairn.steps ORDER BY run_id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let mut expected = vec![leases[0].run_id, leases[2].run_id];
        expected.sort();
        assert_eq!(written, expected);
        assert_eq!(commits(&store, STEP_COMMITS).await, 1);
    }

    #[tokio::test]
    async fn a_row_the_database_refuses_fails_only_its_own_step() {
        let (_db, store, leases, group) = claimed(3).await;
        let _busy = busy(&group);

        let steps = ["first", "nul \0 inside", "third"].map(|name| step(0, name));
        let writes = leases
            .iter()
            .zip(&steps)
            .map(|(&lease, step)| group.write_step(lease, step));
        let answers = futures::future::join_all(writes).await;

        assert_eq!(answers[0].as_ref().unwrap(), &Fenced::Held(false));
        let refused = answers[1].as_ref().unwrap_err();
        assert!(
            !is_transient_db_error(refused),
            "a NUL is refused for good, not retried: {refused}"
        );
        assert_eq!(answers[2].as_ref().unwrap(), &Fenced::Held(false));
        let written: Vec<String> = sqlx::query_scalar("SELECT name FROM cairn.steps ORDER BY name")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(written, ["first", "third"]);
    }

    #[tokio::test]
    async fn two_checkpoints_of_one_run_queued_together_are_both_written() {
        let (_db, store, leases, group) = claimed(1).await;
        let lease = leases[0];
        let _busy = busy(&group);

        let (a, b) = (step(0, "a"), step(1, "b"));
        let (first, second) =
            tokio::join!(group.write_step(lease, &a), group.write_step(lease, &b));

        assert_eq!(first.unwrap(), Fenced::Held(false));
        assert_eq!(second.unwrap(), Fenced::Held(false));
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM cairn.steps ORDER BY position")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(names, ["a", "b"]);
        // One statement fences a run once, so the second waits for the next one.
        assert_eq!(commits(&store, STEP_COMMITS).await, 2);
    }

    #[tokio::test]
    async fn queued_run_ends_share_one_commit_and_are_fenced_each() {
        let (_db, store, leases, group) = claimed(4).await;
        expire(&store, leases[3]).await;
        let _busy = busy(&group);

        let ends: Vec<Arc<RunEnd>> = (0..4)
            .map(|n| {
                Arc::new(RunEnd {
                    status: RunStatus::Completed,
                    output: Some(json!({ "run": n })),
                    error: None,
                    progress: (n == 0).then(|| json!({ "done": 7 })),
                })
            })
            .collect();
        let finishes = leases
            .iter()
            .zip(&ends)
            .map(|(&lease, end)| group.finish(lease, end));
        let answers: Vec<_> = futures::future::join_all(finishes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

        assert_eq!(
            answers,
            [
                Fenced::Held(()),
                Fenced::Held(()),
                Fenced::Held(()),
                Fenced::Lost
            ]
        );
        for (n, lease) in leases.iter().enumerate() {
            let (status, output, progress): (String, Option<Value>, Option<Value>) =
                sqlx::query_as("SELECT status, output, progress FROM cairn.runs WHERE id = $1")
                    .bind(lease.run_id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            if n == 3 {
                assert_eq!((status.as_str(), output), ("running", None));
            } else {
                assert_eq!(status, "completed");
                assert_eq!(output, Some(json!({ "run": n })));
                assert_eq!(progress, (n == 0).then(|| json!({ "done": 7 })));
            }
        }
        let commits = commits(
            &store,
            "SELECT count(DISTINCT xmin::text) FROM cairn.runs WHERE status = 'completed'",
        )
        .await;
        assert_eq!(commits, 1);
    }
}
