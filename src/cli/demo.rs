//! `cairn demo`: a rate-limited CRM synced into Postgres, end to end, in one command.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_connectors::warehouse::Warehouse;
use cairn_runner::{
    Client, Registry, RunDetail, RunFilter, RunStatus, StartOptions, Worker, WorkerConfig,
};
use cairn_sandbox::{Mutation, RateLimit, Sandbox, SandboxConfig, Stream};
use cairn_workflows::sync::SyncInput;
use tokio::sync::oneshot;

use super::sync::{Mode, follow, say_throttled, summarise};
use super::{Failure, Outcome, connect};

/// The Stripe-style profile, built in so the demo runs from any directory.
const PROFILE: &str = include_str!("../../examples/sources/sandbox-stripe.toml");
const PROFILE_FILE: &str = "examples/sources/sandbox-stripe.toml";
/// The demo lands in a schema of its own, recreated on every run.
const SCHEMA: &str = "cairn_demo";
/// The name of the demo's source, in its profile.
const SOURCE: &str = "sandbox-stripe";
const STREAMS: [Stream; 3] = [Stream::Contacts, Stream::Companies, Stream::Deals];

/// Starts the sandbox vendor and a worker in this process, backfills three streams,
/// changes the vendor's data and schema, runs incremental syncs and a reconciliation,
/// and checks the warehouse against the vendor.
pub(crate) async fn run(url: Option<&str>, registry: Arc<Registry>) -> Outcome {
    let pool = connect(url, 12).await?;
    outln!("cairn demo: a rate-limited CRM API synced into Postgres\n");
    crate::migrate(&pool).await?;
    reset(&pool).await?;

    let sandbox = Sandbox::start(
        SandboxConfig {
            records_per_stream: 2_000,
            seed: 7,
            rate_limit: Some(RateLimit::new(100.0, 20)),
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().expect("a socket address"),
    )
    .await
    .map_err(|err| Failure::failed(format!("cannot start the sandbox vendor: {err}")))?;
    outln!(
        "• sandbox vendor at {} — 2,000 contacts, companies and deals; 100 requests/s",
        sandbox.base_url()
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let worker = Worker::new(
        pool.clone(),
        Arc::clone(&registry),
        WorkerConfig {
            concurrency: 8,
            ..WorkerConfig::default()
        },
    );
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    outln!("• a worker with 8 slots, in this process\n");

    let client = Client::new(pool.clone()).with_registry(registry);
    let outcome = scenario(&client, sandbox.base_url(), &sandbox, &pool).await;
    let _ = stop.send(());
    let _ = worker.await;
    sandbox.shutdown().await;
    outcome
}

async fn scenario(
    client: &Client,
    base_url: &str,
    sandbox: &cairn_sandbox::SandboxHandle,
    pool: &sqlx::PgPool,
) -> Outcome {
    let vendor = sandbox.vendor();
    phase(
        client,
        base_url,
        Mode::Backfill,
        "1. backfill: the full history of each stream",
    )
    .await?;

    outln!("2. the vendor changes: 40 contacts updated, 15 created, 25 deleted,");
    outln!("   a new field `loyalty_tier` on every contact, 10 deals updated");
    let changes = [
        (Stream::Contacts, Mutation::Update { count: 40 }),
        (Stream::Contacts, Mutation::Create { count: 15 }),
        (Stream::Contacts, Mutation::Delete { count: 25 }),
        (
            Stream::Contacts,
            Mutation::AddField {
                field: "loyalty_tier".to_owned(),
                value: Some(serde_json::json!("gold")),
                touch: true,
            },
        ),
        (Stream::Deals, Mutation::Update { count: 10 }),
    ];
    for (stream, change) in changes {
        vendor
            .mutate(stream, change)
            .map_err(|err| Failure::failed(format!("the sandbox refused a change: {err}")))?;
    }
    outln!();
    phase(
        client,
        base_url,
        Mode::Incremental,
        "3. incremental: only what changed",
    )
    .await?;
    fills(client).await?;
    phase(
        client,
        base_url,
        Mode::Reconcile,
        "4. reconcile: deletes the vendor made",
    )
    .await?;

    outln!("5. the warehouse against the vendor (checksums over every live record):");
    let warehouse =
        Warehouse::new(SOURCE, SCHEMA).map_err(|err| Failure::failed(err.to_string()))?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|err| Failure::failed(err.to_string()))?;
    let mut all_equal = true;
    for stream in STREAMS {
        let ours = warehouse
            .checksum(&mut conn, stream.name())
            .await
            .map_err(|err| Failure::failed(err.to_string()))?;
        let theirs = vendor.checksum(stream);
        let live = vendor.records(stream).len();
        let verdict = if ours == theirs { "equal" } else { "DIFFERENT" };
        all_equal &= ours == theirs;
        outln!(
            "   {:<10} {live:>5} live records   checksum {verdict}",
            stream.name()
        );
    }
    outln!();
    // On a private server (no DATABASE_URL) there is nothing left to look around in.
    if std::env::var_os("DATABASE_URL").is_some() {
        outln!(
            "Look around:  psql \"$DATABASE_URL\" -c 'SELECT id, email, loyalty_tier, _deleted_at FROM {SCHEMA}.contacts LIMIT 5'"
        );
        outln!(
            "              cairn ui    cairn runs list    cairn runs show <run-id>    cairn alerts"
        );
    }
    Ok(if all_equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Starts `mode` for every stream and waits for the runs.
async fn phase(client: &Client, base_url: &str, mode: Mode, title: &str) -> Result<(), Failure> {
    outln!("{title}");
    let mut runs = Vec::new();
    for stream in STREAMS {
        let mut input = SyncInput::new(
            PROFILE.to_owned(),
            PROFILE_FILE.to_owned(),
            stream.name().to_owned(),
        );
        input.base_url = Some(base_url.to_owned());
        input.warehouse_schema = Some(SCHEMA.to_owned());
        let started = client
            .start(mode.workflow(), &input, &StartOptions::default())
            .await?;
        runs.push((stream.name().to_owned(), started.run_id));
    }
    let followed = follow(client, &runs, std::io::stderr().is_terminal()).await?;
    let ended: Vec<RunDetail> = followed.runs;
    summarise(&ended);
    say_throttled(followed.throttled);
    outln!();
    if ended
        .iter()
        .any(|r| r.summary.status != RunStatus::Completed)
    {
        return Err(Failure::failed(format!(
            "the {mode:?} runs did not all complete"
        )));
    }
    Ok(())
}

/// Follows the column fills the incremental started (new columns reaching rows synced
/// before them), so none is left behind when the demo's vendor goes away.
async fn fills(client: &Client) -> Result<(), Failure> {
    let filter = RunFilter {
        workflow: Some(cairn_workflows::sync::FILL.to_owned()),
        ..RunFilter::default()
    };
    let mut fills: Vec<(String, cairn_runner::RunId)> = Vec::new();
    for run in client.runs(&filter).await? {
        if run.status.is_terminal() {
            continue;
        }
        let input = client.show(run.id).await?.input;
        if input["warehouse_schema"] == SCHEMA {
            let stream = input["stream"].as_str().unwrap_or_default().to_owned();
            fills.push((stream, run.id));
        }
    }
    if fills.is_empty() {
        return Ok(());
    }
    outln!("3b. column fill: the new column reaches rows the incremental did not re-read");
    let followed = follow(client, &fills, std::io::stderr().is_terminal()).await?;
    summarise(&followed.runs);
    outln!();
    Ok(())
}

/// The demo's warehouse schema and sync state start empty every time.
async fn reset(pool: &sqlx::PgPool) -> Result<(), Failure> {
    let fail = |err: &dyn std::fmt::Display| {
        Failure::failed(format!("cannot reset the demo schema: {err}"))
    };
    cairn_connectors::warehouse::drop_schema(pool, SCHEMA)
        .await
        .map_err(|err| fail(&err))?;
    cairn_workflows::sync::forget_schema(pool, SCHEMA)
        .await
        .map_err(|err| fail(&err))?;
    Ok(())
}
