//! `sync.pipeline` from one sandbox vendor to another over real HTTP: every record of a
//! stream lands at the destination exactly once, whatever the destination loses, refuses
//! or changes meanwhile, and the destination is compared with the source afterwards.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::sandbox::{SandboxConfig, SandboxHandle, Stream, WriteFaults};
use cairn::workflows::sync::{PIPELINE, PipelineInput, PipelineReport};
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use serde_json::Value;
use support::builtin_worker;
use support::vendor::{HUBSPOT, assert_holds, input, start};

const DESTINATION: &str = include_str!("../examples/destinations/sandbox-dest.toml");

fn pipeline_input(source: &SandboxHandle, dest: &SandboxHandle, stream: Stream) -> PipelineInput {
    let mut input = PipelineInput::new(
        input(HUBSPOT, source, stream),
        DESTINATION.to_owned(),
        "sandbox-dest.toml".to_owned(),
    );
    input.destination_base_url = Some(dest.base_url().to_owned());
    input
}

async fn run_pipeline(db: &TestDb, input: &PipelineInput) -> PipelineReport {
    let client = Client::new(db.pool().clone());
    let run = client
        .start(PIPELINE, input, &StartOptions::default())
        .await
        .unwrap();
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    serde_json::from_value(done.output.unwrap()).unwrap()
}

