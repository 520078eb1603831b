//! Encryption at rest, end to end: a `cairn worker` process given a key syncs a vendor
//! (pages, quarantined records) and nothing the vendor sent is left readable in the
//! `cairn` schema, while the warehouse holds it plain; `cairn keys rotate` moves every
//! value to a new key while the old one still opens them; a value sealed with a key the
//! process lacks is refused by name; events are sealed and still delivered.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cairn::sandbox::{Mutation, SandboxConfig, Stream};
use cairn::seal::{Keyring, Sealer};
use cairn::workflows::sync;
use cairn::{Client, Context, Error, Registry, RunStatus, StartOptions, Worker, WorkerConfig};
use cairn_testkit::{TestDb, run_to_completion};
use serde_json::Value;
use support::vendor::{HUBSPOT, input, start};
use support::{WorkerProcess, cairn};

/// Every row of every table of the `cairn` schema, as text.
async fn dump(db: &TestDb) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'cairn' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut text = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM cairn.{table} t"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        text.push_str(&rows.unwrap_or_default());
        text.push('\n');
    }
    text
}

fn keys_cli(url: &str, key: &str, args: &[&str]) -> std::process::Output {
    let mut command = cairn();
    command.env("DATABASE_URL", url).args(args);
    if !key.is_empty() {
        command.env("CAIRN_ENCRYPTION_KEY", key);
    }
    command.output().unwrap()
}

