//! What `cairn sync` refuses before anything runs: secrets written into a source file,
//! URLs that would send credentials in the clear, and no error that repeats a secret;
//! and commands piped into a reader that goes away end quietly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use cairn_testkit::TestDb;
use support::vendor::HUBSPOT;
use support::{cairn, run};

const SECRET: &str = "sk_live_Zx81hunter2";

fn write_source(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn with_auth(auth: &str) -> String {
    HUBSPOT.replace("[auth]\nkind = \"none\"", auth)
}

#[tokio::test]
async fn secrets_written_into_a_source_file_are_refused_without_being_shown() {
    let db = TestDb::new().await;
    let cases = [
        (
            "literal",
            with_auth(&format!("[auth]\nkind = \"bearer\"\ntoken = \"{SECRET}\"")),
            "auth.token",
        ),
        (
            "number",
            with_auth("[auth]\nkind = \"bearer\"\ntoken = 81726354"),
            "auth.token",
        ),
        (
            "command",
            with_auth(&format!(
                "[auth]\nkind = \"bearer\"\ntoken = {{ command = \"echo {SECRET}\" }}"
            )),
            "auth.token",
        ),
        (
            "env-value",
            with_auth(&format!(
                "[auth]\nkind = \"bearer\"\ntoken = {{ env = \"{SECRET}!\" }}"
            )),
            "auth.token",
        ),
        (
            "header",
            HUBSPOT.replacen(
                "[auth]",
                &format!("[headers]\nAuthorization = \"Bearer {SECRET}\"\n\n[auth]"),
                1,
            ),
            "headers.Authorization",
        ),
        (
            "api-key-header",
            HUBSPOT.replacen(
                "[auth]",
                &format!("[headers]\nX-Api-Key = \"{SECRET}\"\n\n[auth]"),
                1,
            ),
            "headers.X-Api-Key",
        ),
        (
            "header-type",
            HUBSPOT.replacen("[auth]", "[headers]\nX-Api-Key = 81726354\n\n[auth]", 1),
            "headers.X-Api-Key",
        ),
        (
            "unterminated",
            with_auth(&format!("[auth]\nkind = \"bearer\"\ntoken = \"{SECRET}\n")),
            "auth.token",
        ),
        (
            "bare",
            with_auth(&format!("[auth]\nkind = \"bearer\"\ntoken = {SECRET}\n")),
            "auth.token",
        ),
        (
            "bare-header",
            HUBSPOT.replacen(
                "[auth]",
                &format!("[headers]\nX-Api-Key = {SECRET}\n\n[auth]"),
                1,
            ),
            "headers",
        ),
        (
            "token-url",
            with_auth(
                "[auth]\nkind = \"oauth2\"\ntoken_url = \"http://login.example.com/token\"\n\
                 client_id = { env = \"A\" }\nclient_secret = { env = \"B\" }",
            ),
            "auth.token_url",
        ),
    ];
    for (name, text, field) in cases {
        let path = write_source(name, &text);
        let output = run(
            &db.url(),
            &["sync", path.to_str().unwrap(), "--stream", "contacts"],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(field), "{name} names {field}: {stderr}");
        for hidden in [SECRET, "81726354", "Zx81"] {
            assert!(!stderr.contains(hidden), "{name} shows the value: {stderr}");
        }
    }
}

#[tokio::test]
async fn plain_http_to_another_host_is_refused_at_the_edge() {
    let db = TestDb::new().await;
    let insecure = HUBSPOT.replace(
        "base_url = \"http://127.0.0.1:8787\"",
        "base_url = \"http://api.example.com\"",
    );
    let path = write_source("insecure", &insecure);
    let output = run(
        &db.url(),
        &["sync", path.to_str().unwrap(), "--stream", "contacts"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("base_url") && stderr.contains("allow_insecure_http"),
        "{stderr}"
    );

    let path = write_source("loopback", HUBSPOT);
    for url in [
        "http://api.example.com",
        "ftp://127.0.0.1/",
        "https://u:pw-Zx81@api.example.com",
    ] {
        let output = run(
            &db.url(),
            &[
                "sync",
                path.to_str().unwrap(),
                "--stream",
                "contacts",
                "--base-url",
                url,
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(!stderr.contains("Zx81"), "{stderr}");
    }
    let opted_in = insecure.replacen("name = ", "allow_insecure_http = true\nname = ", 1);
    let path = write_source("opted-in", &opted_in);
    let output = run(
        &db.url(),
        &[
            "sync",
            path.to_str().unwrap(),
            "--stream",
            "contacts",
            "--json",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_command_piped_into_a_reader_that_leaves_exits_quietly() {
    let db = TestDb::new().await;
    // Enough runs that listing them fills the pipe long after the reader has gone.
    let client = cairn::Client::new(db.pool().clone());
    let parked = cairn::StartOptions {
        queue: "nobody-listens".to_owned(),
        ..cairn::StartOptions::default()
    };
    for n in 0..2_000 {
        client.start("edge.noop", &n, &parked).await.unwrap();
    }
    for args in [
        &["runs", "list"][..],
        &["runs", "list", "--json"],
        &["dlq", "list"],
        &["--help"],
    ] {
        let mut child = cairn()
            .env("DATABASE_URL", db.url())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is gone: everything left to print meets a closed pipe.
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
