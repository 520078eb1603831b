//! `bench dsr`: discovery for one person across three vendors each limited to 5
//! requests a second (HubSpot-, Salesforce- and Stripe-style lookups, the person's
//! records spread over several pages at each, one found by id): the wall time from
//! opening the request to its compiled report. The baseline, measured in the same run
//! against the same vendors, is the same lookups made by bare source clients (no engine,
//! no checkpoints, no audit), the three vendors side by side.

use std::time::{Duration, Instant};

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::rest::{IdentityKind, RestConfig, RestSource};
use cairn_runner::seal::Sealer;
use cairn_sandbox::{Mutation, RateLimit, SandboxConfig, SandboxHandle, Stream};
use cairn_workflows::dsr::request::{self, OpenRequest};
use cairn_workflows::dsr::{AuditKey, Kind, Regulation, RequestSource, Subject};
use clap::Args;
use serde_json::json;

use super::report::{Baseline, Machine, Named, Report, Target, share};
use super::{BenchDb, InProcessWorker, at_least, sandbox};
use crate::cli::Failure;

const PROFILES: [(&str, &str); 3] = [
    (
        "sandbox-hubspot",
        include_str!("../../../examples/sources/sandbox-hubspot.toml"),
    ),
    (
        "sandbox-salesforce",
        include_str!("../../../examples/sources/sandbox-salesforce.toml"),
    ),
    (
        "sandbox-stripe",
        include_str!("../../../examples/sources/sandbox-stripe.toml"),
    ),
];
const SUBJECT: &str = "bench.subject@example.com";
/// The vendors' page size.
const PAGE: usize = 25;

/// Options of `cairn bench dsr`.
#[derive(Debug, Args)]
pub(crate) struct DsrArgs {
    /// Each vendor's rate limit, in requests a second (and each source's budget).
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// The person's records at each vendor.
    #[arg(long, default_value_t = 100)]
    records: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl DsrArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--rate", u64::from(self.rate), 1)?;
        at_least("--records", self.records as u64, 1)?;
        if self.records > 5_000 {
            return Err(Failure::usage("--records must be at most 5000"));
        }
        at_least("--timeout", self.timeout, 1)
    }
}

/// The profile of `name`, with a rate budget of its own at `rate`.
fn limited(name: &str, profile: &str, rate: u32) -> String {
    profile.replacen(
        "[auth]\nkind = \"none\"\n",
        &format!(
            "[auth]\nkind = \"none\"\n\n[rate_limit]\nrequests_per_second = {rate}\nburst = 1\nkey = \"bench-dsr-{name}\"\n"
        ),
        1,
    )
}

/// Every page of every lookup of `source` for the person, as a bare client makes them:
/// by e-mail everywhere, by id at the Stripe-style vendor (where the request knows an id).
async fn bare_lookups(source: &RestSource, id: &str) -> Result<usize, Failure> {
    let mut found = 0;
    for (stream, kind) in source.lookups() {
        let value = match kind {
            IdentityKind::Email => SUBJECT,
            IdentityKind::Id if source.config().name() == "sandbox-stripe" => id,
            IdentityKind::Id => continue,
        };
        let mut traversal = Traversal::new(PageCursor::start());
        while let Some(cursor) = traversal.cursor().cloned() {
            let page = source
                .lookup(&stream, kind, value, &cursor)
                .await
                .map_err(|err| Failure::failed(format!("bench dsr: the baseline: {err}")))?;
            traversal
                .advance(&page)
                .map_err(|err| Failure::failed(format!("bench dsr: the baseline: {err}")))?;
            found += page.found.len();
        }
    }
    Ok(found)
}

