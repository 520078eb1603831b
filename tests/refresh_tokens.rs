//! OAuth refresh tokens that the vendor rotates at every use, through `cairn worker`
//! processes: concurrent runs on two workers refresh once; a worker SIGKILLed while the vendor's
//! rotating answer is on its way (the new refresh token lost) leaves a credential the
//! next run still authenticates with; a revoked token fails the run as `auth` with an
//! alert that says how to authorize again, and `cairn auth set` recovers. With a key
//! configured, no token is readable in the `cairn` schema.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::RunId;
use cairn::sandbox::{AuthConfig, OAuthConfig, SandboxConfig, SandboxHandle, Secret, Stream};
use cairn::seal::{Keyring, Sealer};
use cairn::workflows::sync;
use cairn::{Client, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use support::vendor::{HUBSPOT, input, start};
use support::{WorkerProcess, cairn};

const CLIENT_ID: &str = "cairn-refresh-client";
const CLIENT_SECRET: &str = "cs-refresh-7Kq";

fn source_toml() -> String {
    HUBSPOT.replace(
        "[auth]\nkind = \"none\"",
        "[auth]\nkind = \"oauth2\"\ngrant = \"refresh_token\"\ntoken_url = \"/oauth/token\"\n\
         client_id = { env = \"CRM_CLIENT_ID\" }\nclient_secret = { env = \"CRM_CLIENT_SECRET\" }",
    )
}

struct Setup {
    db: TestDb,
    vendor: SandboxHandle,
    key: String,
    dir: PathBuf,
    client: Client,
}

impl Setup {
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("CRM_CLIENT_ID", CLIENT_ID),
            ("CRM_CLIENT_SECRET", CLIENT_SECRET),
            ("CAIRN_ENCRYPTION_KEY", self.key.as_str()),
        ]
    }

    fn worker(&self) -> WorkerProcess {
        WorkerProcess::spawn_with_env(&self.db.url(), &[], &self.env())
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        cairn()
            .env("DATABASE_URL", self.db.url())
            .envs(self.env())
            .args(args)
            .output()
            .unwrap()
    }

    /// A person authorizes and the token is stored with `cairn auth set`.
    fn authorize(&self) {
        let file = self.dir.join("refresh_token");
        std::fs::write(&file, self.vendor.vendor().authorize().expose()).unwrap();
        let out = self.cli(&[
            "auth",
            "set",
            "sandbox-hubspot",
            "--refresh-token-file",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&file).unwrap();
    }

    async fn start_syncs(&self, streams: &[Stream]) -> Vec<RunId> {
        let mut runs = Vec::new();
        for stream in streams {
            let mut sync_input = input(&source_toml(), &self.vendor, *stream);
            sync_input.source_file = "refresh.toml".to_owned();
            let run = self
                .client
                .start(sync::INCREMENTAL, &sync_input, &StartOptions::default())
                .await
                .unwrap();
            runs.push(run.run_id);
        }
        runs
    }

    async fn wait(&self, run: RunId) -> cairn::RunDetail {
        self.client
            .wait(run, Some(Duration::from_secs(120)))
            .await
            .unwrap()
    }

    async fn completed(&self, run: RunId) {
        let done = self.wait(run).await;
        assert_eq!(
            done.summary.status,
            RunStatus::Completed,
            "{:?}",
            done.error
        );
    }

    /// The shared access token forgotten, as after a long idle period: the next run
    /// must refresh.
    async fn expire_access_token(&self) {
        sqlx::query(
            "UPDATE cairn.oauth_tokens
                SET access_token = NULL, access_token_sealed = NULL, access_expires_at = NULL",
        )
        .execute(self.db.pool())
        .await
        .unwrap();
    }

    async fn rotations(&self) -> i64 {
        sqlx::query_scalar("SELECT rotations FROM cairn.oauth_tokens")
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-refresh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn setup(name: &str) -> Setup {
    let db = TestDb::new().await;
    let vendor = start(SandboxConfig {
        records_per_stream: 150,
        auth: AuthConfig::OAuth(OAuthConfig {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Secret::new(CLIENT_SECRET),
            token_ttl: Duration::from_secs(3600),
        }),
        ..SandboxConfig::default()
    })
    .await;
    let key = Keyring::generate().as_str().to_owned();
    let client = Client::new(db.pool().clone())
        .with_sealer(Sealer::new(Keyring::parse(&key, "test").unwrap()));
    let setup = Setup {
        db,
        vendor,
        key,
        dir: scratch(name),
        client,
    };
    setup.authorize();
    setup
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_refresh_tokens_survive_concurrency_a_sigkill_and_revocation() {
    let s = setup("rotation").await;

    // Three runs at once on two worker processes need a token: one refresh, shared.
    let workers = [s.worker(), s.worker()];
    for run in s.start_syncs(&Stream::ALL).await {
        s.completed(run).await;
    }
    let (stats, _) = s.vendor.vendor().refresh_stats();
    assert_eq!(
        stats.refreshes, 1,
        "concurrent workers refresh once: {stats:?}"
    );
    assert_eq!(s.rotations().await, 1);
    for worker in workers {
        assert_eq!(worker.terminate(), Some(0));
    }

    // The worst moment: the vendor has rotated the refresh token and its answer is on
    // its way when the worker dies. The new token is lost; the stored one must do.
    s.expire_access_token().await;
    s.vendor
        .vendor()
        .set_token_stall(Some(Duration::from_secs(60)));
    let worker = s.worker();
    let runs = s.start_syncs(&[Stream::Contacts]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while s.vendor.vendor().refresh_stats().1 == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.kill();
    s.vendor.vendor().set_token_stall(None);
    let worker = s.worker();
    s.completed(runs[0]).await;
    let (stats, _) = s.vendor.vendor().refresh_stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(
        stats.grace_refreshes, 1,
        "the stored token refreshed again: {stats:?}"
    );
    assert_eq!(s.rotations().await, 2);

    // With a key, no token the vendor issued is readable in the cairn schema.
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM cairn.oauth_tokens t")
            .fetch_one(s.db.pool())
            .await
            .unwrap();
    for token in s.vendor.vendor().issued_tokens() {
        assert!(!dump.contains(&token));
    }
    assert!(!dump.contains("rt_"), "refresh tokens are sealed");

    // Revoked (or idled out): the run fails as `auth`, and an alert says what to do.
    s.vendor.vendor().revoke_refresh_tokens();
    s.expire_access_token().await;
    let runs = s.start_syncs(&[Stream::Deals]).await;
    let done = s.wait(runs[0]).await;
    assert_eq!(done.summary.status, RunStatus::Failed);
    let error = done.error.unwrap().to_string();
    assert!(error.contains("\"auth\""), "{error}");
    assert!(
        error.contains("cairn auth set sandbox-hubspot --refresh-token-file"),
        "{error}"
    );
    let alert: String = sqlx::query_scalar(
        "SELECT message FROM cairn.alerts WHERE kind = 'auth_refused' AND resolved_at IS NULL",
    )
    .fetch_one(s.db.pool())
    .await
    .unwrap();
    assert!(
        alert.contains("cairn auth set sandbox-hubspot --refresh-token-file F"),
        "{alert}"
    );
    let shown = s.cli(&["auth", "show", "sandbox-hubspot"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("REFUSED"));

    // A person authorizes again: the alert resolves and runs authenticate.
    s.authorize();
    let runs = s.start_syncs(&[Stream::Deals]).await;
    s.completed(runs[0]).await;
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.alerts WHERE kind = 'auth_refused' AND resolved_at IS NULL",
    )
    .fetch_one(s.db.pool())
    .await
    .unwrap();
    assert_eq!(open, 0);
    assert_eq!(worker.terminate(), Some(0));
    remove(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_sync_refuses_a_source_whose_refresh_token_is_missing_or_refused() {
    let s = setup("check").await;
    let file = s.dir.join("source.toml");
    std::fs::write(&file, source_toml()).unwrap();
    let sync = |s: &Setup| {
        s.cli(&[
            "sync",
            file.to_str().unwrap(),
            "--stream",
            "contacts",
            "--base-url",
            s.vendor.base_url(),
        ])
    };
    let runs = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cairn.runs")
            .fetch_one(s.db.pool())
            .await
            .unwrap()
    };

    // Never stored (forgotten here): refused before any run exists.
    sqlx::query("DELETE FROM cairn.oauth_tokens")
        .execute(s.db.pool())
        .await
        .unwrap();
    let out = sync(&s);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no OAuth refresh token is stored for sandbox-hubspot")
            && said.contains("cairn auth set sandbox-hubspot --refresh-token-file F"),
        "{said}"
    );
    assert_eq!(runs().await, 0);

    // Refused by the vendor earlier: refused too, saying so.
    s.authorize();
    sqlx::query("UPDATE cairn.oauth_tokens SET refused_at = now(), refusal = 'invalid_grant'")
        .execute(s.db.pool())
        .await
        .unwrap();
    let out = sync(&s);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused the stored refresh token"), "{said}");
    assert_eq!(runs().await, 0);

    // Stored and fine: the run starts.
    s.authorize();
    let out = sync(&s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(runs().await, 1);
    remove(&s.dir);
}
