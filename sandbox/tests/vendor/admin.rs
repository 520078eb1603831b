//! The admin API: record and schema mutations, stats and the checksum.

use cairn_sandbox::{
    FieldType, Mutation, MutationError, SandboxConfig, StatsSnapshot, Stream, checksum_records,
};
use serde_json::{Value, json};

use crate::common::{Style, all_ids, config, get_json, http, start, traverse};

#[tokio::test]
async fn same_seed_same_data_and_checksum() {
    let one = start(config().0).await;
    let two = start(config().0).await;
    let (mut other, _clock) = config();
    other.seed = 43;
    let three = start(other).await;
    for stream in Stream::ALL {
        assert_eq!(one.vendor().records(stream), two.vendor().records(stream));
        assert_eq!(one.vendor().checksum(stream), two.vendor().checksum(stream));
        assert_ne!(
            one.vendor().checksum(stream),
            three.vendor().checksum(stream)
        );
    }
    for sandbox in [one, two, three] {
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn stats_report_requests_and_a_checksum_a_client_can_recompute() {
    let sandbox = start(config().0).await;
    let base = sandbox.base_url();
    let (records, pages) = traverse(base, Style::Offset, Stream::Deals).await;
    let missing = http()
        .get(format!("{base}/api/v1/widgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let stats: StatsSnapshot =
        serde_json::from_value(get_json(&format!("{base}/admin/stats")).await).unwrap();
    assert_eq!(stats.count("GET /api/v1/{stream}", "200"), pages as u64);
    assert_eq!(stats.count("GET /api/v1/{stream}", "404"), 1);
    // The cheap counters a benchmark polls agree with the snapshot. The snapshot was
    // taken while its own request was in flight; once answered, nothing is.
    let vendor = sandbox.vendor();
    assert_eq!(vendor.requests("GET /api/v1/{stream}", "200"), pages as u64);
    assert_eq!(vendor.requests("GET /api/v1/{stream}", "404"), 1);
    assert_eq!(vendor.requests("GET /api/v1/{stream}", "429"), 0);
    assert_eq!((vendor.in_flight(), stats.in_flight), (0, 1));
    assert_eq!(stats.rate_limited, 0);
    assert_eq!(stats.tokens_issued, 0);
    let deals = &stats.streams["deals"];
    assert_eq!(deals.records, 137);
    assert_eq!(deals.checksum, checksum_records(&records).unwrap());
    assert!(deals.checksum.starts_with("sha256:") && deals.checksum.len() == 71);
    sandbox.shutdown().await;
}

async fn mutate(base: &str, stream: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("{base}/admin/streams/{stream}/mutate"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn ids(outcome: &Value) -> Vec<String> {
    serde_json::from_value(outcome["ids"].clone()).unwrap()
}

#[tokio::test]
async fn update_create_and_delete_over_http() {
    let sandbox = start(config().0).await;
    let base = sandbox.base_url();
    let vendor = sandbox.vendor();
    let before = vendor.records(Stream::Contacts);
    let checksum = vendor.checksum(Stream::Contacts);

    let updated = ids(
        &mutate(base, "contacts", json!({"op": "update", "count": 5}))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(updated.len(), 5);
    let after = vendor.records(Stream::Contacts);
    assert_eq!(after.len(), 137);
    for (old, new) in before.iter().zip(&after) {
        let touched = updated.contains(&old["id"].as_str().unwrap().to_owned());
        assert_eq!(old["updated_at"] != new["updated_at"], touched, "{new}");
        if touched {
            // The clock stands at as_of; every generated update is before it.
            assert_eq!(new["updated_at"], "2026-06-01T12:00:00Z");
        }
    }
    assert_ne!(vendor.checksum(Stream::Contacts), checksum);

    let created = ids(
        &mutate(base, "contacts", json!({"op": "create", "count": 4}))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(created, ["138", "139", "140", "141"]);
    // A later change lands strictly after the previous one.
    let newest = &vendor.records(Stream::Contacts)[140];
    assert_eq!(newest["created_at"], "2026-06-01T12:00:01Z");

    let deleted = ids(
        &mutate(base, "contacts", json!({"op": "delete", "count": 6}))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(deleted.len(), 6);
    let live = all_ids(base, Stream::Contacts).await;
    assert_eq!(live.len(), 137 + 4 - 6);
    assert!(deleted.iter().all(|id| !live.contains(id)));
    let (seen, _) = traverse(base, Style::HubSpot, Stream::Contacts).await;
    assert_eq!(seen.len(), live.len());
    assert_eq!(
        checksum_records(&seen).unwrap(),
        vendor.checksum(Stream::Contacts)
    );
    sandbox.shutdown().await;
}

fn all_have(records: &[Value], field: &str) -> bool {
    records.iter().all(|r| r.get(field).is_some())
}

fn none_have(records: &[Value], field: &str) -> bool {
    records.iter().all(|r| r.get(field).is_none())
}

#[tokio::test]
async fn schema_drift_applies_to_existing_and_new_records() {
    let sandbox = start(config().0).await;
    let vendor = sandbox.vendor();
    let stream = Stream::Contacts;
    let before = vendor.records(stream);

    let added = vendor
        .mutate(
            stream,
            Mutation::AddField {
                field: "nickname".into(),
                value: None,
                touch: false,
            },
        )
        .unwrap();
    assert_eq!(added.ids.len(), 137);
    let records = vendor.records(stream);
    assert_eq!(records[0]["nickname"], "nickname-1");
    // Schema changes leave updated_at alone unless asked.
    assert!(
        records
            .iter()
            .zip(&before)
            .all(|(a, b)| a["updated_at"] == b["updated_at"])
    );

    vendor
        .mutate(
            stream,
            Mutation::RenameField {
                from: "phone".into(),
                to: "phone_number".into(),
                touch: true,
            },
        )
        .unwrap();
    let records = vendor.records(stream);
    assert!(none_have(&records, "phone") && all_have(&records, "phone_number"));
    assert!(
        records
            .iter()
            .all(|r| r["updated_at"] == "2026-06-01T12:00:00Z")
    );

    vendor
        .mutate(
            stream,
            Mutation::RemoveField {
                field: "tags".into(),
                touch: false,
            },
        )
        .unwrap();
    vendor
        .mutate(
            stream,
            Mutation::ChangeFieldType {
                field: "score".into(),
                to: FieldType::String,
                touch: false,
            },
        )
        .unwrap();
    let records = vendor.records(stream);
    assert!(none_have(&records, "tags"));
    assert!(records.iter().all(|r| r["score"].is_string()));

    vendor
        .mutate(stream, Mutation::Create { count: 1 })
        .unwrap();
    let newest = vendor.records(stream).pop().unwrap();
    assert!(newest["score"].is_string() && newest.get("tags").is_none());
    assert_eq!(newest["nickname"], "nickname-138");
    assert!(newest.get("phone_number").is_some() && newest.get("phone").is_none());

    assert_eq!(
        vendor.mutate(
            stream,
            Mutation::RemoveField {
                field: "id".into(),
                touch: false
            }
        ),
        Err(MutationError::SystemField("id".into()))
    );
    assert_eq!(
        vendor.mutate(
            stream,
            Mutation::RemoveField {
                field: "tags".into(),
                touch: false
            }
        ),
        Err(MutationError::UnknownField("tags".into()))
    );
    assert_eq!(
        vendor.mutate(
            stream,
            Mutation::RenameField {
                from: "email".into(),
                to: "nickname".into(),
                touch: false
            }
        ),
        Err(MutationError::FieldExists("nickname".into()))
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refused_mutations_answer_with_a_status() {
    let sandbox = start(config().0).await;
    let base = sandbox.base_url();
    let system = mutate(
        base,
        "deals",
        json!({"op": "rename_field", "from": "updated_at", "to": "x"}),
    )
    .await;
    assert_eq!(system.status(), 400);
    let unknown = mutate(
        base,
        "deals",
        json!({"op": "remove_field", "field": "nope"}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let stream = mutate(base, "widgets", json!({"op": "update", "count": 1})).await;
    assert_eq!(stream.status(), 404);
    let armed = mutate(
        base,
        "deals",
        json!({"op": "update_while_paging", "count": 2, "after_pages": 0}),
    )
    .await;
    assert_eq!(armed.status(), 200);
    assert_eq!(armed.json::<Value>().await.unwrap(), json!({"ids": []}));
    let retyped = mutate(
        base,
        "deals",
        json!({"op": "change_field_type", "field": "amount_cents", "to": "string"}),
    )
    .await;
    assert_eq!(retyped.status(), 200);
    assert!(
        sandbox
            .vendor()
            .records(Stream::Deals)
            .iter()
            .all(|d| d["amount_cents"].is_string())
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn default_config_is_well_behaved() {
    let config = SandboxConfig::default();
    assert!(config.rate_limit.is_none() && config.daily_quota.is_none());
    assert_eq!(config.faults.rate, 0.0);
    assert!(config.validate().is_ok());
}
