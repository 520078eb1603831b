//! `bench write`: a pipeline writing records by POST to a destination that allows 20
//! requests a second (the sandbox's token bucket, burst 1) and loses a share of its
//! answers. The baseline is the destination's limit itself: the ratio is the share of it
//! used; beside it, the 429s provoked and the records created twice (must be 0).

use std::time::Duration;

use cairn_runner::{Client, StartOptions};
use cairn_sandbox::{RateLimit, SandboxConfig, Stream, WriteFaults};
use cairn_workflows::sync::{PIPELINE, PipelineInput};
use clap::Args;

use super::report::{Baseline, Machine, Named, Report, Target, share};
use super::sync::{input, run_secs};
use super::{BenchDb, InProcessWorker, at_least, completed, sandbox};
use crate::cli::Failure;

/// Options of `cairn bench write`.
#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// Records written.
    #[arg(long, default_value_t = 400)]
    records: usize,
    /// The destination's limit, requests per second (its file says the same).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Share of the destination's answers lost after the write was applied.
    #[arg(long, default_value_t = 0.02)]
    ack_loss: f64,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

impl WriteArgs {
    pub(super) fn check(&self) -> Result<(), Failure> {
        at_least("--records", self.records as u64, 1)?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(Failure::usage(
                "--rate must be a positive number of requests per second",
            ));
        }
        if !(0.0..=0.5).contains(&self.ack_loss) {
            return Err(Failure::usage("--ack-loss must be between 0 and 0.5"));
        }
        at_least("--in-flight", self.in_flight as u64, 1)?;
        at_least("--timeout", self.timeout, 1)
    }
}

fn destination(rate: f64) -> String {
    format!(
        "[destination]\nname = \"bench-dest\"\nbase_url = \"http://127.0.0.1:9\"\n\n\
         [destination.rate_limit]\nrequests_per_second = {rate:?}\n\n\
         [destination.streams.contacts]\npath = \"/dest/contacts\"\nmode = \"post\"\n\
         source_id_field = \"external_id\"\n"
    )
}

pub(super) async fn run(db: &BenchDb, args: &WriteArgs) -> Result<Report, Failure> {
    let what = "write";
    let pool = db.pool();
    let source = sandbox(
        what,
        SandboxConfig {
            records_per_stream: args.records,
            only: Some(Stream::Contacts),
            ..SandboxConfig::default()
        },
    )
    .await?;
    let dest = sandbox(
        what,
        SandboxConfig {
            records_per_stream: 0,
            rate_limit: Some(RateLimit::new(args.rate, 1)),
            writes: WriteFaults {
                ack_loss: args.ack_loss,
                ..WriteFaults::default()
            },
            ..SandboxConfig::default()
        },
    )
    .await?;
    let client = Client::new(pool.clone());
    let worker = InProcessWorker::start(pool, 2);
    eprintln!(
        "bench write: {} records by POST at {} req/s, {}% of answers lost",
        args.records,
        args.rate,
        args.ack_loss * 100.0
    );
    let mut pipeline = PipelineInput::new(
        input(source.base_url(), Stream::Contacts, 100, ""),
        destination(args.rate),
        "bench-dest.toml".to_owned(),
    );
    pipeline.destination_base_url = Some(dest.base_url().to_owned());
    pipeline.concurrency = args.in_flight;
    let run = client
        .start(PIPELINE, &pipeline, &StartOptions::default())
        .await
        .map_err(|err| Failure::failed(format!("bench {what}: {err}")))?;
    let run = completed(&client, what, run.run_id, Duration::from_secs(args.timeout)).await?;
    worker.stop().await?;
    let held = dest.vendor().destination("contacts");
    let throttled = dest.vendor().stats().rate_limited;
    source.shutdown().await;
    dest.shutdown().await;

    let counts = &held.counts;
    // Every write request the destination let past its limit, answered or not.
    let handled = counts.created + counts.replayed + counts.unavailable + counts.rejected;
    let secs = run_secs(&run);
    let rate = share(handled as f64, secs);
    let used = share(rate, args.rate);
    let duplicates: u32 = held.duplicates.values().map(|n| n - 1).sum();
    let missing = args.records.saturating_sub(held.records.len());
    let mut conditions = Named::default();
    conditions
        .set("records", args.records as u64)
        .set("destination_limit", args.rate)
        .set("destination_burst", 1)
        .set("mode", "post with Idempotency-Key")
        .set("ack_loss", args.ack_loss)
        .set("writes_in_flight", args.in_flight as u64)
        .set(
            "rate",
            "write requests the destination handled / seconds from the run's start to its end",
        );
    let mut figures = Named::default();
    figures
        .add("writes_per_sec", rate, "req/s")
        .add("share_of_limit", used, "x")
        .add("429", throttled as f64, "responses")
        .add("acks_lost", counts.acks_lost as f64, "answers")
        .add("replayed", counts.replayed as f64, "answers")
        .add("duplicates", f64::from(duplicates), "records")
        .add("missing", missing as f64, "records")
        .add("secs", secs, "s");
    Ok(Report {
        scenario: "write",
        machine: Machine::describe(pool).await,
        conditions,
        figures,
        baseline: Baseline {
            name: "the destination's rate limit".to_owned(),
            value: args.rate,
            unit: "req/s",
            ratio_of: "write requests handled per second / the limit".to_owned(),
        },
        ratio: used,
        targets: vec![
            Target::at_least("at least 95% of the limit used", used, 0.95),
            Target::at_most("no 429", throttled as f64, 0.0),
            Target::at_most("no record created twice", f64::from(duplicates), 0.0),
            Target::at_most("no record missing", missing as f64, 0.0),
        ],
    })
}
