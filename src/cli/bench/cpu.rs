//! Where a machine's CPU time goes during a phase of a bench: the whole machine's busy
//! share (from `/proc/stat`) and PostgreSQL's share (its processes, found by name in
//! `/proc`). Linux only; elsewhere, and for a server on another machine, PostgreSQL's
//! share is unknown and said to be.

use std::time::Instant;

/// CPU counters at one instant.
pub(super) struct CpuMark {
    at: Instant,
    /// Busy, waiting-for-disk and total jiffies of the whole machine.
    busy: u64,
    iowait: u64,
    total: u64,
    /// Jiffies spent by PostgreSQL's processes, if any were found.
    postgres: Option<u64>,
}

/// The shares of one phase, as fractions of all the machine's CPUs.
pub(super) struct CpuShare {
    pub(super) machine: f64,
    /// Idle while a disk read or write was outstanding (a WAL flush, say).
    pub(super) iowait: f64,
    pub(super) postgres: Option<f64>,
}

impl CpuMark {
    pub(super) fn now() -> Self {
        let (busy, iowait, total) = machine().unwrap_or((0, 0, 0));
        Self {
            at: Instant::now(),
            busy,
            iowait,
            total,
            postgres: postgres(),
        }
    }

    /// The shares from this mark to now.
    pub(super) fn share(&self) -> CpuShare {
        let end = Self::now();
        let total = end.total.saturating_sub(self.total);
        let of_total = |before: u64, after: u64| {
            if total == 0 {
                0.0
            } else {
                after.saturating_sub(before) as f64 / total as f64
            }
        };
        let machine = of_total(self.busy, end.busy);
        let iowait = of_total(self.iowait, end.iowait);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let seconds = end.at.duration_since(self.at).as_secs_f64();
        let postgres = match (self.postgres, end.postgres) {
            (Some(before), Some(after)) if seconds > 0.0 => {
                Some(after.saturating_sub(before) as f64 / ticks_per_second() / seconds / cpus)
            }
            _ => None,
        };
        CpuShare {
            machine,
            iowait,
            postgres,
        }
    }
}

/// Clock ticks per second of `/proc`'s counters: `USER_HZ`, 100 on every Linux
/// architecture cairn builds for.
fn ticks_per_second() -> f64 {
    100.0
}

/// Busy, I/O wait and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn machine() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = fields.iter().take(8).sum();
    let field = |at: usize| fields.get(at).copied().unwrap_or(0);
    Some((total.saturating_sub(field(3) + field(4)), field(4), total))
}

/// User and system jiffies of every process named `postgres`, or `None` when there is
/// none to see.
fn postgres() -> Option<u64> {
    let mut sum = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name may hold spaces, so split at its parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state is field 3 of the line, utime 14 and stime 15.
        let ticks = |at: usize| {
            rest.get(at)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        sum += ticks(11) + ticks(12);
        found = true;
    }
    found.then_some(sum)
}