pub(super) async fn run(db: &BenchDb, args: &DsrArgs) -> Result<Report, Failure> {
    let what = "dsr";
    let mut vendors: Vec<SandboxHandle> = Vec::new();
    for _ in PROFILES {
        let vendor = sandbox(
            what,
            SandboxConfig {
                records_per_stream: args.records * 4 + 10,
                max_page_size: PAGE,
                only: Some(Stream::Contacts),
                rate_limit: Some(RateLimit::new(f64::from(args.rate), 1)),
                ..SandboxConfig::default()
            },
        )
        .await?;
        let ids = (1..=args.records).map(|n| (n * 4).to_string()).collect();
        vendor
            .vendor()
            .mutate(
                Stream::Contacts,
                Mutation::Assign {
                    field: "email".to_owned(),
                    value: json!(SUBJECT),
                    ids,
                },
            )
            .map_err(|err| Failure::failed(format!("bench dsr: planting: {err}")))?;
        vendors.push(vendor);
    }
    // The Stripe-style vendor also knows the person by an id whose record has another
    // address.
    let by_id = "3";
    let sources: Vec<RequestSource> = PROFILES
        .iter()
        .zip(&vendors)
        .map(|((name, profile), vendor)| RequestSource {
            toml: limited(name, profile, args.rate),
            file: format!("examples/sources/{name}.toml"),
            base_url: Some(vendor.base_url().to_owned()),
        })
        .collect();

    eprintln!("bench dsr: baseline, bare lookups");
    let started = Instant::now();
    let mut bare = Vec::new();
    for source in &sources {
        let config = RestConfig::parse(&source.toml, &source.file)
            .and_then(|config| config.with_base_url(source.base_url.as_deref().unwrap_or_default()))
            .map_err(|err| Failure::failed(format!("bench dsr: {err}")))?;
        bare.push(
            RestSource::new(config, Some(db.pool().clone()))
                .await
                .map_err(|err| Failure::failed(format!("bench dsr: {err}")))?,
        );
    }
    let bare_found =
        futures::future::join_all(bare.iter().map(|source| bare_lookups(source, by_id)))
            .await
            .into_iter()
            .sum::<Result<usize, Failure>>()?;
    let bare_seconds = started.elapsed().as_secs_f64();
    // The vendors' buckets refill before cairn's turn.
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("bench dsr: one access request through cairn");
    let key = AuditKey::ephemeral();
    let worker = InProcessWorker::start_with_key(db.pool(), 8, key.clone());
    let started = Instant::now();
    let opened = request::open(
        db.pool(),
        &Sealer::process(),
        &key,
        OpenRequest {
            subject: Subject {
                email: SUBJECT.to_owned(),
                ids: vec![("sandbox-stripe".to_owned(), by_id.to_owned())],
            },
            kind: Kind::Access,
            regulation: Regulation::Gdpr,
            sources,
            alerts: vec![0.5, 0.8, 1.0],
            retention: chrono::TimeDelta::days(1),
        },
    )
    .await
    .map_err(|err| Failure::failed(format!("bench dsr: opening the request: {err}")))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let detail = loop {
        let detail = request::show(db.pool(), &opened.id)
            .await
            .map_err(|err| Failure::failed(format!("bench dsr: {err}")))?;
        if matches!(detail.summary.phase.as_str(), "compiled" | "done") {
            break detail;
        }
        if Instant::now() > deadline {
            return Err(Failure::failed(format!(
                "bench dsr: the request did not finish discovery in {} s",
                args.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cairn_seconds = started.elapsed().as_secs_f64();
    worker.stop().await?;
    let throttled: u64 = vendors
        .iter()
        .map(|v| v.vendor().stats().rate_limited)
        .sum();
    for vendor in vendors {
        vendor.shutdown().await;
    }

    let pages_per_vendor = args.records.div_ceil(PAGE);
    // Each vendor's lookup pages (plus one lookup by id at the Stripe-style one) at its
    // rate, the three side by side.
    let ideal = (pages_per_vendor + 1) as f64 / f64::from(args.rate);
    let found = detail.summary.found as usize;
    let mut conditions = Named::default();
    conditions
        .set("vendors", 3)
        .set("rate_per_vendor", args.rate)
        .set("records_per_vendor", args.records as u64)
        .set("page_size", PAGE as u64)
        .set("lookup_pages_per_vendor", pages_per_vendor as u64)
        .set("worker", "in-process, 8 slots");
    let mut figures = Named::default();
    figures
        .add("discovery_seconds", cairn_seconds, "s")
        .add("bare_lookup_seconds", bare_seconds, "s")
        .add("rate_limit_floor_seconds", ideal, "s")
        .add("records_found", found as f64, "records")
        .add("bare_records_found", bare_found as f64, "records")
        .add("vendor_429s", throttled as f64, "responses");
    let expected = 3 * args.records + 1;
    let targets = vec![
        Target::at_least(
            "every planted record found",
            f64::from(u8::from(found == expected && bare_found == expected)),
            1.0,
        ),
        Target::at_most(
            "discovery within 1.5x the bare lookups",
            share(cairn_seconds, bare_seconds),
            1.5,
        ),
    ];
    Ok(Report {
        scenario: "dsr",
        machine: Machine::describe(db.pool()).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "the same lookups by bare source clients, the three vendors side by side"
                .to_owned(),
            value: bare_seconds,
            unit: "s",
            ratio_of: "discovery seconds through cairn / bare lookup seconds".to_owned(),
        },
        ratio: share(cairn_seconds, bare_seconds),
        targets,
    })
}
