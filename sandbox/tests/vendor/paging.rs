//! Each paginator's full traversal yields every record exactly once.

use cairn_sandbox::{Mutation, Stream, checksum_records};
use serde_json::{Value, json};

use crate::common::{
    STYLES, Style, all_ids, assert_exactly_once, config, get_json, http, start, traverse,
};

#[tokio::test]
async fn every_paginator_yields_every_record_exactly_once() {
    let sandbox = start(config().0).await;
    for stream in Stream::ALL {
        let expected = sandbox.vendor().records(stream);
        assert_eq!(expected.len(), 137);
        for style in STYLES {
            let (seen, pages) = traverse(sandbox.base_url(), style, stream).await;
            assert_exactly_once(&seen, &expected);
            assert_eq!(
                pages, 6,
                "{style:?} over {stream}: 137 records in pages of 25"
            );
        }
        let ids = all_ids(sandbox.base_url(), stream).await;
        let expected_ids: Vec<String> = expected
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, expected_ids);
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn stripe_lists_newest_first_and_hubspot_in_id_order() {
    let sandbox = start(config().0).await;
    let ids = |records: &[Value]| -> Vec<u64> {
        records
            .iter()
            .map(|r| r["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (stripe, _) = traverse(sandbox.base_url(), Style::Stripe, Stream::Deals).await;
    let descending = ids(&stripe);
    assert!(descending.windows(2).all(|w| w[0] > w[1]));
    let (hubspot, _) = traverse(sandbox.base_url(), Style::HubSpot, Stream::Deals).await;
    let ascending = ids(&hubspot);
    assert!(ascending.windows(2).all(|w| w[0] < w[1]));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn records_have_nested_objects_arrays_and_nulls() {
    let sandbox = start(config().0).await;
    let contacts = sandbox.vendor().records(Stream::Contacts);
    assert!(contacts.iter().all(|c| c["address"].is_object()));
    assert!(contacts.iter().all(|c| c["tags"].is_array()));
    assert!(contacts.iter().any(|c| c["phone"].is_null()));
    assert!(contacts.iter().any(|c| c["phone"].is_string()));
    let deals = sandbox.vendor().records(Stream::Deals);
    assert!(
        deals
            .iter()
            .all(|d| d["line_items"].as_array().is_some_and(|l| !l.is_empty()))
    );
    for record in contacts.iter().chain(&deals) {
        let created = record["created_at"].as_str().unwrap();
        let updated = record["updated_at"].as_str().unwrap();
        assert!(created <= updated, "{record}");
        assert!(updated < "2026-06-01T12:00:00Z" && created >= "2025-06-01T12:00:00Z");
    }
    sandbox.shutdown().await;
}

fn updated_after(records: &[Value], since: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["updated_at"].as_str().unwrap() > since)
        .cloned()
        .collect()
}

#[tokio::test]
async fn incremental_filters_return_exactly_the_changed_records() {
    let sandbox = start(config().0).await;
    let base = sandbox.base_url();
    let since = "2026-03-01T00:00:00Z";
    let expected = updated_after(&sandbox.vendor().records(Stream::Contacts), since);
    assert!(!expected.is_empty() && expected.len() < 137);

    // HubSpot search, GT on updatedAt in epoch milliseconds.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "updatedAt", "operator": "GT", "value": "1772323200000"}
            ]}],
            "limit": 10,
            "after": after,
        });
        let response = http()
            .post(format!("{base}/crm/v3/objects/contacts/search"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["total"], json!(expected.len()));
        seen.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["paging"]["next"]["after"].as_str() {
            Some(next) => after = json!(next),
            None => break,
        }
    }
    assert_exactly_once(&seen, &expected);

    // Salesforce SOQL with a LastModifiedDate cursor.
    let mut seen = Vec::new();
    let mut url = format!(
        "{base}/services/data/v59.0/query?q=SELECT+Id+FROM+contacts+WHERE+LastModifiedDate+%3E+{since}"
    );
    loop {
        let page = get_json(&url).await;
        assert_eq!(page["totalSize"], json!(expected.len()));
        seen.extend(page["records"].as_array().unwrap().iter().cloned());
        if page["done"] == json!(true) {
            break;
        }
        url = format!("{base}{}", page["nextRecordsUrl"].as_str().unwrap());
    }
    assert_exactly_once(&seen, &expected);

    // Stripe's created[gte] (Unix seconds) on the creation side.
    let page = get_json(&format!(
        "{base}/v1/contacts?limit=25&created%5Bgte%5D=1772323200"
    ))
    .await;
    let created: Vec<&Value> = page["data"].as_array().unwrap().iter().collect();
    assert!(!created.is_empty());
    assert!(
        created
            .iter()
            .all(|r| r["created_at"].as_str().unwrap() >= since)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn soql_limit_and_batch_size_are_honoured() {
    let sandbox = start(config().0).await;
    let base = sandbox.base_url();
    let client = http();
    let mut url = format!("{base}/services/data/v59.0/query?q=SELECT+Id+FROM+deals+LIMIT+30");
    let mut batches = Vec::new();
    loop {
        let page: Value = client
            .get(&url)
            .header("Sforce-Query-Options", "batchSize=7")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["totalSize"], json!(30));
        batches.push(page["records"].as_array().unwrap().len());
        if page["done"] == json!(true) {
            break;
        }
        url = format!("{base}{}", page["nextRecordsUrl"].as_str().unwrap());
    }
    assert_eq!(batches, [7, 7, 7, 7, 2]);
    let bad = client
        .get(format!(
            "{base}/services/data/v59.0/query?q=SELECT+FROM+deals"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn changes_behind_the_cursor_are_missed_by_the_traversal_and_caught_after() {
    for style in STYLES {
        let sandbox = start(config().0).await;
        let vendor = sandbox.vendor();
        let before = vendor.records(Stream::Companies);
        vendor
            .mutate(
                Stream::Companies,
                Mutation::UpdateWhilePaging {
                    count: 3,
                    after_pages: 2,
                },
            )
            .unwrap();
        let (seen, _) = traverse(sandbox.base_url(), style, Stream::Companies).await;
        // Every record once, as it was: the changed ones were already behind
        // the cursor when they changed.
        assert_exactly_once(&seen, &before);
        let changed = vendor.stats().streams["companies"]
            .updated_while_paging
            .clone();
        assert_eq!(changed.len(), 3, "{style:?}");
        let now = vendor.records(Stream::Companies);
        assert_ne!(
            checksum_records(&seen).unwrap(),
            vendor.checksum(Stream::Companies)
        );
        // A later incremental pass finds exactly those three.
        let fresh = updated_after(&now, "2026-06-01T11:59:59Z");
        let fresh_ids: Vec<&str> = fresh.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(
            fresh_ids,
            changed.iter().map(String::as_str).collect::<Vec<_>>()
        );
        if matches!(style, Style::HubSpot) {
            // Fired before the third page, so behind a cursor of 50.
            assert!(changed.iter().all(|id| id.parse::<u64>().unwrap() <= 50));
        }
        sandbox.shutdown().await;
    }
}
