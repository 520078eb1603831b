//! Privacy requests end to end: a person planted in three sandbox vendors (and, through
//! a sync, in the warehouse) is found by an access request in every one of them and
//! nowhere else, the report lists exactly their records, and the audit chain verifies
//! and names the entry an edit breaks.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cairn::sandbox::{SandboxConfig, SandboxHandle, Stream};
use cairn::workflows::dsr::report::Report;
use cairn::workflows::dsr::request::{self, OpenRequest};
use cairn::workflows::dsr::{AuditKey, Kind, Regulation, RequestSource, Subject, audit};
use cairn::workflows::sync;
use cairn::{Client, Registry, RunStatus, WorkerConfig};
use cairn_testkit::{TestDb, TestWorker, run_to_completion};
use chrono::TimeDelta;
use support::vendor::{HUBSPOT, STRIPE, input, plant, start};

const SALESFORCE: &str = include_str!("../examples/sources/sandbox-salesforce.toml");
const SUBJECT: &str = "Grace.Subject@Example.com";

fn key() -> AuditKey {
    AuditKey::parse(
        &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        "test",
    )
    .unwrap()
}

fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    cairn::workflows::register_builtin(&mut registry);
    registry.provide(key());
    Arc::new(registry)
}

fn source(toml: &str, file: &str, sandbox: &SandboxHandle) -> RequestSource {
    RequestSource {
        toml: toml.to_owned(),
        file: file.to_owned(),
        base_url: Some(sandbox.base_url().to_owned()),
    }
}

/// Opens a request about the subject (known by `ids` besides the address) over `sources`.
async fn open(
    db: &TestDb,
    kind: Kind,
    regulation: Regulation,
    sources: Vec<RequestSource>,
    ids: Vec<(String, String)>,
) -> request::Opened {
    request::open(
        db.pool(),
        &cairn::seal::Sealer::plain(),
        &key(),
        OpenRequest {
            subject: Subject {
                email: SUBJECT.to_owned(),
                ids,
            },
            kind,
            regulation,
            sources,
            alerts: vec![0.5, 0.8, 1.0],
            retention: TimeDelta::days(30),
        },
    )
    .await
    .unwrap()
}

