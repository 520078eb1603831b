//! OpenTelemetry traces received in-process: an OTLP/HTTP receiver in this test takes
//! what the exporter sends while a worker syncs from a vendor that answers 429 once and
//! from one that refuses everything; the spans must form the tree run → step → vendor
//! request, with their attributes.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use cairn::sandbox::Stream;
use cairn::telemetry::{Encoding, Telemetry};
use cairn::workflows::sync;
use cairn::{Client, RunStatus};
use cairn_testkit::{TestDb, run_to_end};
use serde_json::Value;
use support::builtin_worker;
use support::vendor::{STRIPE, input, rate_limited, refusing, throttling};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A span as received: ids, name and attributes (every value as text).
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn spans_of(export: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|kv| {
                        let value = kv["value"]
                            .as_object()
                            .and_then(|v| v.values().next())
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                            .unwrap_or_default();
                        (kv["key"].as_str().unwrap_or_default().to_owned(), value)
                    })
                    .collect();
                out.push(Span {
                    trace: span["traceId"].as_str().unwrap_or_default().to_owned(),
                    id: span["spanId"].as_str().unwrap_or_default().to_owned(),
                    parent: span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    attributes,
                });
            }
        }
    }
    out
}

/// The receiver: every body posted, parsed as OTLP JSON.
async fn receive(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> &'static str {
    let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
    spans.lock().unwrap().extend(spans_of(&export));
    "{}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_steps_and_vendor_requests_arrive_as_one_tree() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let receiver = Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let telemetry = Telemetry::to(&endpoint, Encoding::Json).unwrap();
    tracing_subscriber::registry()
        .with(telemetry.layer())
        .init();

    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let worker = builtin_worker(db.pool().clone(), 4);
    // A rate-limited source whose vendor answers its first request 429: the client
    // waits out the `Retry-After` inside the step and asks again.
    let (throttled, _) = throttling(150, 1).await;
    let profile = rate_limited(STRIPE, 20, "");
    let synced = run_to_end(
        &client,
        sync::BACKFILL,
        &input(&profile, &throttled, Stream::Contacts),
    )
    .await;
    assert_eq!(synced.summary.status, RunStatus::Completed);
    let refusing = refusing("no").await;
    let failed = run_to_end(
        &client,
        sync::BACKFILL,
        &input(STRIPE, &refusing, Stream::Deals),
    )
    .await;
    assert_eq!(failed.summary.status, RunStatus::Failed);
    worker.shutdown().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let spans = received.lock().unwrap().clone();
    let run_span = |id: cairn::RunId| {
        spans
            .iter()
            .find(|s| s.name == "run" && s.attr("run_id") == Some(id.to_string().as_str()))
            .unwrap_or_else(|| panic!("a span for run {id} among {} spans", spans.len()))
    };
    let children = |parent: &Span| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.parent == parent.id && s.trace == parent.trace)
            .collect()
    };

    // The run: a trace's root, with its workflow.
    let run = run_span(synced.summary.id);
    assert!(run.parent.is_empty(), "a run starts its own trace: {run:?}");
    assert_eq!(run.attr("workflow"), Some(sync::BACKFILL));
    assert!(run.attr("worker").is_some());

    // Its steps, each with the run's workflow and id and its attempt.
    let steps = children(run);
    let first_fetch = steps
        .iter()
        .find(|s| s.name == "step" && s.attr("step") == Some("fetch page 0"))
        .unwrap_or_else(|| panic!("the first fetch is a child of the run: {steps:#?}"));
    assert_eq!(first_fetch.attr("workflow"), Some(sync::BACKFILL));
    assert_eq!(
        first_fetch.attr("run_id"),
        Some(synced.summary.id.to_string().as_str())
    );
    assert_eq!(first_fetch.attr("attempt"), Some("1"));
    assert_eq!(first_fetch.attr("kind"), Some("step"));
    assert!(
        steps.iter().any(|s| s.attr("kind") == Some("transaction")
            && s.attr("step").is_some_and(|n| n.starts_with("land"))),
        "landings are transactional steps of the run"
    );

    // Its vendor requests: the 429 with the wait it imposed, then the answer.
    let requests = children(first_fetch);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests.iter().all(|r| r.name == "vendor request"
        && r.attr("vendor").is_some_and(|v| v.contains("127.0.0.1"))
        && r.attr("method") == Some("GET")));
    let refused = requests
        .iter()
        .find(|r| r.attr("status") == Some("429"))
        .expect("the 429");
    let wait: f64 = refused
        .attr("retry_after_s")
        .expect("the wait")
        .parse()
        .unwrap();
    assert!(wait > 0.0 && wait <= 2.0, "{wait}");
    assert!(requests.iter().any(|r| r.attr("status") == Some("200")));

    // A step that failed says in which category.
    let failed_run = run_span(failed.summary.id);
    let failed_step = children(failed_run)
        .into_iter()
        .find(|s| s.attr("category").is_some())
        .expect("the failed step carries its category");
    assert_eq!(failed_step.attr("workflow"), Some(sync::BACKFILL));
    let request = children(failed_step);
    assert!(
        request.iter().any(|r| r.attr("status") == Some("400")),
        "{request:#?}"
    );
}
