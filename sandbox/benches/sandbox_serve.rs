//! How many records per second the sandbox serves as HubSpot-style pages,
//! with limits and faults off, so benchmarks of cairn know the mock is not
//! their bottleneck.
//!
//! `cargo bench -p cairn-connectors --bench sandbox_serve` starts a sandbox on
//! 127.0.0.1, pages through `contacts` with a few concurrent clients for a
//! fixed time, and prints records/s.

use std::error::Error;
use std::time::{Duration, Instant};

use cairn_sandbox::{Sandbox, SandboxConfig};
use serde::Deserialize;
use serde::de::IgnoredAny;

const RECORDS: usize = 20_000;
const PAGE: usize = 100;
const CLIENTS: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Page {
    results: Vec<IgnoredAny>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Next,
}

#[derive(Deserialize)]
struct Next {
    after: String,
}

/// Pages through `contacts` again and again until `deadline`; returns the
/// records and pages received.
async fn client(base: String, deadline: Instant) -> Result<(usize, usize), reqwest::Error> {
    cairn_connectors::http::install_tls_provider();
    let http = reqwest::Client::new();
    let (mut records, mut pages) = (0, 0);
    let mut after: Option<String> = None;
    while Instant::now() < deadline {
        let mut url = format!("{base}/crm/v3/objects/contacts?limit={PAGE}");
        if let Some(after) = &after {
            url.push_str("&after=");
            url.push_str(after);
        }
        let page: Page = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        records += page.results.len();
        pages += 1;
        after = page.paging.map(|paging| paging.next.after);
    }
    Ok((records, pages))
}

async fn run() -> Result<(), Box<dyn Error>> {
    let config = SandboxConfig {
        records_per_stream: RECORDS,
        max_page_size: PAGE,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse()?).await?;
    let started = Instant::now();
    let deadline = started + RUN_FOR;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(sandbox.base_url().to_owned(), deadline)))
        .collect();
    let (mut records, mut pages) = (0, 0);
    for task in tasks {
        let (r, p) = task.await??;
        records += r;
        pages += p;
    }
    let secs = started.elapsed().as_secs_f64();
    sandbox.shutdown().await;
    println!(
        "sandbox_serve: {records} records in {pages} pages of {PAGE} over {secs:.2}s with {CLIENTS} clients: {:.0} records/s ({:.0} pages/s)",
        records as f64 / secs,
        pages as f64 / secs
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
