//! Idempotent writes: conditional PUT and POST with Idempotency-Key.

use serde_json::{Value, json};

use crate::common::{config, get_json, http, start};

#[tokio::test]
async fn put_honours_if_match_and_if_none_match() {
    let sandbox = start(config().0).await;
    let url = format!("{}/items/a", sandbox.base_url());
    let client = http();
    let created = client
        .put(&url)
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["etag"], "\"1\"");

    let replaced = client
        .put(&url)
        .header("If-Match", "\"1\"")
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    assert_eq!(replaced.headers()["etag"], "\"2\"");

    let stale = client
        .put(&url)
        .header("If-Match", "\"1\"")
        .json(&json!({"n": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let exists = client
        .put(&url)
        .header("If-None-Match", "*")
        .json(&json!({"n": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(exists.status(), 412);
    let absent = client
        .put(format!("{}/items/b", sandbox.base_url()))
        .header("If-Match", "*")
        .json(&json!({"n": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(absent.status(), 412);

    let current = client.get(&url).send().await.unwrap();
    assert_eq!(current.headers()["etag"], "\"2\"");
    let body: Value = current.json().await.unwrap();
    assert_eq!(body, json!({"id": "a", "version": 2, "n": 2}));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn post_with_an_idempotency_key_creates_once() {
    let sandbox = start(config().0).await;
    let url = format!("{}/items", sandbox.base_url());
    let client = http();
    let send = |key: &'static str, body: Value| {
        client
            .post(&url)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = send("k1", json!({"name": "x"})).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = send("k1", json!({"name": "x"})).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let misuse = send("k1", json!({"name": "y"})).await.unwrap();
    assert_eq!(misuse.status(), 422);

    let other = send("k2", json!({"name": "x"})).await.unwrap();
    assert_eq!(other.status(), 201);
    let listed = get_json(&url).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    sandbox.shutdown().await;
}
