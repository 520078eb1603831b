//! Schedules across real processes: three `cairn worker` processes each run the
//! scheduler, and a per-second schedule still starts exactly one run per fire time;
//! `cairn schedule sync` keeps a stream synced with the sandbox vendor unattended.

mod support;

use std::time::Duration;

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{Sandbox, SandboxConfig, Stream};
use cairn_testkit::TestDb;
use chrono::{DateTime, Utc};
use serde_json::Value;
use support::{WorkerProcess, run};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_start_one_run_per_fire_time() {
    let db = TestDb::new().await;
    let url = db.url();
    let workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::spawn(&url, &[])).collect();

    // Catch-up `all` so that no fire time may be dropped, even by a slow tick: every
    // second from the first fire time on must have exactly one run.
    let added = run(
        &url,
        &[
            "schedule",
            "add",
            "tick",
            "--cron",
            "* * * * * *",
            "--workflow",
            "ledger",
            "--input",
            r#"{"steps": 1}"#,
            "--overlap",
            "allow",
            "--catch-up",
            "all:100",
        ],
    );
    assert_eq!(added.status.code(), Some(0), "{}", stderr(&added));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let started: i64 =
            sqlx::query_scalar("SELECT runs_started FROM cairn.schedules WHERE name = 'tick'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        if started >= 12 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {started} scheduled runs after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paused = run(&url, &["schedule", "pause", "tick"]);
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    // A tick that read the row before the pause commits may still be finishing.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM cairn.runs WHERE workflow = 'ledger' ORDER BY created_at",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut fires: Vec<DateTime<Utc>> = keys
        .iter()
        .map(|k| {
            let at = k.strip_prefix("schedule:tick:").expect("a schedule key");
            DateTime::parse_from_rfc3339(at).unwrap().to_utc()
        })
        .collect();
    fires.sort();
    assert!(fires.len() >= 10, "{} fire times", fires.len());
    for pair in fires.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            1000,
            "fire times must be consecutive seconds, each once: {fires:?}"
        );
    }

    let listed = run(&url, &["schedule", "list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("one JSON document");
    let tick = &listed[0];
    assert_eq!(tick["name"], "tick");
    assert_eq!(tick["enabled"], false);
    // Each fire time was handled by one scheduler: a second handling would have counted
    // the same run again.
    assert_eq!(tick["runs_started"], fires.len() as i64);
    assert_eq!(tick["fires_skipped"], 0);

    for worker in workers {
        assert_eq!(worker.terminate(), Some(0));
    }
}

#[test]
fn schedule_input_errors_exit_2_naming_the_bad_part() {
    let url = "postgres://postgres@127.0.0.1:1/none";
    let cases: [(&[&str], &str); 5] = [
        (&["--cron", "0 25 * * *"], "the hour field `25` is invalid"),
        (&["--cron", "* * *"], "has 3 fields"),
        (
            &["--cron", "* * * * *", "--timezone", "Mars/Olympus"],
            "--timezone: unknown time zone `Mars/Olympus`",
        ),
        (
            &["--cron", "* * * * *", "--catch-up", "sometimes"],
            "--catch-up: unknown catch-up policy",
        ),
        (
            &["--cron", "* * * * *", "--overlap", "queue"],
            "--overlap: unknown overlap policy",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["schedule", "add", "s", "--workflow", "ledger"];
        args.extend_from_slice(flags);
        let out = run(url, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let out = run(
        url,
        &[
            "schedule",
            "add",
            "s",
            "--cron",
            "* * * * *",
            "--workflow",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown workflow `nope`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_schedule_keeps_a_stream_synced_unattended() {
    let db = TestDb::new().await;
    let url = db.url();
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 300,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let added = run(
        &url,
        &[
            "schedule",
            "sync",
            "examples/sources/sandbox-stripe.toml",
            "--stream",
            "contacts",
            "--every",
            "*/2 * * * * *",
            "--reconcile-every",
            "0 3 * * *",
            "--base-url",
            sandbox.base_url(),
            "--json",
        ],
    );
    assert_eq!(added.status.code(), Some(0), "{}", stderr(&added));
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    let names: Vec<&str> = added
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sync:sandbox-stripe:contacts:incremental",
            "sync:sandbox-stripe:contacts:reconcile"
        ]
    );

    let worker = WorkerProcess::spawn(&url, &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let completed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.runs WHERE workflow = 'sync.incremental'
                AND status = 'completed' AND idempotency_key LIKE 'schedule:sync:%'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if completed >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no two scheduled incremental syncs completed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paused = run(
        &url,
        &[
            "schedule",
            "pause",
            "sync:sandbox-stripe:contacts:incremental",
        ],
    );
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    let mut conn = db.pool().acquire().await.unwrap();
    let landed = Warehouse::new("sandbox-stripe", "sandbox_stripe")
        .unwrap()
        .checksum(&mut conn, "contacts")
        .await
        .unwrap();
    assert_eq!(landed, sandbox.vendor().checksum(Stream::Contacts));
    assert_eq!(worker.terminate(), Some(0));
    sandbox.shutdown().await;
}
