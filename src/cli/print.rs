//! Human and JSON renderings of runs.

use cairn_runner::{RunDetail, RunSummary, StepRecord};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::Failure;

/// Prints `value` as one pretty JSON document.
pub(crate) fn json(value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| Failure::failed(format!("cannot render JSON: {err}")))?;
    outln!("{text}");
    Ok(())
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One line per run.
pub(crate) fn run_list(runs: &[RunSummary]) {
    if runs.is_empty() {
        outln!("no runs");
        return;
    }
    outln!(
        "{:<36}  {:<20}  {:<10}  {:>6}  {:<24}  {:<24}",
        "RUN",
        "WORKFLOW",
        "STATUS",
        "CLAIMS",
        "CREATED",
        "FINISHED"
    );
    for run in runs {
        outln!(
            "{:<36}  {:<20}  {:<10}  {:>6}  {:<24}  {:<24}",
            run.id,
            truncate(&run.workflow, 20),
            run.status,
            run.claims,
            time(&run.created_at),
            run.finished_at.as_ref().map(time).unwrap_or_default(),
        );
    }
}

/// A run with its steps.
pub(crate) fn run_detail(run: &RunDetail) {
    let s = &run.summary;
    outln!("run       {}", s.id);
    outln!("workflow  {}", s.workflow);
    outln!(
        "status    {}{}",
        s.status,
        if run.cancel_requested && !s.status.is_terminal() {
            " (cancel requested)"
        } else {
            ""
        }
    );
    outln!(
        "queue     {}   priority {}   claims {}",
        s.queue,
        s.priority,
        s.claims
    );
    if let Some(key) = &s.idempotency_key {
        outln!("key       {key}");
    }
    if let Some(key) = &s.concurrency_key {
        outln!("limited   by concurrency key {key}");
    }
    outln!("created   {}", time(&s.created_at));
    if let Some(at) = &s.finished_at {
        outln!("finished  {}", time(at));
    } else if !s.status.is_terminal() && s.status != cairn_runner::RunStatus::Running {
        outln!("wakes at  {}", time(&s.wake_at));
        // Why it waits: the last error of the step that is being retried (a 429's
        // wait, a spent quota, a transient failure), in full.
        if let Some(reason) = run
            .steps
            .iter()
            .rev()
            .find(|step| step.status == cairn_runner::StepStatus::Retrying)
            .and_then(|step| step.last_error.as_deref())
        {
            outln!("parked    {reason}");
        }
    }
    if let Some(owner) = &run.lease_owner {
        outln!("worker    {owner}");
    }
    outln!("input     {}", truncate(&run.input.to_string(), 160));
    if let Some(progress) = &run.progress {
        outln!("progress  {progress}");
    }
    if let Some(output) = &run.output {
        outln!("output    {output}");
    }
    if let Some(error) = &run.error {
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned);
        outln!("error     {}", message.unwrap_or_else(|| error.to_string()));
    }
    if run.steps.is_empty() {
        outln!("steps     none yet");
        return;
    }
    outln!();
    outln!(
        "{:>4}  {:<28}  {:<11}  {:<9}  {:>8}  {:>10}  LAST ERROR",
        "#",
        "STEP",
        "KIND",
        "STATUS",
        "ATTEMPTS",
        "DURATION"
    );
    for step in &run.steps {
        print_step(step);
    }
}

fn print_step(step: &StepRecord) {
    let attempts = if step.throttled > 0 {
        format!("{}+{}t", step.attempts, step.throttled)
    } else {
        step.attempts.to_string()
    };
    outln!(
        "{:>4}  {:<28}  {:<11}  {:<9}  {:>8}  {:>10}  {}",
        step.position,
        truncate(&step.name, 28),
        step.kind.as_str(),
        step.status.as_str(),
        attempts,
        step.duration_ms.map(format_ms).unwrap_or_default(),
        step.last_error
            .as_deref()
            .map(|e| truncate(e, 80))
            .unwrap_or_default(),
    );
}

/// A duration in the unit that reads best.
pub(crate) fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// One block per open alert.
pub(crate) fn alerts(alerts: &[cairn_connectors::warehouse::Alert]) {
    if alerts.is_empty() {
        outln!("no open alerts");
        return;
    }
    for alert in alerts {
        let stream = if alert.source.is_empty() {
            alert.stream.clone()
        } else {
            format!("{}/{}", alert.source, alert.stream)
        };
        outln!(
            "#{:<5} {:<18} {:<28} ×{:<4} last {}",
            alert.id,
            alert.kind,
            truncate(&stream, 28),
            alert.count,
            time(&alert.last_seen)
        );
        outln!("       {}", alert.message);
    }
}
