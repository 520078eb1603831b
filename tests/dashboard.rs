//! The dashboard over real HTTP against a database that real syncs filled: every page
//! answers, a vendor's markup (in a field name, in an error body) is only ever text,
//! and an action needs the token, the session's CSRF token and the dashboard's own
//! origin.

mod support;

use std::time::Duration;

use cairn::sandbox::{Mutation, SandboxConfig, Stream};
use cairn::ui::{Auth, Dashboard, Metrics, Options};
use cairn::workflows::sync;
use cairn::{Client, RunStatus};
use cairn_testkit::{TestDb, run_to_end};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use support::builtin_worker;
use support::vendor::{STRIPE, input, landed, refusing, start};

const TOKEN: &str = "dashboard-test-token-0123";
const FIELD: &str = "<script>window.pwnedByField=1</script>";
const ERROR_BODY: &str = "<script>window.pwnedByError=1</script><img src=x onerror=alert(1)>";
const PAGES: [&str; 8] = [
    "/runs",
    "/syncs",
    "/schedules",
    "/budgets",
    "/dead-letters",
    "/quarantine",
    "/alerts",
    "/runs?status=failed&since=1h",
];

/// A dashboard on an ephemeral loopback port; dropped with the test's runtime.
async fn serve(db: &TestDb, auth: Auth) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dashboard = Dashboard::new(
        db.pool().clone(),
        Options {
            auth,
            metrics: Metrics::install().unwrap(),
        },
    );
    tokio::spawn(dashboard.serve(listener, std::future::pending()));
    base
}

