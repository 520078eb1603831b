//! The REST destination against the sandbox's writable side over real HTTP: each mode,
//! lost answers sent again under the same key, conflicts settled by each policy, and
//! records the destination refuses, each compared with what the destination then holds.

use std::collections::BTreeMap;

use cairn_connectors::destination::{
    ConflictPolicy, Destination, DestinationConfig, Outcome, RecordWrite, idempotency_key,
};
use cairn_connectors::error::HttpError;
use cairn_sandbox::{Sandbox, SandboxConfig, SandboxHandle, WriteFaults};
use serde_json::{Value, json};

const FILE: &str = r#"
[destination]
name = "crm-b"
base_url = "http://127.0.0.1:9"

[destination.streams.contacts]
path = "/dest/contacts"
mode = "put"
batch_path = "/dest/contacts/batch"
batch_size = 50

[destination.streams.deals]
path = "/dest/deals"
mode = "post"
source_id_field = "external_id"

[destination.streams.wins]
path = "/dest/wins"
mode = "patch"
on_conflict = "source_wins"

[destination.streams.skips]
path = "/dest/skips"
mode = "patch"
on_conflict = "skip_and_alert"

[destination.streams.letters]
path = "/dest/letters"
mode = "patch"
on_conflict = "dead_letter"
"#;

