//! Privacy requests the way they run in production: `cairn dsr` commands and `cairn
//! worker` processes (with encryption and audit keys) against three sandbox vendors —
//! one answering 429 to most of what it is sent, one whose OAuth tokens expire every
//! second, one plain — while the worker is SIGKILLed twice during discovery. The access
//! request finds every planted record of the person and no one else's, the erasure
//! erases them all, nothing in the `cairn` schema holds the person's address in the
//! clear, and the audit chain verifies.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cairn::sandbox::{
    AuthConfig, Hostile, OAuthConfig, RateLimit, SandboxConfig, SandboxHandle, Stream, Throttle,
};
use cairn_testkit::TestDb;
use serde_json::{Value, json};
use support::vendor::{HUBSPOT, STRIPE, plant, start};
use support::{WorkerProcess, cairn};

const SALESFORCE: &str = include_str!("../examples/sources/sandbox-salesforce.toml");
const SUBJECT: &str = "Katherine.Subject@Example.com";
const CLIENT_ID: &str = "dsr-test-client";
const CLIENT_SECRET: &str = "dsr-test-secret-7f3a";

fn key() -> String {
    base64::engine::general_purpose::STANDARD
        .encode(std::array::from_fn::<u8, 32, _>(|i| i as u8 * 3 + 1))
}

fn env(audit: &str, seal: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CAIRN_AUDIT_KEY", audit.to_owned()),
        ("CAIRN_ENCRYPTION_KEY", seal.to_owned()),
        ("SF_CLIENT_ID", CLIENT_ID.to_owned()),
        ("SF_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
    ]
}

