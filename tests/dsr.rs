//! Privacy requests end to end: a person planted in three sandbox vendors (and, through
//! a sync, in the warehouse) is found by an access request in every one of them and
//! nowhere else, the report lists exactly their records, and the audit chain verifies
//! and names the entry an edit breaks.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cairn::sandbox::{Mutation, SandboxConfig, SandboxHandle, Stream};
use cairn::workflows::dsr::report::Report;
use cairn::workflows::dsr::request::{self, OpenRequest};
use cairn::workflows::dsr::{AuditKey, Kind, Regulation, RequestSource, Subject, audit};
use cairn::workflows::sync;
use cairn::{Client, Registry, RunStatus, WorkerConfig};
use cairn_testkit::{TestDb, TestWorker, run_to_completion};
use chrono::TimeDelta;
use serde_json::json;
use support::vendor::{HUBSPOT, STRIPE, input, start};

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

fn plant(sandbox: &SandboxHandle, email: &str, ids: &[&str]) {
    sandbox
        .vendor()
        .mutate(
            Stream::Contacts,
            Mutation::Assign {
                field: "email".to_owned(),
                value: json!(email),
                ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            },
        )
        .unwrap();
}

fn source(toml: &str, file: &str, sandbox: &SandboxHandle) -> RequestSource {
    RequestSource {
        toml: toml.to_owned(),
        file: file.to_owned(),
        base_url: Some(sandbox.base_url().to_owned()),
    }
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
    plant(&hubspot, SUBJECT, &["5", "9"]);
    plant(&hubspot, "x.grace.subject@example.com", &["6"]);
    plant(&salesforce, &SUBJECT.to_uppercase(), &["12"]);
    plant(&salesforce, "grace.subject@example.com.evil", &["13"]);
    plant(&stripe, &SUBJECT.to_lowercase(), &["7"]);
    // Record 3 at the Stripe-like vendor holds an old address: found by its id only.
    plant(&stripe, "g.s@old.example", &["3"]);
    let worker = TestWorker::start(
        db.pool().clone(),
        registry(),
        WorkerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    );
    // The HubSpot-like contacts are in the warehouse too (as they were before the change
    // below): the warehouse search finds rows the vendor no longer ties to the person.
    let client = Client::new(db.pool().clone()).with_registry(registry());
    run_to_completion(
        &client,
        sync::BACKFILL,
        &input(HUBSPOT, &hubspot, Stream::Contacts),
    )
    .await;
    plant(&hubspot, "someone.else@example.com", &["9"]);
    plant(&hubspot, SUBJECT, &["11"]);

    let opened = request::open(
        db.pool(),
        &cairn::seal::Sealer::plain(),
        &key(),
        OpenRequest {
            subject: Subject {
                email: SUBJECT.to_owned(),
                ids: vec![("sandbox-stripe".to_owned(), "3".to_owned())],
            },
            kind: Kind::Access,
            regulation: Regulation::Gdpr,
            sources: vec![
                source(HUBSPOT, "hubspot.toml", &hubspot),
                source(SALESFORCE, "salesforce.toml", &salesforce),
                source(STRIPE, "stripe.toml", &stripe),
            ],
            alerts: vec![0.5, 0.8, 1.0],
            retention: TimeDelta::days(30),
        },
    )
    .await
    .unwrap();
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
