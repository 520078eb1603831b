//! What every scenario reports: its conditions, figures, baseline, the ratio of its
//! headline figure to that baseline, and the targets it was held to; printed as a
//! small table or as one JSON document.

use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

/// One scenario's outcome.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The scenario's name.
    pub(crate) scenario: &'static str,
    /// Where the figures come from.
    pub(crate) machine: Machine,
    /// How the scenario was run (sizes, concurrency, limits).
    pub(crate) conditions: Named<Value>,
    /// What was measured, by name.
    pub(crate) figures: Named<Figure>,
    /// The reference measured in the same run.
    pub(crate) baseline: Baseline,
    /// The headline figure divided by the baseline.
    pub(crate) ratio: f64,
    /// The targets of issue 7 and whether this run met them.
    pub(crate) targets: Vec<Target>,
}

/// A measured value with its unit.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
}

/// The reference a scenario's ratio is taken against.
#[derive(Debug, Serialize)]
pub(crate) struct Baseline {
    /// What it is.
    pub(crate) name: String,
    /// Its value.
    pub(crate) value: f64,
    /// Its unit.
    pub(crate) unit: &'static str,
    /// What the ratio divides by what.
    pub(crate) ratio_of: String,
}

/// A target and whether it was met.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    /// What is required.
    pub(crate) name: String,
    /// The value measured for it.
    pub(crate) actual: f64,
    /// Whether it was met.
    pub(crate) met: bool,
}

impl Target {
    /// A target met when `actual <= limit`.
    pub(crate) fn at_most(name: impl Into<String>, actual: f64, limit: f64) -> Self {
        Self {
            name: name.into(),
            actual,
            met: actual <= limit,
        }
    }

    /// A target met when `actual >= limit`.
    pub(crate) fn at_least(name: impl Into<String>, actual: f64, limit: f64) -> Self {
        Self {
            name: name.into(),
            actual,
            met: actual >= limit,
        }
    }
}

/// Name–value pairs kept in the order they were added, serialized as a JSON object.
#[derive(Debug)]
pub(crate) struct Named<T>(Vec<(String, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Serialize> Serialize for Named<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Named<Value> {
    /// Adds a condition.
    pub(crate) fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.0.push((name.to_owned(), value.into()));
        self
    }
}

impl Named<Figure> {
    /// Adds a figure.
    pub(crate) fn add(&mut self, name: &str, value: f64, unit: &'static str) -> &mut Self {
        self.0.push((name.to_owned(), Figure { value, unit }));
        self
    }
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    /// CPUs available to this process.
    pub(crate) cpus: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub(crate) cpu_model: Option<String>,
    /// Physical memory in MB, from `/proc/meminfo`.
    pub(crate) memory_mb: Option<u64>,
    /// The kernel release.
    pub(crate) kernel: Option<String>,
    /// The PostgreSQL server's version.
    pub(crate) postgres: String,
}

impl Machine {
    /// Describes this machine and the server behind `pool`.
    pub(crate) async fn describe(pool: &sqlx::PgPool) -> Self {
        let postgres = sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|_| "unknown".to_owned());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").map(str::to_owned),
            memory_mb: field(&meminfo, "MemTotal")
                .and_then(kilobytes)
                .map(|kb| kb / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            postgres,
        }
    }
}

/// The value of `name: value` in a `/proc` file.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.split_once(':').filter(|(k, _)| k.trim() == name))
        .map(|(_, v)| v.trim())
}

/// `"1234 kB"` as 1234.
fn kilobytes(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// A memory figure (`VmHWM`, `VmRSS`) of a `/proc/<pid>/status` text, in MB.
pub(crate) fn status_mb(status: &str, name: &str) -> Option<f64> {
    field(status, name)
        .and_then(kilobytes)
        .map(|kb| kb as f64 / 1024.0)
}

/// The `p`-th percentile (0–100) of `values` by nearest rank; 0 for none.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds as a float.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `part / whole`, 0 when `whole` is 0.
pub(crate) fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

impl Report {
    /// Prints the report as a small table.
    pub(crate) fn print_table(&self) {
        let m = &self.machine;
        outln!(
            "cairn bench {}  ({} CPUs{}, PostgreSQL {})",
            self.scenario,
            m.cpus,
            m.cpu_model
                .as_deref()
                .map(|model| format!(" {model}"))
                .unwrap_or_default(),
            m.postgres
        );
        let conditions: Vec<String> = self
            .conditions
            .0
            .iter()
            .map(|(name, value)| match value {
                Value::String(s) => format!("{name}={s}"),
                other => format!("{name}={other}"),
            })
            .collect();
        outln!("conditions: {}", conditions.join(", "));
        outln!();
        let width = self
            .figures
            .0
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0)
            .max(8);
        for (name, figure) in &self.figures.0 {
            outln!(
                "  {name:<width$}  {:>12}  {}",
                number(figure.value),
                figure.unit
            );
        }
        outln!();
        outln!(
            "  baseline: {} = {} {}",
            self.baseline.name,
            number(self.baseline.value),
            self.baseline.unit
        );
        outln!(
            "  ratio:    {} ({})",
            number(self.ratio),
            self.baseline.ratio_of
        );
        outln!();
        for target in &self.targets {
            let mark = if target.met { "met   " } else { "MISSED" };
            outln!(
                "  [{mark}] {}  (measured {})",
                target.name,
                number(target.actual)
            );
        }
    }
}

/// A figure with as many decimals as its size deserves.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}
