//! The engine's metrics, in one place: what a worker counts as it executes steps, through
//! the `metrics` facade. Nothing is recorded until a process installs a recorder (`cairn
//! worker --http` and `cairn ui` install the Prometheus one), and without one each call
//! costs a branch.

use std::time::Duration;

use crate::model::StepKind;

/// Step attempts started, by workflow and kind.
pub const STEPS_STARTED: &str = "cairn_steps_started_total";
/// Step attempts checkpointed as completed, by workflow and kind.
pub const STEPS_COMPLETED: &str = "cairn_steps_completed_total";
/// Step attempts that failed, by workflow, kind and what followed (`retry`, `parked`,
/// `failed`).
pub const STEPS_FAILED: &str = "cairn_steps_failed_total";
/// How long a step attempt took, in seconds, by workflow and kind.
pub const STEP_SECONDS: &str = "cairn_step_duration_seconds";
/// Runs this worker stopped executing because another worker took them over.
pub const LEASE_LOSSES: &str = "cairn_lease_losses_total";
/// Runs claimed by this worker.
pub const CLAIMS: &str = "cairn_runs_claimed_total";
/// Claim statements this worker ran, by `result`: `runs` (it took at least one),
/// `empty` (nothing it could take: nothing was due, or other workers had locked every
/// candidate) and `error`. Empty claims while runs wait are workers contending.
pub const CLAIM_QUERIES: &str = "cairn_claim_queries_total";

pub(crate) fn step_started(workflow: &str, kind: StepKind) {
    metrics::counter!(STEPS_STARTED, "workflow" => workflow.to_owned(), "kind" => kind.as_str())
        .increment(1);
}

pub(crate) fn step_completed(workflow: &str, kind: StepKind, took: Duration) {
    let workflow = workflow.to_owned();
    metrics::counter!(STEPS_COMPLETED, "workflow" => workflow.clone(), "kind" => kind.as_str())
        .increment(1);
    metrics::histogram!(STEP_SECONDS, "workflow" => workflow, "kind" => kind.as_str())
        .record(took.as_secs_f64());
}

/// `then` is what the failure led to: `retry`, `parked` or `failed`.
pub(crate) fn step_failed(workflow: &str, kind: StepKind, then: &'static str, took: Duration) {
    let workflow = workflow.to_owned();
    metrics::counter!(STEPS_FAILED, "workflow" => workflow.clone(), "kind" => kind.as_str(), "then" => then)
        .increment(1);
    metrics::histogram!(STEP_SECONDS, "workflow" => workflow, "kind" => kind.as_str())
        .record(took.as_secs_f64());
}

pub(crate) fn lease_lost() {
    metrics::counter!(LEASE_LOSSES).increment(1);
}

/// A claim statement that took `runs` runs.
pub(crate) fn claimed(runs: usize) {
    let result = if runs == 0 { "empty" } else { "runs" };
    metrics::counter!(CLAIM_QUERIES, "result" => result).increment(1);
    metrics::counter!(CLAIMS).increment(runs as u64);
}

/// A claim statement that failed.
pub(crate) fn claim_failed() {
    metrics::counter!(CLAIM_QUERIES, "result" => "error").increment(1);
}
