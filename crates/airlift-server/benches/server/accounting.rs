//! Process accounting: CPU time, context switches and peak memory of a
//! process come from `airlift_testkit::procfs`; how busy the whole machine
//! is comes from `/proc/stat` here.

use airlift_testkit::procfs;
use std::time::Duration;

/// This process's CPU seconds (the load client, or the timed callers).
pub fn own_cpu_seconds() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// How idle the machine was over `span`, in per cent of all cores, from
/// `/proc/stat`: other work on the machine skews every number here.
pub fn machine_idle(span: Duration) -> f64 {
    let Some((idle_0, total_0)) = machine_jiffies() else {
        return f64::NAN;
    };
    std::thread::sleep(span);
    let Some((idle_1, total_1)) = machine_jiffies() else {
        return f64::NAN;
    };
    100.0 * (idle_1 - idle_0) as f64 / (total_1 - total_0).max(1) as f64
}

/// Idle and total jiffies of all cores so far.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = values.get(3)? + values.get(4)?;
    Some((idle, values.iter().take(8).sum()))
}
