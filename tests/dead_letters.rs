//! `cairn dlq` over real data: a poison record lands in the dead-letter list while the
//! rest of its page lands in the warehouse, and a corrected version of it is re-applied;
//! a failed run is listed, shown and retried.

mod support;

use cairn::connectors::record::Record;
use cairn::connectors::warehouse::{StreamSpec, Warehouse};
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use chrono::Utc;
use serde_json::{Value, json};
use support::{WorkerProcess, run};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_out(url: &str, args: &[&str]) -> Value {
    let out = run(url, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

async fn ages(db: &TestDb) -> Vec<(String, Option<i64>)> {
    sqlx::query_as("SELECT id, age FROM warehouse.contacts ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_alone_and_lands_once_corrected() {
    let db = TestDb::new().await;
    let url = db.url();
    let warehouse = Warehouse::new("crm", "warehouse").unwrap();
    let contacts = StreamSpec::new("contacts", "id");
    let pages = [
        vec![json!({"id": "1", "age": 30, "name": "Ada"})],
        // "thirty" breaks the bigint column `age`: only that record is set aside.
        vec![
            json!({"id": "2", "age": 31, "name": "Grace"}),
            json!({"id": "3", "age": "thirty", "name": "Edsger"}),
            json!({"id": "4", "age": 40, "name": "Barbara"}),
        ],
    ];
    for page in &pages {
        let mut tx = db.pool().begin().await.unwrap();
        warehouse
            .upsert_page(&mut tx, &contacts, &Record::from_values(page), Utc::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        ages(&db).await,
        [
            ("1".to_owned(), Some(30)),
            ("2".to_owned(), Some(31)),
            ("4".to_owned(), Some(40))
        ]
    );

    let list = json_out(&url, &["dlq", "list", "--json"]);
    assert_eq!(list["runs"], json!([]));
    let records = list["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{list}");
    assert_eq!(records[0]["record_id"], "3");
    assert_eq!(records[0]["stream"], "contacts");
    assert_eq!(records[0]["record"]["age"], "thirty");
    let id = format!("record:{}", records[0]["id"]);
    let shown = json_out(&url, &["dlq", "show", &id, "--json"]);
    assert_eq!(shown["record_id"], "3");

    // As stored it still cannot land: nothing changes.
    let again = run(&url, &["dlq", "retry", &id]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("still cannot land"),
        "{}",
        stderr(&again)
    );
    // A correction must keep the record's key.
    let other = run(
        &url,
        &["dlq", "retry", &id, "--record", r#"{"id": "9", "age": 1}"#],
    );
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    let list = json_out(&url, &["dlq", "list", "--json"]);
    assert_eq!(list["records"].as_array().unwrap().len(), 1);

    let fixed = r#"{"id": "3", "age": 30, "name": "Edsger"}"#;
    let landed = json_out(&url, &["dlq", "retry", &id, "--record", fixed, "--json"]);
    assert_eq!(landed["landed"], true);
    assert_eq!(
        ages(&db).await,
        [
            ("1".to_owned(), Some(30)),
            ("2".to_owned(), Some(31)),
            ("3".to_owned(), Some(30)),
            ("4".to_owned(), Some(40))
        ]
    );
    let list = json_out(&url, &["dlq", "list", "--json"]);
    assert_eq!(list["records"], json!([]));
    let gone = run(&url, &["dlq", "retry", &id]);
    assert_eq!(gone.status.code(), Some(2), "{}", stderr(&gone));

    // A record that cannot be saved is dismissed.
    let page = [json!({"id": "5", "age": [1, 2], "name": "Alan"})];
    let mut tx = db.pool().begin().await.unwrap();
    warehouse
        .upsert_page(&mut tx, &contacts, &Record::from_values(&page), Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let list = json_out(&url, &["dlq", "list", "--json"]);
    let id = format!("record:{}", list["records"][0]["id"]);
    let dismissed = json_out(&url, &["dlq", "dismiss", &id, "--json"]);
    assert_eq!(dismissed["dismissed"], id);
    let list = json_out(&url, &["dlq", "list", "--json"]);
    assert_eq!(list["records"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_listed_shown_and_retried_from_the_cli() {
    let db = TestDb::new().await;
    let url = db.url();
    // Started without the registry's check, so the run itself fails on its input.
    let client = Client::new(db.pool().clone());
    let started = client
        .start(
            "ledger",
            &json!({"steps": "many"}),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let worker = WorkerProcess::spawn(&url, &[]);
    let run_id = started.run_id;
    let ended = client
        .wait(run_id, Some(std::time::Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(ended.summary.status, RunStatus::Failed);

    let list = json_out(&url, &["dlq", "list", "--json"]);
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], run_id.to_string());
    assert_eq!(runs[0]["class"], "permanent");
    assert!(
        runs[0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid input for workflow `ledger`")
    );
    let shown = run(&url, &["dlq", "show", &run_id.to_string()]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("failed outside a step"));

    // The input is still wrong, so the retried run fails again: exit 1 with --wait.
    let retried = run(&url, &["dlq", "retry", &run_id.to_string(), "--wait"]);
    assert_eq!(retried.status.code(), Some(1), "{}", stderr(&retried));
    let run_row = client.show(run_id).await.unwrap();
    assert_eq!(run_row.summary.status, RunStatus::Failed);
    assert_eq!(run_row.summary.claims, 2);

    let unknown = run(&url, &["dlq", "retry", &cairn::RunId::new().to_string()]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("is not in the dead-letter list"));
    assert_eq!(worker.terminate(), Some(0));
}
