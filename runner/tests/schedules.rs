//! Cron schedules against a real PostgreSQL, on an injected clock: catch-up policies
//! after a downtime, overlap skip and allow, pause and resume, and several schedulers
//! racing over the same fire times.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_runner::schedule::{
    CatchUp, Clock, Overlap, ScheduleSpec, Scheduler, SchedulerConfig, Schedules, fire_key,
};
use cairn_runner::{Client, Context, Error, Registry, RunStatus, WorkerConfig};
use cairn_testkit::TestDb;
use chrono::{DateTime, Utc};
use common::{TestWorker, fast_config, finished, reaches};
use tokio::sync::watch;

/// A clock the test moves by hand.
#[derive(Debug)]
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn at(s: &str) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at(s))))
    }

    fn set(&self, s: &str) {
        *self.0.lock().unwrap() = at(s);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn scheduler(db: &TestDb, clock: &Arc<ManualClock>) -> Scheduler {
    Scheduler::new(
        db.pool().clone(),
        SchedulerConfig {
            misfire_grace: Duration::from_secs(10),
            clock: Arc::clone(clock) as Arc<dyn Clock>,
            ..SchedulerConfig::default()
        },
    )
}

fn schedules(db: &TestDb, clock: &Arc<ManualClock>) -> Schedules {
    Schedules::new(db.pool().clone()).with_clock(Arc::clone(clock) as Arc<dyn Clock>)
}

/// The fire times (from the idempotency keys) of the runs a schedule started, in order.
async fn fired(db: &TestDb, name: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT idempotency_key FROM cairn.runs WHERE idempotency_key LIKE $1 ORDER BY 1",
    )
    .bind(format!("schedule:{name}:%"))
    .fetch_all(db.pool())
    .await
    .unwrap()
}

fn keys(name: &str, times: &[&str]) -> Vec<String> {
    times.iter().map(|t| fire_key(name, at(t))).collect()
}

#[tokio::test]
async fn catch_up_policies_after_a_downtime() {
    let db = TestDb::new().await;
    let clock = ManualClock::at("2026-03-01T10:00:30Z");
    let policies = [
        ("skip", CatchUp::Skip),
        ("once", CatchUp::Once),
        ("all", CatchUp::All { cap: 3 }),
    ];
    for (name, policy) in policies {
        let spec = ScheduleSpec::new(name, "* * * * *", "noop")
            .unwrap()
            .with_catch_up(policy)
            .with_overlap(Overlap::Allow);
        schedules(&db, &clock).add(&spec, false).await.unwrap();
    }
    let scheduler = scheduler(&db, &clock);

    // On time: 10:01 is seen a second after it.
    clock.set("2026-03-01T10:01:01Z");
    scheduler.tick().await.unwrap();
    // Down from 10:01:01 to 10:06:30: 10:02 to 10:06 are missed (the latest is 30 s
    // late, past the 10 s grace).
    clock.set("2026-03-01T10:06:30Z");
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.next_due, Some(at("2026-03-01T10:07:00Z")));
    // Back on time at 10:07.
    clock.set("2026-03-01T10:07:00.500Z");
    scheduler.tick().await.unwrap();

    assert_eq!(
        fired(&db, "skip").await,
        keys("skip", &["2026-03-01T10:01:00Z", "2026-03-01T10:07:00Z"])
    );
    assert_eq!(
        fired(&db, "once").await,
        keys(
            "once",
            &[
                "2026-03-01T10:01:00Z",
                "2026-03-01T10:06:00Z",
                "2026-03-01T10:07:00Z"
            ]
        )
    );
    assert_eq!(
        fired(&db, "all").await,
        keys(
            "all",
            &[
                "2026-03-01T10:01:00Z",
                "2026-03-01T10:04:00Z",
                "2026-03-01T10:05:00Z",
                "2026-03-01T10:06:00Z",
                "2026-03-01T10:07:00Z"
            ]
        )
    );
    let listed = schedules(&db, &clock).list().await.unwrap();
    let counts: Vec<(String, i64, i64)> = listed
        .into_iter()
        .map(|s| (s.name, s.runs_started, s.fires_skipped))
        .collect();
    assert_eq!(
        counts,
        [
            ("all".to_owned(), 5, 2),
            ("once".to_owned(), 3, 4),
            ("skip".to_owned(), 2, 5)
        ]
    );
}

#[tokio::test]
async fn several_schedulers_start_one_run_per_fire_time() {
    let db = TestDb::new().await;
    let clock = ManualClock::at("2026-03-01T10:00:00.200Z");
    let spec = ScheduleSpec::new("every-second", "* * * * * *", "noop")
        .unwrap()
        .with_overlap(Overlap::Allow);
    schedules(&db, &clock).add(&spec, false).await.unwrap();
    let schedulers: Vec<Scheduler> = (0..4).map(|_| scheduler(&db, &clock)).collect();

    let mut expected = Vec::new();
    for second in 1..=12 {
        let fire = format!("2026-03-01T10:00:{second:02}Z");
        clock.set(&format!("2026-03-01T10:00:{second:02}.100Z"));
        let ticks = schedulers.iter().map(|s| s.tick());
        let reports = futures::future::join_all(ticks).await;
        let started: usize = reports.into_iter().map(|r| r.unwrap().started.len()).sum();
        assert_eq!(started, 1, "fire time {fire} started {started} runs");
        expected.push(fire_key("every-second", at(&fire)));
    }
    assert_eq!(fired(&db, "every-second").await, expected);
}

