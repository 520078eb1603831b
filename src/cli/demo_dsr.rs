//! `cairn demo dsr`: one person's data found and erased across three CRMs on the legal
//! clock, in one command. Three sandbox vendors (one rate-limited hard, one whose OAuth
//! tokens expire every two seconds), a worker in this process, and a throwaway database
//! (dropped at the end, so the demo's audit trail, under a key of its own, mixes with
//! no other).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_runner::seal::Sealer;
use cairn_runner::{Registry, Worker, WorkerConfig};
use cairn_sandbox::{
    AuthConfig, Mutation, OAuthConfig, RateLimit, Sandbox, SandboxConfig, SandboxHandle, Secret,
    Stream,
};
use cairn_workflows::dsr::report::Report;
use cairn_workflows::dsr::request::{self, OpenRequest};
use cairn_workflows::dsr::{AuditKey, Kind, Regulation, RequestSource, Subject, audit};
use serde_json::json;
use tokio::sync::oneshot;

use super::bench::BenchDb;
use super::{Failure, Outcome};

const PERSON: &str = "ada.lovelace@example.com";
const CLIENT_ID: &str = "demo-client-7f";
const CLIENT_SECRET: &str = "demo-secret-q93k";
const PROFILES: [(&str, &str); 3] = [
    (
        "sandbox-hubspot",
        include_str!("../../examples/sources/sandbox-hubspot.toml"),
    ),
    (
        "sandbox-salesforce",
        include_str!("../../examples/sources/sandbox-salesforce.toml"),
    ),
    (
        "sandbox-stripe",
        include_str!("../../examples/sources/sandbox-stripe.toml"),
    ),
];

fn failed(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |err| Failure::failed(format!("demo dsr: {what}: {err}"))
}

/// Sets `email` on contacts `ids` of `vendor`.
fn plant(
    vendor: &SandboxHandle,
    email: &str,
    ids: impl IntoIterator<Item = u64>,
) -> Result<(), Failure> {
    vendor
        .vendor()
        .mutate(
            Stream::Contacts,
            Mutation::Assign {
                field: "email".to_owned(),
                value: json!(email),
                ids: ids.into_iter().map(|id| id.to_string()).collect(),
            },
        )
        .map(|_| ())
        .map_err(|err| failed("planting")(err.to_string()))
}

