//! Process accounting: CPU time, context switches and peak memory of a
//! process, and how busy the whole machine is (other work on the machine
//! skews every number here), come from `airlift_testkit::procfs`.

use airlift_testkit::procfs;

pub use airlift_testkit::procfs::machine_idle;

/// This process's CPU seconds (the load client, or the timed callers).
pub fn own_cpu_seconds() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}
