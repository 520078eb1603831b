//! The HTTP layer against the sandbox vendor over real HTTP: auth and token expiry,
//! 429s in every form, faults, quotas, the shared rate budget, and secrets that never
//! leak.

mod budget;
mod hostile;
mod secrets;
mod signed;

use std::time::Duration;

use cairn_connectors::auth::{AuthConfig, KeyLocation};
use cairn_connectors::error::Category;
use cairn_connectors::http::{HttpClient, HttpConfig, Timeouts};
use cairn_connectors::secret::SecretSource;
use cairn_runner::ErrorClass;
use cairn_sandbox::{
    FaultConfig, FaultKind, ManualClock, OAuthConfig, RateLimit, RetryAfterStyle, Sandbox,
    SandboxConfig, SandboxHandle, Secret,
};
use chrono::Utc;

pub(crate) async fn sandbox(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("starting the sandbox")
}

pub(crate) fn config(base_url: &str) -> HttpConfig {
    HttpConfig::new(base_url)
}

/// A secret given in code, as a program embedding cairn holds one.
pub(crate) fn given(value: &str) -> SecretSource {
    SecretSource::Value(Secret::new(value))
}

const CONTACTS: &str = "/crm/v3/objects/contacts";
pub(crate) const CONTACTS_PATH: &str = CONTACTS;

pub(crate) fn page() -> Vec<(String, String)> {
    vec![("limit".to_owned(), "10".to_owned())]
}

#[tokio::test]
async fn an_expired_oauth_token_is_refreshed_once_and_the_request_retried() {
    let clock = ManualClock::new(Utc::now());
    let vendor = sandbox(SandboxConfig {
        auth: cairn_sandbox::AuthConfig::OAuth(OAuthConfig {
            client_id: "cairn-client".to_owned(),
            client_secret: Secret::new("client-pw"),
            token_ttl: Duration::from_secs(60),
        }),
        clock: clock.clone().into(),
        ..SandboxConfig::default()
    })
    .await;
    let mut cfg = config(vendor.base_url());
    cfg.auth = AuthConfig::Oauth2 {
        grant: Default::default(),
        credential: None,
        token_url: "/oauth/token".to_owned(),
        client_id: given("cairn-client"),
        client_secret: given("client-pw"),
        scope: None,
        refresh_margin_secs: 5,
    };
    let client = HttpClient::new(cfg, None).await.unwrap();
    for round in 0..6 {
        let response = client
            .get(CONTACTS, &page())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(response.status, 200);
        // The vendor's clock moves past the token's life between requests, mid-stream.
        if round % 2 == 1 {
            clock.advance(Duration::from_secs(120));
        }
    }
    let stats = vendor.vendor().stats();
    assert_eq!(stats.tokens_issued, 3, "one token, then one per expiry");
    assert_eq!(
        stats.count("GET /crm/v3/objects/{stream}", "401"),
        2,
        "each expiry costs one 401"
    );
    assert_eq!(stats.count("GET /crm/v3/objects/{stream}", "200"), 6);
}

#[tokio::test]
async fn wrong_credentials_fail_permanently_without_saying_the_secret() {
    let vendor = sandbox(SandboxConfig {
        auth: cairn_sandbox::AuthConfig::OAuth(OAuthConfig {
            client_id: "cairn-client".to_owned(),
            client_secret: Secret::new("the-right-one"),
            token_ttl: Duration::from_secs(60),
        }),
        ..SandboxConfig::default()
    })
    .await;
    let mut cfg = config(vendor.base_url());
    cfg.auth = AuthConfig::Oauth2 {
        grant: Default::default(),
        credential: None,
        token_url: "/oauth/token".to_owned(),
        client_id: given("cairn-client"),
        client_secret: given("a-wrong-one"),
        scope: None,
        refresh_margin_secs: 5,
    };
    let client = HttpClient::new(cfg, None).await.unwrap();
    let err = client.get(CONTACTS, &page()).await.unwrap_err();
    assert_eq!(err.category(), Category::AuthDrift);
    assert_eq!(err.status(), Some(401));
    let message = format!("{err} {err:?}");
    assert!(!message.contains("a-wrong-one"), "{message}");
    assert_eq!(
        cairn_runner::Error::from(err).class(),
        ErrorClass::Permanent
    );
    assert_eq!(vendor.vendor().stats().tokens_issued, 0);
}

