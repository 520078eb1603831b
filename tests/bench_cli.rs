//! `cairn bench`: every scenario runs through the binary in a tiny configuration and
//! prints one JSON document with its conditions, figures, baseline, `ratio` and targets.

mod support;

use serde_json::Value;

/// The server the benches create their own databases on.
fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "these tests need PostgreSQL: set DATABASE_URL, for example \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
             (the user must be allowed to CREATE DATABASE)"
        )
    })
}

/// One bench at a time: each loads both cores, and the crash scenario's count of pages
/// served by the vendor must not be skewed by a neighbour starving the vendor's task.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `cairn bench <args> --json` and returns its document, checked for shape.
fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        support::run(&database_url(), &all)
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "cairn {all:?}: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "cairn {all:?} printed no single JSON document ({err}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(doc["scenario"], args[0]);
    let conditions = doc["conditions"].as_object().expect("conditions object");
    assert!(!conditions.is_empty(), "no conditions: {doc}");
    let figures = doc["figures"].as_object().expect("figures object");
    assert!(!figures.is_empty(), "no figures: {doc}");
    for (name, figure) in figures {
        assert!(
            figure["value"].is_f64() || figure["value"].is_u64(),
            "{name}: {figure}"
        );
        assert!(figure["unit"].is_string(), "{name}: {figure}");
    }
    assert!(doc["ratio"].is_number(), "no ratio: {doc}");
    assert!(doc["baseline"]["value"].is_number(), "no baseline: {doc}");
    assert!(
        doc["baseline"]["name"].is_string(),
        "no baseline name: {doc}"
    );
    let targets = doc["targets"].as_array().expect("targets array");
    assert!(!targets.is_empty(), "no targets: {doc}");
    for target in targets {
        assert!(target["met"].is_boolean(), "{target}");
        assert!(target["actual"].is_number(), "{target}");
    }
    assert!(doc["machine"]["cpus"].as_u64().unwrap_or(0) >= 1, "{doc}");
    doc
}

fn figure(doc: &Value, name: &str) -> f64 {
    doc["figures"][name]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name}: {doc}"))
}

#[test]
fn steps_reports_overhead_against_bare_commits() {
    let doc = bench(&["steps", "--steps", "20"]);
    assert!(figure(&doc, "plain_steps_per_sec") > 0.0);
    assert!(figure(&doc, "bare_insert_commit_p50") > 0.0);
    assert!(figure(&doc, "transactional_overhead_p99") > 0.0);
}

#[test]
fn steps_beside_a_preloaded_history_compare_with_an_empty_database() {
    let doc = bench(&["steps", "--steps", "30", "--preload", "2000"]);
    assert_eq!(doc["conditions"]["preloaded_steps"], 2000);
    assert_eq!(doc["conditions"]["preloaded_runs"], 200);
    for figure_name in [
        "empty_step_overhead_p50",
        "preloaded_step_overhead_p50",
        "empty_claim_p50",
        "preloaded_claim_p50",
    ] {
        assert!(figure(&doc, figure_name) > 0.0, "{figure_name}");
    }
    assert!(figure(&doc, "claim_ratio") > 0.0);
}

#[test]
fn throughput_completes_every_workflow() {
    let doc = bench(&[
        "throughput",
        "--runs",
        "40",
        "--concurrency",
        "8",
        "--warm-up",
        "20",
    ]);
    assert_eq!(doc["conditions"]["workflows"], 40);
    assert_eq!(doc["conditions"]["warm_up_workflows"], 20);
    assert!(figure(&doc, "warm_up_workflows_per_sec") > 0.0);
    assert!(figure(&doc, "workflows_per_sec") > 0.0);
    assert!(figure(&doc, "start_to_end_p99") >= figure(&doc, "start_to_end_p50"));
}

#[test]
fn sync_lands_every_record_and_the_incremental_run_reads_the_updates() {
    let doc = bench(&[
        "sync",
        "--records",
        "500",
        "--updates",
        "20",
        "--page-size",
        "100",
        "--small-page-size",
        "50",
    ]);
    assert_eq!(figure(&doc, "warehouse_equals_vendor"), 1.0);
    // Each page was asked for once, although the next is requested while one is stored.
    assert_eq!(
        figure(&doc, "full_sync_requests"),
        5.0,
        "500 records, pages of 100"
    );
    assert!(figure(&doc, "incremental_records") >= 20.0);
    assert!(figure(&doc, "small_pages_records_per_sec") > 0.0);
    assert!(figure(&doc, "worker_peak_rss") >= figure(&doc, "worker_rss_at_a_tenth"));
    // The baseline copied every row the sync landed, each way.
    assert_eq!(figure(&doc, "bulk_insert_rows"), 500.0);
    for way in [
        "bulk_copy_one_connection",
        "bulk_copy_parallel",
        "bulk_staged_merge",
    ] {
        assert!(figure(&doc, way) > 0.0, "{way}");
    }
}

