//! The CLI contract: exit codes (0 ok, 1 failed, 2 bad input), one-line errors that say
//! what and how to fix it, and stable `--json` documents.

mod support;

use cairn_testkit::TestDb;
use serde_json::Value;
use support::{WorkerProcess, cairn, run};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_error(output: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "not a clean error: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn bad_input_exits_2_with_a_message_that_says_what() {
    let url = "postgres://postgres@127.0.0.1:1/none";
    assert_clean_error(&run(url, &["start", "nope"]), 2, "unknown workflow `nope`");
    assert_clean_error(
        &run(url, &["start", "tour", "--input", "{bad"]),
        2,
        "--input is not valid JSON",
    );
    assert_clean_error(
        &run(url, &["start", "tour", "--input", r#"{"visitor": 5}"#]),
        2,
        "invalid input for workflow `tour`",
    );
    assert_clean_error(
        &run(url, &["runs", "show", "not-a-uuid"]),
        2,
        "is not a run id",
    );
    assert_clean_error(
        &run("mysql://x", &["runs", "list"]),
        2,
        "must be a PostgreSQL URL",
    );
    let missing = cairn()
        .env_remove("DATABASE_URL")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_clean_error(&missing, 2, "DATABASE_URL is not set");
    let usage = run(url, &["runs", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn an_unreachable_database_exits_1_without_leaking_the_password() {
    let output = run(
        "postgres://postgres:s3cret-pw@127.0.0.1:1/none",
        &["runs", "list"],
    );
    assert_clean_error(&output, 1, "cannot connect to PostgreSQL at 127.0.0.1:1");
    assert!(!stderr(&output).contains("s3cret-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_runs_show_and_cancel_through_the_binary() {
    let db = TestDb::new().await;
    let url = db.url();
    let migrated = run(&url, &["migrate"]);
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr(&migrated));

    let worker = WorkerProcess::spawn(&url, &["--concurrency", "4"]);
    let input = r#"{"visitor": "cli", "sleep_ms": 300, "flaky_failures": 1}"#;
    let waited = run(
        &url,
        &["start", "tour", "--input", input, "--wait", "--json"],
    );
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    let run_doc: Value = serde_json::from_slice(&waited.stdout).expect("one JSON document");
    assert_eq!(run_doc["status"], "completed");
    assert_eq!(run_doc["output"]["greeting"], "hello, cli");
    assert_eq!(run_doc["output"]["flaky_succeeded_on"], 2);
    let steps = run_doc["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "greet",
            "count runs",
            "record visit",
            "sleep",
            "call flaky service"
        ]
    );
    assert_eq!(steps[4]["attempts"], 2);
    assert!(steps[4]["duration_ms"].is_number());
    let id = run_doc["id"].as_str().unwrap().to_owned();

    let shown = run(&url, &["runs", "show", &id, "--json"]);
    assert_eq!(shown.status.code(), Some(0));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["id"], id.as_str());
    let human = run(&url, &["runs", "show", &id]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("call flaky service") && human.contains("completed"),
        "{human}"
    );

    let listed = run(&url, &["runs", "list", "--json", "--status", "completed"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str())
    );

    let again = run(&url, &["runs", "cancel", &id]);
    assert_clean_error(&again, 1, "has already ended");

    let key = [
        "start",
        "tour",
        "--input",
        r#"{"sleep_ms": 600000}"#,
        "--idempotency-key",
        "k1",
        "--json",
    ];
    let first: Value = serde_json::from_slice(&run(&url, &key).stdout).unwrap();
    let second: Value = serde_json::from_slice(&run(&url, &key).stdout).unwrap();
    assert_eq!(first["run_id"], second["run_id"]);
    assert_eq!(
        (first["created"].as_bool(), second["created"].as_bool()),
        (Some(true), Some(false))
    );
    let sleeper = first["run_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let doc: Value =
            serde_json::from_slice(&run(&url, &["runs", "show", sleeper, "--json"]).stdout)
                .unwrap();
        if doc["status"] == "sleeping" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never went to sleep: {doc}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cancelled = run(&url, &["runs", "cancel", sleeper]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let doc: Value =
        serde_json::from_slice(&run(&url, &["runs", "show", sleeper, "--json"]).stdout).unwrap();
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(worker.terminate(), Some(0));
}

#[test]
fn mock_vendor_help_documents_every_flag() {
    let help = cairn().args(["mock-vendor", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--port",
        "--records",
        "--seed",
        "--as-of",
        "--max-page-size",
        "--rate",
        "--burst",
        "--retry-after",
        "--max-concurrent",
        "--daily-quota",
        "--auth",
        "--client-id",
        "--client-secret",
        "--token-ttl",
        "--api-key",
        "--fault-rate",
        "--faults",
        "--slow-ms",
        "--latency-ms",
    ] {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} is missing from --help:\n{text}"));
        let described = text
            .lines()
            .nth(line + 1)
            .is_some_and(|l| !l.trim().is_empty());
        assert!(described, "{flag} has no description:\n{text}");
    }
}

#[test]
fn mock_vendor_refuses_contradictory_flags() {
    let output = cairn()
        .args(["mock-vendor", "--burst", "5"])
        .output()
        .unwrap();
    assert_clean_error(&output, 2, "mock-vendor");
}

#[test]
fn mock_vendor_serves_until_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = cairn()
        .args(["mock-vendor", "--port", "0", "--records", "7"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr = banner
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no URL in the banner: {banner}"))
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /v1/contacts?limit=100 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        7,
        "the records asked for"
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_readme_source_example_is_a_valid_source() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```toml\n")
        .expect("a TOML example in the README")
        + 8;
    let toml = &readme[start..start + readme[start..].find("```").unwrap()];
    let config = cairn::connectors::rest::RestConfig::parse(toml, "README.md")
        .unwrap_or_else(|err| panic!("the README's source example is invalid: {err}"));
    assert_eq!(config.stream_names().collect::<Vec<_>>(), ["contacts"]);
}

#[test]
fn the_readme_destination_example_is_a_valid_destination() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```toml\n[destination]")
        .expect("a destination example in the README")
        + 8;
    let toml = &readme[start..start + readme[start..].find("```").unwrap()];
    let config = cairn::connectors::destination::DestinationConfig::parse(toml, "README.md")
        .unwrap_or_else(|err| panic!("the README's destination example is invalid: {err}"));
    let streams: Vec<&str> = config.streams().map(|(name, _)| name).collect();
    assert_eq!(streams, ["contacts"]);
}

#[test]
fn sync_to_a_destination_is_checked_before_any_run_exists() {
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sources/sandbox-hubspot.toml"
    );
    let dest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/destinations/sandbox-dest.toml"
    );
    // No database is needed to refuse: the checks come first.
    let url = "postgres://nobody@127.0.0.1:1/none";
    let out = run(
        url,
        &[
            "sync",
            source,
            "--to",
            dest,
            "--stream",
            "contacts",
            "--to-stream",
            "leads",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no stream `leads`")
            && err.contains("its streams: companies, contacts, deals"),
        "{err}"
    );
    let out = run(
        url,
        &[
            "sync",
            source,
            "--to",
            dest,
            "--to-base-url",
            "http://crm.example.com",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--to-base-url"), "{err}");
    let out = run(url, &["sync", source, "--to", dest, "--mode", "backfill"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sync_every_sets_up_incremental_and_reconcile_schedules_per_stream() {
    let db = TestDb::new().await;
    let url = db.url();
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sources/sandbox-stripe.toml"
    );
    let every = [
        "sync",
        source,
        "--stream",
        "deals",
        "--every",
        "*/5 * * * *",
    ];
    let set = run(
        &url,
        &[&every[..], &["--reconcile-every", "0 3 * * *"]].concat(),
    );
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    let listed = run(&url, &["schedule", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let mut names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "sync:sandbox-stripe:deals:incremental",
            "sync:sandbox-stripe:deals:reconcile"
        ]
    );
    let bad = run(&url, &["sync", source, "--every", "every day"]);
    assert_clean_error(&bad, 2, "cron expression");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_wait_json_reports_each_run_without_a_copy_of_its_pages() {
    use cairn::sandbox::{Sandbox, SandboxConfig};

    let db = TestDb::new().await;
    let url = db.url();
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 3_000,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let worker = WorkerProcess::spawn(&url, &[]);
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sources/sandbox-stripe.toml"
    );
    let synced = run(
        &url,
        &[
            "sync",
            source,
            "--stream",
            "contacts",
            "--base-url",
            sandbox.base_url(),
            "--wait",
            "--json",
        ],
    );
    worker.kill();
    sandbox.shutdown().await;

    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));
    let runs: Value = serde_json::from_slice(&synced.stdout).unwrap();
    let runs = runs.as_array().expect("one document: the runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["output"]["records"], 3_000);
    let fetches: Vec<&Value> = runs[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|step| step["name"].as_str().unwrap().starts_with("fetch page"))
        .collect();
    // 30 pages of 100 records: the document gives their sizes, not their records.
    let left_out: Vec<&&Value> = fetches
        .iter()
        .filter(|fetch| fetch["output"].is_null())
        .collect();
    assert_eq!(left_out.len(), 30, "{fetches:#?}");
    for fetch in left_out {
        let stored = fetch["output_stored_bytes"].as_i64().unwrap();
        assert!(stored > cairn::SHOWN_OUTPUT_BYTES, "{fetch}");
    }
    assert!(
        synced.stdout.len() < 64 * 1024,
        "{} bytes of JSON",
        synced.stdout.len()
    );
}

#[tokio::test]
async fn runs_take_events_deadlines_and_publish_values_from_the_command_line() {
    let db = TestDb::new().await;
    let url = db.url();
    // No worker: the run waits, pending, for events and for its deadline.
    let started = run(
        &url,
        &[
            "start",
            "tour",
            "--input",
            "{}",
            "--timeout",
            "30d",
            "--priority",
            "-3",
            "--concurrency-key",
            "vendor-a",
            "--json",
        ],
    );
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let started: Value = serde_json::from_slice(&started.stdout).unwrap();
    let id = started["run_id"].as_str().unwrap().to_owned();
    let deadline: Option<String> =
        sqlx::query_scalar("SELECT deadline::text FROM cairn.runs WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(deadline.is_some(), "--timeout gives the run a deadline");
    let shown = run(&url, &["runs", "show", &id, "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["priority"], -3);
    assert_eq!(shown["concurrency_key"], "vendor-a");
    for (filter, expected) in [
        (vec!["--workflow", "tour"], 1),
        (vec!["--workflow", "ledger"], 0),
        (vec!["--idempotency-key", "nope"], 0),
        (vec!["--parent", id.as_str()], 0),
    ] {
        let mut args = vec!["runs", "list", "--json"];
        args.extend(&filter);
        let listed = run(&url, &args);
        let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(expected),
            "{filter:?}"
        );
    }
    let sent = run(
        &url,
        &["runs", "send", &id, "approval", "--data", r#"{"by":"ada"}"#],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let kept: Value = sqlx::query_scalar(
        "SELECT data FROM cairn.events WHERE run_id = $1::uuid AND name = 'approval'",
    )
    .bind(&id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(kept["by"], "ada");
    let got = run(&url, &["runs", "get", &id, "stage"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "null");
    for (args, why) in [
        (
            vec!["runs", "send", &id, "approval", "--data", "{not json"],
            "bad data",
        ),
        (
            vec!["runs", "send", "01a24000-0000-7000-8000-000000000000", "x"],
            "no such run",
        ),
        (vec!["start", "tour", "--timeout", "soon"], "bad timeout"),
        (vec!["start", "tour", "--priority", "high"], "bad priority"),
        (
            vec!["worker", "--key-limit", "vendor-a"],
            "key limit without a number",
        ),
        (
            vec!["worker", "--key-limit", "vendor-a=0"],
            "key limit of zero",
        ),
        (
            vec!["start", "tour", "--deadline", "tomorrow"],
            "bad deadline",
        ),
    ] {
        let output = run(&url, &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{why}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_says_when_no_worker_serves_the_run() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let db = TestDb::new().await;
    let url = db.url();
    let migrated = run(&url, &["migrate"]);
    assert!(migrated.status.success());
    let mut waiting = cairn()
        .env("DATABASE_URL", &url)
        .args(["start", "tour", "--queue", "nightly", "--wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning cairn start");
    let stderr = waiting.stderr.take().expect("its stderr");
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut heard = Vec::new();
    let notice = loop {
        match said.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) if line.contains("no live worker serves") => break line,
            Ok(line) => heard.push(line),
            Err(err) => panic!("no notice ({err}); it said: {heard:?}"),
        }
    };
    waiting.kill().expect("stopping the wait");
    waiting.wait().expect("reaping it");
    assert!(
        notice.contains("`tour`") && notice.contains("nightly"),
        "{notice}"
    );
    assert!(notice.contains("cairn worker --queue nightly"), "{notice}");
}

/// The first log lines a `cairn worker` writes to a pipe, with `args` before `worker`.
fn worker_log(url: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    // Without NO_COLOR: a pipe alone must keep the colours out.
    let mut child = cairn()
        .env_remove("NO_COLOR")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .args(args)
        .args(["worker", "--poll", "0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let started = line.contains("worker started");
        lines.push(line);
        if started {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_when_asked_and_never_coloured_into_a_pipe() {
    let db = TestDb::new().await;
    let url = db.url();
    let pretty = worker_log(&url, &[], &[]);
    assert!(
        pretty.iter().any(|l| l.contains("worker started")),
        "{pretty:?}"
    );
    assert!(
        pretty.iter().all(|l| !l.contains('\u{1b}')),
        "no escape codes in a pipe: {pretty:?}"
    );
    for lines in [
        worker_log(&url, &["--log-format", "json"], &[]),
        worker_log(&url, &[], &[("CAIRN_LOG_FORMAT", "json")]),
    ] {
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        let started = parsed
            .iter()
            .find(|l| l["fields"]["message"] == "worker started")
            .expect("the start is logged");
        assert_eq!(started["level"], "INFO");
        assert!(started["timestamp"].is_string());
    }
    let bad = run(&url, &["--log-format", "xml", "dsr", "list"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `cairn sync --wait` says how many 429s the vendor answered, and the count is the
/// vendor's own, for a source with no `[rate_limit]` of its own (whose 429s went
/// uncounted before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_counts_the_429s_the_vendor_served() {
    use cairn::sandbox::{RateLimit, Sandbox, SandboxConfig};

    let db = TestDb::new().await;
    let url = db.url();
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 600,
            rate_limit: Some(RateLimit::new(20.0, 2)),
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let worker = WorkerProcess::spawn(&url, &[]);
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sources/sandbox-stripe.toml"
    );
    let synced = run(
        &url,
        &["sync", source, "--base-url", sandbox.base_url(), "--wait"],
    );
    worker.kill();
    let served = sandbox.vendor().stats().rate_limited;
    sandbox.shutdown().await;

    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));
    let stdout = String::from_utf8_lossy(&synced.stdout);
    assert!(
        served > 0,
        "three streams at once overrun 20 requests a second"
    );
    assert!(
        stdout.contains(&format!(
            "the vendor answered 429 (too many requests) {served} times"
        )),
        "the vendor served {served} 429s:\n{stdout}"
    );
}

/// `cairn runs list` filters by workflow and age and stops at the limit; a bad `--since`
/// is bad input.
#[tokio::test]
async fn runs_list_filters_by_workflow_since_and_limit() {
    let db = TestDb::new().await;
    let url = db.url();
    for workflow in ["tour", "tour", "ledger"] {
        let started = run(&url, &["start", workflow, "--queue", "nobody"]);
        assert_eq!(started.status.code(), Some(0), "{}", stderr(&started));
    }
    let list = |args: &[&str]| {
        let mut all = vec!["runs", "list", "--json"];
        all.extend_from_slice(args);
        let output = run(&url, &all);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let runs: Value = serde_json::from_slice(&output.stdout).unwrap();
        runs.as_array().unwrap().len()
    };
    assert_eq!(list(&[]), 3);
    assert_eq!(list(&["--workflow", "tour"]), 2);
    assert_eq!(list(&["--workflow", "tour", "--since", "1h"]), 2);
    assert_eq!(list(&["--since", "2999-01-01T00:00:00Z"]), 0);
    assert_eq!(
        list(&["--since", "2000-01-01T00:00:00Z", "--limit", "1"]),
        1
    );
    let bad = run(&url, &["runs", "list", "--since", "yesterday"]);
    assert_clean_error(&bad, 2, "--since \"yesterday\" is neither a duration");
    let zero = run(&url, &["runs", "list", "--limit", "0"]);
    assert_clean_error(&zero, 2, "--limit must be at least 1");
}
