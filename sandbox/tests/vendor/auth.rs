//! OAuth2 client credentials with expiring tokens, and API keys.

use std::time::Duration;

use cairn_sandbox::{AuthConfig, OAuthConfig, Secret};
use serde_json::Value;

use crate::common::{config, http, start};

async fn token(base: &str, id: &str, secret: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
}

async fn list(base: &str, bearer: Option<&str>) -> u16 {
    let mut request = http().get(format!("{base}/v1/deals?limit=2"));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn oauth_tokens_work_until_they_expire() {
    let (mut config, clock) = config();
    config.auth = AuthConfig::OAuth(OAuthConfig {
        client_id: "cairn".to_owned(),
        client_secret: Secret::new("s3cret"),
        token_ttl: Duration::from_secs(600),
    });
    assert!(!format!("{config:?}").contains("s3cret"));
    let sandbox = start(config).await;
    let base = sandbox.base_url();

    assert_eq!(list(base, None).await, 401);
    for _ in 0..3 {
        let refused = token(base, "cairn", "wrong").await;
        assert_eq!(refused.status(), 401);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }

    let issued: Value = token(base, "cairn", "s3cret").await.json().await.unwrap();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 600);
    let access = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(list(base, Some(&access)).await, 200);
    assert_eq!(list(base, Some("forged")).await, 401);

    clock.advance(Duration::from_secs(599));
    assert_eq!(list(base, Some(&access)).await, 200);
    clock.advance(Duration::from_secs(1));
    let expired = http()
        .get(format!("{base}/v1/deals"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    let challenge = expired.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");

    let renewed: Value = token(base, "cairn", "s3cret").await.json().await.unwrap();
    let fresh = renewed["access_token"].as_str().unwrap();
    assert_ne!(fresh, access);
    assert_eq!(list(base, Some(fresh)).await, 200);

    let stats = sandbox.vendor().stats();
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!(stats.count("POST /oauth/token", "401"), 3);
    assert_eq!(stats.count("GET /v1/{stream}", "401"), 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn api_keys_are_checked_on_every_request() {
    let (mut config, _clock) = config();
    config.auth = AuthConfig::ApiKey(Secret::new("key-123"));
    let sandbox = start(config).await;
    let base = sandbox.base_url();
    let with_header = |key: &'static str| {
        http()
            .get(format!("{base}/ids/contacts"))
            .header("X-API-Key", key)
            .send()
    };
    assert_eq!(with_header("key-123").await.unwrap().status(), 200);
    for _ in 0..3 {
        assert_eq!(with_header("key-124").await.unwrap().status(), 401);
    }
    assert_eq!(list(base, Some("key-123")).await, 200);
    assert_eq!(list(base, None).await, 401);
    // The admin API is the operator's, not the client's.
    assert_eq!(
        http()
            .get(format!("{base}/admin/stats"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sandbox.shutdown().await;
}
