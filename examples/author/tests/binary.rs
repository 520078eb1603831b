//! The project's binary is cairn's command line under the project's own name, with the
//! built-in workflows beside the project's.

use std::process::Command;

use cairn_testkit::TestDb;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_author-example"))
}

#[test]
fn the_binary_answers_with_its_own_name_and_version() {
    let version = binary().arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("author-example {}", env!("CARGO_PKG_VERSION"))
    );
    let help = binary().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Usage: author-example"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_starts_its_own_and_the_built_in_workflows() {
    let db = TestDb::new().await;
    for (workflow, input) in [("trial", r#""dee@example.com""#), ("tour", "{}")] {
        let started = binary()
            .env("DATABASE_URL", db.url())
            .args(["start", workflow, "--input", input, "--json"])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "{workflow}: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }
}
