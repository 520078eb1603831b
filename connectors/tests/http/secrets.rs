//! Secrets never appear in logs or errors, whatever happens to the requests.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_connectors::auth::{AuthConfig, KeyLocation};
use cairn_connectors::http::HttpClient;
use cairn_connectors::secret::SecretSource;
use cairn_sandbox::{FaultConfig, FaultKind, OAuthConfig, SandboxConfig, Secret};

use crate::{config, given, sandbox};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_or_errors() {
    const CLIENT_SECRET: &str = "oauth-S3CRET-7f3a";
    const API_KEY: &str = "apikey-S3CRET-91bc";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut seen = Vec::new();

    let vendor = sandbox(SandboxConfig {
        auth: cairn_sandbox::AuthConfig::OAuth(OAuthConfig {
            client_id: "cid".to_owned(),
            client_secret: Secret::new(CLIENT_SECRET),
            token_ttl: Duration::from_secs(60),
        }),
        faults: FaultConfig {
            rate: 0.5,
            kinds: vec![
                FaultKind::Unavailable,
                FaultKind::Malformed,
                FaultKind::Reset,
            ],
            slow_delay: Duration::from_millis(10),
        },
        ..SandboxConfig::default()
    })
    .await;
    // Secrets reach the process the way they do in production: from files.
    let dir = std::env::temp_dir().join(format!("cairn-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("client_secret");
    let key_file = dir.join("api_key");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    std::fs::write(&key_file, API_KEY).unwrap();
    let mut cfg = config(vendor.base_url());
    cfg.auth = AuthConfig::Oauth2 {
        grant: Default::default(),
        credential: None,
        token_url: "/oauth/token".to_owned(),
        client_id: given("cid"),
        client_secret: SecretSource::File(secret_file),
        scope: None,
        refresh_margin_secs: 5,
    };
    seen.push(format!("{cfg:?}"));
    let client = HttpClient::new(cfg, None).await.unwrap();
    let mut failures = 0;
    for _ in 0..20 {
        match client.get("/crm/v3/objects/contacts", &[]).await {
            Ok(response) => seen.push(format!("{response:?}")),
            Err(err) => {
                failures += 1;
                seen.push(format!("{err} {err:?}"));
                seen.push(cairn_runner::Error::from(err).to_string());
            }
        }
    }
    assert!(failures > 0, "faults were injected");

    let mut cfg = config(vendor.base_url());
    cfg.auth = AuthConfig::ApiKey {
        name: "api_key".to_owned(),
        location: KeyLocation::Query,
        value: SecretSource::File(key_file),
    };
    let client = HttpClient::new(cfg, None).await.unwrap();
    let err = client
        .get("/crm/v3/objects/contacts", &[])
        .await
        .unwrap_err();
    seen.push(format!("{err} {err:?}"));
    seen.push(format!("{:?}", Secret::new(API_KEY)));

    std::fs::remove_dir_all(&dir).unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "logging was captured");
    for text in seen.iter().chain(std::iter::once(&logs)) {
        assert!(
            !text.contains(CLIENT_SECRET),
            "the client secret leaked: {text}"
        );
        assert!(!text.contains(API_KEY), "the API key leaked: {text}");
    }
}
