//! A hostile vendor against the whole of cairn, driven as a user would (the `cairn`
//! binary, a worker process): echoed credentials reach no log, table or output; a
//! redirect takes no credential elsewhere; bodies, paging, waits and credentials are
//! bounded; and every failure says what and where.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use cairn::sandbox::{
    AuthConfig, Hostile, OAuthConfig, OtherHost, PagingAttack, SandboxConfig, Secret, Stream,
};
use cairn::workflows::sync;
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::{TestDb, run_to_end};
use support::vendor::{HUBSPOT, checksum, input, landed, start};
use support::{builtin, builtin_worker, cairn, run};

const CLIENT_ID: &str = "cairn-hostile-client";
const CLIENT_SECRET: &str = "cs-Hq7v2-echo-me-not";

fn oauth_vendor(hostile: Hostile) -> SandboxConfig {
    SandboxConfig {
        records_per_stream: 300,
        auth: AuthConfig::OAuth(OAuthConfig {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Secret::new(CLIENT_SECRET),
            token_ttl: Duration::from_secs(3600),
        }),
        hostile,
        ..SandboxConfig::default()
    }
}

/// A scratch directory for source files, credential files and logs.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The HubSpot profile with OAuth: the client id from a file readable by everyone (a
/// warning), the secret from the worker's environment; `extra` lines go at the top.
fn oauth_source(dir: &Path, extra: &str) -> PathBuf {
    let id_file = dir.join("client_id");
    std::fs::write(&id_file, CLIENT_ID).unwrap();
    std::fs::set_permissions(&id_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = HUBSPOT.replace(
        "[auth]\nkind = \"none\"",
        &format!(
            "[auth]\nkind = \"oauth2\"\ntoken_url = \"/oauth/token\"\nclient_id = {{ file = \"{}\" }}\n\
             client_secret = {{ env = \"CRM_CLIENT_SECRET\" }}",
            id_file.display()
        ),
    );
    let text = text.replacen("name = ", &format!("{extra}\nname = "), 1);
    let path = dir.join("source.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A worker process with the client secret in its environment, logging to `log`.
fn worker(url: &str, log: &Path) -> Child {
    cairn()
        .env("DATABASE_URL", url)
        .env("CRM_CLIENT_SECRET", CLIENT_SECRET)
        .env(
            "RUST_LOG",
            "debug,sqlx=warn,hyper=warn,h2=warn,rustls=warn,reqwest=debug",
        )
        .args(["worker", "--lease", "2", "--poll", "0.1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawning a worker")
}

/// `cairn sync <source> --stream contacts --base-url <vendor> --wait`, and `extra`.
fn sync_contacts(url: &str, source: &Path, vendor: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "sync",
        source.to_str().unwrap(),
        "--stream",
        "contacts",
        "--base-url",
        vendor,
        "--wait",
    ];
    args.extend_from_slice(extra);
    run(url, &args)
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every row of every table of the `cairn` schema, as text.
async fn dump_cairn_schema(db: &TestDb) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'cairn' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut dump = String::new();
    for table in tables {
        let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM cairn.\"{table}\" t"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        dump.push_str(&format!("-- {table}\n{rows}\n"));
    }
    dump
}

/// The output of every `--json` command that shows runs, failures and alerts.
fn every_json_output(url: &str, source: &Path, runs: &[String]) -> Vec<(String, String)> {
    let source = source.to_str().unwrap();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["runs", "list", "--json"],
        vec!["dlq", "list", "--json"],
        vec!["alerts", "--json"],
        vec!["quarantine", "list", "--json"],
        vec!["sync", "status", source, "--json"],
        vec!["schedule", "list", "--json"],
    ];
    for id in runs {
        commands.push(vec!["runs", "show", id, "--json"]);
    }
    commands
        .into_iter()
        .map(|args| (args.join(" "), text(&run(url, &args))))
        .collect()
}

fn run_ids(sync_output: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for word in sync_output.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')) {
        if word.len() == 36 && word.matches('-').count() == 4 && !ids.contains(&word.to_owned()) {
            ids.push(word.to_owned());
        }
    }
    ids
}

fn assert_no_secret(channel: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{channel} holds the secret {secret:?}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_tokens_and_client_secrets_reach_no_log_table_or_output() {
    let db = TestDb::new().await;
    let url = db.url();
    let dir = scratch("echo");
    let source = oauth_source(&dir, "");
    // One vendor echoes the access token and the client secret in a 400 to every API
    // call; another answers the token request 401 `invalid_client`, echoing the secret.
    let echoing = start(oauth_vendor(Hostile {
        echo_credentials: true,
        ..Hostile::default()
    }))
    .await;
    let refusing = start(oauth_vendor(Hostile {
        refuse_clients: true,
        ..Hostile::default()
    }))
    .await;
    let log = dir.join("worker.log");
    let mut worker = worker(&url, &log);
    let mut outputs = Vec::new();
    let mut runs = Vec::new();
    for vendor in [&echoing, &refusing] {
        let output = sync_contacts(&url, &source, vendor.base_url(), &["--json"]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "the sync fails: {shown}");
        assert!(shown.contains("[redacted]"), "the echo was masked: {shown}");
        runs.extend(run_ids(&shown));
        outputs.push(("sync --wait --json".to_owned(), shown));
    }
    assert!(!runs.is_empty());
    outputs.extend(every_json_output(&url, &source, &runs));
    let _ = worker.kill();
    let _ = worker.wait();

    let mut secrets = echoing.vendor().issued_tokens();
    assert!(!secrets.is_empty(), "a token was issued, then echoed");
    secrets.push(CLIENT_SECRET.to_owned());
    for (command, shown) in &outputs {
        assert_no_secret(command, shown, &secrets);
    }
    let dump = dump_cairn_schema(&db).await;
    assert!(
        dump.contains("[redacted]"),
        "the stored errors kept the echo, masked"
    );
    assert_no_secret("the cairn schema", &dump, &secrets);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("[redacted]"),
        "the worker logged the masked echo"
    );
    assert!(
        log.contains("readable by every user"),
        "a credential file others can read is warned about"
    );
    assert_no_secret("the worker log", &log, &secrets);
    // The refused client fails in the `auth` category at once, with an alert.
    let tokens_asked = refusing.vendor().stats().count("POST /oauth/token", "401");
    assert_eq!(tokens_asked, 1, "one token request, no retries");
    let alerts = text(&run(&url, &["alerts", "--json"]));
    assert!(alerts.contains("auth_failed"), "{alerts}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_elsewhere_fails_naming_both_origins_and_an_allowed_one_gets_no_credential() {
    let db = TestDb::new().await;
    let url = db.url();
    let vendor = start(oauth_vendor(Hostile::default())).await;
    let elsewhere = OtherHost::start(&vendor, "127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    vendor.vendor().set_hostile(Hostile {
        redirect_to: Some(elsewhere.origin()),
        ..Hostile::default()
    });
    let dir = scratch("redirect");
    let log = dir.join("worker.log");
    let mut worker = worker(&url, &log);
    let sync = |source: &Path| sync_contacts(&url, source, vendor.base_url(), &["--json"]);
    let refused = sync(&oauth_source(&dir, ""));
    let shown = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(vendor.base_url()) && shown.contains(&elsewhere.origin()),
        "{shown}"
    );
    assert!(shown.contains("allow_redirect_hosts"), "{shown}");
    assert!(
        elsewhere.received().is_empty(),
        "nothing went to the other host"
    );

    let allowed = sync(&oauth_source(
        &dir,
        "allow_redirect_hosts = [\"127.0.0.2\"]",
    ));
    let shown = text(&allowed);
    assert_eq!(allowed.status.code(), Some(0), "{shown}");
    let mut runs = run_ids(&text(&refused));
    runs.extend(run_ids(&shown));
    let outputs = every_json_output(&url, &dir.join("source.toml"), &runs);
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        landed(&db, "sandbox-hubspot", "sandbox_hubspot", Stream::Contacts).await,
        checksum(&vendor.vendor().records(Stream::Contacts)),
        "the warehouse equals the vendor"
    );
    let received = elsewhere.received();
    assert!(received.len() >= 3, "the pages came from the other host");
    let mut secrets = vendor.vendor().issued_tokens();
    secrets.push(CLIENT_SECRET.to_owned());
    for request in &received {
        let text = request.text().to_lowercase();
        assert!(
            !text.contains("authorization") && !text.contains("cookie"),
            "{text}"
        );
        assert_no_secret("a request to the other host", &request.text(), &secrets);
    }
    for (command, shown) in &outputs {
        assert_no_secret(command, shown, &secrets);
    }
    assert_no_secret("the cairn schema", &dump_cairn_schema(&db).await, &secrets);
    assert_no_secret(
        "the worker log",
        &std::fs::read_to_string(&log).unwrap(),
        &secrets,
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The peak resident set of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_or_a_gzip_bomb_fails_the_run_and_the_worker_stays_small() {
    let db = TestDb::new().await;
    let url = db.url();
    let dir = scratch("bodies");
    let source = dir.join("source.toml");
    std::fs::write(&source, HUBSPOT).unwrap();
    let log = dir.join("worker.log");
    let mut worker = worker(&url, &log);
    for hostile in [
        Hostile {
            huge_body: Some(1_500_000_000),
            ..Hostile::default()
        },
        Hostile {
            gzip_bomb: Some(10_000_000_000),
            ..Hostile::default()
        },
    ] {
        let vendor = start(SandboxConfig {
            hostile,
            ..SandboxConfig::default()
        })
        .await;
        let output = sync_contacts(&url, &source, vendor.base_url(), &[]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{shown}");
        assert!(
            shown.contains("max_response_bytes (67108864 bytes"),
            "{shown}"
        );
    }
    let peak = peak_rss(worker.id());
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        peak < 300 * 1024 * 1024,
        "the worker peaked at {} MB",
        peak >> 20
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_that_loop_or_never_end_stop_the_stream_naming_the_cursor() {
    let db = TestDb::new().await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let cases = [
        (PagingAttack::SelfLoop, "loop-a"),
        (PagingAttack::TwoCycle, "cycle-a"),
        (PagingAttack::FreshCursors, "fresh-3"),
    ];
    for (attack, cursor) in cases {
        let vendor = start(SandboxConfig {
            records_per_stream: 300,
            hostile: Hostile {
                paging: Some(attack),
                ..Hostile::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let done = run_to_end(
            &client,
            sync::BACKFILL,
            &input(HUBSPOT, &vendor, Stream::Contacts),
        )
        .await;
        assert_eq!(done.summary.status, RunStatus::Failed, "{attack:?}");
        let error = done.error.as_ref().unwrap().to_string();
        assert!(error.contains("pagination"), "{attack:?}: {error}");
        assert!(
            error.contains(cursor),
            "{attack:?} names the cursor: {error}"
        );
        let served = vendor
            .vendor()
            .stats()
            .count("GET /crm/v3/objects/{stream}", "200");
        assert!(served <= 5, "{attack:?} stopped after {served} pages");
        // Each page served was asked for by a fetch step of the run, which checkpointed
        // it or refused it: none was asked for ahead of a refusal.
        let fetches: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.steps WHERE run_id = $1 AND name LIKE 'fetch page %'",
        )
        .bind(done.summary.id)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(served, fetches as u64, "{attack:?}");
    }
    // The ids listing of a delete reconciliation: stopped the same way, nothing deleted.
    let vendor = start(SandboxConfig {
        records_per_stream: 300,
        ..SandboxConfig::default()
    })
    .await;
    let contacts = input(HUBSPOT, &vendor, Stream::Contacts);
    let synced = run_to_end(&client, sync::BACKFILL, &contacts).await;
    assert_eq!(synced.summary.status, RunStatus::Completed);
    vendor.vendor().set_hostile(Hostile {
        paging: Some(PagingAttack::FreshCursors),
        ..Hostile::default()
    });
    let done = run_to_end(&client, sync::RECONCILE, &contacts).await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.as_ref().unwrap().to_string();
    assert!(
        error.contains("3 pages in a row") && error.contains("fresh-3"),
        "{error}"
    );
    let deleted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandbox_hubspot.contacts WHERE _deleted_at IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(deleted, 0, "nothing deleted");

    // max_pages: a well-behaved listing longer than the stream allows.
    let vendor = start(SandboxConfig {
        records_per_stream: 1_000,
        ..SandboxConfig::default()
    })
    .await;
    let capped = HUBSPOT.replace(
        "[streams.contacts.incremental]",
        "max_pages = 3\n\n[streams.contacts.incremental]",
    );
    let done = run_to_end(
        &client,
        sync::BACKFILL,
        &input(&capped, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.as_ref().unwrap().to_string();
    assert!(error.contains("max_pages (3)"), "{error}");
    // Nothing was asked for beyond the third page, not even ahead of time.
    let served = vendor
        .vendor()
        .stats()
        .count("GET /crm/v3/objects/{stream}", "200");
    assert_eq!(served, 3);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_fail_the_run_after_one_refresh_with_an_alert() {
    let db = TestDb::new().await;
    let vendor = start(oauth_vendor(Hostile {
        reject_tokens: true,
        ..Hostile::default()
    }))
    .await;
    let dir = scratch("revoked");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = HUBSPOT.replace(
        "[auth]\nkind = \"none\"",
        &format!(
            "[auth]\nkind = \"oauth2\"\ntoken_url = \"/oauth/token\"\nclient_id = {{ file = \"{0}\" }}\n\
             client_secret = {{ file = \"{0}\" }}",
            secret_file.display()
        ),
    );
    // The id is read from the same file: the vendor checks the pair only at the token
    // endpoint, and this one hands out tokens its API then refuses.
    let text = text.replacen(
        &format!("client_id = {{ file = \"{}\" }}", secret_file.display()),
        &format!("client_id = {{ file = \"{}\" }}", {
            let id = dir.join("id");
            std::fs::write(&id, CLIENT_ID).unwrap();
            id.display().to_string()
        }),
        1,
    );
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let done = run_to_end(
        &client,
        sync::BACKFILL,
        &input(&text, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.as_ref().unwrap();
    assert_eq!(error["category"], "auth", "{error}");
    let stats = vendor.vendor().stats();
    assert_eq!(stats.tokens_issued, 2, "the first token and one refresh");
    assert_eq!(
        stats.count("GET /crm/v3/objects/{stream}", "401"),
        2,
        "never retried beyond that"
    );
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.alerts WHERE kind = 'auth_failed' AND source = 'sandbox-hubspot'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(alerts, 1);
    worker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_that_blocks_for_a_day_parks_the_run_for_the_cap_with_an_alert() {
    let db = TestDb::new().await;
    let url = db.url();
    let vendor = start(SandboxConfig {
        hostile: Hostile {
            throttle: Some(cairn::sandbox::Throttle {
                count: u32::MAX,
                retry_after: Some("86400".to_owned()),
                ..Default::default()
            }),
            ..Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let capped = HUBSPOT.replacen("name = ", "max_rate_limit_wait = \"10m\"\nname = ", 1);
    let started = client
        .start(
            sync::BACKFILL,
            &input(&capped, &vendor, Stream::Contacts),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let parked = loop {
        let detail = client.show(started.run_id).await.unwrap();
        if detail.summary.status == RunStatus::Parked {
            break detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wait = parked.summary.wake_at - chrono::Utc::now();
    assert!(
        wait <= chrono::Duration::minutes(10),
        "parked for the cap, not a day: {wait}"
    );
    assert!(wait >= chrono::Duration::minutes(9), "{wait}");
    let shown = text(&run(&url, &["runs", "show", &started.run_id.to_string()]));
    assert!(
        shown.contains("rate limited") && shown.contains("the vendor asked for"),
        "{shown}"
    );
    let alert: String =
        sqlx::query_scalar("SELECT message FROM cairn.alerts WHERE kind = 'rate_limit_blocked'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(
        alert.contains("sandbox-hubspot") && alert.contains("blocked by the vendor until"),
        "{alert}"
    );
    client.cancel(started.run_id).await.unwrap();
    worker.shutdown().await;
}
