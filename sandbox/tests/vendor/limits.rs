//! The token bucket, the concurrency cap and the daily quota.

use std::time::Duration;

use cairn_sandbox::{RateLimit, RetryAfterStyle, SandboxConfig};
use chrono::DateTime;
use serde_json::Value;

use crate::common::{as_of, config, http, start};

const ROUTE: &str = "GET /crm/v3/objects/{stream}";

async fn get(base: &str) -> reqwest::Response {
    http()
        .get(format!("{base}/crm/v3/objects/contacts?limit=1"))
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn limited(
    rate: f64,
    burst: u32,
    style: RetryAfterStyle,
) -> (SandboxConfig, cairn_sandbox::ManualClock) {
    let (mut config, clock) = config();
    config.rate_limit = Some(RateLimit {
        rate_per_sec: rate,
        burst,
        retry_after: style,
    });
    (config, clock)
}

#[tokio::test]
async fn burst_then_429_with_headers_then_refill() {
    let (config, clock) = limited(2.0, 3, RetryAfterStyle::Seconds);
    let sandbox = start(config).await;
    let base = sandbox.base_url();
    for remaining in ["2", "1", "0"] {
        let response = get(base).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some(remaining));
        assert!(header(&response, "x-ratelimit-reset").is_some());
    }
    let refused = get(base).await;
    assert_eq!(refused.status(), 429);
    // Half a second to the next token, rounded up.
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&refused, "x-ratelimit-reset"), Some("2"));

    clock.advance(Duration::from_secs(1));
    assert_eq!(get(base).await.status(), 200);
    assert_eq!(get(base).await.status(), 200);
    assert_eq!(get(base).await.status(), 429);

    let stats = sandbox.vendor().stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.count(ROUTE, "200"), 5);
    assert_eq!(stats.count(ROUTE, "429"), 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn admits_exactly_burst_plus_rate_times_elapsed() {
    let (config, clock) = limited(5.0, 10, RetryAfterStyle::Seconds);
    let sandbox = start(config).await;
    let base = sandbox.base_url();
    let mut admitted = 0;
    let mut refused = 0;
    // Ten seconds in 100 ms steps, each step sending until refused.
    for _ in 0..100 {
        loop {
            match get(base).await.status().as_u16() {
                200 => admitted += 1,
                429 => {
                    refused += 1;
                    break;
                }
                other => panic!("unexpected status {other}"),
            }
            assert!(admitted <= 100, "the limiter let too much through");
        }
        clock.advance(Duration::from_millis(100));
    }
    // The bucket starts full (10) and refills 5/s for the 9.9 s that passed
    // between the first and the last step.
    assert_eq!(admitted, 10 + 49);
    assert_eq!(refused, 100);
    assert_eq!(sandbox.vendor().stats().rate_limited, 100);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn retry_after_as_http_date_or_absent() {
    let (config, _clock) = limited(0.5, 1, RetryAfterStyle::HttpDate);
    let sandbox = start(config).await;
    assert_eq!(get(sandbox.base_url()).await.status(), 200);
    let refused = get(sandbox.base_url()).await;
    assert_eq!(refused.status(), 429);
    let date = header(&refused, "retry-after").unwrap();
    let at = DateTime::parse_from_rfc2822(date).unwrap();
    assert_eq!(at, as_of() + chrono::Duration::seconds(2));
    assert!(date.ends_with(" GMT"), "{date}");
    sandbox.shutdown().await;

    let (config, _clock) = limited(0.5, 1, RetryAfterStyle::Absent);
    let sandbox = start(config).await;
    assert_eq!(get(sandbox.base_url()).await.status(), 200);
    let refused = get(sandbox.base_url()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), None);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn no_rate_headers_when_the_limiter_is_off() {
    let sandbox = start(config().0).await;
    let response = get(sandbox.base_url()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-remaining"), None);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_beyond_the_cap_get_429() {
    let (mut config, _clock) = config();
    config.max_concurrent = Some(2);
    let sandbox = start(config).await;
    let base = sandbox.base_url().to_owned();
    let hold = sandbox.vendor().hold();
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { get(&base).await.status().as_u16() })
        })
        .collect();
    hold.until_waiting(2).await;
    let third = get(&base).await;
    assert_eq!(third.status(), 429);
    assert_eq!(header(&third, "retry-after"), Some("1"));
    drop(hold);
    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(get(&base).await.status(), 200);
    assert_eq!(sandbox.vendor().stats().rate_limited, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn daily_quota_is_spent_then_renewed_the_next_day() {
    let (mut config, clock) = config();
    config.daily_quota = Some(3);
    let sandbox = start(config).await;
    let base = sandbox.base_url();
    for used in 1..=3 {
        let response = get(base).await;
        assert_eq!(response.status(), 200);
        let info = format!("api-usage={used}/3");
        assert_eq!(header(&response, "sforce-limit-info"), Some(info.as_str()));
    }
    let refused = get(base).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(header(&refused, "sforce-limit-info"), Some("api-usage=3/3"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(sandbox.vendor().stats().quota_used, Some(3));

    clock.advance(Duration::from_secs(24 * 3600));
    let renewed = get(base).await;
    assert_eq!(renewed.status(), 200);
    assert_eq!(header(&renewed, "sforce-limit-info"), Some("api-usage=1/3"));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refusals_before_the_bucket_carry_its_headers_and_cost_no_token() {
    let (mut config, _clock) = limited(1.0, 4, RetryAfterStyle::Seconds);
    config.auth = cairn_sandbox::AuthConfig::ApiKey("k".into());
    let sandbox = start(config).await;
    let refused = get(sandbox.base_url()).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "x-ratelimit-limit"), Some("4"));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some("4"));
    let admitted = http()
        .get(format!("{}/ids/deals", sandbox.base_url()))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(admitted.status(), 200);
    assert_eq!(header(&admitted, "x-ratelimit-remaining"), Some("3"));
    sandbox.shutdown().await;
}