#[tokio::test]
async fn overlap_skip_waits_for_the_previous_run_and_allow_does_not() {
    let db = TestDb::new().await;
    // Runs of `hold` stay running until the test opens the gate.
    let (release, gate) = watch::channel(false);
    let mut registry = Registry::new();
    registry.register("hold", move |ctx: Context, _: serde_json::Value| {
        let gate = gate.clone();
        async move {
            ctx.step("wait for the test", || {
                let mut gate = gate.clone();
                async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(())
                }
            })
            .await?;
            Ok::<_, Error>(())
        }
    });
    let registry = Arc::new(registry);
    let worker = TestWorker::start(
        db.pool().clone(),
        Arc::clone(&registry),
        WorkerConfig {
            scheduler: None,
            ..fast_config(4)
        },
    );
    let client = Client::new(db.pool().clone());
    let clock = ManualClock::at("2026-03-01T10:00:30Z");
    for (name, overlap) in [("skip", Overlap::Skip), ("allow", Overlap::Allow)] {
        let spec = ScheduleSpec::new(name, "* * * * *", "hold")
            .unwrap()
            .with_overlap(overlap);
        schedules(&db, &clock).add(&spec, false).await.unwrap();
    }
    let scheduler = scheduler(&db, &clock);

    clock.set("2026-03-01T10:01:01Z");
    let first = scheduler.tick().await.unwrap();
    assert_eq!(first.started.len(), 2);
    for (_, _, run_id) in &first.started {
        reaches(&client, *run_id, RunStatus::Running).await;
    }
    // Both first runs are still going at 10:02.
    clock.set("2026-03-01T10:02:01Z");
    let second = scheduler.tick().await.unwrap();
    let names: Vec<&str> = second.started.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["allow"]);
    assert_eq!(second.skipped, 1);

    release.send_replace(true);
    for (_, _, run_id) in first.started.iter().chain(&second.started) {
        let run = finished(&client, *run_id).await;
        assert_eq!(run.summary.status, RunStatus::Completed);
    }
    clock.set("2026-03-01T10:03:01Z");
    let third = scheduler.tick().await.unwrap();
    assert_eq!(third.started.len(), 2, "the skip schedule fires again");
    assert_eq!(
        fired(&db, "skip").await,
        keys("skip", &["2026-03-01T10:01:00Z", "2026-03-01T10:03:00Z"])
    );
    let skip = schedules(&db, &clock).get("skip").await.unwrap();
    assert_eq!((skip.runs_started, skip.fires_skipped), (2, 1));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_paused_schedule_does_not_fire_and_resumes_without_catching_up() {
    let db = TestDb::new().await;
    let clock = ManualClock::at("2026-03-01T10:00:30Z");
    let spec = ScheduleSpec::new("nightly", "* * * * *", "noop")
        .unwrap()
        .with_catch_up(CatchUp::All { cap: 10 });
    let schedules = schedules(&db, &clock);
    schedules.add(&spec, false).await.unwrap();
    let paused = schedules.pause("nightly").await.unwrap();
    assert!(!paused.enabled && paused.next_fire_at.is_none());
    let scheduler = scheduler(&db, &clock);
    clock.set("2026-03-01T10:05:30Z");
    assert!(scheduler.tick().await.unwrap().started.is_empty());

    let resumed = schedules.resume("nightly").await.unwrap();
    assert_eq!(resumed.next_fire_at, Some(at("2026-03-01T10:06:00Z")));
    clock.set("2026-03-01T10:06:00Z");
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.started.len(), 1);
    assert_eq!(
        fired(&db, "nightly").await,
        keys("nightly", &["2026-03-01T10:06:00Z"])
    );

    assert!(
        schedules.add(&spec, false).await.is_err(),
        "names are unique"
    );
    schedules.remove("nightly").await.unwrap();
    assert!(schedules.remove("nightly").await.is_err());
}

#[tokio::test]
async fn a_scheduled_run_gets_its_workflows_default_timeout_as_a_deadline() {
    let db = TestDb::new().await;
    let clock = ManualClock::at("2026-03-01T10:00:30Z");
    let spec = ScheduleSpec::new("nightly", "* * * * *", "report").unwrap();
    schedules(&db, &clock).add(&spec, false).await.unwrap();
    let mut registry = Registry::new();
    registry.register("report", |_: Context, (): ()| async { Ok::<_, Error>(()) });
    registry.set_timeout("report", Duration::from_secs(3600));
    let scheduler = scheduler(&db, &clock).with_registry(Arc::new(registry));
    clock.set("2026-03-01T10:01:01Z");
    scheduler.tick().await.unwrap();
    let deadline: DateTime<Utc> =
        sqlx::query_scalar("SELECT deadline FROM cairn.runs WHERE workflow = 'report'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(deadline, at("2026-03-01T11:01:01Z"));
}