async fn vendor(writes: WriteFaults) -> SandboxHandle {
    let config = SandboxConfig {
        records_per_stream: 0,
        writes,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the sandbox starts")
}

async fn destination(sandbox: &SandboxHandle) -> Destination {
    let config = DestinationConfig::parse(FILE, "b.toml")
        .unwrap()
        .with_base_url(sandbox.base_url())
        .unwrap();
    Destination::open(config, None).await.unwrap()
}

fn record(i: usize) -> Value {
    json!({"id": format!("r{i}"), "name": format!("name {i}"), "n": i})
}

/// Writes `record` until the destination answers, under the same key every time, as a
/// step retried after a lost answer would. Returns the outcome and the failed tries.
async fn until_answered(
    dest: &Destination,
    stream: &str,
    record: &Value,
    etag: Option<&str>,
) -> (Outcome, Vec<HttpError>) {
    let key = idempotency_key("run-1", 7, stream, record["id"].as_str().unwrap());
    let mut failures = Vec::new();
    loop {
        let write = RecordWrite {
            record,
            key: &key,
            etag,
        };
        match dest.write(stream, write).await {
            Ok(outcome) => return (outcome, failures),
            Err(err) => {
                // A record that kept changing under a winning patch is tried again later
                // too.
                assert!(
                    err.category().is_transient() || err.status() == Some(412),
                    "only transient failures are tried again: {err}"
                );
                failures.push(err);
                assert!(failures.len() < 50, "the write never got through");
            }
        }
    }
}

/// The fields a source record set, as the destination holds them.
fn held_fields(held: &Value, sent: &Value) -> Value {
    let fields: serde_json::Map<String, Value> = sent
        .as_object()
        .unwrap()
        .keys()
        .filter(|key| *key != "id")
        .map(|key| (key.clone(), held[key].clone()))
        .collect();
    Value::Object(fields)
}

fn without_id(sent: &Value) -> Value {
    let mut sent = sent.clone();
    sent.as_object_mut().unwrap().remove("id");
    sent
}

#[tokio::test]
async fn lost_answers_are_sent_again_under_the_same_key_and_every_record_lands_once() {
    let sandbox = vendor(WriteFaults {
        ack_loss: 0.3,
        unavailable: 0.1,
        ..WriteFaults::default()
    })
    .await;
    let dest = destination(&sandbox).await;
    let mut lost = 0;
    let mut replayed = 0;
    for i in 0..60 {
        let (put, failures) = until_answered(&dest, "contacts", &record(i), None).await;
        lost += failures.len();
        assert!(matches!(put, Outcome::Applied { .. }), "{put:?}");
        let (post, failures) = until_answered(&dest, "deals", &record(i), None).await;
        lost += failures.len();
        let Outcome::Applied { repeated, .. } = post else {
            panic!("{post:?}");
        };
        replayed += usize::from(repeated);
    }
    assert!(lost > 10, "the faults were exercised ({lost} failed tries)");
    assert!(
        replayed > 0,
        "some posts were answered from the key's memory"
    );

    let contacts = sandbox.vendor().destination("contacts");
    assert_eq!(contacts.records.len(), 60);
    for i in 0..60 {
        let sent = record(i);
        let held = &contacts.records[&format!("r{i}")];
        assert_eq!(held_fields(held, &sent), without_id(&sent));
    }
    let deals = sandbox.vendor().destination("deals");
    assert_eq!(deals.records.len(), 60, "no post created a record twice");
    assert!(deals.duplicates.is_empty(), "{:?}", deals.duplicates);
    let by_source: BTreeMap<&str, &Value> = deals
        .records
        .values()
        .map(|held| (held["external_id"].as_str().unwrap(), held))
        .collect();
    for i in 0..60 {
        let held = by_source[format!("r{i}").as_str()];
        assert_eq!(held["n"], i);
    }
    assert!(deals.counts.acks_lost > 0 && deals.counts.replayed > 0);
    sandbox.shutdown().await;
}

/// Puts records `0..n` into `stream` directly, as they stood before cairn patches them.
async fn seed(sandbox: &SandboxHandle, stream: &str, n: usize) {
    cairn_connectors::http::install_tls_provider();
    let http = reqwest::Client::new();
    for i in 0..n {
        let answer = http
            .put(format!("{}/dest/{stream}/r{i}", sandbox.base_url()))
            .json(&json!({"name": "before", "n": 0}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }
}

#[tokio::test]
async fn a_patch_whose_answer_was_lost_is_recognised_when_sent_again() {
    let sandbox = vendor(WriteFaults::default()).await;
    seed(&sandbox, "wins", 1).await;
    let dest = destination(&sandbox).await;
    let (first, _) = until_answered(&dest, "wins", &record(0), None).await;
    let Outcome::Applied { etag, repeated, .. } = first else {
        panic!("{first:?}");
    };
    assert!(!repeated);
    assert_eq!(etag.as_deref(), Some("\"v2\""));
    // The same write again with the ETag from before it (its answer "lost"): the 412
    // leads to the current record, which already holds it.
    let (again, _) = until_answered(&dest, "wins", &record(0), Some("\"v1\"")).await;
    assert!(
        matches!(again, Outcome::Applied { repeated: true, .. }),
        "{again:?}"
    );
    let held = sandbox.vendor().destination("wins");
    assert_eq!(held.records["r0"]["version"], 2, "written once");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn conflicts_with_another_users_edits_follow_each_streams_policy() {
    let sandbox = vendor(WriteFaults {
        concurrent_edits: 0.4,
        ..WriteFaults::default()
    })
    .await;
    let streams = ["wins", "skips", "letters"];
    for stream in streams {
        seed(&sandbox, stream, 20).await;
    }
    let dest = destination(&sandbox).await;
    let mut conflicts: BTreeMap<&str, usize> = BTreeMap::new();
    for stream in streams {
        for i in 0..20 {
            let sent = record(i);
            // Each write starts from the version cairn saw: the seeded one.
            let (outcome, _) = until_answered(&dest, stream, &sent, Some("\"v1\"")).await;
            let held = sandbox.vendor().destination(stream).records[&format!("r{i}")].clone();
            match outcome {
                Outcome::Applied { .. } => {
                    assert_eq!(
                        held_fields(&held, &sent),
                        without_id(&sent),
                        "{stream} r{i}"
                    );
                }
                Outcome::Conflict { policy, current } => {
                    *conflicts.entry(stream).or_default() += 1;
                    let expected = match stream {
                        "skips" => ConflictPolicy::SkipAndAlert,
                        "letters" => ConflictPolicy::DeadLetter,
                        other => panic!("`{other}` should have won its conflicts"),
                    };
                    assert_eq!(policy, expected);
                    assert_eq!(current["edited_by"], "another-user");
                    assert_eq!(held["name"], "before", "{stream} r{i} was left as it was");
                }
                Outcome::Rejected { .. } => panic!("{stream} r{i}: {outcome:?}"),
            }
        }
    }
    assert!(
        conflicts.get("skips").copied().unwrap_or(0) > 0,
        "{conflicts:?}"
    );
    assert!(
        conflicts.get("letters").copied().unwrap_or(0) > 0,
        "{conflicts:?}"
    );
    let wins = sandbox.vendor().destination("wins");
    assert!(
        wins.counts.stale > 0,
        "the winning stream met conflicts too"
    );
    assert!(
        wins.records
            .values()
            .any(|held| held["edited_by"] == "another-user"),
        "a won conflict keeps the other user's other fields"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn records_the_destination_refuses_are_rejected_one_by_one() {
    let sandbox = vendor(WriteFaults {
        conflict_share: 0.15,
        invalid_share: 0.15,
        ..WriteFaults::default()
    })
    .await;
    let dest = destination(&sandbox).await;
    let mut rejected = Vec::new();
    for i in 0..40 {
        let (outcome, _) = until_answered(&dest, "contacts", &record(i), None).await;
        if let Outcome::Rejected { status, reason } = &outcome {
            assert!(matches!(status, Some(409 | 422)), "{outcome:?}");
            assert!(!reason.is_empty());
            rejected.push(format!("r{i}"));
        }
    }
    assert!(!rejected.is_empty() && rejected.len() < 40, "{rejected:?}");
    let held = sandbox.vendor().destination("contacts");
    assert_eq!(held.records.len(), 40 - rejected.len());
    assert!(rejected.iter().all(|id| !held.records.contains_key(id)));

    // The same records through the batch endpoint: the same ones refused, each answered.
    let records: Vec<Value> = (40..80)
        .map(record)
        .chain([json!({"name": "no id"})])
        .collect();
    let refs: Vec<&Value> = records.iter().collect();
    let outcomes = dest.write_batch("contacts", &refs).await.unwrap();
    assert_eq!(outcomes.len(), 41);
    let held = sandbox.vendor().destination("contacts");
    for (sent, outcome) in records.iter().zip(&outcomes) {
        match outcome {
            Outcome::Applied { id, .. } => {
                assert_eq!(held_fields(&held.records[id], sent), without_id(sent));
            }
            Outcome::Rejected {
                status: None,
                reason,
            } => {
                assert!(sent.get("id").is_none(), "{reason}");
            }
            Outcome::Rejected { status, .. } => {
                assert!(matches!(status, Some(409 | 422)));
                assert!(!held.records.contains_key(sent["id"].as_str().unwrap()));
            }
            Outcome::Conflict { .. } => panic!("{outcome:?}"),
        }
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_write_is_never_redirected_even_within_the_vendor() {
    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 0,
            hostile: cairn_sandbox::Hostile {
                redirect_hops: 1,
                ..cairn_sandbox::Hostile::default()
            },
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dest = destination(&sandbox).await;
    let sent = record(1);
    let err = dest
        .write(
            "contacts",
            RecordWrite {
                record: &sent,
                key: "k",
                etag: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.category(),
        cairn_connectors::error::Category::Redirect,
        "{err}"
    );
    assert!(err.to_string().contains("redirected a write"), "{err}");
    assert!(sandbox.vendor().destination("contacts").records.is_empty());
    sandbox.shutdown().await;
}
