//! What the fleet benchmarks share: settings from the environment and a
//! server process's CPU time and memory (from `airlift_testkit::procfs`,
//! read as 0 once the process is gone).

#![allow(dead_code)] // each bench uses its own share

/// A number from the environment, or `default`.
pub fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits (up to half an hour) until every device of `fleet` has checked in
/// and is idle.
pub fn wait_enrolled(fleet: &airlift_sim::Fleet, devices: usize) {
    let enrolled = fleet.wait_until(std::time::Duration::from_secs(1800), |s| {
        s.in_state("idle") == devices && s.checked_in == devices
    });
    if let Err(timed_out) = enrolled {
        panic!("the fleet did not come up: {:?}", timed_out.0.states);
    }
}

/// utime + stime of a process, in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    airlift_testkit::procfs::cpu_seconds(pid).unwrap_or(0.0)
}

/// Resident memory of a process now (`VmRSS`), in MiB (0 once it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    airlift_testkit::procfs::rss_mib(pid).unwrap_or(0.0)
}

/// Peak resident memory of a process (`VmHWM`), in MiB (0 once it is gone).
pub fn peak_rss_mib(pid: u32) -> f64 {
    airlift_testkit::procfs::peak_rss_mib(pid).unwrap_or(0.0)
}

/// The server's `--max-connections` for a fleet of `devices` that each
/// hold a push stream: its default (at most 10 000) leaves 10 000 streams
/// no room for a check-in, a report or the bench's own `/metrics`.
pub fn max_connections_for(devices: u64) -> String {
    (devices + 2048).to_string()
}

/// Raises this process's open-file limit (children inherit it): a fleet
/// of N devices holds about 2N sockets here and the server as many.
/// Through util-linux's `prlimit`, which needs root beyond the hard limit.
pub fn raise_open_files(wanted: u64) {
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={wanted}:{wanted}"))
        .status();
    if !raised.is_ok_and(|s| s.success()) {
        eprintln!("could not raise the open-file limit to {wanted}: expect refused connections");
    }
}