#[test]
fn ratelimit_reports_the_share_of_the_limit_and_429s() {
    let doc = bench(&["ratelimit", "--records", "200", "--rate", "50"]);
    assert_eq!(figure(&doc, "warehouse_equals_vendor"), 1.0);
    assert_eq!(figure(&doc, "one_sync_records"), 200.0);
    assert_eq!(figure(&doc, "two_syncs_records"), 400.0);
    assert!(figure(&doc, "one_sync_429_share") >= 0.0);
}

#[test]
fn crash_resumes_after_each_kill_and_ends_equal_to_the_vendor() {
    let doc = bench(&[
        "crash",
        "--records",
        "5000",
        "--latency-ms",
        "20",
        "--kills",
        "2",
        "--lease",
        "2",
        "--pages-between-kills",
        "2",
    ]);
    assert_eq!(figure(&doc, "warehouse_equals_vendor"), 1.0);
    assert_eq!(
        figure(&doc, "fetched_again_after_checkpoint"),
        0.0,
        "{:#}",
        doc["figures"]
    );
    assert_eq!(doc["conditions"]["kills_done"], 2);
    // One kill is taken over by a standby, the other taken back by a restart.
    assert!(figure(&doc, "takeover_max") > 0.0);
    assert!(figure(&doc, "restart_max") > 0.0);
}

#[test]
fn reconcile_reports_seconds_and_ids_per_second_at_each_size() {
    let doc = bench(&["reconcile", "--ids", "2000,20000"]);
    assert_eq!(figure(&doc, "deleted_as_expected"), 1.0);
    assert_eq!(figure(&doc, "deleted_2000"), 20.0);
    assert_eq!(figure(&doc, "deleted_20000"), 200.0);
    for size in ["2000", "20000"] {
        assert!(figure(&doc, &format!("seconds_{size}")) > 0.0);
        assert!(figure(&doc, &format!("ids_per_sec_{size}")) > 0.0);
    }
    assert!(figure(&doc, "growth_per_id") > 0.0);
}

#[test]
fn dsr_finds_every_planted_record_and_times_discovery_against_bare_lookups() {
    let doc = bench(&["dsr", "--records", "30", "--rate", "20"]);
    assert_eq!(figure(&doc, "records_found"), 91.0, "{doc}");
    assert_eq!(figure(&doc, "bare_records_found"), 91.0, "{doc}");
    assert!(figure(&doc, "discovery_seconds") > 0.0, "{doc}");
    assert!(doc["ratio"].as_f64().is_some_and(|r| r > 0.0), "{doc}");
}

#[test]
fn scale_runs_each_process_count_and_reads_their_claims() {
    let doc = bench(&[
        "scale",
        "--processes",
        "1,2",
        "--runs",
        "300",
        "--syncs",
        "3",
        "--records",
        "300",
        "--concurrency",
        "8",
    ]);
    assert_eq!(
        figure(&doc, "workflows_claims_per_sec_1"),
        figure(&doc, "workflows_per_sec_1")
    );
    for processes in [1, 2] {
        assert!(figure(&doc, &format!("workflows_per_sec_{processes}")) > 0.0);
        assert!(figure(&doc, &format!("syncs_per_sec_{processes}")) > 0.0);
        // Every run was claimed through a statement the workers counted.
        assert!(figure(&doc, &format!("workflows_claim_queries_{processes}")) >= 1.0);
        assert_eq!(
            figure(&doc, &format!("workflows_claim_errors_{processes}")),
            0.0
        );
        let cpu = figure(&doc, &format!("workflows_machine_cpu_{processes}"));
        assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    }
    let equal = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap().contains("equals the vendor"))
        .unwrap();
    assert_eq!(equal["met"], true, "{equal}");
}

#[test]
fn bad_options_are_usage_errors() {
    let out = support::run(&database_url(), &["bench", "steps", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--steps must be at least 2"));
    let out = support::run(&database_url(), &["bench", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let out = support::run(&database_url(), &["bench", "scale", "--processes", "1,0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--processes takes counts"));
    let out = support::run(&database_url(), &["worker", "--connections", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connections must be at least 4"));
}
