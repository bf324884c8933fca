//! What the fleet benchmarks share: settings from the environment and a
//! server process's CPU time and memory from `/proc`.

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

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/PID/status` size field (`VmHWM`, `VmRSS`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM")
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
