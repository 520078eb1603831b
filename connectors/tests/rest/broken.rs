//! Vendors whose paging or bodies are broken: every one an error, never a
//! hang; and credentials that never reach a stored cursor or another host.

use std::time::Duration;

use cairn_connectors::error::{Category, HttpError};
use cairn_connectors::paginate::{PageCursor, Position};
use cairn_connectors::rest::RestSource;
use cairn_connectors::source::{Collected, Source, read_stream};
use cairn_sandbox::{
    AuthConfig, FaultConfig, FaultKind, OAuthConfig, SandboxConfig, Secret, Stream,
};
use serde_json::json;

use crate::common::{assert_exactly_once, inline, profile, sandbox_config, source, start};
use crate::fake::{Fake, Reply, param};

/// A source with one `items` stream at `base`, paged as `paginator` says.
async fn items_source(base: &str, paginator: &str, extra: &str) -> RestSource {
    inline(&format!(
        r#"
name = "fake"
base_url = "{base}"
{extra}
[streams.items]
path = "/items"
records_path = "results"
primary_key = "id"
total_path = "total"
[streams.items.paginator]
{paginator}
"#
    ))
    .await
}

const CURSOR: &str = "kind = \"cursor\"\nparam = \"after\"\nnext_path = \"next\"";

/// Reads `items` to the end, failing the test if that takes more than a few
/// seconds: a paginator bug must end in an error, not a loop.
async fn read(source: &RestSource) -> Result<Collected, HttpError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        read_stream(source, "items", PageCursor::start()),
    )
    .await
    .expect("the traversal ends")
}

fn page(ids: &[u32], next: Option<&str>) -> Reply {
    let results: Vec<_> = ids.iter().map(|id| json!({"id": id.to_string()})).collect();
    Reply::json(json!({"results": results, "next": next}).to_string())
}

