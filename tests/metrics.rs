//! `/metrics` scraped and parsed after real work in this process: a worker's step
//! counters and latency histogram, runs by state, queue depth and age, a credential's
//! budget and 429s, records synced per stream, dead letters.

mod support;

use std::collections::BTreeMap;

use cairn::sandbox::Stream;
use cairn::ui::{Auth, Dashboard, Metrics, Options};
use cairn::workflows::sync;
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::{TestDb, run_to_end};
use support::builtin_worker;
use support::vendor::{STRIPE, input, rate_limited, refusing, throttling};

/// One sample: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// Prometheus' text format, read strictly: every line a comment, blank, or
/// `name{labels} value`, with a `# TYPE` before each family.
fn parse(text: &str) -> (BTreeMap<String, Vec<Sample>>, BTreeMap<String, String>) {
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (
                name,
                labels(rest.strip_suffix('}').expect("labels end with }")),
            ),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        samples
            .entry(name.to_owned())
            .or_default()
            .push((labels, value));
    }
    (samples, types)
}

fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (_, '\\') => match chars.next().expect("an escaped character").1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, c) => value.push(c),
            }
        };
        out.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

fn value(samples: &BTreeMap<String, Vec<Sample>>, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
        .iter()
        .filter(|(labels, _)| {
            with.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_parses_and_holds_every_series_with_true_values() {
    let metrics = Metrics::install().unwrap();
    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let worker = builtin_worker(db.pool().clone(), 4);

    // A rate-limited credential whose vendor answers its first two requests 429.
    let (vendor, refused) = throttling(250, 2).await;
    let profile = rate_limited(STRIPE, 50, "key = \"metrics-credential\"");
    let backfill = run_to_end(
        &client,
        sync::BACKFILL,
        &input(&profile, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(backfill.summary.status, RunStatus::Completed);
    // The knob counts every request it saw; the first two were answered 429.
    let served_429 = refused.load(std::sync::atomic::Ordering::SeqCst).min(2);
    assert_eq!(served_429, 2);

    // A run that fails, and one queued where no worker looks.
    let failing = refusing("no").await;
    let failed = run_to_end(
        &client,
        sync::BACKFILL,
        &input(STRIPE, &failing, Stream::Deals),
    )
    .await;
    assert_eq!(failed.summary.status, RunStatus::Failed);
    let options = StartOptions {
        queue: "nobody-serves-this".to_owned(),
        ..StartOptions::default()
    };
    client
        .start("tour", &serde_json::json!({}), &options)
        .await
        .unwrap();
    worker.shutdown().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dashboard = Dashboard::new(
        db.pool().clone(),
        Options {
            auth: Auth::none(),
            metrics,
        },
    );
    tokio::spawn(dashboard.serve(listener, std::future::pending()));
    cairn::connectors::http::install_tls_provider();
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    let text = response.text().await.unwrap();
    let (samples, types) = parse(&text);

    for (name, kind) in [
        ("cairn_runs", "gauge"),
        ("cairn_queue_depth", "gauge"),
        ("cairn_queue_oldest_seconds", "gauge"),
        ("cairn_steps_started_total", "counter"),
        ("cairn_steps_completed_total", "counter"),
        ("cairn_steps_failed_total", "counter"),
        ("cairn_step_duration_seconds", "histogram"),
        ("cairn_lease_losses_total", "counter"),
        ("cairn_runs_claimed_total", "counter"),
        ("cairn_budget_tokens", "gauge"),
        ("cairn_budget_rate", "gauge"),
        ("cairn_budget_throttled_total", "counter"),
        ("cairn_budget_in_flight", "gauge"),
        ("cairn_records_synced_total", "counter"),
        ("cairn_dead_letters", "gauge"),
        ("cairn_dead_letter_oldest_seconds", "gauge"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name} in:\n{text}"
        );
    }

    // This database's runs, as the database counts them.
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cairn.runs WHERE status = 'completed'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        value(&samples, "cairn_runs", &[("status", "completed")]),
        completed as f64
    );
    assert_eq!(value(&samples, "cairn_runs", &[("status", "failed")]), 1.0);
    assert_eq!(
        value(
            &samples,
            "cairn_queue_depth",
            &[("queue", "nobody-serves-this")]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "cairn_queue_oldest_seconds",
            &[("queue", "nobody-serves-this")]
        ) > 0.0
    );
    assert_eq!(value(&samples, "cairn_dead_letters", &[]), 1.0);
    assert!(value(&samples, "cairn_dead_letter_oldest_seconds", &[]) > 0.0);

    // The credential: the 429s the vendor served, and its configured ceiling.
    let credential = [("credential", "metrics-credential")];
    assert_eq!(
        value(&samples, "cairn_budget_throttled_total", &credential),
        served_429 as f64
    );
    let rate = value(&samples, "cairn_budget_rate", &credential);
    assert!(rate > 0.0 && rate <= 50.0, "{rate}");

    // What this process's worker did (other tests of this binary share the recorder,
    // so these are at least this test's share).
    let steps = backfill.steps.len() as f64;
    assert!(
        value(
            &samples,
            "cairn_steps_completed_total",
            &[("workflow", sync::BACKFILL)]
        ) >= steps
    );
    assert!(
        value(
            &samples,
            "cairn_steps_started_total",
            &[("workflow", sync::BACKFILL)]
        ) >= steps
    );
    assert!(
        value(
            &samples,
            "cairn_steps_failed_total",
            &[("workflow", sync::BACKFILL), ("then", "failed")]
        ) >= 1.0
    );
    let count = value(
        &samples,
        "cairn_step_duration_seconds_count",
        &[("workflow", sync::BACKFILL)],
    );
    let inf = value(
        &samples,
        "cairn_step_duration_seconds_bucket",
        &[("workflow", sync::BACKFILL), ("le", "+Inf")],
    );
    assert!(
        count >= steps && (count - inf).abs() < 1e-9,
        "count {count}, +Inf bucket {inf}"
    );
    assert!(value(&samples, "cairn_runs_claimed_total", &[]) >= 2.0);
    assert_eq!(
        value(
            &samples,
            "cairn_records_synced_total",
            &[("source", "sandbox-stripe"), ("stream", "contacts")]
        ),
        250.0,
        "each landed record counted once"
    );
}
