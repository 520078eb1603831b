//! 10,000 records from one sandbox vendor to another through `cairn worker` processes
//! SIGKILLed five times, while the destination loses one answer in ten, refuses one
//! write in twenty with a 503 and lets another user edit records under cairn's feet:
//! afterwards the destination holds every record exactly once, none was created twice,
//! and every conflict went the stream's policy's way.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::sandbox::{SandboxConfig, Stream, WriteFaults};
use cairn::workflows::sync::{PIPELINE, PipelineInput, PipelineReport};
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use serde_json::Value;
use support::WorkerProcess;
use support::vendor::{HUBSPOT, assert_holds, input, start};

const RECORDS: usize = 10_000;
const KILLS: usize = 5;

/// Both streams take the source's contacts: `created` by POST (each creation counted by
/// the destination per source id), `patched` by PATCH over records that exist already.
const DESTINATION: &str = r#"
[destination]
name = "crash-dest"
base_url = "http://127.0.0.1:9"

[destination.streams.created]
path = "/dest/created"
mode = "post"
source_id_field = "external_id"

[destination.streams.patched]
path = "/dest/patched"
mode = "patch"
on_conflict = "source_wins"
"#;

async fn completed_steps(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM cairn.steps WHERE status = 'completed'")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_and_lost_answers_leave_every_record_written_once() {
    let db = TestDb::new().await;
    let source = start(SandboxConfig {
        records_per_stream: RECORDS,
        only: Some(Stream::Contacts),
        ..SandboxConfig::default()
    })
    .await;
    let dest = start(SandboxConfig {
        records_per_stream: 0,
        seed: 11,
        writes: WriteFaults {
            ack_loss: 0.10,
            unavailable: 0.05,
            concurrent_edits: 0.10,
            ..WriteFaults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let contacts = source.vendor().records(Stream::Contacts);
    assert_eq!(contacts.len(), RECORDS);
    for record in &contacts {
        let id = record["id"].as_str().unwrap();
        dest.vendor()
            .seed_destination("patched", id, serde_json::json!({"name": "before"}));
    }

    let client = Client::new(db.pool().clone());
    let mut runs = Vec::new();
    for stream in ["created", "patched"] {
        let mut pipeline = PipelineInput::new(
            input(HUBSPOT, &source, Stream::Contacts),
            DESTINATION.to_owned(),
            "crash-dest.toml".to_owned(),
        );
        pipeline.destination_stream = Some(stream.to_owned());
        pipeline.destination_base_url = Some(dest.base_url().to_owned());
        let run = client
            .start(PIPELINE, &pipeline, &StartOptions::default())
            .await
            .unwrap();
        runs.push(run.run_id);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut worker = WorkerProcess::spawn(&db.url(), &[]);
    for _ in 0..KILLS {
        let before = completed_steps(&db).await;
        while completed_steps(&db).await < before + 15 {
            assert!(tokio::time::Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.kill();
        worker = WorkerProcess::spawn(&db.url(), &[]);
    }
    let mut reports = Vec::new();
    for run in &runs {
        let left = deadline - tokio::time::Instant::now();
        let done = client.wait(*run, Some(left)).await.unwrap();
        assert_eq!(
            done.summary.status,
            RunStatus::Completed,
            "{:?}",
            done.error
        );
        reports.push(serde_json::from_value::<PipelineReport>(done.output.unwrap()).unwrap());
    }
    let claims: i32 = sqlx::query_scalar("SELECT sum(claims)::int FROM cairn.runs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(claims > 2, "the kills landed mid-run ({claims} claims)");
    assert_eq!(worker.terminate(), Some(0));

    // Created: each source record once, with its fields, and no creation twice.
    let created = dest.vendor().destination("created");
    assert!(
        created.duplicates.is_empty(),
        "created twice: {:?}",
        created.duplicates
    );
    assert!(created.counts.acks_lost > 100 && created.counts.unavailable > 50);
    let by_source: BTreeMap<&str, &Value> = created
        .records
        .values()
        .map(|held| (held["external_id"].as_str().unwrap(), held))
        .collect();
    assert_eq!(by_source.len(), RECORDS);
    for record in &contacts {
        let id = record["id"].as_str().unwrap();
        assert_holds(by_source[id], record, id);
    }

    // Patched: each record holds the source's fields over another user's edits.
    let patched = dest.vendor().destination("patched");
    assert!(patched.counts.stale > 0 && patched.counts.edited_by_others > 0);
    assert_eq!(patched.records.len(), RECORDS);
    for record in &contacts {
        let id = record["id"].as_str().unwrap();
        assert_holds(&patched.records[id], record, id);
    }
    for report in &reports {
        assert_eq!(report.records as usize, RECORDS, "{report:?}");
        assert_eq!((report.rejected, report.conflicts), (0, 0), "{report:?}");
    }
    let rejects: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.destination_rejects")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rejects, 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.pipeline_acks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "every step's acknowledgements were settled");
}