fn dsr(url: &str, env: &[(&'static str, String)], args: &[&str]) -> std::process::Output {
    cairn()
        .env("DATABASE_URL", url)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("dsr")
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json(output: &std::process::Output) -> Value {
    ok(output);
    serde_json::from_slice(&output.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The ids of contacts at `sandbox` holding the subject's address (any case).
fn held(sandbox: &SandboxHandle) -> BTreeSet<String> {
    sandbox
        .vendor()
        .records(Stream::Contacts)
        .iter()
        .filter(|r| {
            r["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(SUBJECT))
        })
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn lookup_pages(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM cairn.dsr_audit WHERE action = 'lookup' AND outcome = 'ok'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Polls `cairn dsr show` until the request is in `phase` (or two minutes pass).
fn wait_for_phase(url: &str, env: &[(&'static str, String)], id: &str, phase: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shown = json(&dsr(url, env, &["show", id, "--json"]));
        if shown["phase"] == phase {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {phase}: {shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_vendors_one_person_found_and_erased_through_kills_429s_and_token_expiry() {
    let db = TestDb::new().await;
    let url = db.url();
    let small = |config: SandboxConfig| SandboxConfig {
        records_per_stream: 200,
        max_page_size: 10,
        ..config
    };
    // 429-heavy: the vendor allows 3 requests/s, the source is told 20, and the first
    // requests (discovery's) are refused outright.
    let hubspot = start(small(SandboxConfig {
        rate_limit: Some(RateLimit::new(3.0, 1)),
        hostile: Hostile {
            throttle: Some(Throttle {
                count: 3,
                retry_after: Some("1".to_owned()),
                ..Throttle::default()
            }),
            ..Hostile::default()
        },
        ..SandboxConfig::default()
    }))
    .await;
    // Tokens that expire every second.
    let salesforce = start(small(SandboxConfig {
        auth: AuthConfig::OAuth(OAuthConfig {
            client_id: CLIENT_ID.to_owned(),
            client_secret: cairn::connectors::secret::Secret::new(CLIENT_SECRET),
            token_ttl: Duration::from_secs(1),
        }),
        latency: Duration::from_millis(30),
        ..SandboxConfig::default()
    }))
    .await;
    let stripe = start(small(SandboxConfig {
        latency: Duration::from_millis(30),
        ..SandboxConfig::default()
    }))
    .await;
    plant(&hubspot, SUBJECT, (1..=20).map(|n| n * 5));
    plant(
        &salesforce,
        &SUBJECT.to_uppercase(),
        (1..=25).map(|n| n * 7),
    );
    plant(&stripe, &SUBJECT.to_lowercase(), (1..=30).map(|n| n * 6));
    plant(&stripe, "k.s@old.example", [199]);
    for sandbox in [&hubspot, &salesforce, &stripe] {
        plant(sandbox, "x.katherine.subject@example.com", [1]);
        plant(sandbox, "katherine.subject@example.com.evil", [2]);
    }
    let expected: BTreeSet<(String, String)> = [
        ("sandbox-hubspot", held(&hubspot)),
        ("sandbox-salesforce", held(&salesforce)),
        ("sandbox-stripe", held(&stripe)),
    ]
    .into_iter()
    .flat_map(|(source, ids)| ids.into_iter().map(move |id| (source.to_owned(), id)))
    .chain([("sandbox-stripe".to_owned(), "199".to_owned())])
    .collect();
    assert_eq!(expected.len(), 20 + 25 + 30 + 1);

    let dir = std::env::temp_dir().join(format!("cairn-dsr-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sources = [
        write(
            &dir,
            "hubspot.toml",
            &HUBSPOT.replacen(
                "[auth]\nkind = \"none\"\n",
                "[auth]\nkind = \"none\"\n\n[rate_limit]\nrequests_per_second = 20\nburst = 5\n",
                1,
            ),
        ),
        write(
            &dir,
            "salesforce.toml",
            &SALESFORCE.replacen(
                "[auth]\nkind = \"none\"",
                "[auth]\nkind = \"oauth2\"\ntoken_url = \"/oauth/token\"\n\
                 client_id = { env = \"SF_CLIENT_ID\" }\nclient_secret = { env = \"SF_CLIENT_SECRET\" }",
                1,
            ),
        ),
        write(&dir, "stripe.toml", STRIPE),
    ];
    let (audit_key, seal_key) = (key(), cairn::seal::Keyring::generate());
    let env = env(&audit_key, seal_key.as_str());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let open = |kind: &str| -> Vec<String> {
        let mut args: Vec<String> = [
            "open",
            "--email",
            SUBJECT,
            "--id",
            "sandbox-stripe:199",
            "--kind",
            kind,
            "--regulation",
            "gdpr",
            "--json",
        ]
        .map(str::to_owned)
        .to_vec();
        for path in &sources {
            args.extend(["--source".to_owned(), path.display().to_string()]);
        }
        for (name, sandbox) in [
            ("sandbox-hubspot", &hubspot),
            ("sandbox-salesforce", &salesforce),
            ("sandbox-stripe", &stripe),
        ] {
            args.extend([
                "--base-url".to_owned(),
                format!("{name}={}", sandbox.base_url()),
            ]);
        }
        args
    };

    // Access, with the worker SIGKILLed twice while it searches.
    let worker = WorkerProcess::spawn_with_env(&url, &["--concurrency", "8"], &env_refs);
    let args = open("access");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let opened = json(&dsr(&url, &env, &args));
    let id = opened["id"].as_str().unwrap().to_owned();
    let mut worker = Some(worker);
    for pages in [3, 8] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while lookup_pages(&db).await < pages {
            assert!(
                Instant::now() < deadline,
                "discovery never reached {pages} pages"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.take().unwrap().kill();
        worker = Some(WorkerProcess::spawn_with_env(
            &url,
            &["--concurrency", "8"],
            &env_refs,
        ));
    }
    let shown = wait_for_phase(&url, &env, &id, "done");
    assert_eq!(shown["outcome"], "fulfilled");
    assert_eq!(shown["found"], 76);
    let report_path = dir.join("report.json");
    ok(&dsr(
        &url,
        &env,
        &["export", &id, "--out", report_path.to_str().unwrap()],
    ));
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let found: BTreeSet<(String, String)> = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(found, expected, "every planted record, and no one else's");
    assert!(
        hubspot
            .vendor()
            .requests("POST /crm/v3/objects/{stream}/search", "429")
            >= 3,
        "the vendor pushed back during discovery"
    );
    let html = dir.join("report.html");
    ok(&dsr(
        &url,
        &env,
        &["export", &id, "--out", html.to_str().unwrap()],
    ));
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("<h2>Records (76)</h2>")
    );

    // Erasure: every planted record goes, the near misses stay.
    let args = open("erasure");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let erasure = json(&dsr(&url, &env, &args));
    let erasure_id = erasure["id"].as_str().unwrap().to_owned();
    let shown = wait_for_phase(&url, &env, &erasure_id, "done");
    assert_eq!(shown["outcome"], "fulfilled");
    assert_eq!(
        (shown["erased"].as_i64(), shown["unerased"].as_i64()),
        (Some(76), Some(0))
    );
    assert!(held(&hubspot).is_empty() && held(&stripe).is_empty() && held(&salesforce).is_empty());
    for sandbox in [&hubspot, &salesforce, &stripe] {
        let records = sandbox.vendor().records(Stream::Contacts);
        for near_miss in ["1", "2"] {
            assert!(
                records.iter().any(|r| r["id"] == near_miss),
                "{near_miss} stays"
            );
        }
    }
    assert!(
        !stripe
            .vendor()
            .records(Stream::Contacts)
            .iter()
            .any(|r| r["id"] == "199")
    );
    worker.take().unwrap().kill();

    // The chain verifies; nothing in the cairn schema holds the address in the clear.
    let verified = dsr(&url, &env, &["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'cairn' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    for table in tables {
        let text: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM cairn.{table} t"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(
            !text
                .unwrap_or_default()
                .to_lowercase()
                .contains("katherine"),
            "cairn.{table} holds the person's address in the clear"
        );
    }
    let sealed: bool = sqlx::query_scalar(
        "SELECT bool_and(report IS NULL AND report_sealed IS NOT NULL AND subject IS NULL) FROM cairn.dsr_requests",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(sealed, "reports and subjects are sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_usage_error_that_says_what_and_where() {
    let db = TestDb::new().await;
    let url = db.url();
    let dir = std::env::temp_dir().join(format!("cairn-dsr-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = write(&dir, "stripe.toml", STRIPE);
    let source = source.to_str().unwrap();
    let audit = key();
    let keyed = [("CAIRN_AUDIT_KEY", audit.clone())];
    let open = |email: &str, regulation: &str| {
        vec![
            "open",
            "--email",
            email,
            "--kind",
            "access",
            "--regulation",
            regulation,
            "--source",
            source,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    type Env = Vec<(&'static str, String)>;
    let cases: Vec<(Env, Vec<String>, &str)> = vec![
        (Vec::new(), open("a@example.com", "gdpr"), "CAIRN_AUDIT_KEY"),
        (
            keyed.to_vec(),
            open("not an address", "gdpr"),
            "is not an e-mail address",
        ),
        (
            keyed.to_vec(),
            open("a@example.com", "hipaa"),
            "is not a regulation",
        ),
        (
            keyed.to_vec(),
            [
                open("a@example.com", "ccpa"),
                vec!["--id".into(), "nosuch:1".into()],
            ]
            .concat(),
            "is not one of the sources given",
        ),
        (
            keyed.to_vec(),
            ["show", "dsr_nothing"].map(str::to_owned).to_vec(),
            "no privacy request",
        ),
        (
            keyed.to_vec(),
            ["metrics", "--epsilon", "0"].map(str::to_owned).to_vec(),
            "epsilon 0 is not usable",
        ),
        (
            keyed.to_vec(),
            ["extend", "dsr_nothing", "--days", "5", "--reason", " "]
                .map(str::to_owned)
                .to_vec(),
            "needs --reason",
        ),
    ];
    for (env, args, words) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = dsr(&url, &env, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    let listed = json(&dsr(&url, &keyed, &["list", "--json"]));
    assert_eq!(listed, json!([]), "nothing was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_finds_and_erases_the_person_and_leaves_nothing() {
    let db = TestDb::new().await;
    // The demo works in a throwaway database of its own (named as the benches' are).
    let scratch = "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn\\_bench\\_%'";
    let before: i64 = sqlx::query_scalar(scratch)
        .fetch_one(db.pool())
        .await
        .unwrap();
    let output = cairn()
        .env("DATABASE_URL", db.url())
        .args(["demo", "dsr"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for said in [
        "report: 49 records (sandbox-hubspot 12, sandbox-salesforce 16, sandbox-stripe 21)",
        "vendors now hold 0 of her records",
        "audit chain verified",
        "every record of hers was found and erased, and nobody else's was touched",
    ] {
        assert!(stdout.contains(said), "{said:?} in:\n{stdout}");
    }
    let after: i64 = sqlx::query_scalar(scratch)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(after, before, "the demo's database is dropped");
}
