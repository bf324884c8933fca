//! A process's CPU time and memory, from Linux's `/proc` (proc(5)).
//! Every reader answers `None` for a process that is gone or a field that
//! is missing, so a benchmark can sample a child that may have exited.

use std::sync::OnceLock;

/// User plus system CPU time of process `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = stat(pid)?;
    Some((stat.utime + stat.stime) as f64 / clock_ticks())
}

/// User plus system CPU time of `pid` and of its direct children, in seconds
/// (e.g. nginx's master and its workers).
pub fn cpu_seconds_with_children(pid: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|other| Some((other, stat(other)?)))
        .filter(|(other, stat)| *other == pid || stat.ppid == pid)
        .map(|(_, stat)| (stat.utime + stat.stime) as f64 / clock_ticks())
        .sum()
}

/// A size field of `/proc/PID/status` (`VmHWM`, `VmRSS`, …), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        field,
    )
}

/// Peak resident set size (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    Some(status_kib(pid, "VmHWM")? as f64 / 1024.0)
}

/// Resident set size now (`VmRSS`), in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    Some(status_kib(pid, "VmRSS")? as f64 / 1024.0)
}

/// Proportional set size (`Pss` of `/proc/PID/smaps_rollup`): resident
/// memory with shared pages divided among their sharers, in KiB.
pub fn pss_kib(pid: u32) -> Option<u64> {
    kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

/// Voluntary plus involuntary context switches of all of `pid`'s threads.
pub fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for field in ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"] {
            total += number_field(&status, field).unwrap_or(0);
        }
    }
    Some(total)
}

/// The fields of `/proc/PID/stat` a benchmark reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id.
    pub ppid: u32,
    /// User time, in clock ticks.
    pub utime: u64,
    /// System time, in clock ticks.
    pub stime: u64,
}

/// `/proc/PID/stat`, read.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold spaces and ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 4, 14 and 15 of proc(5), counted here from `state` (field 3).
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when unknown).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `Field:   1234 kB` → 1234.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    number_field(text, field)
}

fn number_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_survives_a_command_name_with_spaces_and_parentheses() {
        let text = "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 17,
                utime: 250,
                stime: 75
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn size_fields_are_read_in_kib_and_missing_ones_are_none() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(kib_field(status, "VmHWM"), Some(20480));
        assert_eq!(kib_field(status, "VmRSS"), Some(1024));
        assert_eq!(kib_field(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(peak_rss_mib(me).is_some_and(|mib| mib > 0.0));
        assert!(pss_kib(me).is_some_and(|kib| kib > 0));
        assert!(context_switches(me).is_some());
        assert!(cpu_seconds(u32::MAX).is_none(), "no such process");
    }
}
