//! The dashboard in a real browser: headless Chromium, driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`), against `cairn ui` serving a database a
//! real `cairn demo` filled. Each page is checked for what it shows and photographed
//! into `$CAIRN_ARTIFACTS/screenshots` (CI keeps that folder; by default
//! `target/screenshots`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn::connectors::warehouse::{NewAlert, raise_alerts};
use cairn_testkit::TestDb;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{cairn, run};

const TOKEN: &str = "browser-test-token-0123456";
/// An alert whose message tries to run script when shown.
const HOSTILE: &str = r#"<img src=x onerror="document.body.dataset.pwned='yes'">"#;
/// How long the browser waits for a page to show something before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = match std::env::var_os("CAIRN_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir).join("screenshots"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromedriver() -> PathBuf {
    let found = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        });
    found.expect(
        "this test drives a real browser: install Debian's Chromium and its driver \
         (apt-get install chromium chromium-driver) or set CHROMEDRIVER",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cairn ui` on an ephemeral loopback port, with the action token; its URL.
fn dashboard(url: &str) -> (Killed, String) {
    let mut child = cairn()
        .env("DATABASE_URL", url)
        .env("CAIRN_UI_TOKEN", TOKEN)
        .args(["ui", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning cairn ui");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("cairn ui said where it listens: {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    (Killed(child), base)
}

/// ChromeDriver on a free port, and a headless Chromium session through it.
async fn browser() -> (Killed, Client) {
    let port = free_port();
    let driver = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning chromedriver");
    let driver = Killed(driver);
    let profile = std::env::temp_dir().join(format!("cairn-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // ChromeDriver takes a moment to listen; the session is asked for until it does.
    let client = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(err) if tokio::time::Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no browser session through chromedriver: {err}"),
        }
    };
    (driver, client)
}

async fn shoot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn text(browser: &Client, css: &str) -> String {
    let found = browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await;
    match found {
        Ok(element) => element.text().await.unwrap(),
        Err(err) => panic!("no {css} on {:?}: {err}", browser.current_url().await),
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_demo_run_in_a_real_browser() {
    let db = TestDb::new().await;
    let url = db.url();
    let demo = run(&url, &["demo"]);
    assert!(
        demo.status.success(),
        "the demo ran:\n{}{}",
        String::from_utf8_lossy(&demo.stdout),
        String::from_utf8_lossy(&demo.stderr)
    );
    let mut conn = db.pool().acquire().await.unwrap();
    raise_alerts(
        &mut conn,
        &[NewAlert {
            kind: "schema_drift".to_owned(),
            source: "hostile-vendor".to_owned(),
            stream: "contacts".to_owned(),
            detail: "field".to_owned(),
            message: format!("a new field {HOSTILE} appeared"),
        }],
    )
    .await
    .unwrap();
    drop(conn);

    let (_ui, base) = dashboard(&url);
    let (_driver, browser) = browser().await;

    // Runs: the cards count what the database holds.
    browser.goto(&format!("{base}/runs")).await.unwrap();
    let completed = count(
        &db,
        "SELECT count(*) FROM cairn.runs WHERE status = 'completed'",
    )
    .await;
    assert!(completed >= 9, "three phases of three streams: {completed}");
    let card = text(&browser, r#"a.card[data-status="completed"] b"#).await;
    assert_eq!(card, completed.to_string());
    let workflows = text(&browser, "table.runs tbody").await;
    for workflow in ["sync.backfill", "sync.incremental", "sync.reconcile"] {
        assert!(
            workflows.contains(workflow),
            "{workflow} listed:\n{workflows}"
        );
    }
    shoot(&browser, "runs").await;

    // A backfill's page: its steps on the timeline.
    browser
        .goto(&format!("{base}/runs?workflow=sync.backfill"))
        .await
        .unwrap();
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("table.runs tbody tr td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let heading = text(&browser, "main h1").await;
    assert!(heading.contains("sync.backfill"), "{heading}");
    let steps = browser
        .find_all(Locator::Css("table.steps tbody tr"))
        .await
        .unwrap();
    assert!(
        steps.len() >= 3,
        "a backfill lands several pages: {}",
        steps.len()
    );
    assert!(
        browser
            .find_all(Locator::Css("svg.timeline rect"))
            .await
            .unwrap()
            .len()
            == steps.len(),
        "each step has its bar"
    );
    shoot(&browser, "run").await;

    // Syncs: the three streams, complete, with their rows.
    browser.goto(&format!("{base}/syncs")).await.unwrap();
    for stream in ["contacts", "companies", "deals"] {
        let row = text(&browser, &format!(r#"tr[data-stream="{stream}"]"#)).await;
        assert!(row.contains("complete"), "{stream}: {row}");
        let live = count(
            &db,
            &format!("SELECT count(*) FROM cairn_demo.{stream} WHERE _deleted_at IS NULL"),
        )
        .await;
        assert!(
            row.contains(&live.to_string()),
            "{stream} shows its {live} rows: {row}"
        );
    }
    shoot(&browser, "syncs").await;

    for (page, title) in [
        ("budgets", "Rate budgets"),
        ("schedules", "Schedules"),
        ("dead-letters", "Dead letters"),
        ("quarantine", "Quarantine"),
    ] {
        browser.goto(&format!("{base}/{page}")).await.unwrap();
        assert_eq!(text(&browser, "main h1").await, title);
        shoot(&browser, page).await;
    }

    // A vendor's markup is shown as text and runs nothing.
    browser.goto(&format!("{base}/alerts")).await.unwrap();
    let alerts = text(&browser, "table.alerts").await;
    assert!(alerts.contains(HOSTILE), "shown as text: {alerts}");
    let pwned = browser
        .execute("return document.body.dataset.pwned || null;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, serde_json::Value::Null, "the vendor's markup ran");
    shoot(&browser, "alerts").await;

    // Live: a run started elsewhere appears without a reload.
    browser.goto(&format!("{base}/runs")).await.unwrap();
    let pending = text(&browser, r#"a.card[data-status="pending"] b"#).await;
    assert_eq!(pending, "0");
    let started = run(&url, &["start", "tour", "--queue", "nobody", "--json"]);
    assert!(started.status.success());
    let run_id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::XPath(
            r#"//a[@data-status="pending"]/b[text()="1"]"#,
        ))
        .await
        .expect("the page redrew itself when the run was started");

    // Acting: signed out the button says so; signed in it cancels the run.
    browser
        .goto(&format!("{base}/runs/{run_id}"))
        .await
        .unwrap();
    let off = text(&browser, ".actions").await;
    assert!(off.contains("Cancel (sign in)"), "{off}");
    browser
        .goto(&format!("{base}/login?next=/runs/{run_id}"))
        .await
        .unwrap();
    browser
        .find(Locator::Css(r#"input[name="token"]"#))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(r#".actions form.action button"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::XPath(
            r#"//dl[@class="facts"]//span[text()="cancelled"]"#,
        ))
        .await
        .expect("the run page shows the run cancelled");
    let status: String = sqlx::query_scalar("SELECT status FROM cairn.runs WHERE id = $1::uuid")
        .bind(&run_id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    shoot(&browser, "cancelled").await;
    browser.close().await.unwrap();
}
