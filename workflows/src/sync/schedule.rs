//! Syncs on a cadence: one incremental schedule per stream, and a slower reconcile one.

use cairn_runner::schedule::{CatchUp, Cron, Overlap, ScheduleError, ScheduleSpec};

use super::{INCREMENTAL, RECONCILE, SyncInput};

/// How often each stream of a source syncs unattended.
#[derive(Debug, Clone)]
pub struct SyncCadence {
    /// When incremental syncs run (a cron expression).
    pub incremental: Cron,
    /// When delete reconciliation runs, usually far less often; `None` for never.
    pub reconcile: Option<Cron>,
}

impl SyncCadence {
    /// Incremental syncs at `incremental`, reconciliation at `reconcile`, both read in
    /// `timezone` (an IANA name).
    pub fn new(
        incremental: &str,
        reconcile: Option<&str>,
        timezone: &str,
    ) -> Result<Self, ScheduleError> {
        Ok(Self {
            incremental: Cron::parse(incremental, timezone)?,
            reconcile: reconcile
                .map(|expr| Cron::parse(expr, timezone))
                .transpose()?,
        })
    }
}

/// The name of a stream's sync schedule: `sync:<source>:<stream>:<mode>`.
pub fn schedule_name(source: &str, stream: &str, mode: &str) -> String {
    format!("sync:{source}:{stream}:{mode}")
}

/// The schedules that sync each stream of `inputs` (all of source `source`) at
/// `cadence`. A sync still going when its next fire time comes is not doubled (overlap
/// `skip`: the next run would read from the same watermark), and after downtime one run
/// catches up (`once`): an incremental sync reads everything since its watermark anyway.
pub fn sync_schedules(
    source: &str,
    inputs: &[SyncInput],
    cadence: &SyncCadence,
) -> Result<Vec<ScheduleSpec>, ScheduleError> {
    let mut specs = Vec::new();
    for input in inputs {
        let json = serde_json::to_value(input)
            .map_err(|err| ScheduleError::Policy(format!("cannot encode the sync input: {err}")))?;
        let modes = [
            ("incremental", INCREMENTAL, Some(&cadence.incremental)),
            ("reconcile", RECONCILE, cadence.reconcile.as_ref()),
        ];
        for (mode, workflow, cron) in modes {
            let Some(cron) = cron else { continue };
            let spec = ScheduleSpec::new(
                &schedule_name(source, &input.stream, mode),
                cron.expression(),
                workflow,
            )?
            .with_timezone(cron.timezone())?
            .with_input(json.clone())
            .with_overlap(Overlap::Skip)
            .with_catch_up(CatchUp::Once);
            specs.push(spec);
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_incremental_and_one_reconcile_schedule_per_stream() {
        let inputs: Vec<SyncInput> = ["contacts", "deals"]
            .into_iter()
            .map(|s| {
                SyncInput::new(
                    "name = \"crm\"".to_owned(),
                    "crm.toml".to_owned(),
                    s.to_owned(),
                )
            })
            .collect();
        let cadence = SyncCadence::new("*/15 * * * *", Some("0 3 * * *"), "Europe/Berlin").unwrap();
        let specs = sync_schedules("crm", &inputs, &cadence).unwrap();
        let names: Vec<(&str, &str)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.workflow.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("sync:crm:contacts:incremental", INCREMENTAL),
                ("sync:crm:contacts:reconcile", RECONCILE),
                ("sync:crm:deals:incremental", INCREMENTAL),
                ("sync:crm:deals:reconcile", RECONCILE),
            ]
        );
        assert_eq!(specs[1].cron.timezone(), "Europe/Berlin");
        assert_eq!(specs[2].input["stream"], "deals");
        let without = SyncCadence::new("*/15 * * * *", None, "UTC").unwrap();
        assert_eq!(sync_schedules("crm", &inputs, &without).unwrap().len(), 2);
    }
}