fn worker(db: &TestDb) -> TestWorker {
    TestWorker::start(
        db.pool().clone(),
        registry(),
        WorkerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_request_finds_the_person_everywhere_and_nobody_else() {
    let db = TestDb::new().await;
    let config = || SandboxConfig {
        records_per_stream: 300,
        max_page_size: 25,
        ..SandboxConfig::default()
    };
    let (hubspot, salesforce, stripe) = (
        start(config()).await,
        start(config()).await,
        start(config()).await,
    );
    plant(&hubspot, SUBJECT, ["5", "9"]);
    plant(&hubspot, "x.grace.subject@example.com", ["6"]);
    plant(&salesforce, &SUBJECT.to_uppercase(), ["12"]);
    plant(&salesforce, "grace.subject@example.com.evil", ["13"]);
    plant(&stripe, &SUBJECT.to_lowercase(), ["7"]);
    // Record 3 at the Stripe-like vendor holds an old address: found by its id only.
    plant(&stripe, "g.s@old.example", ["3"]);
    let worker = worker(&db);
    // The HubSpot-like contacts are in the warehouse too (as they were before the change
    // below): the warehouse search finds rows the vendor no longer ties to the person.
    let client = Client::new(db.pool().clone()).with_registry(registry());
    run_to_completion(
        &client,
        sync::BACKFILL,
        &input(HUBSPOT, &hubspot, Stream::Contacts),
    )
    .await;
    plant(&hubspot, "someone.else@example.com", ["9"]);
    plant(&hubspot, SUBJECT, ["11"]);

    let opened = open(
        &db,
        Kind::Access,
        Regulation::Gdpr,
        vec![
            source(HUBSPOT, "hubspot.toml", &hubspot),
            source(SALESFORCE, "salesforce.toml", &salesforce),
            source(STRIPE, "stripe.toml", &stripe),
        ],
        vec![("sandbox-stripe".to_owned(), "3".to_owned())],
    )
    .await;
    let done = client
        .wait(opened.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    let detail = request::show(db.pool(), &opened.id).await.unwrap();
    assert_eq!(detail.summary.phase.as_str(), "done");
    assert_eq!(detail.summary.outcome.as_deref(), Some("fulfilled"));
    let report: Report = serde_json::from_str(
        &request::report(db.pool(), &cairn::seal::Sealer::plain(), &opened.id)
            .await
            .unwrap(),
    )
    .unwrap();
    let found: BTreeSet<(String, String, bool, bool)> = report
        .records
        .iter()
        .map(|r| (r.source.clone(), r.id.clone(), r.at_vendor, r.in_warehouse))
        .collect();
    let expected: BTreeSet<(String, String, bool, bool)> = [
        ("sandbox-hubspot", "5", true, true),
        ("sandbox-hubspot", "9", false, true),
        ("sandbox-hubspot", "11", true, false),
        ("sandbox-salesforce", "12", true, false),
        ("sandbox-stripe", "3", true, false),
        ("sandbox-stripe", "7", true, false),
    ]
    .into_iter()
    .map(|(s, id, v, w)| (s.to_owned(), id.to_owned(), v, w))
    .collect();
    assert_eq!(found, expected);
    assert!(report.complete());
    assert_eq!(detail.summary.found, 6);
    // The clock closes with the request.
    let clock = client
        .wait(opened.clock_run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(clock.summary.status, RunStatus::Completed);
    worker.shutdown().await;

    // The trail holds no address, and verifies; an edit breaks it where it was made.
    let mut conn = db.pool().acquire().await.unwrap();
    let trail: String = sqlx::query_scalar(
        "SELECT string_agg(detail::text || action || source, ' ') FROM cairn.dsr_audit",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(!trail.to_lowercase().contains("grace"), "{trail}");
    let verified = audit::verify(&mut conn, &key()).await.unwrap();
    assert!(verified.broken.is_none(), "{verified:?}");
    assert!(verified.entries > 10, "{verified:?}");
    sqlx::query("ALTER TABLE cairn.dsr_audit DISABLE TRIGGER dsr_audit_append_only")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE cairn.dsr_audit SET outcome = outcome || ' (edited)' WHERE seq = 4")
        .execute(&mut *conn)
        .await
        .unwrap();
    let verified = audit::verify(&mut conn, &key()).await.unwrap();
    assert_eq!(
        verified.broken.as_ref().map(|b| b.seq),
        Some(4),
        "{verified:?}"
    );
    assert_eq!(verified.entries, 3);
}

fn ids_of(sandbox: &SandboxHandle) -> BTreeSet<String> {
    sandbox
        .vendor()
        .records(Stream::Contacts)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn warehouse_ids(db: &TestDb) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT _raw->>'id' FROM sandbox_hubspot.contacts")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_erases_at_every_vendor_and_a_held_record_waits_on_the_dead_letter_list() {
    let db = TestDb::new().await;
    let config = || SandboxConfig {
        records_per_stream: 100,
        max_page_size: 25,
        ..SandboxConfig::default()
    };
    let (hubspot, salesforce, stripe) = (
        start(config()).await,
        start(config()).await,
        start(config()).await,
    );
    plant(&hubspot, SUBJECT, ["5", "9"]);
    plant(&hubspot, "x.grace.subject@example.com", ["6"]);
    plant(&salesforce, SUBJECT, ["12"]);
    plant(&stripe, SUBJECT, ["7"]);
    plant(&stripe, "g.s@old.example", ["3"]);
    let worker = worker(&db);
    let client = Client::new(db.pool().clone()).with_registry(registry());
    run_to_completion(
        &client,
        sync::BACKFILL,
        &input(HUBSPOT, &hubspot, Stream::Contacts),
    )
    .await;
    plant(&hubspot, "someone.else@example.com", ["9"]);
    plant(&hubspot, SUBJECT, ["11"]);
    let before = (ids_of(&hubspot), ids_of(&stripe), warehouse_ids(&db).await);
    // Stripe's record 7 is under a legal hold; HubSpot's first two writes are raced by
    // a change just before them (their If-Match fails, and the erasure reads again).
    stripe.vendor().hold_records(Stream::Contacts, &[7]);
    hubspot.vendor().race_writes(2);

    let opened = open(
        &db,
        Kind::Erasure,
        Regulation::Ccpa,
        vec![
            source(HUBSPOT, "hubspot.toml", &hubspot),
            source(SALESFORCE, "salesforce.toml", &salesforce),
            source(STRIPE, "stripe.toml", &stripe),
        ],
        vec![("sandbox-stripe".to_owned(), "3".to_owned())],
    )
    .await;
    let done = client
        .wait(opened.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );

    // Erased everywhere but the held record, and nothing of anyone else.
    let gone = |before: &BTreeSet<String>, now: BTreeSet<String>| -> BTreeSet<String> {
        before.difference(&now).cloned().collect()
    };
    let set = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|i| (*i).to_owned()).collect() };
    assert_eq!(gone(&before.0, ids_of(&hubspot)), set(&["5", "11"]));
    assert_eq!(
        hubspot
            .vendor()
            .requests("DELETE /crm/v3/objects/{stream}/{id}", "412"),
        2,
        "both raced deletes were refused on their stale If-Match, and read again"
    );
    assert_eq!(gone(&before.1, ids_of(&stripe)), set(&["3"]));
    assert_eq!(gone(&before.2, warehouse_ids(&db).await), set(&["5", "9"]));
    let anonymised = salesforce.vendor().records(Stream::Contacts);
    let twelve = anonymised.iter().find(|r| r["id"] == "12").unwrap();
    assert_eq!(twelve["email"], "erased@invalid.example");
    assert_eq!(twelve["last_name"], "erased");
    assert_eq!(anonymised.len(), 100, "anonymised, not deleted");
    let detail = request::show(db.pool(), &opened.id).await.unwrap();
    assert_eq!(detail.summary.phase.as_str(), "fulfilling");
    assert_eq!(detail.summary.outcome.as_deref(), Some("partial"));
    assert_eq!((detail.summary.erased, detail.summary.unerased), (5, 1));

    // The held record's erasure is a dead letter naming the request's deadline.
    let letters = cairn::DeadLetters::new(db.pool().clone());
    let list = letters.list(50).await.unwrap();
    let dead = list
        .runs
        .iter()
        .find(|run| run.workflow == "dsr.erase")
        .expect("the held record's erasure is on the dead-letter list");
    let message = dead.message.clone().unwrap_or_default();
    assert!(
        message.contains("legal hold") && message.contains(&detail.summary.deadline.to_rfc3339()),
        "{message}"
    );
    assert_eq!(dead.category.as_deref(), Some("erasure"));

    // Once the hold is lifted, a retry erases it and closes the request.
    stripe.vendor().release_records();
    letters.retry(dead.run_id).await.unwrap();
    let retried = client
        .wait(dead.run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        retried.summary.status,
        RunStatus::Completed,
        "{:?}",
        retried.error
    );
    assert_eq!(gone(&before.1, ids_of(&stripe)), set(&["3", "7"]));
    let detail = request::show(db.pool(), &opened.id).await.unwrap();
    assert_eq!(detail.summary.phase.as_str(), "done");
    assert_eq!(detail.summary.outcome.as_deref(), Some("fulfilled"));
    assert_eq!((detail.summary.erased, detail.summary.unerased), (6, 0));
    let clock = client
        .wait(opened.clock_run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(clock.summary.status, RunStatus::Completed);
    worker.shutdown().await;

    // Past its retention, the report and the subject go; the purge is audited.
    sqlx::query("UPDATE cairn.dsr_requests SET report_purge_after = now() - interval '1 minute'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(request::reports_due(db.pool()).await.unwrap(), 1);
    assert_eq!(request::purge_reports(db.pool(), &key()).await.unwrap(), 1);
    let purged = request::report(db.pool(), &cairn::seal::Sealer::plain(), &opened.id)
        .await
        .unwrap_err();
    assert!(purged.to_string().contains("was purged"), "{purged}");
    let kept: (bool, i32) = sqlx::query_as(
        "SELECT subject IS NULL AND subject_sealed IS NULL, erased FROM cairn.dsr_requests",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(kept, (true, 6), "the row keeps its counts, not the person");
    let mut conn = db.pool().acquire().await.unwrap();
    let verified = audit::verify(&mut conn, &key()).await.unwrap();
    assert!(verified.broken.is_none(), "{verified:?}");
    // An entry removed (by someone who got past the trigger) is named.
    sqlx::query("ALTER TABLE cairn.dsr_audit DISABLE TRIGGER dsr_audit_append_only")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM cairn.dsr_audit WHERE seq = 5")
        .execute(&mut *conn)
        .await
        .unwrap();
    let verified = audit::verify(&mut conn, &key()).await.unwrap();
    let broken = verified.broken.expect("a removed entry breaks the chain");
    assert_eq!(broken.seq, 6);
    assert!(
        broken.problem.contains("entry 5 is missing"),
        "{}",
        broken.problem
    );
}

/// `profile` with a shared rate budget of `rate` requests per second.
fn rate_limited(profile: &str, rate: u32) -> String {
    profile.replacen(
        "[auth]\nkind = \"none\"\n",
        &format!(
            "[auth]\nkind = \"none\"\n\n[rate_limit]\nrequests_per_second = {rate}\nburst = 1\n"
        ),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_lookups_overtake_backfills_of_the_same_vendor() {
    let db = TestDb::new().await;
    let hubspot = start(SandboxConfig {
        records_per_stream: 2_000,
        max_page_size: 25,
        rate_limit: Some(cairn::sandbox::RateLimit::new(5.0, 1)),
        ..SandboxConfig::default()
    })
    .await;
    let planted: Vec<String> = (1..=200).map(|n| (n * 7).to_string()).collect();
    let planted: Vec<&str> = planted.iter().map(String::as_str).collect();
    plant(&hubspot, SUBJECT, &planted);
    let profile = rate_limited(HUBSPOT, 5);
    let worker = worker(&db);
    let client = Client::new(db.pool().clone()).with_registry(registry());
    let mut backfills = Vec::new();
    for stream in [Stream::Companies, Stream::Deals] {
        let started = client
            .start(
                sync::BACKFILL,
                &input(&profile, &hubspot, stream),
                &cairn::StartOptions::default(),
            )
            .await
            .unwrap();
        backfills.push(started.run_id);
    }
    let listing = "GET /crm/v3/objects/{stream}";
    while hubspot.vendor().requests(listing, "200") < 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = hubspot.vendor().requests(listing, "200");
    let opened = open(
        &db,
        Kind::Access,
        Regulation::Gdpr,
        vec![source(&profile, "hubspot.toml", &hubspot)],
        Vec::new(),
    )
    .await;
    let done = client
        .wait(opened.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    let during = hubspot.vendor().requests(listing, "200") - before;
    let searches = hubspot
        .vendor()
        .requests("POST /crm/v3/objects/{stream}/search", "200");
    assert_eq!(searches, 8, "200 records in pages of 25");
    assert!(
        during <= 3,
        "the backfills sent {during} requests while the request's 8 lookup pages went: \
         only those already reserved may go first"
    );
    assert_eq!(hubspot.vendor().requests(listing, "429"), 0);
    let detail = request::show(db.pool(), &opened.id).await.unwrap();
    assert_eq!(detail.summary.found, 200);
    for run in backfills {
        client.cancel(run).await.unwrap();
    }
    worker.shutdown().await;
}

/// The open deadline alerts of `request`, by share.
async fn deadline_alerts(db: &TestDb, request: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT detail FROM cairn.alerts WHERE kind = 'dsr_deadline' AND stream = $1 ORDER BY first_seen",
    )
    .bind(request)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_alerts_at_each_share_from_durable_timers_and_follows_an_extension() {
    let db = TestDb::new().await;
    let vendor = start(SandboxConfig {
        records_per_stream: 50,
        ..SandboxConfig::default()
    })
    .await;
    // The vendor holds every request: discovery cannot finish while the clock runs.
    let hold = vendor.vendor().hold();
    let clock = cairn::Clock::skippable();
    let worker = TestWorker::start(
        db.pool().clone(),
        registry(),
        WorkerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(50),
            clock: clock.clone(),
            ..WorkerConfig::default()
        },
    );
    let client = Client::new(db.pool().clone())
        .with_registry(registry())
        .with_clock(clock.clone());
    let opened = open(
        &db,
        Kind::Access,
        Regulation::Days(10),
        vec![source(HUBSPOT, "hubspot.toml", &vendor)],
        Vec::new(),
    )
    .await;
    hold.until_waiting(1).await;
    let detail = request::show(db.pool(), &opened.id).await.unwrap();
    let received = detail.summary.received_at;
    let share_at = |days: f64, share: f64| {
        received + TimeDelta::milliseconds((days * 86_400_000.0 * share) as i64)
    };
    let close = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (a - b).num_milliseconds().abs() < 1_000
    };
    // The clock sleeps, parked, until half the window has gone: once its run waits
    // that far ahead (and not for a step about to run), the clock is moved there.
    let wake = async || loop {
        if let Some(at) = client.next_wake().await.unwrap()
            && at > clock.now() + TimeDelta::hours(1)
        {
            clock.advance_to(at);
            return at;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let until_alerts = async |count: usize| loop {
        let alerts = deadline_alerts(&db, &opened.id).await;
        if alerts.len() >= count {
            return alerts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at = wake().await;
    assert!(close(at, share_at(10.0, 0.5)), "{at}");
    assert_eq!(until_alerts(1).await, ["50%"]);
    // Extended by 10 days: the 80% timer moves to 80% of the 20-day window.
    let extended = request::extend(db.pool(), &key(), &opened.id, 10, "the vendor is migrating")
        .await
        .unwrap();
    assert!(close(extended, received + TimeDelta::days(20)));
    let at = wake().await;
    let at = if close(at, share_at(10.0, 0.8)) {
        // The clock had already armed the old timer when the extension came: it wakes,
        // reads the new deadline and sleeps again.
        wake().await
    } else {
        at
    };
    assert!(close(at, share_at(20.0, 0.8)), "{at}");
    assert_eq!(until_alerts(2).await, ["50%", "80%"]);
    let at = wake().await;
    assert!(close(at, share_at(20.0, 1.0)), "{at}");
    assert_eq!(until_alerts(3).await, ["50%", "80%", "100%"]);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM cairn.dsr_audit WHERE request_id = $1 AND action = 'deadline_alert' ORDER BY seq",
    )
    .bind(&opened.id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(actions, ["warned", "warned", "overdue"]);
    let clock_run = client
        .wait(opened.clock_run_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(clock_run.summary.status, RunStatus::Completed);
    // Past its deadline, an open request is listed as overdue.
    sqlx::query("UPDATE cairn.dsr_requests SET deadline = now() - interval '1 hour' WHERE id = $1")
        .bind(&opened.id)
        .execute(db.pool())
        .await
        .unwrap();
    let overdue = request::list(db.pool(), true).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].phase.as_str(), "overdue");
    drop(hold);
    worker.shutdown().await;
}