/// The contacts of `vendor` that hold the person's address.
fn held(vendor: &SandboxHandle) -> usize {
    vendor
        .vendor()
        .records(Stream::Contacts)
        .iter()
        .filter(|r| {
            r["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(PERSON))
        })
        .count()
}

pub(crate) async fn run(url: Option<&str>) -> Outcome {
    outln!("cairn demo dsr: one person's data, found and erased across three CRMs\n");
    let db = BenchDb::create(url, 12).await?;
    let outcome = scenario(&db).await;
    db.drop().await;
    outcome
}

async fn scenario(db: &BenchDb) -> Outcome {
    let dir = std::env::temp_dir().join(format!("cairn-dsr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| failed("a scratch directory")(err.to_string()))?;
    let start = |config: SandboxConfig| async move {
        Sandbox::start(
            SandboxConfig {
                records_per_stream: 500,
                max_page_size: 10,
                only: Some(Stream::Contacts),
                seed: 11,
                ..config
            },
            "127.0.0.1:0".parse().expect("a socket address"),
        )
        .await
        .map_err(|err| failed("starting a sandbox vendor")(err.to_string()))
    };
    let vendors = [
        start(SandboxConfig {
            rate_limit: Some(RateLimit::new(3.0, 1)),
            ..SandboxConfig::default()
        })
        .await?,
        start(SandboxConfig {
            auth: AuthConfig::OAuth(OAuthConfig {
                client_id: CLIENT_ID.to_owned(),
                client_secret: Secret::new(CLIENT_SECRET),
                token_ttl: Duration::from_secs(2),
            }),
            ..SandboxConfig::default()
        })
        .await?,
        start(SandboxConfig::default()).await?,
    ];
    let [hubspot, salesforce, stripe] = &vendors;
    plant(hubspot, PERSON, (1..=12).map(|n| n * 9))?;
    plant(salesforce, &PERSON.to_uppercase(), (1..=16).map(|n| n * 13))?;
    plant(stripe, PERSON, (1..=20).map(|n| n * 11))?;
    plant(stripe, "a.lovelace@old.example", [7])?;
    for vendor in &vendors {
        plant(vendor, "ada.lovelace@example.com.evil", [3])?;
        plant(vendor, "x.ada.lovelace@example.com", [5])?;
    }
    outln!(
        "• sandbox-hubspot at {}: 3 requests/s, it answers 429s",
        hubspot.base_url()
    );
    outln!(
        "• sandbox-salesforce at {}: OAuth tokens expire every 2 s",
        salesforce.base_url()
    );
    outln!("• sandbox-stripe at {}", stripe.base_url());
    outln!(
        "• {PERSON}: 12 contacts at HubSpot, 16 at Salesforce (upper-cased), 20 at Stripe and\n  \
         one more there known by its id (an old address); near misses that are not hers"
    );

    let secret_file = dir.join("client_secret");
    super::dsr::write_private(&secret_file, CLIENT_SECRET.as_bytes())?;
    let id_file = dir.join("client_id");
    super::dsr::write_private(&id_file, CLIENT_ID.as_bytes())?;
    let sources: Vec<RequestSource> = PROFILES
        .iter()
        .zip(&vendors)
        .map(|((name, profile), vendor)| {
            let toml = match *name {
                "sandbox-hubspot" => profile.replacen(
                    "[auth]\nkind = \"none\"\n",
                    "[auth]\nkind = \"none\"\n\n[rate_limit]\nrequests_per_second = 10\nburst = 2\n",
                    1,
                ),
                "sandbox-salesforce" => profile.replacen(
                    "[auth]\nkind = \"none\"",
                    &format!(
                        "[auth]\nkind = \"oauth2\"\ntoken_url = \"/oauth/token\"\n\
                         client_id = {{ file = \"{}\" }}\nclient_secret = {{ file = \"{}\" }}",
                        id_file.display(),
                        secret_file.display()
                    ),
                    1,
                ),
                _ => (*profile).to_owned(),
            };
            RequestSource {
                toml,
                file: format!("examples/sources/{name}.toml"),
                base_url: Some(vendor.base_url().to_owned()),
            }
        })
        .collect();

    let key = AuditKey::ephemeral();
    let mut registry = Registry::new();
    cairn_workflows::register_builtin(&mut registry);
    registry.provide(key.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = Worker::new(
        db.pool().clone(),
        Arc::new(registry),
        WorkerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    );
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    outln!("• a worker with 8 slots, in this process, on a throwaway database\n");

    let outcome = requests(db, &key, sources, &vendors, &dir).await;
    let _ = stop.send(());
    let _ = worker.await;
    for vendor in vendors {
        vendor.shutdown().await;
    }
    outcome
}

/// Opens one request and follows it to `done`, printing each change of phase and progress.
async fn follow(
    db: &BenchDb,
    key: &AuditKey,
    kind: Kind,
    regulation: Regulation,
    sources: Vec<RequestSource>,
) -> Result<String, Failure> {
    let started = Instant::now();
    let opened = request::open(
        db.pool(),
        &Sealer::process(),
        key,
        OpenRequest {
            subject: Subject {
                email: PERSON.to_owned(),
                ids: vec![("sandbox-stripe".to_owned(), "7".to_owned())],
            },
            kind,
            regulation,
            sources,
            alerts: vec![0.5, 0.8, 1.0],
            retention: chrono::TimeDelta::days(30),
        },
    )
    .await
    .map_err(|err| failed("opening a request")(err.to_string()))?;
    outln!(
        "{} request {} ({}): due {}",
        kind.as_str(),
        opened.id,
        regulation.name(),
        opened
            .deadline
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut last = String::new();
    loop {
        let detail = request::show(db.pool(), &opened.id)
            .await
            .map_err(|err| failed("following the request")(err.to_string()))?;
        let s = &detail.summary;
        let progress = detail
            .progress
            .as_ref()
            .filter(|_| s.phase.as_str() == "discovering")
            .map(|p| format!(", lookups {}/{}", p["done"], p["lookups"]))
            .unwrap_or_default();
        let line = format!(
            "  {:<12} found {:>3}, erased {:>3}{progress}",
            s.phase.as_str(),
            s.found,
            s.erased,
        );
        if line != last {
            outln!("{line}");
            last = line;
        }
        match s.phase.as_str() {
            "done" => break,
            "failed" => {
                return Err(Failure::failed(format!(
                    "demo dsr: {} failed (cairn dlq list)",
                    opened.id
                )));
            }
            _ if started.elapsed() > Duration::from_secs(300) => {
                return Err(Failure::failed(format!(
                    "demo dsr: {} took over 5 minutes",
                    opened.id
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let detail = request::show(db.pool(), &opened.id)
        .await
        .map_err(|err| failed("following the request")(err.to_string()))?;
    let s = &detail.summary;
    let left = s.deadline - s.closed_at.unwrap_or_else(chrono::Utc::now);
    outln!(
        "  closed in {:.1} s, {} days {} hours before its deadline ({:.4}% of the window used)\n",
        started.elapsed().as_secs_f64(),
        left.num_days(),
        left.num_hours() % 24,
        s.elapsed_share * 100.0
    );
    Ok(opened.id)
}

async fn requests(
    db: &BenchDb,
    key: &AuditKey,
    sources: Vec<RequestSource>,
    vendors: &[SandboxHandle; 3],
    dir: &Path,
) -> Outcome {
    let access = follow(db, key, Kind::Access, Regulation::Gdpr, sources.clone()).await?;
    let text = request::report(db.pool(), &Sealer::process(), &access)
        .await
        .map_err(|err| failed("reading the report")(err.to_string()))?;
    let report: Report =
        serde_json::from_str(&text).map_err(|err| failed("the report")(err.to_string()))?;
    let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &report.records {
        *by_source.entry(&record.source).or_default() += 1;
    }
    let html: PathBuf = dir.join("report.html");
    std::fs::write(&html, report.html())
        .map_err(|err| failed("writing the report")(err.to_string()))?;
    outln!(
        "report: {} records ({}); every search complete: {}",
        report.records.len(),
        by_source
            .iter()
            .map(|(source, n)| format!("{source} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.complete()
    );
    outln!("  written to {}\n", html.display());

    follow(db, key, Kind::Erasure, Regulation::Ccpa, sources).await?;
    let left: usize = vendors.iter().map(held).sum();
    let stripe_by_id = vendors[2]
        .vendor()
        .records(Stream::Contacts)
        .iter()
        .any(|r| r["id"] == "7");
    let near_misses = vendors.iter().all(|vendor| {
        let records = vendor.vendor().records(Stream::Contacts);
        ["3", "5"]
            .iter()
            .all(|id| records.iter().any(|r| r["id"] == *id))
    });
    outln!(
        "vendors now hold {left} of her records (the one known by id: {}); near misses kept: {near_misses}",
        if stripe_by_id { "still there" } else { "gone" }
    );
    let mut conn = db
        .pool()
        .acquire()
        .await
        .map_err(|err| failed("the database")(err.to_string()))?;
    let verified = audit::verify(&mut conn, key)
        .await
        .map_err(|err| failed("verifying the audit chain")(err.to_string()))?;
    match &verified.broken {
        None => outln!("audit chain verified: {} entries", verified.entries),
        Some(broken) => outln!(
            "audit chain BROKEN at entry {}: {}",
            broken.seq,
            broken.problem
        ),
    }
    let ok = report.records.len() == 49
        && left == 0
        && !stripe_by_id
        && near_misses
        && verified.broken.is_none();
    outln!(
        "\n{}",
        if ok {
            "every record of hers was found and erased, and nobody else's was touched"
        } else {
            "MISMATCH: see above"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