#[tokio::test]
async fn api_keys_travel_in_headers_and_never_show_in_errors() {
    let vendor = sandbox(SandboxConfig {
        auth: cairn_sandbox::AuthConfig::ApiKey(Secret::new("key-123")),
        ..SandboxConfig::default()
    })
    .await;
    let mut cfg = config(vendor.base_url());
    cfg.auth = AuthConfig::ApiKey {
        name: "X-API-Key".to_owned(),
        location: KeyLocation::Header,
        value: given("key-123"),
    };
    let client = HttpClient::new(cfg, None).await.unwrap();
    assert_eq!(client.get(CONTACTS, &page()).await.unwrap().status, 200);

    // In the query string (which this vendor ignores): refused, and the URL in the error
    // has the key removed.
    let mut cfg = config(vendor.base_url());
    cfg.auth = AuthConfig::ApiKey {
        name: "api_key".to_owned(),
        location: KeyLocation::Query,
        value: given("key-123"),
    };
    let client = HttpClient::new(cfg, None).await.unwrap();
    let err = client.get(CONTACTS, &page()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!format!("{err} {err:?}").contains("key-123"), "{err}");
    assert!(
        err.url().ends_with("/crm/v3/objects/contacts?limit=10"),
        "{}",
        err.url()
    );
}

async fn first_throttle(style: RetryAfterStyle) -> cairn_connectors::error::HttpError {
    let vendor = sandbox(SandboxConfig {
        rate_limit: Some(RateLimit {
            retry_after: style,
            ..RateLimit::new(0.5, 1)
        }),
        ..SandboxConfig::default()
    })
    .await;
    let client = HttpClient::new(config(vendor.base_url()), None)
        .await
        .unwrap();
    client
        .get(CONTACTS, &page())
        .await
        .expect("the burst admits one");
    client.get(CONTACTS, &page()).await.unwrap_err()
}

#[tokio::test]
async fn a_429_carries_when_to_retry_whatever_form_retry_after_takes() {
    for style in [
        RetryAfterStyle::Seconds,
        RetryAfterStyle::HttpDate,
        RetryAfterStyle::Absent,
    ] {
        let before = Utc::now();
        let err = first_throttle(style).await;
        assert_eq!(err.category(), Category::Throttled, "{style:?}");
        let at = err.retry_time().expect("a retry time");
        assert!(at > before, "{style:?}: {at}");
        assert!(
            at < before + chrono::Duration::seconds(65),
            "{style:?}: {at}"
        );
        match cairn_runner::Error::from(err).class() {
            ErrorClass::RateLimited { until } => assert_eq!(until, at),
            other => panic!("{style:?}: a 429 parks the run, not {other:?}"),
        }
    }
}

#[tokio::test]
async fn faults_are_categorised() {
    let cases = [
        (FaultKind::InternalError, Category::PlatformFault),
        (FaultKind::BadGateway, Category::PlatformFault),
        (FaultKind::Unavailable, Category::PlatformFault),
        (FaultKind::GatewayTimeout, Category::PlatformFault),
        (FaultKind::Reset, Category::Network),
        (FaultKind::Slow, Category::Timeout),
        (FaultKind::Truncated, Category::MalformedBody),
        (FaultKind::Malformed, Category::MalformedBody),
    ];
    for (kind, category) in cases {
        let vendor = sandbox(SandboxConfig {
            faults: FaultConfig {
                rate: 1.0,
                kinds: vec![kind],
                slow_delay: Duration::from_secs(2),
            },
            ..SandboxConfig::default()
        })
        .await;
        let mut cfg = config(vendor.base_url());
        cfg.timeouts = Timeouts {
            connect_secs: 1.0,
            read_secs: 0.3,
            total_secs: 0.5,
        };
        let client = HttpClient::new(cfg, None).await.unwrap();
        let err = client.get(CONTACTS, &page()).await.unwrap_err();
        assert_eq!(err.category(), category, "{kind:?}: {err}");
        assert!(category.is_transient());
        assert_eq!(
            cairn_runner::Error::from(err).class(),
            ErrorClass::Transient,
            "{kind:?}"
        );
        vendor.shutdown().await;
    }
}

#[tokio::test]
async fn a_spent_daily_quota_parks_until_the_next_day() {
    let vendor = sandbox(SandboxConfig {
        daily_quota: Some(3),
        ..SandboxConfig::default()
    })
    .await;
    let client = HttpClient::new(config(vendor.base_url()), None)
        .await
        .unwrap();
    for _ in 0..3 {
        client.get(CONTACTS, &page()).await.unwrap();
    }
    let err = client.get(CONTACTS, &page()).await.unwrap_err();
    assert_eq!(err.category(), Category::QuotaExhausted);
    assert_eq!(err.status(), Some(403));
    let at = err.retry_time().unwrap();
    let tomorrow = (Utc::now().date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(
        at, tomorrow,
        "a daily quota resets at the start of the next UTC day"
    );
    assert!(matches!(
        cairn_runner::Error::from(err).class(),
        ErrorClass::RateLimited { .. }
    ));
}
