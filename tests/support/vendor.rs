//! The sandbox vendor and the built-in sync workflows, for tests that sync through it
//! and compare the warehouse with the vendor afterwards.

use cairn::connectors::warehouse::Warehouse;
use cairn::sandbox::{Sandbox, SandboxConfig, SandboxHandle, Stream};
use cairn::workflows::sync::SyncInput;
use cairn_testkit::TestDb;
use serde_json::Value;

/// The Stripe-like profile (lands in `sandbox_stripe`).
pub const STRIPE: &str = include_str!("../../examples/sources/sandbox-stripe.toml");
/// The HubSpot-like profile (lands in `sandbox_hubspot`).
pub const HUBSPOT: &str = include_str!("../../examples/sources/sandbox-hubspot.toml");
/// The offset-paged profile with the vendor's `total` (lands in `sandbox_rest`).
pub const REST: &str = include_str!("../../examples/sources/sandbox-rest.toml");

/// HubSpot's search endpoint, a `POST` with a JSON body (lands in
/// `sandbox_hubspot_search`).
pub const HUBSPOT_SEARCH: &str = include_str!("../../examples/sources/sandbox-hubspot-search.toml");
/// The GraphQL profile (lands in `sandbox_graphql`).
pub const GRAPHQL: &str = include_str!("../../examples/sources/sandbox-graphql.toml");

/// A sandbox on an ephemeral port of 127.0.0.1.
pub async fn start(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A sync input for `stream` of the source in `profile`, pointed at `sandbox`.
pub fn input(profile: &str, sandbox: &SandboxHandle, stream: Stream) -> SyncInput {
    let mut input = SyncInput::new(
        profile.to_owned(),
        "test.toml".to_owned(),
        stream.name().to_owned(),
    );
    input.base_url = Some(sandbox.base_url().to_owned());
    input
}

/// Sets `email` on the contacts `ids` of `sandbox`: how a test plants one person.
pub fn plant<I: ToString>(sandbox: &SandboxHandle, email: &str, ids: impl IntoIterator<Item = I>) {
    sandbox
        .vendor()
        .mutate(
            Stream::Contacts,
            cairn::sandbox::Mutation::Assign {
                field: "email".to_owned(),
                value: serde_json::json!(email),
                ids: ids.into_iter().map(|id| id.to_string()).collect(),
            },
        )
        .unwrap();
}

/// The checksum of the live rows of `schema.<stream>`, written by `source`.
pub async fn landed(db: &TestDb, source: &str, schema: &str, stream: Stream) -> String {
    let mut conn = db.pool().acquire().await.unwrap();
    Warehouse::new(source, schema)
        .unwrap()
        .checksum(&mut conn, stream.name())
        .await
        .unwrap()
}

/// The checksum of `records` (as the warehouse computes it over `_raw`).
pub fn checksum(records: &[Value]) -> String {
    cairn::sandbox::checksum_records(records).unwrap()
}

/// A count from SQL.
pub async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Asserts that `held`, a destination's record, holds every field of the source record
/// `source` but its id.
pub fn assert_holds(held: &Value, source: &Value, what: &str) {
    for (field, value) in source.as_object().unwrap() {
        if field != "id" {
            assert_eq!(&held[field], value, "{what}: field `{field}`");
        }
    }
}

/// A vendor that answers every API request 400 with `body` (markup, say).
pub async fn refusing(body: &str) -> SandboxHandle {
    start(SandboxConfig {
        records_per_stream: 10,
        hostile: cairn::sandbox::Hostile {
            error_body: Some(body.to_owned()),
            ..cairn::sandbox::Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await
}

/// A vendor of `records` per stream whose first `count` API requests are answered 429
/// with `Retry-After: 1`, and the count of requests that knob saw (the first `count` of
/// them refused).
pub async fn throttling(
    records: usize,
    count: u32,
) -> (SandboxHandle, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sandbox = start(SandboxConfig {
        records_per_stream: records,
        hostile: cairn::sandbox::Hostile {
            throttle: Some(cairn::sandbox::Throttle {
                count,
                retry_after: Some("1".to_owned()),
                refused: seen.clone(),
                ..cairn::sandbox::Throttle::default()
            }),
            ..cairn::sandbox::Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    (sandbox, seen)
}

/// `profile` with a `[rate_limit]` of `per_second` requests (and `extra` lines in it).
pub fn rate_limited(profile: &str, per_second: u32, extra: &str) -> String {
    profile.replacen(
        "[auth]",
        &format!("[rate_limit]\nrequests_per_second = {per_second}\n{extra}\n[auth]"),
        1,
    )
}
