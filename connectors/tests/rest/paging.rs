//! Every paginator kind, end to end through the ready profiles: every record
//! exactly once, the vendor's checksum, and every id.

use cairn_connectors::paginate::{PageCursor, Position, Traversal};
use cairn_connectors::source::{Source, read_ids, read_stream};
use cairn_sandbox::Stream;

use crate::common::{
    PROFILES, assert_exactly_once, id_of, profile, sandbox_config, source, start, values,
    vendor_checksum,
};

#[tokio::test]
async fn every_profile_reads_every_stream_exactly_once() {
    let sandbox = start(sandbox_config().0).await;
    for name in PROFILES {
        let source = source(profile(name, sandbox.base_url())).await;
        for stream in Stream::ALL {
            let what = format!("{name}/{stream}");
            let expected = sandbox.vendor().records(stream);
            let read = read_stream(&source, stream.name(), PageCursor::start())
                .await
                .unwrap_or_else(|error| panic!("{what}: {error}"));
            assert_exactly_once(&read.records, &expected, &what);
            assert_eq!(
                cairn_sandbox::checksum_records(&values(&read.records)).unwrap(),
                vendor_checksum(&sandbox, stream),
                "{what}"
            );
            assert_eq!(read.pages, 6, "{what}: 137 records in pages of 25");
            let newest = expected
                .iter()
                .map(|r| r["updated_at"].as_str().unwrap().to_owned())
                .max();
            assert_eq!(read.watermark, newest, "{what}: the watermark");
        }
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn every_profile_lists_every_id() {
    let sandbox = start(sandbox_config().0).await;
    for name in PROFILES {
        let source = source(profile(name, sandbox.base_url())).await;
        for stream in Stream::ALL {
            let mut ids = read_ids(&source, stream.name())
                .await
                .unwrap_or_else(|error| panic!("{name}/{stream}: {error}"));
            ids.sort();
            let mut expected: Vec<String> =
                sandbox.vendor().records(stream).iter().map(id_of).collect();
            expected.sort();
            assert_eq!(ids, expected, "{name}/{stream}");
        }
    }
    sandbox.shutdown().await;
}

/// What the sync workflows do: one page at a time, the cursor stored between
/// pages as JSON, resumed by another traversal from the stored state.
#[tokio::test]
async fn a_traversal_resumes_from_stored_cursors_and_checkpoints() {
    let sandbox = start(sandbox_config().0).await;
    for name in PROFILES {
        let source = source(profile(name, sandbox.base_url())).await;
        let mut traversal = Traversal::new(PageCursor::start());
        let mut records = Vec::new();
        let mut kinds = Vec::new();
        while let Some(cursor) = traversal.cursor().cloned() {
            let stored = serde_json::to_string(&cursor).unwrap();
            let cursor: PageCursor = serde_json::from_str(&stored).unwrap();
            kinds.push(std::mem::discriminant(&cursor.position));
            let page = source.fetch_page("contacts", &cursor).await.unwrap();
            traversal.advance(&page).unwrap();
            let checkpoint = serde_json::to_string(&traversal).unwrap();
            traversal = serde_json::from_str(&checkpoint).unwrap();
            records.extend(page.records);
        }
        assert_exactly_once(&records, &sandbox.vendor().records(Stream::Contacts), name);
        assert_eq!(kinds[0], std::mem::discriminant(&Position::Start));
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn streams_describe_themselves() {
    let sandbox = start(sandbox_config().0).await;
    let source = source(profile("sandbox-stripe", sandbox.base_url())).await;
    let streams = source.streams();
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["companies", "contacts", "deals"]);
    assert!(streams.iter().all(|s| s.primary_key == "id"
        && s.cursor_field.as_deref() == Some("updated_at")
        && s.incremental));
    let unknown = source
        .fetch_page("invoices", &PageCursor::start())
        .await
        .unwrap_err();
    assert_eq!(
        unknown.category(),
        cairn_connectors::error::Category::Config
    );
    assert!(unknown.to_string().contains("invoices"), "{unknown}");
    sandbox.shutdown().await;
}

/// `kind = "none"`: one request, whatever the body says about more.
#[tokio::test]
async fn a_single_page_listing_is_read_in_one_request() {
    let fake = crate::fake::Fake::start(|_, _| {
        crate::fake::Reply::json(
            r#"{"data": {"rows": [{"id": "1"}, {"id": "2"}]}, "next": "ignored"}"#,
        )
    })
    .await;
    let source = crate::common::inline(&format!(
        r#"
name = "single"
base_url = "{}"
[streams.rows]
path = "/rows"
records_path = "data.rows"
primary_key = "id"
[streams.rows.paginator]
kind = "none"
"#,
        fake.url
    ))
    .await;
    let read = read_stream(&source, "rows", PageCursor::start())
        .await
        .unwrap();
    assert_eq!(
        values(&read.records).iter().map(id_of).collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!((read.pages, read.watermark), (1, None));
    assert_eq!(read_ids(&source, "rows").await.unwrap(), ["1", "2"]);
    assert_eq!(fake.requests().len(), 2);
}
