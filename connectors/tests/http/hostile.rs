//! A hostile vendor against the HTTP layer: redirects that would carry credentials to
//! another host, bodies that would exhaust memory, bodies that trickle, and rate-limit
//! headers no vendor could mean.

use std::time::{Duration, Instant};

use cairn_connectors::auth::{AuthConfig, KeyLocation};
use cairn_connectors::error::Category;
use cairn_connectors::http::{HttpClient, Timeouts};
use cairn_sandbox::{Hostile, OAuthConfig, OtherHost, SandboxConfig, Secret, Throttle};

use crate::{CONTACTS_PATH, config, given, page, sandbox};

const KEY: &str = "key-hostile-9f1c";

async fn other_host(vendor: &cairn_sandbox::SandboxHandle) -> OtherHost {
    OtherHost::start(vendor, "127.0.0.2:0".parse().unwrap())
        .await
        .expect("binding 127.0.0.2")
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_unless_allowed_and_then_gets_no_credential() {
    let vendor = sandbox(SandboxConfig {
        auth: cairn_sandbox::AuthConfig::ApiKey(Secret::new(KEY)),
        ..SandboxConfig::default()
    })
    .await;
    let elsewhere = other_host(&vendor).await;
    vendor.vendor().set_hostile(Hostile {
        redirect_to: Some(elsewhere.origin()),
        ..Hostile::default()
    });
    for location in [KeyLocation::Header, KeyLocation::Query] {
        let mut cfg = config(vendor.base_url());
        cfg.auth = AuthConfig::ApiKey {
            name: if location == KeyLocation::Header {
                "X-API-Key"
            } else {
                "api_key"
            }
            .to_owned(),
            location,
            value: given(KEY),
        };
        cfg.headers.insert(
            "X-Partner-Token".to_owned(),
            cairn_connectors::headers::HeaderSetting::Secret(given("partner-tok-77")),
        );
        cfg.headers
            .insert("Accept-Language".to_owned(), "en".into());
        let client = HttpClient::new(cfg.clone(), None).await.unwrap();
        let before = elsewhere.received().len();
        let err = client.get(CONTACTS_PATH, &page()).await.unwrap_err();
        assert_eq!(err.category(), Category::Redirect, "{err}");
        let message = err.to_string();
        assert!(
            message.contains(vendor.base_url()),
            "names the source's origin: {message}"
        );
        assert!(
            message.contains(&elsewhere.origin()),
            "names the other origin: {message}"
        );
        assert!(!message.contains(KEY), "{message}");
        assert_eq!(elsewhere.received().len(), before, "nothing was sent there");

        cfg.allow_redirect_hosts = vec!["127.0.0.2".to_owned()];
        let client = HttpClient::new(cfg, None).await.unwrap();
        let response = client.get(CONTACTS_PATH, &page()).await.expect("followed");
        assert_eq!(response.status, 200);
        assert!(!response.url.contains(KEY), "{}", response.url);
        let received = elsewhere.received();
        let last = received.last().expect("the other host was asked");
        let text = last.text();
        assert!(
            text.contains("accept-language: en"),
            "plain headers still go: {text}"
        );
        for secret in [KEY, "partner-tok-77", "authorization", "cookie", "api_key"] {
            assert!(
                !text.to_lowercase().contains(&secret.to_lowercase()),
                "{secret} reached the other host: {text}"
            );
        }
    }
}

#[tokio::test]
async fn redirects_within_the_origin_are_followed_five_times_and_no_more() {
    let vendor = sandbox(SandboxConfig::default()).await;
    for (hops, followed) in [(5, true), (6, false)] {
        vendor.vendor().set_hostile(Hostile {
            redirect_hops: hops,
            ..Hostile::default()
        });
        let client = HttpClient::new(config(vendor.base_url()), None)
            .await
            .unwrap();
        let result = client.get(CONTACTS_PATH, &page()).await;
        match (followed, result) {
            (true, Ok(response)) => assert_eq!(response.status, 200),
            (false, Err(err)) => {
                assert_eq!(err.category(), Category::Redirect);
                assert!(err.to_string().contains("more than 5 redirects"), "{err}");
                assert!(!err.category().is_transient());
            }
            (_, other) => panic!("{hops} hops: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_token_endpoint_follows_no_redirect() {
    let vendor = sandbox(SandboxConfig {
        auth: cairn_sandbox::AuthConfig::OAuth(OAuthConfig {
            client_id: "cid".to_owned(),
            client_secret: Secret::new("csecret-redirected-31"),
            token_ttl: Duration::from_secs(60),
        }),
        ..SandboxConfig::default()
    })
    .await;
    let elsewhere = other_host(&vendor).await;
    vendor.vendor().set_hostile(Hostile {
        redirect_to: Some(elsewhere.origin()),
        ..Hostile::default()
    });
    let mut cfg = config(vendor.base_url());
    // A POST route behind the attack: it answers the token request with a 302.
    cfg.auth = AuthConfig::Oauth2 {
        grant: Default::default(),
        credential: None,
        token_url: "/crm/v3/objects/contacts/search".to_owned(),
        client_id: given("cid"),
        client_secret: given("csecret-redirected-31"),
        scope: None,
        refresh_margin_secs: 5,
    };
    cfg.allow_redirect_hosts = vec!["127.0.0.2".to_owned()];
    let client = HttpClient::new(cfg, None).await.unwrap();
    let err = client.get(CONTACTS_PATH, &page()).await.unwrap_err();
    assert_eq!(err.category(), Category::Redirect, "{err}");
    assert!(err.to_string().contains("token endpoint"), "{err}");
    assert!(
        elsewhere.received().is_empty(),
        "the client secret went nowhere"
    );
}

#[tokio::test]
async fn huge_bodies_and_compression_bombs_stop_at_the_limit() {
    let vendor = sandbox(SandboxConfig::default()).await;
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
        vendor.vendor().set_hostile(hostile);
        let mut cfg = config(vendor.base_url());
        cfg.max_response_bytes = 8 * 1024 * 1024;
        let client = HttpClient::new(cfg, None).await.unwrap();
        let err = client.get(CONTACTS_PATH, &page()).await.unwrap_err();
        assert_eq!(err.category(), Category::TooLarge, "{err}");
        assert!(
            err.to_string()
                .contains("max_response_bytes (8388608 bytes"),
            "{err}"
        );
        assert!(!err.category().is_transient());
    }
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_by_the_whole_request_timeout() {
    let vendor = sandbox(SandboxConfig {
        hostile: Hostile {
            trickle: Some(Duration::from_secs(5)),
            ..Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let mut cfg = config(vendor.base_url());
    cfg.timeouts = Timeouts {
        connect_secs: 1.0,
        read_secs: 10.0,
        total_secs: 1.5,
    };
    let client = HttpClient::new(cfg, None).await.unwrap();
    let started = Instant::now();
    let err = client.get(CONTACTS_PATH, &page()).await.unwrap_err();
    assert_eq!(err.category(), Category::Timeout, "{err}");
    assert!(
        err.category().is_transient(),
        "retried under the retry policy"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off before the second byte"
    );
}

#[tokio::test]
async fn absurd_waits_are_not_obeyed_and_millisecond_resets_are_read_as_such() {
    let vendor = sandbox(SandboxConfig::default()).await;
    let now = chrono::Utc::now();
    let cases = [
        (Some("-5"), None, false),
        (Some("999999999"), None, false),
        (Some("soon"), None, false),
        (
            None,
            Some(
                (now + chrono::Duration::seconds(40))
                    .timestamp_millis()
                    .to_string(),
            ),
            true,
        ),
        (Some("86400"), None, true),
    ];
    for (retry_after, reset, obeyed) in cases {
        vendor.vendor().set_hostile(Hostile {
            throttle: Some(Throttle {
                count: 1,
                retry_after: retry_after.map(str::to_owned),
                reset: reset.clone(),
                ..Throttle::default()
            }),
            ..Hostile::default()
        });
        let mut cfg = config(vendor.base_url());
        cfg.waits.max_rate_limit_wait_secs = 3600;
        let client = HttpClient::new(cfg, None).await.unwrap();
        let err = client.get(CONTACTS_PATH, &page()).await.unwrap_err();
        let until = err.retry_time().expect("a 429 says when to come back");
        let wait = until - chrono::Utc::now();
        let case = format!("{retry_after:?} {reset:?}: {err}");
        assert!(wait <= chrono::Duration::hours(1), "capped: {case}");
        if obeyed {
            assert!(wait >= chrono::Duration::seconds(30), "{case}");
        } else {
            assert!(
                wait <= chrono::Duration::seconds(10),
                "a backoff instead: {case}"
            );
        }
        if retry_after == Some("86400") {
            let asked = err.asked_until().expect("the cut is reported");
            assert!(
                asked - chrono::Utc::now() > chrono::Duration::hours(23),
                "{case}"
            );
        }
    }
}
