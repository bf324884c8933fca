//! A process's CPU time and memory, and how busy the whole machine is,
//! from Linux's `/proc` (proc(5)).
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

/// User plus system CPU time of every process on this machine whose
/// command (`comm`) is `name`, in seconds: e.g. `postgres`, its server and
/// every backend. A process that ended between two readings takes its time
/// with it, so compare readings of long-lived processes (a pool's).
pub fn cpu_seconds_of_command(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|text| command_of(text) == Some(name))
        .filter_map(|text| parse_stat(&text))
        .map(|stat| (stat.utime + stat.stime) as f64 / clock_ticks())
        .sum()
}

/// The command in parentheses of a `/proc/PID/stat` text.
fn command_of(text: &str) -> Option<&str> {
    text.get(text.find('(')? + 1..text.rfind(')')?)
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

/// Idle (idle plus iowait) and total jiffies of all cores so far, from the
/// first line of `/proc/stat`: two readings tell how busy the whole machine
/// was in between — other work on it skews every number a benchmark takes.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    parse_machine_jiffies(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// How idle the machine was over `span` (slept through), in per cent of
/// all cores; NaN when `/proc/stat` cannot be read.
pub fn machine_idle(span: std::time::Duration) -> f64 {
    let Some((idle_0, total_0)) = machine_jiffies() else {
        return f64::NAN;
    };
    std::thread::sleep(span);
    let Some((idle_1, total_1)) = machine_jiffies() else {
        return f64::NAN;
    };
    100.0 * (idle_1 - idle_0) as f64 / (total_1 - total_0).max(1) as f64
}

fn parse_machine_jiffies(stat: &str) -> Option<(u64, u64)> {
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

/// Whether process `pid` still runs: it exists and is neither a zombie
/// waiting for its reaper nor dead (state `Z` or `X` in `/proc/PID/stat`).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat_says_gone(&stat))
}

fn stat_says_gone(stat: &str) -> bool {
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
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
    fn the_command_is_all_between_the_first_and_last_parenthesis() {
        let text = "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(command_of(text), Some("my (odd) prog"));
        assert_eq!(command_of("1 (postgres) S 0"), Some("postgres"));
        assert_eq!(command_of("garbage"), None);
        let mine = std::fs::read_to_string("/proc/self/stat").expect("our own stat");
        let name = command_of(&mine).expect("our command").to_owned();
        // Work until this process has used a clock tick.
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while cpu_seconds(std::process::id()).unwrap_or(0.0) == 0.0
            && started.elapsed() < std::time::Duration::from_secs(5)
        {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        assert!(
            cpu_seconds_of_command(&name) > 0.0,
            "{name}: this process has used CPU"
        );
        assert_eq!(cpu_seconds_of_command("no such command here"), 0.0);
    }

    #[test]
    fn size_fields_are_read_in_kib_and_missing_ones_are_none() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(kib_field(status, "VmHWM"), Some(20480));
        assert_eq!(kib_field(status, "VmRSS"), Some(1024));
        assert_eq!(kib_field(status, "VmSwap"), None);
    }

    #[test]
    fn machine_jiffies_count_idle_and_iowait_as_idle_and_the_first_eight_as_total() {
        let stat = "cpu  100 5 50 800 20 1 2 3 9 9\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_machine_jiffies(stat), Some((820, 981)));
        assert_eq!(parse_machine_jiffies("cpu 1 2 3\n"), None);
        let idle = machine_idle(std::time::Duration::from_millis(50));
        assert!((0.0..=100.0).contains(&idle), "{idle}");
    }

    #[test]
    fn a_zombie_or_a_missing_process_is_not_running() {
        assert!(stat_says_gone("42 (sh) Z 1 42 42 0"));
        assert!(stat_says_gone("42 (a) b) X 1"));
        assert!(!stat_says_gone("42 (sleep) S 1 42 42 0"));
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX), "no such process");
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