#[tokio::test]
async fn a_cursor_repeated_at_once_is_a_pagination_error() {
    let fake = Fake::start(|target, _| match param(target, "after").as_deref() {
        None => page(&[1, 2], Some("a")),
        _ => page(&[3, 4], Some("a")),
    })
    .await;
    let error = read(&items_source(&fake.url, CURSOR, "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert!(error.to_string().contains("token \"a\" again"), "{error}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_cursor_cycle_is_a_pagination_error() {
    let fake = Fake::start(|target, _| match param(target, "after").as_deref() {
        None => page(&[1], Some("a")),
        Some("a") => page(&[2], Some("b")),
        _ => page(&[3], Some("a")),
    })
    .await;
    let error = read(&items_source(&fake.url, CURSOR, "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn an_empty_page_with_a_next_link_is_a_pagination_error() {
    let fake = Fake::start(|target, _| match param(target, "after").as_deref() {
        None => page(&[1, 2], Some("a")),
        _ => page(&[], Some("b")),
    })
    .await;
    let error = read(&items_source(&fake.url, CURSOR, "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert!(error.to_string().contains("empty"), "{error}");
    assert_eq!(fake.requests().len(), 2);

    let stripe = Fake::start(|_, _| {
        Reply::json(json!({"object": "list", "results": [], "has_more": true}).to_string())
    })
    .await;
    let error = read(&items_source(&stripe.url, "kind = \"stripe\"", "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert_eq!(stripe.requests().len(), 1);
}

#[tokio::test]
async fn a_count_short_of_the_vendor_total_is_a_pagination_error() {
    let fake = Fake::start(|target, _| {
        let offset: usize = param(target, "offset").map_or(0, |o| o.parse().unwrap());
        let ids: Vec<u32> = (1..=3).skip(offset).collect();
        let results: Vec<_> = ids.iter().map(|id| json!({"id": id.to_string()})).collect();
        Reply::json(json!({"total": 5, "results": results}).to_string())
    })
    .await;
    let error = read(&items_source(&fake.url, "kind = \"offset\"", "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert!(error.to_string().contains("total of 5"), "{error}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn malformed_bodies_are_malformed_body_errors() {
    let truncated = Fake::start(|_, _| Reply::json("{\"results\": [{\"id\": \"1\"")).await;
    let error = read(&items_source(&truncated.url, CURSOR, "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::MalformedBody, "{error}");

    let not_an_array = Fake::start(|_, _| Reply::json(r#"{"results": {"id": "1"}}"#)).await;
    let error = read(&items_source(&not_an_array.url, CURSOR, "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::MalformedBody, "{error}");
    assert!(
        error.to_string().contains("`results` is an object"),
        "{error}"
    );

    let bad_token =
        Fake::start(|_, _| Reply::json(r#"{"results": [{"id": "1"}], "next": {"a": 1}}"#)).await;
    let error = read(&items_source(&bad_token.url, CURSOR, "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::MalformedBody, "{error}");

    let (config, _) = sandbox_config();
    let sandbox = start(SandboxConfig {
        faults: FaultConfig {
            rate: 1.0,
            kinds: vec![FaultKind::Malformed],
            ..FaultConfig::default()
        },
        ..config
    })
    .await;
    for name in [
        "sandbox-hubspot",
        "sandbox-salesforce",
        "sandbox-stripe",
        "sandbox-rest",
    ] {
        let source = source(profile(name, sandbox.base_url())).await;
        let error = source
            .fetch_page("contacts", &PageCursor::start())
            .await
            .unwrap_err();
        assert_eq!(error.category(), Category::MalformedBody, "{name}: {error}");
    }
    sandbox.shutdown().await;
}

/// A next link on another host would carry our credentials there.
#[tokio::test]
async fn a_next_link_to_another_origin_is_refused() {
    let elsewhere = Fake::start(|_, _| page(&[9], None)).await;
    let target = format!("{}/items?page=2", elsewhere.url);
    let fake = Fake::start(move |_, _| {
        page(&[1], None).header("Link", &format!("<{target}>; rel=\"next\""))
    })
    .await;
    let error = read(&items_source(&fake.url, "kind = \"link_header\"", "").await)
        .await
        .unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert!(error.to_string().contains("another origin"), "{error}");
    assert!(elsewhere.requests().is_empty());
}

/// An API key in the query string is sent on every request, never stored in
/// a cursor, even when the vendor echoes it (and a signature) in its links.
#[tokio::test]
async fn credentials_in_next_links_never_reach_the_cursor() {
    let fake = Fake::start(|target, base| match param(target, "page").as_deref() {
        None => page(&[1], None).header(
            "Link",
            &format!("<{base}/items?page=2&api_key=k3y&sig=abc>; rel=\"next\""),
        ),
        _ => page(&[2], None),
    })
    .await;
    let key_file = std::env::temp_dir().join(format!("cairn-rest-key-{}", std::process::id()));
    std::fs::write(&key_file, "k3y\n").unwrap();
    let auth = format!(
        "[auth]\nkind = \"api_key\"\nname = \"api_key\"\nlocation = \"query\"\nvalue = {{ file = {:?} }}",
        key_file.display().to_string()
    );
    let source = items_source(&fake.url, "kind = \"link_header\"", &auth).await;
    let first = source
        .fetch_page("items", &PageCursor::start())
        .await
        .unwrap();
    let next = first.next.clone().expect("a second page");
    assert_eq!(
        next.position,
        Position::Url(format!("{}/items?page=2", fake.url))
    );
    let stored = serde_json::to_string(&next).unwrap();
    assert!(
        !stored.contains("k3y") && !stored.contains("sig"),
        "{stored}"
    );
    let all = read(&source).await.unwrap();
    assert_eq!(all.records.len(), 2);
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .all(|r| param(r, "api_key").as_deref() == Some("k3y")),
        "{requests:?}"
    );
    std::fs::remove_file(key_file).unwrap();
}

/// The sandbox's OAuth tokens expire on its clock; a traversal that crosses
/// the expiry gets a 401, refreshes once and carries on.
#[tokio::test]
async fn a_token_expiring_mid_stream_is_refreshed_and_the_traversal_completes() {
    let (config, clock) = sandbox_config();
    let sandbox = start(SandboxConfig {
        auth: AuthConfig::OAuth(OAuthConfig {
            client_id: "cairn".to_owned(),
            client_secret: Secret::new("s3cret"),
            token_ttl: Duration::from_secs(300),
        }),
        ..config
    })
    .await;
    let dir = std::env::temp_dir().join(format!("cairn-rest-oauth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("id"), "cairn").unwrap();
    std::fs::write(dir.join("secret"), "s3cret").unwrap();
    let text = std::fs::read_to_string(crate::common::profile_path("sandbox-hubspot"))
        .unwrap()
        .replace(
            "[auth]\nkind = \"none\"\n",
            &format!(
                "[auth]\nkind = \"oauth2\"\ntoken_url = \"/oauth/token\"\nclient_id = {{ file = {:?} }}\nclient_secret = {{ file = {:?} }}\n",
                dir.join("id").display().to_string(),
                dir.join("secret").display().to_string()
            ),
        );
    let config = cairn_connectors::rest::RestConfig::parse(&text, "oauth.toml")
        .unwrap()
        .with_base_url(sandbox.base_url())
        .unwrap();
    let source = source(config).await;
    let first = source
        .fetch_page("contacts", &PageCursor::start())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(600));
    let mut records = first.records;
    let mut cursor = first.next;
    while let Some(at) = cursor {
        let page = source.fetch_page("contacts", &at).await.unwrap();
        records.extend(page.records);
        cursor = page.next;
    }
    assert_exactly_once(
        &records,
        &sandbox.vendor().records(Stream::Contacts),
        "oauth",
    );
    let stats = sandbox.vendor().stats();
    assert_eq!(stats.tokens_issued, 2, "one token, then one refresh");
    assert_eq!(stats.count("GET /crm/v3/objects/{stream}", "401"), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Cursors come from checkpoints: one that does not fit the listing is
/// refused before any request, whatever it holds.
#[tokio::test]
async fn a_stored_cursor_that_does_not_fit_is_refused_without_a_request() {
    let fake = Fake::start(|_, _| page(&[1], None)).await;
    let linked = items_source(&fake.url, "kind = \"link_header\"", "").await;
    let elsewhere = PageCursor::start().at(Position::Url("http://evil.example/items".to_owned()));
    let error = linked.fetch_page("items", &elsewhere).await.unwrap_err();
    assert_eq!(error.category(), Category::Pagination, "{error}");
    assert!(error.to_string().contains("another origin"), "{error}");
    let source = items_source(&fake.url, CURSOR, "").await;
    let offset = PageCursor::start().at(Position::Offset(50));
    let error = source.fetch_page("items", &offset).await.unwrap_err();
    assert_eq!(error.category(), Category::Config, "{error}");
    assert!(fake.requests().is_empty());
}

/// Configured headers go out with every request.
#[tokio::test]
async fn extra_headers_are_sent() {
    let fake = Fake::start(|target, _| match param(target, "after").as_deref() {
        None => page(&[1], Some("a")),
        _ => page(&[2], None),
    })
    .await;
    let headers = "[headers]\n\"X-Tenant\" = \"acme\"\n";
    let source = items_source(&fake.url, CURSOR, headers).await;
    assert_eq!(read(&source).await.unwrap().records.len(), 2);
    let heads = fake.heads();
    assert_eq!(heads.len(), 2);
    assert!(
        heads
            .iter()
            .all(|head| head.to_ascii_lowercase().contains("x-tenant: acme")),
        "{heads:?}"
    );
}

/// Offsets shift when records are deleted mid-traversal: the vendor's total
/// moves, and the traversal stops instead of silently skipping records.
#[tokio::test]
async fn records_deleted_during_an_offset_traversal_stop_it() {
    let sandbox = start(sandbox_config().0).await;
    let source = source(profile("sandbox-rest", sandbox.base_url())).await;
    let mut traversal = cairn_connectors::paginate::Traversal::new(PageCursor::start());
    let first = source
        .fetch_page("contacts", traversal.cursor().unwrap())
        .await
        .unwrap();
    traversal.advance(&first).unwrap();
    sandbox
        .vendor()
        .mutate(
            Stream::Contacts,
            cairn_sandbox::Mutation::Delete { count: 3 },
        )
        .unwrap();
    let second = source
        .fetch_page("contacts", traversal.cursor().unwrap())
        .await
        .unwrap();
    let error = traversal.advance(&second).unwrap_err();
    assert!(
        matches!(
            error,
            cairn_connectors::paginate::PaginationError::TotalChanged {
                before: 137,
                after: 134
            }
        ),
        "{error}"
    );
    sandbox.shutdown().await;
}
