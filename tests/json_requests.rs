//! Listings asked for with a JSON body: a search endpoint (`POST` with filters) and
//! GraphQL (a query with variables, paged by `pageInfo`) feed sync streams like any
//! `GET` listing: backfill, then incremental reads that ask the vendor only for what
//! changed, and the warehouse equals the vendor after each. A GraphQL answer that
//! carries `errors` beside its data (a partial page, status 200) is never landed as a
//! whole one.

mod support;

use std::sync::atomic::Ordering;

use cairn::Client;
use cairn::sandbox::{Hostile, Mutation, SandboxConfig, SandboxHandle, Stream};
use cairn::workflows::sync;
use cairn_testkit::{TestDb, run_to_completion};
use support::vendor::{GRAPHQL, HUBSPOT_SEARCH, input, landed, start};
use support::{builtin, builtin_worker};

/// Backfills then syncs incrementally `profile`'s contacts from `sandbox` (500 records in
/// pages of at most 100), comparing the warehouse with the vendor after each, and
/// returns how many requests the incremental run made to `route`.
async fn backfill_then_incremental(
    profile: &str,
    source: &str,
    schema: &str,
    sandbox: &SandboxHandle,
    route: &str,
) -> u64 {
    let db = TestDb::new().await;
    let vendor = sandbox.vendor();
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let contacts = input(profile, sandbox, Stream::Contacts);
    let done = run_to_completion(&client, sync::BACKFILL, &contacts).await;
    assert_eq!(done.output.as_ref().unwrap()["records"], 500, "{source}");
    assert_eq!(
        landed(&db, source, schema, Stream::Contacts).await,
        vendor.checksum(Stream::Contacts),
        "{source}: the backfill landed the vendor's records"
    );
    vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 7 })
        .unwrap();
    vendor
        .mutate(Stream::Contacts, Mutation::Create { count: 3 })
        .unwrap();
    let before = vendor.requests(route, "200");
    let done = run_to_completion(&client, sync::INCREMENTAL, &contacts).await;
    let asked = vendor.requests(route, "200") - before;
    worker.shutdown().await;
    let read = done.output.as_ref().unwrap()["records"].as_u64().unwrap();
    assert!(
        (10..100).contains(&read),
        "{source}: the incremental run read what changed (and the records at the \
         watermark), not all 503: {read}"
    );
    assert_eq!(
        landed(&db, source, schema, Stream::Contacts).await,
        vendor.checksum(Stream::Contacts),
        "{source}: the incremental run brought the changes"
    );
    asked
}

fn config() -> SandboxConfig {
    SandboxConfig {
        records_per_stream: 500,
        max_page_size: 100,
        ..SandboxConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_search_endpoint_feeds_a_stream_and_filters_incremental_reads() {
    let sandbox = start(config()).await;
    let asked = backfill_then_incremental(
        HUBSPOT_SEARCH,
        "sandbox-hubspot-search",
        "sandbox_hubspot_search",
        &sandbox,
        "POST /crm/v3/objects/{stream}/search",
    )
    .await;
    assert_eq!(asked, 1, "the changes fit one filtered page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_pages_by_page_info_and_a_partial_answer_is_fetched_again() {
    let sandbox = start(config()).await;
    let partial = Hostile::default().partial_graphql;
    partial.store(2, Ordering::SeqCst);
    sandbox.vendor().set_hostile(Hostile {
        partial_graphql: partial.clone(),
        ..Hostile::default()
    });
    let asked = backfill_then_incremental(
        GRAPHQL,
        "sandbox-graphql",
        "sandbox_graphql",
        &sandbox,
        "POST /graphql",
    )
    .await;
    assert_eq!(
        partial.load(Ordering::SeqCst),
        0,
        "the vendor served its two partial answers"
    );
    assert_eq!(asked, 1, "the changes fit one filtered page");
}
