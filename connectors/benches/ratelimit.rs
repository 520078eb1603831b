//! How much of a vendor's rate limit the shared budget uses, and how many 429s it
//! provokes: one client, then two clients on one credential.
//!
//! `DATABASE_URL=postgres://... cargo bench -p cairn-connectors --bench ratelimit`

use std::time::{Duration, Instant};

use cairn_connectors::budget::RateLimitConfig;
use cairn_connectors::http::{HttpClient, HttpConfig};
use cairn_sandbox::{RateLimit, Sandbox, SandboxConfig};
use sqlx::postgres::PgPoolOptions;

const RATE: f64 = 20.0;
const SECONDS: f64 = 10.0;

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("set DATABASE_URL to a PostgreSQL the budget can live in");
        std::process::exit(2);
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .expect("connect");
    cairn_runner::migrate_with(&pool, &[&cairn_connectors::MIGRATIONS])
        .await
        .expect("migrate");
    println!("vendor limit {RATE} req/s (burst 1), {SECONDS} s per scenario");
    for clients in [1, 2] {
        let sandbox = Sandbox::start(
            SandboxConfig {
                rate_limit: Some(RateLimit::new(RATE, 1)),
                ..SandboxConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("sandbox");
        let key = format!("bench-{}-{clients}", std::process::id());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let config = HttpConfig {
                rate_limit: Some(RateLimitConfig {
                    requests_per_second: RATE,
                    burst: 1.0,
                    key: Some(key.clone()),
                    max_wait_secs: 10.0,
                }),
                ..HttpConfig::new(sandbox.base_url())
            };
            let client = HttpClient::new(config, Some(pool.clone()))
                .await
                .expect("client");
            tasks.push(tokio::spawn(async move {
                let mut failed = 0u64;
                while started.elapsed() < Duration::from_secs_f64(SECONDS) {
                    let page = [("limit".to_owned(), "10".to_owned())];
                    if client.get("/v1/contacts", &page).await.is_err() {
                        failed += 1;
                    }
                }
                failed
            }));
        }
        let mut failed = 0;
        for task in tasks {
            failed += task.await.expect("client task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let stats = sandbox.vendor().stats();
        let ok = stats.count("GET /v1/{stream}", "200");
        let throttled = stats.rate_limited;
        let achieved = ok as f64 / elapsed;
        println!(
            "{clients} client(s): {achieved:.1} req/s = {:.1}% of the limit; {throttled} of {} requests answered 429 ({:.2}%); {failed} failed",
            100.0 * achieved / RATE,
            ok + throttled,
            100.0 * throttled as f64 / (ok + throttled).max(1) as f64
        );
        sandbox.shutdown().await;
    }
}
