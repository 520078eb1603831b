//! Starting sandboxes and traversing them the way each paginator would.

use std::collections::BTreeSet;

use cairn_sandbox::{ManualClock, Sandbox, SandboxConfig, SandboxHandle, Stream};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// The instant test data ends at, and manual clocks start at.
pub fn as_of() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

/// A small, repeatable vendor: 137 records per stream, pages of at most 25,
/// a manual clock standing at [`as_of`].
pub fn config() -> (SandboxConfig, ManualClock) {
    let clock = ManualClock::new(as_of());
    let config = SandboxConfig {
        records_per_stream: 137,
        max_page_size: 25,
        as_of: Some(as_of()),
        clock: clock.clone().into(),
        ..SandboxConfig::default()
    };
    (config, clock)
}

pub async fn start(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the sandbox starts")
}

pub fn http() -> reqwest::Client {
    cairn_connectors::http::install_tls_provider();
    reqwest::Client::new()
}

pub async fn get_json(url: &str) -> Value {
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.unwrap()
}

fn id_of(record: &Value) -> String {
    record["id"].as_str().expect("string id").to_owned()
}

/// Asserts `seen` holds every record of `expected` exactly once, unchanged.
pub fn assert_exactly_once(seen: &[Value], expected: &[Value]) {
    let ids: Vec<String> = seen.iter().map(id_of).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a record was served twice");
    let mut seen = seen.to_vec();
    let mut expected = expected.to_vec();
    seen.sort_by_key(id_of);
    expected.sort_by_key(id_of);
    assert_eq!(seen.len(), expected.len(), "record counts differ");
    assert!(
        seen == expected,
        "the records served differ from the vendor's"
    );
}

/// The paginators a sync might use.
#[derive(Clone, Copy, Debug)]
pub enum Style {
    HubSpot,
    Salesforce,
    Stripe,
    Offset,
    Link,
}

pub const STYLES: [Style; 5] = [
    Style::HubSpot,
    Style::Salesforce,
    Style::Stripe,
    Style::Offset,
    Style::Link,
];

/// Reads every page of `stream` in `style`; returns the records and how many
/// pages it took.
pub async fn traverse(base: &str, style: Style, stream: Stream) -> (Vec<Value>, usize) {
    let client = http();
    let mut records = Vec::new();
    let mut pages = 0;
    match style {
        Style::HubSpot => {
            let mut after: Option<String> = None;
            loop {
                let mut url = format!("{base}/crm/v3/objects/{stream}?limit=25");
                if let Some(after) = &after {
                    url += &format!("&after={after}");
                }
                let page = get_json(&url).await;
                pages += 1;
                records.extend(page["results"].as_array().unwrap().iter().cloned());
                match page["paging"]["next"]["after"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
        }
        Style::Salesforce => {
            let mut url =
                format!("{base}/services/data/v59.0/query?q=SELECT+Id,Name+FROM+{stream}");
            loop {
                let page = get_json(&url).await;
                pages += 1;
                records.extend(page["records"].as_array().unwrap().iter().cloned());
                if page["done"] == json!(true) {
                    break;
                }
                url = format!("{base}{}", page["nextRecordsUrl"].as_str().unwrap());
            }
        }
        Style::Stripe => {
            let mut after: Option<String> = None;
            loop {
                let mut url = format!("{base}/v1/{stream}?limit=25");
                if let Some(after) = &after {
                    url += &format!("&starting_after={after}");
                }
                let page = get_json(&url).await;
                pages += 1;
                let data = page["data"].as_array().unwrap();
                records.extend(data.iter().cloned());
                if page["has_more"] != json!(true) {
                    break;
                }
                after = Some(id_of(data.last().unwrap()));
            }
        }
        Style::Offset => {
            let mut offset = 0;
            loop {
                let url = format!("{base}/api/v1/{stream}?offset={offset}&limit=25");
                let page = get_json(&url).await;
                pages += 1;
                let items = page["items"].as_array().unwrap();
                records.extend(items.iter().cloned());
                offset += items.len();
                if items.is_empty() || offset >= page["total"].as_u64().unwrap() as usize {
                    break;
                }
            }
        }
        Style::Link => {
            let mut url = format!("{base}/rest/{stream}?limit=25");
            loop {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let next = response
                    .headers()
                    .get("link")
                    .map(|link| link.to_str().unwrap().to_owned());
                let page: Vec<Value> = response.json().await.unwrap();
                pages += 1;
                records.extend(page);
                match next {
                    Some(link) => {
                        assert!(link.ends_with("; rel=\"next\""), "{link}");
                        url = link[1..link.find('>').unwrap()].to_owned();
                    }
                    None => break,
                }
            }
        }
    }
    (records, pages)
}

/// Every id from the ids-only listing.
pub async fn all_ids(base: &str, stream: Stream) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/ids/{stream}?limit=40");
        if let Some(after) = &after {
            url += &format!("&after={after}");
        }
        let page = get_json(&url).await;
        ids.extend(
            page["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_owned()),
        );
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    ids
}
