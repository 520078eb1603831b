//! The writable side over real HTTP: conditional writes, idempotency keys, batches, and
//! every write fault, each checked against what the destination then holds.

use cairn_sandbox::{SandboxConfig, WriteFaults};
use serde_json::{Value, json};

use crate::common::{config, get_json, http, start};

#[tokio::test]
async fn put_and_patch_honour_their_conditions() {
    let sandbox = start(config().0).await;
    let url = format!("{}/dest/contacts/a", sandbox.base_url());
    let client = http();
    let put = |condition: Option<(&'static str, &'static str)>, body: Value| {
        let mut request = client.put(&url).json(&body);
        if let Some((name, value)) = condition {
            request = request.header(name, value);
        }
        request.send()
    };
    let created = put(None, json!({"n": 1, "m": 1})).await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["etag"], "\"v1\"");
    let replaced = put(Some(("If-Match", "\"v1\"")), json!({"n": 2, "m": 1}))
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    assert_eq!(replaced.headers()["etag"], "\"v2\"");
    let stale = put(Some(("If-Match", "\"v1\"")), json!({"n": 3}))
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    assert_eq!(
        stale.headers()["etag"],
        "\"v2\"",
        "a 412 names the current version"
    );
    let exists = put(Some(("If-None-Match", "*")), json!({"n": 4}))
        .await
        .unwrap();
    assert_eq!(exists.status(), 412);

    let patched = client
        .patch(&url)
        .header("If-Match", "\"v2\"")
        .json(&json!({"n": 5, "m": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let absent = client
        .patch(format!("{}/dest/contacts/b", sandbox.base_url()))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(absent.status(), 404);

    let current = client.get(&url).send().await.unwrap();
    assert_eq!(current.headers()["etag"], "\"v3\"");
    let body: Value = current.json().await.unwrap();
    assert_eq!(body, json!({"id": "a", "version": 3, "n": 5}));
    let held = sandbox.vendor().destination("contacts");
    assert_eq!(held.counts.created, 1);
    assert_eq!(held.counts.updated, 2);
    assert_eq!(held.counts.stale, 2);
    assert!(held.duplicates.is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_creates_once_and_duplicates_are_counted() {
    let sandbox = start(config().0).await;
    let url = format!("{}/dest/deals", sandbox.base_url());
    let client = http();
    let send = |key: Option<&'static str>, body: Value| {
        let mut request = client.post(&url).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send()
    };
    let body = json!({"external_id": "src-1", "name": "x"});
    let first = send(Some("k1"), body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(Some("k1"), body.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let misuse = send(Some("k1"), json!({"external_id": "src-1", "name": "y"}))
        .await
        .unwrap();
    assert_eq!(misuse.status(), 422);
    assert_eq!(
        sandbox.vendor().destination("deals").records.len(),
        1,
        "a replay creates nothing"
    );

    // Without a key, a retry is a second record: the destination counts it.
    send(None, body.clone()).await.unwrap();
    let held = sandbox.vendor().destination("deals");
    assert_eq!(held.records.len(), 2);
    assert_eq!(held.duplicates.get("src-1"), Some(&2));
    let admin = get_json(&format!("{}/admin/dest/deals", sandbox.base_url())).await;
    assert_eq!(admin["duplicates"]["src-1"], 2);
    assert_eq!(admin["counts"]["replayed"], 1);
    let listed = get_json(&url).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    sandbox.shutdown().await;
}

fn faulty(writes: WriteFaults) -> SandboxConfig {
    SandboxConfig {
        writes,
        ..config().0
    }
}

#[tokio::test]
async fn a_lost_acknowledgement_is_a_write_applied_and_never_answered() {
    let sandbox = start(faulty(WriteFaults {
        ack_loss: 1.0,
        ..WriteFaults::default()
    }))
    .await;
    let sent = http()
        .put(format!("{}/dest/contacts/a", sandbox.base_url()))
        .json(&json!({"n": 1}))
        .send()
        .await;
    let err = sent.expect_err("the answer never arrives");
    assert!(!err.is_status(), "no status came back: {err}");
    let held = sandbox.vendor().destination("contacts");
    assert_eq!(held.records["a"]["n"], 1, "yet the write was applied");
    assert_eq!(held.counts.acks_lost, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn unavailable_writes_are_not_applied_and_refused_records_stay_refused() {
    let sandbox = start(faulty(WriteFaults {
        unavailable: 1.0,
        ..WriteFaults::default()
    }))
    .await;
    let refused = http()
        .put(format!("{}/dest/contacts/a", sandbox.base_url()))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(sandbox.vendor().destination("contacts").records.is_empty());
    sandbox.shutdown().await;

    let sandbox = start(faulty(WriteFaults {
        conflict_share: 0.2,
        invalid_share: 0.2,
        ..WriteFaults::default()
    }))
    .await;
    let client = http();
    let mut first = Vec::new();
    for i in 0..50 {
        let status = |i: i32| {
            client
                .put(format!("{}/dest/contacts/r{i}", sandbox.base_url()))
                .json(&json!({"n": i}))
                .send()
        };
        let once = status(i).await.unwrap().status().as_u16();
        let twice = status(i).await.unwrap().status().as_u16();
        assert!([200, 201, 409, 422].contains(&once), "{once}");
        if matches!(once, 409 | 422) {
            assert_eq!(
                twice, once,
                "record r{i} is refused the same way every time"
            );
        }
        first.push(once);
    }
    let refused = first.iter().filter(|s| matches!(s, 409 | 422)).count();
    assert!((5..=30).contains(&refused), "{refused} of 50 refused");
    let held = sandbox.vendor().destination("contacts");
    assert_eq!(held.records.len(), 50 - refused);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn another_users_edit_makes_an_if_match_stale() {
    let sandbox = start(faulty(WriteFaults {
        concurrent_edits: 1.0,
        ..WriteFaults::default()
    }))
    .await;
    let url = format!("{}/dest/contacts/a", sandbox.base_url());
    let client = http();
    let created = client
        .put(&url)
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "a new record has no one else's edit");
    let stale = client
        .patch(&url)
        .header("If-Match", "\"v1\"")
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let current = get_json(&url).await;
    assert_eq!(current["edited_by"], "another-user");
    assert_eq!(current["n"], 1, "the stale patch was not applied");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_batch_writes_each_record_and_answers_each() {
    let sandbox = start(faulty(WriteFaults {
        invalid_share: 0.3,
        ..WriteFaults::default()
    }))
    .await;
    let records: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("r{i}"), "n": i}))
        .collect();
    let answer: Value = http()
        .post(format!("{}/dest/companies/batch", sandbox.base_url()))
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    let held = sandbox.vendor().destination("companies");
    for (i, result) in results.iter().enumerate() {
        let id = format!("r{i}");
        assert_eq!(result["id"], id.as_str());
        match result["status"].as_u64() {
            Some(201) => assert_eq!(held.records[&id]["n"], i),
            Some(422) => assert!(!held.records.contains_key(&id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": format!("r{i}")})).collect();
    let refused = http()
        .post(format!("{}/dest/companies/batch", sandbox.base_url()))
        .json(&json!({ "records": too_many }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    sandbox.shutdown().await;
}
