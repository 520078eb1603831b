//! Sandboxes, profiles and record-set assertions shared by the tests.

use cairn_connectors::record::Record;
use std::collections::BTreeSet;
use std::path::PathBuf;

use cairn_connectors::rest::{RestConfig, RestSource};
use cairn_sandbox::{ManualClock, Sandbox, SandboxConfig, SandboxHandle, Stream, checksum_records};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

/// The ready profiles in `examples/sources/`.
pub const PROFILES: [&str; 6] = [
    "sandbox-hubspot",
    "sandbox-salesforce",
    "sandbox-stripe",
    "sandbox-rest",
    "sandbox-hubspot-search",
    "sandbox-graphql",
];

/// The instant test data ends at, and manual clocks start at.
pub fn as_of() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

/// A small, repeatable vendor: 137 records per stream in pages of at most 25
/// (so a traversal takes 6 pages), a manual clock standing at [`as_of`].
pub fn sandbox_config() -> (SandboxConfig, ManualClock) {
    let clock = ManualClock::new(as_of());
    let config = SandboxConfig {
        records_per_stream: 137,
        max_page_size: 25,
        as_of: Some(as_of()),
        clock: clock.clone().into(),
        ..SandboxConfig::default()
    };
    (config, clock)
}

pub async fn start(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the sandbox starts")
}

pub fn profile_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/sources")
        .join(format!("{name}.toml"))
}

/// A ready profile, pointed at `base_url`.
pub fn profile(name: &str, base_url: &str) -> RestConfig {
    RestConfig::from_file(profile_path(name))
        .unwrap_or_else(|error| panic!("profile {name}: {error}"))
        .with_base_url(base_url)
        .expect("the sandbox's URL is an http URL")
}

pub async fn source(config: RestConfig) -> RestSource {
    RestSource::new(config, None)
        .await
        .expect("the HTTP client builds")
}

/// A source from TOML text, for vendors the profiles do not describe.
pub async fn inline(text: &str) -> RestSource {
    let config = RestConfig::parse(text, "inline.toml").unwrap_or_else(|error| panic!("{error}"));
    source(config).await
}

/// The parsed views of records.
pub fn values(records: &[Record]) -> Vec<Value> {
    records.iter().map(|r| r.value().clone()).collect()
}

pub fn id_of(record: &Value) -> String {
    record["id"].as_str().expect("string id").to_owned()
}

/// Asserts `seen` holds every record of `expected` exactly once, unchanged,
/// and that it has the vendor's checksum.
pub fn assert_exactly_once(seen: &[Record], expected: &[Value], what: &str) {
    let seen = &values(seen);
    let ids: Vec<String> = seen.iter().map(id_of).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: a record was read twice");
    let expected_ids: BTreeSet<String> = expected.iter().map(id_of).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected_ids,
        "{what}: the ids read differ from the vendor's"
    );
    assert_eq!(
        checksum_records(seen).expect("records with ids"),
        checksum_records(expected).expect("records with ids"),
        "{what}: the records read differ from the vendor's"
    );
}

/// `stream`'s checksum according to the vendor.
pub fn vendor_checksum(sandbox: &SandboxHandle, stream: Stream) -> String {
    sandbox.vendor().checksum(stream)
}
