//! The rate budget shared through Postgres.

use std::time::Duration;

use cairn_connectors::budget::{Grant, RateBudget, RateLimitConfig};
use cairn_connectors::http::HttpClient;
use cairn_sandbox::{RateLimit, RetryAfterStyle, SandboxConfig};
use cairn_testkit::TestDb;
use chrono::Utc;

use crate::{config, sandbox};

fn limit(rate: f64, key: &str) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_second: rate,
        burst: 1.0,
        key: Some(key.to_owned()),
        max_wait_secs: 10.0,
    }
}

/// Two clients (as two workers would have) on one credential share the vendor's limit
/// instead of each taking all of it: together they stay under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_credential_share_one_budget() {
    const EACH: usize = 25;
    let db = TestDb::new().await;
    let vendor = sandbox(SandboxConfig {
        rate_limit: Some(RateLimit::new(20.0, 2)),
        ..SandboxConfig::default()
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut cfg = config(vendor.base_url());
        cfg.rate_limit = Some(limit(20.0, "sandbox-shared"));
        clients.push(
            HttpClient::new(cfg, Some(db.new_pool(4).await))
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                for _ in 0..EACH {
                    client
                        .get(
                            "/crm/v3/objects/contacts",
                            &[("limit".to_owned(), "5".to_owned())],
                        )
                        .await
                        .expect("paced requests succeed");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = vendor.vendor().stats();
    let ok = stats.count("GET /crm/v3/objects/{stream}", "200");
    assert_eq!(ok, 2 * EACH as u64);
    let share = stats.rate_limited as f64 / (ok + stats.rate_limited) as f64;
    assert!(
        share < 0.02,
        "{} of {} requests were answered 429",
        stats.rate_limited,
        ok + stats.rate_limited
    );
    let granted: i64 =
        sqlx::query_scalar("SELECT granted FROM cairn.rate_budgets WHERE key = 'sandbox-shared'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(
        granted >= 2 * EACH as i64,
        "both clients drew from the one budget: {granted}"
    );
}

/// The vendor's `X-RateLimit-Remaining: 0` and reset time hold the budget, so an
/// optimistic budget is corrected without provoking a single 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_vendor_window_holds_the_budget_without_a_429() {
    let db = TestDb::new().await;
    // Three requests at once, then one every two seconds: a used-up window says so.
    let vendor = sandbox(SandboxConfig {
        rate_limit: Some(RateLimit {
            retry_after: RetryAfterStyle::Seconds,
            ..RateLimit::new(0.5, 3)
        }),
        ..SandboxConfig::default()
    })
    .await;
    let mut cfg = config(vendor.base_url());
    // The budget believes in 80 req/s.
    cfg.rate_limit = Some(limit(80.0, "optimistic"));
    let client = HttpClient::new(cfg, Some(db.pool().clone())).await.unwrap();
    for _ in 0..4 {
        client
            .get(
                "/crm/v3/objects/contacts",
                &[("limit".to_owned(), "5".to_owned())],
            )
            .await
            .expect("paced by the vendor's own headers");
    }
    let stats = vendor.vendor().stats();
    assert_eq!(stats.count("GET /crm/v3/objects/{stream}", "200"), 4);
    assert_eq!(stats.rate_limited, 0);
}

/// A 429 pauses the whole budget until its retry time and lowers the rate once per
/// pause, however many in-flight requests report it; sustained success raises it back.
#[tokio::test]
async fn throttling_is_multiplicative_decrease_and_success_additive_increase() {
    let db = TestDb::new().await;
    let budget = RateBudget::open(db.pool().clone(), "aimd", &limit(10.0, "aimd"))
        .await
        .unwrap();
    let retry_at = Utc::now() + chrono::Duration::milliseconds(800);
    let until = budget.throttle(Some(retry_at)).await.unwrap();
    let close = |a: chrono::DateTime<Utc>| (a - retry_at).num_microseconds().unwrap().abs() <= 1;
    assert!(close(until), "{until} vs {retry_at}");
    let again = budget.throttle(None).await.unwrap();
    assert!(
        close(again),
        "an in-flight 429 during the pause does not extend it"
    );
    let state = budget.state().await.unwrap();
    assert_eq!(state.throttled, 2);
    // The budget paces a little under the configured 10 req/s, for headroom.
    assert!(
        state.ceiling < 10.0 && state.ceiling >= 9.0,
        "{}",
        state.ceiling
    );
    let ceiling = state.ceiling;
    assert!(
        (state.rate - ceiling * 0.9).abs() < 1e-9,
        "lowered once, by a tenth: {}",
        state.rate
    );

    match budget.acquire(0, false).await.unwrap() {
        Grant::At(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            assert!(
                wait > Duration::from_millis(500) && wait <= Duration::from_millis(900),
                "{wait:?}"
            )
        }
        other => panic!("a short pause is waited out: {other:?}"),
    }
    // Two seconds' worth of successes at the current rate earn one step back up.
    budget.acquire(40, false).await.unwrap();
    let state = budget.state().await.unwrap();
    assert!(
        (state.rate - ceiling * 0.95).abs() < 1e-9,
        "raised by 5% of the ceiling: {}",
        state.rate
    );
    for _ in 0..20 {
        budget.acquire(1_000, false).await.unwrap();
    }
    assert!(
        (budget.state().await.unwrap().rate - ceiling).abs() < 1e-9,
        "never above the ceiling"
    );
}

/// A wait longer than the caller's patience is handed back as a retry time (the engine
/// parks the run) and the token is returned.
#[tokio::test]
async fn a_long_pause_is_refused_with_its_end() {
    let db = TestDb::new().await;
    let vendor = sandbox(SandboxConfig::default()).await;
    let mut cfg = config(vendor.base_url());
    cfg.rate_limit = Some(RateLimitConfig {
        max_wait_secs: 1.0,
        ..limit(5.0, "paused")
    });
    let client = HttpClient::new(cfg, Some(db.pool().clone())).await.unwrap();
    let until = Utc::now() + chrono::Duration::seconds(30);
    client.budget().unwrap().hold_until(until).await.unwrap();
    let err = client
        .get("/crm/v3/objects/contacts", &[])
        .await
        .unwrap_err();
    assert_eq!(err.category(), cairn_connectors::error::Category::Throttled);
    let at = err.retry_time().unwrap();
    assert!(
        at >= until - chrono::Duration::milliseconds(5),
        "{at} vs {until}"
    );
    assert_eq!(
        vendor
            .vendor()
            .stats()
            .count("GET /crm/v3/objects/{stream}", "200"),
        0,
        "nothing was sent"
    );
}

/// Urgent requests go ahead: while they keep coming, the others are told to yield and
/// take no token; once they stop, the others take tokens again.
#[tokio::test]
async fn urgent_requests_hold_the_budget_while_they_keep_coming() {
    let db = TestDb::new().await;
    let budget = RateBudget::open(db.pool().clone(), "urgent", &limit(100.0, "urgent"))
        .await
        .unwrap();
    assert!(matches!(
        budget.acquire(0, false).await.unwrap(),
        Grant::At(_)
    ));
    assert!(matches!(
        budget.acquire(0, true).await.unwrap(),
        Grant::At(_)
    ));
    let granted = budget.state().await.unwrap().granted;
    let Grant::Yield(until) = budget.acquire(0, false).await.unwrap() else {
        panic!("a non-urgent caller yields to urgent traffic");
    };
    assert!(
        until > Utc::now() + chrono::Duration::milliseconds(1_500),
        "{until}"
    );
    assert_eq!(
        budget.state().await.unwrap().granted,
        granted,
        "a caller that yields takes no token"
    );
    assert!(
        matches!(budget.acquire(0, true).await.unwrap(), Grant::At(_)),
        "urgent callers go on"
    );
    sqlx::query("UPDATE cairn.rate_budgets SET priority_until = now() - interval '1 second' WHERE key = 'urgent'")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(
        matches!(budget.acquire(0, false).await.unwrap(), Grant::At(_)),
        "once urgent traffic stops, the others go"
    );
}

/// What the dashboard shows of a credential rides on the token requests: the vendor's
/// daily quota as `Sforce-Limit-Info` last said, and requests not yet answered.
#[tokio::test]
async fn the_daily_quota_and_requests_in_flight_are_on_record() {
    let db = TestDb::new().await;
    let vendor = sandbox(SandboxConfig {
        daily_quota: Some(1_000),
        ..SandboxConfig::default()
    })
    .await;
    let mut cfg = config(vendor.base_url());
    cfg.rate_limit = Some(limit(50.0, "sandbox-quota"));
    let client = HttpClient::new(cfg, Some(db.pool().clone())).await.unwrap();
    for _ in 0..3 {
        client
            .get(crate::CONTACTS_PATH, &crate::page())
            .await
            .unwrap();
    }
    let row = || async {
        sqlx::query_as::<_, (Option<i64>, Option<i64>, i32)>(
            "SELECT quota_used, quota_total, in_flight FROM cairn.rate_budgets WHERE key = $1",
        )
        .bind("sandbox-quota")
        .fetch_one(db.pool())
        .await
        .unwrap()
    };
    // The third request reported what the second saw: two used, one out.
    assert_eq!(row().await, (Some(2), Some(1_000), 1));
    client
        .get(crate::CONTACTS_PATH, &crate::page())
        .await
        .unwrap();
    assert_eq!(row().await, (Some(3), Some(1_000), 1));
}

/// A credential without a `[rate_limit]` is not paced, but its 429s are still counted,
/// so a sync can say how often the vendor pushed back.
#[tokio::test]
async fn the_429s_of_a_credential_without_a_limit_are_counted() {
    let db = TestDb::new().await;
    let vendor = sandbox(SandboxConfig {
        rate_limit: Some(RateLimit::new(1.0, 1)),
        ..SandboxConfig::default()
    })
    .await;
    let client = HttpClient::new(config(vendor.base_url()), Some(db.pool().clone()))
        .await
        .unwrap();
    let mut refused = 0;
    for _ in 0..4 {
        if client
            .get(crate::CONTACTS_PATH, &crate::page())
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    assert!(
        refused >= 2,
        "the vendor allows one request a second: {refused}"
    );
    let served = vendor.vendor().stats().rate_limited;
    assert_eq!(served, refused, "each refusal was a 429");
    let counted = cairn_connectors::budget::throttled_total(db.pool())
        .await
        .unwrap();
    assert_eq!(counted, served, "every 429 the vendor served is counted");
    let ceiling: f64 = sqlx::query_scalar("SELECT ceiling FROM cairn.rate_budgets")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(ceiling.is_infinite(), "a counting row paces nothing");
}
