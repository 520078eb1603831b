//! Waits a vendor imposes, bounded: 429s that name no wait back off, growing and
//! jittered; a vendor that trickles its body is cut off and the run still ends; a
//! scheduled sync of a blocked source does not pile up runs.

mod support;

use std::time::Duration;

use cairn::sandbox::{Hostile, SandboxConfig, Stream, Throttle};
use cairn::workflows::sync;
use cairn::{Client, RunStatus};
use cairn_testkit::{TestDb, run_to_end};
use support::vendor::{HUBSPOT, checksum, input, landed, start};
use support::{WorkerProcess, builtin, builtin_worker, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_429s_without_a_wait_back_off_growing_instead_of_spinning() {
    let db = TestDb::new().await;
    let throttle = Throttle {
        count: 4,
        retry_after: Some("0".to_owned()),
        ..Throttle::default()
    };
    let arrivals = throttle.arrivals.clone();
    let vendor = start(SandboxConfig {
        records_per_stream: 150,
        hostile: Hostile {
            throttle: Some(throttle),
            ..Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let done = run_to_end(
        &client,
        sync::BACKFILL,
        &input(HUBSPOT, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(
        vendor
            .vendor()
            .stats()
            .count("GET /crm/v3/objects/{stream}", "429"),
        4,
        "each 429 was answered by one wait, not a burst of retries"
    );
    let arrivals = arrivals.lock().unwrap().clone();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).take(4).collect();
    // Backoffs are drawn in [0.5, 1] × 1 s, 2 s, 4 s, 8 s: the first is short, the
    // fourth at least 4 s; the run's wake-ups add a little to each.
    assert!(gaps[0] < Duration::from_millis(2_500), "{gaps:?}");
    assert!(gaps[3] >= Duration::from_secs(4), "{gaps:?}");
    assert!(gaps[3] > gaps[0] * 2, "the waits grow: {gaps:?}");
    assert_eq!(
        landed(&db, "sandbox-hubspot", "sandbox_hubspot", Stream::Contacts).await,
        checksum(&vendor.vendor().records(Stream::Contacts))
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_that_trickles_is_cut_off_retried_and_the_run_ends() {
    let db = TestDb::new().await;
    let vendor = start(SandboxConfig {
        hostile: Hostile {
            trickle: Some(Duration::from_secs(5)),
            ..Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let source = HUBSPOT.replacen(
        "[auth]",
        "[timeouts]\nconnect_secs = 1.0\nread_secs = 10.0\ntotal_secs = 1.0\n\n[auth]",
        1,
    );
    let worker = builtin_worker(db.pool().clone(), 2);
    let client = Client::new(db.pool().clone()).with_registry(builtin());
    let done = run_to_end(
        &client,
        sync::BACKFILL,
        &input(&source, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.unwrap();
    assert_eq!(error["category"], "timeout", "{error}");
    let fetch = done
        .steps
        .iter()
        .find(|s| s.name.starts_with("fetch page"))
        .unwrap();
    assert_eq!(
        fetch.attempts, 5,
        "cut off, then retried under the retry policy"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_sync_of_a_blocked_source_keeps_one_run() {
    let db = TestDb::new().await;
    let url = db.url();
    let vendor = start(SandboxConfig {
        hostile: Hostile {
            throttle: Some(Throttle {
                count: u32::MAX,
                retry_after: Some("3600".to_owned()),
                ..Throttle::default()
            }),
            ..Hostile::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("cairn-waits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("source.toml");
    std::fs::write(&source, HUBSPOT).unwrap();
    let scheduled = run(
        &url,
        &[
            "sync",
            source.to_str().unwrap(),
            "--stream",
            "contacts",
            "--base-url",
            vendor.base_url(),
            "--every",
            "* * * * * *",
        ],
    );
    assert!(
        scheduled.status.success(),
        "{}",
        String::from_utf8_lossy(&scheduled.stderr)
    );
    let worker = WorkerProcess::spawn(&url, &[]);
    // Every second fires; once the first run is parked on the vendor's hour, each fire
    // time is skipped rather than started.
    let skipped = loop {
        let skipped: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(fires_skipped), 0)::bigint FROM cairn.schedules",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if skipped >= 3 {
            break skipped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    worker.kill();
    let runs: Vec<(String,)> =
        sqlx::query_as("SELECT status::text FROM cairn.runs WHERE workflow = $1")
            .bind(sync::INCREMENTAL)
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        runs.len(),
        1,
        "one run, {skipped} fire times skipped: {runs:?}"
    );
    assert_eq!(runs[0].0, "parked");
    let _ = std::fs::remove_dir_all(dir);
}
