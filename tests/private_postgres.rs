//! Nothing to set up for a first run: without `DATABASE_URL`, `cairn demo` starts a
//! private PostgreSQL from the machine's programs and leaves nothing behind, whether it
//! completes or is interrupted; `cairn dev` keeps one running until `--stop`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sqlx::Connection;
use support::cairn;

/// A scratch directory standing in for the temporary directory, so what the command
/// leaves there can be seen. Readable by the server's own user when the test runs as
/// root.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-private-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Processes whose command line mentions `dir`: a server still running from it.
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

fn demo(tmp: &Path) -> Command {
    let mut command = cairn();
    command
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp)
        .arg("demo");
    command
}

fn assert_nothing_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
    let running = processes_in(tmp);
    assert!(running.is_empty(), "still running: {running:?}");
}

#[test]
fn the_demo_runs_on_a_private_postgres_and_removes_it() {
    let tmp = scratch("demo");
    let output = demo(&tmp).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("starting a private PostgreSQL"), "{stderr}");
    assert!(stdout.contains("checksum equal"), "{stdout}");
    assert!(!stdout.contains("DIFFERENT"), "{stdout}");
    assert_nothing_left(&tmp);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn an_interrupted_demo_removes_its_postgres_too() {
    let tmp = scratch("interrupted");
    let mut child = demo(&tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt it once the demo is syncing: the server is up and in use.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.starts_with("1. backfill"));
    assert!(started.is_some(), "the demo reached its first phase");
    assert!(
        !processes_in(&tmp).is_empty(),
        "a server runs from {}",
        tmp.display()
    );
    let signal = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted; the private PostgreSQL was stopped and removed"),
        "{stderr}"
    );
    assert_nothing_left(&tmp);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[tokio::test]
async fn cairn_dev_keeps_a_server_until_stopped() {
    let tmp = scratch("dev");
    let dev = |args: &[&str]| {
        let output = cairn()
            .env_remove("DATABASE_URL")
            .env("CAIRN_DEV_DIR", tmp.join("dev"))
            .arg("dev")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let url = |text: &str| {
        text.split_whitespace()
            .find(|word| word.starts_with("postgres://"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("a URL in {text:?}"))
    };
    let started = dev(&[]);
    assert!(started.contains("started a dev PostgreSQL"), "{started}");
    let first = url(&started);
    let mut conn = sqlx::PgConnection::connect(&first).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();

    let again = dev(&[]);
    assert!(again.contains("already runs"), "{again}");
    assert_eq!(url(&again), first, "the same server, at the same address");

    let stopped = dev(&["--stop"]);
    assert!(stopped.contains("stopped the dev PostgreSQL"), "{stopped}");
    assert!(processes_in(&tmp).is_empty(), "stopped means stopped");
    assert!(sqlx::PgConnection::connect(&first).await.is_err());
    let twice = dev(&["--stop"]);
    assert!(twice.contains("no dev PostgreSQL runs"), "{twice}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// With neither PostgreSQL's programs nor a container engine, the demo says how to get
/// one, a line per platform, and exits 2 having started nothing.
#[test]
fn without_postgres_or_containers_the_demo_says_how_to_get_one() {
    let tmp = scratch("none");
    let output = demo(&tmp)
        .env("CAIRN_PG_BIN", tmp.join("no-programs-here"))
        .env(
            "DOCKER_HOST",
            format!("unix://{}", tmp.join("no-engine.sock").display()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for platform in [
        "Debian, Ubuntu:",
        "Fedora, RHEL:",
        "macOS:",
        "Windows:",
        "Docker or Podman",
        "DATABASE_URL=",
    ] {
        assert!(stderr.contains(platform), "{platform} in:\n{stderr}");
    }
    assert_nothing_left(&tmp);
    std::fs::remove_dir_all(&tmp).unwrap();
}
