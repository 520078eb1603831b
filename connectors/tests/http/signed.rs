//! Signed requests: a [`Signer`]'s headers are made afresh for every request, let a
//! signing vendor in, and never leave the source's origin.

use cairn_connectors::error::Category;
use cairn_connectors::http::HttpClient;
use cairn_connectors::http::sign::{Signer, Unsigned};
use cairn_sandbox::signature::{sign, signed_text};
use cairn_sandbox::{AuthConfig, Hostile, OtherHost, SandboxConfig, Secret};

use crate::{CONTACTS_PATH, config, page, sandbox};

const KEY: &str = "signing-key-3b8e";

/// Signs as the sandbox wants, at a timestamp `offset` seconds from now.
struct SandboxSigner {
    key: &'static str,
    offset: i64,
}

impl Signer for SandboxSigner {
    fn sign(&self, request: &Unsigned<'_>) -> Result<Vec<(String, String)>, String> {
        let at = chrono::Utc::now().timestamp() + self.offset;
        let text = signed_text(request.method, request.path, request.query, at);
        Ok(vec![
            ("X-Signature-Timestamp".to_owned(), at.to_string()),
            ("X-Signature".to_owned(), sign(self.key.as_bytes(), &text)),
        ])
    }
}

fn signed() -> SandboxConfig {
    SandboxConfig {
        auth: AuthConfig::Signed(Secret::new(KEY)),
        ..SandboxConfig::default()
    }
}

#[tokio::test]
async fn a_signing_vendor_lets_in_only_fresh_signatures_under_its_key() {
    let vendor = sandbox(signed()).await;
    let client = |key: &'static str, offset: i64| {
        HttpClient::new(
            config(vendor.base_url()).with_signer(SandboxSigner { key, offset }),
            None,
        )
    };
    let good = client(KEY, 0).await.unwrap();
    for _ in 0..3 {
        let response = good.get(CONTACTS_PATH, &page()).await.unwrap();
        assert_eq!(response.status, 200);
    }
    for (key, offset, why) in [
        ("another-key", 0, "a signature under another key"),
        (KEY, -3600, "a signature an hour old"),
    ] {
        let err = client(key, offset)
            .await
            .unwrap()
            .get(CONTACTS_PATH, &page())
            .await
            .unwrap_err();
        assert_eq!(err.category(), Category::AuthDrift, "{why}: {err}");
    }
    let unsigned = HttpClient::new(config(vendor.base_url()), None)
        .await
        .unwrap();
    let err = unsigned.get(CONTACTS_PATH, &page()).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

#[tokio::test]
async fn signatures_go_only_to_the_sources_origin() {
    let vendor = sandbox(signed()).await;
    let elsewhere = OtherHost::start(&vendor, "127.0.0.2:0".parse().unwrap())
        .await
        .expect("binding 127.0.0.2");
    vendor.vendor().set_hostile(Hostile {
        redirect_to: Some(elsewhere.origin()),
        ..Hostile::default()
    });
    let client = HttpClient::new(
        config(vendor.base_url())
            .with_signer(SandboxSigner {
                key: KEY,
                offset: 0,
            })
            .allow_redirect_host("127.0.0.2"),
        None,
    )
    .await
    .unwrap();
    let response = client.get(CONTACTS_PATH, &page()).await.expect("followed");
    assert_eq!(response.status, 200);
    let received = elsewhere.received();
    let text = received.last().expect("the other host was asked").text();
    assert!(
        !text.contains("x-signature"),
        "a signature left the origin: {text}"
    );
}
