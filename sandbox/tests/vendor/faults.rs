//! Transient faults, each kind on its own and a seeded mix.

use std::time::Duration;

use cairn_sandbox::{FaultConfig, FaultKind, SandboxConfig, SandboxHandle};
use serde_json::{Value, json};

use crate::common::{config, http, start};

const ROUTE: &str = "GET /crm/v3/objects/{stream}";

async fn always(kind: FaultKind) -> SandboxHandle {
    let (mut config, _clock) = config();
    config.faults = FaultConfig {
        rate: 1.0,
        kinds: vec![kind],
        slow_delay: Duration::from_secs(60),
    };
    start(config).await
}

fn page_url(sandbox: &SandboxHandle) -> String {
    format!("{}/crm/v3/objects/contacts?limit=5", sandbox.base_url())
}

#[tokio::test]
async fn server_errors_answer_with_their_status() {
    for (kind, status) in [
        (FaultKind::InternalError, 500),
        (FaultKind::BadGateway, 502),
        (FaultKind::Unavailable, 503),
        (FaultKind::GatewayTimeout, 504),
    ] {
        let sandbox = always(kind).await;
        let response = http().get(page_url(&sandbox)).send().await.unwrap();
        assert_eq!(response.status(), status);
        let stats = sandbox.vendor().stats();
        assert_eq!(stats.faults[kind.name()], 1);
        assert_eq!(stats.count(ROUTE, &status.to_string()), 1);
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn a_reset_connection_gets_no_response() {
    let sandbox = always(FaultKind::Reset).await;
    let error = http().get(page_url(&sandbox)).send().await.unwrap_err();
    assert!(error.is_request() || error.is_connect(), "{error:?}");
    let stats = sandbox.vendor().stats();
    assert_eq!(stats.count(ROUTE, "reset"), 1);
    assert_eq!(stats.faults["reset"], 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_truncated_body_fails_to_arrive_whole() {
    let sandbox = always(FaultKind::Truncated).await;
    let response = http().get(page_url(&sandbox)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let promised: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(promised > 100);
    assert!(response.bytes().await.is_err());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_malformed_body_is_not_json() {
    let sandbox = always(FaultKind::Malformed).await;
    let response = http().get(page_url(&sandbox)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_slow_response_outlasts_the_client_timeout() {
    let sandbox = always(FaultKind::Slow).await;
    cairn_connectors::http::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = client.get(page_url(&sandbox)).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn gateway_faults_lose_the_response_of_a_write_that_happened() {
    let sandbox = always(FaultKind::BadGateway).await;
    let response = http()
        .post(format!("{}/dest/deals", sandbox.base_url()))
        .json(&json!({"name": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let held = sandbox.vendor().destination("deals");
    assert_eq!(held.records.len(), 1, "the record was created all the same");
    sandbox.shutdown().await;
}

fn mixed(seed: u64) -> SandboxConfig {
    let (mut config, _clock) = config();
    config.seed = seed;
    config.faults = FaultConfig {
        rate: 0.3,
        kinds: vec![FaultKind::InternalError, FaultKind::Unavailable],
        ..FaultConfig::default()
    };
    config
}

async fn statuses(config: SandboxConfig) -> Vec<u16> {
    let sandbox = start(config).await;
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let response = http().get(page_url(&sandbox)).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    sandbox.shutdown().await;
    statuses
}

#[tokio::test]
async fn faults_at_a_rate_are_repeatable_from_the_seed() {
    let first = statuses(mixed(7)).await;
    assert_eq!(first, statuses(mixed(7)).await);
    assert_ne!(first, statuses(mixed(8)).await);
    let faults = first.iter().filter(|s| **s != 200).count();
    // 30% of 200, give or take a generous margin for the draw.
    assert!((35..=85).contains(&faults), "{faults} faults");
    assert!(first.iter().all(|s| [200, 500, 503].contains(s)));
}