fn json(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_nothing_the_vendor_sent_is_readable_in_the_cairn_schema() {
    let db = TestDb::new().await;
    let vendor = start(SandboxConfig {
        records_per_stream: 300,
        only: Some(Stream::Contacts),
        ..SandboxConfig::default()
    })
    .await;
    let first = Keyring::generate();
    let worker =
        WorkerProcess::spawn_with_env(&db.url(), &[], &[("CAIRN_ENCRYPTION_KEY", first.as_str())]);
    // The test's own client opens step outputs as the CLI would, with the key.
    let client = Client::new(db.pool().clone())
        .with_sealer(Sealer::new(Keyring::parse(&first, "test").unwrap()));
    let sync_input = input(HUBSPOT, &vendor, Stream::Contacts);
    let mut runs = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // A removed field quarantines the records that lost it.
            vendor
                .vendor()
                .mutate(
                    Stream::Contacts,
                    Mutation::RemoveField {
                        field: "phone".into(),
                        touch: true,
                    },
                )
                .unwrap();
        }
        let done = run_to_completion(&client, sync::INCREMENTAL, &sync_input).await;
        runs.push(done.summary.id);
    }
    assert_eq!(worker.terminate(), Some(0));

    let quarantined: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.quarantine")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(quarantined > 0, "the drift quarantined records");
    let contacts = vendor.vendor().records(Stream::Contacts);
    let emails: Vec<&str> = contacts
        .iter()
        .map(|c| c["email"].as_str().unwrap())
        .collect();
    let warehouse: String =
        sqlx::query_scalar("SELECT string_agg(t::text, E'\\n') FROM sandbox_hubspot.contacts t")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let dumped = dump(&db).await;
    for email in &emails {
        assert!(
            warehouse.contains(email),
            "the warehouse is the user's, plain"
        );
        assert!(
            !dumped.contains(email),
            "{email} is readable in the cairn schema"
        );
    }
    let sealed_steps: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cairn.steps WHERE output_sealed IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(sealed_steps >= 2);

    // The first key opens what it sealed: the largest output of the first run is a page.
    let page: i32 = sqlx::query_scalar(
        "SELECT position FROM cairn.steps WHERE run_id = $1
          ORDER BY pg_column_size(output_sealed) DESC NULLS LAST LIMIT 1",
    )
    .bind(runs[0])
    .fetch_one(db.pool())
    .await
    .unwrap();
    let opened = client
        .step_output(runs[0], page)
        .await
        .unwrap()
        .unwrap()
        .to_string();
    let on_page = *emails
        .iter()
        .find(|email| opened.contains(**email))
        .expect("the page opens again, with the vendor's records");
    let run = runs[0].to_string();
    json(&keys_cli(
        &db.url(),
        &first,
        &["runs", "show", &run, "--json"],
    ));

    // No key: refused, and the message says which key and how to give it.
    let refused = keys_cli(&db.url(), "", &["runs", "show", &run, "--json"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("is encrypted") && said.contains("CAIRN_ENCRYPTION_KEY"),
        "{said}"
    );

    // Rotation while a worker runs: the workers get the new key first, the old one
    // still configured to open, and a sync runs as the rotation goes.
    let second = Keyring::generate();
    let both = format!("{} {}", second.as_str(), first.as_str());
    let worker =
        WorkerProcess::spawn_with_env(&db.url(), &[], &[("CAIRN_ENCRYPTION_KEY", both.as_str())]);
    vendor
        .vendor()
        .mutate(Stream::Contacts, Mutation::Update { count: 150 })
        .unwrap();
    let during = client
        .start(sync::INCREMENTAL, &sync_input, &StartOptions::default())
        .await
        .unwrap();
    let rotated = json(&keys_cli(
        &db.url(),
        &both,
        &["keys", "rotate", "--batch", "7", "--json"],
    ));
    let rotating_client = Client::new(db.pool().clone())
        .with_sealer(Sealer::new(Keyring::parse(&both, "test").unwrap()));
    let done = rotating_client
        .wait(during.run_id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(worker.terminate(), Some(0));
    // What changed under the first pass is covered by the next.
    json(&keys_cli(&db.url(), &both, &["keys", "rotate", "--json"]));
    let rewritten: u64 = rotated
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rewritten"].as_u64().unwrap())
        .sum();
    // The running sync re-seals what it rewrites itself; the rotation does the rest.
    assert!(rewritten >= 10, "{rotated}");
    let status = json(&keys_cli(&db.url(), &second, &["keys", "status", "--json"]));
    let current = status["current_key"].as_str().unwrap().to_owned();
    for value in status["values"].as_array().unwrap() {
        assert_eq!(value["key"].as_str(), Some(current.as_str()), "{status}");
    }
    assert!(!dump(&db).await.contains(on_page));
    json(&keys_cli(
        &db.url(),
        &second,
        &["runs", "show", &run, "--json"],
    ));
    let rotated_client = Client::new(db.pool().clone())
        .with_sealer(Sealer::new(Keyring::parse(&second, "test").unwrap()));
    let opened = rotated_client
        .step_output(runs[0], page)
        .await
        .unwrap()
        .unwrap();
    assert!(opened.to_string().contains(on_page));
    // The old key alone no longer opens anything: it is named as missing.
    let stale = keys_cli(&db.url(), &first, &["runs", "show", &run, "--json"]);
    assert!(!stale.status.success());
    let said = String::from_utf8_lossy(&stale.stderr);
    assert!(
        said.contains(&current) && said.contains("not among"),
        "{said}"
    );
}

async fn echo(ctx: Context, _input: Value) -> Result<String, Error> {
    let got: Option<String> = ctx.wait_for_event("note", Duration::from_secs(60)).await?;
    Ok(got.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_sealed_and_still_delivered() {
    let db = TestDb::new().await;
    let sealer = Sealer::new(Keyring::parse(&Keyring::generate(), "test").unwrap());
    let mut registry = Registry::new();
    registry.register("echo", echo);
    let registry = Arc::new(registry);
    let worker = Worker::new(
        db.pool().clone(),
        Arc::clone(&registry),
        WorkerConfig::default(),
    )
    .with_sealer(sealer.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let client = Client::new(db.pool().clone()).with_sealer(sealer);
    let run = client
        .start("echo", &Value::Null, &StartOptions::default())
        .await
        .unwrap();
    client
        .send_event(run.run_id, "note", &"Ada Lovelace, ada@example.com")
        .await
        .unwrap();
    let done = client
        .wait(run.run_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        done.output,
        Some(Value::from("Ada Lovelace, ada@example.com"))
    );
    let rows: Vec<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT data::text, data_sealed FROM cairn.events")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].0.is_none() && rows[0].1.is_some());
    let dumped = dump(&db).await;
    // The run's own output is the author's and stays plain; the event and the step that
    // took it are sealed.
    assert_eq!(dumped.matches("ada@example.com").count(), 1, "{dumped}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
