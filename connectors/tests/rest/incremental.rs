//! Reading only what changed: the inclusive `since`, the watermark, and the
//! records that share it.

use std::time::Duration;

use cairn_connectors::error::Category;
use cairn_connectors::paginate::PageCursor;
use cairn_connectors::source::{Source, read_stream};
use cairn_sandbox::{Mutation, Stream};
use serde_json::Value;

use crate::common::{PROFILES, assert_exactly_once, inline, profile, sandbox_config, start};

fn updated(record: &Value) -> &str {
    record["updated_at"].as_str().expect("updated_at")
}

/// Records at or after `since` (the sandbox writes whole-second UTC
/// timestamps, so text order is time order).
fn since(records: &[Value], since: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| updated(r) >= since)
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_profile_reads_what_changed_since_a_watermark_inclusively() {
    let sandbox = start(sandbox_config().0).await;
    for name in PROFILES {
        let source = crate::common::source(profile(name, sandbox.base_url())).await;
        for stream in Stream::ALL {
            let what = format!("{name}/{stream}");
            let all = sandbox.vendor().records(stream);
            let mut stamps: Vec<&str> = all.iter().map(updated).collect();
            stamps.sort_unstable();
            let watermark = stamps[stamps.len() * 7 / 10].to_owned();
            let expected = since(&all, &watermark);
            assert!(expected.len() > 30 && expected.len() < 60, "{what}");
            let read = read_stream(&source, stream.name(), PageCursor::since(&watermark))
                .await
                .unwrap_or_else(|error| panic!("{what}: {error}"));
            assert_exactly_once(&read.records, &expected, &what);
            assert!(
                read.records.iter().any(|r| updated(r.value()) == watermark),
                "{what}: the record at the watermark itself is read again"
            );
            assert_eq!(read.watermark.as_deref(), stamps.last().copied(), "{what}");
        }
    }
    sandbox.shutdown().await;
}

/// Records updated in the same second as the watermark are neither skipped
/// nor read forever: each incremental run reads them once more, and stops.
#[tokio::test]
async fn records_sharing_the_watermark_are_read_again_once_per_run() {
    let (config, clock) = sandbox_config();
    let sandbox = start(config).await;
    for name in PROFILES {
        let source = crate::common::source(profile(name, sandbox.base_url())).await;
        let first = read_stream(&source, "deals", PageCursor::start())
            .await
            .unwrap();
        let watermark = first.watermark.expect("a watermark");

        clock.advance(Duration::from_secs(3600));
        let changed = sandbox
            .vendor()
            .mutate(Stream::Deals, Mutation::Update { count: 4 })
            .expect("updates");
        let all = sandbox.vendor().records(Stream::Deals);
        let second = read_stream(&source, "deals", PageCursor::since(&watermark))
            .await
            .unwrap();
        assert_exactly_once(&second.records, &since(&all, &watermark), name);
        let boundary = second.watermark.expect("a newer watermark");
        assert!(boundary > watermark, "{name}: the watermark moves forward");
        let at_boundary = since(&all, &boundary);
        assert!(at_boundary.len() >= 4, "{name}: {changed:?}");

        let third = read_stream(&source, "deals", PageCursor::since(&boundary))
            .await
            .unwrap();
        assert_exactly_once(&third.records, &at_boundary, name);
        assert_eq!(third.watermark, Some(boundary), "{name}: nothing newer");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn since_needs_an_incremental_stream_and_ids_are_always_complete() {
    let sandbox = start(sandbox_config().0).await;
    let source = inline(&format!(
        r#"
name = "plain"
base_url = "{}"
[streams.contacts]
path = "/api/v1/contacts"
records_path = "items"
primary_key = "id"
[streams.contacts.paginator]
kind = "offset"
"#,
        sandbox.base_url()
    ))
    .await;
    let error = source
        .fetch_page("contacts", &PageCursor::since("2026-01-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Config);
    assert!(error.to_string().contains("incremental"), "{error}");
    let error = source
        .list_ids("contacts", &PageCursor::since("2026-01-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Config);
    sandbox.shutdown().await;
}