fn faulty_destination() -> SandboxConfig {
    SandboxConfig {
        records_per_stream: 0,
        seed: 7,
        writes: WriteFaults {
            ack_loss: 0.1,
            unavailable: 0.05,
            concurrent_edits: 0.2,
            conflict_share: 0.0,
            invalid_share: 0.01,
            unusable_ids: 0.0,
        },
        ..SandboxConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_the_destination_once_despite_lost_answers_and_edits() {
    let db = TestDb::new().await;
    let source = start(SandboxConfig {
        records_per_stream: 300,
        ..SandboxConfig::default()
    })
    .await;
    let dest = start(faulty_destination()).await;
    // The companies exist at the destination already, as someone else left them.
    for company in source.vendor().records(Stream::Companies) {
        let id = company["id"].as_str().unwrap();
        dest.vendor()
            .seed_destination("companies", id, serde_json::json!({"name": "old"}));
    }
    let worker = builtin_worker(db.pool().clone(), 4);

    // contacts: POST with idempotency keys.
    let report = run_pipeline(&db, &pipeline_input(&source, &dest, Stream::Contacts)).await;
    let contacts = dest.vendor().destination("contacts");
    assert!(contacts.duplicates.is_empty(), "{:?}", contacts.duplicates);
    assert!(contacts.counts.acks_lost > 0, "answers were lost");
    let by_source: BTreeMap<&str, &Value> = contacts
        .records
        .values()
        .map(|held| (held["external_id"].as_str().unwrap(), held))
        .collect();
    let rejects: Vec<String> = sqlx::query_scalar(
        "SELECT record_id FROM cairn.destination_rejects WHERE stream = 'contacts'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let sources = source.vendor().records(Stream::Contacts);
    for record in &sources {
        let id = record["id"].as_str().unwrap();
        match by_source.get(id) {
            Some(held) => assert_holds(held, record, id),
            None => assert!(
                rejects.iter().any(|r| r == id),
                "{id} is neither written nor a dead letter"
            ),
        }
    }
    assert_eq!(by_source.len() + rejects.len(), sources.len());
    assert_eq!(report.applied as usize, by_source.len());
    assert_eq!(report.rejected as usize, rejects.len());

    // companies: PATCH with If-Match; someone else's edits lose to the source.
    let report = run_pipeline(&db, &pipeline_input(&source, &dest, Stream::Companies)).await;
    let companies = dest.vendor().destination("companies");
    assert!(companies.counts.stale > 0, "edits made conflicts");
    let rejects: Vec<String> = sqlx::query_scalar(
        "SELECT record_id FROM cairn.destination_rejects WHERE stream = 'companies'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    for record in source.vendor().records(Stream::Companies) {
        let id = record["id"].as_str().unwrap();
        if !rejects.iter().any(|r| r == id) {
            assert_holds(&companies.records[id], &record, id);
        }
    }
    assert_eq!(report.conflicts, 0, "source_wins settles every conflict");

    // deals: PUT through the batch endpoint (50 records a request), under the same faults.
    let report = run_pipeline(&db, &pipeline_input(&source, &dest, Stream::Deals)).await;
    let deals = dest.vendor().destination("deals");
    let batches = dest.vendor().requests("POST /dest/{stream}/batch", "200");
    assert!(batches >= 6, "{batches} batches answered");
    let rejects: Vec<String> = sqlx::query_scalar(
        "SELECT record_id FROM cairn.destination_rejects WHERE stream = 'deals'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    for record in source.vendor().records(Stream::Deals) {
        let id = record["id"].as_str().unwrap();
        match deals.records.get(id) {
            Some(held) => assert_holds(held, &record, id),
            None => assert!(
                rejects.iter().any(|r| r == id),
                "{id} is neither written nor a dead letter"
            ),
        }
    }
    assert_eq!(report.applied as usize + rejects.len(), 300, "{report:?}");
    assert!(deals.duplicates.is_empty());

    // A second run writes only what changed since; contacts created before are not
    // created again.
    source
        .vendor()
        .mutate(
            Stream::Contacts,
            cairn::sandbox::Mutation::Update { count: 10 },
        )
        .unwrap();
    let again = run_pipeline(&db, &pipeline_input(&source, &dest, Stream::Contacts)).await;
    assert!(again.records < 300, "read only what changed: {again:?}");
    assert!(again.already_created >= 10, "{again:?}");
    let contacts = dest.vendor().destination("contacts");
    assert!(contacts.duplicates.is_empty(), "{:?}", contacts.duplicates);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_id_in_a_creation_answer_is_not_kept_and_raises_an_alert() {
    let db = TestDb::new().await;
    let source = start(SandboxConfig {
        records_per_stream: 200,
        only: Some(Stream::Contacts),
        ..SandboxConfig::default()
    })
    .await;
    let dest = start(SandboxConfig {
        records_per_stream: 0,
        seed: 5,
        writes: WriteFaults {
            ack_loss: 0.05,
            unusable_ids: 0.2,
            ..WriteFaults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 4);
    let report = run_pipeline(&db, &pipeline_input(&source, &dest, Stream::Contacts)).await;
    worker.shutdown().await;

    // Every record created once, with its fields, garbled answer or not.
    let held = dest.vendor().destination("contacts");
    assert!(held.duplicates.is_empty(), "{:?}", held.duplicates);
    let sources = source.vendor().records(Stream::Contacts);
    assert_eq!(held.records.len(), sources.len());
    assert_eq!(report.applied as usize, sources.len());
    // No id over the bound is kept; the records answered with one are known as written,
    // their id there unknown, and said so.
    let (longest, unknown): (i32, i64) = sqlx::query_as(
        "SELECT coalesce(max(length(dest_id)), 0), count(*) FILTER (WHERE dest_id = '')
           FROM cairn.destination_records WHERE stream = 'contacts'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(longest as usize <= cairn::connectors::destination::MAX_DEST_ID);
    assert!(
        unknown > 10,
        "about a fifth of 200 answers were garbled: {unknown}"
    );
    let alert: String = sqlx::query_scalar(
        "SELECT message FROM cairn.alerts
          WHERE kind = 'destination_id_unusable' AND stream = 'contacts'
            AND resolved_at IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(alert.contains("no id cairn can keep"), "{alert}");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.destination_records WHERE stream = 'contacts'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        recorded as usize,
        sources.len(),
        "every creation is recorded"
    );
}