fn http() -> reqwest::Client {
    cairn::connectors::http::install_tls_provider();
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The page's one `<script>` is the dashboard's own file; the vendor's markup is text.
fn assert_inert(page: &str, html: &str) {
    assert_eq!(
        html.matches("<script").count(),
        1,
        "{page} holds a script tag besides the dashboard's own:\n{html}"
    );
    assert!(
        html.contains(r#"<script src="/assets/app.js" defer>"#),
        "{page}"
    );
    assert!(
        !html.contains("<img"),
        "{page} holds a raw <img> tag:\n{html}"
    );
}

#[tokio::test]
async fn vendor_markup_is_text_and_actions_need_the_token_from_this_site() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    let worker = builtin_worker(db.pool().clone(), 4);

    // A vendor whose records grow a field named with markup, synced for real.
    let vendor = start(SandboxConfig {
        records_per_stream: 60,
        ..SandboxConfig::default()
    })
    .await;
    let backfill = run_to_end(
        &client,
        sync::BACKFILL,
        &input(STRIPE, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(backfill.summary.status, RunStatus::Completed);
    vendor
        .vendor()
        .mutate(
            Stream::Contacts,
            Mutation::AddField {
                field: FIELD.to_owned(),
                value: Some(serde_json::json!("<b>bold</b>")),
                touch: true,
            },
        )
        .unwrap();
    let incremental = run_to_end(
        &client,
        sync::INCREMENTAL,
        &input(STRIPE, &vendor, Stream::Contacts),
    )
    .await;
    assert_eq!(incremental.summary.status, RunStatus::Completed);
    // The field named with markup landed like any other: the warehouse equals the vendor.
    assert_eq!(
        landed(&db, "sandbox-stripe", "sandbox_stripe", Stream::Contacts).await,
        vendor.vendor().checksum(Stream::Contacts)
    );

    // A vendor that answers every request 400 with markup in the body.
    let hostile = refusing(ERROR_BODY).await;
    let failed = run_to_end(
        &client,
        sync::BACKFILL,
        &input(STRIPE, &hostile, Stream::Deals),
    )
    .await;
    assert_eq!(failed.summary.status, RunStatus::Failed);
    worker.shutdown().await;

    let base = serve(&db, Auth::with_token(TOKEN).unwrap()).await;
    let http = http();
    let mut shown_markup = false;
    for page in PAGES.iter().map(|p| p.to_string()).chain([
        format!("/runs/{}", failed.summary.id),
        format!("/runs/{}", incremental.summary.id),
    ]) {
        let response = http.get(format!("{base}{page}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{page}: {csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let html = response.text().await.unwrap();
        assert_inert(&page, &html);
        shown_markup |= html.contains("&lt;script&gt;window.pwnedBy");
    }
    assert!(
        shown_markup,
        "the vendor's markup should be shown, as text, somewhere"
    );
    let dead = http
        .get(format!("{base}/dead-letters"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dead.contains(&failed.summary.id.to_string()),
        "the failed run is a dead letter"
    );
    assert!(
        dead.contains("&lt;script&gt;window.pwnedByError=1&lt;/script&gt;"),
        "{dead}"
    );

    // Acting: refused without a token, with a wrong one, from another site, without the
    // session's CSRF token; accepted with all of it.
    let retry = format!("{base}/dead-letters/{}/retry", failed.summary.id);
    let anonymous = http.post(&retry).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = http
        .post(&retry)
        .bearer_auth("dashboard-test-token-0124")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let host = base.trim_start_matches("http://");
    let refused_login = http
        .post(format!("{base}/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused_login.status(), StatusCode::FORBIDDEN);
    let bad_login = http
        .post(format!("{base}/login"))
        .header("origin", &base)
        .form(&[("token", "not-the-token-at-all")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_login.status(), StatusCode::UNAUTHORIZED);
    let login = http
        .post(format!("{base}/login"))
        .header("origin", &base)
        .form(&[("token", TOKEN), ("next", "/dead-letters")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/dead-letters");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie must not carry the token"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let signed_page = http
        .get(format!("{base}/dead-letters"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!signed_page.contains(TOKEN), "no page shows the token");
    let csrf = signed_page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a signed-in page's forms carry a CSRF token")
        .to_owned();

    let without_csrf = http
        .post(&retry)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(without_csrf.status(), StatusCode::FORBIDDEN);
    let cross_site = http
        .post(&retry)
        .header("cookie", &session)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let fetch_cross = http
        .post(&retry)
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_cross.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        client.show(failed.summary.id).await.unwrap().summary.status,
        RunStatus::Failed,
        "no refused request changed anything"
    );
    let accepted = http
        .post(&retry)
        .header("cookie", &session)
        .header("origin", &base)
        .header("host", host)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        accepted.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        accepted.text().await
    );
    assert_eq!(
        client.show(failed.summary.id).await.unwrap().summary.status,
        RunStatus::Pending,
        "the retry put the run back in the queue"
    );
}

#[tokio::test]
async fn without_a_token_actions_are_off_and_bearer_scripts_can_act_with_one() {
    let db = TestDb::new().await;
    let client = Client::new(db.pool().clone());
    // A run nobody executes: it waits, so it can be cancelled.
    let run = client
        .start(
            "tour",
            &serde_json::json!({}),
            &cairn::StartOptions::default(),
        )
        .await
        .unwrap();

    let off = serve(&db, Auth::none()).await;
    let http = http();
    let page = http
        .get(format!("{off}/runs/{}", run.run_id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Cancel (off)"), "{page}");
    let refused = http
        .post(format!("{off}/runs/{}/cancel", run.run_id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("CAIRN_UI_TOKEN"));

    let on = serve(&db, Auth::with_token(TOKEN).unwrap()).await;
    let cancelled = http
        .post(format!("{on}/runs/{}/cancel", run.run_id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        client.show(run.run_id).await.unwrap().summary.status,
        RunStatus::Cancelled
    );
    let missing = http
        .get(format!("{on}/runs/not-a-run"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let unknown = http
        .get(format!("{on}/runs/{}", uuid_like()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad_filter = http
        .get(format!("{on}/runs?since=forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_filter.status(), StatusCode::BAD_REQUEST);
}

fn uuid_like() -> String {
    "00000000-0000-7000-8000-000000000000".to_owned()
}
